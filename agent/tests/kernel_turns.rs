//! The kernel program under BPF_PROG_TEST_RUN: request/response turns on one connection
//! (pipelining, 100 Continue) and the verifier's work. Needs root (CAP_BPF): run through
//! `cargo xtask test`.

mod common;

use agent_common::{exchange_flag, names};
use aya::programs::SchedClassifier;
use common::test_run::*;
use etherparse::PacketBuilder;

/// A client request, then a server turn of two segments that both start with a status line
/// (two pipelined responses, or a 1xx and its final response).
fn request_then_two_status_lines(h: &mut Harness, client_port: u16, request: &[u8]) -> usize {
    request_then_status_lines(
        h,
        client_port,
        request,
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    )
}

fn request_then_status_lines(
    h: &mut Harness,
    client_port: u16,
    request: &[u8],
    first: &[u8],
) -> usize {
    let conn = Conn {
        port: client_port,
        net: 0,
    };
    let second = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
    h.delta(&conn.client(CLIENT_ISN, true, &[]));
    h.delta(&conn.client(CLIENT_ISN + 1, false, request));
    h.delta(&conn.server(SERVER_ISN + 1, first));
    h.delta(&conn.server(SERVER_ISN + 1 + first.len() as u32, second));
    first.len()
}

const CLIENT_ISN: u32 = 999;
const SERVER_ISN: u32 = 4999;

/// Frames of one TCP connection from 10.9.`net`.1:`port` to 10.9.`net`.2:8000, after a
/// handshake whose SYN-ACK the tests leave out (the client's SYN is enough to set the sides).
struct Conn {
    port: u16,
    net: u8,
}

impl Conn {
    fn client(&self, seq: u32, syn: bool, payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(
            [10, 9, self.net, 1],
            [10, 9, self.net, 2],
            64,
        );
        let b = if syn {
            b.tcp(self.port, 8000, seq, 64240).syn()
        } else {
            b.tcp(self.port, 8000, seq, 64240).ack(SERVER_ISN + 1).psh()
        };
        let mut v = Vec::new();
        b.write(&mut v, payload).expect("write");
        v
    }

    fn server(&self, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ethernet2(MAC_B, MAC_A)
            .ipv4([10, 9, self.net, 2], [10, 9, self.net, 1], 64)
            .tcp(8000, self.port, seq, 64240)
            .ack(CLIENT_ISN + 1)
            .psh()
            .write(&mut v, payload)
            .expect("write");
        v
    }
}

#[test]
#[ignore = "privileged: loads eBPF; run with `cargo xtask test`"]
fn response_heads_past_the_turn_start_only_after_pipelinable_requests() {
    let mut h = Harness::new();
    let get =
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n";
    let first_len = request_then_two_status_lines(&mut h, 43000, get);
    let heads = h.response_head_offsets();
    assert_eq!(
        heads,
        vec![0, first_len as u64],
        "after GETs, a status line later in the turn is a pipelined response's"
    );

    // POST is not pipelined (RFC 9112): only the turn's first status line is looked for.
    let post = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}";
    request_then_two_status_lines(&mut h, 43001, post);
    let heads = h.response_head_offsets();
    assert_eq!(heads, vec![0]);
    let flows = h.flows.snapshot().expect("flows");
    let flags = |port: u16| {
        flows
            .iter()
            .find(|(k, _)| k.port_a == port || k.port_b == port)
            .map(|(_, st)| st.exchange.flags)
            .expect("flow")
    };
    assert_ne!(flags(43000) & exchange_flag::MAY_PIPELINE, 0);
    assert_eq!(flags(43001) & exchange_flag::MAY_PIPELINE, 0);
    assert_ne!(flags(43001) & exchange_flag::HTTP_RESPONSE, 0);

    // An interim response (1xx) at the turn start: the final one follows in the same turn.
    let interim = b"HTTP/1.1 100 Continue\r\n\r\n";
    request_then_status_lines(&mut h, 43002, post, interim);
    let heads = h.response_head_offsets();
    assert_eq!(
        heads,
        vec![0, interim.len() as u64],
        "after a 1xx, the final response's head is looked for"
    );
}

#[test]
#[ignore = "privileged: loads eBPF; run with `cargo xtask test`"]
fn expect_continue_body_after_the_interim_response_is_the_same_exchange() {
    let mut h = Harness::new();
    let conn = Conn {
        port: 43100,
        net: 1,
    };
    let head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n";
    let body = b"{ }\n";
    let interim = b"HTTP/1.1 100 Continue\r\n\r\n";
    let fin = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    h.delta(&conn.client(CLIENT_ISN, true, &[]));
    h.delta(&conn.client(CLIENT_ISN + 1, false, head));
    h.delta(&conn.server(SERVER_ISN + 1, interim));
    h.delta(&conn.client(CLIENT_ISN + 1 + head.len() as u32, false, body));
    let last = h.delta(&conn.server(SERVER_ISN + 1 + interim.len() as u32, fin));
    let (_, st, _) = only_flow(&last);
    let ex = st.exchange;
    assert_eq!(ex.seq, 1, "the body does not start a new exchange");
    assert_eq!(ex.req_bytes, (head.len() + body.len()) as u64);
    assert_eq!(
        ex.resp_bytes,
        (interim.len() + fin.len()) as u64,
        "the response counts what the server sent for the request, the 100 included"
    );
    assert_eq!(
        ex.flags & exchange_flag::INTERIM,
        0,
        "a final status was seen"
    );
    assert!(
        ex.resp_first_ns >= ex.req_last_ns,
        "first byte: the final response's, after the body"
    );
    let heads = h.response_head_offsets();
    assert_eq!(heads, vec![0, interim.len() as u64]);
}

/// Instructions the verifier of this kernel may walk for one program before older verifiers
/// give up. Linux 6.1's verifier (1M-instruction budget, weaker pruning) rejected the programs
/// when this kernel (6.18) reported 209,727; at 46,216 both 6.1 and 6.12 accept them (checked
/// under qemu). The bound keeps a margin for growth while catching a path explosion early.
const VERIFIED_INSNS_BUDGET: u32 = 120_000;

#[test]
#[ignore = "privileged: loads eBPF; run with `cargo xtask test`"]
fn verifier_work_stays_within_what_older_kernels_accept() {
    let mut h = Harness::new();
    for name in [names::PROG_INGRESS, names::PROG_EGRESS] {
        let prog: &mut SchedClassifier = h
            .ebpf
            .program_mut(name)
            .expect("prog")
            .try_into()
            .expect("classifier");
        let verified = prog
            .info()
            .expect("program info")
            .verified_instruction_count()
            .expect("kernel reports verified instructions (5.16+)");
        eprintln!("{name}: {verified} instructions verified");
        assert!(
            verified < VERIFIED_INSNS_BUDGET,
            "{name}: the verifier walked {verified} instructions (budget {VERIFIED_INSNS_BUDGET}): \
             a path explosion that Linux 6.1's verifier would not finish"
        );
    }
}
