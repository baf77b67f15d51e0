//! API-key extraction and hashing: a header (`name: value`) through
//! `ApiKeyHasher::hash_header`, and the secret itself through `ApiKeyHasher::new` (the secret
//! file and variable are outside bytes too).
#![no_main]

use libfuzzer_sys::fuzz_target;
use siphon_agent::decode::ApiKeyHasher;

fuzz_target!(|data: &[u8]| {
    let keys = siphon_fuzz::hasher();
    let mut c = siphon_fuzz::Cursor::new(data);
    let name = String::from_utf8_lossy(c.until(b':')).into_owned();
    let value = c.rest();
    if let Some(hash) = keys.hash_header(&name, value) {
        // The hash names the key and nothing else: the same for the same key bytes.
        let again = keys.hash_header(&name, value);
        assert_eq!(again, Some(hash));
        assert_eq!(hash.to_string().len(), 32);
    }
    match ApiKeyHasher::new(data) {
        Ok(h) => {
            assert!(data.len() >= siphon_agent::decode::MIN_SECRET_LEN);
            let _ = h.hash(b"sk-test");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
