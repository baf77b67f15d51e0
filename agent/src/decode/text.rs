//! Small text helpers shared by the decoders and fingerprints.

use sha2::{Digest, Sha256};

/// Twelve zeros stand in for the hash of an empty list, as the JA4 family
/// does, so "nothing there" is visible at a glance instead of a hash of "".
pub const EMPTY_HASH12: &str = "000000000000";

/// Lossy UTF-8 of at most `max_bytes` of output, cut on a char boundary, so
/// hostile input can neither fail the decode nor grow a field without bound.
pub fn bounded_lossy(bytes: &[u8], max_bytes: usize) -> String {
    let mut s = String::from_utf8_lossy(bytes.get(..max_bytes).unwrap_or(bytes)).into_owned();
    if s.len() > max_bytes {
        let mut cut = max_bytes;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// First 12 lowercase hex chars of SHA-256, or [`EMPTY_HASH12`] for "".
pub fn hash12(s: &str) -> String {
    if s.is_empty() {
        return EMPTY_HASH12.to_owned();
    }
    let digest = Sha256::digest(s.as_bytes());
    let mut out = String::with_capacity(12);
    for b in digest.iter().take(6) {
        push_hex_byte(&mut out, *b);
    }
    out
}

/// Counts in JA4 prefixes are two decimal digits, saturating at 99.
pub fn two_digits(n: usize) -> String {
    format!("{:02}", n.min(99))
}

pub fn push_hex_byte(out: &mut String, b: u8) {
    out.push(hex_digit(b >> 4));
    out.push(hex_digit(b & 0x0f));
}

pub fn hex_digit(nibble: u8) -> char {
    match nibble & 0x0f {
        n @ 0..=9 => char::from(b'0' + n),
        n => char::from(b'a' + n - 10),
    }
}

/// Comma-joined 4-digit lowercase hex, the list format JA4 hashes.
pub fn hex4_list(values: &[u16]) -> String {
    let mut out = String::with_capacity(values.len() * 5);
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for b in v.to_be_bytes() {
            push_hex_byte(&mut out, b);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash12_matches_reference_vectors() {
        // Vectors from the JA4 specification.
        assert_eq!(
            hash12("002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9"),
            "8daaf6152771"
        );
        assert_eq!(hash12("551d0f,551d25,551d11"), "aae71e8db6d7");
        assert_eq!(hash12(""), EMPTY_HASH12);
    }

    #[test]
    fn bounded_lossy_cuts_on_char_boundary() {
        let cases: &[(&[u8], usize, &str)] = &[
            (b"", 4, ""),
            (b"abc", 4, "abc"),
            (b"abcdef", 4, "abcd"),
            ("h\u{e9}llo".as_bytes(), 2, "h"),
            (b"\xff\xfe", 10, "\u{fffd}\u{fffd}"),
            (b"\xffab", 3, "\u{fffd}"),
            (b"a\xff", 0, ""),
        ];
        for (input, max, want) in cases {
            let got = bounded_lossy(input, *max);
            assert_eq!(got, *want, "input {input:?} max {max}");
            assert!(got.len() <= *max);
        }
    }

    #[test]
    fn two_digits_saturates() {
        for (n, want) in [
            (0, "00"),
            (7, "07"),
            (99, "99"),
            (100, "99"),
            (usize::MAX, "99"),
        ] {
            assert_eq!(two_digits(n), want);
        }
    }

    #[test]
    fn hex4_list_formats() {
        assert_eq!(hex4_list(&[]), "");
        assert_eq!(hex4_list(&[0x0000, 0x1301, 0xffff]), "0000,1301,ffff");
    }
}
