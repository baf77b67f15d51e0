//! Pinning the kernel state in bpffs, so that a restarted agent (after a crash, `kill -9`, or a
//! rolling update) continues the counts of the one before it instead of starting from zero,
//! and takes over its tcx links instead of attaching a second time.
//!
//! Layout: `<base>/<layout version>/netns-<inode>/maps/<MAP>` and `.../links/if<N>-<dir>`.
//! The version is derived from the shared record and map layouts, so an agent never reads maps
//! written by a program that laid them out differently: pins of other versions (for our network
//! namespace) are removed at start, which also detaches the old version's pinned links. The
//! network namespace is part of the path because interface indexes are per namespace and two
//! agents in two namespaces must not share counters.

use std::{
    fs,
    io::ErrorKind,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use agent_common::{
    names, service_ports, ExchangeRecord, FlowKey, FlowState, IfaceCounters, IfaceKey, IfaceSlot,
    KernelCounter, PayloadHeader, SynRecord, IFACE_SLOTS,
};
use anyhow::{bail, Context as _};
use aya::maps::{MapInfo, MapType};

/// Bump when a pinned map or a ring record changes meaning without changing size (a field
/// reused, a counter index renumbered): sizes alone cannot show that, and the old pins must then
/// be replaced rather than read.
pub const LAYOUT_REVISION: u32 = 1;

/// bpffs's `f_type` (linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// A pinned map: what the kernel must report for a pin to be reused.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MapShape {
    pub name: &'static str,
    pub map_type: MapType,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

const fn size<T>() -> u32 {
    std::mem::size_of::<T>() as u32
}

/// Every map that is pinned, with the shape the eBPF object gives it (`agent-ebpf/src/`). The
/// scratch and wake-up maps are left out: they hold nothing worth keeping across a restart.
pub fn pinned_maps(max_flows: u32, ringbuf_bytes: u32) -> [MapShape; 7] {
    let shape = |name, map_type, key_size, value_size, max_entries| MapShape {
        name,
        map_type,
        key_size,
        value_size,
        max_entries,
    };
    [
        shape(
            names::MAP_FLOWS,
            MapType::LruHash,
            size::<FlowKey>(),
            size::<FlowState>(),
            max_flows,
        ),
        shape(
            names::MAP_SERVICE_PORTS,
            MapType::Array,
            4,
            size::<u64>(),
            service_ports::WORDS,
        ),
        shape(
            names::MAP_IFACE_COUNTERS,
            MapType::PerCpuHash,
            size::<IfaceKey>(),
            size::<IfaceCounters>(),
            4096,
        ),
        shape(
            names::MAP_IFACE_SLOTS,
            MapType::PerCpuArray,
            4,
            size::<IfaceSlot>(),
            2 * IFACE_SLOTS,
        ),
        shape(
            names::MAP_KERNEL_COUNTERS,
            MapType::PerCpuArray,
            4,
            8,
            KernelCounter::COUNT,
        ),
        shape(
            names::MAP_PROTO_COUNTERS,
            MapType::PerCpuArray,
            4,
            size::<IfaceCounters>(),
            256,
        ),
        shape(names::MAP_EVENTS, MapType::RingBuf, 0, 0, ringbuf_bytes),
    ]
}

/// The layout version: the revision and a hash of every pinned map's shape (sizes only; entry
/// counts are run options, checked per map) and of the ring records' sizes, which a pinned ring
/// carries from the old program to the new reader.
pub fn layout_version() -> String {
    let mut text = format!("revision {LAYOUT_REVISION}\n");
    for m in pinned_maps(0, 0) {
        // The other maps' entry counts are fixed by the object, so they belong to the layout.
        let fixed = if m.name == names::MAP_FLOWS || m.name == names::MAP_EVENTS {
            0
        } else {
            m.max_entries
        };
        text.push_str(&format!(
            "{} {:?} {} {} {}\n",
            m.name, m.map_type, m.key_size, m.value_size, fixed
        ));
    }
    for (name, bytes) in [
        ("ExchangeRecord", size::<ExchangeRecord>()),
        ("PayloadHeader", size::<PayloadHeader>()),
        ("SynRecord", size::<SynRecord>()),
    ] {
        text.push_str(&format!("{name} {bytes}\n"));
    }
    format!("v{LAYOUT_REVISION}-{:016x}", fnv1a(text.as_bytes()))
}

/// FNV-1a, 64 bits: stable across builds and Rust versions (std's hasher is not).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The pin directory `siphon run`'s flags ask for, prepared; none when pinning is off.
pub fn from_args(
    args: &crate::cmd::args::RunArgs,
    opts: &crate::kernel::object::LoadOptions,
) -> anyhow::Result<Option<PinDir>> {
    match &args.pin_path {
        Some(base) if !args.no_pin => {
            let dir = PinDir::prepare(base, &pinned_maps(opts.max_flows, opts.ringbuf_bytes))?;
            tracing::info!(path = %dir.root().display(), "pinning maps and links");
            Ok(Some(dir))
        }
        _ => Ok(None),
    }
}

/// This agent's pin directory: `<base>/<version>/netns-<inode>`.
#[derive(Clone, Debug)]
pub struct PinDir {
    root: PathBuf,
}

impl PinDir {
    /// Prepares the directory under `base` (which must be on a bpffs): removes this namespace's
    /// pins of other layout versions and every pinned map whose shape is not `want`'s, then
    /// creates what is missing. Pinned maps that remain are reused by the loader.
    pub fn prepare(base: &Path, want: &[MapShape]) -> anyhow::Result<PinDir> {
        fs::create_dir_all(base).with_context(|| format!("creating {}", base.display()))?;
        require_bpffs(base)?;
        let netns = format!(
            "netns-{}",
            fs::metadata("/proc/self/ns/net")
                .context("reading own network namespace")?
                .ino()
        );
        let version = layout_version();
        for entry in fs::read_dir(base).with_context(|| format!("listing {}", base.display()))? {
            let entry = entry?;
            if entry.file_name().to_string_lossy() == version {
                continue;
            }
            let old = entry.path().join(&netns);
            if old.exists() {
                tracing::warn!(
                    "removing pins of another layout version ({}): its counters are not read",
                    old.display()
                );
                remove_tree(&old)?;
            }
            // Leave other namespaces' pins of that version alone; the version directory goes
            // once nobody uses it.
            let _ = fs::remove_dir(entry.path());
        }
        let root = base.join(&version).join(&netns);
        let dir = PinDir { root };
        fs::create_dir_all(dir.maps()).context("creating the map pin directory")?;
        fs::create_dir_all(dir.links()).context("creating the link pin directory")?;
        for shape in want {
            let path = dir.map(shape.name);
            match MapInfo::from_pin(&path) {
                Ok(info) => {
                    let seen = (
                        info.map_type().ok(),
                        info.key_size(),
                        info.value_size(),
                        info.max_entries(),
                    );
                    let wanted = (
                        Some(shape.map_type),
                        shape.key_size,
                        shape.value_size,
                        shape.max_entries,
                    );
                    if seen == wanted {
                        tracing::info!(map = shape.name, "reusing pinned map");
                    } else {
                        tracing::warn!(
                            map = shape.name,
                            "pinned map has shape {seen:?}, want {wanted:?}: replacing it (its \
                             counts start again)"
                        );
                        fs::remove_file(&path)
                            .with_context(|| format!("removing {}", path.display()))?;
                    }
                }
                Err(_) if !path.exists() => {}
                Err(e) => {
                    tracing::warn!(map = shape.name, "unreadable pin, replacing it: {e}");
                    fs::remove_file(&path)
                        .with_context(|| format!("removing {}", path.display()))?;
                }
            }
        }
        Ok(dir)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn maps(&self) -> PathBuf {
        self.root.join("maps")
    }

    fn links(&self) -> PathBuf {
        self.root.join("links")
    }

    /// Where map `name` is pinned.
    pub fn map(&self, name: &str) -> PathBuf {
        self.maps().join(name)
    }

    /// Where the link of one direction on one interface is pinned.
    pub fn link(&self, ifindex: u32, direction: &str) -> PathBuf {
        self.links().join(format!("if{ifindex}-{direction}"))
    }
}

fn require_bpffs(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: statfs writes into the zeroed struct we own; the path is NUL-terminated.
    let (rc, fs_type) = unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        let rc = libc::statfs(c.as_ptr(), &mut st);
        (rc, st.f_type as i64)
    };
    if rc != 0 {
        bail!(
            "statfs {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    if fs_type != BPF_FS_MAGIC {
        bail!(
            "--pin-path {} is not on a BPF filesystem (mount one: `mount -t bpf bpf {}`), or run \
             with --no-pin",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

/// Removes pins and directories below `dir`, then `dir` (bpffs has no recursive removal).
fn remove_tree(dir: &Path) -> anyhow::Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            remove_tree(&path)?;
        } else {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
            }
        }
    }
    fs::remove_dir(dir).with_context(|| format!("removing {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails when a pinned map's or a ring record's size changes. The version follows by itself;
    /// this test is here so that the change is seen: if the meaning of a map or record changed
    /// without its size changing, bump [`LAYOUT_REVISION`] too. Then update the expected value.
    #[test]
    fn layout_version_is_pinned() {
        assert_eq!(layout_version(), "v1-1b9329f1f6a5cae7");
    }

    #[test]
    fn version_depends_on_the_revision_text_only_through_the_hash() {
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
        assert!(layout_version().starts_with(&format!("v{LAYOUT_REVISION}-")));
    }
}
