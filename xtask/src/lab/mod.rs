//! `cargo xtask lab`: a small inference cluster in network namespaces with benign, harvesting
//! and relayed traffic whose truth is known, Siphon attached where a DaemonSet would be (the
//! server node and the ingress node), a live view, a summary, and a ground-truth file.
//!
//! ```text
//!  humans apps h1 h2 h3(16 IPs) ─┐                       ┌─ server :8000 (OpenAI-compatible,
//!  users ── relay1 (LiteLLM) ────┼── bridge ── ingress ──┤   keys, rate limit, request log)
//!  far ──(delay 120ms)── relay2 (SOCKS5) ─┘   (haproxy: TLS, X-Forwarded-For)
//! ```
//!
//! Plus the benign population's nodes (`actors::nodes`) and one node per outside actor
//! (`--actors`, `outside.rs`).

mod actors;
mod checks;
mod configs;
mod delayline;
mod outside;
mod procs;
mod prom;
mod start;
mod topology;
mod truth;
mod verdict;
mod view;
mod wait;

use wait::wait_for;

pub use view::read_jsonl;

use std::{
    path::PathBuf,
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use clap::{Args, ValueEnum};

use crate::cmd::{self, workspace_root};
use procs::Procs;
use topology::{Topology, SUBNET};

#[derive(Args, Clone, Debug)]
pub struct LabArgs {
    /// How long the traffic runs (the whole lab takes ~30 s more to start and stop). Keys in a
    /// pool or cluster show their lockstep after three 30-s busy periods (~90 s of activity),
    /// and r1's router takes ~20 s to start: 150 s left r1's relay raised only in the last
    /// seconds on a slow machine.
    #[arg(long, value_parser = humantime_secs, default_value = "210")]
    pub duration: u64,
    /// Which actors run.
    #[arg(long, value_enum, default_value_t = Scenario::All)]
    pub scenario: Scenario,
    /// Where logs, ground truth and the summary go.
    #[arg(long, default_value = "target/lab")]
    pub out: PathBuf,
    /// After the run, check the lab's invariants (CI): every actor completed requests, Siphon's
    /// counts equal the server log's, actors behaved as specified. Non-zero exit on failure.
    #[arg(long)]
    pub check: bool,
    /// Seconds between live-view refreshes (0: none).
    #[arg(long, default_value_t = 10)]
    pub view_every: u64,
    /// Actors written outside the project, from a TOML file (format: README, "The lab"); they
    /// run with the scenario's actors unless --no-builtin.
    #[arg(long)]
    pub actors: Option<PathBuf>,
    /// Run only the actors of --actors (the cluster, relays and Siphon as usual).
    #[arg(long, requires = "actors")]
    pub no_builtin: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Every actor.
    All,
    /// The benign actors only (humans, apps and the benign population).
    Benign,
    /// Benign plus the harvesters H1-H3.
    Harvest,
    /// Benign plus the relays R1 (LiteLLM) and R2 (SOCKS).
    Relay,
}

fn humantime_secs(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = if let Some(n) = t.strip_suffix('m') {
        (n, 60)
    } else {
        (t.trim_end_matches('s'), 1)
    };
    let v: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected seconds, e.g. 90 or 90s or 2m"))?;
    if v == 0 || v * mult > 3600 {
        return Err("between 1 s and 1 h".into());
    }
    Ok(v * mult)
}

/// The lab's secret for API-key hashes: Siphon hashes with it, and the ground truth carries the
/// same hashes so evaluations can join them.
const KEY_HASH_SECRET: &str = "siphon-lab-key-hash-secret-v1";
const SERVER_PORT: u16 = 8000;
const INGRESS_PORT: u16 = 8443;
const LITELLM_PORT: u16 = 4000;
const SOCKS_PORT: u16 = 1080;
const SIPHON_PORT: u16 = 9947;
/// Per-key rate limit at the server: the hydra keeps every key under it.
pub const RATE_LIMIT_RPM: u32 = 120;
pub const LITELLM_VENV: &str = "/opt/siphon-lab/litellm-venv";

pub fn run(args: &LabArgs) -> anyhow::Result<()> {
    cmd::require_root("the lab creates network namespaces")?;
    let root = workspace_root();
    let out = if args.out.is_absolute() {
        args.out.clone()
    } else {
        root.join(&args.out)
    };
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("clearing {}", out.display()))?;
    }
    std::fs::create_dir_all(&out)?;
    let siphon = cmd::build_agent_release("siphon")?;

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        // A second Ctrl-C while stopping is ignored: teardown must finish.
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst));
    }

    let prefix = format!("sxl{}-", std::process::id() % 100_000);
    let builtin = actors::nodes(&prefix);
    let outside = match &args.actors {
        Some(file) => {
            let file = if file.is_absolute() {
                file.clone()
            } else {
                std::env::current_dir()?.join(file)
            };
            let mut reserved: Vec<&str> = builtin.iter().map(|n| n.role).collect();
            reserved.extend(["human", "app", "r1", "r2"]);
            outside::load(&file, &reserved)?
        }
        None => outside::Outside::default(),
    };
    let mut all_nodes = builtin;
    all_nodes.extend(outside::nodes(&prefix, &outside.specs)?);
    let started = Instant::now();
    let result = {
        let mut lab = Lab {
            topo: Topology::build(&prefix, all_nodes)?,
            outside,
            procs: Procs::new(),
            planned: Vec::new(),
            out: out.clone(),
            root: root.clone(),
            siphon,
        };
        let r = lab.run(args, &stop);
        // Stop everything (actors first, then relays, ingress, Siphon, server), then the network.
        lab.procs.stop_matching("actor-", Duration::from_secs(5));
        let leftovers = outside::kill_leftovers(&lab.topo, &lab.planned);
        if !leftovers.is_empty() {
            println!(
                "lab: killed processes outside actors left behind: {}",
                leftovers.join(", ")
            );
        }
        lab.procs.stop_matching("", Duration::from_secs(8));
        lab.topo.teardown();
        (r, outside::survivors(&out, &lab.planned))
    };
    let (result, survivors) = result;
    let left = topology::namespaces_with_prefix(&prefix);
    println!(
        "lab: stopped after {:.0} s; outputs in {}",
        started.elapsed().as_secs_f64(),
        out.display()
    );
    let report = result?;
    if !left.is_empty() {
        bail!("namespaces left behind: {left:?}");
    }
    if !survivors.is_empty() {
        bail!("outside actors' processes left behind: {survivors:?}");
    }
    if args.check {
        let mut failures = checks::run(&out, &report)?;
        failures.extend(report.detection_failures.iter().cloned());
        failures.extend(outside::checks(&out, &report.actors, &report.verdicts));
        failures.extend(verdict::live_matches_offline(
            &cmd::build_agent_release("siphon")?,
            &out,
        )?);
        if !failures.is_empty() {
            for f in &failures {
                eprintln!("lab check FAILED: {f}");
            }
            bail!("{} lab check(s) failed", failures.len());
        }
        println!("lab: all checks passed (namespaces created and removed, nothing left behind)");
    }
    Ok(())
}

struct Lab {
    topo: Topology,
    outside: outside::Outside,
    /// The actors started (for teardown).
    planned: Vec<actors::Actor>,
    procs: Procs,
    out: PathBuf,
    root: PathBuf,
    siphon: PathBuf,
}

/// What the run produced, for the summary and the checks.
pub struct RunReport {
    pub actors: Vec<actors::Actor>,
    /// Detection targets missed (see `verdict::failures`).
    pub detection_failures: Vec<String>,
    /// Every actor in the verdict table: (id, label).
    pub verdicts: Vec<(String, String)>,
    pub server_metrics: String,
    pub ingress_metrics: String,
    pub keys: actors::Keys,
}

impl Lab {
    fn lab_dir(&self) -> PathBuf {
        self.root.join("xtask/lab")
    }

    /// Starts every process, runs the actors for the run's duration, then collects what the
    /// checks and verdicts need.
    fn run(&mut self, args: &LabArgs, stop: &AtomicBool) -> anyhow::Result<RunReport> {
        let mut keys = actors::Keys::new();
        keys.outside = outside::server_keys(&self.outside);
        configs::certificates(&self.out)?;
        configs::detect_config(&self.out, &self.root)?;
        std::fs::write(
            self.out.join("server-keys.txt"),
            keys.server_keys().join("\n") + "\n",
        )?;
        self.start_server(stop)?;
        self.start_agents(stop)?;
        self.start_prometheus()?;
        self.start_ingress(stop)?;

        let mut actors = if args.no_builtin {
            Vec::new()
        } else {
            actors::plan(args.scenario, &keys, args.duration)
        };
        actors.extend(outside::plan(&self.outside, args.duration));
        // The relays run when an actor goes through them.
        let relay = actors.iter().any(|a| a.via != "ingress");
        if relay {
            self.start_relays(&keys, stop)?;
        }

        truth::truth_file(&self.out, &actors, &keys, &self.topo)?;
        self.planned = actors.clone();
        println!(
            "lab: network {SUBNET}.0/24 in namespaces {}*",
            self.topo.prefix
        );
        println!("lab: started inference server ({}:{SERVER_PORT}), haproxy ingress (https://ingress.lab:{INGRESS_PORT}), Siphon on server and ingress{}", self.topo.node("server").ip(), if relay { ", LiteLLM (relay1), SOCKS5 (relay2)" } else { "" });
        for role in ["server", "ingress"] {
            println!("lab: Siphon metrics ({role} node): ip netns exec {} curl -s http://127.0.0.1:{SIPHON_PORT}/metrics", self.topo.node(role).ns);
        }
        self.start_actors(&actors)?;
        self.run_for(args, &actors, stop)?;
        if stop.load(Ordering::SeqCst) {
            println!("lab: interrupted; stopping");
        }
        let stopped = self.procs.stop_matching("actor-", Duration::from_secs(8));
        for (name, code) in &stopped {
            if *code != Some(0) {
                println!("lab: {name} exited with {code:?}");
            }
        }
        self.settle()?;
        self.collect(actors, keys)
    }

    /// Until the run's duration is over or the run is stopped; fails if a core process exits.
    fn run_for(
        &mut self,
        args: &LabArgs,
        actors: &[actors::Actor],
        stop: &AtomicBool,
    ) -> anyhow::Result<()> {
        let began = Instant::now();
        let mut last_view = Instant::now();
        while began.elapsed() < Duration::from_secs(args.duration) && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(250));
            for name in [
                "server",
                "siphon-server",
                "siphon-ingress",
                "ingress-haproxy",
            ] {
                if let Some(status) = self.procs.exited(name) {
                    bail!(
                        "{name} exited early ({status}); see its log in {}",
                        self.out.display()
                    );
                }
            }
            if args.view_every > 0 && last_view.elapsed() >= Duration::from_secs(args.view_every) {
                last_view = Instant::now();
                view::live(&self.out, actors, began.elapsed(), args.duration);
            }
        }
        Ok(())
    }

    /// Lets the sweepers report exchanges that were open when the actors stopped (idle
    /// keep-alive, connections haproxy closes later): waits until Siphon's count at the server
    /// stops moving and meets the server's log, 30 s at most.
    fn settle(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = f64::NAN;
        loop {
            std::thread::sleep(Duration::from_secs(2));
            let logged = view::read_jsonl(&self.out.join("server-requests.jsonl")).len() as f64;
            let seen = checks::metric_sum(
                &self.metrics("server")?,
                "siphon_requests_total",
                &[("service", "llm")],
            );
            if (seen == logged && seen == last) || Instant::now() > deadline {
                break;
            }
            last = seen;
        }
        Ok(())
    }

    /// The agents' metrics, Prometheus's alerts and queries, `siphon detect`'s verdicts.
    fn collect(
        &mut self,
        actors: Vec<actors::Actor>,
        keys: actors::Keys,
    ) -> anyhow::Result<RunReport> {
        let server_metrics = self.metrics("server")?;
        let ingress_metrics = self.metrics("ingress")?;
        std::fs::write(self.out.join("siphon-server-metrics.txt"), &server_metrics)?;
        std::fs::write(
            self.out.join("siphon-ingress-metrics.txt"),
            &ingress_metrics,
        )?;
        // Alerts need their `for: 1m` after the live agents raised: wait up to 90 s.
        let prom_failures = prom::finish(
            &self.topo,
            &self.out,
            &self.root,
            &[("server", &server_metrics), ("ingress", &ingress_metrics)],
            Duration::from_secs(90),
        )?;
        verdict::run_detect(&self.siphon, &self.out)?;
        let (verdicts, shared) = verdict::verdicts(&self.out)?;
        let report = RunReport {
            actors,
            detection_failures: verdict::failures(&verdicts)
                .into_iter()
                .chain(prom_failures)
                .collect(),
            verdicts: verdicts
                .iter()
                .map(|v| (v.id.clone(), v.label.clone()))
                .collect(),
            server_metrics,
            ingress_metrics,
            keys,
        };
        view::summary(&self.out, &report)?;
        verdict::print(&verdicts, &shared);
        Ok(report)
    }
}
