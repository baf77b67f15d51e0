//! Capabilities: `siphon run` names the ones it lacks before touching the kernel, and gives up
//! the ones it no longer needs once attached, so that a compromise of the running agent (it
//! parses bytes from the network) yields as little as possible.
//!
//! Capabilities are per thread on Linux: the drop happens on the main thread before the
//! reader, the sweeper and the secret watcher are started, so every thread inherits the reduced
//! sets. The bounding set is reduced too, so that a program Siphon runs (`tc` at exit) does not
//! get them back through root's exec rules.

use caps::{CapSet, Capability, CapsHashSet};

/// What `siphon run` needs to load and attach. `CAP_SYS_ADMIN` stands in for `CAP_BPF` and
/// `CAP_PERFMON` (it implies both for BPF purposes).
const REQUIRED: &[(Capability, &str)] = &[
    (Capability::CAP_BPF, "load the program and create its maps"),
    (
        Capability::CAP_NET_ADMIN,
        "attach to interfaces (tcx or cls_bpf)",
    ),
];
/// Needed only where the verifier asks for it (pointer arithmetic on some kernels).
const RECOMMENDED: &[(Capability, &str)] = &[(
    Capability::CAP_PERFMON,
    "the verifier needs it on some kernels",
)];

fn effective() -> anyhow::Result<CapsHashSet> {
    caps::read(None, CapSet::Effective).map_err(|e| anyhow::anyhow!("reading capabilities: {e}"))
}

/// Fails, naming every missing capability and what it is for, when `run` could not attach.
pub fn check_at_start() -> anyhow::Result<()> {
    let have = effective()?;
    let sys_admin = have.contains(&Capability::CAP_SYS_ADMIN);
    let missing = |list: &[(Capability, &'static str)]| -> Vec<String> {
        list.iter()
            .filter(|(c, _)| {
                let covered = sys_admin && *c != Capability::CAP_NET_ADMIN;
                !have.contains(c) && !covered
            })
            .map(|(c, why)| format!("{c} ({why})"))
            .collect()
    };
    let soft = missing(RECOMMENDED);
    if !soft.is_empty() {
        tracing::warn!(
            "missing {}; loading may fail on this kernel",
            soft.join(", ")
        );
    }
    let hard = missing(REQUIRED);
    anyhow::ensure!(
        hard.is_empty(),
        "missing capabilities: {}. Run as root, or grant CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON \
         (Kubernetes: securityContext.capabilities.add [BPF, NET_ADMIN, PERFMON])",
        hard.join(", ")
    );
    Ok(())
}

/// What the agent still does after the first attach.
pub struct Needs {
    /// `--iface-pattern`: interfaces that appear later are attached by the sweeper.
    pub later_attach: bool,
    /// cls_bpf attachments are removed over netlink (and `tc`) at exit; tcx links go away when
    /// their descriptors close, which needs nothing.
    pub netlink_detach: bool,
}

/// The capabilities kept after attaching.
fn keep(needs: &Needs, bpf_syscalls: bool) -> CapsHashSet {
    let mut keep = CapsHashSet::new();
    if needs.later_attach || needs.netlink_detach {
        keep.insert(Capability::CAP_NET_ADMIN);
    }
    // Attaching a loaded program, and on kernels before 6.5 (where a sysctl still gates the
    // whole bpf() syscall) even reading a map through a descriptor already held, need CAP_BPF.
    if needs.later_attach || bpf_syscalls {
        keep.insert(Capability::CAP_BPF);
    }
    keep
}

/// Drops every capability not in [`keep`] from the effective, permitted, inheritable and
/// bounding sets; returns what was kept. `map_read` is tried with `CAP_BPF` (and
/// `CAP_SYS_ADMIN`) out of the effective set only (still permitted, so it can come back): if
/// it fails, this kernel gates map reads and `CAP_BPF` is kept.
pub fn drop_after_attach(
    needs: &Needs,
    map_read: impl FnOnce() -> bool,
) -> anyhow::Result<CapsHashSet> {
    let err = |e: caps::errors::CapsError| anyhow::anyhow!("dropping capabilities: {e}");
    let before = effective()?;
    let trial: CapsHashSet = before
        .iter()
        .copied()
        .filter(|c| *c != Capability::CAP_BPF && *c != Capability::CAP_SYS_ADMIN)
        .collect();
    caps::set(None, CapSet::Effective, &trial).map_err(err)?;
    let reads_without = map_read();
    caps::set(None, CapSet::Effective, &before).map_err(err)?;
    let mut keep = keep(needs, !reads_without);
    // Where CAP_BPF is missing, CAP_SYS_ADMIN did its work: keep that instead.
    if keep.remove(&Capability::CAP_BPF) {
        let bpf = if before.contains(&Capability::CAP_BPF) {
            Capability::CAP_BPF
        } else {
            Capability::CAP_SYS_ADMIN
        };
        keep.insert(bpf);
    }
    let keep: CapsHashSet = keep.intersection(&before).copied().collect();
    // The bounding set first: lowering it needs CAP_SETPCAP, which goes next.
    if before.contains(&Capability::CAP_SETPCAP) {
        for c in caps::read(None, CapSet::Bounding).map_err(err)? {
            if !keep.contains(&c) {
                caps::drop(None, CapSet::Bounding, c).map_err(err)?;
            }
        }
    }
    caps::set(None, CapSet::Inheritable, &CapsHashSet::new()).map_err(err)?;
    caps::set(None, CapSet::Effective, &keep).map_err(err)?;
    caps::set(None, CapSet::Permitted, &keep).map_err(err)?;
    let mut names: Vec<String> = keep.iter().map(|c| c.to_string()).collect();
    names.sort();
    tracing::info!(
        kept = %if names.is_empty() { "none".to_owned() } else { names.join(",") },
        "capabilities dropped after attaching"
    );
    Ok(keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_kept_follows_what_is_still_done() {
        let set = |n: &Needs, b| {
            let mut v: Vec<String> = keep(n, b).iter().map(|c| c.to_string()).collect();
            v.sort();
            v
        };
        let fixed = Needs {
            later_attach: false,
            netlink_detach: false,
        };
        assert!(set(&fixed, false).is_empty(), "tcx, fixed interfaces");
        assert_eq!(set(&fixed, true), ["CAP_BPF"], "a kernel gating map reads");
        let netlink = Needs {
            later_attach: false,
            netlink_detach: true,
        };
        assert_eq!(set(&netlink, false), ["CAP_NET_ADMIN"]);
        let dynamic = Needs {
            later_attach: true,
            netlink_detach: false,
        };
        assert_eq!(set(&dynamic, false), ["CAP_BPF", "CAP_NET_ADMIN"]);
    }
}
