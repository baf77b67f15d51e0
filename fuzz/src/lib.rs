//! Helpers shared by the fuzz targets: a fixed key-hashing secret and a cursor that carves
//! structured values out of the fuzzer's bytes (running out yields zeros, so every input is
//! usable and short inputs stay meaningful).

use siphon_agent::decode::ApiKeyHasher;

/// A fixed secret: hashes are reproducible across runs, so a crash reproduces.
pub fn hasher() -> ApiKeyHasher {
    ApiKeyHasher::new(b"fuzz-secret-0123456789abcdef")
        .expect("the fixed fuzz secret is long enough and not a placeholder")
}

/// Reads the fuzzer's bytes front to back.
pub struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Cursor { rest: data }
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        let (first, rest) = self
            .rest
            .split_first()
            .map_or((0, &[][..]), |(b, r)| (*b, r));
        self.rest = rest;
        first
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = rest;
        head
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        self.take(usize::MAX)
    }

    /// Bytes up to (not including) the next `sep`, which is consumed; all the rest if none.
    pub fn until(&mut self, sep: u8) -> &'a [u8] {
        match self.rest.iter().position(|&b| b == sep) {
            Some(i) => {
                let head = &self.rest[..i];
                self.rest = &self.rest[i + 1..];
                head
            }
            None => self.rest(),
        }
    }
}

/// Overwrites the start of a plain-old-data value with `bytes`: the fuzzer controls every
/// field of a kernel record while the record keeps its exact size.
pub fn overlay<T: Copy>(value: &mut T, bytes: &[u8]) {
    let size = std::mem::size_of::<T>();
    let n = bytes.len().min(size);
    // SAFETY: T is one of agent-common's #[repr(C)] Pod records (any bit pattern is valid), and
    // at most size_of::<T>() bytes are written into it.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), (value as *mut T).cast::<u8>(), n);
    }
}

/// The bytes of a plain-old-data value, as the ring buffer would carry it.
pub fn bytes_of<T: Copy>(value: &T) -> Vec<u8> {
    // SAFETY: reading size_of::<T>() bytes of a #[repr(C)] record; the padding fields are
    // explicit, so every byte is initialised.
    unsafe {
        std::slice::from_raw_parts((value as *const T).cast::<u8>(), std::mem::size_of::<T>())
    }
    .to_vec()
}
