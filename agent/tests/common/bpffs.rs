//! A private BPF filesystem for a test's pins: this machine may have none at /sys/fs/bpf, and
//! pins of one test must not meet another's. Unmounting it frees every map pinned in it.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

pub struct BpfFs {
    pub path: PathBuf,
}

impl BpfFs {
    pub fn mount(tag: &str) -> BpfFs {
        let path = PathBuf::from(format!(
            "/tmp/siphon-test-bpffs-{}-{tag}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).expect("mount point");
        let ok = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&path)
            .status()
            .expect("run mount");
        assert!(ok.success(), "mounting a bpffs at {}", path.display());
        BpfFs { path }
    }

    /// The base directory to give `--pin-path`.
    pub fn base(&self) -> PathBuf {
        self.path.join("siphon")
    }

    /// Every pin file below the base (maps and links), relative to it.
    pub fn pins(&self) -> Vec<String> {
        fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, root, out);
                } else if let Ok(rel) = p.strip_prefix(root) {
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.base(), &self.base(), &mut out);
        out.sort();
        out
    }

    /// The pin of `name` (a map or link file name) under the base, if exactly one exists.
    pub fn find(&self, name: &str) -> Option<PathBuf> {
        let hits: Vec<_> = self
            .pins()
            .into_iter()
            .filter(|p| p.ends_with(&format!("/{name}")))
            .collect();
        (hits.len() == 1).then(|| self.base().join(&hits[0]))
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// `bpftool -j <args>` parsed.
pub fn bpftool(args: &[&str]) -> serde_json::Value {
    let out = Command::new("bpftool")
        .arg("-j")
        .args(args)
        .output()
        .expect("run bpftool");
    assert!(
        out.status.success(),
        "bpftool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("bpftool JSON")
}

/// Ids of the loaded programs that use the map pinned at `pin` (by the kernel's own account:
/// a leaked program of an earlier agent would still reference it).
pub fn programs_using(pin: &Path) -> Vec<u64> {
    let map = bpftool(&["map", "show", "pinned", &pin.to_string_lossy()]);
    let id = map["id"].as_u64().expect("map id");
    bpftool(&["prog", "show"])
        .as_array()
        .expect("program list")
        .iter()
        .filter(|p| {
            p["map_ids"]
                .as_array()
                .is_some_and(|ids| ids.iter().any(|m| m.as_u64() == Some(id)))
        })
        .filter_map(|p| p["id"].as_u64())
        .collect()
}
