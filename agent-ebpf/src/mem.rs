//! Stores that stay single stores. LLVM merges runs of zero stores (two adjacent u64 zeroes are
//! enough), zeroed arrays and array copies into memset/memmove, and the BPF backend lowers
//! those into BPF-to-BPF calls to compiler_builtins' byte-at-a-time loops: on the per-packet
//! path that cost more than the map lookup. A volatile store is one ordinary store
//! instruction that LLVM may neither merge nor drop. `tests/no_mem_calls` (agent) checks the
//! built object for such calls.

use agent_common::Addr;

/// Stores `value` at `dst` as one store instruction.
///
/// # Safety
/// `dst` valid for writes and aligned for `T`.
#[inline(always)]
pub unsafe fn put<T: Copy>(dst: *mut T, value: T) {
    // SAFETY: the caller's contract.
    unsafe { core::ptr::write_volatile(dst, value) }
}

/// Copies an address word by word.
///
/// # Safety
/// `dst` valid for writes of an `Addr`.
#[inline(always)]
pub unsafe fn put_addr(dst: *mut Addr, src: &Addr) {
    let words = dst as *mut u32;
    // SAFETY: the caller's contract; an Addr is four u32 words.
    unsafe {
        put(words, src[0]);
        put(words.add(1), src[1]);
        put(words.add(2), src[2]);
        put(words.add(3), src[3]);
    }
}
