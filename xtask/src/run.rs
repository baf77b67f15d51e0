//! `cargo xtask run`: build the agent in release mode and run it in the foreground.

use std::process::Command;

use crate::cmd;

pub fn run(args: &[String]) -> anyhow::Result<()> {
    cmd::run(
        Command::new(cmd::build_agent_release("siphon")?)
            .arg("run")
            .args(args),
    )
}
