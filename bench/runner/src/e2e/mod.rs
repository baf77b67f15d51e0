//! End to end: real TCP through a veth pair between two namespaces this run creates, with and
//! without Siphon, as the real `siphon run` binary in the server's namespace attached to the
//! server's end (both directions, its exchange log on).
//!
//! - **iperf3**: one stream and four, client to server and the reverse (`-R`). Throughput with
//!   Siphon over throughput without, per run; and the cost per GB moved: the kernel's run time
//!   of Siphon's programs (BPF_ENABLE_STATS, the programs this agent loaded) and the agent's
//!   own CPU time (utime + stime from /proc/<pid>/stat), each over the bytes received.
//! - **HTTP**: `wrk` against the lab's inference server (non-streaming chat completions, short
//!   outputs, no token pacing): requests/s with over without.
//!
//! Runs are interleaved: each run measures every case without Siphon and with it, the order
//! alternating between runs, and the table gives the median, min and max of the per-run
//! figures. The namespaces go away on drop, also on failure; every child is ended by its PID.

mod agent;
mod tools;

use std::path::Path;

use anyhow::Context as _;
use siphon_testkit::Pair;

use self::{
    agent::{Agent, Cost},
    tools::{iperf3, wrk, LabServer},
};
use crate::userspace::Figure;

/// Throughput and requests/s with Siphon, as a share of without.
const TARGET_RATIO: f64 = 0.97;
const IPERF_SECONDS: u32 = 4;
const WRK_SECONDS: u32 = 4;
/// The e2e pair's subnet (10.251.80.0/24); the live cross-check uses 79.
const SUBNET: u8 = 80;

/// (streams, reverse) of the iperf3 cases.
const IPERF_CASES: [(u32, bool); 4] = [(1, false), (4, false), (1, true), (4, true)];

#[derive(Default)]
struct Series {
    without: Vec<f64>,
    with: Vec<f64>,
    ratio: Vec<f64>,
    bpf_s_per_gb: Vec<f64>,
    /// Per GB for iperf3; per 1,000 requests for wrk.
    agent_s_per_gb: Vec<f64>,
}

pub(crate) fn measure(
    runs: u32,
    siphon: &Path,
    lab_server: &Path,
    out: &Path,
) -> anyhow::Result<Vec<Figure>> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let pair = Pair::new(SUBNET)?;
    let (server_ns, client_ns) = (&pair.a, &pair.b);
    let server_ip = pair.v4_a.clone();
    let server = LabServer::start(server_ns, lab_server, out)?;
    let mut iperf: Vec<Series> = IPERF_CASES.iter().map(|_| Series::default()).collect();
    let mut http = Series::default();
    let log = out.join("e2e-exchanges.jsonl");
    for run in 0..runs {
        let mut without = (vec![0.0; IPERF_CASES.len()], 0.0);
        for with_siphon in [run % 2 == 1, run % 2 == 0] {
            let agent = if with_siphon {
                Some(Agent::start(server_ns, siphon, &pair.dev_a, &log)?)
            } else {
                None
            };
            for (i, (streams, reverse)) in IPERF_CASES.iter().enumerate() {
                let before = agent.as_ref().map(Agent::cost).transpose()?;
                let r = iperf3(
                    server_ns,
                    client_ns,
                    &server_ip,
                    *streams,
                    *reverse,
                    IPERF_SECONDS,
                    &out.join("e2e-iperf3.json"),
                )
                .with_context(|| format!("iperf3 -P {streams}"))?;
                let s = &mut iperf[i];
                match (&agent, before) {
                    (Some(a), Some(before)) => {
                        let Cost { bpf_s, agent_s } = a.cost()?.since(&before);
                        let gb = r.bytes as f64 / 1e9;
                        s.with.push(r.gbit_per_s);
                        s.bpf_s_per_gb.push(bpf_s / gb);
                        s.agent_s_per_gb.push(agent_s / gb);
                    }
                    _ => {
                        s.without.push(r.gbit_per_s);
                        without.0[i] = r.gbit_per_s;
                    }
                }
            }
            let before = agent.as_ref().map(Agent::cost).transpose()?;
            let rps = wrk(client_ns, &server_ip, server.port, WRK_SECONDS, out)?;
            if let (Some(a), Some(before)) = (&agent, before) {
                // Agent CPU per 1,000 requests (the kernel side is in the iperf3 rows).
                let requests = rps * f64::from(WRK_SECONDS);
                http.agent_s_per_gb
                    .push(a.cost()?.since(&before).agent_s / requests * 1000.0);
            }
            if with_siphon {
                http.with.push(rps);
            } else {
                http.without.push(rps);
                without.1 = rps;
            }
            if let Some(a) = agent {
                a.stop()?;
            }
        }
        // Ratios of this run's pair (both halves are done now).
        for (i, s) in iperf.iter_mut().enumerate() {
            if let Some(w) = s.with.last() {
                s.ratio.push(w / without.0[i]);
            }
        }
        if let Some(w) = http.with.last() {
            http.ratio.push(w / without.1);
        }
        eprintln!("e2e: run {} of {runs} done", run + 1);
    }
    drop(server);
    Ok(figures(iperf, http))
}

fn figures(iperf: Vec<Series>, mut http: Series) -> Vec<Figure> {
    let mut out = Vec::new();
    for ((streams, reverse), mut s) in IPERF_CASES.iter().zip(iperf) {
        let dir = if *reverse {
            "server to client"
        } else {
            "client to server"
        };
        let label = format!("iperf3, {streams} stream(s), {dir}");
        let w = crate::report::Spread::of(&mut s.without);
        let ratio = Figure::new(format!("{label}: with / without"), "ratio", &mut s.ratio).note(
            format!("without {:.2} ({:.2}-{:.2}) Gbit/s", w.median, w.min, w.max),
        );
        let met = ratio.value.median >= TARGET_RATIO;
        out.push(ratio.target(format!(">= {TARGET_RATIO}"), met));
        out.push(Figure::new(
            format!("{label}: Siphon's BPF run time per GB"),
            "CPU s/GB",
            &mut s.bpf_s_per_gb,
        ));
        out.push(Figure::new(
            format!("{label}: agent CPU per GB"),
            "CPU s/GB",
            &mut s.agent_s_per_gb,
        ));
    }
    let w = crate::report::Spread::of(&mut http.without);
    let ratio = Figure::new(
        "wrk through the lab server (exchange log on): requests/s with / without",
        "ratio",
        &mut http.ratio,
    )
    .note(format!(
        "without {:.0} ({:.0}-{:.0}) requests/s",
        w.median, w.min, w.max
    ));
    let met = ratio.value.median >= TARGET_RATIO;
    out.push(ratio.target(format!(">= {TARGET_RATIO}"), met));
    out.push(Figure::new(
        "wrk through the lab server: agent CPU per 1,000 requests",
        "CPU s",
        &mut http.agent_s_per_gb,
    ));
    out
}
