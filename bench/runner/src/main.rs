//! `siphon-bench`: the kernel program's cost per packet under BPF_PROG_TEST_RUN, next to two
//! baseline programs measured in the same process, the same way. Figures, not a pass/fail test:
//! a target missed is flagged and the exit status stays 0. Needs root; run it through
//! `cargo xtask bench`.
//!
//! # Method
//!
//! BPF_PROG_TEST_RUN runs a program on one frame `repeat` times in a kernel loop and reports
//! the mean time of one repetition (net/bpf/test_run.c divides the time around the loop by the
//! count, in whole ns). That time includes the loop and the call into the program, which the
//! *floor* program, returning at once, shows on its own.
//!
//! - **batch**: where a repetition leaves the flow as it found it (an ACK, a retransmitted
//!   segment, both baselines), a run is one call with `--repeat` repetitions and its figure is
//!   the kernel's mean.
//! - **single**: a mid-response segment, a request start and a ClientHello change what the
//!   next repetition would measure (Siphon tracks TCP sequence numbers, so the same data
//!   segment again is a retransmission; after a request start the flow is in the REQUEST
//!   phase; a connection gathers only a few hellos, counted from its SYN). Every frame is sent
//!   with its sender's next sequence number (`sequence`). Each sample first restores the state
//!   with untimed frames (a server data segment; a SYN, SYN-ACK and ACK), then times one
//!   repetition (repeat=1); a run's figure is the interquartile mean (the mean of the middle
//!   half) of `--samples` samples: robust to interrupts like a median, but finer than the
//!   kernel clock's step, which on some VMs is coarse (10 ns on the machine this was written
//!   on) and which a median would keep.
//!
//! A lone repetition pays what a loop amortises: the timer's closing clock read, which the
//! floor measured the same way shows, and caches the syscall cooled, which it does not. So a
//! single figure is first *shifted* to `median - floor(single) + floor(batch)`, and the ACK
//! and the retransmission are measured both ways: their shifted single figure less their batch
//! figure is the *single-shot excess*. A single-only path is held to its target on the batch
//! scale (`batch~`), the scale of the figures the targets were set next to (floor ~26 ns, LRU
//! counter ~55 ns): its shifted figure less the smallest excess of the run. Every single-only
//! path runs the calibration paths' code and touches their data, then more, so its own excess
//! is at least that: the estimate errs high. The both-ways single rows are calibrations only.
//!
//! Runs are interleaved (run 1 of every scenario, then run 2, ...) so that drift (frequency,
//! neighbours) hits every scenario alike; the table gives the median, min and max of the runs.
//! The process is pinned to one CPU: the per-CPU maps and caches stay the same between calls.
//!
//! Scenarios are in scenarios.rs, frames in frames.rs, the test_run calls in kernel.rs, the
//! many-flows measurement in many.rs, the live cross-check in live/, the report (markdown and
//! JSON under `--out`) in report.rs.
//!
//! Every Siphon path has a flow of its own, so none disturbs another's state. The ring
//! buffer is drained every [`DRAIN_EVERY`] samples, far below the buffer's size (a failing reserve is a cheaper
//! path that loses records). Drained records are counted by kind and must match what the
//! measured path emits, and each flow's state is checked after the warm-up, so a figure cannot
//! silently come from another path. The kernel's loss counters are printed at the end. The
//! program wakes the reader only when it finds a quarter of the ring unread, which these drains
//! prevent; its fill check (every 256 records per CPU) lands in the outer quarter the interquartile mean
//! drops.

mod e2e;
mod frames;
mod kernel;
mod live;
mod many;
mod report;
mod scenarios;
mod userspace;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use siphon_agent::kernel::object as ebpf_object;

use crate::{
    kernel::Kernel,
    report::{Report, TARGET_LIVE_RATIO},
    scenarios::{cases, Case, Prog},
};

/// The baseline programs (bench/ebpf), built by build.rs.
static BASELINES: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/baselines"));
const PROG_FLOOR: &str = "bench_floor";
const PROG_LRU: &str = "bench_lru_counter";

/// TC_ACT_UNSPEC (-1) as the u32 the kernel reports.
const PASS: u32 = u32::MAX;

/// Samples between ring-buffer drains. The busiest sample (a ClientHello with its handshake)
/// emits 4 records of ~2.5 KB in all, so at most 128 records (~80 KB) are ever unread: a
/// fraction of the (>= 2 MiB) buffer.
const DRAIN_EVERY: u32 = 32;

/// `siphon run`'s defaults: the LRU's size shapes its cost, the head capture length the copy's.
const MAX_FLOWS: u32 = 131_072;
const HEAD_CAPTURE_BYTES: u32 = 1024;

#[derive(Parser)]
#[command(
    name = "siphon-bench",
    about = "Per-packet cost of Siphon's TC program under BPF_PROG_TEST_RUN, with baselines"
)]
struct Args {
    /// Runs per scenario; the table reports their median, min and max.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(5..))]
    runs: u32,
    /// In-kernel repetitions in one batch run.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
    /// Timed single repetitions (repeat=1 calls) in one single run.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    samples: u32,
    /// Measure only the Siphon scenarios whose name contains this text (the baselines always
    /// run): for profiling one path, e.g. under `perf record`.
    #[arg(long)]
    only: Option<String>,
    /// Skip the live cross-check (real TCP through a veth pair, kernel run-time statistics).
    #[arg(long)]
    no_live: bool,
    /// Skip the many-flows measurement (tables of up to 1.25 M flows, ~0.5 GB).
    #[arg(long)]
    no_many: bool,
    /// Head capture length Siphon is loaded with (`siphon run --head-capture-bytes`).
    #[arg(long, default_value_t = HEAD_CAPTURE_BYTES)]
    head_capture_bytes: u32,
    /// Ring buffer size Siphon is loaded with [default: `siphon run`'s].
    #[arg(long)]
    ringbuf_bytes: Option<u32>,
    /// Write bench.md and bench.json here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Skip the per-packet test_run tables (with them the many-flows and live parts): for
    /// iterating on the userspace and end-to-end parts.
    #[arg(long)]
    no_kernel: bool,
    /// Skip the userspace figures (records/s, `siphon detect`, /metrics, memory, ring loss).
    #[arg(long)]
    no_userspace: bool,
    /// Skip the end-to-end runs (iperf3 and wrk with and without `siphon run`).
    #[arg(long)]
    no_e2e: bool,
    /// The `siphon` binary the end-to-end runs start [default: beside siphon-bench].
    #[arg(long)]
    siphon: Option<PathBuf>,
    /// The lab's inference server, for the end-to-end HTTP run.
    #[arg(long, default_value = "xtask/lab/inference_server.py")]
    lab_server: PathBuf,
    /// Only the userspace pipeline's records/s (no `siphon detect`, scale or loss): for
    /// profiling it, e.g. under `perf record`.
    #[arg(long, hide = true)]
    pipeline_only: bool,
    /// Clients in the userspace record mix: fewer for profiling under valgrind, where the
    /// default mix takes minutes per run.
    #[arg(long, hide = true, default_value_t = userspace::MIX_CLIENTS)]
    mix_clients: usize,
    /// Internal: one size of the userspace scale measurement, in a process of its own.
    #[arg(long, hide = true)]
    scale_child: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pinned = pin_to_one_cpu();
    if let Some(n) = args.scale_child {
        return userspace::scale::child(n, args.runs);
    }
    let ringbuf_bytes = args
        .ringbuf_bytes
        .unwrap_or_else(ebpf_object::default_ringbuf_bytes);
    let mut kernel = Kernel::load(args.head_capture_bytes, ringbuf_bytes)?;
    let cases: Vec<Case> = cases()
        .into_iter()
        .filter(|_| !args.no_kernel)
        .filter(|case| {
            case.prog != Prog::Siphon || args.only.as_ref().is_none_or(|o| case.name.contains(o))
        })
        .collect();
    let (machine, settings) = header(&args, pinned, ringbuf_bytes);
    println!("{machine}\n{settings}\n");

    for case in &cases {
        kernel
            .warm_up(case, args.repeat, args.samples)
            .with_context(|| format!("setting up {:?}", case.name))?;
    }
    let mut figures = vec![Vec::new(); cases.len()];
    for _ in 0..args.runs {
        for (case, runs) in cases.iter().zip(&mut figures) {
            let ns = kernel
                .measure(case, args.repeat, args.samples)
                .with_context(|| format!("measuring {:?}", case.name))?;
            runs.push(ns);
        }
    }
    let (rows, scale) = if cases.is_empty() {
        // --no-kernel: no per-packet tables, so nothing to calibrate.
        (
            Vec::new(),
            report::Scale {
                batch_floor: 0.0,
                single_floor: 0.0,
                excess: 0.0,
            },
        )
    } else {
        report::rows(&cases, &mut figures)?
    };
    let kernel_counters = report::kernel_counters(&kernel)?;
    drop(kernel);

    let many_flows = if args.no_many || args.no_kernel {
        Vec::new()
    } else {
        many::measure(&scale, args.runs, args.samples, args.head_capture_bytes)
            .context("many flows (skip them with --no-many)")?
    };
    let live = if args.no_live || args.no_kernel {
        Vec::new()
    } else {
        live::cross_check(&rows, scale.batch_floor, args.head_capture_bytes)
            .context("live cross-check (skip it with --no-live)")?
    };
    let out_dir = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/bench"));
    let siphon = match &args.siphon {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .context("locating siphon-bench")?
            .with_file_name("siphon"),
    };
    let userspace = if args.no_userspace {
        Vec::new()
    } else {
        userspace::measure(args.runs, &out_dir, args.pipeline_only, args.mix_clients)
            .context("userspace figures (skip them with --no-userspace)")?
    };
    let e2e = if args.no_e2e {
        Vec::new()
    } else {
        e2e::measure(args.runs, &siphon, &args.lab_server, &out_dir)
            .context("end-to-end runs (skip them with --no-e2e)")?
    };
    let mut missed: Vec<String> = rows
        .iter()
        .filter(|r| r.status.starts_with("MISSED"))
        .map(|r| format!("{}: {}", r.name, r.status))
        .collect();
    missed.extend(
        live.iter()
            .filter(|l| l.status.starts_with("MISSED"))
            .map(|l| format!("live {}: {}", l.label, l.status)),
    );
    missed.extend(
        userspace
            .iter()
            .chain(&e2e)
            .filter(|f| f.status == "MISSED")
            .map(|f| format!("{}: MISSED", f.name)),
    );
    let report = Report {
        machine,
        settings,
        batch_floor: scale.batch_floor,
        single_floor: scale.single_floor,
        single_shot_excess: scale.excess,
        rows,
        many_flows,
        live,
        live_note: format!(
            "Capture paths live are held to at most {TARGET_LIVE_RATIO}x their test_run \
             figure (both net of their floor); the other live rows are shown for comparison."
        ),
        kernel_counters,
        userspace,
        e2e,
        missed,
    };
    print!("{}", report.markdown()?);
    if let Some(dir) = &args.out {
        report.write(dir)?;
    }
    Ok(())
}

/// The machine line and the settings line of the report.
fn header(args: &Args, pinned: Option<usize>, ringbuf_bytes: u32) -> (String, String) {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "?".to_owned())
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "?".to_owned());
    let cpus = aya::util::online_cpus().map_or(0, |c| c.len());
    let mut machine = format!(
        "siphon-bench: kernel {}, {cpus} CPUs ({cpu}), JIT {}, {}",
        read("/proc/sys/kernel/osrelease"),
        read("/proc/sys/net/core/bpf_jit_enable"),
        match pinned {
            Some(cpu) => format!("pinned to CPU {cpu}"),
            None => "not pinned".to_owned(),
        }
    );
    if read("/proc/sys/kernel/bpf_stats_enabled") == "1" {
        machine.push_str(
            "\nWARNING: kernel.bpf_stats_enabled=1 adds two clock reads to every program run; \
             figures are inflated",
        );
    }
    let settings = format!(
        "Siphon loaded as `siphon run` loads it: flow table {MAX_FLOWS} entries, head capture \
         {} B, ring buffer {} KiB. {} runs per scenario, interleaved; batch: {} in-kernel \
         repetitions per run (the kernel's mean); single: {} repeat=1 calls per run, each after \
         untimed frames that restore the state (the mean of their middle half).",
        args.head_capture_bytes,
        ringbuf_bytes >> 10,
        args.runs,
        args.repeat,
        args.samples
    );
    (machine, settings)
}

/// Pins the process to the highest-numbered CPU it may run on, so every call sees the same
/// per-CPU map slots and caches, and successive benches the same CPU (device interrupts tend to
/// land on CPU 0). Best effort: without it the figures are only noisier.
fn pin_to_one_cpu() -> Option<usize> {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut allowed: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `allowed` is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&allowed), &mut allowed) };
    if rc != 0 {
        return None;
    }
    let setsize = 8 * std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: CPU_ISSET reads one bit inside `allowed`; cpu < its size in bits.
    let cpu = (0..setsize)
        .rev()
        .find(|&cpu| unsafe { libc::CPU_ISSET(cpu, &allowed) })?;
    // SAFETY: plain data, all-zero is the empty set.
    let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes one bit inside `one`; cpu < its size in bits.
    unsafe { libc::CPU_SET(cpu, &mut one) };
    // SAFETY: `one` is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&one), &one) };
    (rc == 0).then_some(cpu)
}
