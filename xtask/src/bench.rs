//! `cargo xtask bench`: the kernel program's cost per packet under BPF_PROG_TEST_RUN, next to
//! a floor program and a minimal LRU flow counter measured in the same run. Figures, not a
//! test: a missed target is flagged in the table and the command still succeeds. The method is
//! described in bench/runner/src/main.rs.

use std::process::Command;

use clap::Args;

use crate::cmd::{build_release, require_root, run};

/// Unset options take siphon-bench's defaults, so they are defined in one place.
#[derive(Args)]
pub struct BenchArgs {
    /// Runs per scenario, at least 5; the table gives their median, min and max [default: 7].
    #[arg(long)]
    runs: Option<u32>,
    /// In-kernel repetitions per batch run [default: 1000000].
    #[arg(long)]
    repeat: Option<u32>,
    /// Timed repeat=1 calls per single run (scenarios that change the flow's state) [default:
    /// 10000].
    #[arg(long)]
    samples: Option<u32>,
    /// Only the Siphon scenarios whose name contains this text (baselines always run).
    #[arg(long)]
    only: Option<String>,
    /// Skip the live cross-check (real TCP through a veth pair in namespaces of the run).
    #[arg(long)]
    no_live: bool,
}

pub fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    require_root("the benchmark loads eBPF programs (CAP_BPF, CAP_NET_ADMIN)")?;
    // Release, as `run` builds: the figures are the kernel's and do not depend on it, but the
    // untimed work between calls (restoring state, draining) is quicker.
    let mut bench = Command::new(build_release("siphon-bench", "siphon-bench")?);
    for (flag, value) in [
        ("--runs", args.runs),
        ("--repeat", args.repeat),
        ("--samples", args.samples),
    ] {
        if let Some(v) = value {
            bench.arg(flag).arg(v.to_string());
        }
    }
    if args.no_live {
        bench.arg("--no-live");
    }
    if let Some(only) = &args.only {
        bench.arg("--only").arg(only);
    }
    run(&mut bench)
}
