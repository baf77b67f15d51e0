//! TCP SYN / SYN-ACK options into JA4T and JA4TS (`Ja4t::new`, `Ja4ts::new`). The first two
//! bytes are the window, the rest the options as the kernel copies them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use siphon_agent::decode::{Ja4t, Ja4ts};

fuzz_target!(|data: &[u8]| {
    let mut c = siphon_fuzz::Cursor::new(data);
    let window = c.u16();
    let options = c.rest();
    let t = Ja4t::new(window, options);
    // One kind per option, and a TCP header has at most 40 bytes of them.
    assert!(t.option_kinds.len() <= 40);
    let s = t.to_string();
    assert!(s.starts_with(&window.to_string()), "{s}");
    let _ = Ja4ts::new(window, options).to_string();
});
