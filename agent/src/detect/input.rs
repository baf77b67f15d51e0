//! What the detector reads: one observation per exchange, built either from the pipeline's
//! report (live, `siphon run`) or from an exchange-log line (`siphon detect`). Both go through
//! [`Observation`], so the detector cannot tell live from offline.

use std::{
    borrow::Cow,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use serde::Deserialize;

use crate::pipeline::report::{ExchangeReport, Report};

/// One exchange as the detector sees it. Times are on the records' clock: Unix time when the
/// record carries it, else the kernel's monotonic clock.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub start_ns: u64,
    pub end_ns: u64,
    /// The connection's peer at the hook.
    pub peer: SocketAddr,
    pub server: SocketAddr,
    /// Exchange number on the connection (1: the first).
    pub seq: u32,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub streamed_chunks: u32,
    pub http: Option<HttpObs>,
    /// Fingerprints of the client's own connection (its TLS and TCP), when this hook saw it.
    pub transport: Transport,
}

#[derive(Clone, Debug, PartialEq)]
pub struct HttpObs {
    pub api_key_hash: Option<String>,
    /// The key's hash under the previous secret, during a rotation's overlap.
    pub api_key_hash_prev: Option<String>,
    /// The client after trusted forwarding hops.
    pub client_ip: IpAddr,
    /// Forwarding entries before the client address: origins the client (or a proxy in front
    /// of it) claimed itself.
    pub claimed_origins: u32,
    pub status: Option<u16>,
    pub event_stream: bool,
    /// A label of the live decoder, borrowed; text from a log line, owned.
    pub user_agent_family: Cow<'static, str>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Transport {
    /// Shared with the report and the connection's other exchanges.
    pub ja4: Option<Arc<str>>,
    pub ja4t: Option<Arc<str>>,
    pub tcp_rtt_seconds: Option<f64>,
    pub tls_rtt_seconds: Option<f64>,
}

impl Observation {
    /// The client the exchange is attributed to.
    pub fn client_ip(&self) -> IpAddr {
        self.http
            .as_ref()
            .map(|h| h.client_ip)
            .unwrap_or(self.peer.ip())
    }

    /// The client spoke to this hook itself (no proxy in between), so the connection's TLS and
    /// TCP fingerprints are the client's.
    pub fn peer_is_client(&self) -> bool {
        self.http
            .as_ref()
            .is_none_or(|h| h.client_ip == self.peer.ip())
    }

    /// An encrypted exchange's first turn is the TLS handshake, not a request.
    pub fn is_tls_handshake(&self) -> bool {
        self.http.is_none() && self.transport.ja4.is_some() && self.seq == 1
    }

    pub fn from_report(r: &ExchangeReport) -> Observation {
        let http = r.http.as_ref().map(|h| HttpObs {
            api_key_hash: h.api_key_hash.clone(),
            api_key_hash_prev: h.api_key_hash_prev.clone(),
            client_ip: h.client_ip,
            claimed_origins: claimed_origins(&h.forwarded_for, h.client_ip),
            status: h.status,
            event_stream: h.event_stream,
            user_agent_family: Cow::Borrowed(h.user_agent_family),
        });
        let ja4 = r.tls.as_ref().map(|t| t.ja4.clone());
        Observation::with_parts(r, http, ja4, r.tcp.ja4t.clone())
    }

    /// As [`Observation::from_report`], the report's strings moved instead of copied: the
    /// pipeline hands its last sink the report itself.
    pub fn from_owned_report(mut r: ExchangeReport) -> Observation {
        let http = r.http.take().map(|h| HttpObs {
            claimed_origins: claimed_origins(&h.forwarded_for, h.client_ip),
            api_key_hash: h.api_key_hash,
            api_key_hash_prev: h.api_key_hash_prev,
            client_ip: h.client_ip,
            status: h.status,
            event_stream: h.event_stream,
            user_agent_family: Cow::Borrowed(h.user_agent_family),
        });
        let ja4 = r.tls.take().map(|t| t.ja4.clone());
        let ja4t = r.tcp.ja4t.take();
        Observation::with_parts(&r, http, ja4, ja4t)
    }

    fn with_parts(
        r: &ExchangeReport,
        http: Option<HttpObs>,
        ja4: Option<Arc<str>>,
        ja4t: Option<Arc<str>>,
    ) -> Observation {
        let start_ns = r.request_start_unix_ns.unwrap_or(r.request_start_ns);
        Observation {
            start_ns,
            end_ns: end_ns(start_ns, r.ttfb_seconds, r.response_duration_seconds),
            peer: r.client,
            server: r.server,
            seq: r.seq,
            request_bytes: r.request_bytes,
            response_bytes: r.response_bytes,
            streamed_chunks: r.streamed_chunks,
            http,
            transport: Transport {
                ja4,
                ja4t,
                tcp_rtt_seconds: r.tcp.synack_ack_seconds,
                tls_rtt_seconds: r.tcp.tls_rtt_seconds,
            },
        }
    }
}

fn claimed_origins(forwarded_for: &[IpAddr], client: IpAddr) -> u32 {
    forwarded_for.iter().position(|a| *a == client).unwrap_or(0) as u32
}

/// Record times past this (2^62 ns, the year 2116) are not times a node wrote: the detector's
/// clock arithmetic (windows, slots, refreshes) stays far from u64 overflow below it.
pub const MAX_TIME_NS: u64 = 1 << 62;
/// An exchange's time to first byte plus duration is counted up to a week, which no response
/// streams for; larger logged values would push its end past any sane clock.
const MAX_EXCHANGE_SECONDS: f64 = 7.0 * 86_400.0;

fn end_ns(start_ns: u64, ttfb: Option<f64>, duration: Option<f64>) -> u64 {
    let secs = ttfb.unwrap_or(0.0).max(0.0) + duration.unwrap_or(0.0).max(0.0);
    start_ns.saturating_add((secs.min(MAX_EXCHANGE_SECONDS) * 1e9) as u64)
}

/// A report the detector takes (exchanges only; hellos travel inside them).
pub fn observation_of(report: &Report) -> Option<Observation> {
    match report {
        Report::Exchange(x) => Some(Observation::from_report(x)),
        Report::TlsClientHello(_) => None,
    }
}

/// As [`observation_of`], with the report's strings moved into the observation.
pub fn observation_of_owned(report: Report) -> Option<Observation> {
    match report {
        Report::Exchange(x) => Some(Observation::from_owned_report(*x)),
        Report::TlsClientHello(_) => None,
    }
}

// ---- exchange-log lines -------------------------------------------------------------------

/// One line of an exchange log, as `--exchange-log` and `replay --json` write it, read in one
/// pass with its strings borrowed from the line where they hold no escapes. Fields the detector
/// does not use are skipped unread. Every field an exchange requires is optional here so that a
/// line of another record kind (which may use the same names for other things) still parses;
/// [`LogLine::exchange`] names what an exchange line lacks.
#[derive(Deserialize)]
struct LogLine<'a> {
    #[serde(borrow)]
    record: Cow<'a, str>,
    client: Option<SocketAddr>,
    server: Option<SocketAddr>,
    seq: Option<u32>,
    request_start_ns: Option<u64>,
    #[serde(default)]
    request_start_unix_ns: Option<u64>,
    request_bytes: Option<u64>,
    response_bytes: Option<u64>,
    /// Absent: 0 (older logs); null is an error, as for every other number.
    #[serde(default)]
    streamed_chunks: u32,
    #[serde(default)]
    ttfb_seconds: Option<f64>,
    #[serde(default)]
    response_duration_seconds: Option<f64>,
    #[serde(default, borrow)]
    http: Option<LogHttp<'a>>,
    #[serde(default, borrow)]
    tls: Option<LogTls<'a>>,
    #[serde(default, borrow)]
    tcp: Option<LogTcp<'a>>,
}

#[derive(Deserialize)]
struct LogHttp<'a> {
    #[serde(default, borrow)]
    api_key_hash: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    api_key_hash_prev: Option<Cow<'a, str>>,
    client_ip: IpAddr,
    #[serde(default)]
    forwarded_for: Vec<IpAddr>,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    event_stream: bool,
    #[serde(default, borrow)]
    user_agent_family: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct LogTls<'a> {
    #[serde(borrow)]
    ja4: Cow<'a, str>,
}

#[derive(Deserialize, Default)]
struct LogTcp<'a> {
    #[serde(default, borrow)]
    ja4t: Option<Cow<'a, str>>,
    #[serde(default)]
    synack_ack_seconds: Option<f64>,
    #[serde(default)]
    tls_rtt_seconds: Option<f64>,
}

/// Only the record kind: what a line that is not a valid exchange is read as, to tell another
/// record kind (skipped) from a broken line (reported).
#[derive(Deserialize)]
struct RecordKind<'a> {
    #[serde(borrow)]
    record: Cow<'a, str>,
}

/// Why a line was not an observation.
#[derive(Debug, PartialEq)]
pub enum LineError {
    /// Valid JSON of another record kind (hellos, detections): not an error.
    NotAnExchange,
    Invalid(String),
}

const EXCHANGE: &str = "exchange";

impl LogLine<'_> {
    /// The observation, when every field an exchange requires is here.
    fn exchange(self) -> Result<Observation, LineError> {
        fn need<T>(v: Option<T>, field: &str) -> Result<T, LineError> {
            v.ok_or_else(|| LineError::Invalid(format!("missing field `{field}`")))
        }
        let monotonic_ns = need(self.request_start_ns, "request_start_ns")?;
        let start_ns = self.request_start_unix_ns.unwrap_or(monotonic_ns);
        if start_ns > MAX_TIME_NS {
            return Err(LineError::Invalid(format!(
                "request start {start_ns} ns is past the year 2116"
            )));
        }
        let tcp = self.tcp.unwrap_or_default();
        Ok(Observation {
            start_ns,
            end_ns: end_ns(start_ns, self.ttfb_seconds, self.response_duration_seconds),
            peer: need(self.client, "client")?,
            server: need(self.server, "server")?,
            seq: need(self.seq, "seq")?,
            request_bytes: need(self.request_bytes, "request_bytes")?,
            response_bytes: need(self.response_bytes, "response_bytes")?,
            streamed_chunks: self.streamed_chunks,
            http: self.http.map(|h| HttpObs {
                claimed_origins: claimed_origins(&h.forwarded_for, h.client_ip),
                api_key_hash: h.api_key_hash.map(Cow::into_owned),
                api_key_hash_prev: h.api_key_hash_prev.map(Cow::into_owned),
                client_ip: h.client_ip,
                status: h.status,
                event_stream: h.event_stream,
                user_agent_family: h
                    .user_agent_family
                    .map_or(Cow::Borrowed("other"), |u| Cow::Owned(u.into_owned())),
            }),
            transport: Transport {
                ja4: self.tls.map(|t| Arc::from(t.ja4.as_ref())),
                ja4t: tcp.ja4t.map(|j| Arc::from(j.as_ref())),
                tcp_rtt_seconds: tcp.synack_ack_seconds,
                tls_rtt_seconds: tcp.tls_rtt_seconds,
            },
        })
    }
}

pub fn parse_line(line: &str) -> Result<Observation, LineError> {
    match serde_json::from_str::<LogLine>(line) {
        Ok(l) if l.record != EXCHANGE => Err(LineError::NotAnExchange),
        Ok(l) => l.exchange(),
        // Not a valid exchange line: another record kind whose fields differ, or broken.
        Err(e) => match serde_json::from_str::<RecordKind>(line) {
            Ok(k) if k.record != EXCHANGE => Err(LineError::NotAnExchange),
            _ => Err(LineError::Invalid(e.to_string())),
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::pipeline::report::{HttpInfo, TcpInfo, TlsInfo};

    pub fn sample_report() -> ExchangeReport {
        ExchangeReport {
            ifindex: 3,
            client: "10.0.0.9:40000".parse().unwrap(),
            server: "10.0.0.1:8000".parse().unwrap(),
            seq: 2,
            part: 0,
            end: "next_request",
            request_start_ns: 5_000_000_000,
            request_start_unix_ns: Some(1_700_000_000_000_000_000),
            request_bytes: 300,
            response_bytes: 9000,
            request_packets: 1,
            response_packets: 7,
            ttfb_seconds: Some(0.25),
            response_duration_seconds: Some(1.5),
            streamed_chunks: 40,
            http: Some(HttpInfo {
                method: "POST",
                route: "chat_completions",
                path: "/v1/chat/completions".into(),
                host: None,
                status: Some(200),
                status_class: "2xx",
                event_stream: true,
                user_agent_family: "openai-python",
                api_key_hash: Some("00112233445566778899aabbccddeeff".into()),
                api_key_hash_prev: None,
                client_ip: "192.0.2.7".parse().unwrap(),
                forwarded_for: vec![
                    "198.51.100.1".parse().unwrap(),
                    "192.0.2.7".parse().unwrap(),
                ],
                ja4h: "po11nn05enus_x_x_x".into(),
                head_truncated: false,
                decode_error: None,
            }),
            tls: Some(Arc::new(TlsInfo {
                ja4: "t13d1516h2_8daaf6152771_02713d6af862".into(),
                ja4_r: String::new(),
                ja4_o: String::new(),
                ja4_ro: String::new(),
                sni: None,
            })),
            tcp: TcpInfo {
                ja4t: Some("64240_2-4-8-1-3_1460_7".into()),
                ja4ts: None,
                syn_synack_seconds: Some(0.0001),
                synack_ack_seconds: Some(0.002),
                tls_rtt_seconds: Some(0.2),
            },
        }
    }

    #[test]
    fn a_logged_line_reads_back_as_the_live_observation() {
        let r = sample_report();
        let line = serde_json::to_string(&Report::Exchange(Box::new(r.clone()))).unwrap();
        let offline = parse_line(&line).unwrap();
        assert_eq!(offline, Observation::from_report(&r));
        // The pipeline's last sink takes the report itself; its strings move, nothing changes.
        assert_eq!(offline, Observation::from_owned_report(r.clone()));
        assert_eq!(
            offline.transport.ja4t.as_deref(),
            Some("64240_2-4-8-1-3_1460_7")
        );
        assert_eq!(offline.start_ns, 1_700_000_000_000_000_000);
        assert_eq!(offline.end_ns, 1_700_000_001_750_000_000);
        assert_eq!(offline.http.as_ref().unwrap().claimed_origins, 1);
        assert!(!offline.peer_is_client());
    }

    #[test]
    fn logs_without_wall_clock_use_the_monotonic_one() {
        let mut r = sample_report();
        r.request_start_unix_ns = None;
        let line = serde_json::to_string(&Report::Exchange(Box::new(r))).unwrap();
        assert_eq!(parse_line(&line).unwrap().start_ns, 5_000_000_000);
    }

    /// Fuzz finding (exchange_log target): a start at the end of u64 time overflowed the
    /// detector's next-evaluation arithmetic. Such a line is now a bad line, and an absurd
    /// duration ends the exchange a week after its start.
    #[test]
    fn fuzz_regression_times_at_the_end_of_u64_are_refused() {
        let line = r#"{"record":"exchange","client":"10.0.0.9:40000","server":"10.0.0.1:8000","seq":1,"request_start_ns":1,"request_start_unix_ns":18446744073709551615,"request_bytes":300,"response_bytes":9000,"ttfb_seconds":1e300}"#;
        assert!(matches!(parse_line(line), Err(LineError::Invalid(e)) if e.contains("2116")));
        let long = line.replace("18446744073709551615", "1700000000000000000");
        let obs = parse_line(&long).unwrap();
        assert_eq!(obs.end_ns - obs.start_ns, 7 * 86_400 * 1_000_000_000);
        // The detector takes it and evaluates to the end without overflow.
        let mut det =
            crate::detect::Detector::new(crate::detect::config::Config::default()).unwrap();
        det.observe(obs);
        det.finish();
    }

    #[test]
    fn missing_null_and_foreign_fields_are_told_apart() {
        let r = sample_report();
        let line = serde_json::to_string(&Report::Exchange(Box::new(r))).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&line).unwrap();
        // A missing default field reads as 0; null is an error.
        v.as_object_mut().unwrap().remove("streamed_chunks");
        assert_eq!(parse_line(&v.to_string()).unwrap().streamed_chunks, 0);
        v["streamed_chunks"] = serde_json::Value::Null;
        assert!(matches!(
            parse_line(&v.to_string()),
            Err(LineError::Invalid(_))
        ));
        // A required field missing is named.
        v["streamed_chunks"] = 3.into();
        v.as_object_mut().unwrap().remove("response_bytes");
        assert_eq!(
            parse_line(&v.to_string()),
            Err(LineError::Invalid("missing field `response_bytes`".into()))
        );
        // Strings with escapes (not borrowable from the line) read as written.
        v["response_bytes"] = 9.into();
        v["http"]["user_agent_family"] = "a\"bé".into();
        let line = v.to_string();
        assert!(line.contains(r#"a\"b"#));
        let obs = parse_line(&line).unwrap();
        assert_eq!(obs.http.unwrap().user_agent_family, "a\"bé");
        // Another record kind with a field of the exchange's name but not its type.
        assert_eq!(
            parse_line(r#"{"record":"tls_client_hello","client":7,"seq":"x"}"#),
            Err(LineError::NotAnExchange)
        );
    }

    #[test]
    fn other_records_and_garbage_are_told_apart() {
        assert_eq!(
            parse_line(r#"{"record":"tls_client_hello","ts_ns":1}"#),
            Err(LineError::NotAnExchange)
        );
        assert_eq!(
            parse_line(r#"{"record":"detection","kind":"harvest"}"#),
            Err(LineError::NotAnExchange)
        );
        for bad in ["", "{", "[]", r#"{"record":"exchange"}"#, "\u{0}\u{1}"] {
            assert!(
                matches!(parse_line(bad), Err(LineError::Invalid(_))),
                "{bad:?}"
            );
        }
    }
}
