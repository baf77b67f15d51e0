//! The ring-buffer record decoder (`events::parse`) and the assembler it feeds. The input is a
//! ring-buffer stream: records, each preceded by its length (u16, little-endian), as the
//! kernel would hand them over; every record that decodes goes to one `Assembler`, and its
//! reports are rendered as the exchange log would write them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use siphon_agent::{
    detect::input::{observation_of, parse_line, LineError, MAX_TIME_NS},
    pipeline::{
        assemble::{Assembler, DecodeConfig},
        records as events,
    },
};

/// Enough records for a few flows' worth of exchanges; bounds the work per input.
const MAX_RECORDS: usize = 512;

fuzz_target!(|data: &[u8]| {
    let mut c = siphon_fuzz::Cursor::new(data);
    let trusted_hops = usize::from(c.u8() % 4);
    // Few flows, so the fuzzer also reaches the eviction of the oldest contexts.
    let mut asm = Assembler::new(
        DecodeConfig {
            hasher: siphon_fuzz::hasher(),
            key_updates: None,
            trusted_hops,
        },
        4,
    );
    let mut out = Vec::new();
    for _ in 0..MAX_RECORDS {
        if c.is_empty() {
            break;
        }
        let len = usize::from(c.u16());
        let record = c.take(len);
        match events::parse(record) {
            Ok(event) => asm.handle(event, &mut out),
            Err(e) => {
                let _ = (e.reason(), e.to_string());
            }
        }
    }
    for report in &out {
        let line = serde_json::to_string(report).expect("reports always serialise");
        // What `siphon run` logs, `siphon detect` reads back, unless the record's clock is
        // past what a node can write (garbage the kernel never sends): then a bad line.
        if let Some(obs) = observation_of(report) {
            let back = parse_line(&line);
            if obs.start_ns > MAX_TIME_NS {
                assert!(
                    matches!(back, Err(LineError::Invalid(_))),
                    "{line}: {back:?}"
                );
            } else {
                assert!(back.is_ok(), "{line}: {back:?}");
            }
        }
    }
});
