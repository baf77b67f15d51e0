//! Proxy chains from `X-Forwarded-For` and RFC 7239 `Forwarded` values (`ForwardedChain`).
//! Input: values separated by newlines; the first byte of each picks the header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use siphon_agent::decode::{ForwardedChain, MAX_FORWARDED};

fuzz_target!(|data: &[u8]| {
    let mut chain = ForwardedChain::default();
    for value in data.split(|&b| b == b'\n') {
        match value.split_first() {
            Some((b'F', rest)) => chain.add_forwarded(rest),
            Some((_, rest)) => chain.add_x_forwarded_for(rest),
            None => {}
        }
    }
    assert!(chain.into_vec().len() <= MAX_FORWARDED);
});
