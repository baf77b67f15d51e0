//! Per-CPU counters: interface totals, IP protocols, and every skip or loss of the kernel path.

/// Traffic direction as seen by the interface's TC hook.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Ingress = 0,
    Egress = 1,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::Ingress, Direction::Egress];

    pub const fn label(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }

    pub const fn from_u32(v: u32) -> Option<Direction> {
        match v {
            0 => Some(Direction::Ingress),
            1 => Some(Direction::Egress),
            _ => None,
        }
    }
}

/// Key of the per-interface counters map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct IfaceKey {
    pub ifindex: u32,
    /// A [`Direction`] as u32.
    pub direction: u32,
}

/// Fast-path interface counters: a per-CPU array slot per (ifindex mod [`IFACE_SLOTS`],
/// direction). A slot belongs to the first interface that uses it on that CPU; an interface
/// whose slot is taken falls back to the per-CPU hash. Array lookups are inlined by the
/// verifier; a hash lookup costs a helper call and a hash.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct IfaceSlot {
    /// Owner of the slot on this CPU; 0 = free.
    pub ifindex: u32,
    pub _pad: u32,
    pub packets: u64,
    pub bytes: u64,
}

/// Interfaces with a fast-path slot: ifindex values modulo this.
pub const IFACE_SLOTS: u32 = 1024;

impl IfaceSlot {
    /// Array index of (ifindex, direction).
    #[inline(always)]
    pub const fn index(ifindex: u32, direction: u32) -> u32 {
        ((ifindex % IFACE_SLOTS) << 1) | (direction & 1)
    }
}

/// Packets and bytes (`skb->len`). Used per interface/direction and per IP protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct IfaceCounters {
    pub packets: u64,
    pub bytes: u64,
}

/// Indices of the kernel's per-CPU event counters. Each is either a *skip* (the packet was
/// counted on its interface but not attributed to a flow, by design) or a *loss* (something we
/// wanted to record could not be). Both kinds are exported; none is silent.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelCounter {
    /// Ethertype is neither IPv4 nor IPv6 (ARP, LLDP, ...).
    SkipNotIp = 0,
    /// Frame shorter than its Ethernet/VLAN header.
    SkipTruncatedL2,
    /// IPv4/IPv6 header (or an IPv6 extension header) cut short, or an IPv4 IHL below 5.
    SkipTruncatedL3,
    /// TCP/UDP header cut short, or a TCP data offset below 5.
    SkipTruncatedL4,
    /// Non-first IP fragment: it has no transport header, so no ports.
    SkipFragment,
    /// IPv6 extension header chain longer than we walk.
    SkipIpv6ExtChain,
    /// IP protocol other than TCP/UDP: counted per protocol only.
    SkipOtherProto,
    /// More VLAN tags than we walk (QinQ beyond two).
    SkipVlanDepth,
    /// A new flow could not be inserted in the flow map.
    LossFlowInsert,
    /// Interface counters entry could not be created.
    LossIfaceInsert,
    /// Flows created by the kernel (not a skip; exported as its own counter).
    FlowsCreated,
    /// The ring buffer had no room for a record (exchange, head, hello or SYN).
    LossRingbufFull,
    /// Copying payload bytes out of the skb failed.
    LossPayloadLoad,
    /// A request head was longer than the capture length (decoded from what was captured).
    EventHeadTruncated,
    /// A ClientHello was larger than what is gathered, or a segment of it did not fit a record.
    EventHelloTruncated,
    /// TCP payload bytes seen again (retransmissions): on the wire, not new data.
    TcpRetransmittedBytes,
}

impl KernelCounter {
    pub const COUNT: u32 = 16;

    pub const ALL: [KernelCounter; Self::COUNT as usize] = [
        KernelCounter::SkipNotIp,
        KernelCounter::SkipTruncatedL2,
        KernelCounter::SkipTruncatedL3,
        KernelCounter::SkipTruncatedL4,
        KernelCounter::SkipFragment,
        KernelCounter::SkipIpv6ExtChain,
        KernelCounter::SkipOtherProto,
        KernelCounter::SkipVlanDepth,
        KernelCounter::LossFlowInsert,
        KernelCounter::LossIfaceInsert,
        KernelCounter::FlowsCreated,
        KernelCounter::LossRingbufFull,
        KernelCounter::LossPayloadLoad,
        KernelCounter::EventHeadTruncated,
        KernelCounter::EventHelloTruncated,
        KernelCounter::TcpRetransmittedBytes,
    ];

    /// What the counter means for export: its kind and a bounded reason label.
    pub const fn describe(self) -> (CounterKind, &'static str) {
        use CounterKind::*;
        match self {
            KernelCounter::SkipNotIp => (Skip, "not_ip"),
            KernelCounter::SkipTruncatedL2 => (Skip, "truncated_l2"),
            KernelCounter::SkipTruncatedL3 => (Skip, "truncated_l3"),
            KernelCounter::SkipTruncatedL4 => (Skip, "truncated_l4"),
            KernelCounter::SkipFragment => (Skip, "ip_fragment"),
            KernelCounter::SkipIpv6ExtChain => (Skip, "ipv6_ext_chain"),
            KernelCounter::SkipOtherProto => (Skip, "other_ip_protocol"),
            KernelCounter::SkipVlanDepth => (Skip, "vlan_depth"),
            KernelCounter::LossFlowInsert => (Loss, "flow_map_insert"),
            KernelCounter::LossIfaceInsert => (Loss, "iface_map_insert"),
            KernelCounter::FlowsCreated => (Event, "flows_created"),
            KernelCounter::LossRingbufFull => (Loss, "ringbuf_full"),
            KernelCounter::LossPayloadLoad => (Loss, "payload_load"),
            KernelCounter::EventHeadTruncated => (Truncation, "head"),
            KernelCounter::EventHelloTruncated => (Truncation, "client_hello"),
            KernelCounter::TcpRetransmittedBytes => (Event, "tcp_retransmitted_bytes"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterKind {
    Skip,
    Loss,
    /// Something recorded only in part (exported as siphon_kernel_truncated_total).
    Truncation,
    Event,
}
