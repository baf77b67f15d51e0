//! Attaching the classifiers to interfaces: tcx links where the kernel has them, cls_bpf on a
//! clsact qdisc otherwise. Never removes a qdisc or filter someone else installed, and refuses
//! to attach twice to one interface (two agents would double every count).

use std::{
    collections::BTreeMap,
    fs::{self, File, OpenOptions},
    io::{Read as _, Seek as _, Write as _},
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::PathBuf,
    process::Command,
};

use agent_common::names;
use anyhow::{bail, Context as _};
use aya::{
    programs::{
        tc::{self, NlOptions, SchedClassifierLinkId, TcAttachOptions},
        LinkOrder, SchedClassifier, TcAttachType,
    },
    util::KernelVersion,
    Ebpf,
};

use crate::{
    cmd::args::AttachMode,
    kernel::{ifaces::Iface, object::classifier},
};

/// Where per-interface lock files live. Shared with the host in the DaemonSet (hostPath), so
/// two agents on one node see each other's locks.
const LOCK_DIR: &str = "/run/siphon";

/// The attach mechanism actually in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    Tcx,
    Netlink,
}

impl Mechanism {
    pub fn resolve(mode: AttachMode) -> anyhow::Result<Mechanism> {
        Ok(match mode {
            AttachMode::Tcx => Mechanism::Tcx,
            AttachMode::Netlink => Mechanism::Netlink,
            AttachMode::Auto => {
                let tcx_since = KernelVersion::new(6, 6, 0);
                match KernelVersion::current() {
                    Ok(v) if v >= tcx_since => Mechanism::Tcx,
                    Ok(_) => Mechanism::Netlink,
                    Err(e) => {
                        tracing::warn!(
                            "cannot read the kernel version ({e}); using netlink attach"
                        );
                        Mechanism::Netlink
                    }
                }
            }
        })
    }

    pub fn label(self) -> &'static str {
        match self {
            Mechanism::Tcx => "tcx",
            Mechanism::Netlink => "netlink",
        }
    }
}

struct Attachment {
    name: String,
    ingress: SchedClassifierLinkId,
    egress: SchedClassifierLinkId,
    /// Whether we created the clsact qdisc (netlink mode) and so may remove it.
    added_clsact: bool,
    lock: InterfaceLock,
}

/// The interfaces we are attached to, by ifindex.
pub struct Attacher {
    mechanism: Mechanism,
    attached: BTreeMap<u32, Attachment>,
}

impl Attacher {
    pub fn new(mechanism: Mechanism) -> Attacher {
        Attacher {
            mechanism,
            attached: BTreeMap::new(),
        }
    }

    pub fn is_attached(&self, ifindex: u32) -> bool {
        self.attached.contains_key(&ifindex)
    }

    pub fn count(&self) -> usize {
        self.attached.len()
    }

    pub fn attached_ifindexes(&self) -> Vec<u32> {
        self.attached.keys().copied().collect()
    }

    /// Attaches both directions to `iface`. On failure nothing stays attached.
    pub fn attach(&mut self, ebpf: &mut Ebpf, iface: &Iface) -> anyhow::Result<()> {
        if self.is_attached(iface.index) {
            return Ok(());
        }
        let lock = InterfaceLock::acquire(iface)?;
        if self.mechanism == Mechanism::Tcx {
            refuse_if_already_attached(iface)?;
        }
        let added_clsact = match self.mechanism {
            Mechanism::Tcx => false,
            Mechanism::Netlink => match tc::qdisc_add_clsact(&iface.name) {
                Ok(()) => true,
                // Someone (maybe Cilium, maybe an earlier tool) already has one: use it, keep it.
                Err(tc::TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {
                    false
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("adding clsact qdisc to {}", iface.name))
                }
            },
        };
        let ingress = self.attach_one(
            ebpf,
            names::PROG_INGRESS,
            &iface.name,
            TcAttachType::Ingress,
        );
        let egress = match &ingress {
            Ok(_) => self.attach_one(ebpf, names::PROG_EGRESS, &iface.name, TcAttachType::Egress),
            Err(_) => Err(anyhow::anyhow!("not attempted")),
        };
        let err = match (ingress, egress) {
            (Ok(ingress), Ok(egress)) => {
                self.attached.insert(
                    iface.index,
                    Attachment {
                        name: iface.name.clone(),
                        ingress,
                        egress,
                        added_clsact,
                        lock,
                    },
                );
                tracing::info!(interface = %iface.name, mechanism = self.mechanism.label(), "attached");
                return Ok(());
            }
            (Ok(ingress), Err(e)) => {
                let _ = classifier(ebpf, names::PROG_INGRESS).and_then(|p| Ok(p.detach(ingress)?));
                e
            }
            (Err(e), _) => e,
        };
        if added_clsact {
            remove_clsact(&iface.name);
        }
        lock.release();
        Err(err).with_context(|| format!("attaching to {}", iface.name))
    }

    fn attach_one(
        &self,
        ebpf: &mut Ebpf,
        prog: &str,
        iface: &str,
        attach_type: TcAttachType,
    ) -> anyhow::Result<SchedClassifierLinkId> {
        let program: &mut SchedClassifier = classifier(ebpf, prog)?;
        let options = match self.mechanism {
            Mechanism::Tcx => TcAttachOptions::TcxOrder(LinkOrder::default()),
            Mechanism::Netlink => TcAttachOptions::Netlink(NlOptions::default()),
        };
        Ok(program.attach_with_options(iface, attach_type, options)?)
    }

    /// Forgets an interface that disappeared (its links went with it).
    pub fn forget(&mut self, ebpf: &mut Ebpf, ifindex: u32) -> Option<String> {
        let a = self.attached.remove(&ifindex)?;
        // The kernel already detached the links when the device went away; dropping our ids
        // here only releases the file descriptors.
        let _ = classifier(ebpf, names::PROG_INGRESS).and_then(|p| Ok(p.detach(a.ingress)?));
        let _ = classifier(ebpf, names::PROG_EGRESS).and_then(|p| Ok(p.detach(a.egress)?));
        a.lock.release();
        Some(a.name)
    }

    /// Detaches from every interface, removing only the qdiscs we created.
    pub fn detach_all(&mut self, ebpf: &mut Ebpf) {
        for (_, a) in std::mem::take(&mut self.attached) {
            for (prog, id) in [
                (names::PROG_INGRESS, a.ingress),
                (names::PROG_EGRESS, a.egress),
            ] {
                if let Err(e) = classifier(ebpf, prog).and_then(|p| Ok(p.detach(id)?)) {
                    tracing::warn!(interface = %a.name, "detaching {prog}: {e:#}");
                }
            }
            if a.added_clsact {
                remove_clsact(&a.name);
            }
            a.lock.release();
            tracing::info!(interface = %a.name, "detached");
        }
    }
}

/// A tcx query sees a Siphon started in another mount namespace too, which the lock file
/// would not.
fn refuse_if_already_attached(iface: &Iface) -> anyhow::Result<()> {
    for attach_type in [TcAttachType::Ingress, TcAttachType::Egress] {
        let (_, programs) = SchedClassifier::query_tcx(&iface.name, attach_type)
            .with_context(|| format!("querying tcx programs on {}", iface.name))?;
        for p in programs {
            let name = p.name_as_str().unwrap_or_default();
            if name == names::PROG_INGRESS || name == names::PROG_EGRESS {
                bail!(
                    "interface {} already has Siphon's {} program attached (prog id {}): another \
                     siphon is running on it; stop it first",
                    iface.name,
                    name,
                    p.id()
                );
            }
        }
    }
    Ok(())
}

/// `tc qdisc del dev X clsact`. aya has no call for deleting a qdisc; this path only runs on
/// kernels without tcx, for a qdisc we created ourselves.
fn remove_clsact(iface: &str) {
    match Command::new("tc")
        .args(["qdisc", "del", "dev", iface, "clsact"])
        .status()
    {
        Ok(s) if s.success() => {}
        Ok(s) => tracing::warn!(
            interface = iface,
            "removing our clsact qdisc: tc exited with {s}"
        ),
        Err(e) => tracing::warn!(
            interface = iface,
            "removing our clsact qdisc: cannot run tc: {e}"
        ),
    }
}

/// An exclusive flock per (network namespace, ifindex), held while attached.
struct InterfaceLock {
    file: File,
    path: PathBuf,
}

impl InterfaceLock {
    fn acquire(iface: &Iface) -> anyhow::Result<InterfaceLock> {
        fs::create_dir_all(LOCK_DIR).with_context(|| format!("creating {LOCK_DIR}"))?;
        let netns = fs::metadata("/proc/self/ns/net")
            .map(|m| m.ino())
            .context("reading own netns")?;
        let path = PathBuf::from(LOCK_DIR).join(format!("netns-{netns}-if-{}.lock", iface.index));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            bail!(
                "interface {} is already watched by another siphon (pid {}; lock {})",
                iface.name,
                holder.trim(),
                path.display()
            );
        }
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        Ok(InterfaceLock { file, path })
    }

    fn release(self) {
        // Remove first, then unlock by closing: a waiter that opened the old path gets the lock
        // on an unlinked file and retries with a fresh open at its next attach attempt.
        let _ = fs::remove_file(&self.path);
        drop(self.file);
    }
}
