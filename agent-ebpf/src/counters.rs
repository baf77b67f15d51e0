//! Per-CPU counters: no atomics needed, userspace sums the CPUs at scrape time.

use agent_common::{Direction, IfaceCounters, IfaceKey, IfaceSlot, KernelCounter, IFACE_SLOTS};
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    macros::map,
    maps::{PerCpuArray, PerCpuHashMap},
};

/// Sized for every interface of a busy node (one veth per pod, two directions).
#[map(name = "IFACE_COUNTERS")]
static IFACE_COUNTERS: PerCpuHashMap<IfaceKey, IfaceCounters> =
    PerCpuHashMap::with_max_entries(4096, 0);

#[map(name = "IFACE_SLOTS")]
static IFACE_FAST: PerCpuArray<IfaceSlot> = PerCpuArray::with_max_entries(2 * IFACE_SLOTS, 0);

#[map(name = "KERNEL_COUNTERS")]
static KERNEL_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(KernelCounter::COUNT, 0);

/// Indexed by IP protocol number, for protocols other than TCP and UDP.
#[map(name = "PROTO_COUNTERS")]
static PROTO_COUNTERS: PerCpuArray<IfaceCounters> = PerCpuArray::with_max_entries(256, 0);

#[inline(always)]
pub fn bump(counter: KernelCounter) {
    if let Some(v) = KERNEL_COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run (preemption is off).
        unsafe { *v += 1 };
    }
}

/// Adds `n` to an event counter (bytes rather than occurrences).
#[inline(always)]
pub fn bump_by(counter: KernelCounter, n: u64) {
    if let Some(v) = KERNEL_COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, as in `bump`.
        unsafe { *v += n };
    }
}

#[inline(always)]
pub fn count_iface(ifindex: u32, direction: Direction, len: u32) {
    if let Some(slot) = IFACE_FAST.get_ptr_mut(IfaceSlot::index(ifindex, direction as u32)) {
        // SAFETY: this CPU's copy of the slot; nothing else writes it while we run.
        unsafe {
            if (*slot).ifindex == 0 {
                (*slot).ifindex = ifindex;
            }
            if (*slot).ifindex == ifindex {
                (*slot).packets += 1;
                (*slot).bytes += len as u64;
                return;
            }
        }
    }
    count_iface_slow(ifindex, direction, len);
}

/// The slot belongs to another interface on this CPU: the hash map, as many as needed.
#[inline(never)]
fn count_iface_slow(ifindex: u32, direction: Direction, len: u32) {
    let key = IfaceKey {
        ifindex,
        direction: direction as u32,
    };
    if let Some(c) = IFACE_COUNTERS.get_ptr_mut(key) {
        // SAFETY: per-CPU value of an existing entry.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len as u64;
        }
        return;
    }
    // Userspace pre-creates entries for the interfaces it attaches to; this covers the rest
    // (an interface that appeared since, BPF_PROG_TEST_RUN). Insertion sets only this CPU's
    // value and zeroes the others, which is what a first packet means.
    let first = IfaceCounters {
        packets: 1,
        bytes: len as u64,
    };
    if IFACE_COUNTERS
        .insert(key, first, BPF_NOEXIST as u64)
        .is_ok()
    {
        return;
    }
    // Lost a creation race with another CPU: the entry exists now.
    match IFACE_COUNTERS.get_ptr_mut(key) {
        // SAFETY: as above.
        Some(c) => unsafe {
            (*c).packets += 1;
            (*c).bytes += len as u64;
        },
        None => bump(KernelCounter::LossIfaceInsert),
    }
}

#[inline(always)]
pub fn count_other_proto(proto: u8, len: u32) {
    bump(KernelCounter::SkipOtherProto);
    if let Some(c) = PROTO_COUNTERS.get_ptr_mut(proto as u32) {
        // SAFETY: per-CPU slot.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len as u64;
        }
    }
}
