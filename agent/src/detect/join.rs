//! Joins an HTTP exchange seen behind a TLS-terminating ingress (keys, User-Agent, the
//! forwarded client address) with the same request's TLS/TCP exchange seen at the ingress
//! (JA4, JA4T, handshake round trips): same client address, nearest request start within a
//! tolerance. Observations wait `delay` of record time so that the other node's record, written
//! at about the same moment, has arrived.
//!
//! Once any HTTP exchange has been seen, encrypted exchanges only lend their fingerprints:
//! counting them as requests too would count every request twice in a merged cluster log.
//! Where no HTTP is seen (an ingress node on its own) they are the requests.

use std::{
    collections::{hash_map::Entry, HashMap, VecDeque},
    net::IpAddr,
};

use super::input::{Observation, Transport};

/// Encrypted exchanges remembered per client address, and addresses at most: bounds memory
/// under a flood of new clients.
const PER_ADDRESS: usize = 16;
const MAX_ADDRESSES: usize = 16_384;
/// Pending observations at most (a record with a wild clock must not stall the queue).
const MAX_PENDING: usize = 50_000;

struct Seen {
    start_ns: u64,
    transport: Transport,
    used: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JoinStats {
    /// HTTP exchanges that got their client's TLS/TCP fingerprints from another record.
    pub joined: u64,
    /// Encrypted exchanges used only as fingerprint sources.
    pub fingerprint_only: u64,
    /// HTTP exchanges seen at a second hook (the same exchange on the wire), dropped.
    pub duplicates: u64,
}

/// The identity of one exchange on the wire: the same TCP connection's exchange seen at two
/// hooks (a proxy's egress and the server's ingress) has the same endpoints and number. Held
/// as words hashed in one write: a tuple of socket addresses costs a dozen calls into the
/// keyed hash, for every exchange, twice.
#[derive(Clone, Copy, PartialEq, Eq)]
struct WireId([u32; 10]);

impl WireId {
    fn of(obs: &Observation) -> WireId {
        let [p0, p1, p2, p3] = agent_common::ip_to_addr(obs.peer.ip());
        let [s0, s1, s2, s3] = agent_common::ip_to_addr(obs.server.ip());
        let ports = u32::from(obs.peer.port()) << 16 | u32::from(obs.server.port());
        WireId([p0, p1, p2, p3, s0, s1, s2, s3, ports, obs.seq])
    }
}

impl std::hash::Hash for WireId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // `hash_slice` of integers is one `write` of their bytes.
        u32::hash_slice(&self.0, state);
    }
}

pub struct Joiner {
    delay_ns: u64,
    tolerance_ns: u64,
    /// Observations waiting, with a serial number and whether a better copy replaced them.
    pending: VecDeque<(u64, Observation, bool)>,
    next_serial: u64,
    /// HTTP exchanges pending, by wire identity: (start, serial, client resolved).
    http_seen: HashMap<WireId, (u64, u64, bool)>,
    by_address: HashMap<IpAddr, VecDeque<Seen>>,
    seen_http: bool,
    pub stats: JoinStats,
}

impl Joiner {
    pub fn new(delay_s: f64, tolerance_s: f64) -> Joiner {
        Joiner {
            delay_ns: (delay_s * 1e9) as u64,
            tolerance_ns: (tolerance_s * 1e9) as u64,
            pending: VecDeque::new(),
            next_serial: 0,
            http_seen: HashMap::new(),
            by_address: HashMap::new(),
            seen_http: false,
            stats: JoinStats::default(),
        }
    }

    pub fn push(&mut self, obs: Observation) {
        let serial = self.next_serial;
        self.next_serial += 1;
        if let Some(h) = &obs.http {
            self.seen_http = true;
            // Resolved: the client is known through trusted forwarding, not just the peer.
            let resolved = h.client_ip != obs.peer.ip();
            match self.http_seen.entry(WireId::of(&obs)) {
                Entry::Occupied(mut e) => {
                    let (start, other, other_resolved) = *e.get();
                    if start.abs_diff(obs.start_ns) <= self.tolerance_ns {
                        self.stats.duplicates += 1;
                        if resolved && !other_resolved {
                            // The new copy knows the client: it replaces the old one.
                            e.insert((obs.start_ns, serial, resolved));
                            self.drop_serial(other);
                        } else {
                            return;
                        }
                    }
                }
                Entry::Vacant(e) => {
                    e.insert((obs.start_ns, serial, resolved));
                }
            }
        } else if obs.transport.ja4.is_some() || obs.transport.tcp_rtt_seconds.is_some() {
            self.remember(&obs);
        }
        self.pending.push_back((serial, obs, false));
    }

    fn drop_serial(&mut self, serial: u64) {
        let Some(&(front, _, _)) = self.pending.front() else {
            return;
        };
        if let Some(e) = serial
            .checked_sub(front)
            .and_then(|i| self.pending.get_mut(i as usize))
        {
            if e.0 == serial {
                e.2 = true;
            }
        }
    }

    fn remember(&mut self, obs: &Observation) {
        let ip = obs.peer.ip();
        if !self.by_address.contains_key(&ip) && self.by_address.len() >= MAX_ADDRESSES {
            // Forget the address whose newest record is oldest.
            if let Some(oldest) = self
                .by_address
                .iter()
                .min_by_key(|(_, q)| q.back().map_or(0, |s| s.start_ns))
                .map(|(k, _)| *k)
            {
                self.by_address.remove(&oldest);
            }
        }
        let q = self.by_address.entry(ip).or_default();
        if q.len() >= PER_ADDRESS {
            q.pop_front();
        }
        q.push_back(Seen {
            start_ns: obs.start_ns,
            transport: obs.transport.clone(),
            used: false,
        });
    }

    /// The next observation ready at `clock_ns` (all of them when `drain`), joined; `None`
    /// when nothing is ready. Encrypted exchanges that only lend fingerprints are consumed
    /// here and not returned.
    pub fn pop(&mut self, clock_ns: u64, drain: bool) -> Option<Observation> {
        loop {
            let (_, front, _) = self.pending.front()?;
            let ready = drain
                || self.pending.len() > MAX_PENDING
                || front.end_ns.saturating_add(self.delay_ns) <= clock_ns;
            if !ready {
                return None;
            }
            let (serial, mut obs, dropped) = self.pending.pop_front()?;
            if obs.http.is_some() {
                // One lookup (the key is hashed once), not a get and a remove.
                if let Entry::Occupied(e) = self.http_seen.entry(WireId::of(&obs)) {
                    if e.get().1 == serial {
                        e.remove();
                    }
                }
            }
            if dropped {
                continue;
            }
            if obs.http.is_none() {
                if self.seen_http {
                    self.stats.fingerprint_only += 1;
                    continue;
                }
                return Some(obs);
            }
            if !obs.peer_is_client() {
                if let Some(t) = self.take_match(obs.client_ip(), obs.start_ns) {
                    obs.transport = t;
                    self.stats.joined += 1;
                } else {
                    // The proxy's connection says nothing about the client.
                    obs.transport = Transport::default();
                }
            }
            self.expire(clock_ns);
            return Some(obs);
        }
    }

    fn take_match(&mut self, ip: IpAddr, start_ns: u64) -> Option<Transport> {
        let q = self.by_address.get_mut(&ip)?;
        let best = q
            .iter_mut()
            .filter(|s| !s.used && s.start_ns.abs_diff(start_ns) <= self.tolerance_ns)
            .min_by_key(|s| s.start_ns.abs_diff(start_ns))?;
        best.used = true;
        Some(best.transport.clone())
    }

    fn expire(&mut self, clock_ns: u64) {
        let horizon =
            clock_ns.saturating_sub(2 * self.delay_ns + self.tolerance_ns + 30_000_000_000);
        if self.by_address.len() > 1024 {
            self.by_address
                .retain(|_, q| q.back().is_some_and(|s| s.start_ns >= horizon));
        }
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::input::HttpObs;

    const MS: u64 = 1_000_000;

    fn ingress(peer: &str, start_ms: u64, ja4: &str, tls_rtt: f64) -> Observation {
        Observation {
            start_ns: start_ms * MS,
            end_ns: (start_ms + 100) * MS,
            peer: peer.parse().unwrap(),
            server: "10.0.0.2:443".parse().unwrap(),
            seq: 3,
            request_bytes: 500,
            response_bytes: 5000,
            streamed_chunks: 3,
            http: None,
            transport: Transport {
                ja4: Some(ja4.into()),
                ja4t: Some("64240_2-4-8-1-3_1460_7".into()),
                tcp_rtt_seconds: Some(0.001),
                tls_rtt_seconds: Some(tls_rtt),
            },
        }
    }

    fn behind_proxy(client: &str, start_ms: u64) -> Observation {
        Observation {
            peer: "10.0.0.2:50000".parse().unwrap(),
            server: "10.0.0.3:8000".parse().unwrap(),
            http: Some(HttpObs {
                api_key_hash: Some("k".into()),
                api_key_hash_prev: None,
                client_ip: client.parse().unwrap(),
                claimed_origins: 0,
                status: Some(200),
                event_stream: false,
                user_agent_family: "curl".into(),
            }),
            transport: Transport {
                ja4t: Some("the-proxys-own".into()),
                ..Transport::default()
            },
            ..ingress("10.0.0.9:1", start_ms, "x", 0.0)
        }
    }

    #[test]
    fn http_behind_the_ingress_gets_its_clients_fingerprints() {
        let mut j = Joiner::new(2.0, 0.5);
        // Two clients behind one NAT address with different stacks, requests 300 ms apart.
        j.push(ingress("192.0.2.7:40000", 1000, "ja4-a", 0.2));
        j.push(ingress("192.0.2.7:40001", 1300, "ja4-b", 0.01));
        // Three requests on three connections of the proxy.
        for (n, (client, at)) in [
            ("192.0.2.7", 1302),
            ("192.0.2.7", 1003),
            ("192.0.2.8", 1003),
        ]
        .into_iter()
        .enumerate()
        {
            let mut o = behind_proxy(client, at);
            o.peer.set_port(50000 + n as u16);
            j.push(o);
        }
        assert!(j.pop(1500 * MS, false).is_none(), "waits for the delay");
        let out: Vec<_> = std::iter::from_fn(|| j.pop(10_000 * MS, false)).collect();
        assert_eq!(out.len(), 3, "encrypted records only lend fingerprints");
        assert_eq!(out[0].transport.ja4.as_deref(), Some("ja4-b"));
        assert_eq!(out[1].transport.ja4.as_deref(), Some("ja4-a"));
        assert_eq!(out[1].transport.tls_rtt_seconds, Some(0.2));
        // No ingress record for this address: the proxy's own TCP fingerprint is dropped.
        assert_eq!(out[2].transport, Transport::default());
        assert_eq!(j.stats.joined, 2);
        assert_eq!(j.stats.fingerprint_only, 2);
    }

    #[test]
    fn one_exchange_seen_at_two_hooks_counts_once_with_the_resolved_client() {
        let mut j = Joiner::new(1.0, 0.5);
        // The proxy's egress: its agent trusts no hop, so the client is the proxy itself.
        let mut at_proxy = behind_proxy("10.0.0.2", 1000);
        at_proxy.peer = "10.0.0.2:50000".parse().unwrap();
        // The server's ingress: the client from X-Forwarded-For, 1 ms later.
        let at_server = behind_proxy("192.0.2.7", 1001);
        j.push(at_proxy);
        j.push(at_server);
        let out: Vec<_> = std::iter::from_fn(|| j.pop(u64::MAX, true)).collect();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].client_ip().to_string(), "192.0.2.7");
        assert_eq!(j.stats.duplicates, 1);
        // The next exchange on the connection is another request.
        let mut next = behind_proxy("192.0.2.7", 5000);
        next.seq = 2;
        j.push(next);
        assert_eq!(std::iter::from_fn(|| j.pop(u64::MAX, true)).count(), 1);
    }

    #[test]
    fn without_http_encrypted_exchanges_are_the_requests() {
        let mut j = Joiner::new(0.0, 0.5);
        j.push(ingress("192.0.2.7:40000", 1000, "ja4-a", 0.2));
        let o = j.pop(u64::MAX, false).unwrap();
        assert_eq!(o.transport.ja4.as_deref(), Some("ja4-a"));
    }

    #[test]
    fn out_of_tolerance_is_not_joined() {
        let mut j = Joiner::new(0.0, 0.5);
        j.push(ingress("192.0.2.7:40000", 1000, "ja4-a", 0.2));
        j.push(behind_proxy("192.0.2.7", 2000));
        let out: Vec<_> = std::iter::from_fn(|| j.pop(u64::MAX, true)).collect();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].transport.ja4, None);
    }
}
