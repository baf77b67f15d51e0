//! The detector's TOML configuration (`detect::config::Config::parse`, what `--config` and
//! `--detect-config` read). A configuration that parses must build a detector, and that
//! detector must take a few exchanges and evaluate without trouble.
#![no_main]

use libfuzzer_sys::fuzz_target;
use siphon_agent::detect::{config::Config, input::parse_line, Detector};

const LINES: [&str; 3] = [
    r#"{"record":"exchange","client":"10.0.0.9:40000","server":"10.0.0.1:8000","seq":1,"request_start_ns":1000000000,"request_bytes":300,"response_bytes":9000,"streamed_chunks":40,"ttfb_seconds":0.25,"response_duration_seconds":1.5,"http":{"api_key_hash":"00112233445566778899aabbccddeeff","client_ip":"192.0.2.7","status":200,"event_stream":true,"user_agent_family":"openai-python"},"tls":{"ja4":"t13d1516h2_8daaf6152771_02713d6af862"},"tcp":{"ja4t":"64240_2-4-8-1-3_1460_7","synack_ack_seconds":0.002}}"#,
    r#"{"record":"exchange","client":"10.0.0.9:40001","server":"10.0.0.1:8000","seq":2,"request_start_ns":61000000000,"request_bytes":310,"response_bytes":8000,"http":{"client_ip":"192.0.2.8","forwarded_for":["198.51.100.1","192.0.2.8"]}}"#,
    r#"{"record":"exchange","client":"[2001:db8::1]:5","server":"10.0.0.1:443","seq":1,"request_start_ns":3600000000000,"request_bytes":1,"response_bytes":1,"tls":{"ja4":"t13d1516h2_8daaf6152771_02713d6af862"}}"#,
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = Config::parse(text) else {
        return;
    };
    let mut det = Detector::new(cfg).expect("a configuration that parses is valid");
    det.log_events = false;
    for line in LINES {
        if let Ok(obs) = parse_line(line) {
            det.observe(obs);
        }
    }
    det.finish();
    let _ = det.take_events();
});
