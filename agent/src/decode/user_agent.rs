//! User-Agent strings reduced to a closed set of client families, so they
//! can label metrics without unbounded cardinality.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UaFamily {
    Curl,
    /// The official `openai` Python package (`OpenAI/Python x.y`).
    PythonOpenai,
    /// The official `anthropic` Python package (`Anthropic/Python x.y`).
    PythonAnthropic,
    PythonRequests,
    PythonHttpx,
    PythonAiohttp,
    Go,
    /// Node.js clients: axios, node-fetch, undici, and the official OpenAI
    /// and Anthropic JS SDKs.
    NodeJs,
    Java,
    Browser,
    Other,
    /// No User-Agent header, or one with an empty value.
    Missing,
}

/// Ordered: SDKs are matched before the HTTP libraries they are built on
/// (the OpenAI SDK uses httpx, for instance), and browsers last because
/// many bots also claim to be `Mozilla/5.0`.
const PATTERNS: &[(&str, UaFamily)] = &[
    ("openai/python", UaFamily::PythonOpenai),
    ("anthropic/python", UaFamily::PythonAnthropic),
    ("openai/js", UaFamily::NodeJs),
    ("anthropic/js", UaFamily::NodeJs),
    ("curl/", UaFamily::Curl),
    ("python-requests/", UaFamily::PythonRequests),
    ("python-httpx/", UaFamily::PythonHttpx),
    ("aiohttp/", UaFamily::PythonAiohttp),
    ("go-http-client/", UaFamily::Go),
    ("axios/", UaFamily::NodeJs),
    ("node-fetch", UaFamily::NodeJs),
    ("undici", UaFamily::NodeJs),
    ("node/", UaFamily::NodeJs),
    ("java/", UaFamily::Java),
    ("apache-httpclient/", UaFamily::Java),
    ("okhttp/", UaFamily::Java),
    ("reactor-netty/", UaFamily::Java),
    ("mozilla/", UaFamily::Browser),
];

/// Long enough for every pattern to be found near the start where clients
/// put their product token, short enough to bound work on hostile input.
const SCAN_LIMIT: usize = 512;

impl UaFamily {
    pub fn from_header(value: Option<&[u8]>) -> Self {
        let Some(value) = value else {
            return Self::Missing;
        };
        let value = value.trim_ascii();
        if value.is_empty() {
            return Self::Missing;
        }
        let scan = value.get(..SCAN_LIMIT).unwrap_or(value);
        // Lowercased once, then each (lowercase) pattern searched with a prebuilt SIMD finder:
        // the same matches as comparing every window case-insensitively, at a fraction of the
        // work (this runs for every request).
        let mut lower = [0u8; SCAN_LIMIT];
        let lower = &mut lower[..scan.len()];
        lower.copy_from_slice(scan);
        lower.make_ascii_lowercase();
        FINDERS
            .iter()
            .find(|(finder, _)| finder.find(lower).is_some())
            .map_or(Self::Other, |(_, family)| *family)
    }

    pub fn as_label(&self) -> &'static str {
        match self {
            Self::Curl => "curl",
            Self::PythonOpenai => "python_openai",
            Self::PythonAnthropic => "python_anthropic",
            Self::PythonRequests => "python_requests",
            Self::PythonHttpx => "python_httpx",
            Self::PythonAiohttp => "python_aiohttp",
            Self::Go => "go",
            Self::NodeJs => "nodejs",
            Self::Java => "java",
            Self::Browser => "browser",
            Self::Other => "other",
            Self::Missing => "missing",
        }
    }
}

/// [`PATTERNS`] as substring finders, built once.
static FINDERS: std::sync::LazyLock<Vec<(memchr::memmem::Finder<'static>, UaFamily)>> =
    std::sync::LazyLock::new(|| {
        PATTERNS
            .iter()
            .map(|(pat, family)| (memchr::memmem::Finder::new(pat.as_bytes()), *family))
            .collect()
    });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_table() {
        let cases: &[(Option<&[u8]>, UaFamily)] = &[
            (None, UaFamily::Missing),
            (Some(b""), UaFamily::Missing),
            (Some(b"   "), UaFamily::Missing),
            (Some(b"curl/8.5.0"), UaFamily::Curl),
            (Some(b"OpenAI/Python 1.35.3"), UaFamily::PythonOpenai),
            (Some(b"AsyncOpenAI/Python 1.35.3"), UaFamily::PythonOpenai),
            (Some(b"Anthropic/Python 0.30.0"), UaFamily::PythonAnthropic),
            (Some(b"python-requests/2.31.0"), UaFamily::PythonRequests),
            (Some(b"python-httpx/0.27.0"), UaFamily::PythonHttpx),
            (Some(b"Python/3.11 aiohttp/3.9.5"), UaFamily::PythonAiohttp),
            (Some(b"Go-http-client/1.1"), UaFamily::Go),
            (Some(b"Go-http-client/2.0"), UaFamily::Go),
            (Some(b"OpenAI/JS 4.52.0"), UaFamily::NodeJs),
            (Some(b"axios/1.7.2"), UaFamily::NodeJs),
            (
                Some(b"node-fetch/1.0 (+https://github.com/bitinn/node-fetch)"),
                UaFamily::NodeJs,
            ),
            (Some(b"undici"), UaFamily::NodeJs),
            (Some(b"Java/17.0.2"), UaFamily::Java),
            (Some(b"Apache-HttpClient/4.5.14 (Java/17)"), UaFamily::Java),
            (Some(b"okhttp/4.12.0"), UaFamily::Java),
            (
                Some(b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0"),
                UaFamily::Browser,
            ),
            (Some(b"Wget/1.21"), UaFamily::Other),
            (Some(b"\xff\xfe\x00"), UaFamily::Other),
        ];
        for (ua, want) in cases {
            assert_eq!(UaFamily::from_header(*ua), *want, "{ua:?}");
        }
    }

    #[test]
    fn patterns_past_scan_limit_are_ignored() {
        let mut ua = vec![b'x'; SCAN_LIMIT];
        ua.extend_from_slice(b" curl/8");
        assert_eq!(UaFamily::from_header(Some(&ua)), UaFamily::Other);
    }

    #[test]
    fn labels_are_distinct() {
        let all = [
            UaFamily::Curl,
            UaFamily::PythonOpenai,
            UaFamily::PythonAnthropic,
            UaFamily::PythonRequests,
            UaFamily::PythonHttpx,
            UaFamily::PythonAiohttp,
            UaFamily::Go,
            UaFamily::NodeJs,
            UaFamily::Java,
            UaFamily::Browser,
            UaFamily::Other,
            UaFamily::Missing,
        ];
        let labels: std::collections::HashSet<_> = all.iter().map(UaFamily::as_label).collect();
        assert_eq!(labels.len(), all.len());
    }
}
