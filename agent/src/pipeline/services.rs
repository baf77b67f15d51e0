//! Server address → bounded `service` label, from configuration (`--service NAME=ADDR:PORT`).
//! Anything unmatched is `_other`, so label values stay a closed set.

use std::net::{IpAddr, SocketAddr};

use anyhow::{bail, Context as _};

pub const OTHER: &str = "_other";
/// More names than this is a configuration mistake, not a service map.
const MAX_SERVICES: usize = 256;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Match {
    AddrPort(SocketAddr),
    Port(u16),
    Addr(IpAddr),
}

#[derive(Clone, Debug, Default)]
pub struct ServiceMap {
    entries: Vec<(Match, String)>,
}

impl ServiceMap {
    /// Parses `NAME=ADDR:PORT`, `NAME=:PORT` (any address) or `NAME=ADDR` (any port).
    pub fn parse(specs: &[String]) -> anyhow::Result<ServiceMap> {
        if specs.len() > MAX_SERVICES {
            bail!("at most {MAX_SERVICES} --service entries");
        }
        let mut entries = Vec::with_capacity(specs.len());
        for spec in specs {
            let (name, target) = spec.split_once('=').with_context(|| {
                format!("--service {spec:?}: expected NAME=ADDR:PORT, NAME=:PORT or NAME=ADDR")
            })?;
            if name.is_empty()
                || name.len() > 64
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                bail!("--service {spec:?}: the name must be 1-64 characters of [A-Za-z0-9._-]");
            }
            let m = if let Some(port) = target.strip_prefix(':') {
                Match::Port(
                    port.parse()
                        .with_context(|| format!("--service {spec:?}: bad port"))?,
                )
            } else if let Ok(sa) = target.parse::<SocketAddr>() {
                Match::AddrPort(sa)
            } else if let Ok(ip) = target.parse::<IpAddr>() {
                Match::Addr(ip)
            } else {
                bail!("--service {spec:?}: {target:?} is not ADDR:PORT, :PORT or ADDR");
            };
            entries.push((m, name.to_owned()));
        }
        Ok(ServiceMap { entries })
    }

    /// The ports named by `NAME=ADDR:PORT` and `NAME=:PORT` entries, sorted and without
    /// duplicates: each is a service port, which tells client from server on flows whose SYN
    /// was missed (`NAME=ADDR` names no port).
    pub fn ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .entries
            .iter()
            .filter_map(|(m, _)| match m {
                Match::AddrPort(sa) => Some(sa.port()),
                Match::Port(p) => Some(*p),
                Match::Addr(_) => None,
            })
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    /// The most specific match wins: address and port, then port, then address.
    pub fn name_for(&self, server: SocketAddr) -> &str {
        let find = |pred: &dyn Fn(&Match) -> bool| {
            self.entries
                .iter()
                .find(|(m, _)| pred(m))
                .map(|(_, n)| n.as_str())
        };
        find(&|m| *m == Match::AddrPort(server))
            .or_else(|| find(&|m| *m == Match::Port(server.port())))
            .or_else(|| find(&|m| *m == Match::Addr(server.ip())))
            .unwrap_or(OTHER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(specs: &[&str]) -> anyhow::Result<ServiceMap> {
        ServiceMap::parse(&specs.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn most_specific_wins() {
        let m = map(&[
            "any8000=:8000",
            "box=10.0.0.5",
            "exact=10.0.0.5:8000",
            "v6=[fd00::1]:443",
        ])
        .expect("map");
        let sa = |s: &str| s.parse::<SocketAddr>().expect("addr");
        assert_eq!(m.name_for(sa("10.0.0.5:8000")), "exact");
        assert_eq!(m.name_for(sa("10.0.0.6:8000")), "any8000");
        assert_eq!(m.name_for(sa("10.0.0.5:9000")), "box");
        assert_eq!(m.name_for(sa("[fd00::1]:443")), "v6");
        assert_eq!(m.name_for(sa("192.0.2.1:80")), OTHER);
    }

    #[test]
    fn named_ports_are_service_ports() {
        let m = map(&[
            "inference=:8000",
            "exact=10.0.0.5:8443",
            "box=10.0.0.6",
            "again=10.0.0.7:8000",
        ])
        .expect("map");
        assert_eq!(m.ports(), [8000, 8443]);
        assert!(ServiceMap::default().ports().is_empty());
    }

    #[test]
    fn bad_specs_are_clear_errors() {
        for bad in [
            "noequals",
            "=:80",
            "x=:99999",
            "x=not-an-addr",
            "bad name=:80",
            "x=",
        ] {
            assert!(map(&[bad]).is_err(), "{bad}");
        }
    }
}
