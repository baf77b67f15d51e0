//! `cargo xtask eval`: the detector (the `siphon detect` binary, the same code as the live
//! agent) on synthetic populations of thousands of clients over a simulated day, attackers
//! injected at a base rate, thresholds tuned on some seeds and reported on others, next to
//! two rate-threshold baselines set to the same false-alarm rate. Writes
//! `target/eval/report.md`, `report.json` and `roc.png`.

mod curves;
mod kinds;
mod metrics;
pub mod plot;
mod report;
mod synth;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;
use clap::Args;
use rand::Rng;

use crate::cmd::{self, workspace_root};
use synth::World;

#[derive(Args, Clone)]
pub struct EvalArgs {
    /// Benign clients per population.
    #[arg(long, default_value_t = 10_000)]
    pub clients: u32,
    /// Simulated hours.
    #[arg(long, default_value_t = 24.0)]
    pub hours: f64,
    /// Attackers per benign client (0.001 to 0.01).
    #[arg(long, default_value_t = 0.005)]
    pub attack_rate: f64,
    /// Seeds the paging threshold is chosen on.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1u64, 2])]
    pub tune_seeds: Vec<u64>,
    /// Seeds the figures are reported on (held-out attacker variants join here).
    #[arg(long, value_delimiter = ',', default_values_t = vec![101u64, 102, 103])]
    pub report_seeds: Vec<u64>,
    /// A small, fast run for CI (1,000 clients, 6 hours, one seed each).
    #[arg(long)]
    pub quick: bool,
    /// Where the report goes.
    #[arg(long, default_value = "target/eval")]
    pub out: PathBuf,
    /// A lab run's output directory to calibrate against (default: the newest of target/lab
    /// and target/lab-ci).
    #[arg(long)]
    pub lab_dir: Option<PathBuf>,
}

impl EvalArgs {
    /// `--quick`, written to `out`.
    pub fn quick(out: &Path) -> EvalArgs {
        EvalArgs {
            clients: 1_000,
            hours: 6.0,
            attack_rate: 0.01,
            tune_seeds: vec![1],
            report_seeds: vec![101],
            quick: true,
            out: out.to_path_buf(),
            lab_dir: None,
        }
    }
}

/// The report holds what the README promises: every attacker kind (held-out ones included) and
/// benign kind with figures and intervals in [0, 1], a paging threshold, a plot.
pub fn check_report(out: &Path) -> anyhow::Result<()> {
    let r: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("report.json")).context("report.json")?,
    )?;
    let rows = r["result"]["rows"]
        .as_array()
        .context("report.json: no rows")?;
    let kinds: Vec<&str> = rows.iter().filter_map(|r| r["kind"].as_str()).collect();
    for k in TUNE_ATTACKERS.iter().chain(&HELD_OUT_ATTACKERS).chain(&[
        "person",
        "office_person",
        "app_backend",
        "batch_job",
        "ci_eval",
        "agent_loop",
        "content_generator",
    ]) {
        anyhow::ensure!(kinds.contains(k), "report.json: no row for {k}");
    }
    for row in rows {
        for f in [
            "flagged",
            "flagged_at_page",
            "key_rate_baseline",
            "ip_rate_baseline",
        ] {
            let (v, lo, hi) = (
                row[f]["value"].as_f64(),
                row[f]["lo"].as_f64(),
                row[f]["hi"].as_f64(),
            );
            let ok = matches!((v, lo, hi), (Some(v), Some(lo), Some(hi)) if (0.0..=1.0).contains(&v) && lo <= v && v <= hi && hi <= 1.0);
            anyhow::ensure!(ok, "report.json: {} {f}: {:?}", row["kind"], row[f]);
        }
    }
    anyhow::ensure!(
        r["result"]["page_threshold"]
            .as_f64()
            .is_some_and(|t| t > 0.0 && t <= 1.0),
        "no paging threshold"
    );
    anyhow::ensure!(
        std::fs::metadata(out.join("roc.png"))?.len() > 1000,
        "roc.png missing"
    );
    anyhow::ensure!(
        std::fs::read_to_string(out.join("report.md"))?.contains("| kind | label |"),
        "report.md has no table"
    );
    println!("eval: report structure checked ({} rows)", rows.len());
    Ok(())
}

/// Kinds every population has; attackers used for tuning.
pub const TUNE_ATTACKERS: [&str; 5] = [
    "harvester_flat",
    "harvester_jitter",
    "hydra",
    "relay_pool",
    "relay_far",
];
/// Attacker variants only the report seeds contain.
pub const HELD_OUT_ATTACKERS: [&str; 4] = [
    "evasive_harvester",
    "slow_rotation",
    "relay_pool_mixed_stack",
    "relay_far_browser",
];

/// Builds one population.
pub fn population<'a>(
    seed: u64,
    clients: u32,
    hours: f64,
    attack_rate: f64,
    held_out: bool,
    conv: &'a synth::Trace,
    code: &'a synth::Trace,
) -> World<'a> {
    let mut w = World::new(seed, hours, conv, code);
    let n = clients as f64;
    let count = |share: f64| ((n * share).round() as u32).max(1);
    let offices = count(0.006);
    let mut people = clients.saturating_sub(
        offices * 10 + count(0.005) + count(0.002) + count(0.005) + count(0.01) + count(0.003),
    );
    for o in 0..offices {
        let ip = w.ip(format!("21.{}.{}.{}", o >> 16, (o >> 8) & 255, 1 + o % 250));
        for p in 0..10 {
            let stack = [0u8, 1, 2][w.rng.gen_range(0..3)];
            kinds::person(
                &mut w,
                format!("office{o}-p{p}"),
                ip,
                stack,
                "office_person",
            );
        }
    }
    let mut i = 0u32;
    while people > 0 {
        let ip = w.ip(format!(
            "20.{}.{}.{}",
            i >> 16,
            (i >> 8) & 255,
            1 + (i & 255) % 254
        ));
        // People use the SDK, browsers, node and curl (which harvesters use too).
        let stack = [0u8, 1, 1, 2, 3][w.rng.gen_range(0..5)];
        kinds::person(&mut w, format!("person{i}"), ip, stack, "person");
        people -= 1;
        i += 1;
    }
    for j in 0..count(0.005) {
        kinds::app_backend(&mut w, format!("app{j}"), 2, j);
    }
    let mut svc = 0u32;
    let mut svc_ip = |w: &mut World<'_>| {
        svc += 1;
        w.ip(format!(
            "23.{}.{}.{}",
            svc >> 16,
            (svc >> 8) & 255,
            1 + (svc & 255) % 254
        ))
    };
    for j in 0..count(0.002) {
        let ip = svc_ip(&mut w);
        kinds::batch_job(&mut w, format!("batch{j}"), ip);
    }
    for j in 0..count(0.005) {
        let ip = svc_ip(&mut w);
        kinds::ci_eval(&mut w, format!("ci{j}"), ip);
    }
    for j in 0..count(0.01) {
        let ip = svc_ip(&mut w);
        kinds::agent_loop(&mut w, format!("agent{j}"), ip);
    }
    for j in 0..count(0.003) {
        let ip = svc_ip(&mut w);
        kinds::content_generator(&mut w, format!("content{j}"), ip);
    }
    let attackers = ((n * attack_rate).round() as u32).max(1);
    let mut menu: Vec<&str> = TUNE_ATTACKERS.to_vec();
    if held_out {
        menu.extend(HELD_OUT_ATTACKERS);
    }
    for a in 0..attackers {
        let kind = menu[a as usize % menu.len()];
        let id = format!("{kind}{a}");
        let ip = w.ip(format!("45.{}.{}.{}", a >> 8, a & 255, 7));
        match kind {
            "harvester_flat" => kinds::harvester_flat(&mut w, id, ip),
            "harvester_jitter" => kinds::harvester_jitter(&mut w, id, ip),
            "hydra" => kinds::hydra(&mut w, id, 0, a),
            "relay_pool" => kinds::relay_pool(&mut w, id, ip, [0, 0, 0], "relay_pool"),
            "relay_far" => kinds::relay_far(&mut w, id, ip, 3, "relay_far"),
            "evasive_harvester" => kinds::evasive_harvester(&mut w, id, ip),
            "slow_rotation" => kinds::slow_rotation(&mut w, id, ip),
            "relay_pool_mixed_stack" => {
                kinds::relay_pool(&mut w, id, ip, [0, 2, 4], "relay_pool_mixed_stack")
            }
            _ => kinds::relay_far(&mut w, id, ip, 1, "relay_far_browser"),
        }
    }
    w
}

/// One population through `siphon detect`: what it wrote.
pub struct Run {
    pub seed: u64,
    pub instances: Vec<synth::Instance>,
    pub records: u64,
    pub summary: serde_json::Value,
    pub events: Vec<serde_json::Value>,
    /// Per key and per address: the most requests in any 10 minutes (for the baselines).
    pub key_peak: std::collections::HashMap<String, u32>,
    pub ip_peak: std::collections::HashMap<String, u32>,
    pub detect_seconds: f64,
    pub scored: metrics::Scored,
}

fn run_one(
    siphon: &Path,
    dir: &Path,
    w: &mut World<'_>,
    seed: u64,
    snapshots: bool,
) -> anyhow::Result<Run> {
    let log = dir.join(format!("population-{seed}.jsonl"));
    let records = {
        let mut f = std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?,
        );
        let n = w.write(&mut f)?;
        std::io::Write::flush(&mut f)?;
        n
    };
    let (key_peak, ip_peak) = metrics::peaks(w);
    let events = dir.join(format!("events-{seed}.jsonl"));
    let summary = dir.join(format!("summary-{seed}.json"));
    let started = std::time::Instant::now();
    let status = Command::new(siphon)
        .arg("detect")
        .arg(&log)
        .arg("--events")
        .arg(&events)
        .arg("--summary")
        .arg(&summary)
        .args(if snapshots {
            vec![
                "--scores-out".to_owned(),
                dir.join(format!("scores-{seed}.jsonl"))
                    .display()
                    .to_string(),
            ]
        } else {
            Vec::new()
        })
        .arg("--quiet")
        .status()
        .context("running siphon detect")?;
    anyhow::ensure!(status.success(), "siphon detect failed: {status}");
    let detect_seconds = started.elapsed().as_secs_f64();
    if std::env::var_os("SIPHON_EVAL_KEEP_LOGS").is_none() {
        let _ = std::fs::remove_file(&log);
    }
    Ok(Run {
        seed,
        instances: std::mem::take(&mut w.instances),
        records,
        summary: serde_json::from_str(&std::fs::read_to_string(&summary)?)?,
        events: crate::lab::read_jsonl(&events),
        key_peak,
        ip_peak,
        detect_seconds,
        scored: metrics::Scored::default(),
    })
}

pub fn eval(args: &EvalArgs) -> anyhow::Result<()> {
    let root = workspace_root();
    let mut args = args.clone();
    if args.quick {
        args.clients = 1_000;
        args.hours = 6.0;
        args.attack_rate = 0.01;
        args.tune_seeds = vec![1];
        args.report_seeds = vec![101];
    }
    anyhow::ensure!(
        (0.001..=0.01).contains(&args.attack_rate),
        "--attack-rate: between 0.001 and 0.01"
    );
    anyhow::ensure!(args.clients >= 200, "--clients: at least 200");
    anyhow::ensure!(args.hours >= 1.0, "--hours: at least 1");
    let out = if args.out.is_absolute() {
        args.out.clone()
    } else {
        root.join(&args.out)
    };
    std::fs::create_dir_all(&out)?;
    let traces = root.join("../shared/data/llm-traces");
    let conv = synth::load_trace(&traces.join("AzureLLMInferenceTrace_conv.csv"))?;
    let code = synth::load_trace(&traces.join("AzureLLMInferenceTrace_code.csv"))?;
    let siphon = cmd::build_agent_release("siphon")?;
    let mut tune = Vec::new();
    let mut reported = Vec::new();
    let mut calibration = None;
    for (seeds, held_out) in [(&args.tune_seeds, false), (&args.report_seeds, true)] {
        for &seed in seeds {
            eprintln!(
                "eval: seed {seed}: {} benign clients, {} h, attackers at {:.1}%{}",
                args.clients,
                args.hours,
                args.attack_rate * 100.0,
                if held_out {
                    ", held-out variants included"
                } else {
                    ""
                }
            );
            let mut w = population(
                seed,
                args.clients,
                args.hours,
                args.attack_rate,
                held_out,
                &conv,
                &code,
            );
            if calibration.is_none() {
                calibration = Some(report::calibration(
                    &w,
                    &root,
                    args.lab_dir.as_deref(),
                    &conv,
                ));
            }
            let first_report = held_out && reported.is_empty();
            let mut run = run_one(&siphon, &out, &mut w, seed, first_report)?;
            metrics::score_run(&mut run);
            eprintln!(
                "eval: seed {seed}: {} records scored in {:.1} s ({:.0} records/s)",
                run.records,
                run.detect_seconds,
                run.records as f64 / run.detect_seconds.max(1e-9)
            );
            if held_out {
                reported.push(run)
            } else {
                tune.push(run)
            }
        }
    }
    let page_threshold = metrics::paging_threshold(&tune);
    let result = metrics::evaluate(&reported, page_threshold);
    let curves = curves::curves(&reported);
    plot::roc(&out.join("roc.png"), &curves)?;
    if let Some(run) = reported.first() {
        let series = curves::timelines(run, &out.join(format!("scores-{}.jsonl", run.seed)));
        plot::timeline(&out.join("timeline.png"), &series)?;
    }
    report::write(
        &out,
        &args,
        &result,
        &curves,
        calibration.as_deref().unwrap_or(""),
    )?;
    println!("{}", report::table(&result));
    println!("eval: report in {}", out.join("report.md").display());
    Ok(())
}
