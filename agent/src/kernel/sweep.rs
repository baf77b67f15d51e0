//! The flow sweeper: expires idle and closed flows, notices flows the kernel's LRU evicted, and
//! keeps totals so exported flow counters never go backwards when flows disappear.

use std::{collections::HashMap, time::Duration};

use agent_common::{
    addr_to_ip, client, ns_to_secs, tcp_flag, Addr, DirCounters, FlowKey, FlowState, Side,
};
use serde::Serialize;

use crate::kernel::maps::FlowMaps;

#[derive(Clone, Copy, Debug)]
pub struct ExpiryConfig {
    pub idle: Duration,
    pub closed: Duration,
    /// An open exchange whose last byte is older than this is reported from the flow table.
    pub exchange_idle: Duration,
}

/// Why a flow left the table. Bounded label values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EvictReason {
    /// No packet for the idle timeout.
    Idle,
    /// TCP FIN both ways or RST, then quiet for the closed timeout.
    Closed,
    /// Disappeared from the kernel table without us removing it: the LRU made room for a new
    /// flow. Packets it took since the previous sweep are not in the totals.
    LruEvicted,
}

impl EvictReason {
    pub const ALL: [EvictReason; 3] = [
        EvictReason::Idle,
        EvictReason::Closed,
        EvictReason::LruEvicted,
    ];

    pub fn label(self) -> &'static str {
        match self {
            EvictReason::Idle => "idle",
            EvictReason::Closed => "closed",
            EvictReason::LruEvicted => "lru",
        }
    }
}

/// Which way traffic went relative to who opened the flow. Bounded label values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowDirection {
    ToServer,
    ToClient,
    /// Client side unknown (no SYN seen, equal ports, no service-port hint).
    Unknown,
}

impl FlowDirection {
    pub const ALL: [FlowDirection; 3] = [
        FlowDirection::ToServer,
        FlowDirection::ToClient,
        FlowDirection::Unknown,
    ];

    pub fn label(self) -> &'static str {
        match self {
            FlowDirection::ToServer => "to_server",
            FlowDirection::ToClient => "to_client",
            FlowDirection::Unknown => "unknown",
        }
    }
}

/// Totals per [`FlowDirection`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirectionTotals(pub [DirCounters; 3]);

impl DirectionTotals {
    fn add(&mut self, state: &FlowState) {
        for side in [Side::A, Side::B] {
            let d = &mut self.0[direction_of(state.client, side) as usize];
            let s = &state.dir[side as usize];
            d.packets = d.packets.wrapping_add(s.packets);
            d.bytes = d.bytes.wrapping_add(s.bytes);
            d.payload_bytes = d.payload_bytes.wrapping_add(s.payload_bytes);
        }
    }

    pub fn get(&self, dir: FlowDirection) -> DirCounters {
        self.0[dir as usize]
    }
}

fn direction_of(client_side: u8, from: Side) -> FlowDirection {
    match (client_side, from) {
        (client::A, Side::A) | (client::B, Side::B) => FlowDirection::ToServer,
        (client::A, Side::B) | (client::B, Side::A) => FlowDirection::ToClient,
        _ => FlowDirection::Unknown,
    }
}

/// Whether a flow should leave the table now, and why.
pub fn expiry(state: &FlowState, now_ns: u64, cfg: &ExpiryConfig) -> Option<EvictReason> {
    let quiet = Duration::from_nanos(now_ns.saturating_sub(state.last_seen_ns));
    let flags = state.tcp_flags_from(Side::A) | state.tcp_flags_from(Side::B);
    let fin_both = state.tcp_flags_from(Side::A) & tcp_flag::FIN != 0
        && state.tcp_flags_from(Side::B) & tcp_flag::FIN != 0;
    let closed = fin_both || flags & tcp_flag::RST != 0;
    if closed && quiet >= cfg.closed {
        Some(EvictReason::Closed)
    } else if quiet >= cfg.idle {
        Some(EvictReason::Idle)
    } else {
        None
    }
}

/// What one sweep found.
#[derive(Debug, Default)]
pub struct SweepOutcome {
    pub evicted: HashMap<EvictReason, u64>,
    pub active: usize,
    /// All-time totals: flows gone plus flows active now.
    pub totals: DirectionTotals,
    pub flows: Vec<FlowView>,
    /// Flows removed this sweep (expired or evicted), with their last state: their open
    /// exchange, if any, is reported from it.
    pub ended: Vec<(FlowKey, FlowState)>,
    /// Active flows whose open exchange has been quiet past the exchange idle timeout.
    pub idle_exchanges: Vec<(FlowKey, FlowState)>,
}

/// Remembers the last state of every flow between sweeps.
#[derive(Default)]
pub struct FlowTracker {
    known: HashMap<FlowKey, FlowState>,
    gone: DirectionTotals,
    /// Exchange already reported as idle, per flow, so it is reported once.
    idle_reported: HashMap<FlowKey, u32>,
}

impl FlowTracker {
    pub fn sweep(
        &mut self,
        maps: &mut FlowMaps,
        now_ns: u64,
        cfg: &ExpiryConfig,
    ) -> anyhow::Result<SweepOutcome> {
        let current = maps.snapshot()?;
        let mut out = SweepOutcome::default();
        let mut still: HashMap<FlowKey, FlowState> = HashMap::with_capacity(current.len());
        let mut removed = std::collections::HashSet::new();
        for (key, state) in current {
            // Same key, different birth: the LRU evicted the old flow and the tuple came back.
            if let Some(old) = self
                .known
                .get(&key)
                .filter(|o| o.first_seen_ns != state.first_seen_ns)
            {
                self.gone.add(old);
                *out.evicted.entry(EvictReason::LruEvicted).or_default() += 1;
            }
            if let Some(reason) = expiry(&state, now_ns, cfg) {
                let last = maps.remove(&key).unwrap_or(state);
                self.gone.add(&last);
                removed.insert(key);
                out.ended.push((key, last));
                *out.evicted.entry(reason).or_default() += 1;
            } else {
                still.insert(key, state);
            }
        }
        // Known last time, absent now, and not removed by us: the kernel's LRU evicted it.
        for (key, last) in &self.known {
            if !still.contains_key(key) && !removed.contains(key) {
                self.gone.add(last);
                out.ended.push((*key, *last));
                *out.evicted.entry(EvictReason::LruEvicted).or_default() += 1;
            }
        }
        out.totals = self.gone;
        for state in still.values() {
            out.totals.add(state);
        }
        out.active = still.len();
        for (key, st) in &still {
            let ex = &st.exchange;
            let last = ex.resp_last_ns.max(ex.req_last_ns);
            let quiet = Duration::from_nanos(now_ns.saturating_sub(last));
            if ex.phase == agent_common::phase::RESPONSE
                && quiet >= cfg.exchange_idle
                && self.idle_reported.get(key) != Some(&ex.seq)
            {
                self.idle_reported.insert(*key, ex.seq);
                out.idle_exchanges.push((*key, *st));
            }
        }
        self.idle_reported.retain(|k, _| still.contains_key(k));
        out.flows = still
            .iter()
            .map(|(k, s)| FlowView::new(k, s, now_ns))
            .collect();
        self.known = still;
        Ok(out)
    }
}

/// A flow as shown on /flows.
#[derive(Clone, Debug, Serialize)]
pub struct FlowView {
    pub ifindex: u32,
    pub protocol: u8,
    /// "ip:port" of the side that opened the flow, or of endpoint A when unknown.
    pub client: String,
    pub server: String,
    pub client_known: bool,
    pub to_server: Counts,
    pub to_client: Counts,
    pub age_seconds: f64,
    pub idle_seconds: f64,
    pub tcp_flags_client: u8,
    pub tcp_flags_server: u8,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Counts {
    pub packets: u64,
    pub bytes: u64,
    pub payload_bytes: u64,
}

impl From<DirCounters> for Counts {
    fn from(d: DirCounters) -> Self {
        Counts {
            packets: d.packets,
            bytes: d.bytes,
            payload_bytes: d.payload_bytes,
        }
    }
}

impl FlowView {
    fn new(key: &FlowKey, st: &FlowState, now_ns: u64) -> FlowView {
        let (c, s) = if st.client == client::B {
            (Side::B, Side::A)
        } else {
            (Side::A, Side::B)
        };
        let endpoint = |side: Side| match side {
            Side::A => socket_string(&key.addr_a, key.port_a),
            Side::B => socket_string(&key.addr_b, key.port_b),
        };
        FlowView {
            ifindex: key.ifindex,
            protocol: key.proto,
            client: endpoint(c),
            server: endpoint(s),
            client_known: st.client != client::UNKNOWN,
            to_server: st.dir[c as usize].into(),
            to_client: st.dir[s as usize].into(),
            age_seconds: ns_to_secs(now_ns.saturating_sub(st.first_seen_ns)),
            idle_seconds: ns_to_secs(now_ns.saturating_sub(st.last_seen_ns)),
            tcp_flags_client: st.tcp_flags_from(c),
            tcp_flags_server: st.tcp_flags_from(s),
        }
    }
}

fn socket_string(a: &Addr, port: u16) -> String {
    std::net::SocketAddr::new(addr_to_ip(a), port).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: ExpiryConfig = ExpiryConfig {
        idle: Duration::from_secs(120),
        closed: Duration::from_secs(10),
        exchange_idle: Duration::from_secs(10),
    };
    const S: u64 = 1_000_000_000;

    fn state(last_seen_s: u64, flags_a: u8, flags_b: u8) -> FlowState {
        FlowState {
            last_seen_ns: last_seen_s * S,
            tcp_flags: flags_a as u64 | (flags_b as u64) << 8,
            ..Default::default()
        }
    }

    #[test]
    fn expiry_table() {
        use tcp_flag::*;
        let cases = [
            // (last seen, flags A, flags B, now, expected)
            (100, ACK, ACK, 150, None),
            (100, ACK, ACK, 220, Some(EvictReason::Idle)),
            (100, FIN | ACK, ACK, 115, None), // half-closed: still open
            (100, FIN | ACK, FIN | ACK, 109, None),
            (100, FIN | ACK, FIN | ACK, 110, Some(EvictReason::Closed)),
            (100, RST, 0, 111, Some(EvictReason::Closed)),
            (100, 0, 0, 50, None), // clock before last seen: never expire
        ];
        for (last, fa, fb, now, want) in cases {
            assert_eq!(
                expiry(&state(last, fa, fb), now * S, &CFG),
                want,
                "{last} {fa:#x} {fb:#x} {now}"
            );
        }
    }

    #[test]
    fn totals_split_by_client_side() {
        let mut st = FlowState::default();
        st.dir[Side::A as usize] = DirCounters {
            packets: 3,
            bytes: 300,
            payload_bytes: 100,
        };
        st.dir[Side::B as usize] = DirCounters {
            packets: 5,
            bytes: 5000,
            payload_bytes: 4000,
        };
        st.client = client::B;
        let mut t = DirectionTotals::default();
        t.add(&st);
        assert_eq!(t.get(FlowDirection::ToServer).payload_bytes, 4000);
        assert_eq!(t.get(FlowDirection::ToClient).payload_bytes, 100);
        st.client = client::UNKNOWN;
        let mut u = DirectionTotals::default();
        u.add(&st);
        assert_eq!(u.get(FlowDirection::Unknown).packets, 8);
    }
}
