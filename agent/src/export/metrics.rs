//! Prometheus metrics. Kernel counters are read at scrape time (per-CPU values summed) and
//! carried into ordinary counters by their increase, so an exported counter never goes
//! backwards even when a kernel entry is reset or removed. Labels are bounded: interface names,
//! directions and fixed reason sets; never an address, port or flow.

use std::{collections::HashMap, time::Instant};

use agent_common::{CounterKind, Direction, KernelCounter};
use prometheus::{
    Encoder as _, Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::{
    export::registry::{counter_vec, histogram, register},
    kernel::{
        maps::CounterMaps,
        sweep::{EvictReason, FlowDirection, SweepOutcome},
    },
};

pub struct Metrics {
    registry: Registry,
    iface_packets: IntCounterVec,
    iface_bytes: IntCounterVec,
    kernel_skipped: IntCounterVec,
    kernel_lost: IntCounterVec,
    kernel_truncated: IntCounterVec,
    flows_created: IntCounter,
    tcp_retransmitted: IntCounter,
    proto_packets: IntCounterVec,
    proto_bytes: IntCounterVec,
    flows_active: IntGauge,
    flows_evicted: IntCounterVec,
    flow_packets: IntCounterVec,
    flow_payload_bytes: IntCounterVec,
    pub attached_interfaces: IntGauge,
    pub attach_errors: IntCounter,
    scrape_duration: Histogram,
    sweep_duration: Histogram,
    /// Last kernel value seen per exported series, to export increases only.
    last: HashMap<SeriesId, u64>,
    lru: LruAccount,
}

/// Counts the flows the kernel's LRU evicted. The sweeper sees only flows that lived across two
/// sweeps; in a flood most flows are created and evicted between two sweeps. The kernel counts
/// every flow it creates, so what left the table without the sweeper removing it is
/// `created − removed by the sweeper − growth of the table`, counted from the first sweep.
#[derive(Default)]
struct LruAccount {
    /// (flows created, flows in the table) at the first sweep, before its removals.
    base: Option<(u64, u64)>,
    removed: u64,
    /// Evictions the sweeper saw itself (a lower bound if the kernel counter is unreadable).
    seen: u64,
}

impl LruAccount {
    /// The all-time eviction count after this sweep.
    fn update(&mut self, outcome: &SweepOutcome, created: Option<u64>) -> u64 {
        let of = |r| outcome.evicted.get(&r).copied().unwrap_or(0);
        let removed_now = of(EvictReason::Idle) + of(EvictReason::Closed);
        self.seen += of(EvictReason::LruEvicted);
        let active = outcome.active as u64;
        let Some(created) = created else {
            self.removed += removed_now;
            return self.seen;
        };
        let (created0, active0) = *self.base.get_or_insert((created, active + removed_now));
        self.removed += removed_now;
        // Flows created after the counter was read but before the snapshot make this low for
        // one sweep (never high), and the caller keeps the exported counter monotonic.
        let derived =
            (created.saturating_sub(created0) + active0).saturating_sub(self.removed + active);
        derived.max(self.seen)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum SeriesId {
    Iface {
        ifindex: u32,
        direction: u32,
        bytes: bool,
    },
    Kernel(u32),
    Proto {
        proto: u8,
        bytes: bool,
    },
    Flow {
        direction: FlowDirection,
        payload: bool,
    },
    LruEvicted,
}

/// Advances `counter` by how much `now` exceeds the last value seen for `id`.
fn advance(last: &mut HashMap<SeriesId, u64>, id: SeriesId, counter: &IntCounter, now: u64) {
    let prev = last.insert(id, now).unwrap_or(0);
    if now > prev {
        counter.inc_by(now - prev);
    }
}

/// Static facts about this agent, exported as siphon_build_info.
pub struct BuildInfo<'a> {
    pub attach_mode: &'a str,
    pub kernel: &'a str,
}

impl Metrics {
    pub fn new(info: &BuildInfo<'_>) -> prometheus::Result<Metrics> {
        let r = Registry::new();
        let build = register(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "siphon_build_info",
                    "Siphon build and runtime facts; always 1.",
                ),
                &["version", "attach_mode", "kernel"],
            )?,
        )?;
        build
            .with_label_values(&[env!("CARGO_PKG_VERSION"), info.attach_mode, info.kernel])
            .set(1);

        let flows_created = register(
            &r,
            IntCounter::new(
                "siphon_flows_created_total",
                "Flows the kernel program added to the flow table.",
            )?,
        )?;
        let flows_active = register(
            &r,
            IntGauge::new(
                "siphon_flows_active",
                "Flows in the kernel flow table at the last sweep.",
            )?,
        )?;
        let attached_interfaces = register(
            &r,
            IntGauge::new(
                "siphon_attached_interfaces",
                "Interfaces Siphon's programs are attached to.",
            )?,
        )?;
        let attach_errors = register(
            &r,
            IntCounter::new(
                "siphon_attach_errors_total",
                "Failed attempts to attach to an interface that appeared after start.",
            )?,
        )?;

        let m = Metrics {
            iface_packets: counter_vec(&r, "siphon_interface_packets_total", "Packets seen by the TC hook, per interface and direction (one per skb: a GSO/GRO skb counts once).", &["interface", "direction"])?,
            iface_bytes: counter_vec(&r, "siphon_interface_bytes_total", "Bytes seen by the TC hook (skb length, link-layer header included), per interface and direction.", &["interface", "direction"])?,
            kernel_skipped: counter_vec(&r, "siphon_kernel_skipped_packets_total", "Packets counted on their interface but not attributed to a flow, by reason.", &["reason"])?,
            kernel_lost: counter_vec(&r, "siphon_kernel_lost_total", "Records the kernel program could not keep (map full, ...), by reason.", &["reason"])?,
            kernel_truncated: counter_vec(
                &r,
                "siphon_kernel_truncated_total",
                "Records the kernel program kept only in part (head longer than the capture length, oversized ClientHello), by what.",
                &["what"],
            )?,
            flows_created,
            tcp_retransmitted: register(&r, IntCounter::new(
                "siphon_tcp_retransmitted_bytes_total",
                "TCP payload bytes seen again (retransmissions): counted on flows and interfaces, left out of exchange sizes.",
            )?)?,
            proto_packets: counter_vec(&r, "siphon_ip_protocol_packets_total", "Packets of IP protocols other than TCP and UDP, by protocol.", &["protocol"])?,
            proto_bytes: counter_vec(&r, "siphon_ip_protocol_bytes_total", "Bytes of IP protocols other than TCP and UDP, by protocol.", &["protocol"])?,
            flows_active,
            flows_evicted: counter_vec(&r, "siphon_flows_evicted_total", "Flows removed from the flow table, by reason (idle, closed, lru).", &["reason"])?,
            flow_packets: counter_vec(&r, "siphon_flow_packets_total", "TCP/UDP packets attributed to flows, by direction relative to the flow's client.", &["direction"])?,
            flow_payload_bytes: counter_vec(&r, "siphon_flow_payload_bytes_total", "TCP/UDP payload bytes attributed to flows, by direction relative to the flow's client.", &["direction"])?,
            attached_interfaces,
            attach_errors,
            scrape_duration: histogram(&r, "siphon_scrape_duration_seconds", "Time to read the kernel maps and encode /metrics.", prometheus::exponential_buckets(0.0001, 4.0, 8)?)?,
            sweep_duration: histogram(&r, "siphon_flow_sweep_duration_seconds", "Time to sweep the flow table.", prometheus::exponential_buckets(0.0001, 4.0, 10)?)?,
            registry: r,
            last: HashMap::new(),
            lru: LruAccount::default(),
        };
        // Create every bounded series up front so dashboards see zeros, not gaps.
        for c in KernelCounter::ALL {
            match c.describe() {
                (CounterKind::Skip, reason) => drop(m.kernel_skipped.with_label_values(&[reason])),
                (CounterKind::Loss, reason) => drop(m.kernel_lost.with_label_values(&[reason])),
                (CounterKind::Truncation, what) => {
                    drop(m.kernel_truncated.with_label_values(&[what]))
                }
                (CounterKind::Event, _) => {}
            }
        }
        for r in EvictReason::ALL {
            drop(m.flows_evicted.with_label_values(&[r.label()]));
        }
        for d in FlowDirection::ALL {
            drop(m.flow_packets.with_label_values(&[d.label()]));
            drop(m.flow_payload_bytes.with_label_values(&[d.label()]));
        }
        Ok(m)
    }

    /// Reads the counter maps into the exported counters.
    pub fn refresh_kernel(
        &mut self,
        maps: &CounterMaps,
        iface_name: &dyn Fn(u32) -> String,
    ) -> anyhow::Result<()> {
        for (key, total) in maps.iface_totals()? {
            let Some(direction) = Direction::from_u32(key.direction) else {
                continue;
            };
            let labels = [iface_name(key.ifindex), direction.label().to_owned()];
            let labels = [labels[0].as_str(), labels[1].as_str()];
            let base = |bytes| SeriesId::Iface {
                ifindex: key.ifindex,
                direction: key.direction,
                bytes,
            };
            advance(
                &mut self.last,
                base(false),
                &self.iface_packets.with_label_values(&labels),
                total.packets,
            );
            advance(
                &mut self.last,
                base(true),
                &self.iface_bytes.with_label_values(&labels),
                total.bytes,
            );
        }
        let kernel = maps.kernel_counters()?;
        for c in KernelCounter::ALL {
            let value = kernel[c as usize];
            let counter = match c.describe() {
                (CounterKind::Skip, reason) => self.kernel_skipped.with_label_values(&[reason]),
                (CounterKind::Loss, reason) => self.kernel_lost.with_label_values(&[reason]),
                (CounterKind::Truncation, what) => self.kernel_truncated.with_label_values(&[what]),
                (CounterKind::Event, "tcp_retransmitted_bytes") => self.tcp_retransmitted.clone(),
                (CounterKind::Event, _) => self.flows_created.clone(),
            };
            advance(&mut self.last, SeriesId::Kernel(c as u32), &counter, value);
        }
        for (proto, total) in maps.proto_counters()? {
            let name = ip_protocol_name(proto);
            advance(
                &mut self.last,
                SeriesId::Proto {
                    proto,
                    bytes: false,
                },
                &self.proto_packets.with_label_values(&[&name]),
                total.packets,
            );
            advance(
                &mut self.last,
                SeriesId::Proto { proto, bytes: true },
                &self.proto_bytes.with_label_values(&[&name]),
                total.bytes,
            );
        }
        Ok(())
    }

    /// Creates an attached interface's series at zero, so dashboards see it before its first
    /// packet (the kernel fills its counters on first use).
    pub fn track_iface(&self, name: &str) {
        for d in Direction::ALL {
            drop(self.iface_packets.with_label_values(&[name, d.label()]));
            drop(self.iface_bytes.with_label_values(&[name, d.label()]));
        }
    }

    /// Drops the series of an interface that no longer exists (so churning pod interfaces do
    /// not pile up series).
    pub fn forget_iface(&mut self, ifindex: u32, name: &str) {
        for d in Direction::ALL {
            let _ = self.iface_packets.remove_label_values(&[name, d.label()]);
            let _ = self.iface_bytes.remove_label_values(&[name, d.label()]);
            for bytes in [false, true] {
                self.last.remove(&SeriesId::Iface {
                    ifindex,
                    direction: d as u32,
                    bytes,
                });
            }
        }
    }

    /// `created`: the kernel's flows-created counter, read before the sweep's snapshot (none
    /// if it could not be read).
    pub fn record_sweep(
        &mut self,
        outcome: &SweepOutcome,
        took: std::time::Duration,
        created: Option<u64>,
    ) {
        self.sweep_duration.observe(took.as_secs_f64());
        self.flows_active.set(outcome.active as i64);
        for (reason, n) in &outcome.evicted {
            if *reason != EvictReason::LruEvicted {
                self.flows_evicted
                    .with_label_values(&[reason.label()])
                    .inc_by(*n);
            }
        }
        let lru = self.lru.update(outcome, created);
        advance(
            &mut self.last,
            SeriesId::LruEvicted,
            &self
                .flows_evicted
                .with_label_values(&[EvictReason::LruEvicted.label()]),
            lru,
        );
        for d in FlowDirection::ALL {
            let t = outcome.totals.get(d);
            advance(
                &mut self.last,
                SeriesId::Flow {
                    direction: d,
                    payload: false,
                },
                &self.flow_packets.with_label_values(&[d.label()]),
                t.packets,
            );
            advance(
                &mut self.last,
                SeriesId::Flow {
                    direction: d,
                    payload: true,
                },
                &self.flow_payload_bytes.with_label_values(&[d.label()]),
                t.payload_bytes,
            );
        }
    }

    /// Starts the LRU account from the table as loaded (pinned maps bring a previous agent's
    /// flows and count), before anything is attached, so a flood right after start is counted.
    pub fn baseline_lru(&mut self, created: u64, active: u64) {
        self.lru.base = Some((created, active));
    }

    /// The registry, for other metric groups (capacity) to register into.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Prometheus text exposition of everything registered.
    pub fn encode(&self, started: Instant) -> anyhow::Result<String> {
        // Observed before encoding so a scrape reports its own cost (minus the encoding).
        self.scrape_duration
            .observe(started.elapsed().as_secs_f64());
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        Ok(String::from_utf8(buf)?)
    }
}

/// Bounded label for an IP protocol number: the IANA keyword for common ones, else the number.
pub fn ip_protocol_name(proto: u8) -> String {
    match proto {
        1 => "icmp".into(),
        2 => "igmp".into(),
        4 => "ipip".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        41 => "ipv6".into(),
        47 => "gre".into(),
        50 => "esp".into(),
        51 => "ah".into(),
        58 => "icmpv6".into(),
        89 => "ospf".into(),
        103 => "pim".into(),
        112 => "vrrp".into(),
        132 => "sctp".into(),
        n => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_never_goes_backwards() {
        let c = IntCounter::new("t", "t").expect("counter");
        let mut last = HashMap::new();
        let id = || SeriesId::Kernel(0);
        advance(&mut last, id(), &c, 10);
        advance(&mut last, id(), &c, 15);
        assert_eq!(c.get(), 15);
        // The kernel entry was reset (e.g. recreated): keep what we had, count growth after it.
        advance(&mut last, id(), &c, 3);
        assert_eq!(c.get(), 15);
        advance(&mut last, id(), &c, 5);
        assert_eq!(c.get(), 17);
    }

    #[test]
    fn lru_evictions_between_sweeps_are_counted() {
        let sweep = |active: usize, idle: u64, lru_seen: u64| {
            let mut o = SweepOutcome {
                active,
                ..Default::default()
            };
            o.evicted.insert(EvictReason::Idle, idle);
            o.evicted.insert(EvictReason::LruEvicted, lru_seen);
            o
        };
        let mut a = LruAccount::default();
        // First sweep: 100 flows existed since before the agent; 10 expired.
        assert_eq!(a.update(&sweep(90, 10, 0), Some(500)), 0);
        // 5000 flows created through a 1024-entry table; the sweeper expired 20 and noticed 7.
        assert_eq!(
            a.update(&sweep(1024, 20, 7), Some(5500)),
            5000 + 90 - 20 - 1024
        );
        // No kernel counter: what the sweeper saw.
        let mut b = LruAccount::default();
        assert_eq!(b.update(&sweep(10, 0, 3), None), 3);
    }

    #[test]
    fn protocol_labels_are_bounded() {
        let names: std::collections::HashSet<String> = (0..=255u8).map(ip_protocol_name).collect();
        assert_eq!(names.len(), 256);
        assert_eq!(ip_protocol_name(58), "icmpv6");
    }

    #[test]
    fn every_bounded_series_exists_from_the_start() {
        let m = Metrics::new(&BuildInfo {
            attach_mode: "tcx",
            kernel: "6.18",
        })
        .expect("metrics");
        let text = m.encode(Instant::now()).expect("encode");
        for needle in [
            "siphon_kernel_skipped_packets_total{reason=\"not_ip\"} 0",
            "siphon_kernel_lost_total{reason=\"flow_map_insert\"} 0",
            "siphon_flows_evicted_total{reason=\"lru\"} 0",
            "siphon_flow_payload_bytes_total{direction=\"to_server\"} 0",
            "siphon_build_info{attach_mode=\"tcx\"",
        ] {
            assert!(text.contains(needle), "missing {needle}\n{text}");
        }
    }
}
