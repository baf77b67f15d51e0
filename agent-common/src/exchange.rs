//! Request/response accounting: the exchange state kept per TCP flow, and the records the kernel
//! sends to userspace through the ring buffer.

use crate::FlowKey;

/// Where a TCP conversation is in its turn-taking.
pub mod phase {
    /// No payload yet (or the last exchange was closed by FIN/RST).
    pub const IDLE: u8 = 0;
    /// The client is sending a request.
    pub const REQUEST: u8 = 1;
    /// The server is answering.
    pub const RESPONSE: u8 = 2;
}

/// Bits of [`Exchange::flags`].
pub mod exchange_flag {
    /// The request turn started with an HTTP/1.x method.
    pub const HTTP_REQUEST: u8 = 0x01;
    /// The response turn started with `HTTP/`.
    pub const HTTP_RESPONSE: u8 = 0x02;
    /// The request head was longer than the capture length.
    pub const HEAD_TRUNCATED: u8 = 0x04;
    /// The flow's first client payload was a TLS handshake record.
    pub const TLS: u8 = 0x08;
    /// More than one response head may come in this server turn: the request used a method
    /// other than POST or PATCH (which clients do not pipeline, RFC 9112 section 9.3.2), a
    /// second request head started a segment, or the response so far is an interim one (1xx).
    /// Only then does the kernel look for response heads past the start of the server's turn,
    /// a check that costs a helper call on every segment whose payload is not in the linear
    /// area (most sent data, streamed tokens included).
    pub const MAY_PIPELINE: u8 = 0x10;
    /// The response so far is an interim one (1xx, e.g. 100 Continue): the client's next
    /// payload is the rest of the same request (its body, after `Expect: 100-continue`), not a
    /// new request, and the server's next turn continues the same response. Cleared by a final
    /// status line.
    pub const INTERIM: u8 = 0x20;
}

/// One request/response exchange: a client turn and the server turn after it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Exchange {
    // Ordered by how often a packet touches them: what every data segment reads or updates
    // first, so that with the flow's other hot fields it stays within few cache lines.
    /// One of [`phase`].
    pub phase: u8,
    /// Bits of [`exchange_flag`].
    pub flags: u8,
    pub _pad: u16,
    /// Exchange number within the flow, from 1.
    pub seq: u32,
    /// Payload bytes of the server turn.
    pub resp_bytes: u64,
    pub resp_last_ns: u64,
    pub resp_packets: u32,
    /// Server segments with PSH set: each write of a streaming server usually ends in one, so
    /// this approximates streamed chunks (tokens, SSE events).
    pub resp_psh: u32,
    /// Payload bytes of the client turn.
    pub req_bytes: u64,
    pub req_last_ns: u64,
    pub req_packets: u32,
    pub _pad2: u32,
    pub req_first_ns: u64,
    pub resp_first_ns: u64,
}

/// TCP handshake times (0 when not seen).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Handshake {
    pub syn_ns: u64,
    pub synack_ns: u64,
    pub ack_ns: u64,
}

/// Record kinds, the first u32 of every ring-buffer record.
pub mod record_kind {
    pub const EXCHANGE: u32 = 1;
    pub const PAYLOAD: u32 = 2;
    pub const SYN: u32 = 3;
}

/// Why an exchange record was emitted.
pub mod exchange_end {
    /// The client started the next request.
    pub const NEXT_REQUEST: u8 = 1;
    /// FIN seen.
    pub const FIN: u8 = 2;
    /// RST seen.
    pub const RST: u8 = 3;
    /// Userspace found the flow idle or gone (synthesised from the flow table, not the kernel).
    pub const IDLE: u8 = 4;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ExchangeRecord {
    /// [`record_kind::EXCHANGE`].
    pub kind: u32,
    /// One of [`exchange_end`].
    pub end: u8,
    /// [`crate::client`] value of the flow.
    pub client: u8,
    pub _pad: u16,
    pub key: FlowKey,
    pub _pad2: u32,
    pub exchange: Exchange,
    pub handshake: Handshake,
}

impl ExchangeRecord {
    /// The record for `exchange` on flow `key`, ended by `end` (one of [`exchange_end`]):
    /// userspace builds the ones the kernel did not emit itself (an exchange carried by a
    /// request-start record, one still open when its flow is swept) with this, so they are
    /// exactly what the kernel would have sent.
    pub const fn new(
        end: u8,
        client: u8,
        key: FlowKey,
        exchange: Exchange,
        handshake: Handshake,
    ) -> ExchangeRecord {
        ExchangeRecord {
            kind: record_kind::EXCHANGE,
            end,
            client,
            _pad: 0,
            key,
            _pad2: 0,
            exchange,
            handshake,
        }
    }
}

/// Largest payload prefix one record carries. Request heads are captured up to the load-time
/// capture length (default 1024, at most this); a TLS ClientHello is gathered across segments,
/// one record per segment, up to [`HELLO_MAX`].
pub const CAPTURE_MAX: usize = 2048;
/// How much of a ClientHello is gathered (post-quantum key shares make them ~1.8 KiB).
pub const HELLO_MAX: u32 = 4096;
/// ClientHellos captured per flow at most.
pub const HELLOS_MAX: u8 = 4;

/// What a payload record holds.
pub mod payload_what {
    /// Start of an HTTP request (a client segment starting with a method).
    pub const REQUEST_HEAD: u8 = 1;
    /// Start of an HTTP response (a server segment starting with `HTTP/`).
    pub const RESPONSE_HEAD: u8 = 2;
    /// A segment of a TLS ClientHello (a client turn starting with a handshake record, or with
    /// ChangeCipherSpec then a handshake record after a HelloRetryRequest).
    pub const TLS_HELLO: u8 = 3;
    /// More of a request head: a later segment of a request turn, within the capture length.
    pub const REQUEST_MORE: u8 = 4;
}

/// Room for captured bytes in a payload record, by size class: the kernel reserves the
/// smallest class that holds a capture, so a 150-byte head takes 400 bytes of ring, not 2.2 KiB,
/// and a ring holds as many records as their bytes allow.
pub const CAPTURE_CLASSES: [usize; 4] = [256, 512, 1024, CAPTURE_MAX];

/// The fixed part of a payload record; its captured bytes follow it in the same record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PayloadHeader {
    /// [`record_kind::PAYLOAD`].
    pub kind: u32,
    /// One of [`payload_what`].
    pub what: u8,
    /// [`crate::Side`] of the sender, as u8.
    pub side: u8,
    /// Non-zero (an [`exchange_end`] value) when `prev` holds the exchange this segment ends:
    /// a request head that starts the next exchange carries the previous one in the same
    /// record, saving a ring-buffer reservation on the request-start path.
    pub prev_end: u8,
    /// [`crate::client`] value of the flow.
    pub client: u8,
    pub key: FlowKey,
    /// Exchange number this segment belongs to.
    pub seq: u32,
    pub ts_ns: u64,
    /// Payload bytes of the current turn before this segment (for a TLS hello: bytes of the
    /// hello gathered before it). Lets userspace split a turn holding several pipelined
    /// requests or responses.
    pub turn_offset: u64,
    /// The segment's whole payload length.
    pub payload_len: u32,
    /// Bytes of `data` that are valid.
    pub captured: u32,
    /// Valid when `prev_end != 0`.
    pub prev: Exchange,
    pub handshake: Handshake,
}

/// A payload record with room for `N` captured bytes, `N` one of [`CAPTURE_CLASSES`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PayloadRecord<const N: usize> {
    pub header: PayloadHeader,
    /// The first `header.captured` bytes are valid.
    pub data: [u8; N],
}

/// Largest TCP options block.
pub const TCP_OPTIONS_MAX: usize = 40;

/// A SYN or SYN-ACK, for TCP fingerprints (JA4T/JA4TS) and handshake timing.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SynRecord {
    /// [`record_kind::SYN`].
    pub kind: u32,
    pub tcp_flags: u8,
    /// [`crate::Side`] of the sender.
    pub side: u8,
    pub window: u16,
    pub key: FlowKey,
    pub options_len: u8,
    pub ttl: u8,
    pub _pad: u16,
    pub ts_ns: u64,
    pub options: [u8; TCP_OPTIONS_MAX],
}
