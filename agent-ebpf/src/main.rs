//! Siphon's kernel side: TC classifiers on ingress and egress that count every packet per
//! interface, and per flow where the packet is TCP or UDP. Every path returns TC_ACT_PIPE-like
//! "pass" (TC_ACT_UNSPEC for tcx/netlink alike): the program never drops, delays or changes
//! traffic, whatever it finds.
#![no_std]
#![no_main]
// Atomic add/or on map values (see atomic.rs); this crate is built with nightly only.
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod atomic;
mod counters;
mod events;
mod flow;
mod mem;
mod parse;
mod tcp;
mod time;

use agent_common::Direction;
use aya_ebpf::{bindings::TC_ACT_UNSPEC, macros::classifier, programs::TcContext};

/// TC_ACT_UNSPEC lets the packet continue as if no program ran (tcx: next program / default).
const PASS: i32 = TC_ACT_UNSPEC;

#[classifier]
pub fn siphon_ingress(ctx: TcContext) -> i32 {
    observe(&ctx, Direction::Ingress);
    PASS
}

#[classifier]
pub fn siphon_egress(ctx: TcContext) -> i32 {
    observe(&ctx, Direction::Egress);
    PASS
}

#[inline(always)]
fn observe(ctx: &TcContext, direction: Direction) {
    // SAFETY: ctx.skb.skb is the context pointer the kernel handed us.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let len = ctx.len();
    counters::count_iface(ifindex, direction, len);
    match parse::parse(ctx) {
        Ok(pkt) => flow::account(ctx, ifindex, &pkt, len),
        Err(parse::Skip::Counter(c)) => counters::bump(c),
        Err(parse::Skip::OtherProto(proto)) => counters::count_other_proto(proto, len),
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
