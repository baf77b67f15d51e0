//! Userspace figures: what the agent's own threads can take, next to the kernel's cost.
//!
//! - **pipeline**: records/s on one pinned core through ring-buffer parse → assembly → the
//!   detector sink (and the capacity metrics), on the record mix of [`mix`], timed over
//!   `Pipeline::on_record` and the final `finish_sinks`.
//! - **detect**: `siphon detect`'s code (`cmd::detect::run`, in-process, quiet) over the
//!   exchange log the same mix produces through the exchange-log sink: records/s over JSON lines.
//! - **scale** ([`scale`]): `/metrics` render time and size, and resident memory, at 1k, 10k and
//!   100k tracked clients, each size in a child process of its own so memory is its own.
//! - **loss** ([`loss`]): ring-buffer loss with the agent's reader at 10k, 50k and 100k
//!   requests/s produced by the kernel program under test_run.
//!
//! Every figure is the median, min and max of `--runs` runs, interleaved where two are compared.

mod loss;
mod mix;
pub(crate) mod scale;

use std::{path::Path, time::Instant};

use anyhow::Context as _;
use serde::Serialize;
use siphon_agent::{
    cmd::detect as detect_cmd,
    decode::ApiKeyHasher,
    detect::{config::Config, export::DetectorMetrics, sink::DetectorSink, Detector},
    export::capacity::CapacityMetrics,
    pipeline::{assemble::DecodeConfig, services::ServiceMap, Pipeline, WallClock},
};

use crate::report::Spread;

/// In-process pipeline with the detector: records/s on one core.
pub(crate) const TARGET_PIPELINE_RPS: f64 = 1_000_000.0;
/// `siphon detect` over JSON lines.
pub(crate) const TARGET_DETECT_RPS: f64 = 200_000.0;

/// The mix: 2,000 clients (a quarter over TLS) on keep-alive connections, a request each every
/// 100 ms for 12 s of record time: 20,000 requests/s, ~55,000 records/s, a busy ingress.
pub(crate) const MIX_CLIENTS: usize = 2_000;
const MIX_ROUNDS: usize = 120;
const MIX_PERIOD_MS: u64 = 100;

/// One line of the userspace and end-to-end tables.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Figure {
    pub(crate) name: String,
    pub(crate) unit: &'static str,
    pub(crate) value: Spread,
    /// Beside the figure: a size, a count, a ratio's parts.
    pub(crate) note: String,
    pub(crate) target: Option<String>,
    /// "met", "MISSED" or "-" (no target).
    pub(crate) status: String,
}

impl Figure {
    pub(crate) fn new(name: impl Into<String>, unit: &'static str, runs: &mut [f64]) -> Figure {
        Figure {
            name: name.into(),
            unit,
            value: Spread::of(runs),
            note: String::new(),
            target: None,
            status: "-".to_owned(),
        }
    }

    pub(crate) fn note(mut self, note: impl Into<String>) -> Figure {
        self.note = note.into();
        self
    }

    /// The target in words and whether this run met it (the caller compares the median).
    pub(crate) fn target(mut self, text: impl Into<String>, met: bool) -> Figure {
        self.target = Some(text.into());
        self.status = if met { "met" } else { "MISSED" }.to_owned();
        self
    }
}

fn pipeline(json: Option<Box<dyn std::io::Write + Send>>) -> anyhow::Result<Pipeline> {
    let registry = prometheus::Registry::new();
    let capacity = CapacityMetrics::new(&registry, ServiceMap::parse(&[])?)?;
    let hasher = ApiKeyHasher::new(b"siphon-bench key-hash secret, 32+ bytes long")
        .map_err(|e| anyhow::anyhow!("key hasher: {e:?}"))?;
    let detector = DetectorSink::new(
        Detector::new(Config::default())?,
        DetectorMetrics::new(&registry)?,
        None,
    );
    Ok(Pipeline::new(
        DecodeConfig {
            hasher,
            key_updates: None,
            trusted_hops: 0,
        },
        capacity,
        json,
    )
    .with_wall_clock(WallClock::Unix)
    .with_sink(Box::new(detector)))
}

pub(crate) fn measure(
    runs: u32,
    out: &Path,
    pipeline_only: bool,
    clients: usize,
) -> anyhow::Result<Vec<Figure>> {
    eprintln!("userspace: building the record mix ({clients} clients) with test_run");
    let mix = mix::build(clients, MIX_ROUNDS, MIX_PERIOD_MS)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let log = out.join("userspace-exchanges.jsonl");
    let exchanges = {
        let file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut p = pipeline(Some(Box::new(std::io::BufWriter::new(file))))?;
        for r in &mix.records {
            p.on_record(r);
        }
        p.finish_sinks();
        p.flush().context("writing the mix's exchange log")?;
        p.exchanges
    };
    let (mut pipe_rps, mut detect_rps) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let mut p = pipeline(None)?;
        let started = Instant::now();
        for r in &mix.records {
            p.on_record(r);
        }
        p.finish_sinks();
        pipe_rps.push(mix.records.len() as f64 / started.elapsed().as_secs_f64());
        if pipeline_only {
            continue;
        }

        let started = Instant::now();
        let sum = detect_cmd::run(&detect_cmd::Options {
            logs: vec![log.clone()],
            config: Config::default(),
            events: None,
            metrics_out: None,
            summary_out: None,
            scores_out: None,
            scores_every_s: 600,
            top: 0,
            quiet: true,
        })?;
        detect_rps.push(sum.lines as f64 / started.elapsed().as_secs_f64());
    }
    let pipe = Figure::new(
        "pipeline: ring-buffer records → assembly → detector, one core",
        "records/s",
        &mut pipe_rps,
    )
    .note(format!(
        "{} records: {} requests of {} clients over {:.0} s of record time ({exchanges} exchanges)",
        mix.records.len(),
        mix.requests,
        mix.clients,
        mix.span_seconds
    ));
    let pipe_met = pipe.value.median >= TARGET_PIPELINE_RPS;
    let detect = Figure::new(
        "siphon detect over the mix's exchange log (JSON lines)",
        "records/s",
        &mut detect_rps,
    )
    .note(format!("{exchanges} lines"));
    let detect_met = detect.value.median >= TARGET_DETECT_RPS;
    let mut figures = vec![
        pipe.target(format!(">= {TARGET_PIPELINE_RPS:.0}"), pipe_met),
        detect.target(format!(">= {TARGET_DETECT_RPS:.0}"), detect_met),
    ];
    if pipeline_only {
        return Ok(figures);
    }
    figures.extend(scale::measure(runs)?);
    figures.extend(loss::measure(runs)?);
    Ok(figures)
}
