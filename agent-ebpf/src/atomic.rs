//! Atomic read-modify-write on map values. The bpfel target does not expose `fetch_add` on
//! `core::sync::atomic` types (it has no compare-and-swap), but the BPF ISA has atomic add and
//! or, which these intrinsics lower to (`lock xadd`, `lock or`). Only the 64-bit forms exist
//! without alu32 (bpf-linker's default `--cpu generic`).
use core::intrinsics::{atomic_or, atomic_xadd, AtomicOrdering};

/// # Safety
/// `dst` must be valid and aligned for a u64 write.
#[inline(always)]
pub unsafe fn add_u64(dst: *mut u64, v: u64) {
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(dst, v) };
}

/// # Safety
/// `dst` must be valid and aligned for a u64 write.
#[inline(always)]
pub unsafe fn or_u64(dst: *mut u64, v: u64) {
    unsafe { atomic_or::<u64, u64, { AtomicOrdering::Relaxed }>(dst, v) };
}
