//! HTTP/1.x response heads (`decode::parse_response_head`): status, and the body framing a
//! streamed completion is recognised by (chunked transfer coding, text/event-stream).
#![no_main]

use libfuzzer_sys::fuzz_target;
use siphon_agent::decode::{parse_response_head, status_class_label};

fuzz_target!(|data: &[u8]| {
    if let Ok(head) = parse_response_head(data) {
        assert_eq!(head.class_label(), status_class_label(head.status));
        assert!(matches!(head.version, 0 | 10 | 11), "{head:?}");
    }
});
