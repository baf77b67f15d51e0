//! The live cross-check's setup: the programs attached with tcx and timed by the kernel's
//! run-time statistics, and the namespaces and veth pair they are attached in (deleted on
//! drop, also when the run fails).

use std::{fs::File, os::fd::AsRawFd as _, process::Command};

use agent_common::names;
use anyhow::{ensure, Context as _};
use aya::{
    programs::{tc::TcAttachOptions, LinkOrder, TcAttachType},
    Ebpf,
};
use siphon_agent::ebpf_object::{self, LoadOptions};

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

/// A network namespace of this run, deleted on drop (with its veth end, qdiscs and links).
pub(super) struct NetNs {
    pub(super) name: String,
}

impl NetNs {
    pub(super) fn new(tag: &str) -> anyhow::Result<NetNs> {
        let name = format!("sxb{}-{tag}", std::process::id());
        run("ip", &["netns", "add", &name])?;
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub(super) fn ip(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    pub(super) fn exec(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let mut full = vec!["netns", "exec", self.name.as_str(), program];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Moves the calling thread into this namespace.
    pub(super) fn enter(&self) -> anyhow::Result<()> {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).with_context(|| format!("opening {path}"))?;
        // SAFETY: setns on the calling thread with a valid namespace fd.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        ensure!(rc == 0, "setns {path}: {}", std::io::Error::last_os_error());
        Ok(())
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

pub(super) fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program} (installed by `cargo xtask setup`)"))?;
    ensure!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// The server and client namespaces and the veth pair between them, offloads off.
pub(super) struct Topology {
    pub(super) server: NetNs,
    pub(super) client: NetNs,
    pub(super) server_dev: String,
}

impl Topology {
    pub(super) fn create() -> anyhow::Result<Topology> {
        let server = NetNs::new("srv")?;
        let client = NetNs::new("cli")?;
        let server_dev = format!("sxbs{}", std::process::id() % 100_000);
        let client_dev = format!("sxbc{}", std::process::id() % 100_000);
        run(
            "ip",
            &[
                "link",
                "add",
                &server_dev,
                "netns",
                &server.name,
                "type",
                "veth",
                "peer",
                "name",
                &client_dev,
                "netns",
                &client.name,
            ],
        )?;
        for (ns, dev, addr) in [
            (&server, &server_dev, SERVER),
            (&client, &client_dev, CLIENT),
        ] {
            ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", dev])?;
            ns.exec(
                "ethtool",
                &["-K", dev, "tso", "off", "gso", "off", "gro", "off"],
            )?;
            ns.ip(&["link", "set", dev, "up"])?;
        }
        Ok(Topology {
            server,
            client,
            server_dev,
        })
    }
}
