//! The program's clock. Live, it is CLOCK_MONOTONIC; under capture replay it is the packet's
//! timestamp passed in `skb->tstamp`, so timings come from the capture and not from the replay.

use agent_common::TimeSource;
use aya_ebpf::{
    helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns, bpf_ktime_get_ns},
    programs::TcContext,
};

/// Nanoseconds per kernel tick. Set by the loader from clock_getres(CLOCK_MONOTONIC_COARSE).
#[unsafe(no_mangle)]
static NS_PER_TICK: u64 = 4_000_000;

/// Set by the loader (`TimeSource` as u8). Read-only data: the verifier sees a constant and
/// drops the branch not taken.
#[unsafe(no_mangle)]
static TIME_SOURCE: u8 = TimeSource::Monotonic as u8;

/// Whether we replay a capture (BPF_PROG_TEST_RUN with capture timestamps).
#[inline(always)]
pub fn replaying() -> bool {
    // SAFETY: a plain read of a global; volatile so the compiler keeps the load and does not
    // fold in the default value.
    unsafe { core::ptr::read_volatile(&TIME_SOURCE) == TimeSource::SkbTstamp as u8 }
}

#[inline(always)]
fn tstamp(ctx: &TcContext) -> u64 {
    // SAFETY: reading a field of the context.
    unsafe { (*ctx.skb.skb).tstamp }
}

/// Coarse time (jiffy resolution, a few ns to read): enough for last-seen and idle expiry.
#[inline(always)]
pub fn coarse_ns(ctx: &TcContext) -> u64 {
    if replaying() {
        return tstamp(ctx);
    }
    // SAFETY: helper without preconditions.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// The jiffies counter: the verifier inlines this helper into a single load.
#[inline(always)]
pub fn jiffies() -> u64 {
    // SAFETY: helper without preconditions.
    unsafe { bpf_jiffies64() }
}

/// Coarse time extrapolated from a flow's last precise reading (`anchor` ns, at `anchor_j`
/// jiffies): one tick of resolution, like the coarse clock, without its helper call. Falls
/// back to the coarse clock before the flow has an anchor, and to the packet's time in replay.
#[inline(always)]
pub fn since_anchor(ctx: &TcContext, anchor: u64, anchor_j: u64) -> u64 {
    if replaying() || anchor == 0 {
        return coarse_ns(ctx);
    }
    // SAFETY: plain read of a load-time constant.
    let tick = unsafe { core::ptr::read_volatile(&NS_PER_TICK) };
    anchor + jiffies().wrapping_sub(anchor_j) * tick
}

/// How long a coarse anchor serves (see [`from_anchor`]): the monotonic clock is slewed by NTP
/// (at most 500 ppm) and the tick count is not, so after a second they differ by at most
/// 0.5 ms, less than a tick.
const ANCHOR_NS: u64 = 1_000_000_000;

/// Coarse time from a flow's coarse anchor (`anchor` ns, read at `anchor_j` jiffies), without a
/// helper call; none when there is no anchor, it is older than [`ANCHOR_NS`], or we replay (the
/// caller then reads the coarse clock and renews the anchor).
#[inline(always)]
pub fn from_anchor(anchor: u64, anchor_j: u64) -> Option<u64> {
    if replaying() || anchor == 0 {
        return None;
    }
    // SAFETY: plain read of a load-time constant.
    let tick = unsafe { core::ptr::read_volatile(&NS_PER_TICK) };
    let elapsed = jiffies().wrapping_sub(anchor_j).wrapping_mul(tick);
    (elapsed < ANCHOR_NS).then_some(anchor + elapsed)
}

/// Precise time (~30 ns to read here): only where a timing needs it (request and response
/// edges, handshake).
#[inline(always)]
pub fn precise_ns(ctx: &TcContext) -> u64 {
    if replaying() {
        return tstamp(ctx);
    }
    // SAFETY: helper without preconditions.
    unsafe { bpf_ktime_get_ns() }
}
