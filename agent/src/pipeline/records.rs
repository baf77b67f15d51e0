//! Ring-buffer records from the kernel, parsed from raw bytes. A record of the wrong size or of
//! an unknown kind is a counted parse error, never a panic.

use agent_common::{record_kind, ExchangeRecord, FlowKey, PayloadHeader, SynRecord};

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
            // The header, then the captured bytes in a record of the kernel's size class.
            let r: PayloadHeader = read_pod(bytes, kind)?;
            let data = &bytes[std::mem::size_of::<PayloadHeader>()..];
            let n = r.captured as usize;
            if n > data.len() {
                return Err(EventError::BadSize {
                    kind,
                    got: bytes.len(),
                    want: std::mem::size_of::<PayloadHeader>() + n,
                });
            }
            Ok(Event::Payload(Payload {
                what: r.what,
                side: r.side,
                key: r.key,
                seq: r.seq,
                ts_ns: r.ts_ns,
                turn_offset: r.turn_offset,
                payload_len: r.payload_len,
                data: data[..n].to_vec(),
                ends: (r.prev_end != 0).then(|| {
                    Box::new(ExchangeRecord::new(
                        r.prev_end,
                        r.client,
                        r.key,
                        r.prev,
                        r.handshake,
                    ))
                }),
            }))
        }
        other => Err(EventError::UnknownKind(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_common::{payload_what, PayloadRecord, CAPTURE_MAX};

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: test helper over repr(C) Pod structs.
        unsafe {
            std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>())
        }
        .to_vec()
    }

    fn payload_record<const N: usize>(captured: u32, data: &[u8]) -> PayloadRecord<N> {
        let mut r = PayloadRecord {
            header: PayloadHeader {
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
                captured,
                prev: Default::default(),
                handshake: Default::default(),
            },
            data: [0u8; N],
        };
        r.data[..data.len()].copy_from_slice(data);
        r
    }

    #[test]
    fn payload_keeps_only_captured_bytes_in_every_size_class() {
        for record in [
            bytes_of(&payload_record::<256>(5, b"GET /")),
            bytes_of(&payload_record::<CAPTURE_MAX>(5, b"GET /")),
        ] {
            let Ok(Event::Payload(p)) = parse(&record) else {
                panic!("payload")
            };
            assert_eq!(
                (p.seq, p.data.as_slice(), p.payload_len),
                (3, &b"GET /"[..], 900)
            );
        }
    }

    #[test]
    fn payload_claiming_more_than_its_record_is_an_error() {
        // A captured length beyond the record is not trusted.
        let r = payload_record::<256>(257, b"GET /");
        assert!(matches!(
            parse(&bytes_of(&r)),
            Err(EventError::BadSize { .. })
        ));
        let full = payload_record::<256>(256, &[b'x'; 256]);
        let Ok(Event::Payload(p)) = parse(&bytes_of(&full)) else {
            panic!("payload")
        };
        assert_eq!(p.data.len(), 256);
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
