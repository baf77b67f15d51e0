//! Message framing inside one turn of a connection: the assembler splits a turn carrying
//! pipelined requests (and interim 1xx responses) by the heads captured at segment starts,
//! using head lengths, Content-Length and Transfer-Encoding: chunked (assemble/split.rs).
//!
//! Input: segments separated by 0xFF; a segment's first byte says its direction (even:
//! request, odd: response) and the rest is the captured bytes. Each direction's segments are
//! contiguous from offset 0, and one exchange record closes the turn.
#![no_main]

use agent_common::{exchange_end, payload_what, record_kind, ExchangeRecord, FlowKey};
use libfuzzer_sys::fuzz_target;
use siphon_agent::pipeline::{
    assemble::{Assembler, DecodeConfig},
    records::{Event, Payload},
    report::Report,
};

/// The kernel copies at most this much of a head (agent_common::CAPTURE_MAX).
const CAPTURE_MAX: usize = agent_common::CAPTURE_MAX;
/// Segments per turn; bounds the work per input.
const MAX_SEGMENTS: usize = 300;

fuzz_target!(|data: &[u8]| {
    let key = FlowKey {
        proto: 6,
        port_a: 8000,
        port_b: 40000,
        ..FlowKey::default()
    };
    let mut asm = Assembler::new(
        DecodeConfig {
            hasher: siphon_fuzz::hasher(),
            key_updates: None,
            trusted_hops: 1,
        },
        16,
    );
    let mut out = Vec::new();
    let mut offsets = [0u64; 2];
    let mut packets = [0u32; 2];
    for (i, seg) in data.split(|&b| b == 0xff).take(MAX_SEGMENTS).enumerate() {
        let Some((&dir, bytes)) = seg.split_first() else {
            continue;
        };
        let d = usize::from(dir & 1);
        let captured = &bytes[..bytes.len().min(CAPTURE_MAX)];
        asm.handle(
            Event::Payload(Payload {
                what: if d == 0 {
                    payload_what::REQUEST_HEAD
                } else {
                    payload_what::RESPONSE_HEAD
                },
                side: d as u8,
                key,
                seq: 1,
                ts_ns: 1_000 + i as u64,
                turn_offset: offsets[d],
                payload_len: bytes.len() as u32,
                data: captured.to_vec(),
                ends: None,
            }),
            &mut out,
        );
        offsets[d] += bytes.len() as u64;
        packets[d] += 1;
    }
    let mut x = ExchangeRecord {
        kind: record_kind::EXCHANGE,
        end: exchange_end::FIN,
        client: agent_common::client::B,
        key,
        ..ExchangeRecord::default()
    };
    x.exchange.seq = 1;
    x.exchange.req_bytes = offsets[0];
    x.exchange.resp_bytes = offsets[1];
    x.exchange.req_packets = packets[0];
    x.exchange.resp_packets = packets[1];
    x.exchange.req_first_ns = 1_000;
    x.exchange.req_last_ns = 2_000;
    x.exchange.resp_first_ns = 3_000;
    x.exchange.resp_last_ns = 4_000;
    asm.handle(Event::Exchange(x), &mut out);
    let parts: Vec<_> = out
        .iter()
        .filter_map(|r| match r {
            Report::Exchange(x) => Some(x),
            Report::TlsClientHello(_) => None,
        })
        .collect();
    assert!(
        !parts.is_empty(),
        "an exchange record always gives a report"
    );
    // Splitting moves bytes between the turn's requests; it never loses or invents any.
    let req: u64 = parts.iter().map(|p| p.request_bytes).sum();
    let resp: u64 = parts.iter().map(|p| p.response_bytes).sum();
    assert_eq!((req, resp), (offsets[0], offsets[1]), "{parts:#?}");
});
