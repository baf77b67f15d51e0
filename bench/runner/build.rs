//! Builds the baseline programs (bench/ebpf) with the nightly toolchain and bpf-linker, and
//! leaves them in OUT_DIR where `include_bytes_aligned!` embeds them. Siphon's own object comes
//! embedded in the agent library.
use std::path::PathBuf;

use anyhow::Context as _;
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest_dir.join("../ebpf");
    let root_dir = ebpf_dir
        .to_str()
        .context("bench/ebpf path is not UTF-8")?
        .to_owned();
    aya_build::build_ebpf(
        [Package {
            name: "bench-ebpf",
            root_dir: &root_dir,
            ..Default::default()
        }],
        Toolchain::default(),
    )
    .context("building the baseline programs failed; `cargo xtask setup` installs what it needs")
}
