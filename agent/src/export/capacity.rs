//! Capacity metrics from exchange reports: per service, request and response sizes, time to
//! first byte, response duration, streamed chunks; request counts by method, route, status.

use std::collections::HashMap;

use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, Registry};

use crate::{
    export::registry,
    pipeline::{
        assemble::AssemblyStats,
        report::{ExchangeReport, Report},
        services::ServiceMap,
    },
};

/// The `what` values of `siphon_pipeline_events_total`.
const PIPELINE_EVENTS: [&str; 8] = [
    "duplicate_exchange",
    "request_decode_error",
    "response_decode_error",
    "context_evicted",
    "head_dropped",
    "event_parse_error",
    "hello_incomplete",
    "hello_decode_error",
];

/// Bytes: 64 B to 64 MiB in ×4 steps (LLM responses run to tens of MiB).
fn size_buckets() -> Vec<f64> {
    (0..=10).map(|i| 64.0 * 4f64.powi(i)).collect()
}

/// Seconds: 1 ms to 10 minutes (long streams).
fn time_buckets() -> Vec<f64> {
    vec![
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        120.0, 300.0, 600.0,
    ]
}

fn chunk_buckets() -> Vec<f64> {
    (0..=14).map(|i| 2f64.powi(i)).collect()
}

/// Method, route and status class.
type RequestLabels = (&'static str, &'static str, &'static str);

#[derive(Clone)]
pub struct CapacityMetrics {
    services: ServiceMap,
    requests: IntCounterVec,
    request_size: HistogramVec,
    response_size: HistogramVec,
    ttfb: HistogramVec,
    duration: HistogramVec,
    chunks: HistogramVec,
    hellos: IntCounterVec,
    assembly: IntCounterVec,
    /// Each service's series, found once: a label lookup hashes the label values, takes a lock
    /// and counts a reference, six times per exchange otherwise. As many as the services
    /// configured, plus "other".
    per_service: Vec<(String, ServiceSeries)>,
}

/// One service's series: its request counters by (method, route, status class) as they are
/// first seen (the labels are the decoder's constants, a bounded set), and its histograms.
#[derive(Clone)]
struct ServiceSeries {
    requests: HashMap<RequestLabels, IntCounter, foldhash::fast::FixedState>,
    request_size: Histogram,
    response_size: Histogram,
    ttfb: Histogram,
    duration: Histogram,
    chunks: Histogram,
}

fn hist(
    r: &Registry,
    name: &str,
    help: &str,
    buckets: Vec<f64>,
) -> prometheus::Result<HistogramVec> {
    registry::histogram_vec(r, name, help, &["service"], buckets)
}

impl CapacityMetrics {
    pub fn new(r: &Registry, services: ServiceMap) -> prometheus::Result<CapacityMetrics> {
        let m = CapacityMetrics {
            requests: registry::counter_vec(r, "siphon_requests_total", "Exchanges (requests) seen, by service, HTTP method, route and status class (method \"none\" when not HTTP or encrypted).", &["service", "method", "route", "status_class"])?,
            request_size: hist(r, "siphon_request_size_bytes", "Request payload bytes (head and body, TCP payload) per exchange.", size_buckets())?,
            response_size: hist(r, "siphon_response_size_bytes", "Response payload bytes per exchange.", size_buckets())?,
            ttfb: hist(r, "siphon_time_to_first_byte_seconds", "Response first byte minus request last byte, at the hook.", time_buckets())?,
            duration: hist(r, "siphon_response_duration_seconds", "Response last byte minus response first byte (streaming duration).", time_buckets())?,
            chunks: hist(r, "siphon_response_chunks", "Server segments with PSH per response (about one per streamed write: tokens, SSE events).", chunk_buckets())?,
            hellos: registry::counter_vec(r, "siphon_tls_client_hellos_total", "TLS ClientHellos gathered, by result (fingerprinted, incomplete, invalid).", &["service", "result"])?,
            assembly: registry::counter_vec(r, "siphon_pipeline_events_total", "Userspace pipeline outcomes that are not exchanges, by what (duplicate_exchange, request_decode_error, response_decode_error, context_evicted, head_dropped, event_parse_error, hello_incomplete, hello_decode_error).", &["what"])?,
            services,
            per_service: Vec::new(),
        };
        // Every `what` from the start, so dashboards and alerts see zeros, not gaps.
        for what in PIPELINE_EVENTS {
            drop(m.assembly.with_label_values(&[what]));
        }
        Ok(m)
    }

    pub fn observe(&mut self, report: &Report) {
        match report {
            Report::Exchange(e) => self.observe_exchange(e),
            Report::TlsClientHello(h) => {
                let service = self.services.name_for(h.server);
                let result = match (&h.tls, h.error) {
                    (Some(_), _) => "fingerprinted",
                    (None, Some("truncated")) => "incomplete",
                    _ => "invalid",
                };
                self.hellos.with_label_values(&[service, result]).inc();
            }
        }
    }

    fn observe_exchange(&mut self, e: &ExchangeReport) {
        let service = self.services.name_for(e.server);
        let (method, route, status_class) = match &e.http {
            Some(h) => (h.method, h.route, h.status_class),
            None => ("none", "_none", "none"),
        };
        let i = match self.per_service.iter().position(|(n, _)| n == service) {
            Some(i) => i,
            None => {
                let series = ServiceSeries {
                    requests: HashMap::default(),
                    request_size: self.request_size.with_label_values(&[service]),
                    response_size: self.response_size.with_label_values(&[service]),
                    ttfb: self.ttfb.with_label_values(&[service]),
                    duration: self.duration.with_label_values(&[service]),
                    chunks: self.chunks.with_label_values(&[service]),
                };
                self.per_service.push((service.to_owned(), series));
                self.per_service.len() - 1
            }
        };
        let Some((_, series)) = self.per_service.get_mut(i) else {
            return;
        };
        let labels = (method, route, status_class);
        match series.requests.get(&labels) {
            Some(c) => c.inc(),
            None => {
                let c = self
                    .requests
                    .with_label_values(&[service, method, route, status_class]);
                c.inc();
                series.requests.insert(labels, c);
            }
        }
        series.request_size.observe(e.request_bytes as f64);
        series.response_size.observe(e.response_bytes as f64);
        if let Some(t) = e.ttfb_seconds {
            series.ttfb.observe(t);
        }
        if let Some(d) = e.response_duration_seconds {
            series.duration.observe(d);
        }
        if e.response_bytes > 0 && e.part == 0 {
            series.chunks.observe(e.streamed_chunks as f64);
        }
    }

    /// Adds what the assembler counted since `prev`.
    pub fn record_assembly(&self, prev: &AssemblyStats, now: &AssemblyStats) {
        for (what, a, b) in [
            (
                "duplicate_exchange",
                prev.duplicate_exchanges,
                now.duplicate_exchanges,
            ),
            (
                "request_decode_error",
                prev.request_decode_errors,
                now.request_decode_errors,
            ),
            (
                "response_decode_error",
                prev.response_decode_errors,
                now.response_decode_errors,
            ),
            (
                "context_evicted",
                prev.contexts_evicted,
                now.contexts_evicted,
            ),
            ("head_dropped", prev.heads_dropped, now.heads_dropped),
            (
                "hello_incomplete",
                prev.hello_incomplete,
                now.hello_incomplete,
            ),
            (
                "hello_decode_error",
                prev.hello_decode_errors,
                now.hello_decode_errors,
            ),
        ] {
            if b > a {
                self.assembly.with_label_values(&[what]).inc_by(b - a);
            }
        }
    }

    pub fn event_parse_error(&self) {
        self.assembly
            .with_label_values(&["event_parse_error"])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_llm_sizes_and_long_streams() {
        let s = size_buckets();
        assert!(s.first() == Some(&64.0) && s.last().is_some_and(|l| *l >= 32.0 * 1024.0 * 1024.0));
        let t = time_buckets();
        assert_eq!((t.first(), t.last()), (Some(&0.001), Some(&600.0)));
        assert!(t.windows(2).all(|w| w[0] < w[1]));
    }

    /// The per-service series are found once and kept: each exchange must still land in its
    /// own service's and labels' series, whichever was seen first.
    #[test]
    fn exchanges_count_in_their_own_services_series() {
        let r = Registry::new();
        let services =
            ServiceMap::parse(&["llm=:8000".to_owned(), "emb=:9000".to_owned()]).expect("services");
        let mut m = CapacityMetrics::new(&r, services).expect("metrics");
        let exchange = |port: u16, status: u16, bytes: u64| {
            let mut x = crate::detect::input::tests::sample_report();
            x.server.set_port(port);
            x.request_bytes = bytes;
            if let Some(h) = x.http.as_mut() {
                h.status_class = crate::decode::status_class_label(status);
            }
            Report::Exchange(Box::new(x))
        };
        for (port, status, bytes, times) in [
            (8000, 200, 100, 3),
            (9000, 200, 1000, 2),
            (8000, 429, 10, 1),
            (7000, 200, 5, 4),
        ] {
            for _ in 0..times {
                m.observe(&exchange(port, status, bytes));
            }
        }
        let requests = |service: &str, class: &str| {
            m.requests
                .with_label_values(&[service, "POST", "chat_completions", class])
                .get()
        };
        assert_eq!(requests("llm", "2xx"), 3);
        assert_eq!(requests("llm", "4xx"), 1);
        assert_eq!(requests("emb", "2xx"), 2);
        assert_eq!(requests("emb", "4xx"), 0);
        assert_eq!(requests("_other", "2xx"), 4);
        let sizes = |service: &str| {
            let h = m.request_size.with_label_values(&[service]);
            (h.get_sample_count(), h.get_sample_sum())
        };
        assert_eq!(sizes("llm"), (4, 310.0));
        assert_eq!(sizes("emb"), (2, 2000.0));
        assert_eq!(sizes("_other"), (4, 20.0));
    }

    #[test]
    fn pipeline_events_exist_from_the_start() {
        let r = Registry::new();
        let _m = CapacityMetrics::new(&r, ServiceMap::default()).expect("metrics");
        let mut text = String::new();
        let encoder = prometheus::TextEncoder::new();
        encoder.encode_utf8(&r.gather(), &mut text).expect("encode");
        for what in PIPELINE_EVENTS {
            let line = format!("siphon_pipeline_events_total{{what=\"{what}\"}} 0");
            assert!(text.contains(&line), "{line} missing:\n{text}");
        }
    }
}
