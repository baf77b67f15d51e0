//! `siphon detect`: exchange logs in (several merged by time), detection events and a table of
//! the top entities out. The same detector as `siphon run --detection-log`.

use std::{
    collections::BinaryHeap,
    fs::File,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
};

use anyhow::Context as _;

use crate::detect::{
    config::Config,
    events::{DetectionEvent, State},
    export::DetectorMetrics,
    input::{parse_line, LineError, Observation},
    Detector,
};

/// Bad lines reported by number; beyond this they are only counted.
const REPORTED_BAD_LINES: usize = 10;

pub struct Options {
    pub logs: Vec<PathBuf>,
    pub config: Config,
    /// Where events go (`-`: stdout); none: not written.
    pub events: Option<PathBuf>,
    pub metrics_out: Option<PathBuf>,
    /// Where the final state goes (JSON: entities with a score, clusters with members).
    pub summary_out: Option<PathBuf>,
    /// Where score snapshots go (JSON lines: every scored entity every `scores_every_s`).
    pub scores_out: Option<PathBuf>,
    pub scores_every_s: u64,
    /// Rows of the table per score kind.
    pub top: usize,
    pub quiet: bool,
}

#[derive(Debug, Default)]
pub struct Summary {
    pub lines: u64,
    pub observations: u64,
    pub other_records: u64,
    pub bad_lines: u64,
    pub events: Vec<DetectionEvent>,
}

struct Source {
    name: String,
    reader: Box<dyn BufRead>,
    /// The current line, its allocation reused from line to line.
    line: String,
    line_no: u64,
}

impl Source {
    fn open(path: &Path) -> anyhow::Result<Source> {
        let reader: Box<dyn BufRead> = if path == Path::new("-") {
            Box::new(BufReader::new(std::io::stdin()))
        } else {
            Box::new(BufReader::with_capacity(
                1 << 20,
                File::open(path).with_context(|| format!("opening {}", path.display()))?,
            ))
        };
        Ok(Source {
            name: path.display().to_string(),
            reader,
            line: String::new(),
            line_no: 0,
        })
    }

    /// The next observation of this file; other records are counted, bad lines reported.
    fn next(&mut self, sum: &mut Summary) -> anyhow::Result<Option<Observation>> {
        loop {
            self.line.clear();
            match self.reader.read_line(&mut self.line) {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                // The line's bytes are consumed and `line` left empty: skip it, as a bad line.
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    self.line_no += 1;
                    sum.lines += 1;
                    bad(sum, &self.name, self.line_no, "not UTF-8");
                    continue;
                }
                Err(e) => return Err(e).with_context(|| format!("reading {}", self.name)),
            }
            self.line_no += 1;
            sum.lines += 1;
            let line = self.line.trim_end_matches(['\n', '\r']);
            if line.trim().is_empty() {
                continue;
            }
            match parse_line(line) {
                Ok(o) => return Ok(Some(o)),
                Err(LineError::NotAnExchange) => sum.other_records += 1,
                Err(LineError::Invalid(why)) => bad(sum, &self.name, self.line_no, &why),
            }
        }
    }
}

fn bad(sum: &mut Summary, file: &str, line: u64, why: &str) {
    sum.bad_lines += 1;
    if sum.bad_lines as usize <= REPORTED_BAD_LINES {
        eprintln!("siphon detect: {file}:{line}: skipped: {why}");
    }
}

/// Runs the detector over the logs and returns what it raised and cleared.
pub fn run(opts: &Options) -> anyhow::Result<Summary> {
    let mut det = Detector::new(opts.config.clone())?;
    det.log_events = false;
    let mut sum = Summary::default();
    let mut out: Option<Box<dyn Write>> = match &opts.events {
        None => None,
        Some(p) if p == Path::new("-") => Some(Box::new(std::io::stdout().lock())),
        Some(p) => Some(Box::new(std::io::BufWriter::new(
            File::create(p).with_context(|| format!("creating {}", p.display()))?,
        ))),
    };
    let mut sources = opts
        .logs
        .iter()
        .map(|p| Source::open(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // k-way merge by record end time (each node's log is in about that order already).
    let mut heap = BinaryHeap::new();
    let mut heads: Vec<Option<Observation>> = Vec::with_capacity(sources.len());
    for (i, s) in sources.iter_mut().enumerate() {
        let o = s.next(&mut sum)?;
        if let Some(o) = &o {
            heap.push(std::cmp::Reverse((o.end_ns, i)));
        }
        heads.push(o);
    }
    let started = std::time::Instant::now();
    let mut last_progress = started;
    let mut scores_out: Option<Box<dyn Write>> = match &opts.scores_out {
        None => None,
        Some(p) => Some(Box::new(std::io::BufWriter::new(
            File::create(p).with_context(|| format!("creating {}", p.display()))?,
        ))),
    };
    let every_ns = opts.scores_every_s.max(1) * 1_000_000_000;
    let mut next_snapshot = 0u64;
    while let Some(std::cmp::Reverse((_, i))) = heap.pop() {
        let Some(obs) = heads[i].take() else { continue };
        sum.observations += 1;
        det.observe(obs);
        write_events(&mut det, &mut out, &mut sum)?;
        if let Some(w) = scores_out.as_mut() {
            let now = det.clock_ns();
            if next_snapshot == 0 {
                next_snapshot = (now / every_ns + 1) * every_ns;
            } else if now >= next_snapshot {
                snapshot(&det, w, now)?;
                next_snapshot = (now / every_ns + 1) * every_ns;
            }
        }
        if let Some(next) = sources[i].next(&mut sum)? {
            heap.push(std::cmp::Reverse((next.end_ns, i)));
            heads[i] = Some(next);
        }
        if !opts.quiet && last_progress.elapsed().as_secs() >= 2 {
            last_progress = std::time::Instant::now();
            eprintln!(
                "siphon detect: {} records, {} events so far",
                sum.observations,
                sum.events.len()
            );
        }
    }
    det.finish();
    write_events(&mut det, &mut out, &mut sum)?;
    if let Some(w) = out.as_mut() {
        w.flush().context("writing events")?;
    }
    if let Some(w) = scores_out.as_mut() {
        snapshot(&det, w, det.clock_ns())?;
        w.flush().context("writing score snapshots")?;
    }
    if let Some(p) = &opts.metrics_out {
        let registry = prometheus::Registry::new();
        let mut m = DetectorMetrics::new(&registry)?;
        m.record_events(&sum.events);
        m.update(&det);
        let text = prometheus::TextEncoder::new().encode_to_string(&registry.gather())?;
        std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &opts.summary_out {
        let text = serde_json::to_string_pretty(&final_state(&det))?;
        std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?;
    }
    if !opts.quiet {
        print_table(&det, &sum, opts.top, started.elapsed().as_secs_f64());
    }
    Ok(sum)
}

/// Entities with any score (or raised), and every cluster with its members: what a report or
/// an evaluation needs beyond the events.
#[derive(serde::Serialize)]
pub struct FinalState {
    pub clock_ns: u64,
    pub baseline: crate::detect::score::Baseline,
    pub entities: Vec<FinalEntity>,
    pub clusters: Vec<FinalCluster>,
}

#[derive(serde::Serialize)]
pub struct FinalEntity {
    #[serde(rename = "type")]
    pub ty: &'static str,
    pub value: String,
    pub harvest: f64,
    pub relay: f64,
    /// The highest each score reached during the run.
    pub max_harvest: f32,
    pub max_relay: f32,
    pub raised_harvest: bool,
    pub raised_relay: bool,
    pub requests_per_second: f64,
    /// The entity's features over the middle window, and what it is linked to (distinct
    /// counts: exact to 8, HyperLogLog beyond).
    pub features: Option<crate::detect::features::Features>,
    pub distinct: Option<Distinct>,
}

#[derive(serde::Serialize)]
pub struct Distinct {
    pub api_keys: u64,
    pub client_ips: u64,
    pub prefixes: u64,
    pub ja4s: u64,
    pub user_agents: u64,
    pub request_sizes: u64,
}

#[derive(serde::Serialize)]
pub struct FinalCluster {
    pub id: String,
    pub api_keys: Vec<String>,
    pub client_ips: Vec<String>,
    pub pooled: u32,
    pub harvest: f64,
    pub relay: f64,
    pub max_harvest: f32,
    pub max_relay: f32,
    pub raised_harvest: bool,
    pub raised_relay: bool,
}

pub fn final_state(det: &Detector) -> FinalState {
    FinalState {
        clock_ns: det.clock_ns(),
        baseline: det.baseline().clone(),
        entities: det
            .judged()
            .into_iter()
            .filter(|j| j.max_scores.iter().any(|s| *s > 0.0) || j.raised.iter().any(|r| *r))
            .map(|j| FinalEntity {
                ty: j.ty.label(),
                value: j.value.to_owned(),
                harvest: j.scores[0],
                relay: j.scores[1],
                max_harvest: j.max_scores[0],
                max_relay: j.max_scores[1],
                raised_harvest: j.raised[0],
                raised_relay: j.raised[1],
                requests_per_second: j.requests_per_second,
                features: det.entity(j.ty, j.value).map(|st| {
                    let mid = det.config().middle_window();
                    crate::detect::judge::window_features(det.config(), st, mid, det.clock_ns())
                }),
                distinct: det.entity(j.ty, j.value).map(|st| Distinct {
                    api_keys: st.links.api_keys.estimate(),
                    client_ips: st.links.client_ips.estimate(),
                    prefixes: st.links.prefixes.estimate(),
                    ja4s: st.links.ja4s.estimate(),
                    user_agents: st.links.user_agents.estimate(),
                    request_sizes: st.request_sizes.estimate(),
                }),
            })
            .collect(),
        clusters: det
            .clusters()
            .iter()
            .map(|c| FinalCluster {
                id: c.id.clone(),
                api_keys: c.members.iter().map(|k| k.to_string()).collect(),
                client_ips: c.client_ips.clone(),
                pooled: c.pooled,
                harvest: c.scores[0],
                relay: c.scores[1],
                max_harvest: c.max_scores[0],
                max_relay: c.max_scores[1],
                raised_harvest: c.raised[0].is_some(),
                raised_relay: c.raised[1].is_some(),
            })
            .collect(),
    }
}

/// One line: the time and every entity with a score of at least 0.05.
fn snapshot(det: &Detector, w: &mut Box<dyn Write>, now: u64) -> anyhow::Result<()> {
    let scores: Vec<(&str, &str, f64, f64)> = det
        .judged()
        .into_iter()
        .filter(|j| j.scores[0].max(j.scores[1]) >= 0.05)
        .map(|j| {
            (
                j.ty.label(),
                j.value,
                (j.scores[0] * 1000.0).round() / 1000.0,
                (j.scores[1] * 1000.0).round() / 1000.0,
            )
        })
        .collect();
    serde_json::to_writer(&mut *w, &serde_json::json!({"t_ns": now, "scores": scores}))?;
    writeln!(w)?;
    Ok(())
}

fn write_events(
    det: &mut Detector,
    out: &mut Option<Box<dyn Write>>,
    sum: &mut Summary,
) -> anyhow::Result<()> {
    for e in det.take_events() {
        if let Some(w) = out.as_mut() {
            writeln!(w, "{}", e.to_line()).context("writing events")?;
        }
        sum.events.push(e);
    }
    Ok(())
}

fn print_table(det: &Detector, sum: &Summary, top: usize, secs: f64) {
    let raised = sum
        .events
        .iter()
        .filter(|e| e.state == State::Raised)
        .count();
    let js = det.join_stats();
    eprintln!(
        "siphon detect: {} lines, {} exchanges ({} requests, {} handshakes), {} other records, {} bad lines, {} joined to their TLS record; {} raised, {} cleared; {:.0} records/s",
        sum.lines,
        sum.observations,
        det.stats.requests,
        det.stats.handshakes,
        sum.other_records,
        sum.bad_lines,
        js.joined,
        raised,
        sum.events.len() - raised,
        sum.observations as f64 / secs.max(1e-9)
    );
    let b = det.baseline();
    eprintln!(
        "baseline over {} keys: output {:.1} tokens/s, {:.0} tokens/response, think p50 {}",
        b.keys,
        b.output_tokens_per_second,
        b.output_tokens_per_response,
        b.think_p50_seconds
            .map_or("unknown".to_owned(), |t| format!("{t:.2} s"))
    );
    let judged = det.judged();
    for (k, name) in [(0usize, "harvest"), (1, "relay")] {
        let mut rows: Vec<_> = judged.iter().filter(|j| j.scores[k] > 0.0).collect();
        rows.sort_by(|a, b| b.scores[k].total_cmp(&a.scores[k]));
        println!("top {name} scores:");
        println!(
            "  {:<6} {:<10} {:<36} {:>6} {:>7}  reasons",
            "raised", "type", "entity", "score", "req/s"
        );
        for j in rows.into_iter().take(top) {
            let reasons = det
                .explain(j.ty, j.value)
                .map(|s| {
                    s[k].reasons
                        .iter()
                        .take(3)
                        .map(|r| r.text.clone())
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .unwrap_or_default();
            println!(
                "  {:<6} {:<10} {:<36} {:>6.2} {:>7.2}  {}",
                if j.raised[k] { "yes" } else { "" },
                j.ty.label(),
                shorten(j.value, 36),
                j.scores[k],
                j.requests_per_second,
                reasons
            );
        }
    }
}

fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}
