//! The flow table: one LRU entry per normalised 5-tuple and interface.

use agent_common::{
    client, tcp_flag, DirCounters, FlowKey, FlowState, KernelCounter, ServicePortKey, Side,
};
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    macros::map,
    maps::{HashMap, LruHashMap},
    programs::TcContext,
};

use crate::{atomic, counters::bump, parse::Packet, time};

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
    let now = time::coarse_ns(ctx);
    if let Some(st) = FLOWS.get_ptr_mut(key) {
        update(st, side, pkt, len, now);
        return;
    }
    let mut dir = [DirCounters::default(); 2];
    dir[side as usize] = DirCounters {
        packets: 1,
        bytes: len as u64,
        payload_bytes: pkt.payload_len as u64,
    };
    let fresh = FlowState {
        dir,
        first_seen_ns: now,
        last_seen_ns: now,
        tcp_flags: (pkt.tcp_flags as u64) << (8 * side as u64),
        client: guess_client(pkt, side),
        _pad: [0; 7],
    };
    if FLOWS.insert(key, fresh, BPF_NOEXIST as u64).is_ok() {
        bump(KernelCounter::FlowsCreated);
        return;
    }
    // Another CPU created it between our lookup and insert: count into that entry.
    match FLOWS.get_ptr_mut(key) {
        Some(st) => update(st, side, pkt, len, now),
        None => bump(KernelCounter::LossFlowInsert),
    }
}

#[inline(always)]
fn update(st: *mut FlowState, side: Side, pkt: &Packet, len: u32, now: u64) {
    // SAFETY: `st` points into a map value that stays valid for this program run. Counters use
    // atomic adds because the two directions of a flow are often handled on different CPUs.
    unsafe {
        let d = &raw mut (*st).dir[side as usize];
        atomic::add_u64(&raw mut (*d).packets, 1);
        atomic::add_u64(&raw mut (*d).bytes, len as u64);
        if pkt.payload_len != 0 {
            atomic::add_u64(&raw mut (*d).payload_bytes, pkt.payload_len as u64);
        }
        (*st).last_seen_ns = now;
        let flags = (pkt.tcp_flags as u64) << (8 * side as u64);
        // Write only when a new flag shows up: most packets carry flags seen long ago.
        if flags & !(*st).tcp_flags != 0 {
            atomic::or_u64(&raw mut (*st).tcp_flags, flags);
        }
        // A SYN on a known tuple is a new connection reusing it: its sender is the client.
        if pkt.tcp_flags & (tcp_flag::SYN | tcp_flag::ACK) == tcp_flag::SYN {
            (*st).client = client_is(side);
        }
    }
}

#[inline(always)]
fn client_is(side: Side) -> u8 {
    match side {
        Side::A => client::A,
        Side::B => client::B,
    }
}

#[inline(always)]
fn other(side: Side) -> Side {
    match side {
        Side::A => Side::B,
        Side::B => Side::A,
    }
}

/// Which side opened the flow: the SYN's sender when we see the handshake; otherwise the side
/// not on a known service port; otherwise the side on the higher (ephemeral-looking) port.
#[inline(always)]
fn guess_client(pkt: &Packet, side: Side) -> u8 {
    let syn_ack = pkt.tcp_flags & (tcp_flag::SYN | tcp_flag::ACK);
    if syn_ack == tcp_flag::SYN {
        return client_is(side);
    }
    if syn_ack == tcp_flag::SYN | tcp_flag::ACK {
        return client_is(other(side));
    }
    if is_service_port(pkt.dport, pkt.proto) {
        return client_is(side);
    }
    if is_service_port(pkt.sport, pkt.proto) {
        return client_is(other(side));
    }
    if pkt.sport > pkt.dport {
        client_is(side)
    } else if pkt.sport < pkt.dport {
        client_is(other(side))
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
