//! Attaching the classifiers to interfaces: tcx links where the kernel has them, cls_bpf on a
//! clsact qdisc otherwise. Never removes a qdisc or filter someone else installed, and refuses
//! to attach twice to one interface (two agents would double every count).

use std::{
    collections::BTreeMap,
    fs::{self, File, OpenOptions},
    io::{Read as _, Seek as _, Write as _},
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
    process::Command,
};

use agent_common::names;
use anyhow::{bail, Context as _};
use aya::{
    programs::{
        links::{FdLink, PinnedLink},
        tc::{self, NlOptions, SchedClassifierLink, SchedClassifierLinkId, TcAttachOptions},
        LinkOrder, SchedClassifier, TcAttachType,
    },
    util::KernelVersion,
    Ebpf,
};

use crate::{
    cmd::args::AttachMode,
    kernel::{ifaces::Iface, object::classifier, pin::PinDir},
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
    ingress: Held,
    egress: Held,
    /// Whether we created the clsact qdisc (netlink mode) and so may remove it.
    added_clsact: bool,
    lock: InterfaceLock,
}

/// One direction's link.
enum Held {
    /// Owned by the program object: detached when we detach it or exit (tcx links are file
    /// descriptors; netlink filters we remove).
    Owned(SchedClassifierLinkId),
    /// A tcx link pinned in bpffs: stays attached if we die, so the counts go on and the next
    /// agent takes it over; removing the pin and dropping the link detaches it.
    Pinned {
        link: SchedClassifierLink,
        pin: PathBuf,
    },
}

/// The interfaces we are attached to, by ifindex.
pub struct Attacher {
    mechanism: Mechanism,
    pins: Option<PinDir>,
    attached: BTreeMap<u32, Attachment>,
}

impl Attacher {
    /// `pins`: where tcx links are pinned and found again after a restart (none: links live
    /// and die with this process).
    pub fn new(mechanism: Mechanism, pins: Option<PinDir>) -> Attacher {
        Attacher {
            mechanism,
            pins,
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

    /// Attaches both directions to `iface`, taking over links a previous Siphon left pinned or
    /// filters it left behind. On failure nothing of ours stays attached.
    pub fn attach(&mut self, ebpf: &mut Ebpf, iface: &Iface) -> anyhow::Result<()> {
        if self.is_attached(iface.index) {
            return Ok(());
        }
        let lock = InterfaceLock::acquire(iface)?;
        let added_clsact = match self.mechanism {
            Mechanism::Tcx => false,
            Mechanism::Netlink => {
                let added = match tc::qdisc_add_clsact(&iface.name) {
                    Ok(()) => {
                        lock.mark_clsact(&iface.name);
                        true
                    }
                    // Someone (maybe Cilium, maybe an earlier tool) already has one: use it,
                    // keep it, unless the marker says a Siphon that died created it.
                    Err(tc::TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {
                        lock.clsact_marked(&iface.name)
                    }
                    Err(e) => {
                        return Err(e)
                            .with_context(|| format!("adding clsact qdisc to {}", iface.name))
                    }
                };
                // We hold the interface lock, so a Siphon filter here belongs to an agent that
                // died without detaching (netlink filters outlive processes): replace it, or
                // every packet would be counted twice.
                remove_leftover_filters(&iface.name);
                added
            }
        };
        let ingress = self.attach_one(ebpf, iface, TcAttachType::Ingress);
        let egress = match &ingress {
            Ok(_) => self.attach_one(ebpf, iface, TcAttachType::Egress),
            Err(_) => Err(anyhow::anyhow!("not attempted")),
        };
        let err = match (ingress, egress) {
            (Ok(ingress), Ok(egress)) => {
                let attachment = Attachment {
                    name: iface.name.clone(),
                    ingress,
                    egress,
                    added_clsact,
                    lock,
                };
                if self.mechanism == Mechanism::Tcx {
                    if let Err(e) = refuse_if_other_siphon(ebpf, iface) {
                        release(ebpf, attachment);
                        return Err(e);
                    }
                }
                self.attached.insert(iface.index, attachment);
                tracing::info!(interface = %iface.name, mechanism = self.mechanism.label(), "attached");
                return Ok(());
            }
            (Ok(ingress), Err(e)) => {
                unhold(ebpf, names::PROG_INGRESS, ingress, &iface.name);
                e
            }
            (Err(e), _) => e,
        };
        if added_clsact {
            remove_clsact(&iface.name);
            lock.unmark_clsact();
        }
        lock.release();
        Err(err).with_context(|| format!("attaching to {}", iface.name))
    }

    fn attach_one(
        &self,
        ebpf: &mut Ebpf,
        iface: &Iface,
        attach_type: TcAttachType,
    ) -> anyhow::Result<Held> {
        let (prog, label) = match attach_type {
            TcAttachType::Egress => (names::PROG_EGRESS, "egress"),
            _ => (names::PROG_INGRESS, "ingress"),
        };
        let program: &mut SchedClassifier = classifier(ebpf, prog)?;
        let options = match self.mechanism {
            Mechanism::Tcx => TcAttachOptions::TcxOrder(LinkOrder::default()),
            Mechanism::Netlink => TcAttachOptions::Netlink(NlOptions::default()),
        };
        let Some(pins) = self
            .pins
            .as_ref()
            .filter(|_| self.mechanism == Mechanism::Tcx)
        else {
            return Ok(Held::Owned(program.attach_with_options(
                &iface.name,
                attach_type,
                options,
            )?));
        };
        let pin = pins.link(iface.index, label);
        if pin.exists() {
            match take_over(program, &pin) {
                Ok(link) => {
                    tracing::info!(interface = %iface.name, direction = label, "took over the pinned link");
                    return Ok(Held::Pinned { link, pin });
                }
                // Its interface went away (the link is defunct) or it is not a tcx link.
                Err(e) => {
                    tracing::warn!(interface = %iface.name, "pinned link {} not reusable, replacing it: {e:#}", pin.display());
                    fs::remove_file(&pin).with_context(|| format!("removing {}", pin.display()))?;
                }
            }
        }
        let id = program.attach_with_options(&iface.name, attach_type, options)?;
        let link: FdLink = program.take_link(id)?.try_into()?;
        // If pinning fails the link is dropped here, which detaches it: nothing half-done.
        let pinned = link
            .pin(&pin)
            .with_context(|| format!("pinning the link at {}", pin.display()))?;
        Ok(Held::Pinned {
            link: SchedClassifierLink::try_from(FdLink::from(pinned))?,
            pin,
        })
    }

    /// Forgets an interface that disappeared (its links went with it).
    pub fn forget(&mut self, ebpf: &mut Ebpf, ifindex: u32) -> Option<String> {
        let a = self.attached.remove(&ifindex)?;
        let name = a.name.clone();
        // The kernel already detached the links when the device went away; this releases the
        // file descriptors and pins.
        release(ebpf, a);
        Some(name)
    }

    /// Detaches from every interface, removing only the qdiscs we created.
    pub fn detach_all(&mut self, ebpf: &mut Ebpf) {
        for (_, a) in std::mem::take(&mut self.attached) {
            let name = a.name.clone();
            release(ebpf, a);
            tracing::info!(interface = %name, "detached");
        }
    }
}

/// Replaces the program of the tcx link pinned at `pin` by ours, atomically (no packet goes
/// uncounted between the old agent's program and ours).
fn take_over(program: &mut SchedClassifier, pin: &Path) -> anyhow::Result<SchedClassifierLink> {
    let old = PinnedLink::from_pin(pin)?;
    let link = SchedClassifierLink::try_from(FdLink::from(old))?;
    let id = program.attach_to_link(link)?;
    Ok(program.take_link(id)?)
}

fn unhold(ebpf: &mut Ebpf, prog: &str, held: Held, iface: &str) {
    match held {
        Held::Owned(id) => {
            if let Err(e) = classifier(ebpf, prog).and_then(|p| Ok(p.detach(id)?)) {
                tracing::warn!(interface = iface, "detaching {prog}: {e:#}");
            }
        }
        Held::Pinned { link, pin } => {
            // Unpinned and closed, the link has no reference left and the kernel detaches it.
            if let Err(e) = fs::remove_file(&pin) {
                tracing::warn!(interface = iface, "removing pin {}: {e}", pin.display());
            }
            drop(link);
        }
    }
}

fn release(ebpf: &mut Ebpf, a: Attachment) {
    unhold(ebpf, names::PROG_INGRESS, a.ingress, &a.name);
    unhold(ebpf, names::PROG_EGRESS, a.egress, &a.name);
    if a.added_clsact {
        remove_clsact(&a.name);
        a.lock.unmark_clsact();
    }
    a.lock.release();
}

/// Siphon's filters on `iface`, left by an agent that died (see the caller).
fn remove_leftover_filters(iface: &str) {
    for attach_type in [TcAttachType::Ingress, TcAttachType::Egress] {
        for prog in [names::PROG_INGRESS, names::PROG_EGRESS] {
            match tc::qdisc_detach_program(iface, attach_type, prog) {
                Ok(()) => tracing::warn!(
                    interface = iface,
                    "removed {prog} left attached by a Siphon that did not exit cleanly"
                ),
                Err(tc::TcError::IoError(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(interface = iface, "looking for leftover {prog}: {e}"),
            }
        }
    }
}

/// A tcx query sees a Siphon started in another mount namespace too, which the lock file
/// would not. Our own programs (on links just made or taken over) are expected there.
fn refuse_if_other_siphon(ebpf: &mut Ebpf, iface: &Iface) -> anyhow::Result<()> {
    let mut ours = Vec::new();
    for name in [names::PROG_INGRESS, names::PROG_EGRESS] {
        ours.push(classifier(ebpf, name)?.info()?.id());
    }
    for attach_type in [TcAttachType::Ingress, TcAttachType::Egress] {
        // Naming the attached programs opens each by id, which needs CAP_SYS_ADMIN: after the
        // capability drop (cmd/caps.rs) an interface attached later cannot be checked this
        // way. The interface lock still keeps out a second agent of this node's /run/siphon.
        let programs = match SchedClassifier::query_tcx(&iface.name, attach_type) {
            Ok((_, programs)) => programs,
            Err(e) => {
                tracing::debug!(interface = %iface.name, "cannot name the tcx programs attached, so a Siphon of another mount namespace would go unseen: {e}");
                continue;
            }
        };
        for p in programs {
            let name = p.name_as_str().unwrap_or_default();
            if (name == names::PROG_INGRESS || name == names::PROG_EGRESS)
                && !ours.contains(&p.id())
            {
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

    /// The marker saying we created the clsact qdisc on this interface, so that an agent
    /// restarted after a crash knows the qdisc is Siphon's to remove.
    fn clsact_marker(&self) -> PathBuf {
        self.path.with_extension("clsact")
    }

    fn mark_clsact(&self, iface: &str) {
        if let Err(e) = fs::write(self.clsact_marker(), iface) {
            tracing::warn!(interface = iface, "recording our clsact qdisc: {e}");
        }
    }

    /// Whether the marker names this interface (an ifindex may be reused by another one).
    fn clsact_marked(&self, iface: &str) -> bool {
        fs::read_to_string(self.clsact_marker()).is_ok_and(|name| name == iface)
    }

    fn unmark_clsact(&self) {
        let _ = fs::remove_file(self.clsact_marker());
    }

    fn release(self) {
        // Remove first, then unlock by closing: a waiter that opened the old path gets the lock
        // on an unlinked file and retries with a fresh open at its next attach attempt.
        let _ = fs::remove_file(&self.path);
        drop(self.file);
    }
}
