//! Ring-buffer records from the kernel, parsed from raw bytes. A record of the wrong size or of
//! an unknown kind is a counted parse error, never a panic.

use agent_common::{record_kind, ExchangeRecord, FlowKey, PayloadRecord, SynRecord};

/// A payload record without its fixed-size buffer: only the captured bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload {
    pub what: u8,
    pub side: u8,
    pub key: FlowKey,
    pub seq: u32,
    pub ts_ns: u64,
    pub turn_offset: u64,
    pub payload_len: u32,
    pub data: Vec<u8>,
    /// The exchange this segment ends, when the kernel sent both in one record.
    pub ends: Option<Box<ExchangeRecord>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Exchange(ExchangeRecord),
    Payload(Payload),
    Syn(SynRecord),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("record shorter than its kind field")]
    Short,
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
    #[error("record of kind {kind} has {got} bytes, expected {want}")]
    BadSize { kind: u32, got: usize, want: usize },
}

impl EventError {
    pub fn reason(&self) -> &'static str {
        match self {
            EventError::Short => "short",
            EventError::UnknownKind(_) => "unknown_kind",
            EventError::BadSize { .. } => "bad_size",
        }
    }
}

/// Reads a plain-old-data record out of `bytes`, which must be exactly its size.
fn read_pod<T: aya::Pod>(bytes: &[u8], kind: u32) -> Result<T, EventError> {
    let want = std::mem::size_of::<T>();
    if bytes.len() < want {
        return Err(EventError::BadSize {
            kind,
            got: bytes.len(),
            want,
        });
    }
    // SAFETY: T is Pod (any bit pattern is valid) and `bytes` holds at least size_of::<T>()
    // bytes; read_unaligned because ring-buffer records are only 8-byte aligned by convention.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

pub fn parse(bytes: &[u8]) -> Result<Event, EventError> {
    let kind = u32::from_ne_bytes(
        bytes
            .get(..4)
            .ok_or(EventError::Short)?
            .try_into()
            .map_err(|_| EventError::Short)?,
    );
    match kind {
        record_kind::EXCHANGE => Ok(Event::Exchange(read_pod(bytes, kind)?)),
        record_kind::SYN => Ok(Event::Syn(read_pod(bytes, kind)?)),
        record_kind::PAYLOAD => {
            let r: PayloadRecord = read_pod(bytes, kind)?;
            let n = (r.captured as usize).min(r.data.len());
            Ok(Event::Payload(Payload {
                what: r.what,
                side: r.side,
                key: r.key,
                seq: r.seq,
                ts_ns: r.ts_ns,
                turn_offset: r.turn_offset,
                payload_len: r.payload_len,
                data: r.data[..n].to_vec(),
                ends: (r.prev_end != 0).then(|| {
                    Box::new(ExchangeRecord {
                        kind: record_kind::EXCHANGE,
                        end: r.prev_end,
                        client: r.client,
                        _pad: 0,
                        key: r.key,
                        _pad2: 0,
                        exchange: r.prev,
                        handshake: r.handshake,
                    })
                }),
            }))
        }
        other => Err(EventError::UnknownKind(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_common::{payload_what, CAPTURE_MAX};

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: test helper over repr(C) Pod structs.
        unsafe {
            std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>())
        }
        .to_vec()
    }

    #[test]
    fn payload_keeps_only_captured_bytes() {
        let mut r = PayloadRecord {
            kind: record_kind::PAYLOAD,
            what: payload_what::REQUEST_HEAD,
            side: 0,
            prev_end: 0,
            client: 0,
            key: FlowKey::default(),
            seq: 3,
            ts_ns: 42,
            turn_offset: 0,
            payload_len: 900,
            captured: 5,
            prev: Default::default(),
            handshake: Default::default(),
            data: [0u8; CAPTURE_MAX],
        };
        r.data[..5].copy_from_slice(b"GET /");
        let Ok(Event::Payload(p)) = parse(&bytes_of(&r)) else {
            panic!("payload")
        };
        assert_eq!(
            (p.seq, p.data.as_slice(), p.payload_len),
            (3, &b"GET /"[..], 900)
        );
        // A captured length beyond the buffer is clamped, not trusted.
        r.captured = u32::MAX;
        let Ok(Event::Payload(p)) = parse(&bytes_of(&r)) else {
            panic!("payload")
        };
        assert_eq!(p.data.len(), CAPTURE_MAX);
    }

    #[test]
    fn malformed_records_are_errors() {
        assert_eq!(parse(&[]), Err(EventError::Short));
        assert_eq!(parse(&[1, 0]), Err(EventError::Short));
        assert_eq!(
            parse(&99u32.to_ne_bytes()),
            Err(EventError::UnknownKind(99))
        );
        let short = record_kind::EXCHANGE.to_ne_bytes();
        assert!(matches!(parse(&short), Err(EventError::BadSize { .. })));
    }
}
