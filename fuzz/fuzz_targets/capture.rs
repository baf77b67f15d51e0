//! pcap and pcapng files, as `siphon replay` reads them (`replay::from_bytes`, the same reader
//! as `replay::capture::open`): every frame up to the end, a fatal error, or a bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use siphon_agent::replay::{from_bytes, CaptureError};

const MAX_FRAMES: usize = 10_000;

fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) = from_bytes(data.to_vec()) else {
        return;
    };
    for _ in 0..MAX_FRAMES {
        match reader.next_frame() {
            Ok(Some(frame)) => assert!(frame.ethernet.len() <= data.len() + 14),
            Ok(None) | Err(CaptureError::Fatal(_)) => break,
            Err(CaptureError::Skip(_)) => {}
        }
    }
    assert!(reader.position() <= data.len() as u64);
});
