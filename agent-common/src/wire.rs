//! Facts about the protocols on the wire that the kernel program and the userspace decoder both
//! act on. Kept here, once, so the two cannot disagree on where a request starts or what a TLS
//! record looks like.

/// The first four bytes of an HTTP/1.x request line, for every method the decoder names (RFC
/// 9110 §9; methods are case-sensitive). Four bytes tell them apart and are what the kernel
/// reads in one load; a segment starting with one of these starts a request (a new turn).
pub const HTTP_REQUEST_PREFIXES: [[u8; 4]; 9] = [
    *b"GET ", *b"POST", *b"PUT ", *b"HEAD", *b"DELE", *b"PATC", *b"OPTI", *b"CONN", *b"TRAC",
];

/// Whether `p` starts like an HTTP/1.x request line (see [`HTTP_REQUEST_PREFIXES`]).
#[inline(always)]
pub fn starts_http_request(p: &[u8]) -> bool {
    p.len() >= 4
        && matches!(
            &p[..4],
            b"GET " | b"POST" | b"PUT " | b"HEAD" | b"DELE" | b"PATC" | b"OPTI" | b"CONN" | b"TRAC"
        )
}

/// Whether a request line's method is one clients do not pipeline (POST, PATCH): after one,
/// the next bytes from the client belong to its body, not to another request.
#[inline(always)]
pub fn is_unpipelined_request(p: &[u8]) -> bool {
    p.len() >= 4 && matches!(&p[..4], b"POST" | b"PATC")
}

/// TLS record and handshake constants (RFC 8446 §5.1, §4).
pub mod tls {
    /// Record content type: handshake.
    pub const CONTENT_HANDSHAKE: u8 = 0x16;
    /// Record content type: change_cipher_spec (sent for middlebox compatibility in TLS 1.3).
    pub const CONTENT_CHANGE_CIPHER_SPEC: u8 = 0x14;
    /// Major byte of every record's legacy version (3 for SSL 3.0 through TLS 1.3).
    pub const VERSION_MAJOR: u8 = 0x03;
    /// Handshake message type: ClientHello.
    pub const HANDSHAKE_CLIENT_HELLO: u8 = 0x01;
    /// Bytes of a record header: type, version (2), length (2).
    pub const RECORD_HEADER_LEN: usize = 5;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `matches!` (what the kernel compiles to compares) and the list say the same.
    #[test]
    fn the_request_test_accepts_exactly_the_listed_prefixes() {
        for p in HTTP_REQUEST_PREFIXES {
            assert!(starts_http_request(&p), "{p:?}");
        }
        for p in [*b"get ", *b"GETX", *b"HTTP", *b"PRI ", *b"\x16\x03\x01\x00"] {
            assert!(!starts_http_request(&p), "{p:?}");
        }
        assert!(!starts_http_request(b"GET"));
        assert!(is_unpipelined_request(b"POST /v1/chat"));
        assert!(is_unpipelined_request(b"PATCH /x"));
        assert!(!is_unpipelined_request(b"PUT /x"));
    }
}
