//! A real Prometheus (Debian's `prometheus`) in the lab: it scrapes both Siphon agents with the
//! shipped rules loaded, and at the end the lab asks it whether every dashboard query and
//! recording rule returns data, and which alerts fire for whom.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;
use serde_json::Value;

use super::verdict::{actors, owners_of, strs, Owners};

/// Inside the server node's namespace only.
pub const LISTEN: &str = "127.0.0.1:9090";

/// The Prometheus configuration: both agents as job `siphon` (what the shipped ServiceMonitor
/// gives), the shipped rules, a short interval so a 150 s lab sees alerts pass their `for`.
pub fn write_config(out: &Path, root: &Path, targets: &[String]) -> anyhow::Result<PathBuf> {
    let rules = root.join("deploy/prometheus/rules.yaml");
    let cfg = format!(
        "global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: siphon\n    static_configs:\n      - targets: [{}]\n",
        rules.display(),
        targets.iter().map(|t| format!("\"{t}\"")).collect::<Vec<_>>().join(", ")
    );
    let path = out.join("prometheus.yml");
    std::fs::write(&path, cfg)?;
    Ok(path)
}

pub fn command(topo: &super::topology::Topology, config: &Path, out: &Path) -> Command {
    let mut c = topo.command("server", "prometheus");
    c.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            out.join("prometheus-data").display()
        ))
        .arg(format!("--web.listen-address={LISTEN}"))
        .arg("--log.level=warn");
    c
}

/// One API call through curl inside the server's namespace.
fn api(
    topo: &super::topology::Topology,
    path_and_query: &[(&str, &str)],
    path: &str,
) -> anyhow::Result<Value> {
    let mut c = topo.command("server", "curl");
    c.args([
        "-sf",
        "--max-time",
        "10",
        "-G",
        &format!("http://{LISTEN}{path}"),
    ]);
    for (k, v) in path_and_query {
        c.args(["--data-urlencode", &format!("{k}={v}")]);
    }
    let out = c.output().context("curl to Prometheus")?;
    anyhow::ensure!(out.status.success(), "Prometheus {path}: curl failed");
    let v: Value = serde_json::from_slice(&out.stdout)?;
    anyhow::ensure!(v["status"] == "success", "Prometheus {path}: {}", v);
    Ok(v)
}

/// Every expression the dashboard and the recording rules evaluate, Grafana's variables
/// replaced.
pub fn expressions(root: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("deploy/grafana/siphon-overview.json"))
            .context("reading the dashboard")?,
    )?;
    for p in dash["panels"].as_array().into_iter().flatten() {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                let e = e
                    .replace("$__rate_interval", "1m")
                    .replace("$__interval", "1m")
                    .replace("$instance", ".*")
                    .replace("$service", ".*");
                out.push((format!("panel {:?}", p["title"].as_str().unwrap_or("?")), e));
            }
        }
    }
    let rules = std::fs::read_to_string(root.join("deploy/prometheus/rules.yaml"))?;
    for line in rules.lines() {
        if let Some(name) = line.trim().strip_prefix("- record: ") {
            out.push((format!("recording rule {name}"), name.trim().to_owned()));
        }
    }
    Ok(out)
}

/// Queries that returned nothing.
pub fn empty_queries(topo: &super::topology::Topology, exprs: &[(String, String)]) -> Vec<String> {
    let mut empty = Vec::new();
    for (what, e) in exprs {
        match api(topo, &[("query", e)], "/api/v1/query") {
            Ok(v)
                if v["data"]["result"]
                    .as_array()
                    .is_some_and(|r| !r.is_empty()) => {}
            Ok(_) => empty.push(format!("{what}: `{e}` returned no series")),
            Err(err) => empty.push(format!("{what}: `{e}`: {err:#}")),
        }
    }
    empty
}

/// Firing alerts: (alert name, entity_type, entity).
pub fn firing(topo: &super::topology::Topology) -> anyhow::Result<Vec<(String, String, String)>> {
    let v = api(topo, &[], "/api/v1/alerts")?;
    Ok(v["data"]["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["state"] == "firing")
        .map(|a| {
            let l = &a["labels"];
            let s = |k: &str| l[k].as_str().unwrap_or("").to_owned();
            (s("alertname"), s("entity_type"), s("entity"))
        })
        .collect())
}

/// The alert each label must see: harvesters a harvesting alert, relays a relay alert, benign
/// actors none. `owner` maps (entity type, value) to an actor; clusters map by member keys in
/// `cluster_owner`.
pub fn alert_failures(
    firing: &[(String, String, String)],
    owner: &Owners,
    labels: &HashMap<String, String>,
) -> Vec<String> {
    let mut got: HashSet<(String, &str)> = HashSet::new();
    let mut f = Vec::new();
    for (name, ty, value) in firing {
        let kind = match name.as_str() {
            "SiphonHarvestingSuspected" => "harvest",
            "SiphonRelaySuspected" => "relay",
            _ => continue,
        };
        for actor in owner
            .get(&(ty.clone(), value.clone()))
            .into_iter()
            .flatten()
        {
            if labels.get(actor).map(String::as_str) == Some("benign") {
                f.push(format!(
                    "Prometheus: {name} fires for benign actor {actor} ({ty} {value})"
                ));
            }
            got.insert((actor.clone(), kind));
        }
    }
    for (actor, label) in labels {
        let want = match label.as_str() {
            "harvester" => "harvest",
            "relay" => "relay",
            _ => continue,
        };
        if !got.contains(&(actor.clone(), want)) {
            f.push(format!("Prometheus: no {want} alert fires for {actor}"));
        }
    }
    f
}

/// Who each entity belongs to (ground truth: key hashes, the addresses the servers see; a
/// cluster to the actor holding most of its keys, from the agents' detection logs), and each
/// actor's label.
pub fn owners(out: &Path) -> anyhow::Result<(Owners, HashMap<String, String>)> {
    let truth: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("ground_truth.json"))?)?;
    let truth_actors = actors(&truth);
    let mut owner = owners_of(&truth_actors);
    let labels: HashMap<String, String> =
        truth_actors.into_iter().map(|a| (a.id, a.label)).collect();
    for role in ["server", "ingress"] {
        for e in super::view::read_jsonl(&out.join(format!("siphon-{role}-detections.jsonl"))) {
            if e["entity"]["type"] != "cluster" {
                continue;
            }
            let mut n: HashMap<String, usize> = HashMap::new();
            let members = strs(&e["linked"]["api_keys"]);
            for k in &members {
                for o in owner
                    .get(&("api_key".to_owned(), k.clone()))
                    .into_iter()
                    .flatten()
                {
                    *n.entry(o.clone()).or_default() += 1;
                }
            }
            if let Some((o, c)) = n.into_iter().max_by_key(|(_, c)| *c) {
                if 2 * c >= members.len() {
                    let id = e["entity"]["value"].as_str().unwrap_or("").to_owned();
                    owner.entry(("cluster".into(), id)).or_default().push(o);
                }
            }
        }
    }
    Ok((owner, labels))
}

/// Waits (at most `wait`) until every attacker's alert fires, then checks the alerts, every
/// dashboard query and recording rule, and `promtool check metrics` on both agents' metrics.
pub fn finish(
    topo: &super::topology::Topology,
    out: &Path,
    root: &Path,
    metrics: &[(&str, &str)],
    wait: std::time::Duration,
) -> anyhow::Result<Vec<String>> {
    let (owner, labels) = owners(out)?;
    let deadline = std::time::Instant::now() + wait;
    let mut failures = loop {
        let f = alert_failures(&firing(topo)?, &owner, &labels);
        if f.is_empty() || std::time::Instant::now() > deadline {
            break f;
        }
        std::thread::sleep(std::time::Duration::from_secs(5));
    };
    let alerts = firing(topo)?;
    std::fs::write(
        out.join("prometheus-alerts.json"),
        serde_json::to_string_pretty(&alerts)?,
    )?;
    println!(
        "lab: Prometheus: {} alerts firing ({} harvest, {} relay)",
        alerts.len(),
        alerts
            .iter()
            .filter(|a| a.0 == "SiphonHarvestingSuspected")
            .count(),
        alerts
            .iter()
            .filter(|a| a.0 == "SiphonRelaySuspected")
            .count()
    );
    let exprs = expressions(root)?;
    let empty = empty_queries(topo, &exprs);
    println!(
        "lab: Prometheus: {} of {} dashboard queries and recording rules return data",
        exprs.len() - empty.len(),
        exprs.len()
    );
    failures.extend(empty);
    for (role, text) in metrics {
        let mut child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("running promtool")?;
        if let Some(mut stdin) = child.stdin.take() {
            std::io::Write::write_all(&mut stdin, text.as_bytes())?;
        }
        let o = child.wait_with_output()?;
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        if !o.status.success() || !said.trim().is_empty() {
            failures.push(format!(
                "promtool check metrics on the {role} agent: {}",
                said.trim()
            ));
        }
    }
    Ok(failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_are_judged_by_owner_and_label() {
        let owner: HashMap<(String, String), Vec<String>> = [
            (("api_key".into(), "k1".into()), vec!["h1".into()]),
            (("client_ip".into(), "10.0.0.5".into()), vec!["r2".into()]),
            (("api_key".into(), "k9".into()), vec!["human".into()]),
        ]
        .into();
        let labels: HashMap<String, String> = [
            ("h1".into(), "harvester".into()),
            ("r2".into(), "relay".into()),
            ("human".into(), "benign".into()),
        ]
        .into();
        let firing = vec![
            (
                "SiphonHarvestingSuspected".into(),
                "api_key".into(),
                "k1".into(),
            ),
            (
                "SiphonRelaySuspected".into(),
                "client_ip".into(),
                "10.0.0.5".into(),
            ),
            (
                "SiphonHarvestingSuspected".into(),
                "prefix".into(),
                "10.0.0.0/24".into(),
            ),
        ];
        assert!(alert_failures(&firing, &owner, &labels).is_empty());
        let mut bad = firing.clone();
        bad.push((
            "SiphonHarvestingSuspected".into(),
            "api_key".into(),
            "k9".into(),
        ));
        bad.remove(1);
        let f = alert_failures(&bad, &owner, &labels);
        assert_eq!(f.len(), 2, "{f:?}");
    }
}
