//! Entity names of addresses and prefixes, written into a buffer on the stack: two of them are
//! made for every request, and only a new entity keeps a copy.

use std::fmt::{self, Write as _};

/// The longest IPv6 address text (45 bytes) with a `/128` suffix, rounded up.
const CAPACITY: usize = 56;

/// Text of at most [`CAPACITY`] bytes, held inline.
pub struct AddrText {
    buf: [u8; CAPACITY],
    len: usize,
}

impl AddrText {
    /// `args` formatted; text past the capacity (never an address's) is an error, not a cut.
    pub fn format(args: fmt::Arguments<'_>) -> Result<AddrText, fmt::Error> {
        let mut t = AddrText {
            buf: [0; CAPACITY],
            len: 0,
        };
        t.write_fmt(args)?;
        Ok(t)
    }

    pub fn as_str(&self) -> &str {
        // Only whole `str`s are written, so the bytes are UTF-8.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

impl fmt::Write for AddrText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::AddrText;

    #[test]
    fn holds_the_longest_address_with_a_prefix_length() {
        let ip: std::net::IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
            .parse()
            .unwrap();
        let t = AddrText::format(format_args!("{ip}/128")).unwrap();
        assert_eq!(t.as_str(), format!("{ip}/128"));
        assert!(AddrText::format(format_args!("{}", "x".repeat(57))).is_err());
    }
}
