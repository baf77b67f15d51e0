//! The report: figures per scenario on the batch scale, targets, the many-flows and live
//! tables; printed as markdown and written as markdown and JSON (`--out`).

use std::fmt::Write as _;

use agent_common::{CounterKind, KernelCounter};
use anyhow::Context as _;
use serde::Serialize;

use crate::{
    kernel::Kernel,
    scenarios::{
        Case, Method, Prog, Target, TARGET_CAPTURE_NS, TARGET_EXISTING_FLOW_NS,
        TARGET_EXISTING_FLOW_RATIO, TARGET_NEW_FLOW_NS,
    },
    userspace::Figure,
};

/// Live capture paths: at most this many times their test_run figure (net of the floor).
pub(crate) const TARGET_LIVE_RATIO: f64 = 1.3;

/// Median, min and max over a scenario's runs.
#[derive(Clone, Copy, Debug, Serialize)]
pub(crate) struct Spread {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) runs: usize,
}

impl Spread {
    pub(crate) fn of(runs: &mut [f64]) -> Spread {
        let min = runs.iter().copied().fold(f64::INFINITY, f64::min);
        let max = runs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Spread {
            median: median(runs),
            min,
            max,
            runs: runs.len(),
        }
    }

    /// The same figures moved by `by` ns.
    pub(crate) fn shift(self, by: f64) -> Spread {
        Spread {
            median: self.median + by,
            min: self.min + by,
            max: self.max + by,
            runs: self.runs,
        }
    }
}

/// One scenario's line of the main table.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Row {
    pub(crate) name: &'static str,
    pub(crate) prog: &'static str,
    pub(crate) method: &'static str,
    /// As measured (ns per packet).
    pub(crate) measured: Spread,
    /// Median less the floor measured the same way.
    pub(crate) net: Option<f64>,
    /// On the batch scale (see main.rs): what the target is checked against. For single rows,
    /// the single floor swapped for the batch floor, less the single-shot excess.
    pub(crate) held: Option<Spread>,
    /// `held` over the minimal LRU counter's batch median.
    pub(crate) times_lru: Option<f64>,
    pub(crate) target: Option<String>,
    pub(crate) status: String,
}

/// Cost per packet with packets spread over many flows (many.rs).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ManyRow {
    pub(crate) flows: u32,
    pub(crate) table_entries: u32,
    /// The flow table's memory as the kernel accounts it (fdinfo `memlock`).
    pub(crate) siphon_table_bytes: u64,
    pub(crate) lru_table_bytes: u64,
    /// Both on the batch scale, like `Row::held`.
    pub(crate) siphon: Spread,
    pub(crate) lru: Spread,
}

/// One line of the live cross-check.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct LiveRow {
    pub(crate) label: &'static str,
    pub(crate) runs: u64,
    pub(crate) floor: f64,
    pub(crate) lru_net: f64,
    pub(crate) siphon_net: f64,
    /// The matching test_run scenario's figure net of the batch floor.
    pub(crate) test_run_net: Option<f64>,
    pub(crate) ratio: Option<f64>,
    pub(crate) status: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) machine: String,
    pub(crate) settings: String,
    pub(crate) batch_floor: f64,
    pub(crate) single_floor: f64,
    pub(crate) single_shot_excess: f64,
    pub(crate) rows: Vec<Row>,
    pub(crate) many_flows: Vec<ManyRow>,
    pub(crate) live: Vec<LiveRow>,
    pub(crate) live_note: String,
    pub(crate) kernel_counters: Vec<(String, u64)>,
    /// Userspace and end-to-end figures (userspace/, e2e/), empty when skipped.
    pub(crate) userspace: Vec<Figure>,
    pub(crate) e2e: Vec<Figure>,
    pub(crate) missed: Vec<String>,
}

fn prog_label(prog: Prog) -> &'static str {
    match prog {
        Prog::Floor => "floor",
        Prog::LruCounter => "LRU counter",
        Prog::Siphon => "siphon",
    }
}

/// The calibration of single figures against batch ones, from one run's rows.
pub(crate) struct Scale {
    pub(crate) batch_floor: f64,
    pub(crate) single_floor: f64,
    /// What a lone repeat=1 call adds beyond the floor's share: the smallest of (shifted
    /// single - batch) over the Siphon paths measured both ways.
    pub(crate) excess: f64,
}

impl Scale {
    /// A single figure on the batch scale.
    pub(crate) fn single_to_batch(&self, s: Spread) -> Spread {
        s.shift(self.batch_floor - self.single_floor - self.excess)
    }
}

/// Builds the main table from the cases and their runs (ns per run).
pub(crate) fn rows(cases: &[Case], figures: &mut [Vec<f64>]) -> anyhow::Result<(Vec<Row>, Scale)> {
    let spreads: Vec<Spread> = figures.iter_mut().map(|r| Spread::of(r)).collect();
    let find = |prog: Prog, method: Method| {
        cases
            .iter()
            .zip(&spreads)
            .find(|(c, _)| c.prog == prog && c.method == method)
            .map(|(_, s)| s.median)
            .with_context(|| format!("no {prog:?} measured {}", method.label()))
    };
    let batch_floor = find(Prog::Floor, Method::Batch)?;
    let single_floor = find(Prog::Floor, Method::Single)?;
    let lru_batch = find(Prog::LruCounter, Method::Batch)?;
    let both_ways = |name: &str| {
        cases
            .iter()
            .filter(|c| c.prog == Prog::Siphon && c.name == name)
            .count()
            == 2
    };
    let excess = cases
        .iter()
        .zip(&spreads)
        .filter(|(c, _)| c.prog == Prog::Siphon && c.method == Method::Single && both_ways(c.name))
        .filter_map(|(single, s)| {
            let batch = cases
                .iter()
                .zip(&spreads)
                .find(|(c, _)| c.name == single.name && c.method == Method::Batch)?;
            Some(s.median - single_floor + batch_floor - batch.1.median)
        })
        .fold(f64::INFINITY, f64::min);
    let excess = if excess.is_finite() { excess } else { 0.0 };
    let scale = Scale {
        batch_floor,
        single_floor,
        excess,
    };
    let rows = cases
        .iter()
        .zip(&spreads)
        .map(|(case, &s)| {
            let floor = match case.method {
                Method::Batch => batch_floor,
                Method::Single => single_floor,
            };
            let calibration = case.method == Method::Single && both_ways(case.name);
            let held = match (case.prog, case.method) {
                (Prog::Siphon, Method::Batch) => Some(s),
                (Prog::Siphon, Method::Single) if !calibration => Some(scale.single_to_batch(s)),
                _ => None,
            };
            let times_lru = held.map(|h| h.median / lru_batch);
            let (target, status) = match (case.target, held) {
                (_, None) if calibration => (None, "calibration".to_owned()),
                (Target::None, _) | (_, None) => (None, "baseline".to_owned()),
                (target, Some(h)) => verdict(target, h.median, times_lru.unwrap_or(0.0)),
            };
            Row {
                name: case.name,
                prog: prog_label(case.prog),
                method: case.method.label(),
                measured: s,
                net: (case.prog != Prog::Floor).then_some(s.median - floor),
                held,
                times_lru,
                target,
                status,
            }
        })
        .collect();
    Ok((rows, scale))
}

fn verdict(target: Target, ns: f64, times_lru: f64) -> (Option<String>, String) {
    match target {
        Target::ExistingFlow => {
            let ok_ns = ns <= TARGET_EXISTING_FLOW_NS;
            let ok_ratio = times_lru <= TARGET_EXISTING_FLOW_RATIO;
            let status = match (ok_ns, ok_ratio) {
                (true, true) => "met".to_owned(),
                (false, true) => "MISSED (ns)".to_owned(),
                (true, false) => "MISSED (x LRU)".to_owned(),
                (false, false) => "MISSED (ns, x LRU)".to_owned(),
            };
            (
                Some(format!(
                    "<={TARGET_EXISTING_FLOW_NS:.0}, <={TARGET_EXISTING_FLOW_RATIO}x LRU"
                )),
                status,
            )
        }
        Target::Capture | Target::NewFlow => {
            let limit = if target == Target::Capture {
                TARGET_CAPTURE_NS
            } else {
                TARGET_NEW_FLOW_NS
            };
            let status = if ns <= limit { "met" } else { "MISSED" };
            (Some(format!("<={limit:.0}")), status.to_owned())
        }
        Target::None => (None, "baseline".to_owned()),
    }
}

pub(crate) fn kernel_counters(kernel: &Kernel) -> anyhow::Result<Vec<(String, u64)>> {
    let values = kernel.counters.kernel_counters()?;
    Ok(KernelCounter::ALL
        .iter()
        .filter_map(|c| {
            let (kind, label) = c.describe();
            let v = values[*c as usize];
            (kind == CounterKind::Loss || v != 0).then(|| (format!("{kind:?} {label}"), v))
        })
        .collect())
}

/// Figures of any magnitude: records/s in the millions to ratios near 1.
fn fmt_figure(s: &Spread) -> String {
    let digits = if s.median.abs() >= 1000.0 {
        0
    } else if s.median.abs() >= 10.0 {
        1
    } else {
        3
    };
    format!(
        "{:.digits$} ({:.digits$}-{:.digits$})",
        s.median, s.min, s.max
    )
}

fn fmt_spread(s: &Spread) -> String {
    format!("{:.1} ({:.1}-{:.1})", s.median, s.min, s.max)
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

impl Report {
    /// The whole report as markdown: what the README's Benchmark section publishes.
    pub(crate) fn markdown(&self) -> anyhow::Result<String> {
        let mut out = String::new();
        writeln!(out, "{}\n\n{}\n", self.machine, self.settings)?;
        writeln!(
            out,
            "| scenario | method | measured: median (min-max) | net | batch~: median (min-max) \
             | x LRU | target | status |\n|---|---|---|---|---|---|---|---|"
        )?;
        for r in &self.rows {
            let name = if r.prog == "siphon" {
                format!("siphon: {}", r.name)
            } else {
                r.name.to_owned()
            };
            writeln!(
                out,
                "| {name} | {} | {} | {} | {} | {} | {} | {} |",
                r.method,
                fmt_spread(&r.measured),
                opt(r.net, 1),
                r.held.as_ref().map_or_else(|| "-".to_owned(), fmt_spread),
                opt(r.times_lru, 2),
                r.target.as_deref().unwrap_or("-"),
                r.status
            )?;
        }
        writeln!(
            out,
            "\nns per packet, BPF_PROG_TEST_RUN. batch floor {:.1}, single floor {:.1}, \
             single-shot excess {:.1} (batch~ = single - single floor + batch floor - excess).",
            self.batch_floor, self.single_floor, self.single_shot_excess
        )?;
        if !self.many_flows.is_empty() {
            writeln!(
                out,
                "\n**Many flows**: an ACK on one of N established flows, a different flow \
                 each call (single, batch scale).\n\n| flows | table entries | Siphon table \
                 | LRU counter table | Siphon: median (min-max) | LRU counter: median \
                 (min-max) | x LRU |\n|---|---|---|---|---|---|---|"
            )?;
            for m in &self.many_flows {
                writeln!(
                    out,
                    "| {} | {} | {:.1} MiB | {:.1} MiB | {} | {} | {:.2} |",
                    m.flows,
                    m.table_entries,
                    m.siphon_table_bytes as f64 / (1 << 20) as f64,
                    m.lru_table_bytes as f64 / (1 << 20) as f64,
                    fmt_spread(&m.siphon),
                    fmt_spread(&m.lru),
                    m.siphon.median / m.lru.median
                )?;
            }
        }
        if !self.live.is_empty() {
            writeln!(
                out,
                "\n**Live cross-check** (real TCP through a veth pair, kernel run-time \
                 statistics, ns net of the floor):\n\n| path (live) | runs | LRU counter \
                 | Siphon | Siphon test_run | live / test_run | status |\n\
                 |---|---|---|---|---|---|---|"
            )?;
            for l in &self.live {
                writeln!(
                    out,
                    "| {} | {} | {:.1} | {:.1} | {} | {} | {} |",
                    l.label,
                    l.runs,
                    l.lru_net,
                    l.siphon_net,
                    opt(l.test_run_net, 1),
                    opt(l.ratio, 2),
                    l.status
                )?;
            }
            writeln!(out, "\n{}", self.live_note)?;
        }
        let counters: Vec<String> = self
            .kernel_counters
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        writeln!(out, "\nkernel counters: {}", counters.join(", "))?;
        for (title, figures) in [
            (
                "**Userspace** (one core for the pipeline and `siphon detect`; median (min-max) of the runs):",
                &self.userspace,
            ),
            (
                "**End to end** (real TCP over a veth pair between namespaces, `siphon run` attached to the server's end; per-run figures, interleaved):",
                &self.e2e,
            ),
        ] {
            if figures.is_empty() {
                continue;
            }
            writeln!(
                out,
                "\n{title}\n\n| measurement | unit | median (min-max) | runs | notes | target | status |\n|---|---|---|---|---|---|---|"
            )?;
            for f in figures {
                writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    f.name,
                    f.unit,
                    fmt_figure(&f.value),
                    f.value.runs,
                    f.note,
                    f.target.as_deref().unwrap_or("-"),
                    f.status
                )?;
            }
        }
        if self.missed.is_empty() {
            writeln!(out, "\nall targets met")?;
        } else {
            writeln!(
                out,
                "\ntargets MISSED (a benchmark: reported, not a failure): {}",
                self.missed.join("; ")
            )?;
        }
        Ok(out)
    }

    pub(crate) fn write(&self, dir: &std::path::Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let md = dir.join("bench.md");
        std::fs::write(&md, self.markdown()?)
            .with_context(|| format!("writing {}", md.display()))?;
        let json = dir.join("bench.json");
        let text = serde_json::to_string_pretty(self).context("serialising the report")?;
        std::fs::write(&json, text).with_context(|| format!("writing {}", json.display()))?;
        println!("wrote {} and {}", md.display(), json.display());
        Ok(())
    }
}

/// The mean of the middle half: as deaf as the median to the few samples an interrupt or a
/// softirq run lands in, but it averages out the clock's steps, which the median keeps (with a
/// 10 ns step, a median flips between 60 and 70 where the mean of the middle half says 65).
pub(crate) fn interquartile_mean(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let quarter = values.len() / 4;
    let middle = &values[quarter..values.len() - quarter];
    middle.iter().sum::<f64>() / middle.len() as f64
}

pub(crate) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn interquartile_mean_drops_the_outer_quarters() {
        let mut steps = [60.0, 70.0, 60.0, 70.0, 60.0, 70.0, 9_000.0, 10.0];
        assert_eq!(interquartile_mean(&mut steps), 65.0);
        assert_eq!(interquartile_mean(&mut [42.0]), 42.0);
        assert!(interquartile_mean(&mut []).is_nan());
    }

    #[test]
    fn existing_flow_target_checks_ns_and_ratio() {
        assert_eq!(verdict(Target::ExistingFlow, 80.0, 1.3).1, "met");
        assert_eq!(verdict(Target::ExistingFlow, 95.0, 1.3).1, "MISSED (ns)");
        assert_eq!(verdict(Target::ExistingFlow, 80.0, 1.5).1, "MISSED (x LRU)");
        assert_eq!(verdict(Target::Capture, 199.0, 9.0).1, "met");
        assert_eq!(verdict(Target::NewFlow, 251.0, 0.0).1, "MISSED");
    }
}
