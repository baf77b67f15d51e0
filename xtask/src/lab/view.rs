//! What the lab shows: a live table of the top clients as Siphon sees them on the server node,
//! and a per-actor summary at the end.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    time::Duration,
};

use serde_json::Value;

use super::{actors::Actor, RunReport};

pub fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[derive(Default)]
struct ClientRow {
    requests: u64,
    resp_bytes: u64,
    ttfb_sum: f64,
    ttfb_n: u64,
    streams: u64,
}

/// Top clients by requests, from Siphon's server-side exchange log.
pub fn live(out: &Path, actors: &[Actor], elapsed: Duration, total: u64) {
    let truth = read_truth(out);
    let mut rows: HashMap<(String, String), ClientRow> = HashMap::new();
    for e in read_jsonl(&out.join("siphon-server-exchanges.jsonl")) {
        if e["record"] != "exchange" {
            continue;
        }
        let ip = e["http"]["client_ip"].as_str().unwrap_or("?").to_owned();
        let key = e["http"]["api_key_hash"].as_str().unwrap_or("-").to_owned();
        let r = rows.entry((ip, key)).or_default();
        r.requests += 1;
        r.resp_bytes += e["response_bytes"].as_u64().unwrap_or(0);
        if let Some(t) = e["ttfb_seconds"].as_f64() {
            r.ttfb_sum += t;
            r.ttfb_n += 1;
        }
        r.streams += u64::from(e["http"]["event_stream"] == true);
    }
    let mut rows: Vec<_> = rows.into_iter().collect();
    rows.sort_by_key(|(_, r)| std::cmp::Reverse(r.requests));
    let done: Vec<String> = actors
        .iter()
        .map(|a| {
            let log = read_jsonl(&a.log_path(out));
            let ok = log.iter().filter(|l| l["status"] == 200).count();
            format!("{} {ok}/{}", a.id, log.len())
        })
        .collect();
    println!(
        "\n── lab {:>4.0}/{total} s ── actor requests ok/all: {}",
        elapsed.as_secs_f64(),
        done.join("  ")
    );
    println!(
        "{:<16} {:<10} {:<8} {:>8} {:>12} {:>9} {:>7}",
        "client ip", "key", "actor*", "requests", "resp bytes", "ttfb ms", "stream%"
    );
    for ((ip, key), r) in rows.iter().take(10) {
        let who = truth.get(key).cloned().unwrap_or_else(|| "-".into());
        let ttfb = if r.ttfb_n > 0 {
            r.ttfb_sum / r.ttfb_n as f64 * 1e3
        } else {
            0.0
        };
        println!(
            "{:<16} {:<10} {:<8} {:>8} {:>12} {:>9.1} {:>6.0}%",
            ip,
            &key[..key.len().min(8)],
            who,
            r.requests,
            r.resp_bytes,
            ttfb,
            100.0 * r.streams as f64 / r.requests.max(1) as f64
        );
    }
    println!(
        "(* actor from the lab's ground truth, shown for reading the table; Siphon is not told)"
    );
}

/// key hash → actor id, from the ground truth.
fn read_truth(out: &Path) -> HashMap<String, String> {
    let mut m = HashMap::new();
    let Ok(text) = std::fs::read_to_string(out.join("ground_truth.json")) else {
        return m;
    };
    let Ok(v) = serde_json::from_str::<Value>(&text) else {
        return m;
    };
    for a in v["actors"].as_array().into_iter().flatten() {
        let id = a["id"].as_str().unwrap_or("?").to_owned();
        for k in a["key_hashes"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(a["upstream_key_hashes"].as_array().into_iter().flatten())
        {
            if let Some(k) = k.as_str() {
                m.insert(k.to_owned(), id.clone());
            }
        }
    }
    m
}

/// Per actor: what it did (its own log) and what Siphon saw of it at the server.
pub fn summary(out: &Path, report: &RunReport) -> anyhow::Result<()> {
    let truth = read_truth(out);
    let exchanges = read_jsonl(&out.join("siphon-server-exchanges.jsonl"));
    let mut seen: HashMap<String, (u64, u64)> = HashMap::new();
    // Distinct keys and client addresses Siphon saw per actor (the population's breadth).
    let mut breadth: HashMap<String, (HashSet<String>, HashSet<String>)> = HashMap::new();
    for e in &exchanges {
        let key = e["http"]["api_key_hash"].as_str();
        if let Some(actor) = key.and_then(|k| truth.get(k)) {
            let s = seen.entry(actor.clone()).or_default();
            s.0 += 1;
            s.1 += e["response_bytes"].as_u64().unwrap_or(0);
            let b = breadth.entry(actor.clone()).or_default();
            b.0.extend(key.map(str::to_owned));
            b.1.extend(e["http"]["client_ip"].as_str().map(str::to_owned));
        }
    }
    let mut rows = Vec::new();
    println!("\n── summary per actor ──");
    println!(
        "{:<10} {:<13} {:<9} {:>6} {:>6} {:>6} {:>12} {:>14} {:>16} {:>5} {:>4}",
        "actor",
        "kind",
        "label",
        "ok",
        "429",
        "other",
        "resp bytes",
        "siphon saw req",
        "siphon resp bytes",
        "keys",
        "ips"
    );
    let (mut benign_keys, mut benign_ips) = (HashSet::new(), HashSet::new());
    for a in &report.actors {
        let log = read_jsonl(&a.log_path(out));
        let ok = log.iter().filter(|l| l["status"] == 200).count();
        let limited = log.iter().filter(|l| l["status"] == 429).count();
        let bytes: u64 = log
            .iter()
            .map(|l| l["response_bytes"].as_u64().unwrap_or(0))
            .sum();
        let (sreq, sbytes) = seen.get(a.id).copied().unwrap_or_default();
        let (keys, ips) = breadth.get(a.id).cloned().unwrap_or_default();
        if a.label == "benign" {
            benign_keys.extend(keys.iter().cloned());
            benign_ips.extend(ips.iter().cloned());
        }
        println!(
            "{:<10} {:<13} {:<9} {:>6} {:>6} {:>6} {:>12} {:>14} {:>16} {:>5} {:>4}",
            a.id,
            a.kind_label(),
            a.label,
            ok,
            limited,
            log.len() - ok - limited,
            bytes,
            sreq,
            sbytes,
            keys.len(),
            ips.len()
        );
        rows.push(serde_json::json!({"actor": a.id, "kind": a.kind_label(), "label": a.label, "ok": ok, "rate_limited": limited, "other": log.len() - ok - limited, "response_bytes": bytes, "siphon_requests": sreq, "siphon_response_bytes": sbytes, "keys_seen": keys.len(), "client_ips_seen": ips.len()}));
    }
    println!(
        "benign: {} keys from {} client addresses seen by Siphon at the server",
        benign_keys.len(),
        benign_ips.len()
    );
    let server = read_jsonl(&out.join("server-requests.jsonl"));
    println!(
        "server logged {} requests; Siphon (server node) reported {} exchanges",
        server.len(),
        exchanges
            .iter()
            .filter(|e| e["record"] == "exchange")
            .count()
    );
    std::fs::write(
        out.join("summary.json"),
        serde_json::to_string_pretty(&rows)?,
    )?;
    Ok(())
}
