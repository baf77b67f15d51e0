//! Splitting one kernel exchange into its request/response pairs: a turn may carry pipelined
//! requests (and interim 1xx responses), told apart by the heads captured at segment starts.

use agent_common::ExchangeRecord;

use super::Seg;

/// One request/response pair out of a turn.
#[derive(Debug, PartialEq)]
pub(super) struct Part<'a> {
    pub(super) index: u32,
    pub(super) req_bytes: u64,
    pub(super) resp_bytes: u64,
    pub(super) req_packets: u32,
    pub(super) resp_packets: u32,
    pub(super) chunks: u32,
    pub(super) req_first_ns: u64,
    pub(super) req_last_ns: u64,
    pub(super) resp_first_ns: u64,
    pub(super) resp_last_ns: u64,
    pub(super) request_head: Option<&'a [u8]>,
    pub(super) response_head: Option<&'a [u8]>,
}

/// A message start inside a turn: offset in the turn, time of its segment, bytes from there on.
pub(super) struct Start<'a> {
    pub(super) offset: u64,
    pub(super) ts_ns: u64,
    pub(super) head: &'a [u8],
}

/// Message starts in a turn: every captured head segment, plus further messages found inside
/// a segment's captured bytes (pipelined messages written together), using head lengths and
/// Content-Length.
pub(super) fn starts<'a>(segs: &'a [Seg], request: bool) -> Vec<Start<'a>> {
    let mut out: Vec<Start<'a>> = Vec::new();
    for seg in segs {
        let mut pos = 0usize;
        while let Some(rest) = seg.data.get(pos..) {
            if out
                .last()
                .is_some_and(|s| s.offset >= seg.offset + pos as u64)
            {
                break;
            }
            out.push(Start {
                offset: seg.offset + pos as u64,
                ts_ns: seg.ts_ns,
                head: rest,
            });
            // Parsing the head for its length is only worth it where a message could follow.
            if !could_follow(rest, request) {
                break;
            }
            match message_len(rest, request) {
                Some(len)
                    if len > 0
                        && pos + len < seg.data.len()
                        && looks_like_start(&seg.data[pos + len..], request) =>
                {
                    pos += len
                }
                _ => break,
            }
        }
    }
    out
}

/// Interim responses (1xx other than 101 Switching Protocols: 100 Continue, 103 Early Hints)
/// precede the final response to the same request: each is folded into the next start, which
/// keeps the first one's offset and time (its bytes and first byte belong to the response).
/// An interim response with nothing after it stays: it is all that was seen.
pub(super) fn fold_interim(starts: Vec<Start<'_>>) -> Vec<Start<'_>> {
    let mut out: Vec<Start<'_>> = Vec::with_capacity(starts.len());
    let mut pending: Option<Start<'_>> = None;
    for s in starts {
        let folded = match pending.take() {
            Some(first) => Start {
                offset: first.offset,
                ts_ns: first.ts_ns,
                head: s.head,
            },
            None => s,
        };
        if is_interim(folded.head) {
            pending = Some(folded);
        } else {
            out.push(folded);
        }
    }
    out.extend(pending);
    out
}

/// `HTTP/1.x 1xx` other than 101.
pub(super) fn is_interim(head: &[u8]) -> bool {
    head.len() >= 12
        && head.starts_with(b"HTTP/1.")
        && head[8] == b' '
        && head[9] == b'1'
        && &head[9..12] != b"101"
}

pub(super) fn looks_like_start(b: &[u8], request: bool) -> bool {
    if request {
        // The kernel's test, so a pipelined request is a turn start on both sides.
        agent_common::wire::starts_http_request(b)
    } else {
        b.starts_with(b"HTTP/")
    }
}

/// Whether a message could start anywhere in `b` after its first byte: [`starts`] continues
/// only at such a place (where [`looks_like_start`] holds), so where there is none the head
/// need not be parsed for its length. Most segments hold one message: this spares a second
/// parse of nearly every head.
pub(super) fn could_follow(b: &[u8], request: bool) -> bool {
    let rest = b.get(1..).unwrap_or_default();
    if request {
        // Every method the kernel's test knows starts with one of these letters: SIMD search
        // for them, then the test itself at each.
        let at = |i: usize| looks_like_start(&rest[i..], true);
        memchr::memchr3_iter(b'G', b'P', b'H', rest).any(at)
            || memchr::memchr3_iter(b'D', b'O', b'C', rest).any(at)
            || memchr::memchr_iter(b'T', rest).any(at)
    } else {
        RESPONSE_START.find(rest).is_some()
    }
}

/// `HTTP/`, the start of every response, as a prebuilt finder.
static RESPONSE_START: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"HTTP/"));

/// Head length plus Content-Length, when the head is complete and the length known.
pub(super) fn message_len(b: &[u8], request: bool) -> Option<usize> {
    let mut slots = crate::decode::header_slots::<64>();
    let config = httparse::ParserConfig::default();
    let (head_len, hdrs): (usize, &[httparse::Header<'_>]) = if request {
        let mut r = httparse::Request::new(&mut []);
        match config.parse_request_with_uninit_headers(&mut r, b, &mut slots) {
            Ok(httparse::Status::Complete(n)) => (n, r.headers),
            _ => return None,
        }
    } else {
        let mut r = httparse::Response::new(&mut []);
        match config.parse_response_with_uninit_headers(&mut r, b, &mut slots) {
            Ok(httparse::Status::Complete(n)) => (n, r.headers),
            _ => return None,
        }
    };
    let mut body = 0usize;
    for h in hdrs {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return None; // chunked: the length is in the body, which we do not have whole
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            body = std::str::from_utf8(h.value).ok()?.trim().parse().ok()?;
        }
    }
    head_len.checked_add(body)
}

pub(super) fn split<'a>(
    req_heads: &'a [Seg],
    resp_heads: &'a [Seg],
    x: &ExchangeRecord,
) -> Vec<Part<'a>> {
    let e = &x.exchange;
    let reqs = starts(req_heads, true);
    let resps = fold_interim(starts(resp_heads, false));
    let n = reqs.len().max(1);
    let size_of = |starts: &[Start<'_>], i: usize, total: u64| -> u64 {
        let from = starts.get(i).map(|s| s.offset).unwrap_or(0).min(total);
        let to = starts
            .get(i + 1)
            .map(|s| s.offset)
            .unwrap_or(total)
            .min(total);
        to.saturating_sub(from)
    };
    (0..n)
        .map(|i| {
            let last = i + 1 == n;
            // Responses beyond the requests we found go to the last request.
            let resp_range_end = if last { resps.len() } else { i + 1 };
            let resp_bytes = if resps.is_empty() {
                if i == 0 {
                    e.resp_bytes
                } else {
                    0
                }
            } else if i < resps.len() {
                let from = resps[i].offset.min(e.resp_bytes);
                let to = resps
                    .get(resp_range_end)
                    .map(|s| s.offset)
                    .unwrap_or(e.resp_bytes)
                    .min(e.resp_bytes);
                to.saturating_sub(from)
            } else {
                0
            };
            let resp_first_ns = match resps.get(i) {
                Some(s) if i > 0 => s.ts_ns,
                _ => e.resp_first_ns,
            };
            let resp_last_ns = match resps.get(i + 1) {
                Some(s) if !last => s.ts_ns,
                _ => e.resp_last_ns,
            };
            Part {
                index: i as u32,
                req_bytes: if reqs.is_empty() {
                    e.req_bytes
                } else {
                    size_of(&reqs, i, e.req_bytes)
                },
                resp_bytes,
                // Packet and chunk counts are per turn; they go to the first request.
                req_packets: if i == 0 { e.req_packets } else { 0 },
                resp_packets: if i == 0 { e.resp_packets } else { 0 },
                chunks: if i == 0 { e.resp_psh } else { 0 },
                req_first_ns: reqs
                    .get(i)
                    .filter(|_| i > 0)
                    .map(|s| s.ts_ns)
                    .unwrap_or(e.req_first_ns),
                req_last_ns: e.req_last_ns,
                resp_first_ns,
                resp_last_ns,
                request_head: reqs.get(i).map(|s| s.head),
                response_head: resps.get(i).map(|s| s.head),
            }
        })
        .collect()
}

#[cfg(test)]
mod could_follow_tests {
    use super::{could_follow, looks_like_start};

    /// The shortcut answers exactly what testing every later position would.
    #[test]
    fn agrees_with_testing_every_position() {
        let samples: [&[u8]; 7] = [
            b"POST /v1 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}",
            b"GET / HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\nDELETE /x HTTP/1.1\r\n\r\nTRACE",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\ndata: HTTP",
            b"PUT",
            b"",
        ];
        for b in samples {
            for request in [true, false] {
                let slow = (1..b.len()).any(|i| looks_like_start(&b[i..], request));
                assert_eq!(
                    could_follow(b, request),
                    slow,
                    "{:?} {request}",
                    String::from_utf8_lossy(b)
                );
            }
        }
    }
}
