//! HTTP/1.x response heads from a captured prefix of the server's bytes:
//! just what is needed to label a response and to know how its body is
//! framed (a streamed completion is an event stream with chunked framing).

use super::DecodeError;

const MAX_HEADERS: usize = 128;
const MAX_HEAD_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHead {
    /// 10 or 11; 0 when the capture ends inside the status line.
    pub version: u8,
    pub status: u16,
    /// `Content-Type: text/event-stream`, the framing of streamed LLM output.
    pub event_stream: bool,
    /// `None` when absent, malformed, or given twice with different values.
    pub content_length: Option<u64>,
    pub chunked: bool,
    pub truncated: bool,
}

impl ResponseHead {
    pub fn class_label(&self) -> &'static str {
        status_class_label(self.status)
    }
}

/// "1xx".."5xx", or "invalid" for codes outside 100..=599, which httparse
/// accepts (any three digits) but no server should send.
pub fn status_class_label(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "invalid",
    }
}

pub fn parse_response_head(buf: &[u8]) -> Result<ResponseHead, DecodeError> {
    if buf.is_empty() {
        return Err(DecodeError::Empty);
    }
    let capped = buf.get(..MAX_HEAD_BYTES).unwrap_or(buf);
    let mut slots = super::header_slots::<MAX_HEADERS>();
    let mut resp = httparse::Response::new(&mut []);
    match config().parse_response_with_uninit_headers(&mut resp, capped, &mut slots) {
        Ok(httparse::Status::Complete(_)) => from_httparse(&resp, false),
        Ok(httparse::Status::Partial) => parse_truncated(capped),
        Err(e) => Err(map_error(e)),
    }
}

fn config() -> httparse::ParserConfig {
    let mut config = httparse::ParserConfig::default();
    // Passive observation: one odd header must not cost the status code.
    config.ignore_invalid_headers_in_responses(true);
    config.allow_obsolete_multiline_headers_in_responses(true);
    config
}

/// Same approach as for requests: close the complete lines with an empty
/// line and parse those; a cut status line still yields its code.
fn parse_truncated(buf: &[u8]) -> Result<ResponseHead, DecodeError> {
    let Some(last_lf) = buf.iter().rposition(|&b| b == b'\n') else {
        return partial_status_line(buf);
    };
    let mut closed = buf.get(..=last_lf).unwrap_or(buf).to_vec();
    closed.extend_from_slice(b"\r\n");
    let mut slots = super::header_slots::<MAX_HEADERS>();
    let mut resp = httparse::Response::new(&mut []);
    match config().parse_response_with_uninit_headers(&mut resp, &closed, &mut slots) {
        Ok(httparse::Status::Complete(_)) => from_httparse(&resp, true),
        Ok(httparse::Status::Partial) => Err(DecodeError::Truncated("response head")),
        Err(e) => Err(map_error(e)),
    }
}

fn partial_status_line(buf: &[u8]) -> Result<ResponseHead, DecodeError> {
    let version = match buf.get(..9) {
        Some(b"HTTP/1.0 ") => 10,
        Some(b"HTTP/1.1 ") => 11,
        Some(_) => return Err(DecodeError::HttpSyntax("version")),
        None if b"HTTP/1.1 ".starts_with(buf) || b"HTTP/1.0 ".starts_with(buf) => {
            return Err(DecodeError::Truncated("status line"))
        }
        None => return Err(DecodeError::HttpSyntax("version")),
    };
    let code = buf
        .get(9..12)
        .ok_or(DecodeError::Truncated("status line"))?;
    let mut status = 0u16;
    for &b in code {
        if !b.is_ascii_digit() {
            return Err(DecodeError::HttpSyntax("status"));
        }
        status = status * 10 + u16::from(b - b'0');
    }
    if buf.get(12).is_some_and(|&b| b != b' ') {
        return Err(DecodeError::HttpSyntax("status"));
    }
    Ok(ResponseHead {
        version,
        status,
        event_stream: false,
        content_length: None,
        chunked: false,
        truncated: true,
    })
}

fn map_error(e: httparse::Error) -> DecodeError {
    match e {
        httparse::Error::TooManyHeaders => DecodeError::TooManyHeaders,
        httparse::Error::HeaderName => DecodeError::HttpSyntax("header name"),
        httparse::Error::HeaderValue => DecodeError::HttpSyntax("header value"),
        httparse::Error::NewLine => DecodeError::HttpSyntax("line ending"),
        httparse::Error::Status => DecodeError::HttpSyntax("status"),
        httparse::Error::Token => DecodeError::HttpSyntax("status line"),
        httparse::Error::Version => DecodeError::HttpSyntax("version"),
    }
}

fn from_httparse(
    resp: &httparse::Response<'_, '_>,
    truncated: bool,
) -> Result<ResponseHead, DecodeError> {
    let version = match resp.version {
        Some(0) => 10,
        Some(1) => 11,
        _ => return Err(DecodeError::HttpSyntax("version")),
    };
    let status = resp.code.ok_or(DecodeError::HttpSyntax("status"))?;
    let mut head = ResponseHead {
        version,
        status,
        event_stream: false,
        content_length: None,
        chunked: false,
        truncated,
    };
    let mut length: Option<Option<u64>> = None;
    for h in resp.headers.iter() {
        let value = h.value.trim_ascii();
        if h.name.eq_ignore_ascii_case("content-type") {
            head.event_stream |= is_event_stream(value);
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let parsed = parse_decimal(value);
            length = match length {
                None => Some(parsed),
                Some(prev) if prev == parsed => Some(prev),
                Some(_) => Some(None),
            };
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = last_coding_is_chunked(value);
        }
    }
    head.content_length = length.flatten();
    Ok(head)
}

fn is_event_stream(content_type: &[u8]) -> bool {
    let media = content_type
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    media.eq_ignore_ascii_case(b"text/event-stream")
}

/// Chunked framing applies only when `chunked` is the final coding
/// (RFC 9112 §6.1); a later Transfer-Encoding line overrides earlier ones.
fn last_coding_is_chunked(value: &[u8]) -> bool {
    value
        .rsplit(|&b| b == b',')
        .next()
        .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_class_table() {
        let cases = [
            (0, "invalid"),
            (99, "invalid"),
            (100, "1xx"),
            (101, "1xx"),
            (200, "2xx"),
            (299, "2xx"),
            (301, "3xx"),
            (404, "4xx"),
            (429, "4xx"),
            (500, "5xx"),
            (599, "5xx"),
            (600, "invalid"),
            (999, "invalid"),
        ];
        for (code, want) in cases {
            assert_eq!(status_class_label(code), want, "{code}");
        }
    }

    #[test]
    fn streamed_completion_head() {
        let head = parse_response_head(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n\
              Transfer-Encoding: chunked\r\n\r\ndata: {}\n\n",
        )
        .unwrap();
        assert_eq!(
            head,
            ResponseHead {
                version: 11,
                status: 200,
                event_stream: true,
                content_length: None,
                chunked: true,
                truncated: false,
            }
        );
        assert_eq!(head.class_label(), "2xx");
    }

    #[test]
    fn header_table() {
        let cases: &[(&str, bool, Option<u64>, bool)] = &[
            (
                "Content-Type: application/json\r\nContent-Length: 17",
                false,
                Some(17),
                false,
            ),
            ("content-type: TEXT/EVENT-STREAM", true, None, false),
            ("Content-Type: text/event-streamx", false, None, false),
            (
                "Content-Type: text/plain; x=text/event-stream",
                false,
                None,
                false,
            ),
            ("Transfer-Encoding: gzip, chunked", false, None, true),
            ("Transfer-Encoding: chunked, gzip", false, None, false),
            ("Transfer-Encoding: CHUNKED", false, None, true),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip",
                false,
                None,
                false,
            ),
            (
                "Content-Length: 5\r\nContent-Length: 5",
                false,
                Some(5),
                false,
            ),
            ("Content-Length: 5\r\nContent-Length: 7", false, None, false),
            ("Content-Length: abc", false, None, false),
            (
                "Content-Length: 99999999999999999999999",
                false,
                None,
                false,
            ),
        ];
        for (lines, sse, len, chunked) in cases {
            let raw = format!("HTTP/1.1 200 OK\r\n{lines}\r\n\r\n");
            let head = parse_response_head(raw.as_bytes()).unwrap();
            assert_eq!(
                (head.event_stream, head.content_length, head.chunked),
                (*sse, *len, *chunked),
                "{lines}"
            );
        }
    }

    #[test]
    fn truncated_and_malformed_table() {
        type Case<'a> = (&'a [u8], Result<(u16, bool), DecodeError>);
        let cases: &[Case] = &[
            (b"", Err(DecodeError::Empty)),
            (b"H", Err(DecodeError::Truncated("status line"))),
            (b"HTTP/1.1 ", Err(DecodeError::Truncated("status line"))),
            (b"HTTP/1.1 20", Err(DecodeError::Truncated("status line"))),
            (b"HTTP/1.1 200", Ok((200, true))),
            (b"HTTP/1.1 200 O", Ok((200, true))),
            (b"HTTP/1.0 503 Service Unavail", Ok((503, true))),
            (b"HTTP/1.1 200 OK\r\nContent-Ty", Ok((200, true))),
            (b"HTTP/1.1 200 OK\nServer: x\n\n", Ok((200, false))),
            (b"HTTP/1.1 999 Weird\r\n\r\n", Ok((999, false))),
            (b"HTTP/1.1 2x0", Err(DecodeError::HttpSyntax("status"))),
            (b"HTTP/1.1 2000", Err(DecodeError::HttpSyntax("status"))),
            (b"HTTP/2 200", Err(DecodeError::HttpSyntax("version"))),
            (
                b"GET / HTTP/1.1\r\n\r\n",
                Err(DecodeError::HttpSyntax("version")),
            ),
            (
                b"\x16\x03\x03\x00\x10",
                Err(DecodeError::HttpSyntax("version")),
            ),
            (b"HTTP/1.1 200 OK\r\nX: \xff\xfe\r\n\r\n", Ok((200, false))),
        ];
        for (input, want) in cases {
            let got = parse_response_head(input).map(|h| (h.status, h.truncated));
            assert_eq!(got, *want, "{input:?}");
        }
    }

    #[test]
    fn every_prefix_is_safe() {
        let full = b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 10\r\n\r\n0123456789";
        for cut in 1..=full.len() {
            if let Ok(head) = parse_response_head(full.get(..cut).unwrap()) {
                assert_eq!(head.status, 429, "cut {cut}");
            }
        }
    }
}
