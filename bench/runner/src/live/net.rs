//! The live cross-check's setup: the programs attached with tcx and timed by the kernel's
//! run-time statistics, and the namespaces and veth pair they are attached in (deleted on
//! drop, also when the run fails).

use agent_common::names;
use anyhow::{ensure, Context as _};
use aya::{
    programs::{tc::TcAttachOptions, LinkOrder, TcAttachType},
    Ebpf,
};
use siphon_agent::kernel::object::{self as ebpf_object, LoadOptions};
use siphon_testkit::{NetNs, Pair};

use super::{CLIENT, SERVER};
use crate::{BASELINES, MAX_FLOWS, PROG_FLOOR, PROG_LRU};

/// Run time and count of one program, from the kernel's statistics.
#[derive(Clone, Copy, Default)]
pub(super) struct Stat {
    pub(super) ns: u64,
    pub(super) runs: u64,
}

/// The six attached programs: Siphon, LRU counter and floor, on ingress and on egress.
#[derive(Clone, Copy, Default)]
pub(super) struct Snapshot {
    // [ingress, egress]
    pub(super) siphon: [Stat; 2],
    pub(super) lru: [Stat; 2],
    pub(super) floor: [Stat; 2],
}

pub(super) struct Programs {
    pub(super) siphon: Ebpf,
    /// One instance of the baselines per direction: statistics are per program.
    baselines: [Ebpf; 2],
}

pub(super) const DIRECTIONS: [TcAttachType; 2] = [TcAttachType::Ingress, TcAttachType::Egress];

impl Programs {
    /// Loads all three and attaches them to `dev`, in this thread's namespace: Siphon first in
    /// each direction (it meets the packet first, as it would alone), then the LRU counter,
    /// then the floor.
    pub(super) fn attach(dev: &str, head_capture_bytes: u32) -> anyhow::Result<Programs> {
        let siphon = ebpf_object::load(LoadOptions {
            max_flows: MAX_FLOWS,
            head_capture_bytes,
            ringbuf_bytes: ebpf_object::default_ringbuf_bytes(),
            ..LoadOptions::for_tests()
        })?;
        let baselines = [load_baselines()?, load_baselines()?];
        let mut programs = Programs { siphon, baselines };
        for (i, direction) in DIRECTIONS.into_iter().enumerate() {
            let siphon_name = siphon_program(i);
            attach_last(&mut programs.siphon, siphon_name, dev, direction)?;
            for name in [PROG_LRU, PROG_FLOOR] {
                attach_last(&mut programs.baselines[i], name, dev, direction)?;
            }
        }
        Ok(programs)
    }

    pub(super) fn snapshot(&mut self) -> anyhow::Result<Snapshot> {
        let mut s = Snapshot::default();
        for i in 0..2 {
            s.siphon[i] = stat(&mut self.siphon, siphon_program(i))?;
            s.lru[i] = stat(&mut self.baselines[i], PROG_LRU)?;
            s.floor[i] = stat(&mut self.baselines[i], PROG_FLOOR)?;
        }
        Ok(s)
    }
}

pub(super) fn siphon_program(direction: usize) -> &'static str {
    if direction == 0 {
        names::PROG_INGRESS
    } else {
        names::PROG_EGRESS
    }
}

pub(super) fn load_baselines() -> anyhow::Result<Ebpf> {
    let mut ebpf = Ebpf::load(BASELINES).context("loading the baseline programs")?;
    for name in [PROG_FLOOR, PROG_LRU] {
        ebpf_object::classifier(&mut ebpf, name)?
            .load()
            .with_context(|| format!("verifier rejected program {name}"))?;
    }
    Ok(ebpf)
}

pub(super) fn attach_last(
    ebpf: &mut Ebpf,
    name: &str,
    dev: &str,
    direction: TcAttachType,
) -> anyhow::Result<()> {
    ebpf_object::classifier(ebpf, name)?
        .attach_with_options(dev, direction, TcAttachOptions::TcxOrder(LinkOrder::last()))
        .with_context(|| format!("attaching {name} to {dev} ({direction:?}) with tcx"))?;
    Ok(())
}

pub(super) fn stat(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<Stat> {
    let info = ebpf_object::classifier(ebpf, name)?
        .info()
        .with_context(|| format!("program info of {name}"))?;
    Ok(Stat {
        ns: info.run_time().as_nanos() as u64,
        runs: info.run_count(),
    })
}

/// The bench's subnet: the server is 10.251.79.1 ([`SERVER`]), the client .2 ([`CLIENT`]).
const SUBNET: u8 = 79;

/// The server and client namespaces and the veth pair between them, offloads off; all
/// deleted on drop.
pub(super) struct Topology {
    pair: Pair,
}

impl Topology {
    pub(super) fn create() -> anyhow::Result<Topology> {
        let pair = Pair::new(SUBNET)?.without_offloads()?;
        ensure!(
            pair.v4_a == SERVER.to_string() && pair.v4_b == CLIENT.to_string(),
            "the pair's addresses ({}, {}) are not the bench's",
            pair.v4_a,
            pair.v4_b
        );
        Ok(Topology { pair })
    }

    pub(super) fn server(&self) -> &NetNs {
        &self.pair.a
    }

    pub(super) fn client(&self) -> &NetNs {
        &self.pair.b
    }

    pub(super) fn server_dev(&self) -> &str {
        &self.pair.dev_a
    }
}
