//! Types shared by the kernel programs (`agent-ebpf`) and the userspace agent.
//!
//! Every struct here crosses the user/kernel boundary as raw bytes, so each is `#[repr(C)]`,
//! has explicit padding fields, and is checked by layout tests: a hidden padding byte would be
//! uninitialised memory in a map key and make lookups miss at random.
#![no_std]

pub mod counters;
pub mod exchange;
pub mod flow;
pub mod wire;

pub use counters::*;
pub use exchange::*;
pub use flow::*;

/// Kernel timestamps and durations are nanoseconds; what leaves the agent is seconds.
pub fn ns_to_secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Seconds from `from_ns` to `to_ns`; none when the start was never stamped (0) or the two are
/// out of order (a record from before a clock step).
pub fn secs_between(from_ns: u64, to_ns: u64) -> Option<f64> {
    (from_ns != 0 && to_ns >= from_ns).then(|| ns_to_secs(to_ns - from_ns))
}

/// Names of the maps and programs in the eBPF object, so both sides agree on them.
pub mod names {
    pub const PROG_INGRESS: &str = "siphon_ingress";
    pub const PROG_EGRESS: &str = "siphon_egress";
    pub const MAP_FLOWS: &str = "FLOWS";
    pub const MAP_IFACE_COUNTERS: &str = "IFACE_COUNTERS";
    pub const MAP_IFACE_SLOTS: &str = "IFACE_SLOTS";
    pub const MAP_KERNEL_COUNTERS: &str = "KERNEL_COUNTERS";
    pub const MAP_PROTO_COUNTERS: &str = "PROTO_COUNTERS";
    pub const MAP_SERVICE_PORTS: &str = "SERVICE_PORTS";
    pub const MAP_EVENTS: &str = "EVENTS";
    /// Load-time constant: bytes of a request/response head to capture (at most CAPTURE_MAX).
    pub const GLOBAL_HEAD_CAPTURE_LEN: &str = "HEAD_CAPTURE_LEN";
    /// Load-time constant: records per CPU between two checks of how full the ring is.
    pub const GLOBAL_FILL_CHECK_RECORDS: &str = "FILL_CHECK_RECORDS";
    /// Load-time constant: unread ring bytes past which a fill check wakes the reader.
    pub const GLOBAL_WAKE_AVAIL_BYTES: &str = "WAKE_AVAIL_BYTES";
    /// Load-time constant: nanoseconds per kernel tick (jiffy), 10^9 / CONFIG_HZ.
    pub const GLOBAL_NS_PER_TICK: &str = "NS_PER_TICK";
    /// Load-time constant: where the program takes its clock from (see [`super::TimeSource`]).
    pub const GLOBAL_TIME_SOURCE: &str = "TIME_SOURCE";
}

/// Where the kernel program reads time from. Set once at load time through a global constant,
/// so the verifier prunes the unused branch and the live path pays nothing for replay support.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeSource {
    /// `bpf_ktime_get_*`: CLOCK_MONOTONIC, the live agent.
    Monotonic = 0,
    /// `skb->tstamp` as given in BPF_PROG_TEST_RUN's ctx_in: capture replay.
    SkbTstamp = 1,
}

#[cfg(feature = "user")]
mod user_pod {
    use super::*;
    // SAFETY: all of these are #[repr(C)] plain-old-data with explicit padding fields (checked
    // by the layout tests), so every bit pattern is valid and no byte is uninitialised.
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for FlowState {}
    unsafe impl aya::Pod for DirCounters {}
    unsafe impl aya::Pod for IfaceKey {}
    unsafe impl aya::Pod for IfaceCounters {}
    unsafe impl aya::Pod for IfaceSlot {}
    unsafe impl aya::Pod for ExchangeRecord {}
    unsafe impl aya::Pod for PayloadHeader {}
    unsafe impl aya::Pod for SynRecord {}
}

#[cfg(test)]
mod layout_tests;
