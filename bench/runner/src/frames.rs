//! Frames and payloads, built by hand: Ethernet + IPv4 + TCP with the options Linux sends,
//! and UDP; the request, response and ClientHello payloads the scenarios carry.

use agent_common::tcp_flag;

pub(crate) const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub(crate) const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub(crate) const CLIENT_IP: [u8; 4] = [10, 0, 0, 1];
pub(crate) const SERVER_IP: [u8; 4] = [10, 0, 0, 2];
pub(crate) const HTTP_PORT: u16 = 8000;
pub(crate) const TLS_PORT: u16 = 443;
/// Payload of a full segment: 1500 MTU - 20 IPv4 - 20 TCP - 12 timestamps option.
pub(crate) const MSS: usize = 1448;

/// MSS 1460, SACK permitted, timestamps, NOP, window scale 7: a Linux SYN's options.
pub(crate) const SYN_OPTIONS: [u8; 20] = [
    2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
];
/// NOP, NOP, timestamps: every later segment of a Linux connection.
pub(crate) const TS_OPTIONS: [u8; 12] = [1, 1, 8, 10, 0, 0, 0, 2, 0, 0, 0, 1];

#[derive(Clone, Copy, Debug)]
pub(crate) struct Flow {
    pub(crate) client_port: u16,
    pub(crate) server_port: u16,
}

impl Flow {
    pub(crate) fn new(client_port: u16, server_port: u16) -> Flow {
        Flow {
            client_port,
            server_port,
        }
    }

    pub(crate) fn client_sends(&self, flags: u8, payload: &[u8]) -> Vec<u8> {
        tcp_frame(
            (CLIENT_MAC, CLIENT_IP, self.client_port),
            (SERVER_MAC, SERVER_IP, self.server_port),
            flags,
            payload,
        )
    }

    pub(crate) fn server_sends(&self, flags: u8, payload: &[u8]) -> Vec<u8> {
        tcp_frame(
            (SERVER_MAC, SERVER_IP, self.server_port),
            (CLIENT_MAC, CLIENT_IP, self.client_port),
            flags,
            payload,
        )
    }

    /// SYN, SYN-ACK, ACK.
    pub(crate) fn handshake(&self) -> Vec<Vec<u8>> {
        vec![
            self.client_sends(tcp_flag::SYN, &[]),
            self.server_sends(tcp_flag::SYN | tcp_flag::ACK, &[]),
            self.client_sends(tcp_flag::ACK, &[]),
        ]
    }
}

/// A connection that has sent one request and is streaming its response: handshake, request,
/// response head, then a data segment. The measured steady states start from here.
pub(crate) fn http_history(flow: &Flow) -> Vec<Vec<u8>> {
    let mut frames = flow.handshake();
    frames.push(flow.client_sends(tcp_flag::ACK | tcp_flag::PSH, &request_segment()));
    frames.push(flow.server_sends(tcp_flag::ACK | tcp_flag::PSH, RESPONSE_HEAD));
    frames.push(flow.server_sends(tcp_flag::ACK, &response_data()));
    frames
}

pub(crate) type Endpoint = ([u8; 6], [u8; 4], u16);

/// Sequence numbers are set when a frame is sent (`sequence`); acknowledgement numbers stay
/// fixed and the TCP checksum zero, as the program reads neither. The IPv4 checksum is real.
pub(crate) fn tcp_frame(src: Endpoint, dst: Endpoint, flags: u8, payload: &[u8]) -> Vec<u8> {
    let options: &[u8] = if flags & tcp_flag::SYN != 0 {
        &SYN_OPTIONS
    } else {
        &TS_OPTIONS
    };
    let tcp_len = 20 + options.len();
    let ip_len = 20 + tcp_len + payload.len();
    let mut f = Vec::with_capacity(14 + ip_len);
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let ip_start = f.len();
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&(ip_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]); // id, DF, TTL, TCP, checksum
    f.extend_from_slice(&src.1);
    f.extend_from_slice(&dst.1);
    let csum = ipv4_checksum(&f[ip_start..]);
    f[ip_start + 10..ip_start + 12].copy_from_slice(&csum.to_be_bytes());
    f.extend_from_slice(&src.2.to_be_bytes());
    f.extend_from_slice(&dst.2.to_be_bytes());
    f.extend_from_slice(&1_000u32.to_be_bytes());
    let ack = if flags & tcp_flag::ACK != 0 {
        2_000u32
    } else {
        0
    };
    f.extend_from_slice(&ack.to_be_bytes());
    f.push(((tcp_len / 4) as u8) << 4);
    f.push(flags);
    f.extend_from_slice(&502u16.to_be_bytes()); // window (scaled by 2^7: 64 KB)
    f.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    f.extend_from_slice(options);
    f.extend_from_slice(payload);
    f
}

pub(crate) fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The first segment of a streaming chat-completion request from the OpenAI Python client: the
/// head and the start of a body longer than the segment, as conversations with a system prompt
/// are. 1448 bytes, more than the 1024-byte head capture: the costliest capture by default.
pub(crate) fn request_segment() -> Vec<u8> {
    let mut body = String::from(
        r#"{"model":"meta-llama/Llama-3.1-70B-Instruct","stream":true,"max_tokens":1024,"temperature":0.2,"messages":[{"role":"system","content":""#,
    );
    while body.len() < 3 * MSS {
        body.push_str("You are a careful assistant for site reliability engineers. ");
    }
    body.push_str(r#""},{"role":"user","content":"Why is p99 time to first token up?"}]}"#);
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\n\
         Host: inference.internal:8000\r\n\
         Accept-Encoding: gzip, deflate\r\n\
         Connection: keep-alive\r\n\
         Accept: application/json\r\n\
         Content-Type: application/json\r\n\
         User-Agent: OpenAI/Python 1.54.4\r\n\
         X-Stainless-Lang: python\r\n\
         X-Stainless-Package-Version: 1.54.4\r\n\
         X-Stainless-Runtime: CPython\r\n\
         Authorization: Bearer sk-bench-7f3a9c2e5b8d4f1a6e0c3b9d2a7f5e81\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    let mut segment = (head + &body).into_bytes();
    segment.truncate(MSS);
    segment
}

pub(crate) const RESPONSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\n\
    date: Thu, 01 Jan 2026 00:00:00 GMT\r\n\
    server: uvicorn\r\n\
    content-type: text/event-stream; charset=utf-8\r\n\
    transfer-encoding: chunked\r\n\r\n";

/// A full segment of a server-sent-events token stream (not starting with "HTTP/").
pub(crate) fn response_data() -> Vec<u8> {
    let event = br#"data: {"id":"chatcmpl-8f2c","object":"chat.completion.chunk","model":"meta-llama/Llama-3.1-70B-Instruct","choices":[{"index":0,"delta":{"content":" latency"}}]}

"#;
    event.iter().copied().cycle().take(MSS).collect()
}

/// curl/OpenSSL's ClientHello, padded to 512 handshake bytes: 517 with the record header.
pub(crate) const HELLO_CLASSIC_LEN: usize = 517;
/// A browser's hello with a post-quantum key share: more than one segment.
pub(crate) const HELLO_PQ_LEN: usize = 1800;
/// X25519MLKEM768 key share: group 0x11ec, 1216 bytes.
pub(crate) const ML_KEM_KEY_SHARE: (u16, usize) = (0x11ec, 1216);

/// A TLS 1.3 ClientHello in one record of exactly `record_len` bytes (padding extension), with
/// an X25519 key share plus `extra_shares` (group, key length).
pub(crate) fn client_hello(record_len: usize, extra_shares: &[(u16, usize)]) -> Vec<u8> {
    fn ext(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
    }
    fn u16s(values: &[u16]) -> Vec<u8> {
        let mut v = ((values.len() * 2) as u16).to_be_bytes().to_vec();
        values
            .iter()
            .for_each(|x| v.extend_from_slice(&x.to_be_bytes()));
        v
    }
    let mut exts = Vec::new();
    let host = b"api.inference.example";
    let mut sni = ((host.len() + 3) as u16).to_be_bytes().to_vec();
    sni.push(0);
    sni.extend_from_slice(&(host.len() as u16).to_be_bytes());
    sni.extend_from_slice(host);
    ext(&mut exts, 0x0000, &sni);
    ext(&mut exts, 0x000b, &[3, 0, 1, 2]);
    let mut groups = vec![0x001d, 0x0017, 0x001e, 0x0019, 0x0018];
    groups.splice(0..0, extra_shares.iter().map(|(g, _)| *g));
    ext(&mut exts, 0x000a, &u16s(&groups));
    ext(&mut exts, 0x0023, &[]);
    ext(&mut exts, 0x0010, b"\x00\x0c\x02h2\x08http/1.1");
    ext(&mut exts, 0x0016, &[]);
    ext(&mut exts, 0x0017, &[]);
    ext(
        &mut exts,
        0x000d,
        &u16s(&[
            0x0403, 0x0503, 0x0603, 0x0807, 0x0808, 0x0804, 0x0805, 0x0806, 0x0401, 0x0501, 0x0601,
        ]),
    );
    ext(&mut exts, 0x002b, &[4, 0x03, 0x04, 0x03, 0x03]);
    ext(&mut exts, 0x002d, &[1, 1]);
    let mut shares = Vec::new();
    for &(group, len) in extra_shares.iter().chain(&[(0x001d, 32)]) {
        shares.extend_from_slice(&group.to_be_bytes());
        shares.extend_from_slice(&(len as u16).to_be_bytes());
        shares.extend((0..len).map(|i| (i * 7 + 3) as u8));
    }
    let mut key_share = (shares.len() as u16).to_be_bytes().to_vec();
    key_share.extend_from_slice(&shares);
    ext(&mut exts, 0x0033, &key_share);

    let mut body = vec![0x03, 0x03];
    body.extend((0..32u8).map(|i| i.wrapping_mul(37)));
    body.push(32);
    body.extend((0..32u8).map(|i| i.wrapping_mul(11)));
    body.extend_from_slice(&u16s(&[
        0x1302, 0x1303, 0x1301, 0xc02c, 0xc030, 0x009f, 0xcca9, 0xcca8, 0xccaa, 0xc02b, 0xc02f,
        0x009e, 0xc024, 0xc028, 0x006b, 0xc023, 0xc027, 0x0067, 0xc00a, 0xc014, 0x0039, 0xc009,
        0xc013, 0x0033, 0x009d, 0x009c, 0x003d, 0x003c, 0x0035, 0x002f, 0x00ff,
    ]));
    body.extend_from_slice(&[1, 0]);
    // Record 5 + handshake header 4 + body + extensions length 2 + extensions; padding
    // (4 bytes of extension header + n) fills the rest.
    let unpadded = 5 + 4 + body.len() + 2 + exts.len();
    if let Some(pad) = record_len.checked_sub(unpadded + 4) {
        ext(&mut exts, 0x0015, &vec![0; pad]);
    }
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);

    let mut hello = vec![0x16, 0x03, 0x01];
    hello.extend_from_slice(&((body.len() + 4) as u16).to_be_bytes());
    hello.push(1);
    hello.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hello.extend_from_slice(&body);
    hello
}

/// A UDP datagram from the client to the server (a DNS-sized query).
pub(crate) fn udp_frame(client_port: u16, server_port: u16, payload_len: usize) -> Vec<u8> {
    let ip_len = 20 + 8 + payload_len;
    let mut f = Vec::with_capacity(14 + ip_len);
    f.extend_from_slice(&SERVER_MAC);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let ip_start = f.len();
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&(ip_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]); // id, DF, TTL, UDP, checksum
    f.extend_from_slice(&CLIENT_IP);
    f.extend_from_slice(&SERVER_IP);
    let csum = ipv4_checksum(&f[ip_start..]);
    f[ip_start + 10..ip_start + 12].copy_from_slice(&csum.to_be_bytes());
    f.extend_from_slice(&client_port.to_be_bytes());
    f.extend_from_slice(&server_port.to_be_bytes());
    f.extend_from_slice(&((8 + payload_len) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend((0..payload_len).map(|i| i as u8));
    f
}

/// Gives a client-sent IPv4 frame the `n`th of 2^24 client addresses (10.64.0.0/10 and up):
/// a 5-tuple of its own per `n`, for scenarios that spread packets over many flows. The IPv4
/// checksum is kept right.
pub(crate) fn set_client(frame: &mut [u8], n: u32) {
    if frame.len() < 34 || frame[12..14] != [0x08, 0x00] {
        return;
    }
    let [_, a, b, c] = n.to_be_bytes();
    frame[26..30].copy_from_slice(&[10, 64 | (a & 0x3f), b, c]);
    frame[24..26].copy_from_slice(&[0, 0]);
    let csum = ipv4_checksum(&frame[14..34]);
    frame[24..26].copy_from_slice(&csum.to_be_bytes());
}

/// Every sender's initial sequence number is FIRST_DATA_SEQ - 1 (its SYN's).
pub(crate) const FIRST_DATA_SEQ: u32 = 1_001;

/// Next TCP sequence number per sender (IPv4 address, port).
pub(crate) type NextSeq = std::collections::HashMap<([u8; 4], u16), u32>;

/// Rewrites an Ethernet/IPv4/TCP frame's sequence number to its sender's next one, and advances
/// it by what the segment consumes (payload, SYN, FIN). Other frames are left alone.
pub(crate) fn sequence(next_seq: &mut NextSeq, frame: &mut [u8]) {
    if frame.len() < 34 || frame[12..14] != [0x08, 0x00] || frame[23] != 6 {
        return;
    }
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let tcp = 14 + ihl;
    if frame.len() < tcp + 20 {
        return;
    }
    let tot_len = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
    let doff = usize::from(frame[tcp + 12] >> 4) * 4;
    let payload = tot_len.saturating_sub(ihl + doff) as u32;
    let flags = frame[tcp + 13];
    let consumed = payload + u32::from(flags & (tcp_flag::SYN | tcp_flag::FIN) != 0);
    let src = (
        [frame[26], frame[27], frame[28], frame[29]],
        u16::from_be_bytes([frame[tcp], frame[tcp + 1]]),
    );
    let seq = next_seq.entry(src).or_insert(FIRST_DATA_SEQ - 1);
    set_seq(frame, *seq);
    *seq = seq.wrapping_add(consumed);
}

/// Sets an Ethernet/IPv4/TCP frame's sequence number (frames `sequence` accepts).
pub(crate) fn set_seq(frame: &mut [u8], seq: u32) {
    if frame.len() < 34 || frame[12..14] != [0x08, 0x00] || frame[23] != 6 {
        return;
    }
    let tcp = 14 + usize::from(frame[14] & 0x0f) * 4;
    if let Some(field) = frame.get_mut(tcp + 4..tcp + 8) {
        field.copy_from_slice(&seq.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use siphon_agent::decode::{parse_request_head, ClientHello};

    #[test]
    fn hellos_have_their_sizes_and_decode() {
        for (len, shares) in [
            (HELLO_CLASSIC_LEN, &[][..]),
            (HELLO_PQ_LEN, &[ML_KEM_KEY_SHARE][..]),
        ] {
            let hello = client_hello(len, shares);
            assert_eq!(hello.len(), len);
            let parsed = ClientHello::parse_records(&hello).expect("decodes");
            assert_eq!(parsed.sni.as_deref(), Some("api.inference.example"));
            assert_eq!(parsed.supported_versions, vec![0x0304, 0x0303]);
        }
    }

    #[test]
    fn request_segment_is_a_full_segment_with_a_decodable_head() {
        let segment = request_segment();
        assert_eq!(segment.len(), MSS);
        assert!(segment.starts_with(b"POST /v1/chat/completions HTTP/1.1\r\n"));
        let head = parse_request_head(&segment, None).expect("decodes");
        assert_eq!(head.path, "/v1/chat/completions");
    }

    #[test]
    fn frames_have_consistent_lengths_and_checksum() {
        let flow = Flow::new(50_000, HTTP_PORT);
        let frame = flow.server_sends(tcp_flag::ACK, &response_data());
        assert_eq!(frame.len(), 14 + 20 + 32 + MSS);
        assert_eq!(frame.len(), 1514, "a full Ethernet frame");
        assert_eq!(
            u16::from_be_bytes([frame[16], frame[17]]) as usize,
            frame.len() - 14
        );
        // A correct header sums to 0xffff, so its checksum over itself is 0.
        assert_eq!(ipv4_checksum(&frame[14..34]), 0);
        let syn = flow.client_sends(tcp_flag::SYN, &[]);
        assert_eq!(
            syn[14 + 20 + 12] >> 4,
            10,
            "SYN header with 20 bytes of options"
        );
    }

    #[test]
    fn udp_frames_and_varied_clients_keep_their_checksum() {
        let mut frame = udp_frame(50_000, 53, 40);
        assert_eq!(frame.len(), 14 + 20 + 8 + 40);
        assert_eq!(ipv4_checksum(&frame[14..34]), 0);
        set_client(&mut frame, 0x12_3456);
        assert_eq!(&frame[26..30], &[10, 64 | 0x12, 0x34, 0x56]);
        assert_eq!(ipv4_checksum(&frame[14..34]), 0);
    }
}
