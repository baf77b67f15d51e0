//! Helpers shared by the fuzz targets: a fixed key-hashing secret and a cursor that carves
//! values out of the fuzzer's bytes (running out yields zeros, so every input is usable).

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
