//! Address text written into a buffer on the stack: the exchange log writes two socket
//! addresses per line and the detector names two entities (address, prefix) per request, and
//! only a new entity keeps a copy. IPv4, the common case, is written digit by digit; the
//! formatting machinery (`core::fmt`, a few % of the agent's CPU under load) only for IPv6.

use std::{
    fmt::{self, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr},
};

/// The longest socket address text: `[` + IPv6 (45 bytes) + `%` + scope id (10) + `]:` +
/// port (5), so every address, prefix and socket address fits.
const CAPACITY: usize = 64;

/// Text of at most [`CAPACITY`] bytes, held inline.
pub struct AddrText {
    buf: [u8; CAPACITY],
    len: usize,
}

impl AddrText {
    /// `args` formatted; text past the capacity (never an address's) is an error, not a cut.
    pub fn format(args: fmt::Arguments<'_>) -> Result<AddrText, fmt::Error> {
        let mut t = AddrText::empty();
        t.write_fmt(args)?;
        Ok(t)
    }

    /// `ip` as `Display` writes it.
    pub fn ip(ip: IpAddr) -> AddrText {
        let mut t = AddrText::empty();
        match ip {
            IpAddr::V4(a) => t.push_v4(a),
            IpAddr::V6(a) => return AddrText::displayed(a),
        }
        t
    }

    /// `addr` as `Display` writes it (`a.b.c.d:port`, `[v6]:port`).
    pub fn socket(addr: SocketAddr) -> AddrText {
        match addr {
            SocketAddr::V4(a) => {
                let mut t = AddrText::empty();
                t.push_v4(*a.ip());
                t.push(":");
                t.push(itoa::Buffer::new().format(a.port()));
                t
            }
            SocketAddr::V6(a) => AddrText::displayed(a),
        }
    }

    /// Through `Display`, for IPv6. Always fits: `[` + 45 + `%` + a 10-digit scope id + `]:` +
    /// 5 digits is [`CAPACITY`]; were it ever cut, the text would be empty, never a panic.
    fn displayed(a: impl fmt::Display) -> AddrText {
        AddrText::format(format_args!("{a}")).unwrap_or_else(|_| AddrText::empty())
    }

    /// `a.b.c.d/len`.
    pub fn v4_prefix(a: Ipv4Addr, len: u8) -> AddrText {
        let mut t = AddrText::empty();
        t.push_v4(a);
        t.push("/");
        t.push(itoa::Buffer::new().format(len));
        t
    }

    fn empty() -> AddrText {
        AddrText {
            buf: [0; CAPACITY],
            len: 0,
        }
    }

    fn push_v4(&mut self, a: Ipv4Addr) {
        let mut digits = itoa::Buffer::new();
        for (i, octet) in a.octets().into_iter().enumerate() {
            if i > 0 {
                self.push(".");
            }
            self.push(digits.format(octet));
        }
    }

    /// Appends `s`; an IPv4 text and its suffix always fit, so nothing is ever cut there.
    fn push(&mut self, s: &str) {
        let _ = self.write_str(s);
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
    use std::net::{IpAddr, SocketAddr};

    /// The fast paths write exactly what `Display` writes (the exchange log's format).
    #[test]
    fn writes_what_display_writes() {
        for text in [
            "0.0.0.0:0",
            "10.1.2.3:8080",
            "255.255.255.255:65535",
            "192.168.100.7:443",
            "[::1]:80",
            "[2001:db8::1]:443",
            "[::ffff:10.0.0.1]:1",
            "[fe80::1%4294967295]:65535",
        ] {
            let a: SocketAddr = text.parse().unwrap();
            assert_eq!(AddrText::socket(a).as_str(), a.to_string());
            assert_eq!(AddrText::ip(a.ip()).as_str(), a.ip().to_string());
        }
        let full: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
            .parse()
            .unwrap();
        assert_eq!(AddrText::ip(full).as_str(), full.to_string());
        assert_eq!(
            AddrText::v4_prefix("10.20.30.0".parse().unwrap(), 24).as_str(),
            "10.20.30.0/24"
        );
    }

    #[test]
    fn holds_the_longest_address_with_a_prefix_length() {
        let ip: std::net::IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
            .parse()
            .unwrap();
        let t = AddrText::format(format_args!("{ip}/128")).unwrap();
        assert_eq!(t.as_str(), format!("{ip}/128"));
        assert!(AddrText::format(format_args!("{}", "x".repeat(65))).is_err());
    }
}
