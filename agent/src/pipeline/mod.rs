//! Ring-buffer bytes in, reports out: parse ([`records`]) → assemble and attribute
//! ([`assemble`], with [`crate::decode`]) → [`report::Report`]s → the capacity metrics, then
//! each [`ReportSink`] in turn (the exchange log, the detector).

use std::io::Write;

use agent_common::{exchange_end, phase, ExchangeRecord, FlowKey, FlowState};

pub mod addr_text;
pub mod assemble;
pub mod logfile;
pub mod records;
pub mod report;
pub mod service_ports;
pub mod services;

use self::{
    assemble::{Assembler, AssemblyStats, DecodeConfig},
    records::Event,
    report::Report,
};
use crate::export::capacity::CapacityMetrics;

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

/// A consumer of the pipeline's reports, after the capacity metrics: the exchange log and the
/// detector. The pipeline knows nothing of what a sink does, so the detector hooks in here and
/// nowhere else.
pub trait ReportSink: Send {
    /// One report, with its wall-clock times filled in.
    fn take(&mut self, report: &Report);
    /// The report itself, for the last sink: it may keep the report's strings without copying
    /// them. The same as [`ReportSink::take`] otherwise.
    fn take_owned(&mut self, report: Report) {
        self.take(&report);
    }
    /// After each batch of reports (one ring-buffer record's worth, or one swept flow).
    fn batch_done(&mut self) {}
    /// End of input: write what is pending.
    fn finish(&mut self) {}
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The exchange log: one JSON line per report. A write error stops the log (logged once); the
/// metrics keep counting.
pub struct JsonLines {
    out: Option<Box<dyn Write + Send>>,
    /// One line, serialised here and handed to `out` whole: serde writes a line in dozens of
    /// small pieces, each a dynamic call into `out` otherwise. Its allocation is reused.
    line: Vec<u8>,
}

impl JsonLines {
    pub fn new(out: Box<dyn Write + Send>) -> JsonLines {
        JsonLines {
            out: Some(out),
            line: Vec::with_capacity(2048),
        }
    }
}

impl ReportSink for JsonLines {
    fn take(&mut self, report: &Report) {
        if let Some(w) = self.out.as_mut() {
            self.line.clear();
            let written = serde_json::to_writer(&mut self.line, report)
                .map_err(std::io::Error::from)
                .and_then(|()| {
                    self.line.push(b'\n');
                    w.write_all(&self.line)
                });
            if let Err(e) = written {
                tracing::error!("writing JSON output failed, stopping it: {e}");
                self.out = None;
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.out.as_mut() {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

pub struct Pipeline {
    assembler: Assembler,
    capacity: CapacityMetrics,
    sinks: Vec<Box<dyn ReportSink>>,
    wall: WallClock,
    last_stats: AssemblyStats,
    /// The reports of the record being handled (empty between records).
    reports: Vec<Report>,
    pub exchanges: u64,
    pub hellos: u64,
    pub parse_errors: u64,
}

/// Contexts the assembler keeps at most (flows with heads or hellos pending).
const MAX_CONTEXTS: usize = 262_144;

impl Pipeline {
    /// `json`: where the exchange log goes, if anywhere.
    pub fn new(
        cfg: DecodeConfig,
        capacity: CapacityMetrics,
        json: Option<Box<dyn Write + Send>>,
    ) -> Pipeline {
        let sinks = json
            .map(|w| Box::new(JsonLines::new(w)) as Box<dyn ReportSink>)
            .into_iter()
            .collect();
        Pipeline {
            assembler: Assembler::new(cfg, MAX_CONTEXTS),
            capacity,
            sinks,
            wall: WallClock::Monotonic,
            last_stats: AssemblyStats::default(),
            reports: Vec::new(),
            exchanges: 0,
            hellos: 0,
            parse_errors: 0,
        }
    }

    pub fn with_wall_clock(mut self, wall: WallClock) -> Pipeline {
        self.wall = wall;
        self
    }

    /// Adds a sink after the ones already there (the exchange log comes first, so a report is
    /// logged before the detector acts on it).
    pub fn with_sink(mut self, sink: Box<dyn ReportSink>) -> Pipeline {
        self.sinks.push(sink);
        self
    }

    /// One ring-buffer record.
    pub fn on_record(&mut self, bytes: &[u8]) {
        match records::parse(bytes) {
            Ok(ev) => self.on_event(ev),
            Err(e) => {
                self.parse_errors += 1;
                self.capacity.event_parse_error();
                tracing::debug!("bad ring-buffer record: {e}");
            }
        }
    }

    pub fn on_event(&mut self, ev: Event) {
        // The buffer is kept between records: most records make one report or none.
        let mut out = std::mem::take(&mut self.reports);
        self.assembler.handle(ev, &mut out);
        self.emit(&mut out);
        self.reports = out;
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

    fn emit(&mut self, out: &mut Vec<Report>) {
        let offset = if out.is_empty() {
            0
        } else {
            self.wall.offset_ns()
        };
        for r in out.iter_mut() {
            match r {
                Report::Exchange(x) => {
                    x.request_start_unix_ns = WallClock::unix(offset, x.request_start_ns)
                }
                Report::TlsClientHello(h) => h.ts_unix_ns = WallClock::unix(offset, h.ts_ns),
            }
        }
        for r in out.drain(..) {
            match r {
                Report::Exchange(_) => self.exchanges += 1,
                Report::TlsClientHello(_) => self.hellos += 1,
            }
            self.capacity.observe(&r);
            if let Some((last, others)) = self.sinks.split_last_mut() {
                for sink in others {
                    sink.take(&r);
                }
                last.take_owned(r);
            }
        }
        for sink in &mut self.sinks {
            sink.batch_done();
        }
        let now = self.assembler.stats;
        self.capacity.record_assembly(&self.last_stats, &now);
        self.last_stats = now;
    }

    /// End of input: every sink writes what is pending (the detector scores and writes its
    /// last events).
    pub fn finish_sinks(&mut self) {
        for sink in &mut self.sinks {
            sink.finish();
        }
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        for sink in &mut self.sinks {
            sink.flush()?;
        }
        Ok(())
    }
}
/// The exchange a flow has open, as the kernel would have emitted it.
pub fn synthesised_exchange(key: &FlowKey, st: &FlowState) -> ExchangeRecord {
    ExchangeRecord::new(
        exchange_end::IDLE,
        st.client,
        *key,
        st.exchange,
        st.handshake,
    )
}
