//! The report's curves: attackers flagged against benign keys flagged (Siphon over score
//! thresholds, the baselines over rate thresholds), and one instance per kind's score over the
//! simulated day.

use std::collections::HashSet;

use serde::Serialize;

use super::{
    metrics::{benign_shares, instance_scores},
    Run,
};

/// Points of recall (all attackers) against benign keys flagged, for Siphon over score
/// thresholds and for the baselines over rate thresholds.
#[derive(Debug, Serialize)]
pub struct Curves {
    pub siphon: Vec<(f64, f64)>,
    pub key_rate: Vec<(f64, f64)>,
    pub ip_rate: Vec<(f64, f64)>,
}

pub fn curves(runs: &[Run]) -> Curves {
    let mut siphon = Vec::new();
    let mut attack_scores = Vec::new();
    for run in runs {
        let (inst, _, _) = instance_scores(run);
        for (i, &s) in run.instances.iter().zip(inst) {
            if i.label != "benign" {
                attack_scores.push(s);
            }
        }
    }
    for step in 0..=40 {
        let t = step as f64 / 40.0;
        let (k, _) = benign_shares(runs, t);
        let r = attack_scores.iter().filter(|s| **s >= t).count() as f64
            / attack_scores.len().max(1) as f64;
        siphon.push((k, r));
    }
    type Peaks<'a> = &'a dyn Fn(&Run, &super::synth::Instance) -> Vec<u32>;
    let rate_curve = |peak: Peaks<'_>| {
        let mut benign = Vec::new();
        let mut attack = Vec::new();
        for run in runs {
            for i in &run.instances {
                let v = peak(run, i);
                if i.label == "benign" {
                    benign.extend(v);
                } else {
                    attack.push(v.into_iter().max().unwrap_or(0));
                }
            }
        }
        let mut pts = Vec::new();
        for thr in [
            1u32, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000, 5000,
        ] {
            let fp =
                benign.iter().filter(|p| **p >= thr).count() as f64 / benign.len().max(1) as f64;
            let r =
                attack.iter().filter(|p| **p >= thr).count() as f64 / attack.len().max(1) as f64;
            pts.push((fp, r));
        }
        pts
    };
    Curves {
        siphon,
        key_rate: rate_curve(&|run, i| {
            i.keys
                .iter()
                .map(|k| *run.key_peak.get(k).unwrap_or(&0))
                .collect()
        }),
        ip_rate: rate_curve(&|run, i| {
            i.ips
                .iter()
                .map(|k| *run.ip_peak.get(k).unwrap_or(&0))
                .collect()
        }),
    }
}

/// Score over time (hours since the start) of one instance per kind: the highest score over its
/// keys, its own addresses and the clusters holding its keys, from `siphon detect`'s snapshots.
pub fn timelines(run: &Run, snapshots: &std::path::Path) -> Vec<(String, Vec<(f64, f64)>)> {
    let lines = crate::lab::read_jsonl(snapshots);
    let clusters: Vec<(String, HashSet<String>)> = run.summary["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let m = c["api_keys"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect();
            (c["id"].as_str().unwrap_or("").to_owned(), m)
        })
        .collect();
    let mut picked: Vec<&super::synth::Instance> = Vec::new();
    for i in &run.instances {
        if !picked.iter().any(|p| p.kind == i.kind)
            && (i.label != "benign"
                || ["person", "content_generator", "app_backend", "ci_eval"].contains(&i.kind))
        {
            picked.push(i);
        }
    }
    picked
        .into_iter()
        .map(|i| {
            let mut names: HashSet<(String, String)> = HashSet::new();
            names.extend(i.keys.iter().map(|k| ("api_key".to_owned(), k.clone())));
            names.extend(i.ips.iter().map(|a| ("client_ip".to_owned(), a.clone())));
            for (id, members) in &clusters {
                if i.keys.iter().any(|k| members.contains(k)) {
                    names.insert(("cluster".to_owned(), id.clone()));
                }
            }
            let pts = lines
                .iter()
                .map(|l| {
                    let t = (l["t_ns"]
                        .as_u64()
                        .unwrap_or(0)
                        .saturating_sub(super::synth::T0)) as f64
                        / 3.6e12;
                    let best = l["scores"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|e| {
                            names.contains(&(
                                e[0].as_str().unwrap_or("").to_owned(),
                                e[1].as_str().unwrap_or("").to_owned(),
                            ))
                        })
                        .map(|e| {
                            e[2].as_f64()
                                .unwrap_or(0.0)
                                .max(e[3].as_f64().unwrap_or(0.0))
                        })
                        .fold(0.0, f64::max);
                    (t, best)
                })
                .collect();
            (format!("{} ({})", i.kind, i.label), pts)
        })
        .collect()
}
