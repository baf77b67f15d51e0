//! Proxy chains from `X-Forwarded-For` and RFC 7239 `Forwarded: for=`.

use std::net::{IpAddr, SocketAddr};

/// Only the tail of a chain is ever trusted (see `client_ip`), so a long
/// chain loses its head: entries a client can forge anyway.
pub const MAX_FORWARDED: usize = 32;

#[derive(Debug, Default)]
pub struct ForwardedChain {
    addrs: Vec<IpAddr>,
}

impl ForwardedChain {
    pub fn add_x_forwarded_for(&mut self, value: &[u8]) {
        for entry in value.split(|&b| b == b',') {
            if let Some(ip) = parse_node(entry.trim_ascii()) {
                self.push(ip);
            }
        }
    }

    pub fn add_forwarded(&mut self, value: &[u8]) {
        for element in value.split(|&b| b == b',') {
            for pair in element.split(|&b| b == b';') {
                let pair = pair.trim_ascii();
                let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                    continue;
                };
                let (name, rest) = pair.split_at(eq);
                if !name.trim_ascii().eq_ignore_ascii_case(b"for") {
                    continue;
                }
                let node = rest.get(1..).unwrap_or_default().trim_ascii();
                if let Some(ip) = parse_node(unquote(node)) {
                    self.push(ip);
                }
            }
        }
    }

    fn push(&mut self, ip: IpAddr) {
        if self.addrs.len() == MAX_FORWARDED {
            self.addrs.remove(0);
        }
        self.addrs.push(ip);
    }

    pub fn into_vec(self) -> Vec<IpAddr> {
        self.addrs
    }
}

fn unquote(v: &[u8]) -> &[u8] {
    v.strip_prefix(b"\"")
        .and_then(|v| v.strip_suffix(b"\""))
        .unwrap_or(v)
}

/// Accepts `ip`, `ip:port`, `[v6]` and `[v6]:port`; "unknown" and RFC 7239
/// obfuscated identifiers are not addresses and yield `None`.
fn parse_node(node: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(node).ok()?;
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    s.strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .and_then(|s| s.parse::<IpAddr>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn x_forwarded_for_table() {
        let cases: &[(&[u8], &[&str])] = &[
            (b"", &[]),
            (b"203.0.113.7", &["203.0.113.7"]),
            (b"203.0.113.7, 10.0.0.1", &["203.0.113.7", "10.0.0.1"]),
            (b" 203.0.113.7 ,,10.0.0.1 ", &["203.0.113.7", "10.0.0.1"]),
            (b"unknown, 10.0.0.1", &["10.0.0.1"]),
            (
                b"2001:db8::1, [2001:db8::2]",
                &["2001:db8::1", "2001:db8::2"],
            ),
            (
                b"203.0.113.7:5678, [2001:db8::2]:443",
                &["203.0.113.7", "2001:db8::2"],
            ),
            (b"999.1.1.1, \xff\xfe", &[]),
        ];
        for (value, want) in cases {
            let mut chain = ForwardedChain::default();
            chain.add_x_forwarded_for(value);
            assert_eq!(chain.into_vec(), ips(want), "{value:?}");
        }
    }

    #[test]
    fn forwarded_table() {
        let cases: &[(&[u8], &[&str])] = &[
            (
                b"for=192.0.2.60;proto=http;by=203.0.113.43",
                &["192.0.2.60"],
            ),
            (b"For=\"[2001:db8:cafe::17]:4711\"", &["2001:db8:cafe::17"]),
            (
                b"for=192.0.2.43, for=198.51.100.17",
                &["192.0.2.43", "198.51.100.17"],
            ),
            (b"for=unknown, for=_hidden, for=10.1.2.3", &["10.1.2.3"]),
            (b"by=10.0.0.1;proto=https", &[]),
            (b"for", &[]),
            (b"for=", &[]),
            (b"for=\"", &[]),
            (b";;,,", &[]),
        ];
        for (value, want) in cases {
            let mut chain = ForwardedChain::default();
            chain.add_forwarded(value);
            assert_eq!(chain.into_vec(), ips(want), "{value:?}");
        }
    }

    #[test]
    fn long_chain_keeps_tail() {
        let mut value = Vec::new();
        for i in 0..(MAX_FORWARDED + 10) {
            value.extend_from_slice(format!("10.0.0.{i},").as_bytes());
        }
        let mut chain = ForwardedChain::default();
        chain.add_x_forwarded_for(&value);
        let got = chain.into_vec();
        assert_eq!(got.len(), MAX_FORWARDED);
        assert_eq!(got.last(), Some(&"10.0.0.41".parse().unwrap()));
        assert_eq!(got.first(), Some(&"10.0.0.10".parse().unwrap()));
    }
}
