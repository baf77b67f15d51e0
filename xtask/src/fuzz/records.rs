//! Seeds for the ring_records target: ring-buffer streams built from agent-common's record
//! types, byte for byte as the kernel writes them.

use agent_common::{
    client, exchange_end, payload_what, record_kind, tcp_flag, ExchangeRecord, FlowKey,
    PayloadHeader, SynRecord, TCP_OPTIONS_MAX,
};

/// Ring-buffer streams (`[trusted hops][len u16 LE][record]...`) of one TLS and one plain
/// HTTP connection: SYN, SYN-ACK, ClientHello, request and response heads, the exchange.
pub fn ring_records(
    hellos: &[Vec<u8>],
    fallback_hello: fn() -> Vec<u8>,
    key_text: &str,
) -> Vec<Vec<u8>> {
    let key = FlowKey {
        addr_a: agent_common::v4_mapped(u32::from_ne_bytes([10, 0, 0, 1])),
        addr_b: agent_common::v4_mapped(u32::from_ne_bytes([10, 0, 0, 2])),
        port_a: 8000,
        port_b: 40000,
        proto: 6,
        ifindex: 2,
        ..FlowKey::default()
    };
    let hello = hellos.first().cloned().unwrap_or_else(fallback_hello);
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nAuthorization: Bearer {key_text}\r\n\
         X-Forwarded-For: 203.0.113.7\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    let response = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
                     Transfer-Encoding: chunked\r\n\r\n";
    let mut seeds = Vec::new();
    for tls in [false, true] {
        let mut stream = vec![1u8];
        let mut push = |record: Vec<u8>| {
            stream.extend_from_slice(&(record.len() as u16).to_le_bytes());
            stream.extend(record);
        };
        push(syn(&key, 0, 100));
        push(syn(&key, tcp_flag::ACK, 200));
        let mut seq = 1;
        if tls {
            push(payload(&key, payload_what::TLS_HELLO, 1, 0, &hello, false));
            push(exchange(&key, 1, hello.len() as u64, 4000));
            seq = 2;
        }
        push(payload(
            &key,
            payload_what::REQUEST_HEAD,
            seq,
            0,
            request.as_bytes(),
            false,
        ));
        push(payload(
            &key,
            payload_what::RESPONSE_HEAD,
            seq,
            0,
            response,
            false,
        ));
        // The next request's head, carrying the end of this exchange.
        push(payload(
            &key,
            payload_what::REQUEST_HEAD,
            seq + 1,
            0,
            request.as_bytes(),
            true,
        ));
        push(exchange(&key, seq + 1, request.len() as u64, 900));
        seeds.push(stream);
    }
    seeds
}

/// The bytes of a record as the ring buffer carries it.
fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: T is one of agent-common's #[repr(C)] records, whose layout tests show no
    // implicit padding, so every byte is initialised.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
        .to_vec()
}

fn syn(key: &FlowKey, flags: u8, ts_ns: u64) -> Vec<u8> {
    let opts = [
        2u8, 4, 5, 180, 4, 2, 8, 10, 0, 1, 2, 3, 0, 0, 0, 0, 1, 3, 3, 7,
    ];
    let mut options = [0u8; TCP_OPTIONS_MAX];
    options[..opts.len()].copy_from_slice(&opts);
    bytes_of(&SynRecord {
        kind: record_kind::SYN,
        tcp_flags: tcp_flag::SYN | flags,
        side: u8::from(flags != 0),
        window: 64240,
        key: *key,
        options_len: opts.len() as u8,
        ttl: 64,
        _pad: 0,
        ts_ns,
        options,
    })
}

fn exchange(key: &FlowKey, seq: u32, req_bytes: u64, resp_bytes: u64) -> Vec<u8> {
    let mut x = ExchangeRecord {
        kind: record_kind::EXCHANGE,
        end: exchange_end::NEXT_REQUEST,
        client: client::B,
        key: *key,
        ..ExchangeRecord::default()
    };
    x.exchange.seq = seq;
    x.exchange.req_bytes = req_bytes;
    x.exchange.resp_bytes = resp_bytes;
    x.exchange.req_packets = 1;
    x.exchange.resp_packets = 3;
    x.exchange.resp_psh = 3;
    x.exchange.req_first_ns = 1_000 * u64::from(seq);
    x.exchange.req_last_ns = 1_100 * u64::from(seq);
    x.exchange.resp_first_ns = 5_000 * u64::from(seq);
    x.exchange.resp_last_ns = 9_000 * u64::from(seq);
    x.handshake.syn_ns = 100;
    x.handshake.synack_ns = 200;
    x.handshake.ack_ns = 300;
    bytes_of(&x)
}

/// A payload record in the smallest size class that holds `data` (as the kernel sends them).
fn payload(key: &FlowKey, what: u8, seq: u32, offset: u64, data: &[u8], ends: bool) -> Vec<u8> {
    let data = &data[..data.len().min(agent_common::CAPTURE_MAX)];
    let class = agent_common::CAPTURE_CLASSES
        .iter()
        .copied()
        .find(|&c| c >= data.len())
        .unwrap_or(agent_common::CAPTURE_MAX);
    let mut header = PayloadHeader {
        kind: record_kind::PAYLOAD,
        what,
        side: u8::from(what != payload_what::RESPONSE_HEAD),
        prev_end: 0,
        client: client::B,
        key: *key,
        seq,
        ts_ns: 1_000 * u64::from(seq),
        turn_offset: offset,
        payload_len: data.len() as u32,
        captured: data.len() as u32,
        prev: Default::default(),
        handshake: Default::default(),
    };
    if ends {
        header.prev_end = exchange_end::NEXT_REQUEST;
        header.prev.seq = seq - 1;
        header.prev.req_bytes = data.len() as u64;
        header.prev.resp_bytes = 700;
    }
    let mut out = bytes_of(&header);
    out.extend_from_slice(data);
    out.resize(std::mem::size_of::<PayloadHeader>() + class, 0);
    out
}
