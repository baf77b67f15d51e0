//! The embedded eBPF object: load it with the run's options and load its programs.

use agent_common::{names, TimeSource};
use anyhow::Context as _;
use aya::{programs::SchedClassifier, Ebpf, EbpfLoader};

/// The object built by build.rs from agent-ebpf.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/siphon"));

#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    pub max_flows: u32,
    pub time_source: TimeSource,
}

/// Loads maps and both classifiers into the kernel (not attached anywhere yet).
pub fn load(opts: LoadOptions) -> anyhow::Result<Ebpf> {
    raise_memlock_limit();
    let time_source = opts.time_source as u8;
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(names::MAP_FLOWS, opts.max_flows)
        .override_global(names::GLOBAL_TIME_SOURCE, &time_source, true)
        .load(OBJECT)
        .context("loading the eBPF object (needs root or CAP_BPF + CAP_NET_ADMIN)")?;
    for name in [names::PROG_INGRESS, names::PROG_EGRESS] {
        classifier(&mut ebpf, name)?
            .load()
            .with_context(|| format!("verifier rejected program {name}"))?;
    }
    Ok(ebpf)
}

pub fn classifier<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut SchedClassifier> {
    ebpf.program_mut(name)
        .with_context(|| format!("program {name} missing from the eBPF object"))?
        .try_into()
        .with_context(|| format!("program {name} is not a TC classifier"))
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
