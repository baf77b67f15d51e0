//! The evaluation report: a table on the terminal, `report.md` and `report.json`, and the
//! calibration of the synthetic records against the lab's real ones and the Azure traces.

use std::path::Path;

use super::{
    curves::Curves,
    metrics::{Figure, Result},
    synth::{Trace, World},
    EvalArgs,
};

fn fig(f: &Figure) -> String {
    format!("{:.3} [{:.3}, {:.3}]", f.value, f.lo, f.hi)
}

fn secs(s: Option<f64>) -> String {
    s.map_or("-".into(), |s| format!("{s:.0} s"))
}

pub fn table(r: &Result) -> String {
    let mut t = String::new();
    t += &format!(
        "benign keys flagged at the raise level (0.7): {}; benign addresses: {}\n",
        fig(&r.benign_keys_flagged),
        fig(&r.benign_ips_flagged)
    );
    t += &format!(
        "at the paging threshold ({:.2}, chosen on the tuning seeds): keys {}, addresses {}\n",
        r.page_threshold,
        fig(&r.benign_keys_flagged_at_page),
        fig(&r.benign_ips_flagged_at_page)
    );
    t += &format!(
        "baselines at the same false-alarm rate: per-key ≥ {} requests in 10 min, per-address ≥ {}\n\n",
        r.key_rate_threshold, r.ip_rate_threshold
    );
    t += "| kind | label | n | flagged at 0.7 (95% CI) | at paging threshold | detect p50 | p90 | per-key rate baseline | per-address rate baseline |\n";
    t += "|---|---|---|---|---|---|---|---|---|\n";
    for row in &r.rows {
        t += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            row.kind,
            row.label,
            row.flagged.n,
            fig(&row.flagged),
            fig(&row.flagged_at_page),
            secs(row.detect_p50_s),
            secs(row.detect_p90_s),
            fig(&row.key_rate_baseline),
            fig(&row.ip_rate_baseline),
        );
    }
    for row in r.rows.iter().filter(|r| r.clustered_share_min.is_some()) {
        t += &format!(
            "\n{}: share of an instance's keys in one reported cluster: median {:.2}, lowest {:.2}",
            row.kind,
            row.clustered_share_p50.unwrap_or(0.0),
            row.clustered_share_min.unwrap_or(0.0)
        );
    }
    t += "\n";
    if !r.missed.is_empty() {
        t += &format!("\nattackers missed at 0.7: {}\n", r.missed.join(", "));
    }
    t
}

fn quantiles(mut v: Vec<f64>) -> String {
    if v.is_empty() {
        return "-".into();
    }
    v.sort_by(f64::total_cmp);
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    format!("{:.3} / {:.3} / {:.3}", q(0.1), q(0.5), q(0.9))
}

/// Side by side: the synthetic people against the lab's people (their exchanges at the server)
/// and against the conversation trace's generated tokens.
pub fn calibration(w: &World<'_>, root: &Path, lab: Option<&Path>, conv: &Trace) -> String {
    let person_keys: std::collections::HashSet<&str> = w
        .instances
        .iter()
        .filter(|i| i.kind == "person")
        .flat_map(|i| i.keys.iter().map(String::as_str))
        .collect();
    let mine: Vec<&super::synth::Rec> = w
        .recs
        .iter()
        .filter(|r| person_keys.contains(w.keys[r.key as usize].as_str()))
        .collect();
    let col =
        |f: &dyn Fn(&super::synth::Rec) -> f64| quantiles(mine.iter().map(|r| f(r)).collect());
    let mut t = String::from("| quantity (p10 / p50 / p90) | synthetic people | lab people | Azure conversation trace |\n|---|---|---|---|\n");
    let lab_dir = lab.map(Path::to_path_buf).or_else(|| {
        ["target/lab", "target/lab-ci"]
            .iter()
            .map(|d| root.join(d))
            .filter(|d| d.join("siphon-server-exchanges.jsonl").exists())
            .max_by_key(|d| {
                std::fs::metadata(d.join("siphon-server-exchanges.jsonl"))
                    .and_then(|m| m.modified())
                    .ok()
            })
    });
    let lab_recs: Vec<serde_json::Value> = lab_dir
        .as_ref()
        .map(|d| {
            let humans: std::collections::HashSet<String> =
                std::fs::read_to_string(d.join("ground_truth.json"))
                    .ok()
                    .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
                    .map(|g| {
                        g["actors"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter(|a| a["kind"] == "human")
                            .flat_map(|a| a["key_hashes"].as_array().cloned().unwrap_or_default())
                            .filter_map(|k| k.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
            crate::lab::read_jsonl(&d.join("siphon-server-exchanges.jsonl"))
                .into_iter()
                .filter(|r| {
                    r["http"]["api_key_hash"]
                        .as_str()
                        .is_some_and(|k| humans.contains(k))
                })
                .collect()
        })
        .unwrap_or_default();
    let lab_col = |f: &dyn Fn(&serde_json::Value) -> Option<f64>| {
        quantiles(lab_recs.iter().filter_map(f).collect())
    };
    let trace_gen = quantiles(conv.iter().map(|r| r.1 as f64).collect());
    let trace_ctx = quantiles(conv.iter().map(|r| r.0 as f64 * 4.0 + 300.0).collect());
    t += &format!(
        "| request bytes | {} | {} | {} (4 B/token + 300) |\n",
        col(&|r| r.req_bytes as f64),
        lab_col(&|r| r["request_bytes"].as_f64()),
        trace_ctx
    );
    t += &format!(
        "| response bytes | {} | {} | - |\n",
        col(&|r| r.resp_bytes as f64),
        lab_col(&|r| r["response_bytes"].as_f64())
    );
    t += &format!(
        "| output tokens (chunks if streamed, else bytes/4) | {} | {} | {} |\n",
        col(&|r| if r.stream {
            r.chunks as f64
        } else {
            r.resp_bytes as f64 / 4.0
        }),
        lab_col(&|r| if r["http"]["event_stream"] == true {
            r["streamed_chunks"].as_f64()
        } else {
            r["response_bytes"].as_f64().map(|b| b / 4.0)
        }),
        trace_gen
    );
    t += &format!(
        "| time to first byte (s) | {} | {} | - |\n",
        col(&|r| r.ttfb_s),
        lab_col(&|r| r["ttfb_seconds"].as_f64())
    );
    t += &format!(
        "| streaming duration (s) | {} | {} | - |\n",
        col(&|r| r.dur_s),
        lab_col(&|r| r["response_duration_seconds"].as_f64())
    );
    t += &format!(
        "| TCP handshake RTT (s) | {} | {} (lab: behind the ingress) | - |\n",
        col(&|r| r.tcp_rtt as f64),
        lab_col(&|r| r["tcp"]["synack_ack_seconds"].as_f64())
    );
    t += &format!(
        "\nLab records: {} exchanges of the lab's people from {}.\n",
        lab_recs.len(),
        lab_dir.map_or(
            "no lab run found (run `cargo xtask lab` first)".into(),
            |d| d.display().to_string()
        )
    );
    t
}

pub fn write(
    out: &Path,
    args: &EvalArgs,
    r: &Result,
    curves: &Curves,
    calibration: &str,
) -> anyhow::Result<()> {
    let md = format!(
        "# Siphon: evaluation at population scale\n\n\
         Reproduce: `cargo xtask eval{}` ({} benign clients per population, {} simulated hours, \
         attackers at {:.1}% of clients; tuning seeds {:?}, report seeds {:?}; held-out attacker \
         variants only in the report seeds). {} records scored by `siphon detect` at {:.0} records/s.\n\n\
         Flagged: the highest score an instance's keys, own addresses or clusters reached, at \
         the raise level (0.7, the shipped configuration) and at the paging threshold. Benign \
         shares are per key and per address. Intervals: 95% bootstrap over instances ({} resamples).\n\n{}\n\
         ![recall against benign keys flagged](roc.png)\n\n## Calibration\n\n{}\n",
        if args.quick { " --quick" } else { "" },
        args.clients,
        args.hours,
        args.attack_rate * 100.0,
        args.tune_seeds,
        args.report_seeds,
        r.records,
        r.records_per_second,
        1000,
        table(r),
        calibration
    );
    std::fs::write(out.join("report.md"), md)?;
    let json = serde_json::json!({
        "clients": args.clients,
        "hours": args.hours,
        "attack_rate": args.attack_rate,
        "tune_seeds": args.tune_seeds,
        "report_seeds": args.report_seeds,
        "result": r,
        "curves": curves,
    });
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    Ok(())
}
