//! A realistic record mix for the userspace measurements: the kernel program itself, under
//! BPF_PROG_TEST_RUN, turns crafted connections into ring-buffer records, which are kept as
//! bytes. So the pipeline is timed on exactly what it reads live (request heads with API keys
//! and User-Agents, response heads, exchanges, SYN records, TLS ClientHellos), not on empty
//! records. The program runs on the packets' own timestamps (as `siphon replay` does), so the
//! mix spans a chosen stretch of record time and the detector evaluates (every second of record
//! time) and refreshes its baseline (every 10 s) as it would live at that load.

use anyhow::{ensure, Context as _};
use aya::{
    maps::RingBuf,
    programs::{TestRun as _, TestRunOptions},
};
use siphon_agent::{
    kernel::object::{self as ebpf_object, LoadOptions},
    replay::skb_ctx,
};

use crate::{
    frames::{
        client_hello, response_data, sequence, tcp_frame, Endpoint, NextSeq, CLIENT_MAC,
        HELLO_CLASSIC_LEN, HTTP_PORT, RESPONSE_HEAD, SERVER_IP, SERVER_MAC, TLS_PORT,
    },
    PASS,
};
use agent_common::{names, tcp_flag, TimeSource};

/// The clients' User-Agents: SDKs, curl and a browser, as an inference endpoint sees them.
const USER_AGENTS: [&str; 4] = [
    "OpenAI/Python 1.54.4",
    "curl/8.5.0",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36",
    "python-requests/2.32.3",
];

/// Segments of server-sent events per response after its head.
const DATA_SEGMENTS: usize = 3;
/// One connection in this many is TLS (port 443) instead of plaintext HTTP.
const TLS_EVERY: usize = 4;

pub(crate) struct Mix {
    pub(crate) records: Vec<Vec<u8>>,
    pub(crate) clients: usize,
    pub(crate) requests: usize,
    pub(crate) span_seconds: f64,
}

/// A frame due at `t` (ns from the start), on client `c`'s connection.
type Due = (u64, Vec<u8>);

/// `clients` clients on keep-alive connections, each sending a request every `period_ms`,
/// `rounds` times: a busy ingress, where the detector's work per second of record time is
/// shared by the records of that second as it would be live.
pub(crate) fn build(clients: usize, rounds: usize, period_ms: u64) -> anyhow::Result<Mix> {
    let mut ebpf = ebpf_object::load(LoadOptions {
        max_flows: 1 << 18,
        time_source: TimeSource::SkbTstamp,
        head_capture_bytes: ebpf_object::LIVE_HEAD_CAPTURE_BYTES,
        ringbuf_bytes: 64 << 20,
    })?;
    let mut ring = RingBuf::try_from(
        ebpf.take_map(names::MAP_EVENTS)
            .context("map EVENTS missing from the eBPF object")?,
    )
    .context("map EVENTS is not a ring buffer")?;
    let program = ebpf_object::classifier(&mut ebpf, names::PROG_INGRESS)?;
    let mut next_seq = NextSeq::new();
    let mut records = Vec::new();
    // Unix time, as a capture's timestamps: reports get wall-clock times from it.
    let t0: u64 = 1_767_225_600_000_000_000;
    let period = period_ms * 1_000_000;
    let slot = period / clients.max(1) as u64;
    // Round by round, each round's frames in time order (connections overlap in time).
    for round in 0..=rounds + 1 {
        let mut due: Vec<Due> = Vec::new();
        for c in 0..clients {
            let t = round as u64 * period + c as u64 * slot;
            let frames = if round == 0 {
                opening(c)
            } else if round <= rounds {
                exchange(c, round)
            } else {
                closing(c)
            };
            let mut at = t;
            for (frame, gap_ns) in frames {
                at += gap_ns;
                due.push((at, frame));
            }
        }
        due.sort_by_key(|d| d.0);
        for (at, mut frame) in due {
            sequence(&mut next_seq, &mut frame);
            let ctx = skb_ctx::with_tstamp(t0 + at);
            let run = program
                .test_run(TestRunOptions {
                    data_in: Some(&frame),
                    ctx_in: Some(&ctx),
                    ..TestRunOptions::new()
                })
                .context("BPF_PROG_TEST_RUN of the mix")?;
            ensure!(run.return_value == PASS, "Siphon did not pass a frame");
        }
        while let Some(r) = ring.next() {
            records.push(r.to_vec());
        }
    }
    ensure!(!records.is_empty(), "the kernel program emitted no records");
    Ok(Mix {
        records,
        clients,
        requests: clients * rounds,
        span_seconds: (rounds as u64 * period) as f64 / 1e9,
    })
}

fn is_tls(c: usize) -> bool {
    c % TLS_EVERY == TLS_EVERY - 1
}

/// Client `c`'s address: 10.64.0.0/10 and up, a /24 holding 256 clients.
fn client_ip(c: usize) -> [u8; 4] {
    let [_, a, b, d] = (c as u32).to_be_bytes();
    [10, 64 | (a & 0x3f), b, d]
}

fn endpoints(c: usize) -> (Endpoint, Endpoint) {
    let port = 20_000 + (c % 40_000) as u16;
    let server_port = if is_tls(c) { TLS_PORT } else { HTTP_PORT };
    (
        (CLIENT_MAC, client_ip(c), port),
        (SERVER_MAC, SERVER_IP, server_port),
    )
}

/// The connection's opening, each frame with the time before it: the TCP handshake, and for a
/// TLS client its ClientHello and the server's flight.
fn opening(c: usize) -> Vec<(Vec<u8>, u64)> {
    use tcp_flag::{ACK, PSH, SYN};
    let (cl, sv) = endpoints(c);
    let mut out = vec![
        (tcp_frame(cl, sv, SYN, &[]), 0),
        (tcp_frame(sv, cl, SYN | ACK, &[]), 200_000),
        (tcp_frame(cl, sv, ACK, &[]), 200_000),
    ];
    if is_tls(c) {
        out.push((
            tcp_frame(cl, sv, ACK | PSH, &client_hello(HELLO_CLASSIC_LEN, &[])),
            200_000,
        ));
        out.push((
            tcp_frame(sv, cl, ACK | PSH, &tls_record(1200, 22)),
            1_000_000,
        ));
    }
    out
}

/// One request on the connection: plaintext, a chat-completion request answered by a response
/// head and server-sent events; TLS, opaque application data both ways.
fn exchange(c: usize, round: usize) -> Vec<(Vec<u8>, u64)> {
    use tcp_flag::{ACK, PSH};
    let (cl, sv) = endpoints(c);
    let mut out = Vec::new();
    if is_tls(c) {
        out.push((tcp_frame(cl, sv, ACK | PSH, &tls_record(600, 23)), 0));
        out.push((
            tcp_frame(sv, cl, ACK | PSH, &tls_record(1400, 23)),
            20_000_000,
        ));
    } else {
        out.push((tcp_frame(cl, sv, ACK | PSH, &request(c, round)), 0));
        out.push((tcp_frame(sv, cl, ACK | PSH, RESPONSE_HEAD), 20_000_000));
    }
    for _ in 0..DATA_SEGMENTS {
        out.push((tcp_frame(sv, cl, ACK | PSH, &response_data()), 2_000_000));
    }
    out.push((tcp_frame(cl, sv, ACK, &[]), 200_000));
    out
}

fn closing(c: usize) -> Vec<(Vec<u8>, u64)> {
    use tcp_flag::{ACK, FIN};
    let (cl, sv) = endpoints(c);
    vec![
        (tcp_frame(cl, sv, FIN | ACK, &[]), 0),
        (tcp_frame(sv, cl, FIN | ACK, &[]), 200_000),
    ]
}

/// An opaque TLS record of `len` bytes of `kind` (22 handshake, 23 application data).
fn tls_record(len: usize, kind: u8) -> Vec<u8> {
    let mut r = vec![kind, 3, 3, (len >> 8) as u8, len as u8];
    r.resize(len + 5, 0x5a);
    r
}

/// A chat-completion request head and the start of its body: key and User-Agent per client.
fn request(c: usize, r: usize) -> Vec<u8> {
    let body = format!(
        r#"{{"model":"meta-llama/Llama-3.1-70B-Instruct","stream":true,"max_tokens":512,"messages":[{{"role":"user","content":"question {r} of client {c}: why is p99 time to first token up?"}}]}}"#
    );
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\n\
         Host: inference.internal:8000\r\n\
         Accept: application/json\r\n\
         Content-Type: application/json\r\n\
         User-Agent: {}\r\n\
         Authorization: Bearer sk-bench-{c:024x}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        USER_AGENTS[c % USER_AGENTS.len()],
        body.len()
    )
    .into_bytes()
}
