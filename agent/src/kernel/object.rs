//! The embedded eBPF object: load it with the run's options and load its programs.

use agent_common::{names, TimeSource, CAPTURE_MAX};
use anyhow::Context as _;
use aya::{programs::SchedClassifier, Ebpf, EbpfLoader};

use crate::kernel::pin::{pinned_maps, PinDir};

/// The oldest kernel line the programs were verified on (Debian's 6.1 and 6.12 cloud kernels
/// under qemu; the development machine runs 6.18).
const MIN_TESTED_KERNEL: &str = "6.1";

/// The object built by build.rs from agent-ebpf.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/siphon"));

/// Head bytes `siphon run` captures by default. Every field the pipeline reads (request line,
/// the API-key, User-Agent and forwarding headers; the status line and content type) sits in
/// the first kilobyte of the heads we have seen, and the copy into the ring is the capture
/// paths' largest cost, so live capture stops there.
pub const LIVE_HEAD_CAPTURE_BYTES: u32 = 1024;

/// Head bytes `siphon replay` captures by default: all a record can carry, as fidelity matters
/// more than cost offline (a long cookie can push an API key past the first kilobyte).
pub const REPLAY_HEAD_CAPTURE_BYTES: u32 = CAPTURE_MAX as u32;

#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    pub max_flows: u32,
    pub time_source: TimeSource,
    /// Bytes of each request/response head to capture (1..=CAPTURE_MAX).
    pub head_capture_bytes: u32,
    /// Ring-buffer size in bytes (a power of two, at least a page).
    pub ringbuf_bytes: u32,
}

impl LoadOptions {
    /// Defaults for tests and tools: small flow table, live clock.
    pub fn for_tests() -> LoadOptions {
        LoadOptions {
            max_flows: 4096,
            time_source: TimeSource::Monotonic,
            head_capture_bytes: LIVE_HEAD_CAPTURE_BYTES,
            ringbuf_bytes: 8 << 20,
        }
    }
}

/// The ring's default size: 1 MiB per online CPU, rounded up to a power of two, 2 MiB to
/// 128 MiB. The reader drains it every [`READ_POLL`]; every [`FILL_CHECK_RECORDS`] records
/// (at most 256 records of up to 2.3 KiB: 590 KiB) a CPU wakes it if a quarter of the ring is
/// unread: a quarter plus every CPU's 590 KiB still fits, so no CPU fills the ring between
/// two checks. No larger:
/// the producers cycle through the whole ring, and a ring that stays in the caches makes each
/// head capture cheaper (a 1 KiB head costs ~100 ns more to write into a cold 8 MiB ring than
/// into a 2 MiB one on the bench machine, `cargo xtask bench`).
pub fn default_ringbuf_bytes() -> u32 {
    const PER_CPU: u32 = 1 << 20;
    let cpus = aya::util::online_cpus()
        .map(|cpus| cpus.len() as u32)
        .unwrap_or(8);
    cpus.saturating_mul(PER_CPU)
        .checked_next_power_of_two()
        .unwrap_or(128 << 20)
        .clamp(2 << 20, 128 << 20)
}

/// How long the reader sleeps between ring-buffer checks when the kernel does not wake it. The
/// kernel wakes it only when it finds a quarter of the ring unread, so up to that rate
/// (512 KiB of the smallest default ring per 5 ms, ~100 MB/s, ~40,000 requests/s with a head
/// capture each way) no submit wakes it; faster, the kernel wakes it at most as often as a
/// wakeup every 256 records per CPU would. A wakeup is a self-IPI in the kernel
/// program (microseconds, an exit to the hypervisor in a VM); a timer tick in an idle reader
/// costs a few microseconds 200 times a second.
pub const READ_POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// Records per CPU between two of the kernel's checks of how full the ring is (one
/// `bpf_ringbuf_query`, ~100 ns: under 0.5 ns per record). 256 records of ~2.3 KiB from each
/// CPU stay well inside the default ring.
const FILL_CHECK_RECORDS: u32 = 256;

/// Loads maps and both classifiers into the kernel (not attached anywhere yet).
pub fn load(opts: LoadOptions) -> anyhow::Result<Ebpf> {
    load_with_pins(opts, None)
}

/// As [`load`], with the maps [`PinDir::prepare`] checked reused from (or pinned to) `pins`.
pub fn load_with_pins(opts: LoadOptions, pins: Option<&PinDir>) -> anyhow::Result<Ebpf> {
    raise_memlock_limit();
    let time_source = opts.time_source as u8;
    let head = opts.head_capture_bytes.clamp(1, CAPTURE_MAX as u32);
    if !opts.ringbuf_bytes.is_power_of_two() || opts.ringbuf_bytes < 4096 {
        anyhow::bail!(
            "ring-buffer size {} must be a power of two of at least 4096",
            opts.ringbuf_bytes
        );
    }
    let ns_per_tick = ns_per_tick();
    // A quarter of the ring: more than a reader on its timer leaves unread at the rates it keeps
    // up with, and with every CPU's records until its next check still less than the ring.
    let wake_avail_bytes = u64::from(opts.ringbuf_bytes / 4);
    let mut loader = EbpfLoader::new();
    if let Some(pins) = pins {
        for shape in pinned_maps(opts.max_flows, opts.ringbuf_bytes) {
            loader.map_pin_path(shape.name, pins.map(shape.name));
        }
    }
    let mut ebpf = loader
        .map_max_entries(names::MAP_FLOWS, opts.max_flows)
        .map_max_entries(names::MAP_EVENTS, opts.ringbuf_bytes)
        .override_global(names::GLOBAL_TIME_SOURCE, &time_source, true)
        .override_global(names::GLOBAL_HEAD_CAPTURE_LEN, &head, true)
        .override_global(names::GLOBAL_FILL_CHECK_RECORDS, &FILL_CHECK_RECORDS, true)
        .override_global(names::GLOBAL_WAKE_AVAIL_BYTES, &wake_avail_bytes, true)
        .override_global(names::GLOBAL_NS_PER_TICK, &ns_per_tick, true)
        .load(OBJECT)
        .context("loading the eBPF object (needs root or CAP_BPF + CAP_NET_ADMIN)")?;
    for name in [names::PROG_INGRESS, names::PROG_EGRESS] {
        classifier(&mut ebpf, name)?.load().with_context(|| {
            let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|r| r.trim().to_owned())
                .unwrap_or_else(|_| "?".to_owned());
            format!(
                "verifier rejected program {name} on kernel {release} (Siphon's programs pass \
                 the verifiers of Linux {MIN_TESTED_KERNEL} and newer)"
            )
        })?;
    }
    Ok(ebpf)
}

pub fn classifier<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut SchedClassifier> {
    ebpf.program_mut(name)
        .with_context(|| format!("program {name} missing from the eBPF object"))?
        .try_into()
        .with_context(|| format!("program {name} is not a TC classifier"))
}

/// The kernel tick: the coarse clock's resolution is exactly one tick (10^9 / CONFIG_HZ).
fn ns_per_tick() -> u64 {
    let mut res = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_getres writes the struct we pass.
    let rc = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut res) };
    let ns = res.tv_sec as u64 * 1_000_000_000 + res.tv_nsec as u64;
    if rc == 0 && (1_000_000..=10_000_000).contains(&ns) {
        ns
    } else {
        tracing::warn!("cannot read the kernel tick; assuming HZ=250");
        4_000_000
    }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; later ones to the memory cgroup and
/// ignore it. Raising it is harmless where it does not matter.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads the struct we pass and has no other effect on our memory.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
    if rc != 0 {
        tracing::debug!(
            "could not raise RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use object::{Object as _, ObjectSection as _, ObjectSymbol as _, RelocationTarget};

    /// The compiler's memory functions, which the BPF backend calls as byte-at-a-time loops
    /// instead of expanding them (see agent-ebpf/src/mem.rs).
    const MEM_FUNCTIONS: [&str; 5] = ["memset", "memcpy", "memmove", "memcmp", "bcmp"];

    #[test]
    fn programs_call_no_byte_loop_memory_functions() {
        let file = object::File::parse(super::OBJECT).expect("the embedded object is ELF");
        let mut calls = Vec::new();
        for section in file.sections() {
            for (offset, reloc) in section.relocations() {
                let RelocationTarget::Symbol(index) = reloc.target() else {
                    continue;
                };
                let Ok(symbol) = file.symbol_by_index(index) else {
                    continue;
                };
                let name = symbol.name().unwrap_or_default();
                if MEM_FUNCTIONS.contains(&name) {
                    calls.push(format!(
                        "{} at {offset:#x} calls {name}",
                        section.name().unwrap_or("?")
                    ));
                }
            }
        }
        assert!(
            calls.is_empty(),
            "the eBPF object calls memory functions (use mem::put or split the store): {calls:#?}"
        );
    }

    #[test]
    fn the_check_sees_named_relocations() {
        // The test above passes vacuously if it cannot name relocation targets. The memory
        // functions are global symbols, like the maps the programs reference: those must show.
        let file = object::File::parse(super::OBJECT).expect("the embedded object is ELF");
        let seen = file.sections().any(|section| {
            section
                .relocations()
                .any(|(_, reloc)| match reloc.target() {
                    RelocationTarget::Symbol(index) => file
                        .symbol_by_index(index)
                        .ok()
                        .and_then(|s| s.name().ok())
                        .is_some_and(|name| name == "FLOWS"),
                    _ => false,
                })
        });
        assert!(
            seen,
            "no relocation naming the FLOWS map found in the object"
        );
    }
}
