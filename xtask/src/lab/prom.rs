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
        .arg(format!("--storage.tsdb.path={}", out.join("prometheus-data").display()))
        .arg(format!("--web.listen-address={LISTEN}"))
        .arg("--log.level=warn");
    c
}

/// One API call through curl inside the server's namespace.
fn api(topo: &super::topology::Topology, path_and_query: &[(&str, &str)], path: &str) -> anyhow::Result<Value> {
    let mut c = topo.command("server", "curl");
    c.args(["-sf", "--max-time", "10", "-G", &format!("http://{LISTEN}{path}")]);
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
            Ok(v) if v["data"]["result"].as_array().is_some_and(|r| !r.is_empty()) => {}
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
    owner: &HashMap<(String, String), String>,
    labels: &HashMap<String, String>,
) -> Vec<String> {
    let mut got: HashSet<(String, &str)> = HashSet::new();
    let mut f = Vec::new();
    for (name, ty, value) in firing {
        let Some(actor) = owner.get(&(ty.clone(), value.clone())) else {
            continue;
        };
        let kind = match name.as_str() {
            "SiphonHarvestingSuspected" => "harvest",
            "SiphonRelaySuspected" => "relay",
            _ => continue,
        };
        if labels.get(actor).map(String::as_str) == Some("benign") {
            f.push(format!("Prometheus: {name} fires for benign actor {actor} ({ty} {value})"));
        }
        got.insert((actor.clone(), kind));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_are_judged_by_owner_and_label() {
        let owner: HashMap<(String, String), String> = [
            (("api_key".into(), "k1".into()), "h1".into()),
            (("client_ip".into(), "10.0.0.5".into()), "r2".into()),
            (("api_key".into(), "k9".into()), "human".into()),
        ]
        .into();
        let labels: HashMap<String, String> = [
            ("h1".into(), "harvester".into()),
            ("r2".into(), "relay".into()),
            ("human".into(), "benign".into()),
        ]
        .into();
        let firing = vec![
            ("SiphonHarvestingSuspected".into(), "api_key".into(), "k1".into()),
            ("SiphonRelaySuspected".into(), "client_ip".into(), "10.0.0.5".into()),
            ("SiphonHarvestingSuspected".into(), "prefix".into(), "10.0.0.0/24".into()),
        ];
        assert!(alert_failures(&firing, &owner, &labels).is_empty());
        let mut bad = firing.clone();
        bad.push(("SiphonHarvestingSuspected".into(), "api_key".into(), "k9".into()));
        bad.remove(1);
        let f = alert_failures(&bad, &owner, &labels);
        assert_eq!(f.len(), 2, "{f:?}");
    }
}
