use super::*;
use agent_common::{phase, record_kind, v4_mapped, Exchange, Handshake};

fn key() -> FlowKey {
    let (k, _) = FlowKey::normalise(
        7,
        6,
        &v4_mapped(u32::from_ne_bytes([10, 0, 0, 1])),
        40000,
        &v4_mapped(u32::from_ne_bytes([10, 0, 0, 2])),
        8000,
    );
    k
}

fn assembler() -> Assembler {
    let hasher = ApiKeyHasher::new(b"0123456789abcdef0123").expect("secret");
    Assembler::new(
        DecodeConfig {
            hasher,
            key_updates: None,
            trusted_hops: 1,
        },
        100,
    )
}

fn head(what: u8, seq: u32, offset: u64, ts: u64, data: &[u8], len: u32) -> Event {
    Event::Payload(Payload {
        what,
        side: 0,
        key: key(),
        seq,
        ts_ns: ts,
        turn_offset: offset,
        payload_len: len,
        data: data.to_vec(),
        ends: None,
    })
}

fn exchange(seq: u32, req_bytes: u64, resp_bytes: u64, end: u8) -> Event {
    Event::Exchange(ExchangeRecord {
        kind: record_kind::EXCHANGE,
        end,
        client: client::A,
        _pad: 0,
        key: key(),
        _pad2: 0,
        exchange: Exchange {
            req_first_ns: 1_000,
            req_last_ns: 2_000,
            resp_first_ns: 5_000,
            resp_last_ns: 9_000,
            req_bytes,
            resp_bytes,
            req_packets: 1,
            resp_packets: 3,
            resp_psh: 3,
            seq,
            phase: phase::RESPONSE,
            flags: 0,
            _pad: 0,
            _pad2: 0,
        },
        handshake: Handshake::default(),
    })
}

fn exchanges(out: &[Report]) -> Vec<&ExchangeReport> {
    out.iter()
        .filter_map(|r| {
            if let Report::Exchange(e) = r {
                Some(e.as_ref())
            } else {
                None
            }
        })
        .collect()
}

const REQ: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer sk-secret-123\r\nX-Forwarded-For: 203.0.113.9\r\nContent-Length: 2\r\n\r\n{}";
const RESP: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 5\r\n\r\nhello";

#[test]
fn one_exchange_with_heads() {
    let mut a = assembler();
    let mut out = Vec::new();
    a.handle(
        head(
            payload_what::REQUEST_HEAD,
            1,
            0,
            1_000,
            REQ,
            REQ.len() as u32,
        ),
        &mut out,
    );
    a.handle(
        head(
            payload_what::RESPONSE_HEAD,
            1,
            0,
            5_000,
            RESP,
            RESP.len() as u32,
        ),
        &mut out,
    );
    a.handle(
        exchange(1, REQ.len() as u64, RESP.len() as u64, exchange_end::FIN),
        &mut out,
    );
    let ex = exchanges(&out);
    assert_eq!(ex.len(), 1);
    let e = ex[0];
    assert_eq!(
        (e.request_bytes, e.response_bytes),
        (REQ.len() as u64, RESP.len() as u64)
    );
    assert_eq!(e.ttfb_seconds, Some(3e-6));
    let http = e.http.as_ref().expect("http");
    assert_eq!(
        (http.method, http.route, http.status, http.event_stream),
        ("POST", "/v1/chat/completions", Some(200), true)
    );
    assert_eq!(http.client_ip.to_string(), "203.0.113.9", "one trusted hop");
    assert_eq!(e.client.to_string(), "10.0.0.1:40000");
    let json = serde_json::to_string(&out).expect("json");
    assert!(!json.contains("sk-secret-123"), "raw key leaked: {json}");
    assert!(http.api_key_hash.as_ref().is_some_and(|h| h.len() == 32));
}

#[test]
fn pipelined_pair_in_one_segment_splits() {
    let get = b"GET /v1/models HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut both = get.to_vec();
    both.extend_from_slice(get);
    let r1 = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
    let r2 = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
    let mut resp = r1.to_vec();
    resp.extend_from_slice(r2);
    let mut a = assembler();
    let mut out = Vec::new();
    a.handle(
        head(
            payload_what::REQUEST_HEAD,
            1,
            0,
            1_000,
            &both,
            both.len() as u32,
        ),
        &mut out,
    );
    a.handle(
        head(
            payload_what::RESPONSE_HEAD,
            1,
            0,
            5_000,
            &resp,
            resp.len() as u32,
        ),
        &mut out,
    );
    a.handle(
        exchange(
            1,
            both.len() as u64,
            resp.len() as u64,
            exchange_end::NEXT_REQUEST,
        ),
        &mut out,
    );
    let ex = exchanges(&out);
    assert_eq!(ex.len(), 2);
    assert_eq!(
        (ex[0].request_bytes, ex[1].request_bytes),
        (get.len() as u64, get.len() as u64)
    );
    assert_eq!(
        (ex[0].response_bytes, ex[1].response_bytes),
        (r1.len() as u64, r2.len() as u64)
    );
    let status: Vec<_> = ex
        .iter()
        .map(|e| e.http.as_ref().and_then(|h| h.status))
        .collect();
    assert_eq!(status, vec![Some(200), Some(404)]);
}

#[test]
fn pipelined_responses_in_separate_segments_split_by_offset() {
    let get = b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut both = get.to_vec();
    both.extend_from_slice(get);
    let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut a = assembler();
    let mut out = Vec::new();
    a.handle(
        head(
            payload_what::REQUEST_HEAD,
            1,
            0,
            1_000,
            &both,
            both.len() as u32,
        ),
        &mut out,
    );
    a.handle(
        head(payload_what::RESPONSE_HEAD, 1, 0, 5_000, r, 100),
        &mut out,
    );
    a.handle(
        head(payload_what::RESPONSE_HEAD, 1, 100, 7_000, r, 250),
        &mut out,
    );
    a.handle(
        exchange(1, both.len() as u64, 350, exchange_end::FIN),
        &mut out,
    );
    let ex = exchanges(&out);
    assert_eq!(
        ex.iter().map(|e| e.response_bytes).collect::<Vec<_>>(),
        vec![100, 250]
    );
    assert_eq!(
        ex[1].ttfb_seconds,
        Some(5e-6),
        "second response's first byte at 7000 ns"
    );
}

#[test]
fn duplicate_exchange_is_dropped() {
    let mut a = assembler();
    let mut out = Vec::new();
    a.handle(exchange(1, 10, 20, exchange_end::IDLE), &mut out);
    a.handle(exchange(1, 10, 25, exchange_end::NEXT_REQUEST), &mut out);
    assert_eq!(exchanges(&out).len(), 1);
    assert_eq!(a.stats.duplicate_exchanges, 1);
}

#[test]
fn garbage_heads_are_counted_not_fatal() {
    let mut a = assembler();
    let mut out = Vec::new();
    a.handle(
        head(
            payload_what::REQUEST_HEAD,
            1,
            0,
            1,
            b"GET \xff\xfe\r\n\r\n",
            8,
        ),
        &mut out,
    );
    a.handle(
        head(payload_what::RESPONSE_HEAD, 1, 0, 2, b"HTTP/9 xx", 9),
        &mut out,
    );
    a.handle(exchange(1, 8, 9, exchange_end::FIN), &mut out);
    let ex = exchanges(&out);
    assert_eq!(ex.len(), 1);
    assert!(ex[0]
        .http
        .as_ref()
        .is_some_and(|h| h.decode_error.is_some()));
}

#[test]
fn partial_hello_is_reported_incomplete() {
    let mut a = assembler();
    let mut out = Vec::new();
    // A record header announcing 512 bytes, and only 20 of them.
    let mut hello = vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc];
    hello.resize(25, 0);
    a.handle(head(payload_what::TLS_HELLO, 1, 0, 1, &hello, 25), &mut out);
    assert!(out.is_empty(), "waits for the rest");
    a.handle(exchange(1, 25, 0, exchange_end::RST), &mut out);
    assert!(out
        .iter()
        .any(|r| matches!(r, Report::TlsClientHello(h) if h.error.is_some())));
    assert_eq!(a.stats.hello_incomplete, 1);
}

/// The reports an assembler gives for these events, in order.
fn assemble(events: Vec<Event>) -> Vec<Report> {
    let mut a = assembler();
    let mut out = Vec::new();
    for e in events {
        a.handle(e, &mut out);
    }
    out
}

/// A captured head holding all of `data`.
fn whole_head(what: u8, offset: u64, ts: u64, data: &[u8]) -> Event {
    head(what, 1, offset, ts, data, data.len() as u32)
}

#[test]
fn interim_responses_fold_into_the_final_one() {
    // 100 Continue, then the final response later in the same server turn: one response, with
    // the final status, all the turn's bytes, and the interim response's first byte.
    let continue_ = b"HTTP/1.1 100 Continue\r\n\r\n";
    let total = (continue_.len() + RESP.len()) as u64;
    let out = assemble(vec![
        whole_head(payload_what::REQUEST_HEAD, 0, 1_000, REQ),
        whole_head(payload_what::RESPONSE_HEAD, 0, 5_000, continue_),
        whole_head(
            payload_what::RESPONSE_HEAD,
            continue_.len() as u64,
            6_000,
            RESP,
        ),
        exchange(1, REQ.len() as u64, total, exchange_end::FIN),
    ]);
    let ex = exchanges(&out);
    assert_eq!(ex.len(), 1);
    assert_eq!(ex[0].http.as_ref().and_then(|h| h.status), Some(200));
    assert_eq!(ex[0].response_bytes, total);
    assert_eq!(
        ex[0].ttfb_seconds,
        Some(3e-6),
        "first byte: the 100 at 5000 ns"
    );
}

#[test]
fn interim_detection_table() {
    for (head, interim) in [
        (&b"HTTP/1.1 100 Continue\r\n"[..], true),
        (b"HTTP/1.1 103 Early Hints\r\n", true),
        (b"HTTP/1.0 199 Whatever\r\n", true),
        (b"HTTP/1.1 101 Switching Protocols\r\n", false),
        (b"HTTP/1.1 200 OK\r\n", false),
        (b"HTTP/1.1 1", false),
        (b"HTTP/2 100 x\r\n", false),
        (b"", false),
    ] {
        assert_eq!(
            is_interim(head),
            interim,
            "{:?}",
            String::from_utf8_lossy(head)
        );
    }
}

#[test]
fn a_lone_interim_response_is_kept() {
    let continue_ = b"HTTP/1.1 100 Continue\r\n\r\n";
    let starts = fold_interim(vec![Start {
        offset: 0,
        ts_ns: 5,
        head: continue_,
    }]);
    assert_eq!(starts.len(), 1);
    assert_eq!(starts[0].head, continue_);
}
