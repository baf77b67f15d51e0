//! The detectors' verdict per actor: `siphon detect` over both nodes' exchange logs (the
//! cluster view: TLS at the ingress joined to HTTP behind it), mapped onto the ground truth.
//! Entities belong to an actor by its key hashes and the addresses the servers see it from; a
//! cluster belongs to the actor holding most of its keys. Prefixes and fingerprints shared by
//! several actors belong to none (reported apart). A key or address several actors use (LiteLLM's
//! upstream keys and address, when more than one actor goes through it) belongs to each of them.

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    process::Command,
};

use anyhow::Context as _;
use serde_json::Value;

use super::view::read_jsonl;

/// A harvester must be raised within this long of its entity's first request.
pub const HARVEST_DEADLINE_S: f64 = 120.0;
/// Share of a many-keyed harvester's keys that must sit in one reported cluster.
pub const CLUSTER_SHARE: f64 = 0.9;

#[derive(Debug, Default, Clone)]
pub struct ActorVerdict {
    pub id: String,
    pub label: String,
    pub keys: usize,
    pub max_harvest: f64,
    pub max_relay: f64,
    /// Seconds from the raised entity's first request to the first raise.
    pub harvest_after_s: Option<f64>,
    pub relay_after_s: Option<f64>,
    /// Most of the actor's keys found in one cluster, and whether that cluster was raised.
    pub clustered_keys: usize,
    pub cluster_raised: bool,
    pub raised_entities: Vec<String>,
}

/// Runs the detector over the logs of a lab run (writes `detections-cluster.jsonl` and
/// `detect-summary.json`).
pub fn run_detect(siphon: &Path, out: &Path) -> anyhow::Result<()> {
    let status = Command::new(siphon)
        .arg("detect")
        .arg("--config")
        .arg(super::configs::detect_config_path(out))
        .arg(out.join("siphon-server-exchanges.jsonl"))
        .arg(out.join("siphon-ingress-exchanges.jsonl"))
        .arg("--events")
        .arg(out.join("detections-cluster.jsonl"))
        .arg("--summary")
        .arg(out.join("detect-summary.json"))
        .arg("--quiet")
        .status()
        .context("running siphon detect")?;
    anyhow::ensure!(status.success(), "siphon detect failed: {status}");
    Ok(())
}

pub fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// An actor as the ground truth has it: the keys the servers see (behind LiteLLM, the
/// router's own) and the addresses they see it from.
pub struct TruthActor {
    pub id: String,
    pub label: String,
    pub keys: Vec<String>,
    pub addresses: Vec<String>,
}

/// (entity type, value) → the actors it belongs to.
pub type Owners = HashMap<(String, String), Vec<String>>;

pub fn actors(truth: &Value) -> Vec<TruthActor> {
    truth["actors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| TruthActor {
            id: a["id"].as_str().unwrap_or("?").to_owned(),
            label: a["label"].as_str().unwrap_or("?").to_owned(),
            // Behind LiteLLM the servers see the router's own keys, not the users'.
            keys: if a["via"] == "litellm" {
                strs(&a["upstream_key_hashes"])
            } else {
                strs(&a["key_hashes"])
            },
            addresses: strs(&a["seen_at_server_as"]),
        })
        .collect()
}

/// Keys and addresses → their actors (a key or address several actors use belongs to each).
pub fn owners_of(actors: &[TruthActor]) -> Owners {
    let mut owner = Owners::new();
    for a in actors {
        for k in &a.keys {
            owner
                .entry(("api_key".into(), k.clone()))
                .or_default()
                .push(a.id.clone());
        }
        for ip in &a.addresses {
            owner
                .entry(("client_ip".into(), ip.clone()))
                .or_default()
                .push(a.id.clone());
        }
    }
    owner
}

pub fn verdicts(out: &Path) -> anyhow::Result<(Vec<ActorVerdict>, Vec<String>)> {
    let truth: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("ground_truth.json")).context("ground_truth.json")?,
    )?;
    let summary: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("detect-summary.json")).context("detect-summary.json")?,
    )?;
    let events = read_jsonl(&out.join("detections-cluster.jsonl"));
    let truth_actors = actors(&truth);
    let owner = owners_of(&truth_actors);
    let mut verdicts: BTreeMap<String, ActorVerdict> = BTreeMap::new();
    let mut actor_keys: HashMap<String, Vec<String>> = HashMap::new();
    for a in truth_actors {
        verdicts.insert(
            a.id.clone(),
            ActorVerdict {
                id: a.id.clone(),
                label: a.label,
                keys: a.keys.len(),
                ..ActorVerdict::default()
            },
        );
        actor_keys.insert(a.id, a.keys);
    }
    let cluster_owner = |keys: &[String]| -> Vec<String> {
        let mut n: HashMap<&str, usize> = HashMap::new();
        for k in keys {
            for o in owner
                .get(&("api_key".to_owned(), k.clone()))
                .into_iter()
                .flatten()
            {
                *n.entry(o).or_default() += 1;
            }
        }
        let Some(top) = n.values().copied().max().filter(|c| 2 * c >= keys.len()) else {
            return Vec::new();
        };
        n.into_iter()
            .filter(|(_, c)| *c == top)
            .map(|(o, _)| o.to_owned())
            .collect()
    };
    let mut shared = Vec::new();
    for e in &events {
        if e["state"] != "raised" {
            continue;
        }
        let (ty, value) = (
            e["entity"]["type"].as_str().unwrap_or(""),
            e["entity"]["value"].as_str().unwrap_or(""),
        );
        let who = if ty == "cluster" {
            cluster_owner(&strs(&e["linked"]["api_keys"]))
        } else {
            owner
                .get(&(ty.to_owned(), value.to_owned()))
                .cloned()
                .unwrap_or_default()
        };
        let kind = e["kind"].as_str().unwrap_or("");
        if who.is_empty() {
            shared.push(format!("{kind} on {ty} {value}"));
            continue;
        }
        let after = (e["detected_at_ns"].as_u64().unwrap_or(0) as f64
            - e["first_seen_ns"].as_u64().unwrap_or(0) as f64)
            / 1e9;
        for w in &who {
            let Some(v) = verdicts.get_mut(w) else {
                continue;
            };
            let slot = if kind == "harvest" {
                &mut v.harvest_after_s
            } else {
                &mut v.relay_after_s
            };
            *slot = Some(slot.map_or(after, |s: f64| s.min(after)));
            v.raised_entities.push(format!("{kind}:{ty}"));
            if ty == "cluster" && kind == "harvest" {
                v.cluster_raised = true;
            }
        }
    }
    for ent in summary["entities"].as_array().into_iter().flatten() {
        let key = (
            ent["type"].as_str().unwrap_or("").to_owned(),
            ent["value"].as_str().unwrap_or("").to_owned(),
        );
        for w in owner.get(&key).into_iter().flatten() {
            if let Some(v) = verdicts.get_mut(w) {
                v.max_harvest = v.max_harvest.max(ent["harvest"].as_f64().unwrap_or(0.0));
                v.max_relay = v.max_relay.max(ent["relay"].as_f64().unwrap_or(0.0));
            }
        }
    }
    for c in summary["clusters"].as_array().into_iter().flatten() {
        let members = strs(&c["api_keys"]);
        for (id, keys) in &actor_keys {
            let inside = keys.iter().filter(|k| members.contains(k)).count();
            if let Some(v) = verdicts.get_mut(id) {
                if inside > v.clustered_keys {
                    v.clustered_keys = inside;
                }
            }
        }
    }
    Ok((verdicts.into_values().collect(), shared))
}

pub fn print(verdicts: &[ActorVerdict], shared: &[String]) {
    println!("\n── detections per actor (siphon detect over both nodes' logs) ──");
    println!(
        "{:<10} {:<10} {:>7} {:>7} {:>14} {:>12} {:>10}",
        "actor", "label", "harvest", "relay", "harvest after", "relay after", "clustered"
    );
    let after = |s: Option<f64>| s.map_or("-".to_owned(), |s| format!("{s:.0} s"));
    for v in verdicts {
        println!(
            "{:<10} {:<10} {:>7.2} {:>7.2} {:>14} {:>12} {:>10}",
            v.id,
            v.label,
            v.max_harvest,
            v.max_relay,
            after(v.harvest_after_s),
            after(v.relay_after_s),
            if v.keys >= 4 {
                format!("{}/{}", v.clustered_keys, v.keys)
            } else {
                "-".into()
            }
        );
    }
    if !shared.is_empty() {
        println!(
            "raised on infrastructure shared by several actors: {}",
            shared.join(", ")
        );
    }
}

/// The detection targets: every attacker raised as its kind (harvesters in time, many-keyed
/// harvesters linked as one raised cluster), no benign actor raised.
pub fn failures(verdicts: &[ActorVerdict]) -> Vec<String> {
    let mut f = Vec::new();
    for v in verdicts {
        match v.label.as_str() {
            "benign" if !v.raised_entities.is_empty() => f.push(format!(
                "{}: benign actor raised ({})",
                v.id,
                v.raised_entities.join(", ")
            )),
            "harvester" => match v.harvest_after_s {
                None => f.push(format!(
                    "{}: harvester not raised (highest harvest score {:.2})",
                    v.id, v.max_harvest
                )),
                Some(s) if s > HARVEST_DEADLINE_S => f.push(format!(
                    "{}: harvester raised after {s:.0} s (> {HARVEST_DEADLINE_S} s)",
                    v.id
                )),
                Some(_) => {
                    if v.keys >= 4
                        && ((v.clustered_keys as f64) < CLUSTER_SHARE * v.keys as f64
                            || !v.cluster_raised)
                    {
                        f.push(format!(
                            "{}: {} of {} keys in one cluster (cluster raised: {})",
                            v.id, v.clustered_keys, v.keys, v.cluster_raised
                        ));
                    }
                }
            },
            "relay" if v.relay_after_s.is_none() => f.push(format!(
                "{}: relay not raised (highest relay score {:.2})",
                v.id, v.max_relay
            )),
            _ => {}
        }
    }
    f
}

/// `siphon detect` over each node's exchange log must give exactly the events its live agent
/// logged (same detector, same records, same order). Run after the agents have stopped.
pub fn live_matches_offline(siphon: &Path, out: &Path) -> anyhow::Result<Vec<String>> {
    let mut failures = Vec::new();
    for role in ["server", "ingress"] {
        let offline = out.join(format!("detections-{role}-offline.jsonl"));
        let status = Command::new(siphon)
            .arg("detect")
            .arg("--config")
            .arg(super::configs::detect_config_path(out))
            .arg(out.join(format!("siphon-{role}-exchanges.jsonl")))
            .arg("--events")
            .arg(&offline)
            .arg("--quiet")
            .status()
            .context("running siphon detect")?;
        anyhow::ensure!(status.success(), "siphon detect failed: {status}");
        let live = read_jsonl(&out.join(format!("siphon-{role}-detections.jsonl")));
        let replayed = read_jsonl(&offline);
        if live != replayed {
            let first = live
                .iter()
                .zip(&replayed)
                .position(|(a, b)| a != b)
                .unwrap_or(live.len().min(replayed.len()));
            failures.push(format!(
                "{role}: siphon detect gave {} events, the live agent {}; first difference at event {first}",
                replayed.len(),
                live.len()
            ));
        } else {
            println!(
                "lab: {role}: siphon detect over the exchange log reproduces the live agent's {} detection events",
                live.len()
            );
        }
    }
    Ok(failures)
}
