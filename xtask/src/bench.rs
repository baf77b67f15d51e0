//! `cargo xtask bench`: the kernel program's cost per packet under BPF_PROG_TEST_RUN, next to
//! a floor program and a minimal LRU flow counter measured in the same run; then the userspace
//! figures and the end-to-end runs (iperf3, wrk) with and without the agent. Figures, not a
//! test: a missed target is flagged in the table and the command still succeeds. The method is
//! described in bench/runner/src/main.rs.

use std::{path::Path, process::Command};

use anyhow::Context as _;
use clap::Args;
use plotters::prelude::*;

use crate::cmd::{build_release, require_root, run, workspace_root};

/// Unset options take siphon-bench's defaults, so they are defined in one place.
#[derive(Args)]
pub struct BenchArgs {
    /// Runs per scenario, at least 5; the table gives their median, min and max [default: 7].
    #[arg(long)]
    runs: Option<u32>,
    /// In-kernel repetitions per batch run [default: 1000000].
    #[arg(long)]
    repeat: Option<u32>,
    /// Timed repeat=1 calls per single run (scenarios that change the flow's state) [default:
    /// 10000].
    #[arg(long)]
    samples: Option<u32>,
    /// Only the Siphon scenarios whose name contains this text (baselines always run).
    #[arg(long)]
    only: Option<String>,
    /// Skip the live cross-check (real TCP through a veth pair in namespaces of the run).
    #[arg(long)]
    no_live: bool,
    /// Skip the many-flows measurement (flow tables of up to 1.25 M entries, ~0.5 GB).
    #[arg(long)]
    no_many: bool,
    /// Skip the userspace figures (pipeline and `siphon detect` records/s, /metrics render,
    /// memory, ring-buffer loss).
    #[arg(long)]
    no_userspace: bool,
    /// Skip the end-to-end runs (iperf3 and wrk through a veth pair, with and without `siphon
    /// run`).
    #[arg(long)]
    no_e2e: bool,
}

pub fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    require_root("the benchmark loads eBPF programs (CAP_BPF, CAP_NET_ADMIN)")?;
    // Release, as `run` builds: the figures are the kernel's and do not depend on it, but the
    // untimed work between calls (restoring state, draining) is quicker.
    let mut bench = Command::new(build_release("siphon-bench", "siphon-bench")?);
    if !args.no_e2e {
        // The end-to-end runs start the real agent and the lab's server.
        let siphon = build_release("agent", "siphon")?;
        bench.arg("--siphon").arg(siphon).arg("--lab-server").arg(
            workspace_root()
                .join("xtask")
                .join("lab")
                .join("inference_server.py"),
        );
    }
    for (flag, value) in [
        ("--runs", args.runs),
        ("--repeat", args.repeat),
        ("--samples", args.samples),
    ] {
        if let Some(v) = value {
            bench.arg(flag).arg(v.to_string());
        }
    }
    if args.no_live {
        bench.arg("--no-live");
    }
    if args.no_many {
        bench.arg("--no-many");
    }
    if args.no_userspace {
        bench.arg("--no-userspace");
    }
    if args.no_e2e {
        bench.arg("--no-e2e");
    }
    let out = target_dir().join("bench");
    bench.arg("--out").arg(&out);
    if let Some(only) = &args.only {
        bench.arg("--only").arg(only);
    }
    run(&mut bench)?;
    if !args.no_many {
        let png = out.join("flows.png");
        plot_flows(&out.join("bench.json"), &png)?;
        eprintln!("xtask: wrote {}", png.display());
    }
    Ok(())
}

fn target_dir() -> std::path::PathBuf {
    let root = workspace_root();
    std::env::var_os("CARGO_TARGET_DIR")
        .map(|d| root.join(d))
        .unwrap_or_else(|| root.join("target"))
}

/// Cost per packet against the number of flows, Siphon and the LRU counter, from bench.json's
/// `many_flows` (tables sized for the flows; the default-table row is a point of its own).
fn plot_flows(json: &Path, png: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(json).with_context(|| format!("reading {}", json.display()))?;
    let report: serde_json::Value = serde_json::from_str(&text).context("parsing bench.json")?;
    let rows = report["many_flows"]
        .as_array()
        .context("bench.json has no many_flows")?;
    let point = |row: &serde_json::Value, prog: &str| -> Option<(f64, f64, f64, f64)> {
        let s = &row[prog];
        Some((
            row["flows"].as_f64()?,
            s["median"].as_f64()?,
            s["min"].as_f64()?,
            s["max"].as_f64()?,
        ))
    };
    let sized = |row: &&serde_json::Value| row["table_entries"].as_f64() >= row["flows"].as_f64();
    let series = |prog: &str, want_sized: bool| -> Vec<(f64, f64, f64, f64)> {
        rows.iter()
            .filter(|r| sized(r) == want_sized)
            .filter_map(|r| point(r, prog))
            .collect()
    };
    let all: Vec<_> = ["siphon", "lru"]
        .iter()
        .flat_map(|p| series(p, true).into_iter().chain(series(p, false)))
        .collect();
    let y_max = all.iter().map(|p| p.3).fold(100.0f64, f64::max) * 1.1;
    crate::eval::plot::register_font()?;
    let root = BitMapBackend::new(png, (900, 560)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("plotting {}: {e}", png.display());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "ACK on an established flow, packets spread over N flows",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d((500f64..2_000_000f64).log_scale(), 0f64..y_max)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("flows (log)")
        .y_desc("ns per packet (batch scale)")
        .draw()
        .map_err(|e| err(&e))?;
    for (name, prog, sized_table, color) in [
        ("Siphon, table sized for the flows", "siphon", true, RED),
        ("LRU counter, table sized for the flows", "lru", true, BLUE),
        (
            "Siphon, default table (131072): evicting",
            "siphon",
            false,
            MAGENTA,
        ),
        ("LRU counter, table of 131072: evicting", "lru", false, CYAN),
    ] {
        let pts = series(prog, sized_table);
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|p| (p.0, p.1)),
                color.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(
                pts.iter()
                    .map(|p| Circle::new((p.0, p.1), 4, color.filled())),
            )
            .map_err(|e| err(&e))?;
        // The spread of the runs: min to max.
        chart
            .draw_series(
                pts.iter()
                    .map(|p| PathElement::new(vec![(p.0, p.2), (p.0, p.3)], color.stroke_width(1))),
            )
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
