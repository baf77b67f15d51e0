//! `cargo xtask lab --check`: the lab's invariants, from ground truth Siphon never saw: the
//! server's request log, the actors' own logs, and their specification.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    path::Path,
};

use serde_json::Value;

use super::{view::read_jsonl, RunReport, RATE_LIMIT_RPM};

/// The benign population's breadth a default lab run must reach (keys, client addresses), of
/// the 205 keys on its roster. People who arrive while every seat of their actor is taken do
/// not show up, and seats free up more slowly when answers are slow: on a 2-core machine at
/// about half the speed of the one the lab was built on, 181-199 keys reached the server in
/// four 150 s runs, against 205 before. The check asks for 170: a population still broad
/// enough to judge false alarms on, and a check that fails when the population breaks, not
/// when the machine is slow.
const POPULATION_KEYS: usize = 170;
const POPULATION_IPS: usize = 64;

/// Sum of a Prometheus metric's samples whose labels include all of `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            series
                .strip_prefix(name)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('{'))
        })
        .filter(|(series, _)| {
            labels
                .iter()
                .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum()
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// Every check; returns what failed, in words.
pub fn run(out: &Path, report: &RunReport) -> anyhow::Result<Vec<String>> {
    let mut fail = Vec::new();
    let server = read_jsonl(&out.join("server-requests.jsonl"));
    let keys_file = std::fs::read_to_string(out.join("server-keys.txt"))?;
    let by_actor = server_entries_by_actor(&server, &keys_file, report);
    actors_completed(out, report, &mut fail);
    counts_match_the_server(report, &server, &mut fail);
    hellos_keys_and_no_raw_key(out, report, &mut fail);
    for a in report.actors.iter().filter(|a| a.label != "flood") {
        actor_is_what_it_claims(out, a, by_actor.get(a.id).map_or(&[][..], |v| v), &mut fail);
    }
    for a in report.actors.iter().filter(|a| a.label == "flood") {
        flood_seen_and_bounded(out, a, report, &mut fail);
    }
    population_breadth(report, &by_actor, &mut fail);
    humans_slower_than_h1(&by_actor, &mut fail);
    rules_query_exported_metrics(report, &mut fail)?;
    Ok(fail)
}

/// The server's log entries by the actor that sent them. The server logs key_id = the key's
/// index in its keys file; LiteLLM's upstream keys belong to every actor behind it.
fn server_entries_by_actor<'a>(
    server: &'a [Value],
    keys_file: &str,
    report: &'a RunReport,
) -> BTreeMap<&'a str, Vec<&'a Value>> {
    let server_keys: Vec<&str> = keys_file.lines().collect();
    let mut key_actor: HashMap<&str, Vec<&str>> = HashMap::new();
    for a in &report.actors {
        for k in &a.keys {
            key_actor.entry(k.as_str()).or_default().push(a.id);
        }
        if a.via == "litellm" {
            for k in &report.keys.relay_upstream {
                key_actor.entry(k.as_str()).or_default().push(a.id);
            }
        }
    }
    let mut by_actor: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for e in server {
        let owners = e["key_id"]
            .as_u64()
            .and_then(|idx| server_keys.get(idx as usize))
            .and_then(|k| key_actor.get(k));
        for a in owners.into_iter().flatten() {
            by_actor.entry(a).or_default().push(e);
        }
    }
    by_actor
}

/// Check 1: every actor completed requests (its own log).
fn actors_completed(out: &Path, report: &RunReport, fail: &mut Vec<String>) {
    for a in &report.actors {
        // A flood's requests carry keys the server never issued: any answer counts.
        let done = |l: &&Value| match a.label {
            "flood" => l["status"].is_u64(),
            _ => l["status"] == 200,
        };
        let ok = read_jsonl(&a.log_path(out)).iter().filter(done).count();
        if ok == 0 {
            fail.push(format!("actor {} completed no request", a.id));
        }
    }
}

/// Check 2: Siphon's per-service request count and response bytes at the server equal the
/// server's log, exactly.
fn counts_match_the_server(report: &RunReport, server: &[Value], fail: &mut Vec<String>) {
    let siphon_requests = metric_sum(
        &report.server_metrics,
        "siphon_requests_total",
        &[("service", "llm")],
    ) as usize;
    if siphon_requests != server.len() {
        fail.push(format!(
            "Siphon counted {siphon_requests} requests at the server, the server logged {}",
            server.len()
        ));
    }
    let logged_bytes: u64 = server
        .iter()
        .map(|e| e["response_bytes"].as_u64().unwrap_or(0))
        .sum();
    let siphon_bytes = metric_sum(
        &report.server_metrics,
        "siphon_response_size_bytes_sum",
        &[("service", "llm")],
    ) as u64;
    if siphon_bytes != logged_bytes {
        fail.push(format!("Siphon summed {siphon_bytes} response bytes at the server, the server logged {logged_bytes}"));
    }
}

/// Check 3: ClientHellos at the ingress, keyed requests at the server, and no raw key in
/// Siphon's output.
fn hellos_keys_and_no_raw_key(out: &Path, report: &RunReport, fail: &mut Vec<String>) {
    let hellos = metric_sum(
        &report.ingress_metrics,
        "siphon_tls_client_hellos_total",
        &[("result", "fingerprinted")],
    );
    if hellos < 1.0 {
        fail.push("Siphon saw no fingerprinted ClientHello at the ingress".into());
    }
    let exchanges = read_jsonl(&out.join("siphon-server-exchanges.jsonl"));
    let keyed = exchanges
        .iter()
        .filter(|e| e["http"]["api_key_hash"].is_string())
        .count();
    if keyed == 0 {
        fail.push("Siphon saw no request with an API key at the server".into());
    }
    let exchanges_text =
        std::fs::read_to_string(out.join("siphon-server-exchanges.jsonl")).unwrap_or_default();
    for k in report.keys.server_keys() {
        if exchanges_text.contains(&k) || report.server_metrics.contains(&k) {
            fail.push("a raw API key appears in Siphon's output".into());
            break;
        }
    }
}

/// The client address the server saw first in X-Forwarded-For.
fn forwarded_client(e: &Value) -> String {
    e["x_forwarded_for"]
        .as_str()
        .unwrap_or("")
        .split(',')
        .next()
        .unwrap_or("")
        .trim()
        .to_owned()
}

/// Request start times per key, sorted.
fn starts_by_key(entries: &[&Value]) -> BTreeMap<String, Vec<f64>> {
    let mut m: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for e in entries {
        m.entry(e["key_id"].to_string())
            .or_default()
            .push(e["ts_start"].as_f64().unwrap_or(0.0));
    }
    for s in m.values_mut() {
        s.sort_by(f64::total_cmp);
    }
    m
}

/// Gaps between one key's consecutive request starts, over all keys.
fn gaps(entries: &[&Value]) -> Vec<f64> {
    starts_by_key(entries)
        .values()
        .flat_map(|s| s.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>())
        .collect()
}

/// Check 4: an actor is what it claims, from the server's log: addresses, keys, pacing.
fn actor_is_what_it_claims(
    out: &Path,
    a: &super::actors::Actor,
    entries: &[&Value],
    fail: &mut Vec<String>,
) {
    if entries.is_empty() {
        fail.push(format!("{}: no request reached the server", a.id));
        return;
    }
    let keys: HashSet<String> = entries.iter().map(|e| e["key_id"].to_string()).collect();
    let ips: HashSet<String> = entries.iter().map(|e| forwarded_client(e)).collect();
    let expect_ips = expected_ips(out, a.id);
    if !ips.is_subset(&expect_ips) {
        fail.push(format!(
            "{}: server saw it from {ips:?}, expected within {expect_ips:?}",
            a.id
        ));
    }
    match (a.kind, a.level) {
        ("harvester", Some("h1")) if (keys.len() != 1 || ips.len() != 1) => {
            fail.push(format!(
                "h1: {} keys from {} IPs, expected one and one",
                keys.len(),
                ips.len()
            ));
        }
        ("harvester", Some("h3")) => {
            if keys.len() < 8 || ips.len() < 8 {
                fail.push(format!(
                    "h3: {} keys from {} IPs, expected a hydra (>= 8 each)",
                    keys.len(),
                    ips.len()
                ));
            }
            if entries.iter().any(|e| e["status"] == 429) {
                fail.push(format!(
                    "h3: a key went over the per-key limit ({RATE_LIMIT_RPM}/min)"
                ));
            }
        }
        ("harvester", Some("h2")) => {
            let g = gaps(entries);
            if g.len() >= 4 {
                let mean = g.iter().sum::<f64>() / g.len() as f64;
                let sd =
                    (g.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / g.len() as f64).sqrt();
                if sd / mean < 0.3 {
                    fail.push(format!(
                        "h2: inter-request gaps too regular for jitter (cv {:.2})",
                        sd / mean
                    ));
                }
            }
        }
        ("human", _) => {
            // Think time: a user's requests are seconds apart (after the time scale).
            if let Some(m) = median(gaps(entries)) {
                if m < 0.5 {
                    fail.push(format!("human: median gap between a user's requests {m:.2} s, expected think times"));
                }
            }
        }
        ("app", _) => {
            let streams = entries.iter().filter(|e| e["stream"] == true).count();
            if streams * 2 > entries.len() {
                fail.push(format!(
                    "app: {streams} of {} requests streamed, expected mostly non-streaming",
                    entries.len()
                ));
            }
        }
        ("relay-user", _) if keys.len() < 2 => {
            fail.push(format!(
                "r1: LiteLLM used {} upstream keys, expected several",
                keys.len()
            ));
        }
        _ => {}
    }
    if a.label == "benign" && entries.iter().any(|e| e["status"] == 429) {
        fail.push(format!("{}: a benign actor hit the rate limit", a.id));
    }
}

/// An identity flood (fresh keys, addresses, fingerprints, paths) is seen as churn, evicts
/// once it outgrows the table, and leaves the detector within its memory bound. Ground truth:
/// the flood's own log (each answered request carried a key never used before).
fn flood_seen_and_bounded(
    out: &Path,
    a: &super::actors::Actor,
    report: &RunReport,
    fail: &mut Vec<String>,
) {
    let answered = read_jsonl(&a.log_path(out))
        .iter()
        .filter(|l| l["status"].is_u64())
        .count();
    let m = &report.server_metrics;
    let created = metric_sum(
        m,
        "siphon_entities_created_total",
        &[("entity_type", "api_key")],
    ) as usize;
    let evicted = metric_sum(
        m,
        "siphon_entities_evicted_total",
        &[("entity_type", "api_key")],
    ) as usize;
    let tracked = metric_sum(m, "siphon_entities_tracked", &[("entity_type", "api_key")]) as usize;
    let memory = metric_sum(m, "siphon_detector_memory_bytes", &[]);
    let table = super::configs::LAB_MAX_ENTITIES_PER_TYPE;
    println!(
        "lab: flood {}: {answered} fresh keys answered; server detector: {created} key entities created, {evicted} evicted, {tracked} tracked (table {table}), {:.1} MiB",
        a.id,
        memory / (1u64 << 20) as f64
    );
    // Each answered request reached the server with its key (401s included).
    if (created as f64) < 0.9 * answered as f64 {
        fail.push(format!(
            "{}: {answered} fresh keys reached the server, the detector created {created} key entities",
            a.id
        ));
    }
    if answered > table && evicted == 0 {
        fail.push(format!(
            "{}: {answered} fresh keys through a {table}-entry table and no eviction counted",
            a.id
        ));
    }
    if tracked > table {
        fail.push(format!("{}: {tracked} keys tracked, table {table}", a.id));
    }
    // README "Memory": 5 types × table × 8 KiB, clusters, and a join buffer of ≈ 40 MiB.
    let bound = (5 * table * 8 * 1024) as f64 + 48.0 * (1u64 << 20) as f64;
    if memory > bound {
        fail.push(format!(
            "{}: detector memory {memory} B above its bound {bound} B",
            a.id
        ));
    }
}

/// The benign population (whenever it runs): at least [`POPULATION_KEYS`] keys from
/// [`POPULATION_IPS`] addresses at the server.
fn population_breadth(
    report: &RunReport,
    by_actor: &BTreeMap<&str, Vec<&Value>>,
    fail: &mut Vec<String>,
) {
    if !report.actors.iter().any(|a| a.id == "people") {
        return;
    }
    let (mut keys, mut ips) = (HashSet::new(), HashSet::new());
    for a in report.actors.iter().filter(|a| a.label == "benign") {
        for e in by_actor.get(a.id).into_iter().flatten() {
            keys.insert(e["key_id"].to_string());
            ips.insert(forwarded_client(e));
        }
    }
    if keys.len() < POPULATION_KEYS || ips.len() < POPULATION_IPS {
        fail.push(format!(
            "benign population: {} keys from {} addresses reached the server, expected >= {POPULATION_KEYS} from >= {POPULATION_IPS}",
            keys.len(),
            ips.len()
        ));
    }
}

/// A harvester key pulls far faster than a human's, and humans think: their median gap is
/// longer than H1's.
fn humans_slower_than_h1(by_actor: &BTreeMap<&str, Vec<&Value>>, fail: &mut Vec<String>) {
    let per_key_rate = |entries: &[&Value]| -> Option<f64> {
        let rates: Vec<f64> = starts_by_key(entries)
            .values()
            .filter(|s| s.len() >= 2)
            .map(|s| (s.len() - 1) as f64 / (s[s.len() - 1] - s[0]).max(1.0) * 60.0)
            .collect();
        median(rates)
    };
    let (human, h1) = (by_actor.get("human"), by_actor.get("h1"));
    if let (Some(h), Some(h1)) = (
        human.and_then(|e| per_key_rate(e)),
        h1.and_then(|e| per_key_rate(e)),
    ) {
        if h1 < 2.0 * h {
            fail.push(format!(
                "h1 pulls {h1:.1} requests/min per key, not clearly above a human's {h:.1}"
            ));
        }
    }
    if let (Some(h), Some(h1)) = (
        human.and_then(|e| median(gaps(e))),
        h1.and_then(|e| median(gaps(e))),
    ) {
        if h <= h1 {
            fail.push(format!(
                "human median gap {h:.2} s is not above h1's {h1:.2} s"
            ));
        }
    }
}

/// Check 5: the shipped rules and dashboard query only metrics the agents export.
fn rules_query_exported_metrics(report: &RunReport, fail: &mut Vec<String>) -> anyhow::Result<()> {
    let root = crate::cmd::workspace_root();
    for file in [
        "deploy/prometheus/rules.yaml",
        "deploy/grafana/siphon-overview.json",
    ] {
        let text = std::fs::read_to_string(root.join(file))?;
        for name in queried_metrics(&text) {
            let exported = [&report.server_metrics, &report.ingress_metrics]
                .iter()
                .any(|m| has_series(m, &name));
            if !exported {
                fail.push(format!(
                    "{file} queries {name}, which no agent in the lab exports"
                ));
            }
        }
    }
    Ok(())
}

/// Whether a Prometheus exposition holds a sample of `name` (with or without labels).
fn has_series(text: &str, name: &str) -> bool {
    text.lines().filter(|l| !l.starts_with('#')).any(|l| {
        l.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
    })
}

/// The `siphon_*` metric names a rules file or dashboard queries. A name inside a recording
/// rule's name (`service:siphon_requests:rate5m`, with colons) is not a metric the agent
/// exports, and is skipped.
pub fn queried_metrics(text: &str) -> BTreeSet<String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("siphon_") {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at..];
        let len = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let after = tail[len..].chars().next();
        if !before.is_some_and(is_name) && after != Some(':') {
            names.insert(tail[..len].to_owned());
        }
        rest = &tail[len..];
    }
    names
}

/// The addresses the server should see an actor from (X-Forwarded-For), per the ground truth.
fn expected_ips(out: &Path, id: &str) -> HashSet<String> {
    let text = std::fs::read_to_string(out.join("ground_truth.json")).unwrap_or_default();
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    v["actors"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|x| x["id"] == id)
        .and_then(|x| x["seen_at_server_as"].as_array())
        .map(|arr| {
            arr.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queried_metrics_skips_recording_rule_names() {
        let text = r#"
          - record: service:siphon_requests:rate5m
            expr: sum by (service) (rate(siphon_requests_total[5m]))
          - alert: X
            expr: service:siphon_time_to_first_byte_seconds:p95_5m > 5
          "expr": "histogram_quantile(0.5, rate(siphon_response_duration_seconds_bucket[1m]))"
          not_siphon_metric siphon_attached_interfaces == 0
        "#;
        let got: Vec<String> = queried_metrics(text).into_iter().collect();
        assert_eq!(
            got,
            [
                "siphon_attached_interfaces",
                "siphon_requests_total",
                "siphon_response_duration_seconds_bucket"
            ]
        );
    }

    #[test]
    fn has_series_needs_the_whole_name() {
        let text = "# TYPE siphon_flows_active gauge\nsiphon_flows_active 3\nsiphon_requests_total{a=\"b\"} 1\n";
        assert!(has_series(text, "siphon_flows_active"));
        assert!(has_series(text, "siphon_requests_total"));
        assert!(!has_series(text, "siphon_requests"));
        assert!(!has_series(text, "siphon_flows"));
    }
}
