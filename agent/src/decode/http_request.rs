//! HTTP/1.x request heads from a captured prefix of the client's bytes.
//!
//! The kernel hands over only the first N bytes of a request, so a head may
//! stop mid-line. Everything on complete lines is decoded and the result is
//! flagged `truncated` rather than thrown away.

use std::{fmt, net::IpAddr};

use super::{
    api_key::{api_key_in_header, ApiKeyHash, ApiKeyHasher},
    forwarded::ForwardedChain,
    header_names::HeaderNames,
    route::Route,
    text::bounded_lossy,
    user_agent::UaFamily,
    DecodeError,
};

/// Enough for real clients (browsers send ~20); JA4H saturates at 99 anyway.
pub const MAX_HEADERS: usize = 128;
/// Heads larger than this are treated as truncated at this size, bounding
/// the work done on a single hostile request.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
const MAX_METHOD_BYTES: usize = 16;
const MAX_PATH_BYTES: usize = 1024;
const MAX_HOST_BYTES: usize = 255;
const MAX_HEADER_NAME_BYTES: usize = 64;
const MAX_LANGUAGE_BYTES: usize = 256;
const MAX_COOKIE_BYTES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
    Patch,
    Head,
    Options,
    Connect,
    Trace,
    Other,
}

impl Method {
    /// Methods are case-sensitive (RFC 9110 §9.1): `get` is not `GET`.
    fn from_token(token: &str) -> Self {
        match token {
            "GET" => Self::Get,
            "POST" => Self::Post,
            "PUT" => Self::Put,
            "DELETE" => Self::Delete,
            "PATCH" => Self::Patch,
            "HEAD" => Self::Head,
            "OPTIONS" => Self::Options,
            "CONNECT" => Self::Connect,
            "TRACE" => Self::Trace,
            _ => Self::Other,
        }
    }

    pub fn as_label(&self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Delete => "DELETE",
            Self::Patch => "PATCH",
            Self::Head => "HEAD",
            Self::Options => "OPTIONS",
            Self::Connect => "CONNECT",
            Self::Trace => "TRACE",
            Self::Other => "_other",
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: Method,
    /// The request-line method as sent (bounded), because JA4H fingerprints
    /// its first letters even for methods outside [`Method`].
    pub method_token: String,
    /// 10 or 11; 0 when the capture ends inside the request line.
    pub version: u8,
    /// Request target up to `?`/`#`: query strings are left out because
    /// some APIs carry keys there.
    pub path: String,
    pub route: Route,
    pub host: Option<String>,
    /// `None` when absent, malformed, or given twice with different values.
    pub content_length: Option<u64>,
    /// `Missing` also when a truncated capture ended before the header.
    pub user_agent_family: UaFamily,
    /// X-Forwarded-For and `Forwarded: for=` addresses in header order,
    /// keeping the last entries if there are too many (the trusted end).
    pub forwarded_for: Vec<IpAddr>,
    pub api_key: Option<ApiKeyHash>,
    /// The same key under the previous secret, while a rotated secret's overlap lasts.
    pub api_key_prev: Option<ApiKeyHash>,
    /// Header names in order and original case, as JA4H needs them.
    pub header_names: HeaderNames,
    /// Cookie header value(s), joined with `; `. Kept only for JA4H; it may
    /// hold session secrets, so `Debug` prints its length, not its content.
    pub cookie: Option<String>,
    pub accept_language: Option<String>,
    pub truncated: bool,
}

impl fmt::Debug for RequestHead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cookie = self
            .cookie
            .as_ref()
            .map(|c| format!("<{} bytes redacted>", c.len()));
        f.debug_struct("RequestHead")
            .field("method", &self.method)
            .field("method_token", &self.method_token)
            .field("version", &self.version)
            .field("path", &self.path)
            .field("route", &self.route)
            .field("host", &self.host)
            .field("content_length", &self.content_length)
            .field("user_agent_family", &self.user_agent_family)
            .field("forwarded_for", &self.forwarded_for)
            .field("api_key", &self.api_key)
            .field("api_key_prev", &self.api_key_prev)
            .field("header_names", &self.header_names)
            .field("cookie", &cookie)
            .field("accept_language", &self.accept_language)
            .field("truncated", &self.truncated)
            .finish()
    }
}

/// Decodes the request head at the start of `buf`. API keys are hashed with
/// `keys` as they are found; without a hasher they are ignored.
pub fn parse_request_head(
    buf: &[u8],
    keys: Option<&ApiKeyHasher>,
) -> Result<RequestHead, DecodeError> {
    if buf.is_empty() {
        return Err(DecodeError::Empty);
    }
    let capped = buf.get(..MAX_HEAD_BYTES).unwrap_or(buf);
    let mut slots = super::header_slots::<MAX_HEADERS>();
    let mut req = httparse::Request::new(&mut []);
    match config().parse_request_with_uninit_headers(&mut req, capped, &mut slots) {
        Ok(httparse::Status::Complete(_)) => from_httparse(&req, false, keys),
        Ok(httparse::Status::Partial) => parse_truncated(capped, keys),
        Err(e) => Err(map_error(e)),
    }
}

fn config() -> httparse::ParserConfig {
    let mut config = httparse::ParserConfig::default();
    // A passive observer gains nothing by rejecting a request the server may
    // well accept; skipping one odd header keeps the rest of the head.
    config.ignore_invalid_headers_in_requests(true);
    config
}

/// httparse only reports "partial" for a cut-off head, so the complete lines
/// are re-parsed on their own, closed with the empty line they lack.
fn parse_truncated(buf: &[u8], keys: Option<&ApiKeyHasher>) -> Result<RequestHead, DecodeError> {
    let Some(last_lf) = buf.iter().rposition(|&b| b == b'\n') else {
        return partial_request_line(buf);
    };
    let mut closed = buf.get(..=last_lf).unwrap_or(buf).to_vec();
    closed.extend_from_slice(b"\r\n");
    let mut slots = super::header_slots::<MAX_HEADERS>();
    let mut req = httparse::Request::new(&mut []);
    match config().parse_request_with_uninit_headers(&mut req, &closed, &mut slots) {
        Ok(httparse::Status::Complete(_)) => from_httparse(&req, true, keys),
        Ok(httparse::Status::Partial) => Err(DecodeError::Truncated("request head")),
        Err(e) => Err(map_error(e)),
    }
}

/// A request line longer than the capture still names the method and the
/// start of the path, which is often all the route needs.
fn partial_request_line(buf: &[u8]) -> Result<RequestHead, DecodeError> {
    let mut parts = buf.splitn(2, |&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let Some(target) = parts.next() else {
        return Err(DecodeError::Truncated("request line"));
    };
    if method.is_empty() || !method.iter().all(|&b| is_token_byte(b)) {
        return Err(DecodeError::HttpSyntax("method"));
    }
    let target = target.split(|&b| b == b' ').next().unwrap_or_default();
    if target.is_empty() {
        return Err(DecodeError::Truncated("request line"));
    }
    let method_token = bounded_lossy(method, MAX_METHOD_BYTES);
    let path = path_of(&bounded_lossy(target, MAX_PATH_BYTES));
    Ok(RequestHead {
        method: Method::from_token(&method_token),
        method_token,
        version: 0,
        route: Route::from_path(&path),
        path,
        host: None,
        content_length: None,
        user_agent_family: UaFamily::Missing,
        forwarded_for: Vec::new(),
        api_key: None,
        api_key_prev: None,
        header_names: HeaderNames::default(),
        cookie: None,
        accept_language: None,
        truncated: true,
    })
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn path_of(target: &str) -> String {
    target
        .split(['?', '#'])
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn map_error(e: httparse::Error) -> DecodeError {
    match e {
        httparse::Error::TooManyHeaders => DecodeError::TooManyHeaders,
        httparse::Error::HeaderName => DecodeError::HttpSyntax("header name"),
        httparse::Error::HeaderValue => DecodeError::HttpSyntax("header value"),
        httparse::Error::NewLine => DecodeError::HttpSyntax("line ending"),
        httparse::Error::Status => DecodeError::HttpSyntax("status"),
        httparse::Error::Token => DecodeError::HttpSyntax("request line"),
        httparse::Error::Version => DecodeError::HttpSyntax("version"),
    }
}

fn from_httparse(
    req: &httparse::Request<'_, '_>,
    truncated: bool,
    keys: Option<&ApiKeyHasher>,
) -> Result<RequestHead, DecodeError> {
    let method_token = req.method.ok_or(DecodeError::HttpSyntax("request line"))?;
    let target = req.path.ok_or(DecodeError::HttpSyntax("request line"))?;
    let version = match req.version {
        Some(0) => 10,
        Some(1) => 11,
        _ => return Err(DecodeError::HttpSyntax("version")),
    };
    let path = path_of(&bounded_lossy(target.as_bytes(), MAX_PATH_BYTES));
    let mut acc = HeaderAccumulator {
        // Sized once: growing it header by header reallocated it several times a request.
        names: HeaderNames::with_capacity(req.headers.len()),
        ..HeaderAccumulator::default()
    };
    for h in req.headers.iter() {
        acc.add(h.name, h.value, keys);
    }
    let method_token = bounded_lossy(method_token.as_bytes(), MAX_METHOD_BYTES);
    Ok(RequestHead {
        method: Method::from_token(&method_token),
        method_token,
        version,
        route: Route::from_path(&path),
        path,
        host: acc.host,
        content_length: acc.content_length.and_then(|c| c.ok()),
        user_agent_family: UaFamily::from_header(acc.user_agent),
        forwarded_for: acc.forwarded.into_vec(),
        api_key: acc.api_key,
        api_key_prev: acc.api_key_prev,
        header_names: acc.names,
        cookie: acc.cookie,
        accept_language: acc.accept_language,
        truncated,
    })
}

/// Folds header lines into the fields of [`RequestHead`]. The first
/// occurrence wins for single-valued headers, matching most servers.
#[derive(Default)]
struct HeaderAccumulator<'b> {
    names: HeaderNames,
    host: Option<String>,
    /// `Err` once two Content-Length values disagree or one is malformed,
    /// since the body length is then unknowable.
    content_length: Option<Result<u64, ()>>,
    user_agent: Option<&'b [u8]>,
    forwarded: ForwardedChain,
    api_key: Option<ApiKeyHash>,
    api_key_prev: Option<ApiKeyHash>,
    cookie: Option<String>,
    accept_language: Option<String>,
}

impl<'b> HeaderAccumulator<'b> {
    fn add(&mut self, name: &str, value: &'b [u8], keys: Option<&ApiKeyHasher>) {
        self.names.push(name, MAX_HEADER_NAME_BYTES);
        let value_trimmed = value.trim_ascii();
        // Compared in place: lowercasing a copy of every header name cost an allocation each.
        let is = |known: &str| name.eq_ignore_ascii_case(known);
        if is("host") {
            if self.host.is_none() {
                self.host = Some(bounded_lossy(value_trimmed, MAX_HOST_BYTES));
            }
        } else if is("content-length") {
            self.add_content_length(value_trimmed);
        } else if is("user-agent") {
            if self.user_agent.is_none() {
                self.user_agent = Some(value);
            }
        } else if is("x-forwarded-for") {
            self.forwarded.add_x_forwarded_for(value);
        } else if is("forwarded") {
            self.forwarded.add_forwarded(value);
        } else if is("cookie") {
            self.add_cookie(value_trimmed);
        } else if is("accept-language") && self.accept_language.is_none() {
            self.accept_language = Some(bounded_lossy(value_trimmed, MAX_LANGUAGE_BYTES));
        }
        if self.api_key.is_none() {
            if let (Some(keys), Some(key)) = (keys, api_key_in_header(name, value)) {
                self.api_key = Some(keys.hash(key));
                self.api_key_prev = keys.hash_previous(key);
            }
        }
    }

    fn add_content_length(&mut self, value: &[u8]) {
        let parsed = parse_decimal(value).ok_or(());
        self.content_length = match (self.content_length, parsed) {
            (None, p) => Some(p),
            (Some(Ok(a)), Ok(b)) if a == b => Some(Ok(a)),
            _ => Some(Err(())),
        };
    }

    fn add_cookie(&mut self, value: &[u8]) {
        let joined = match self.cookie.take() {
            None => bounded_lossy(value, MAX_COOKIE_BYTES),
            Some(mut prev) => {
                let room = MAX_COOKIE_BYTES.saturating_sub(prev.len() + 2);
                if room > 0 {
                    prev.push_str("; ");
                    prev.push_str(&bounded_lossy(value, room));
                }
                prev
            }
        };
        self.cookie = Some(joined);
    }
}

/// Content-Length is 1*DIGIT (RFC 9110 §8.6); signs and spaces are invalid.
fn parse_decimal(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// The client address when `trusted_hops` proxies sit in front of us: 0
/// trusts no one (the peer is the client), 1 trusts the peer and takes the
/// last forwarded entry, and so on. Asking for more hops than there are
/// entries stops at the first entry rather than inventing one.
pub fn client_ip(forwarded: &[IpAddr], peer: IpAddr, trusted_hops: usize) -> IpAddr {
    if trusted_hops == 0 {
        return peer;
    }
    let idx = forwarded.len().saturating_sub(trusted_hops);
    forwarded.get(idx).copied().unwrap_or(peer)
}

#[cfg(test)]
#[path = "http_request_tests.rs"]
mod tests;
