//! What the pipeline produces per exchange (and per TLS ClientHello): decoded, attributed,
//! free of secrets (API keys only as keyed hashes; no payload bytes).

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use serde::{Serialize, Serializer};

use super::addr_text::AddrText;

/// A socket address as its `Display` text, written without the formatting machinery (two per
/// line of the exchange log).
fn socket_text<S: Serializer>(addr: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(AddrText::socket(*addr).as_str())
}

/// An address as its `Display` text (see [`socket_text`]).
fn ip_text<S: Serializer>(ip: &IpAddr, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(AddrText::ip(*ip).as_str())
}

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum Report {
    Exchange(Box<ExchangeReport>),
    TlsClientHello(Box<HelloReport>),
}

#[derive(Clone, Debug, Serialize)]
pub struct ExchangeReport {
    pub ifindex: u32,
    #[serde(serialize_with = "socket_text")]
    pub client: SocketAddr,
    #[serde(serialize_with = "socket_text")]
    pub server: SocketAddr,
    /// Exchange number within the connection (from 1).
    pub seq: u32,
    /// Index within a turn holding several pipelined requests (0 for the first).
    pub part: u32,
    /// Why the kernel closed it: next_request, fin, rst, idle.
    pub end: &'static str,
    /// Kernel clock (CLOCK_MONOTONIC live, capture time in replay), ns.
    pub request_start_ns: u64,
    /// The same instant on the wall clock (Unix time, ns), so that logs of different nodes
    /// merge; `None` where the agent could not tell (never in `run` or `replay`).
    pub request_start_unix_ns: Option<u64>,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub request_packets: u32,
    pub response_packets: u32,
    /// Response first byte − request last byte.
    pub ttfb_seconds: Option<f64>,
    /// Response last byte − response first byte.
    pub response_duration_seconds: Option<f64>,
    /// Server segments with PSH: ≈ streamed chunks.
    pub streamed_chunks: u32,
    pub http: Option<HttpInfo>,
    /// The connection's, shared by its exchanges (not copied into each).
    pub tls: Option<Arc<TlsInfo>>,
    pub tcp: TcpInfo,
}

#[derive(Clone, Debug, Serialize)]
pub struct HttpInfo {
    pub method: &'static str,
    pub route: &'static str,
    pub path: String,
    pub host: Option<String>,
    pub status: Option<u16>,
    pub status_class: &'static str,
    pub event_stream: bool,
    pub user_agent_family: &'static str,
    /// Keyed hash of the API key (HMAC-SHA256, 128 bits, hex); never the key.
    pub api_key_hash: Option<String>,
    /// During the overlap after the hash secret was rotated: the same key's hash under the
    /// previous secret, so that readers can join the two. Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_hash_prev: Option<String>,
    /// Client address after trusting the configured number of forwarding hops.
    #[serde(serialize_with = "ip_text")]
    pub client_ip: IpAddr,
    pub forwarded_for: Vec<IpAddr>,
    pub ja4h: String,
    pub head_truncated: bool,
    pub decode_error: Option<&'static str>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TlsInfo {
    /// Shared with the detector's observations of the connection.
    pub ja4: Arc<str>,
    pub ja4_r: String,
    pub ja4_o: String,
    pub ja4_ro: String,
    pub sni: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct TcpInfo {
    /// Shared by the connection's exchanges, as `tls` is.
    pub ja4t: Option<Arc<str>>,
    pub ja4ts: Option<Arc<str>>,
    /// SYN → SYN-ACK as seen at this hook.
    pub syn_synack_seconds: Option<f64>,
    /// SYN-ACK → ACK.
    pub synack_ack_seconds: Option<f64>,
    /// TLS handshake round trip at this hook: the end of the server's handshake flight (the
    /// answer to the ClientHello) to the client's next flight. Where the hook is on the server
    /// side this is the round trip to whoever runs TLS, while `synack_ack_seconds` is the round
    /// trip to whoever runs TCP: a relay that forwards bytes splits the two.
    pub tls_rtt_seconds: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct HelloReport {
    pub ifindex: u32,
    #[serde(serialize_with = "socket_text")]
    pub client: SocketAddr,
    #[serde(serialize_with = "socket_text")]
    pub server: SocketAddr,
    pub ts_ns: u64,
    /// `ts_ns` on the wall clock (Unix time, ns).
    pub ts_unix_ns: Option<u64>,
    #[serde(flatten)]
    pub tls: Option<TlsInfo>,
    /// Why no fingerprint: the decoder's reason (e.g. truncated).
    pub error: Option<&'static str>,
}
