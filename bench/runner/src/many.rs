//! Many flows: the cost of an ACK on an established flow when packets are spread over N flows,
//! so the flow's entry, its hash bucket and the LRU lists are rarely in the caches; and with
//! more flows than the table holds, every packet inserts and evicts.
//!
//! Each configuration loads its own Siphon and baselines with the flow table sized for it
//! (N + N/4 entries: the LRU's per-CPU free lists need slack, or it evicts before it is full),
//! fills the tables with N flows (one client address each), then times one call per packet,
//! each on the next flow of a stride through all N (consecutive calls never share an entry),
//! shifted to the batch scale by the floors of the main table. Runs are interleaved across configurations and
//! programs. The table's memory is the kernel's own account (fdinfo `memlock`).

use std::time::Duration;

use agent_common::tcp_flag;
use anyhow::Context as _;
use aya::{Ebpf, EbpfLoader};
use siphon_agent::kernel::object::{self as ebpf_object, LoadOptions};

use crate::{
    frames::{set_client, Flow, HTTP_PORT},
    kernel::test_run,
    report::{interquartile_mean, ManyRow, Scale, Spread},
    BASELINES, MAX_FLOWS, PROG_FLOOR, PROG_LRU,
};

/// Flow counts measured in tables sized for them.
pub(crate) const FLOW_COUNTS: [u32; 4] = [1_000, 10_000, 100_000, 1_000_000];
/// Coprime with every count above (a prime other than 2 and 5): a stride through all flows.
const STRIDE: u64 = 7_919;

struct Config {
    flows: u32,
    entries: u32,
    siphon: Ebpf,
    baselines: Ebpf,
    siphon_runs: Vec<f64>,
    lru_runs: Vec<f64>,
}

fn table_bytes(key_size: u32, entries: u32) -> u64 {
    // The flow tables of this process with that key size and entry count: fdinfo says how
    // much memory the kernel charged for each (all instances of one shape cost the same).
    let Ok(dir) = std::fs::read_dir("/proc/self/fdinfo") else {
        return 0;
    };
    for entry in dir.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        // 9: BPF_MAP_TYPE_LRU_HASH.
        if field("map_type:") == Some(9)
            && field("key_size:") == Some(u64::from(key_size))
            && field("max_entries:") == Some(u64::from(entries))
        {
            return field("memlock:").unwrap_or(0);
        }
    }
    0
}

fn load(flows: u32, entries: u32, head_capture_bytes: u32) -> anyhow::Result<Config> {
    let siphon = ebpf_object::load(LoadOptions {
        max_flows: entries,
        head_capture_bytes,
        ringbuf_bytes: ebpf_object::default_ringbuf_bytes(),
        ..LoadOptions::for_tests()
    })?;
    let mut baselines = EbpfLoader::new()
        .map_max_entries("BENCH_FLOWS", entries)
        .load(BASELINES)
        .context("loading the baseline programs")?;
    for name in [PROG_FLOOR, PROG_LRU] {
        ebpf_object::classifier(&mut baselines, name)?
            .load()
            .with_context(|| format!("verifier rejected program {name}"))?;
    }
    Ok(Config {
        flows,
        entries,
        siphon,
        baselines,
        siphon_runs: Vec::new(),
        lru_runs: Vec::new(),
    })
}

/// Runs the many-flows configurations; figures on the batch scale of `scale`.
pub(crate) fn measure(
    scale: &Scale,
    runs: u32,
    samples: u32,
    head_capture_bytes: u32,
) -> anyhow::Result<Vec<ManyRow>> {
    let ack = Flow::new(40_000, HTTP_PORT).client_sends(tcp_flag::ACK, &[]);
    let mut configs = Vec::new();
    for flows in FLOW_COUNTS {
        configs.push(load(flows, flows + flows / 4, head_capture_bytes)?);
    }
    // More flows than `siphon run`'s default table holds: every packet inserts and evicts.
    configs.push(load(1_000_000, MAX_FLOWS, head_capture_bytes)?);

    for c in &mut configs {
        for i in 0..c.flows {
            let mut frame = ack.clone();
            set_client(&mut frame, i);
            test_run(&mut c.siphon, siphon_agent_prog(), &frame, 1)?;
            test_run(&mut c.baselines, PROG_LRU, &frame, 1)?;
        }
    }
    let mut frame = ack.clone();
    for run in 0..runs {
        for c in &mut configs {
            let n = u64::from(c.flows);
            let start = u64::from(run) * 104_729 % n;
            let mut time = |ebpf: &mut Ebpf, prog: &str| -> anyhow::Result<f64> {
                let mut times = Vec::with_capacity(samples as usize);
                for k in 0..u64::from(samples) {
                    set_client(&mut frame, ((start + k * STRIDE) % n) as u32);
                    let d: Duration = test_run(ebpf, prog, &frame, 1)?;
                    times.push(d.as_nanos() as f64);
                }
                Ok(interquartile_mean(&mut times))
            };
            let s = time(&mut c.siphon, siphon_agent_prog())?;
            let l = time(&mut c.baselines, PROG_LRU)?;
            c.siphon_runs.push(s);
            c.lru_runs.push(l);
        }
    }
    Ok(configs
        .iter_mut()
        .map(|c| ManyRow {
            flows: c.flows,
            table_entries: c.entries,
            siphon_table_bytes: table_bytes(44, c.entries),
            lru_table_bytes: table_bytes(16, c.entries),
            // The floor swap only: the single-shot excess is calibrated on Siphon's paths, and
            // both programs are treated alike here.
            siphon: Spread::of(&mut c.siphon_runs).shift(scale.batch_floor - scale.single_floor),
            lru: Spread::of(&mut c.lru_runs).shift(scale.batch_floor - scale.single_floor),
        })
        .collect())
}

fn siphon_agent_prog() -> &'static str {
    agent_common::names::PROG_INGRESS
}
