//! Figures from ground truth and the detector's output: which instances were flagged, how
//! fast, how many benign keys and addresses were flagged, with bootstrap intervals; the same
//! for two rate-threshold baselines at the same false-alarm rate.

use std::collections::{BTreeMap, HashMap, HashSet};

use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::Serialize;

use super::{synth::World, Run};

const WINDOW_NS: u64 = 600 * super::synth::NS;
const BOOTSTRAP: usize = 1000;

/// Per key and per address: the most requests started in any 10-minute window.
pub fn peaks(w: &World<'_>) -> (HashMap<String, u32>, HashMap<String, u32>) {
    let mut by_key: HashMap<u32, Vec<u64>> = HashMap::new();
    let mut by_ip: HashMap<u32, Vec<u64>> = HashMap::new();
    for r in &w.recs {
        by_key.entry(r.key).or_default().push(r.start_ns);
        by_ip.entry(r.ip).or_default().push(r.start_ns);
    }
    let peak = |mut v: Vec<u64>| {
        v.sort_unstable();
        let (mut best, mut lo) = (0usize, 0usize);
        for hi in 0..v.len() {
            while v[hi] - v[lo] > WINDOW_NS {
                lo += 1;
            }
            best = best.max(hi - lo + 1);
        }
        best as u32
    };
    (
        by_key
            .into_iter()
            .map(|(k, v)| (w.keys[k as usize].clone(), peak(v)))
            .collect(),
        by_ip
            .into_iter()
            .map(|(k, v)| (w.ips[k as usize].clone(), peak(v)))
            .collect(),
    )
}

/// Highest score each entity reached, and each cluster's members.
struct Scores {
    entity: HashMap<(String, String), f64>,
    clusters: Vec<(Vec<String>, f64)>,
}

fn scores(run: &Run) -> Scores {
    let mut entity = HashMap::new();
    for e in run.summary["entities"].as_array().into_iter().flatten() {
        let m = e["max_harvest"]
            .as_f64()
            .unwrap_or(0.0)
            .max(e["max_relay"].as_f64().unwrap_or(0.0));
        entity.insert(
            (
                e["type"].as_str().unwrap_or("").to_owned(),
                e["value"].as_str().unwrap_or("").to_owned(),
            ),
            m,
        );
    }
    let clusters = run.summary["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let keys = c["api_keys"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect();
            let m = c["max_harvest"]
                .as_f64()
                .unwrap_or(0.0)
                .max(c["max_relay"].as_f64().unwrap_or(0.0));
            (keys, m)
        })
        .collect();
    Scores { entity, clusters }
}

/// Per instance, per key and per address: the highest score reached (computed once per run).
#[derive(Default)]
pub struct Scored {
    pub instances: Vec<f64>,
    pub keys: HashMap<String, f64>,
    pub ips: HashMap<String, f64>,
}

pub fn score_run(run: &mut Run) {
    let (instances, keys, ips) = compute_instance_scores(run);
    run.scored = Scored {
        instances,
        keys,
        ips,
    };
}

pub(super) fn instance_scores(run: &Run) -> (&[f64], &HashMap<String, f64>, &HashMap<String, f64>) {
    (&run.scored.instances, &run.scored.keys, &run.scored.ips)
}

/// An instance's highest score: over its keys, its own addresses (shared addresses belong to
/// no single instance) and the clusters where it holds most keys.
fn compute_instance_scores(run: &Run) -> (Vec<f64>, HashMap<String, f64>, HashMap<String, f64>) {
    let s = scores(run);
    let mut ip_users: HashMap<&str, usize> = HashMap::new();
    for i in &run.instances {
        for ip in &i.ips {
            *ip_users.entry(ip).or_default() += 1;
        }
    }
    let mut key_score: HashMap<String, f64> = HashMap::new();
    for i in &run.instances {
        for k in &i.keys {
            key_score.insert(
                k.clone(),
                *s.entity.get(&("api_key".into(), k.clone())).unwrap_or(&0.0),
            );
        }
    }
    for (members, m) in &s.clusters {
        for k in members {
            if let Some(v) = key_score.get_mut(k) {
                *v = v.max(*m);
            }
        }
    }
    let ip_score: HashMap<String, f64> = ip_users
        .keys()
        .map(|ip| {
            (
                ip.to_string(),
                *s.entity
                    .get(&("client_ip".into(), ip.to_string()))
                    .unwrap_or(&0.0),
            )
        })
        .collect();
    let per_instance = run
        .instances
        .iter()
        .map(|i| {
            let k = i.keys.iter().map(|k| key_score[k]).fold(0.0, f64::max);
            let ip = i
                .ips
                .iter()
                .filter(|ip| ip_users.get(ip.as_str()) == Some(&1))
                .map(|ip| ip_score[ip])
                .fold(0.0, f64::max);
            k.max(ip)
        })
        .collect();
    (per_instance, key_score, ip_score)
}

#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    pub value: f64,
    pub lo: f64,
    pub hi: f64,
    pub n: usize,
}

fn bootstrap(flags: &[bool], seed: u64) -> Figure {
    let n = flags.len();
    let value = if n == 0 {
        0.0
    } else {
        flags.iter().filter(|f| **f).count() as f64 / n as f64
    };
    if n == 0 {
        return Figure {
            value,
            lo: 0.0,
            hi: 0.0,
            n,
        };
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut v: Vec<f64> = (0..BOOTSTRAP)
        .map(|_| (0..n).filter(|_| flags[rng.gen_range(0..n)]).count() as f64 / n as f64)
        .collect();
    v.sort_by(f64::total_cmp);
    Figure {
        value,
        lo: v[BOOTSTRAP * 25 / 1000],
        hi: v[BOOTSTRAP * 975 / 1000],
        n,
    }
}

/// The lowest threshold at which at most 0.1% of benign keys and of benign addresses are
/// flagged on the tuning seeds: the paging operating point.
pub fn paging_threshold(tune: &[Run]) -> f64 {
    let mut best = 1.0;
    for step in (10..=100).rev() {
        let t = step as f64 / 100.0;
        let (k, a) = benign_shares(tune, t);
        if k <= 0.001 && a <= 0.001 {
            best = t;
        } else {
            break;
        }
    }
    best
}

fn benign_flags(runs: &[Run], t: f64) -> (Vec<bool>, Vec<bool>) {
    let (mut keys, mut ips) = (Vec::new(), Vec::new());
    for run in runs {
        let (_, ks, is) = instance_scores(run);
        let mut attack_ips = HashSet::new();
        for i in run.instances.iter().filter(|i| i.label != "benign") {
            attack_ips.extend(i.ips.iter().cloned());
        }
        for i in run.instances.iter().filter(|i| i.label == "benign") {
            keys.extend(i.keys.iter().map(|k| ks[k] >= t));
        }
        let mut seen = HashSet::new();
        for i in run.instances.iter().filter(|i| i.label == "benign") {
            for ip in &i.ips {
                if !attack_ips.contains(ip) && seen.insert(ip.clone()) {
                    ips.push(is[ip] >= t);
                }
            }
        }
    }
    (keys, ips)
}

pub(super) fn benign_shares(runs: &[Run], t: f64) -> (f64, f64) {
    let (k, i) = benign_flags(runs, t);
    let share = |v: &[bool]| v.iter().filter(|f| **f).count() as f64 / v.len().max(1) as f64;
    (share(&k), share(&i))
}

/// One kind's flags per instance: at the raise level, at the paging threshold, seconds to
/// detect, and the two baselines.
#[derive(Default)]
struct Group {
    clustered: Vec<f64>,
    at_raise: Vec<bool>,
    at_page: Vec<bool>,
    ttd: Vec<f64>,
    key_rate: Vec<bool>,
    ip_rate: Vec<bool>,
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub kind: String,
    pub label: String,
    /// Attackers: recall at the raise level (0.7) and at the paging threshold; benign: the
    /// share of instances flagged at each.
    pub flagged: Figure,
    pub flagged_at_page: Figure,
    pub detect_p50_s: Option<f64>,
    pub detect_p90_s: Option<f64>,
    pub key_rate_baseline: Figure,
    pub ip_rate_baseline: Figure,
    /// Attackers with four keys or more: the lowest and median share of an instance's keys
    /// found together in one reported cluster.
    pub clustered_share_min: Option<f64>,
    pub clustered_share_p50: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Result {
    pub page_threshold: f64,
    pub benign_keys_flagged: Figure,
    pub benign_ips_flagged: Figure,
    pub benign_keys_flagged_at_page: Figure,
    pub benign_ips_flagged_at_page: Figure,
    pub key_rate_threshold: u32,
    pub ip_rate_threshold: u32,
    pub rows: Vec<Row>,
    /// Attacker instances not flagged at the raise level (seed/id).
    pub missed: Vec<String>,
    pub records: u64,
    pub records_per_second: f64,
}

/// The smallest peak (requests in 10 minutes) that flags no larger a share of benign entities
/// than `share`.
fn rate_threshold(benign: &[u32], share: f64) -> u32 {
    let mut v = benign.to_vec();
    v.sort_unstable();
    let allowed = (share * v.len() as f64).floor() as usize;
    if allowed >= v.len() {
        return 0;
    }
    v.get(v.len().saturating_sub(allowed + 1))
        .map_or(1, |x| x + 1)
}

pub fn evaluate(runs: &[Run], page: f64) -> Result {
    const RAISE: f64 = 0.7;
    let (bk, bi) = benign_flags(runs, RAISE);
    let (bkp, bip) = benign_flags(runs, page);
    let share = |v: &[bool]| v.iter().filter(|f| **f).count() as f64 / v.len().max(1) as f64;
    // Baselines at Siphon's false-alarm rate (at the raise level).
    let mut benign_key_peaks = Vec::new();
    let mut benign_ip_peaks = Vec::new();
    for run in runs {
        for i in run.instances.iter().filter(|i| i.label == "benign") {
            benign_key_peaks.extend(i.keys.iter().map(|k| *run.key_peak.get(k).unwrap_or(&0)));
            benign_ip_peaks.extend(i.ips.iter().map(|k| *run.ip_peak.get(k).unwrap_or(&0)));
        }
    }
    let key_thr = rate_threshold(&benign_key_peaks, share(&bk));
    let ip_thr = rate_threshold(&benign_ip_peaks, share(&bi));
    let mut groups: BTreeMap<(String, String), Group> = BTreeMap::new();
    let mut missed = Vec::new();
    for run in runs {
        let (inst, _, _) = instance_scores(run);
        let first_raise = first_raises(run);
        for (i, &score) in run.instances.iter().zip(inst) {
            if i.label != "benign" && score < RAISE {
                missed.push(format!("{}/{} (highest score {score:.2})", run.seed, i.id));
            }
            let g = groups
                .entry((i.kind.to_owned(), i.label.to_owned()))
                .or_default();
            g.at_raise.push(score >= RAISE);
            if i.label != "benign" && i.keys.len() >= 4 {
                g.clustered.push(clustered_share(run, &i.keys));
            }
            g.at_page.push(score >= page);
            if i.label != "benign" {
                let t = i
                    .keys
                    .iter()
                    .chain(&i.ips)
                    .filter_map(|e| first_raise.get(e))
                    .copied()
                    .min();
                if let Some(t) = t {
                    g.ttd.push(t.saturating_sub(i.start_ns) as f64 / 1e9);
                }
            }
            g.key_rate.push(
                i.keys
                    .iter()
                    .any(|k| *run.key_peak.get(k).unwrap_or(&0) >= key_thr),
            );
            g.ip_rate.push(
                i.ips
                    .iter()
                    .any(|k| *run.ip_peak.get(k).unwrap_or(&0) >= ip_thr),
            );
        }
    }
    let rows = groups
        .into_iter()
        .enumerate()
        .map(|(n, ((kind, label), g))| {
            let Group {
                mut clustered,
                at_raise,
                at_page,
                mut ttd,
                key_rate: kb,
                ip_rate: ib,
            } = g;
            clustered.sort_by(f64::total_cmp);
            ttd.sort_by(f64::total_cmp);
            let q = |p: f64| {
                (!ttd.is_empty()).then(|| ttd[((ttd.len() - 1) as f64 * p).round() as usize])
            };
            Row {
                flagged: bootstrap(&at_raise, n as u64),
                flagged_at_page: bootstrap(&at_page, n as u64 + 1000),
                detect_p50_s: q(0.5),
                detect_p90_s: q(0.9),
                clustered_share_min: clustered.first().copied(),
                clustered_share_p50: (!clustered.is_empty())
                    .then(|| clustered[(clustered.len() - 1) / 2]),
                key_rate_baseline: bootstrap(&kb, n as u64 + 2000),
                ip_rate_baseline: bootstrap(&ib, n as u64 + 3000),
                kind,
                label,
            }
        })
        .collect();
    let records: u64 = runs.iter().map(|r| r.records).sum();
    let secs: f64 = runs.iter().map(|r| r.detect_seconds).sum();
    Result {
        page_threshold: page,
        benign_keys_flagged: bootstrap(&bk, 7),
        benign_ips_flagged: bootstrap(&bi, 8),
        benign_keys_flagged_at_page: bootstrap(&bkp, 9),
        benign_ips_flagged_at_page: bootstrap(&bip, 10),
        key_rate_threshold: key_thr,
        ip_rate_threshold: ip_thr,
        rows,
        missed,
        records,
        records_per_second: records as f64 / secs.max(1e-9),
    }
}

/// The largest share of `keys` inside one reported cluster: a cluster's detection events (its
/// members when raised or cleared) and the run's final clusters.
fn clustered_share(run: &Run, keys: &[String]) -> f64 {
    let from_events = run
        .events
        .iter()
        .filter(|e| e["entity"]["type"] == "cluster")
        .map(|e| &e["linked"]["api_keys"]);
    let from_final = run.summary["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| &c["api_keys"]);
    from_events
        .chain(from_final)
        .map(|members| {
            let members: HashSet<&str> = members
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|k| k.as_str())
                .collect();
            keys.iter().filter(|k| members.contains(k.as_str())).count() as f64
                / keys.len().max(1) as f64
        })
        .fold(0.0, f64::max)
}

/// Key hashes and addresses (and cluster members) → the first time one was raised.
fn first_raises(run: &Run) -> HashMap<String, u64> {
    let mut first: HashMap<String, u64> = HashMap::new();
    for e in &run.events {
        if e["state"] != "raised" {
            continue;
        }
        let t = e["detected_at_ns"].as_u64().unwrap_or(u64::MAX);
        let mut names = vec![e["entity"]["value"].as_str().unwrap_or("").to_owned()];
        if e["entity"]["type"] == "cluster" {
            names.extend(
                e["linked"]["api_keys"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|k| k.as_str().map(str::to_owned)),
            );
        }
        for n in names {
            let v = first.entry(n).or_insert(t);
            *v = (*v).min(t);
        }
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A population scored by a stand-in detector that flags every entity, or none.
    fn run_with(flag_all: bool) -> Run {
        let trace: super::super::synth::Trace =
            (0..50).map(|i| (300 + i * 20, 50 + i * 10)).collect();
        let mut w = super::super::population(3, 300, 3.0, 0.01, true, &trace, &trace);
        let (key_peak, ip_peak) = peaks(&w);
        let score = if flag_all { 1.0 } else { 0.0 };
        let mut entities = Vec::new();
        for i in &w.instances {
            for k in &i.keys {
                entities.push(serde_json::json!({"type": "api_key", "value": k, "max_harvest": score, "max_relay": 0.0}));
            }
            for ip in &i.ips {
                entities.push(serde_json::json!({"type": "client_ip", "value": ip, "max_harvest": 0.0, "max_relay": score}));
            }
        }
        let mut run = Run {
            seed: 3,
            instances: std::mem::take(&mut w.instances),
            records: w.recs.len() as u64,
            summary: serde_json::json!({"entities": entities, "clusters": []}),
            events: Vec::new(),
            key_peak,
            ip_peak,
            detect_seconds: 1.0,
            scored: Scored::default(),
        };
        score_run(&mut run);
        run
    }

    #[test]
    fn a_detector_that_flags_everything_gets_full_recall_and_full_false_alarms() {
        let runs = vec![run_with(true)];
        let r = evaluate(&runs, 0.9);
        assert_eq!(r.benign_keys_flagged.value, 1.0);
        assert_eq!(r.benign_ips_flagged.value, 1.0);
        assert!(
            r.rows.iter().all(|row| row.flagged.value == 1.0),
            "{:?}",
            r.rows
        );
        assert!(r.rows.iter().any(|row| row.label == "harvester"));
        // The baselines at the same false-alarm rate flag everyone too.
        assert!(r.rows.iter().all(|row| row.key_rate_baseline.value == 1.0));
        assert_eq!(paging_threshold(&runs), 1.0);
    }

    #[test]
    fn a_detector_that_flags_nothing_gets_no_recall_and_no_false_alarms() {
        let runs = vec![run_with(false)];
        let r = evaluate(&runs, 0.5);
        assert_eq!(r.benign_keys_flagged.value, 0.0);
        assert_eq!(r.benign_ips_flagged.value, 0.0);
        assert!(r.rows.iter().all(|row| row.flagged.value == 0.0));
        assert!(r.rows.iter().all(|row| row.detect_p50_s.is_none()));
        // At zero false alarms the baselines flag only what is above every benign peak.
        assert!(r.key_rate_threshold > 1);
        assert_eq!(paging_threshold(&runs), 0.1);
    }

    #[test]
    fn rate_thresholds_keep_the_share() {
        let v: Vec<u32> = (1..=1000).collect();
        // At most 1% of 1000 flagged: the 10 highest (991..1000) may be; threshold 991.
        assert_eq!(rate_threshold(&v, 0.01), 991);
        assert_eq!(rate_threshold(&v, 0.0), 1001);
    }

    #[test]
    fn bootstrap_brackets_the_value() {
        let flags: Vec<bool> = (0..200).map(|i| i % 4 == 0).collect();
        let f = bootstrap(&flags, 1);
        assert_eq!(f.value, 0.25);
        assert!(
            f.lo < 0.25 && f.hi > 0.25 && f.lo > 0.15 && f.hi < 0.35,
            "{f:?}"
        );
    }
}
