//! Builds the eBPF object (agent-ebpf) with the nightly toolchain and bpf-linker, and leaves it
//! in OUT_DIR where `include_bytes_aligned!` embeds it into the `siphon` binary.
use std::path::PathBuf;

use anyhow::{anyhow, Context as _};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    if which("bpf-linker").is_none() {
        return Err(anyhow!(
            "bpf-linker is not installed: run `cargo xtask setup` once (see README.md)"
        ));
    }
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest_dir.join("../agent-ebpf");
    let root_dir = ebpf_dir
        .to_str()
        .context("agent-ebpf path is not UTF-8")?
        .to_owned();
    aya_build::build_ebpf(
        [Package {
            name: "agent-ebpf",
            root_dir: &root_dir,
            ..Default::default()
        }],
        Toolchain::default(),
    )
    .context("building the eBPF program failed; `cargo xtask setup` installs what it needs")
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
