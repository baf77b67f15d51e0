//! The program's clock. Live, it is CLOCK_MONOTONIC; under capture replay it is the packet's
//! timestamp passed in `skb->tstamp`, so timings come from the capture and not from the replay.

use agent_common::TimeSource;
use aya_ebpf::{helpers::bpf_ktime_get_coarse_ns, programs::TcContext};

/// Set by the loader (`TimeSource` as u8). Read-only data: the verifier sees a constant and
/// drops the branch not taken.
#[unsafe(no_mangle)]
static TIME_SOURCE: u8 = TimeSource::Monotonic as u8;

#[inline(always)]
fn replaying() -> bool {
    // SAFETY: a plain read of a global; volatile so the compiler keeps the load and does not
    // fold in the default value.
    unsafe { core::ptr::read_volatile(&TIME_SOURCE) == TimeSource::SkbTstamp as u8 }
}

/// Coarse time (jiffy resolution, a few ns to read): enough for first/last seen and idle expiry.
#[inline(always)]
pub fn coarse_ns(ctx: &TcContext) -> u64 {
    if replaying() {
        // SAFETY: reading a field of the context.
        return unsafe { (*ctx.skb.skb).tstamp };
    }
    // SAFETY: helper without preconditions.
    unsafe { bpf_ktime_get_coarse_ns() }
}
