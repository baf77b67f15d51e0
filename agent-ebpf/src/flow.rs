//! The flow table: one LRU entry per normalised 5-tuple and interface.

use agent_common::{client, tcp_flag, FlowKey, FlowState, KernelCounter, ServicePortKey, Side};
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    macros::map,
    maps::{HashMap, LruHashMap},
    programs::TcContext,
};

use crate::{
    atomic,
    counters::bump,
    parse::{Packet, IPPROTO_TCP},
    tcp, time,
};

/// Default size; the loader overrides it from `--max-flows`.
#[map(name = "FLOWS")]
static FLOWS: LruHashMap<FlowKey, FlowState> = LruHashMap::with_max_entries(131_072, 0);

/// Ports known to be services (listening sockets, configured services). Written by userspace.
#[map(name = "SERVICE_PORTS")]
static SERVICE_PORTS: HashMap<ServicePortKey, u8> = HashMap::with_max_entries(1024, 0);

#[inline(always)]
pub fn account(ctx: &TcContext, ifindex: u32, pkt: &Packet, len: u32) {
    let (key, side) =
        FlowKey::normalise(ifindex, pkt.proto, &pkt.src, pkt.sport, &pkt.dst, pkt.dport);
    let st = match FLOWS.get_ptr_mut(key) {
        Some(st) => st,
        None => match create(&key, side, pkt, time::coarse_ns(ctx)) {
            Some(st) => st,
            None => return,
        },
    };
    let now = clock(ctx, st, side, pkt);
    update(st, side, pkt, len, now);
    if pkt.proto == IPPROTO_TCP {
        tcp::on_segment(ctx, st, &key, side, pkt, now);
    }
}

/// The time for this packet, from the cheapest clock that serves what the packet is used for
/// (0: none needed). The precise clock (~30 ns) only where a timing needs it: connection edges,
/// the handshake's last ACK, request segments and the first segment of a response (time to
/// first byte). Segments in the middle of a response extrapolate from the flow's last precise
/// reading with the jiffies counter (one tick of resolution, no helper call): they only move
/// the response's last-byte time, so durations carry at most one tick of error. A pure ACK needs no time at all: it does not refresh last-seen (the data
/// it acknowledges does), which keeps the commonest packet cheapest.
#[inline(always)]
fn clock(ctx: &TcContext, st: *mut FlowState, side: Side, pkt: &Packet) -> u64 {
    if pkt.proto != IPPROTO_TCP {
        return time::coarse_ns(ctx);
    }
    // SAFETY: live map value.
    let (client, phase, await_ack) =
        unsafe { ((*st).client, (*st).exchange.phase, (*st).await_ack) };
    if pkt.tcp_flags & (tcp_flag::SYN | tcp_flag::FIN | tcp_flag::RST) != 0 {
        return precise(ctx, st);
    }
    if pkt.payload_len == 0 {
        return if await_ack != 0 { precise(ctx, st) } else { 0 };
    }
    let from_server = client != agent_common::client::UNKNOWN && client != side.as_client();
    if from_server && phase == agent_common::phase::RESPONSE {
        // SAFETY: live map value.
        let (anchor, anchor_j) = unsafe { ((*st).clock_anchor_ns, (*st).clock_anchor_jiffies) };
        return time::since_anchor(ctx, anchor, anchor_j);
    }
    precise(ctx, st)
}

/// A precise reading, remembered with the jiffies counter as the flow's clock anchor.
#[inline(always)]
fn precise(ctx: &TcContext, st: *mut FlowState) -> u64 {
    let now = time::precise_ns(ctx);
    // SAFETY: live map value.
    unsafe {
        (*st).clock_anchor_ns = now;
        (*st).clock_anchor_jiffies = time::jiffies();
    }
    now
}

/// A zeroed flow to insert from: the value lives in read-only data, not on the 512-byte stack.
static ZERO_FLOW: FlowState = FlowState {
    dir: [agent_common::DirCounters {
        packets: 0,
        bytes: 0,
        payload_bytes: 0,
    }; 2],
    tcp_flags: 0,
    last_seen_ns: 0,
    client: 0,
    seq_known: 0,
    await_ack: 0,
    hellos: 0,
    hello_want: 0,
    hello_got: 0,
    seq_end: [0; 2],
    clock_anchor_ns: 0,
    clock_anchor_jiffies: 0,
    exchange: agent_common::Exchange {
        phase: 0,
        flags: 0,
        _pad: 0,
        seq: 0,
        resp_bytes: 0,
        resp_last_ns: 0,
        resp_packets: 0,
        resp_psh: 0,
        req_bytes: 0,
        req_last_ns: 0,
        req_packets: 0,
        _pad2: 0,
        req_first_ns: 0,
        resp_first_ns: 0,
    },
    handshake: agent_common::Handshake {
        syn_ns: 0,
        synack_ns: 0,
        ack_ns: 0,
    },
    hole: [[0; 2]; 2],
    first_seen_ns: 0,
};

/// Inserts a zeroed flow and returns it; another CPU may have inserted it first, which is fine.
/// Out of line: once per flow.
#[inline(never)]
// By reference on purpose: by value would copy 176 bytes onto the 512-byte BPF stack.
#[allow(clippy::needless_borrows_for_generic_args)]
fn create(key: &FlowKey, side: Side, pkt: &Packet, now: u64) -> Option<*mut FlowState> {
    if FLOWS.insert(key, &ZERO_FLOW, BPF_NOEXIST as u64).is_ok() {
        bump(KernelCounter::FlowsCreated);
        if let Some(st) = FLOWS.get_ptr_mut(key) {
            // SAFETY: the entry we just inserted.
            unsafe {
                (*st).first_seen_ns = now;
                (*st).last_seen_ns = now;
                (*st).client = guess_client(pkt, side);
            }
            return Some(st);
        }
    }
    let st = FLOWS.get_ptr_mut(key);
    if st.is_none() {
        bump(KernelCounter::LossFlowInsert);
    }
    st
}

#[inline(always)]
fn update(st: *mut FlowState, side: Side, pkt: &Packet, len: u32, now: u64) {
    // SAFETY: `st` points into a map value that stays valid for this program run.
    //
    // Atomic adds: even one direction of one TCP flow can reach the hook on two CPUs at once
    // (a veth peer delivers on the sending CPU's backlog and the sender may have migrated
    // between two sends; UDP sockets are written from several threads), and a lost increment
    // would break the exact totals. Uncontended, an atomic add costs a few ns more.
    unsafe {
        let d = &raw mut (*st).dir[side as usize];
        atomic::add_u64(&raw mut (*d).packets, 1);
        atomic::add_u64(&raw mut (*d).bytes, len as u64);
        if pkt.payload_len != 0 {
            atomic::add_u64(&raw mut (*d).payload_bytes, pkt.payload_len as u64);
        }
        if now != 0 {
            (*st).last_seen_ns = now;
        }
        let flags = (pkt.tcp_flags as u64) << (8 * side as u64);
        // Write only when a new flag shows up: most packets carry flags seen long ago.
        if flags & !(*st).tcp_flags != 0 {
            atomic::or_u64(&raw mut (*st).tcp_flags, flags);
        }
        // A SYN on a known tuple is a new connection reusing it: its sender is the client.
        if pkt.tcp_flags & (tcp_flag::SYN | tcp_flag::ACK) == tcp_flag::SYN {
            (*st).client = side.as_client();
        }
    }
}

/// Which side opened the flow: the SYN's sender when we see the handshake; otherwise the side
/// not on a known service port; otherwise the side on the higher (ephemeral-looking) port.
#[inline(always)]
fn guess_client(pkt: &Packet, side: Side) -> u8 {
    let syn_ack = pkt.tcp_flags & (tcp_flag::SYN | tcp_flag::ACK);
    if syn_ack == tcp_flag::SYN {
        return side.as_client();
    }
    if syn_ack == tcp_flag::SYN | tcp_flag::ACK {
        return side.other().as_client();
    }
    if is_service_port(pkt.dport, pkt.proto) {
        return side.as_client();
    }
    if is_service_port(pkt.sport, pkt.proto) {
        return side.other().as_client();
    }
    if pkt.sport > pkt.dport {
        side.as_client()
    } else if pkt.sport < pkt.dport {
        side.other().as_client()
    } else {
        client::UNKNOWN
    }
}

#[inline(always)]
fn is_service_port(port: u16, proto: u8) -> bool {
    let key = ServicePortKey {
        port,
        proto,
        _pad: 0,
    };
    SERVICE_PORTS.get_ptr(key).is_some()
}
