//! Project automation: `cargo xtask setup | test | run | bench | lab | kernels | deploy-render | deploy-check | image | eval | fuzz`. See README.md.

mod bench;
mod cmd;
mod deploy;
mod eval;
mod fuzz;
mod image;
mod kernels;
mod lab;
mod run;
mod setup;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Siphon build, test and lab automation")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install, idempotently, what building and testing need (nightly rust-src, LLVM, bpf-linker,
    /// Debian packages the tests use).
    Setup(setup::SetupArgs),
    /// Set-up, then fmt check, clippy (host and eBPF), unit tests and the privileged tests.
    Test(test::TestArgs),
    /// Set-up, then the lab: an inference cluster in network namespaces with benign,
    /// harvesting and relayed traffic, Siphon attached, a live view and a summary (as root).
    Lab(lab::LabArgs),
    /// Set-up, build in release mode, and run `siphon run` with the given arguments (as root).
    Run {
        /// Arguments for `siphon run`, after `--` (e.g. `-- --iface eth0`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Set-up, build in release mode, and measure the kernel program's cost per packet
    /// (BPF_PROG_TEST_RUN, as root) next to a floor and a minimal LRU counter.
    Bench(bench::BenchArgs),
    /// Write deploy/kubernetes/prometheusrule.yaml from deploy/prometheus/rules.yaml (`--check`:
    /// only say whether it is current).
    DeployRender(deploy::RenderArgs),
    /// The deploy checks of `cargo xtask test` alone: PrometheusRule current, kustomize base
    /// and overlay rendered and strictly valid, the DaemonSet locked down, dashboard queries.
    DeployCheck,
    /// Build the container image (root Dockerfile) with docker or podman, whichever runs.
    Image(image::ImageArgs),
    /// The detector on synthetic populations (10,000 clients, a simulated day, attackers at a
    /// base rate) next to rate baselines: target/eval/report.md, report.json, roc.png.
    Eval(eval::EvalArgs),
    /// Set-up, then boot other kernels (Debian's 6.1 and 6.12 cloud kernels) in qemu and check
    /// that Siphon's programs load, replay captures and attach there (as root; minutes).
    Kernels(kernels::KernelsArgs),
    /// Set-up, then the cargo-fuzz targets (fuzz/), `--minutes N` in total split evenly over
    /// them; executions per target in target/fuzz/summary.md. A finding fails the run.
    Fuzz(fuzz::FuzzArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Task::Setup(args) => setup::setup_with(&args),
        Task::Test(args) => setup::setup().and_then(|()| test::test(&args)),
        Task::Lab(args) => setup::setup().and_then(|()| lab::run(&args)),
        Task::Run { args } => setup::setup().and_then(|()| run::run(&args)),
        Task::Bench(args) => setup::setup().and_then(|()| bench::bench(&args)),
        Task::DeployRender(args) => deploy::deploy_render(&args),
        Task::DeployCheck => deploy::check_manifests(),
        Task::Image(args) => image::image(&args),
        Task::Eval(args) => setup::setup().and_then(|()| eval::eval(&args)),
        Task::Kernels(args) => setup::setup().and_then(|()| kernels::kernels(&args)),
        Task::Fuzz(args) => setup::setup().and_then(|()| fuzz::fuzz(&args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
