//! The kernel program under BPF_PROG_TEST_RUN: a harness that runs crafted frames through it
//! and reports what each changed (counters, flows, ring-buffer records), and frame builders.

use std::collections::HashMap;

use agent_common::{names, payload_what, FlowKey, FlowState, IfaceCounters, KernelCounter, Side};
use aya::{
    maps::{MapData, RingBuf},
    programs::{SchedClassifier, TestRun as _, TestRunOptions},
    Ebpf,
};
use etherparse::PacketBuilder;
use siphon_agent::kernel::{
    maps::{self, CounterMaps, FlowMaps},
    object::{self, LoadOptions},
};

/// TC_ACT_UNSPEC (-1) as the u32 the kernel reports: "continue as if no program ran".
pub const PASS: u32 = u32::MAX;

pub struct Harness {
    pub ebpf: Ebpf,
    pub counters: CounterMaps,
    pub flows: FlowMaps,
    pub events: RingBuf<MapData>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    pub kernel: Vec<u64>,
    pub iface: HashMap<(u32, u32), IfaceCounters>,
    pub protos: HashMap<u8, IfaceCounters>,
    pub flows: HashMap<FlowKey, FlowState>,
}

impl Harness {
    pub fn new() -> Harness {
        let mut ebpf =
            object::load(LoadOptions::for_tests()).expect("load eBPF object (are you root?)");
        let (counters, flows) = maps::take_all(&mut ebpf).expect("maps");
        let events = ebpf.take_map(names::MAP_EVENTS).expect("EVENTS map");
        let events = RingBuf::try_from(events).expect("EVENTS is a ring buffer");
        Harness {
            ebpf,
            counters,
            flows,
            events,
        }
    }

    /// The turn offsets of the response heads captured since the last call (other records
    /// are read and dropped).
    pub fn response_head_offsets(&mut self) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some(record) = self.events.next() {
            if let Ok(siphon_agent::pipeline::records::Event::Payload(p)) =
                siphon_agent::pipeline::records::parse(&record)
            {
                if p.what == payload_what::RESPONSE_HEAD {
                    out.push(p.turn_offset);
                }
            }
        }
        out
    }

    pub fn run(&mut self, prog: &str, frame: &[u8]) -> u32 {
        let p: &mut SchedClassifier = self
            .ebpf
            .program_mut(prog)
            .expect("prog")
            .try_into()
            .expect("classifier");
        let opts = TestRunOptions {
            data_in: Some(frame),
            ..TestRunOptions::new()
        };
        p.test_run(opts).expect("BPF_PROG_TEST_RUN").return_value
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            kernel: self
                .counters
                .kernel_counters()
                .expect("kernel counters")
                .to_vec(),
            iface: self
                .counters
                .iface_totals()
                .expect("iface")
                .into_iter()
                .map(|(k, v)| ((k.ifindex, k.direction), v))
                .collect(),
            protos: self
                .counters
                .proto_counters()
                .expect("protos")
                .into_iter()
                .collect(),
            flows: self.flows.snapshot().expect("flows").into_iter().collect(),
        }
    }

    /// Runs one frame through the ingress program and returns what changed.
    pub fn delta(&mut self, frame: &[u8]) -> Delta {
        let before = self.snapshot();
        assert_eq!(
            self.run(names::PROG_INGRESS, frame),
            PASS,
            "program must always pass"
        );
        Delta {
            before,
            after: self.snapshot(),
        }
    }
}

pub struct Delta {
    pub before: Snapshot,
    pub after: Snapshot,
}

impl Delta {
    /// Kernel counters that changed, with their increase.
    pub fn kernel(&self) -> Vec<(KernelCounter, u64)> {
        KernelCounter::ALL
            .iter()
            .filter_map(|c| {
                let d = self.after.kernel[*c as usize] - self.before.kernel[*c as usize];
                (d != 0).then_some((*c, d))
            })
            .collect()
    }

    pub fn iface_total(s: &Snapshot) -> IfaceCounters {
        s.iface
            .values()
            .fold(IfaceCounters::default(), |a, v| IfaceCounters {
                packets: a.packets + v.packets,
                bytes: a.bytes + v.bytes,
            })
    }

    pub fn iface(&self) -> IfaceCounters {
        let (a, b) = (
            Self::iface_total(&self.after),
            Self::iface_total(&self.before),
        );
        IfaceCounters {
            packets: a.packets - b.packets,
            bytes: a.bytes - b.bytes,
        }
    }

    /// Flows whose state changed or appeared.
    pub fn changed_flows(&self) -> Vec<(FlowKey, FlowState, Option<FlowState>)> {
        self.after
            .flows
            .iter()
            .filter(|(k, v)| self.before.flows.get(k) != Some(v))
            .map(|(k, v)| (*k, *v, self.before.flows.get(k).copied()))
            .collect()
    }
}

pub const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
pub const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];

pub fn tcp4(payload: &[u8], sport: u16, dport: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(sport, dport, 1, 64240)
        .ack(1)
        .psh();
    let mut v = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut v, payload).expect("write");
    v
}

pub fn tcp6(payload: &[u8]) -> Vec<u8> {
    let src = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let dst = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv6(src, dst, 64)
        .tcp(40000, 443, 1, 64240)
        .ack(1);
    let mut v = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut v, payload).expect("write");
    v
}

pub fn udp4(payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4([10, 0, 0, 1], [10, 0, 0, 3], 64)
        .udp(5353, 53);
    let mut v = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut v, payload).expect("write");
    v
}

/// Inserts `ext` (already encoded extension headers) after the IPv6 header at `l3` and fixes the
/// chain: the IPv6 header's next header becomes `first`, payload length grows.
pub fn with_ipv6_ext(mut frame: Vec<u8>, l3: usize, first: u8, ext: &[u8]) -> Vec<u8> {
    let payload_len = u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]) + ext.len() as u16;
    frame[l3 + 4..l3 + 6].copy_from_slice(&payload_len.to_be_bytes());
    frame[l3 + 6] = first;
    frame.splice(l3 + 40..l3 + 40, ext.iter().copied());
    frame
}

/// One payload byte per sequence element, so sizes are obvious.
pub fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| i as u8).collect()
}

pub fn sorted_ports(k: &FlowKey) -> (u16, u16) {
    (k.port_a.min(k.port_b), k.port_a.max(k.port_b))
}

pub fn only_flow(d: &Delta) -> (FlowKey, FlowState, Option<FlowState>) {
    let changed = d.changed_flows();
    assert_eq!(
        changed.len(),
        1,
        "exactly one flow should change: {changed:?}"
    );
    changed[0]
}

pub fn side_counters(key: &FlowKey, st: &FlowState, src_port: u16) -> agent_common::DirCounters {
    let side = if key.port_a == src_port {
        Side::A
    } else {
        Side::B
    };
    st.dir[side as usize]
}
