//! Atomic read-modify-write on map values. The bpfel target does not expose `fetch_add` on
//! `core::sync::atomic` types (it has no compare-and-swap), but the BPF ISA has atomic add and
//! or, which these intrinsics lower to (`lock xadd`, `lock or`). Only the 64-bit forms exist
//! without alu32 (bpf-linker's default `--cpu generic`).
use core::intrinsics::{atomic_or, atomic_xadd, AtomicOrdering};

/// # Safety
/// `dst` must be valid and aligned for a u64 write.
#[inline(always)]
pub unsafe fn add_u64(dst: *mut u64, v: u64) {
    // SAFETY: the caller guarantees `dst` is valid and aligned; the add is one atomic
    // instruction, so concurrent writers on other CPUs cannot tear it.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(dst, v) };
}

/// # Safety
/// `dst` must be valid and aligned for a u64 write.
#[inline(always)]
pub unsafe fn or_u64(dst: *mut u64, v: u64) {
    // SAFETY: as in `add_u64`: valid, aligned `dst` (the caller's contract), one atomic
    // instruction.
    unsafe { atomic_or::<u64, u64, { AtomicOrdering::Relaxed }>(dst, v) };
}
