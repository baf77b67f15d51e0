//! Reference programs for `cargo xtask bench` (bench/runner/src/main.rs). They are never
//! attached anywhere: the bench runs them under BPF_PROG_TEST_RUN next to `siphon_ingress`, so
//! Siphon's per-packet cost is read against what any TC program costs on the same machine, in
//! the same run.
//!
//! - `bench_floor`: returns TC_ACT_UNSPEC and nothing else. What BPF_PROG_TEST_RUN and the
//!   program call cost with no work at all.
//! - `bench_lru_counter`: the smallest useful flow counter. Ethernet + IPv4 + TCP only (no
//!   VLAN, no IPv6, no normalisation of the two directions), key = 5-tuple, one LRU hash lookup,
//!   packets and bytes incremented with the same atomic adds Siphon uses, insert if missing.
#![no_std]
#![no_main]
// The atomic adds of Siphon's own atomic.rs, so the comparison is like for like.
#![allow(internal_features)]
#![feature(core_intrinsics)]

// Siphon's module, shared as source: the baseline uses only its add, not its or.
#[allow(dead_code)]
#[path = "../../../agent-ebpf/src/atomic.rs"]
mod atomic;

use aya_ebpf::{
    bindings::{BPF_NOEXIST, TC_ACT_UNSPEC},
    macros::{classifier, map},
    maps::LruHashMap,
    programs::TcContext,
};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const IPPROTO_TCP: u8 = 6;

/// Whole words, so the key has no padding to zero (a padding byte left uninitialised would make
/// lookups miss) and is built with four stores. Addresses and ports stay in network order.
#[repr(C)]
#[derive(Clone, Copy)]
struct Key {
    saddr: u32,
    daddr: u32,
    /// Source port in the first two bytes, destination port in the last two, as on the wire.
    ports: u32,
    proto: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Counts {
    packets: u64,
    bytes: u64,
}

/// Same size as Siphon's default flow table, so LRU bookkeeping is comparable.
#[map(name = "BENCH_FLOWS")]
static BENCH_FLOWS: LruHashMap<Key, Counts> = LruHashMap::with_max_entries(131_072, 0);

#[classifier]
pub fn bench_floor(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}

#[classifier]
pub fn bench_lru_counter(ctx: TcContext) -> i32 {
    count(&ctx);
    TC_ACT_UNSPEC
}

#[inline(always)]
fn load<T: Copy>(ctx: &TcContext, off: usize) -> Option<T> {
    let start = ctx.data();
    if start + off + core::mem::size_of::<T>() > ctx.data_end() {
        return None;
    }
    // SAFETY: bounds checked against data_end just above; unaligned because the IPv4 header
    // starts 14 bytes into the frame.
    Some(unsafe { core::ptr::read_unaligned((start + off) as *const T) })
}

#[inline(always)]
fn count(ctx: &TcContext) -> Option<()> {
    if u16::from_be(load::<u16>(ctx, 12)?) != ETH_P_IP {
        return None;
    }
    // One bounds check for the fixed IPv4 header; fields read from it in place.
    let ip: [u32; 5] = load(ctx, ETH_HLEN)?;
    let [ver_ihl, _tos, _len_lo, _len_hi] = ip[0].to_ne_bytes();
    let [_ttl, proto, _csum_lo, _csum_hi] = ip[2].to_ne_bytes();
    if proto != IPPROTO_TCP {
        return None;
    }
    let ihl = ((ver_ihl & 0x0f) as usize) * 4;
    let key = Key {
        saddr: ip[3],
        daddr: ip[4],
        ports: load::<u32>(ctx, ETH_HLEN + ihl)?,
        proto: IPPROTO_TCP as u32,
    };
    let len = ctx.len() as u64;
    if let Some(c) = BENCH_FLOWS.get_ptr_mut(key) {
        // SAFETY: a live map value; atomic because a flow's packets can run on several CPUs.
        unsafe {
            atomic::add_u64(&raw mut (*c).packets, 1);
            atomic::add_u64(&raw mut (*c).bytes, len);
        }
        return Some(());
    }
    let first = Counts {
        packets: 1,
        bytes: len,
    };
    // Losing a creation race to another CPU only drops this packet's count: a baseline.
    let _ = BENCH_FLOWS.insert(key, first, BPF_NOEXIST as u64);
    Some(())
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
