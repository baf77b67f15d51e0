//! TLS ClientHello, from records (`ClientHello::parse_records`) and as a bare handshake
//! message (`parse_handshake`), and every JA4 rendering built from it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use siphon_agent::decode::{ClientHello, Ja4, Transport};

fuzz_target!(|data: &[u8]| {
    for hello in [
        ClientHello::parse_records(data),
        ClientHello::parse_handshake(data),
    ] {
        let Ok(hello) = hello else { continue };
        for transport in [Transport::Tcp, Transport::Quic, Transport::Dtls] {
            let ja4 = Ja4::new(&hello, transport);
            let fingerprint = ja4.fingerprint();
            // JA4_a is always 10 characters: the part that fleets are grouped by.
            assert_eq!(
                fingerprint.split('_').next().map(str::len),
                Some(10),
                "{fingerprint}"
            );
            let _ = (ja4.raw(), ja4.original(), ja4.raw_original());
        }
    }
});
