//! Exchange-log lines as `siphon detect` reads them (`detect::input::parse_line`), and the
//! detector that takes the observations they give (default configuration), to the end of
//! input and its final evaluation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use siphon_agent::detect::{config::Config, input::parse_line, Detector};

/// Lines per input; bounds the work per input.
const MAX_LINES: usize = 64;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        // `siphon detect` skips a line that is not UTF-8 before parsing it.
        return;
    };
    let mut det = Detector::new(Config::default()).expect("the default configuration is valid");
    det.log_events = false;
    for line in text.lines().take(MAX_LINES) {
        if let Ok(obs) = parse_line(line) {
            det.observe(obs);
            let _ = det.take_events();
        }
    }
    det.finish();
    let _ = det.take_events();
    let _ = det.judged();
});
