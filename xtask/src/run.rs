//! `cargo xtask run`: build the agent in release mode and run it in the foreground.

use std::process::Command;

use crate::{cmd, test::workspace_root};

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let root = workspace_root();
    cmd::run(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .current_dir(&root)
            .args(["build", "--release", "-p", "agent"]),
    )?;
    cmd::run(
        Command::new(root.join("target/release/siphon"))
            .arg("run")
            .args(args),
    )
}
