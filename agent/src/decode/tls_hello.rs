//! TLS ClientHello decoding, from the TLS record layer of a TCP stream or
//! from a bare handshake message (as QUIC CRYPTO frames carry it).

use agent_common::wire::tls::{CONTENT_HANDSHAKE, HANDSHAKE_CLIENT_HELLO};

use super::{text::bounded_lossy, DecodeError};

/// RFC 8446 §5.1 caps plaintext records at 2^14; the slack tolerates
/// peers that mis-size a record without letting a length field run away.
const MAX_RECORD_LEN: usize = (1 << 14) + 2048;
/// Real ClientHellos stay under ~4 KiB even with post-quantum key shares.
const MAX_HELLO_LEN: usize = 64 * 1024;
const MAX_SNI_BYTES: usize = 255;

const EXT_SERVER_NAME: u16 = 0x0000;
const EXT_SIGNATURE_ALGORITHMS: u16 = 0x000d;
const EXT_ALPN: u16 = 0x0010;
const EXT_SUPPORTED_VERSIONS: u16 = 0x002b;

/// The ClientHello fields JA4 looks at, in wire order and with GREASE
/// values still present; fingerprints decide what to drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// `legacy_version` of the ClientHello body (not the record's).
    pub legacy_version: u16,
    pub cipher_suites: Vec<u16>,
    pub extensions: Vec<u16>,
    /// Host name from server_name, if any (lossy, bounded).
    pub sni: Option<String>,
    pub alpn_protocols: Vec<Vec<u8>>,
    pub supported_versions: Vec<u16>,
    pub signature_algorithms: Vec<u16>,
}

impl ClientHello {
    /// Decodes the ClientHello starting at the first TLS record of `buf`,
    /// following the handshake message across as many handshake records as
    /// it spans. Bytes after the message are ignored.
    pub fn parse_records(buf: &[u8]) -> Result<Self, DecodeError> {
        if buf.is_empty() {
            return Err(DecodeError::Empty);
        }
        // An SSLv2-compatible hello starts with a 2-byte length, high bit set.
        if buf.first().is_some_and(|&b| b & 0x80 != 0) && buf.get(2) == Some(&1) {
            return Err(DecodeError::TlsSslv2);
        }
        let mut message = Vec::new();
        let mut rest = buf;
        loop {
            let (payload, after) = next_handshake_record(rest)?;
            message.extend_from_slice(payload);
            rest = after;
            if let Some(total) = handshake_len(&message)? {
                if message.len() >= total {
                    message.truncate(total);
                    return Self::parse_handshake(&message);
                }
            }
        }
    }

    /// Decodes a bare handshake message: type, 24-bit length, body.
    pub fn parse_handshake(msg: &[u8]) -> Result<Self, DecodeError> {
        if msg.is_empty() {
            return Err(DecodeError::Empty);
        }
        let total = handshake_len(msg)?.ok_or(DecodeError::Truncated("handshake header"))?;
        let body = msg
            .get(4..total)
            .ok_or(DecodeError::Truncated("ClientHello"))?;
        parse_body(body)
    }
}

fn next_handshake_record(buf: &[u8]) -> Result<(&[u8], &[u8]), DecodeError> {
    let mut r = Reader::new(buf);
    let content_type = r.u8().ok_or(DecodeError::Truncated("record header"))?;
    if content_type != CONTENT_HANDSHAKE {
        return Err(DecodeError::TlsNotHandshake);
    }
    let _record_version = r.u16().ok_or(DecodeError::Truncated("record header"))?;
    let len = usize::from(r.u16().ok_or(DecodeError::Truncated("record header"))?);
    if len == 0 {
        return Err(DecodeError::TlsBadLength("record"));
    }
    if len > MAX_RECORD_LEN {
        return Err(DecodeError::TlsTooLarge("record"));
    }
    let payload = r.bytes(len).ok_or(DecodeError::Truncated("record"))?;
    Ok((payload, r.rest()))
}

/// Total length (header included) once the 4-byte handshake header is in.
fn handshake_len(msg: &[u8]) -> Result<Option<usize>, DecodeError> {
    let Some(header) = msg.get(..4) else {
        return Ok(None);
    };
    let mut r = Reader::new(header);
    if r.u8() != Some(HANDSHAKE_CLIENT_HELLO) {
        return Err(DecodeError::TlsNotClientHello);
    }
    let len = r.u24().ok_or(DecodeError::Truncated("handshake header"))?;
    if len > MAX_HELLO_LEN {
        return Err(DecodeError::TlsTooLarge("ClientHello"));
    }
    Ok(Some(len + 4))
}

fn parse_body(body: &[u8]) -> Result<ClientHello, DecodeError> {
    let mut r = Reader::new(body);
    let legacy_version = r.u16().ok_or(DecodeError::Truncated("ClientHello"))?;
    r.bytes(32).ok_or(DecodeError::Truncated("ClientHello"))?;
    let session_id = r.vec8().ok_or(DecodeError::TlsBadLength("session id"))?;
    if session_id.len() > 32 {
        return Err(DecodeError::TlsBadLength("session id"));
    }
    let suites = r
        .vec16()
        .ok_or(DecodeError::TlsBadLength("cipher suites"))?;
    let cipher_suites = u16_list(suites).ok_or(DecodeError::TlsBadLength("cipher suites"))?;
    r.vec8()
        .ok_or(DecodeError::TlsBadLength("compression methods"))?;

    let mut hello = ClientHello {
        legacy_version,
        cipher_suites,
        extensions: Vec::new(),
        sni: None,
        alpn_protocols: Vec::new(),
        supported_versions: Vec::new(),
        signature_algorithms: Vec::new(),
    };
    // Pre-TLS-1.2 hellos may end right after compression methods.
    if r.is_empty() {
        return Ok(hello);
    }
    let exts = r.vec16().ok_or(DecodeError::TlsBadLength("extensions"))?;
    if !r.is_empty() {
        return Err(DecodeError::TlsBadLength("extensions"));
    }
    let mut e = Reader::new(exts);
    while !e.is_empty() {
        let ext_type = e.u16().ok_or(DecodeError::TlsBadLength("extension"))?;
        let data = e.vec16().ok_or(DecodeError::TlsBadLength("extension"))?;
        hello.extensions.push(ext_type);
        match ext_type {
            EXT_SERVER_NAME => hello.sni = parse_sni(data),
            EXT_ALPN => hello.alpn_protocols = parse_alpn(data)?,
            EXT_SUPPORTED_VERSIONS => hello.supported_versions = parse_versions(data)?,
            EXT_SIGNATURE_ALGORITHMS => hello.signature_algorithms = parse_sig_algs(data)?,
            _ => {}
        }
    }
    Ok(hello)
}

/// Only the host_name entry matters; a malformed list still counts as an
/// SNI extension for JA4, so it yields `None` rather than an error.
fn parse_sni(data: &[u8]) -> Option<String> {
    let mut r = Reader::new(data);
    let mut list = Reader::new(r.vec16()?);
    while !list.is_empty() {
        let name_type = list.u8()?;
        let name = list.vec16()?;
        if name_type == 0 {
            return Some(bounded_lossy(name, MAX_SNI_BYTES));
        }
    }
    None
}

fn parse_alpn(data: &[u8]) -> Result<Vec<Vec<u8>>, DecodeError> {
    let bad = DecodeError::TlsBadLength("ALPN");
    let mut r = Reader::new(data);
    let mut list = Reader::new(r.vec16().ok_or(bad)?);
    if !r.is_empty() {
        return Err(bad);
    }
    let mut out = Vec::new();
    while !list.is_empty() {
        out.push(list.vec8().ok_or(bad)?.to_vec());
    }
    Ok(out)
}

fn parse_versions(data: &[u8]) -> Result<Vec<u16>, DecodeError> {
    let bad = DecodeError::TlsBadLength("supported versions");
    let mut r = Reader::new(data);
    let list = r.vec8().ok_or(bad)?;
    if !r.is_empty() {
        return Err(bad);
    }
    u16_list(list).ok_or(bad)
}

fn parse_sig_algs(data: &[u8]) -> Result<Vec<u16>, DecodeError> {
    let bad = DecodeError::TlsBadLength("signature algorithms");
    let mut r = Reader::new(data);
    let list = r.vec16().ok_or(bad)?;
    if !r.is_empty() {
        return Err(bad);
    }
    u16_list(list).ok_or(bad)
}

fn u16_list(bytes: &[u8]) -> Option<Vec<u16>> {
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(2)
            .filter_map(|c| <[u8; 2]>::try_from(c).ok())
            .map(u16::from_be_bytes)
            .collect(),
    )
}

/// Bounds-checked big-endian cursor: every read is `Option`, so a lying
/// length field ends the parse instead of reading past the buffer.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn rest(&self) -> &'a [u8] {
        self.buf
    }

    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let head = self.buf.get(..n)?;
        self.buf = self.buf.get(n..)?;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.bytes(1)?.first().copied()
    }

    fn u16(&mut self) -> Option<u16> {
        let b = self.bytes(2)?;
        Some(u16::from_be_bytes([*b.first()?, *b.get(1)?]))
    }

    fn u24(&mut self) -> Option<usize> {
        let b = self.bytes(3)?;
        Some(
            usize::from(*b.first()?) << 16 | usize::from(*b.get(1)?) << 8 | usize::from(*b.get(2)?),
        )
    }

    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = usize::from(self.u8()?);
        self.bytes(n)
    }

    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = usize::from(self.u16()?);
        self.bytes(n)
    }
}

#[cfg(test)]
#[path = "tls_hello_tests.rs"]
mod tests;
