//! Request paths collapsed into a closed set of routes, so they can be used
//! as metric labels without letting clients mint new time series.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    ChatCompletions,
    Completions,
    Embeddings,
    Models,
    Model,
    Responses,
    Messages,
    Audio,
    Images,
    Health,
    Metrics,
    Other,
}

impl Route {
    /// Only the path matters: query and fragment carry per-request data, and
    /// one trailing slash is tolerated because clients disagree about it.
    pub fn from_path(raw: &str) -> Self {
        let path = raw.split(['?', '#']).next().unwrap_or_default();
        let path = strip_absolute_form(path);
        let path = match path.strip_suffix('/') {
            Some(p) if !p.is_empty() => p,
            _ => path,
        };
        match path {
            "/v1/chat/completions" => Self::ChatCompletions,
            "/v1/completions" => Self::Completions,
            "/v1/embeddings" => Self::Embeddings,
            "/v1/models" => Self::Models,
            "/v1/responses" => Self::Responses,
            "/v1/messages" => Self::Messages,
            "/v1/audio" => Self::Audio,
            "/v1/images" => Self::Images,
            "/health" => Self::Health,
            "/metrics" => Self::Metrics,
            _ => Self::by_prefix(path),
        }
    }

    fn by_prefix(path: &str) -> Self {
        let nested = |prefix: &str| {
            path.strip_prefix(prefix)
                .is_some_and(|rest| !rest.is_empty())
        };
        if nested("/v1/models/") {
            Self::Model
        } else if nested("/v1/audio/") {
            Self::Audio
        } else if nested("/v1/images/") {
            Self::Images
        } else {
            Self::Other
        }
    }

    pub fn as_label(&self) -> &'static str {
        match self {
            Self::ChatCompletions => "/v1/chat/completions",
            Self::Completions => "/v1/completions",
            Self::Embeddings => "/v1/embeddings",
            Self::Models => "/v1/models",
            Self::Model => "/v1/models/:id",
            Self::Responses => "/v1/responses",
            Self::Messages => "/v1/messages",
            Self::Audio => "/v1/audio",
            Self::Images => "/v1/images",
            Self::Health => "/health",
            Self::Metrics => "/metrics",
            Self::Other => "_other",
        }
    }
}

/// Requests sent through a forward proxy carry `http://host/path`; the
/// route is the same as for the origin-form `/path`.
fn strip_absolute_form(target: &str) -> &str {
    let Some(rest) = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    else {
        return target;
    };
    rest.find('/').and_then(|i| rest.get(i..)).unwrap_or("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_table() {
        let cases = [
            ("/v1/chat/completions", "/v1/chat/completions"),
            ("/v1/chat/completions?stream=true", "/v1/chat/completions"),
            ("/v1/chat/completions/", "/v1/chat/completions"),
            ("/v1/chat/completions#frag", "/v1/chat/completions"),
            ("/v1/chat/completionsX", "_other"),
            ("/V1/chat/completions", "_other"),
            ("/v1/completions", "/v1/completions"),
            ("/v1/embeddings", "/v1/embeddings"),
            ("/v1/models", "/v1/models"),
            ("/v1/models/", "/v1/models"),
            ("/v1/models/gpt-4o", "/v1/models/:id"),
            ("/v1/models/ft:gpt-4o:org::id?x=1", "/v1/models/:id"),
            ("/v1/models/meta-llama/Llama-3", "/v1/models/:id"),
            ("/v1/responses", "/v1/responses"),
            ("/v1/messages", "/v1/messages"),
            ("/v1/messages?beta=true", "/v1/messages"),
            ("/v1/audio/transcriptions", "/v1/audio"),
            ("/v1/audio/speech", "/v1/audio"),
            ("/v1/audio", "/v1/audio"),
            ("/v1/images/generations", "/v1/images"),
            ("/health", "/health"),
            ("/metrics", "/metrics"),
            ("/", "_other"),
            ("", "_other"),
            ("*", "_other"),
            ("?", "_other"),
            ("http://example.com/v1/models", "/v1/models"),
            (
                "https://api.example.com:8443/v1/embeddings?x",
                "/v1/embeddings",
            ),
            ("http://example.com", "_other"),
            ("ftp://example.com/v1/models", "_other"),
            ("/v1/audiobook", "_other"),
            ("/\u{fffd}", "_other"),
        ];
        for (path, label) in cases {
            assert_eq!(Route::from_path(path).as_label(), label, "path {path:?}");
        }
    }
}
