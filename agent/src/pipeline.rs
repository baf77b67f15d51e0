//! Ring-buffer bytes in, reports out: parse → assemble/decode → capacity metrics and, when
//! asked, one JSON line per report.

use std::io::Write;

use agent_common::{exchange_end, phase, record_kind, ExchangeRecord, FlowKey, FlowState};

use crate::{
    assemble::{Assembler, AssemblyStats, DecodeConfig},
    capacity::CapacityMetrics,
    detect::{export::DetectorMetrics, input::observation_of, Detector},
    events::{self, Event},
    report::Report,
};

/// Which clock the kernel's timestamps are on, to give reports a wall-clock time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WallClock {
    /// CLOCK_MONOTONIC (live): the offset to CLOCK_REALTIME is read as reports are made, so
    /// clock steps and slews are followed.
    Monotonic,
    /// Already Unix time (replay: the capture's timestamps).
    Unix,
}

impl WallClock {
    fn offset_ns(self) -> i128 {
        match self {
            WallClock::Unix => 0,
            WallClock::Monotonic => {
                let read = |id| {
                    let mut ts = libc::timespec {
                        tv_sec: 0,
                        tv_nsec: 0,
                    };
                    // SAFETY: clock_gettime writes one timespec we own; both clocks exist on
                    // every Linux.
                    unsafe { libc::clock_gettime(id, &mut ts) };
                    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
                };
                read(libc::CLOCK_REALTIME) - read(libc::CLOCK_MONOTONIC)
            }
        }
    }

    fn unix(offset: i128, ns: u64) -> Option<u64> {
        (ns != 0)
            .then(|| u64::try_from(ns as i128 + offset).ok())
            .flatten()
    }
}

/// The detector as a sink of the pipeline's reports: events to a log, scores to metrics.
pub struct DetectorSink {
    pub detector: Detector,
    pub metrics: DetectorMetrics,
    pub log: Option<Box<dyn Write + Send>>,
    last_export: Option<std::time::Instant>,
}

impl DetectorSink {
    pub fn new(
        detector: Detector,
        metrics: DetectorMetrics,
        log: Option<Box<dyn Write + Send>>,
    ) -> DetectorSink {
        DetectorSink {
            detector,
            metrics,
            log,
            last_export: None,
        }
    }

    fn take(&mut self, r: &Report) {
        if let Some(obs) = observation_of(r) {
            self.detector.observe(obs);
        }
    }

    /// Write new events; refresh the series at most once a second (it walks every entity).
    fn publish(&mut self, force: bool) {
        let events = self.detector.take_events();
        self.metrics.record_events(&events);
        if let Some(w) = self.log.as_mut() {
            for e in &events {
                if let Err(err) = writeln!(w, "{}", e.to_line()) {
                    tracing::error!("writing the detection log failed, stopping it: {err}");
                    self.log = None;
                    break;
                }
            }
        }
        let due = self
            .last_export
            .is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(1));
        if force || due || !events.is_empty() {
            self.metrics.update(&self.detector);
            self.last_export = Some(std::time::Instant::now());
        }
    }

    pub fn finish(&mut self) {
        self.detector.finish();
        self.publish(true);
        if let Some(w) = self.log.as_mut() {
            let _ = w.flush();
        }
    }
}

pub struct Pipeline {
    assembler: Assembler,
    capacity: CapacityMetrics,
    json: Option<Box<dyn Write + Send>>,
    detector: Option<DetectorSink>,
    wall: WallClock,
    last_stats: AssemblyStats,
    pub exchanges: u64,
    pub hellos: u64,
    pub parse_errors: u64,
}

/// Contexts the assembler keeps at most (flows with heads or hellos pending).
const MAX_CONTEXTS: usize = 262_144;

impl Pipeline {
    pub fn new(
        cfg: DecodeConfig,
        capacity: CapacityMetrics,
        json: Option<Box<dyn Write + Send>>,
    ) -> Pipeline {
        Pipeline {
            assembler: Assembler::new(cfg, MAX_CONTEXTS),
            capacity,
            json,
            detector: None,
            wall: WallClock::Monotonic,
            last_stats: AssemblyStats::default(),
            exchanges: 0,
            hellos: 0,
            parse_errors: 0,
        }
    }

    pub fn with_wall_clock(mut self, wall: WallClock) -> Pipeline {
        self.wall = wall;
        self
    }

    pub fn with_detector(mut self, sink: DetectorSink) -> Pipeline {
        self.detector = Some(sink);
        self
    }

    /// One ring-buffer record.
    pub fn on_record(&mut self, bytes: &[u8]) {
        match events::parse(bytes) {
            Ok(ev) => self.on_event(ev),
            Err(e) => {
                self.parse_errors += 1;
                self.capacity.event_parse_error();
                tracing::debug!("bad ring-buffer record: {e}");
            }
        }
    }

    pub fn on_event(&mut self, ev: Event) {
        let mut out = Vec::new();
        self.assembler.handle(ev, &mut out);
        self.emit(out);
    }

    /// A flow left the kernel table (or was found idle): emit its open exchange, if any.
    pub fn flow_ended(&mut self, key: &FlowKey, st: &FlowState, gone: bool) {
        if st.exchange.phase != phase::IDLE {
            self.on_event(Event::Exchange(synthesised_exchange(key, st)));
        }
        if gone {
            self.assembler.flow_gone(key);
        }
    }

    fn emit(&mut self, mut out: Vec<Report>) {
        let offset = if out.is_empty() {
            0
        } else {
            self.wall.offset_ns()
        };
        for r in &mut out {
            match r {
                Report::Exchange(x) => {
                    x.request_start_unix_ns = WallClock::unix(offset, x.request_start_ns)
                }
                Report::TlsClientHello(h) => h.ts_unix_ns = WallClock::unix(offset, h.ts_ns),
            }
        }
        for r in &out {
            match r {
                Report::Exchange(_) => self.exchanges += 1,
                Report::TlsClientHello(_) => self.hellos += 1,
            }
            self.capacity.observe(r);
            if let Some(w) = self.json.as_mut() {
                let written = serde_json::to_writer(&mut *w, r)
                    .map_err(std::io::Error::from)
                    .and_then(|()| w.write_all(b"\n"));
                if let Err(e) = written {
                    tracing::error!("writing JSON output failed, stopping it: {e}");
                    self.json = None;
                }
            }
            if let Some(d) = self.detector.as_mut() {
                d.take(r);
            }
        }
        if let Some(d) = self.detector.as_mut() {
            d.publish(false);
        }
        let now = self.assembler.stats;
        self.capacity.record_assembly(&self.last_stats, &now);
        self.last_stats = now;
    }

    /// End of input: the detector scores what is pending and writes its last events.
    pub fn finish_detector(&mut self) {
        if let Some(d) = self.detector.as_mut() {
            d.finish();
        }
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        if let Some(w) = self.detector.as_mut().and_then(|d| d.log.as_mut()) {
            w.flush()?;
        }
        match self.json.as_mut() {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

/// The exchange a flow has open, as the kernel would have emitted it.
pub fn synthesised_exchange(key: &FlowKey, st: &FlowState) -> ExchangeRecord {
    ExchangeRecord {
        kind: record_kind::EXCHANGE,
        end: exchange_end::IDLE,
        client: st.client,
        _pad: 0,
        key: *key,
        _pad2: 0,
        exchange: st.exchange,
        handshake: st.handshake,
    }
}
