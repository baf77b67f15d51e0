//! `cargo xtask test`: everything CI checks, in the order that fails fastest.

use std::process::Command;

use clap::Args;

use crate::cmd::{cargo, run, workspace_root};

#[derive(Args)]
pub struct TestArgs {
    /// Skip the tests that need root (eBPF loading, network namespaces). CI never sets this.
    #[arg(long)]
    unprivileged: bool,
    /// Extra arguments for `cargo test` (e.g. a test name filter), after `--`.
    #[arg(last = true)]
    cargo_test_args: Vec<String>,
}

pub fn test(args: &TestArgs) -> anyhow::Result<()> {
    let root = workspace_root();
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    // Every declared dependency is used (set-up installs cargo-machete). Run directly, not as
    // `cargo machete`: under xtask, $CARGO is the toolchain's cargo, which hands cargo-machete
    // the word "machete" as a path to scan.
    run(Command::new("cargo-machete").current_dir(&root))?;
    // The kernel crates only build for the BPF target, with nightly.
    run(Command::new("cargo")
        .current_dir(&root)
        .args([
            "+nightly",
            "clippy",
            "-p",
            "agent-ebpf",
            "-p",
            "bench-ebpf",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
        ])
        .args(["--", "-D", "warnings"]))?;
    // The shipped alerting and recording rules: valid PromQL, and alerts that fire (and stay
    // quiet) on the series their unit tests feed them.
    let rules = root.join("deploy/prometheus");
    run(Command::new("promtool")
        .current_dir(&rules)
        .args(["check", "rules", "rules.yaml"]))?;
    run(Command::new("promtool")
        .current_dir(&rules)
        .args(["test", "rules", "rules_test.yaml"]))?;
    // The Kubernetes manifests: the PrometheusRule rendered from rules.yaml, the base and the
    // overlay rendered by kustomize, strictly schema-valid, the DaemonSet locked down.
    crate::deploy::check_manifests()?;
    run(Command::new("python3")
        .current_dir(root.join("xtask/lab"))
        .args([
            "-m",
            "unittest",
            "-q",
            "test_server_framing",
            "test_server_api",
            "test_server_process",
            "test_actor_kinds",
            "test_actor_tls",
            "test_actor_runs",
            "test_actorlib",
            "test_population",
        ]))?;

    let mut t = cargo();
    t.args([
        "test",
        "--workspace",
        "--exclude",
        "agent-ebpf",
        "--exclude",
        "bench-ebpf",
        "--",
    ]);
    if args.unprivileged {
        eprintln!("xtask: --unprivileged: the tests that load eBPF or create network namespaces are skipped");
    } else {
        crate::cmd::require_root(
            "the privileged tests need CAP_BPF and CAP_NET_ADMIN (or pass --unprivileged)",
        )?;
        t.arg("--include-ignored");
    }
    t.args(&args.cargo_test_args);
    run(&mut t)?;
    // Every parser of outside bytes under libFuzzer, briefly (about two minutes plus the build;
    // `cargo xtask fuzz --minutes N` runs longer).
    crate::fuzz::smoke()?;
    if !args.unprivileged {
        // The lab: every actor, Siphon on two nodes, checked against the ground truth,
        // detections included (long enough for keys in lockstep to show: clusters need ~90 s
        // of activity; the lab's default duration, see `LabArgs::duration`).
        crate::lab::run(&crate::lab::LabArgs {
            duration: 210,
            scenario: crate::lab::Scenario::All,
            out: "target/lab-ci".into(),
            check: true,
            view_every: 0,
            // Outside actors (shell + curl) run with the built-in ones: their labels must reach
            // the ground truth, the summary and the verdict table.
            actors: Some(root.join("xtask/lab/examples/actors.example.toml")),
            no_builtin: false,
        })?;
    }
    // The population evaluation, small: the report's structure, from real detector output.
    let out = root.join("target/eval-ci");
    crate::eval::eval(&crate::eval::EvalArgs::quick(&out))?;
    crate::eval::check_report(&out)
}
