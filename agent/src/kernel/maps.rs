//! Typed userspace handles on the kernel program's maps, with per-CPU values summed.

use agent_common::{
    names, service_ports, FlowKey, FlowState, IfaceCounters, IfaceKey, IfaceSlot, KernelCounter,
};
use anyhow::Context as _;
use aya::{
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, PerCpuHashMap, PerCpuValues},
    Ebpf,
};

/// Counter maps, read at scrape time.
pub struct CounterMaps {
    iface: PerCpuHashMap<MapData, IfaceKey, IfaceCounters>,
    iface_slots: PerCpuArray<MapData, IfaceSlot>,
    kernel: PerCpuArray<MapData, u64>,
    proto: PerCpuArray<MapData, IfaceCounters>,
}

/// The flow table and the service-port hints, owned by the sweeper.
pub struct FlowMaps {
    flows: HashMap<MapData, FlowKey, FlowState>,
    service_ports: Array<MapData, u64>,
}

fn take<T>(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<T>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf
        .take_map(name)
        .with_context(|| format!("map {name} missing from the eBPF object"))?;
    T::try_from(map).with_context(|| format!("map {name} has an unexpected type"))
}

pub fn take_all(ebpf: &mut Ebpf) -> anyhow::Result<(CounterMaps, FlowMaps)> {
    Ok((
        CounterMaps {
            iface: take(ebpf, names::MAP_IFACE_COUNTERS)?,
            iface_slots: take(ebpf, names::MAP_IFACE_SLOTS)?,
            kernel: take(ebpf, names::MAP_KERNEL_COUNTERS)?,
            proto: take(ebpf, names::MAP_PROTO_COUNTERS)?,
        },
        FlowMaps {
            flows: take(ebpf, names::MAP_FLOWS)?,
            service_ports: take(ebpf, names::MAP_SERVICE_PORTS)?,
        },
    ))
}

fn sum_iface(values: &PerCpuValues<IfaceCounters>) -> IfaceCounters {
    values
        .iter()
        .fold(IfaceCounters::default(), |acc, v| IfaceCounters {
            packets: acc.packets.wrapping_add(v.packets),
            bytes: acc.bytes.wrapping_add(v.bytes),
        })
}

impl CounterMaps {
    /// Totals per (interface, direction), all CPUs summed.
    pub fn iface_totals(&self) -> anyhow::Result<Vec<(IfaceKey, IfaceCounters)>> {
        let mut totals: std::collections::BTreeMap<(u32, u32), IfaceCounters> = Default::default();
        let mut add = |ifindex: u32, direction: u32, c: IfaceCounters| {
            let t = totals.entry((ifindex, direction)).or_default();
            t.packets = t.packets.wrapping_add(c.packets);
            t.bytes = t.bytes.wrapping_add(c.bytes);
        };
        for item in self.iface.iter() {
            match item {
                Ok((key, values)) => add(key.ifindex, key.direction, sum_iface(&values)),
                // The entry was removed between listing and reading it: nothing to report.
                Err(MapError::KeyNotFound) => continue,
                Err(e) => return Err(e).context("reading IFACE_COUNTERS"),
            }
        }
        // Each CPU's copy of a slot may belong to a different interface.
        for (index, item) in self.iface_slots.iter().enumerate() {
            for slot in item
                .context("reading IFACE_SLOTS")?
                .iter()
                .filter(|s| s.ifindex != 0)
            {
                add(
                    slot.ifindex,
                    index as u32 & 1,
                    IfaceCounters {
                        packets: slot.packets,
                        bytes: slot.bytes,
                    },
                );
            }
        }
        Ok(totals
            .into_iter()
            .map(|((ifindex, direction), c)| (IfaceKey { ifindex, direction }, c))
            .collect())
    }

    /// Forgets an interface that no longer exists, so its ifindex can be reused cleanly.
    pub fn remove_iface(&mut self, ifindex: u32) {
        for direction in agent_common::Direction::ALL {
            let _ = self.iface.remove(&IfaceKey {
                ifindex,
                direction: direction as u32,
            });
        }
    }

    pub fn kernel_counters(&self) -> anyhow::Result<[u64; KernelCounter::COUNT as usize]> {
        let mut out = [0u64; KernelCounter::COUNT as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            let values = self
                .kernel
                .get(&(i as u32), 0)
                .context("reading KERNEL_COUNTERS")?;
            *slot = values.iter().fold(0u64, |a, v| a.wrapping_add(*v));
        }
        Ok(out)
    }

    /// Non-zero per-protocol totals for protocols other than TCP and UDP.
    pub fn proto_counters(&self) -> anyhow::Result<Vec<(u8, IfaceCounters)>> {
        let mut out = Vec::new();
        for (proto, item) in self.proto.iter().enumerate() {
            let total = sum_iface(&item.context("reading PROTO_COUNTERS")?);
            if total.packets != 0 {
                out.push((proto as u8, total));
            }
        }
        Ok(out)
    }
}

impl FlowMaps {
    /// Every flow in the table. Entries deleted while we iterate are skipped.
    pub fn snapshot(&self) -> anyhow::Result<Vec<(FlowKey, FlowState)>> {
        let mut out = Vec::new();
        for item in self.flows.iter() {
            match item {
                Ok(kv) => out.push(kv),
                Err(MapError::KeyNotFound) => continue,
                Err(e) => return Err(e).context("reading FLOWS"),
            }
        }
        Ok(out)
    }

    /// Removes a flow and returns its final state (read just before removal, so the packets
    /// counted between our last read and now are not lost).
    pub fn remove(&mut self, key: &FlowKey) -> Option<FlowState> {
        let last = self.flows.get(key, 0).ok();
        match self.flows.remove(key) {
            Ok(()) => last,
            Err(_) => None,
        }
    }

    pub fn add_service_port(&mut self, port: u16, proto: u8) -> anyhow::Result<()> {
        let (word, mask) = service_ports::bit(proto, port)
            .with_context(|| format!("protocol {proto} has no service ports"))?;
        // Read-modify-write: this agent is the map's only writer.
        let old = self
            .service_ports
            .get(&word, 0)
            .context("reading SERVICE_PORTS")?;
        self.service_ports
            .set(word, old | mask, 0)
            .context("writing SERVICE_PORTS")
    }
}
