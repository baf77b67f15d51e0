//! JA4 TLS client fingerprint (FoxIO, technical_details/JA4.md) with its
//! raw (`_r`) and original-order (`_o`, `_ro`) renderings.

use std::fmt;

use super::{
    text::{hash12, hex4_list, hex_digit, two_digits, EMPTY_HASH12},
    tls_hello::ClientHello,
};

const EXT_SERVER_NAME: u16 = 0x0000;
const EXT_ALPN: u16 = 0x0010;
const EXT_SUPPORTED_VERSIONS: u16 = 0x002b;

/// What carried the ClientHello; the first character of the fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Quic,
    Dtls,
}

impl Transport {
    fn marker(self) -> char {
        match self {
            Self::Tcp => 't',
            Self::Quic => 'q',
            Self::Dtls => 'd',
        }
    }
}

/// The pieces of a JA4 fingerprint, from which each rendering is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ja4 {
    /// JA4_a, e.g. `t13d1516h2`.
    prefix: String,
    ciphers_sorted: String,
    ciphers_original: String,
    /// Sorted extensions without SNI and ALPN, then `_` and the signature
    /// algorithms in wire order (no `_` when there are none).
    exts_sorted: String,
    /// Extensions in wire order, SNI and ALPN included, then signatures.
    exts_original: String,
}

impl Ja4 {
    pub fn new(hello: &ClientHello, transport: Transport) -> Self {
        let ciphers: Vec<u16> = without_grease(&hello.cipher_suites);
        let exts: Vec<u16> = without_grease(&hello.extensions);
        let sigs: Vec<u16> = without_grease(&hello.signature_algorithms);

        let sni = if exts.contains(&EXT_SERVER_NAME) {
            'd'
        } else {
            'i'
        };
        let prefix = format!(
            "{}{}{}{}{}{}",
            transport.marker(),
            version_code(hello),
            sni,
            two_digits(ciphers.len()),
            two_digits(exts.len()),
            alpn_code(hello.alpn_protocols.first().map(Vec::as_slice)),
        );

        let mut sorted_ciphers = ciphers.clone();
        sorted_ciphers.sort_unstable();
        let mut sorted_exts: Vec<u16> = exts
            .iter()
            .copied()
            .filter(|&e| e != EXT_SERVER_NAME && e != EXT_ALPN)
            .collect();
        sorted_exts.sort_unstable();

        let sigs = hex4_list(&sigs);
        Self {
            prefix,
            ciphers_sorted: hex4_list(&sorted_ciphers),
            ciphers_original: hex4_list(&ciphers),
            exts_sorted: with_sigs(hex4_list(&sorted_exts), &sigs),
            exts_original: with_sigs(hex4_list(&exts), &sigs),
        }
    }

    /// JA4: `a_b_c` with sorted, hashed lists.
    pub fn fingerprint(&self) -> String {
        format!(
            "{}_{}_{}",
            self.prefix,
            hash12(&self.ciphers_sorted),
            hash12(&self.exts_sorted)
        )
    }

    /// JA4_r: the sorted lists before hashing.
    pub fn raw(&self) -> String {
        format!(
            "{}_{}_{}",
            self.prefix, self.ciphers_sorted, self.exts_sorted
        )
    }

    /// JA4_o: wire order, SNI and ALPN kept, hashed.
    pub fn original(&self) -> String {
        // FoxIO's reference tool zeroes this part whenever the *sorted* list
        // is empty, even though the wire-order list still holds SNI/ALPN; the
        // published fingerprints follow that rule, so this does too.
        let exts = if self.exts_sorted.is_empty() {
            EMPTY_HASH12.to_owned()
        } else {
            hash12(&self.exts_original)
        };
        format!(
            "{}_{}_{}",
            self.prefix,
            hash12(&self.ciphers_original),
            exts
        )
    }

    /// JA4_ro: wire order, SNI and ALPN kept, unhashed.
    pub fn raw_original(&self) -> String {
        format!(
            "{}_{}_{}",
            self.prefix, self.ciphers_original, self.exts_original
        )
    }
}

impl fmt::Display for Ja4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.fingerprint())
    }
}

/// GREASE (RFC 8701) values are 0x?a?a with equal bytes; clients insert
/// them at random, so every JA4 list ignores them.
fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

fn without_grease(values: &[u16]) -> Vec<u16> {
    values.iter().copied().filter(|&v| !is_grease(v)).collect()
}

fn with_sigs(exts: String, sigs: &str) -> String {
    if sigs.is_empty() {
        exts
    } else {
        format!("{exts}_{sigs}")
    }
}

/// The highest supported_versions entry when the extension is present,
/// otherwise the hello's legacy_version; the record version never counts.
fn version_code(hello: &ClientHello) -> &'static str {
    let advertised = hello
        .extensions
        .contains(&EXT_SUPPORTED_VERSIONS)
        .then(|| {
            hello
                .supported_versions
                .iter()
                .copied()
                .filter(|&v| !is_grease(v))
                .max()
        })
        .flatten();
    match advertised.unwrap_or(hello.legacy_version) {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        0x0002 => "s2",
        0xfeff => "d1",
        0xfefd => "d2",
        0xfefc => "d3",
        _ => "00",
    }
}

/// First and last character of the first ALPN protocol. When either end is
/// not an ASCII letter or digit, the spec switches to the first and last
/// hex digit of the whole value so binary ALPNs still render printably.
fn alpn_code(first: Option<&[u8]>) -> String {
    let Some((&head, &tail)) = first.and_then(|p| Some((p.first()?, p.last()?))) else {
        return "00".to_owned();
    };
    if head.is_ascii_alphanumeric() && tail.is_ascii_alphanumeric() {
        [char::from(head), char::from(tail)].iter().collect()
    } else if !head.is_ascii() || !tail.is_ascii() {
        // FoxIO's tools (Python, Rust, Wireshark), whose output the published fingerprint
        // databases hold, print "99" for non-ASCII ALPN bytes; JA4.md's hex rule would give
        // other values. Matching the deployed tools keeps our fingerprints comparable.
        "99".to_owned()
    } else {
        [hex_digit(head >> 4), hex_digit(tail & 0x0f)]
            .iter()
            .collect()
    }
}

#[cfg(test)]
#[path = "ja4_tests.rs"]
mod tests;
