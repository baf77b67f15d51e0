//! HTTP/1.x request heads (`decode::parse_request_head`) and what is derived from them: JA4H,
//! route, user-agent family, forwarded chain and the client address after trusted hops.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use siphon_agent::decode::{client_ip, parse_request_head, Ja4h, MAX_FORWARDED};

fuzz_target!(|data: &[u8]| {
    let keys = siphon_fuzz::hasher();
    let Ok(head) = parse_request_head(data, Some(&keys)) else {
        return;
    };
    let ja4h = Ja4h::new(&head);
    let fingerprint = ja4h.fingerprint();
    assert_eq!(fingerprint.split('_').count(), 4, "{fingerprint}");
    let _ = (Ja4h::raw(&head), Ja4h::raw_original(&head));
    let _ = (head.route.as_label(), head.user_agent_family.as_label());
    let _ = format!("{head:?}");
    assert!(head.forwarded_for.len() <= MAX_FORWARDED);
    let peer = IpAddr::from([10, 0, 0, 1]);
    for hops in 0..=MAX_FORWARDED + 1 {
        let ip = client_ip(&head.forwarded_for, peer, hops);
        // Never an address nobody named.
        assert!(ip == peer || head.forwarded_for.contains(&ip));
    }
});
