//! Ring-buffer bytes in, reports out: parse → assemble/decode → capacity metrics and, when
//! asked, one JSON line per report.

use std::io::Write;

use agent_common::{exchange_end, phase, record_kind, ExchangeRecord, FlowKey, FlowState};

use crate::{
    assemble::{Assembler, AssemblyStats, DecodeConfig},
    capacity::CapacityMetrics,
    events::{self, Event},
    report::Report,
};

pub struct Pipeline {
    assembler: Assembler,
    capacity: CapacityMetrics,
    json: Option<Box<dyn Write + Send>>,
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
            last_stats: AssemblyStats::default(),
            exchanges: 0,
            hellos: 0,
            parse_errors: 0,
        }
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

    fn emit(&mut self, out: Vec<Report>) {
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
        }
        let now = self.assembler.stats;
        self.capacity.record_assembly(&self.last_stats, &now);
        self.last_stats = now;
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
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
