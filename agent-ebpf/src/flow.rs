//! The flow table: one LRU entry per normalised 5-tuple and interface.

use agent_common::{client, service_ports, tcp_flag, FlowKey, FlowState, KernelCounter, Side};
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray},
    programs::TcContext,
};

use crate::{
    atomic,
    counters::bump,
    mem::put,
    parse::{Packet, IPPROTO_TCP},
    tcp, time,
};

/// Default size; the loader overrides it from `--max-flows`.
#[map(name = "FLOWS")]
static FLOWS: LruHashMap<FlowKey, FlowState> = LruHashMap::with_max_entries(131_072, 0);

/// Ports known to be services (listening sockets, configured services), one bit each (see
/// `agent_common::service_ports`). Written by userspace.
#[map(name = "SERVICE_PORTS")]
static SERVICE_PORTS: Array<u64> = Array::with_max_entries(service_ports::WORDS, 0);

#[inline(always)]
pub fn account(ctx: &TcContext, ifindex: u32, pkt: &Packet, len: u32) {
    let (key, side) =
        FlowKey::normalise(ifindex, pkt.proto, &pkt.src, pkt.sport, &pkt.dst, pkt.dport);
    let st = match FLOWS.get_ptr_mut(key) {
        Some(st) => st,
        None => match create(ctx, &key, side, pkt) {
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
        return coarse(ctx, st);
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

/// Coarse time for a flow that needs no more (UDP: last-seen only), extrapolated from the
/// flow's clock anchor with the inlined jiffies read rather than a clock helper call. The anchor
/// is a coarse reading itself, renewed once it is a second old (see `time::from_anchor`).
/// Writers on two CPUs may interleave the anchor's two words; both readings are then a few ns
/// apart, well inside the tick of resolution.
#[inline(always)]
fn coarse(ctx: &TcContext, st: *mut FlowState) -> u64 {
    // SAFETY: live map value.
    let (anchor, anchor_j) = unsafe { ((*st).clock_anchor_ns, (*st).clock_anchor_jiffies) };
    if let Some(now) = time::from_anchor(anchor, anchor_j) {
        return now;
    }
    let now = time::coarse_ns(ctx);
    // SAFETY: live map value.
    unsafe {
        (*st).clock_anchor_ns = now;
        (*st).clock_anchor_jiffies = time::jiffies();
    }
    now
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

/// Inserts the packet's flow. Returns the new entry for the caller to account the packet on,
/// or none when there is nothing left to do: the packet was counted in the inserted value, or
/// no entry could be had (a counted loss). Out of line: once per flow.
#[inline(never)]
// By reference on purpose: by value would copy the value onto the 512-byte BPF stack.
#[allow(clippy::needless_borrows_for_generic_args)]
fn create(ctx: &TcContext, key: &FlowKey, side: Side, pkt: &Packet) -> Option<*mut FlowState> {
    let now = time::coarse_ns(ctx);
    let client = guess_client(pkt, side);
    if only_counts(pkt) {
        // The first packet of a flow picked up mid-stream (an ACK) or of a UDP flow: its whole
        // effect is counters, so it goes into the inserted value, which saves the second
        // lookup and the per-packet path.
        if insert_counted(key, side, pkt, ctx.len(), now, client) {
            bump(KernelCounter::FlowsCreated);
            return None;
        }
    } else if FLOWS.insert(key, &ZERO_FLOW, BPF_NOEXIST as u64).is_ok() {
        bump(KernelCounter::FlowsCreated);
        if let Some(st) = FLOWS.get_ptr_mut(key) {
            // SAFETY: the entry we just inserted.
            unsafe {
                (*st).first_seen_ns = now;
                (*st).last_seen_ns = now;
                (*st).client = client;
            }
            return Some(st);
        }
    }
    // Another CPU inserted the flow first (fine: account on its entry), or the insert failed.
    let st = FLOWS.get_ptr_mut(key);
    if st.is_none() {
        bump(KernelCounter::LossFlowInsert);
    }
    st
}

/// Whether all a packet does to a new flow is count: not TCP, or a TCP segment without payload
/// and without SYN, FIN or RST (`update` and `tcp::on_segment` do nothing else for it: a new
/// flow awaits no handshake ACK).
#[inline(always)]
fn only_counts(pkt: &Packet) -> bool {
    pkt.proto != IPPROTO_TCP
        || (pkt.payload_len == 0
            && pkt.tcp_flags & (tcp_flag::SYN | tcp_flag::FIN | tcp_flag::RST) == 0)
}

/// Words of a FlowState (its size is a multiple of 8: it holds u64 fields and is repr(C)).
const FLOW_WORDS: usize = core::mem::size_of::<FlowState>() / 8;
const _: () = assert!(core::mem::size_of::<FlowState>().is_multiple_of(8));

/// Where a new flow's value is built before it is inserted: a FlowState does not fit on the
/// 512-byte BPF stack beside the main program's frame. Per CPU, one slot.
#[map(name = "NEW_FLOW")]
static NEW_FLOW: PerCpuArray<FlowState> = PerCpuArray::with_max_entries(1, 0);

/// Inserts a new flow holding this one packet, as `update` would count it on a zeroed flow;
/// false if the flow could not be inserted (it exists already, or the insert failed).
#[inline(always)]
// By reference on purpose: by value would copy the value onto the 512-byte BPF stack.
#[allow(clippy::needless_borrows_for_generic_args)]
fn insert_counted(key: &FlowKey, side: Side, pkt: &Packet, len: u32, now: u64, client: u8) -> bool {
    let Some(st) = NEW_FLOW.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: `st` is this CPU's slot (nothing else runs on this CPU meanwhile), FLOW_WORDS
    // aligned u64 words. Every word is zeroed (one store each, see mem.rs) before the fields
    // are set, so no earlier flow's values leak into this one.
    unsafe {
        let words = st as *mut u64;
        for i in 0..FLOW_WORDS {
            put(words.add(i), 0);
        }
        let d = &raw mut (*st).dir[side as usize];
        (*d).packets = 1;
        (*d).bytes = len as u64;
        (*d).payload_bytes = pkt.payload_len as u64;
        (*st).tcp_flags = (pkt.tcp_flags as u64) << (8 * side as u64);
        (*st).first_seen_ns = now;
        (*st).last_seen_ns = now;
        (*st).client = client;
        FLOWS.insert(key, &*st, BPF_NOEXIST as u64).is_ok()
    }
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
    match service_ports::bit(proto, port) {
        Some((word, mask)) => SERVICE_PORTS.get(word).is_some_and(|w| w & mask != 0),
        None => false,
    }
}
