//! The traffic actors: who they are (ground truth), which keys they hold, where they run, and
//! the `actors.py` command line for each.

use std::{path::Path, process::Command};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{
    outside,
    topology::{Node, Topology, SUBNET},
    Scenario, INGRESS_PORT, LITELLM_PORT, SOCKS_PORT,
};

/// The lab's time compression, the same for every actor: waits taken from the world (think
/// times, trace inter-arrivals, agents' tool time, idle periods) are divided by it. Rates set
/// per key (client-side limiters under the server's per-key quota) and the server's token rate
/// are lab time. 10x: compressing more would give one person a harvester's request rate, and
/// push an app's key over the server's per-key limit.
pub const TIME_SCALE: &str = "10";

/// The lab's nodes (built-in actors and infrastructure). Outside actors get theirs from
/// `outside::nodes`, above these addresses.
pub fn nodes(prefix: &str) -> Vec<Node> {
    let n = |role: &'static str, last: &[u32], delay_ms: u32, jitter_ms: u32| Node {
        role,
        ns: format!("{prefix}{role}"),
        ips: last.iter().map(|l| format!("{SUBNET}.{l}")).collect(),
        delay_ms,
        jitter_ms,
    };
    let hydra: Vec<u32> = (20..36).collect();
    // People at home: 60 addresses (households, mobile carriers), some shared by several keys.
    let people: Vec<u32> = (40..100).collect();
    vec![
        n("server", &[2], 0, 0),
        n("ingress", &[3], 0, 0),
        n("relay1", &[4], 0, 0),
        n("relay2", &[5], 0, 0),
        // Client RTTs from ~5 ms to ~250 ms (the delay applies in each direction).
        n("humans", &[10], 15, 5),
        n("apps", &[11], 2, 1),
        n("h1", &[12], 5, 1),
        n("h2", &[13], 20, 5),
        n("h3", &hydra, 30, 8),
        n("users", &[14], 10, 3),
        n("far", &[15], 120, 5),
        // The benign population (see `plan`): jobs in the same data centre have no delay line.
        n("people", &people, 12, 4),
        n("office", &[36], 8, 2),
        n("agents", &[16, 17], 6, 2),
        n("batch", &[37], 0, 0),
        n("backend", &[38], 0, 0),
        n("ci", &[39], 0, 0),
    ]
}

/// Every key of the lab, by owner. Keys are made up here, never printed; the ground truth holds
/// their keyed hashes.
pub struct Keys {
    pub humans: Vec<String>,
    pub apps: Vec<String>,
    /// The benign population: people at home, an office behind one NAT address, a batch job,
    /// an application backend, a CI job, agent loops.
    pub people: Vec<String>,
    pub office: Vec<String>,
    pub batch: Vec<String>,
    pub backend: Vec<String>,
    pub ci: Vec<String>,
    pub agents: Vec<String>,
    /// Outside actors' keys the server accepts (`--actors`).
    pub outside: Vec<String>,
    pub h1: Vec<String>,
    pub h2: Vec<String>,
    pub h3: Vec<String>,
    pub far: Vec<String>,
    /// LiteLLM's own keys to the ingress.
    pub relay_upstream: Vec<String>,
    /// End users' keys to LiteLLM (the server never sees them).
    pub relay_users: Vec<String>,
}

pub fn make_keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                "sk-{prefix}-{i:02}-{:08x}",
                0x5eed_0000u32.wrapping_add((i as u32).wrapping_mul(2_654_435_761))
            )
        })
        .collect()
}

impl Keys {
    pub fn new() -> Keys {
        let keys = make_keys;
        Keys {
            humans: keys("human", 6),
            apps: keys("app", 2),
            people: keys("people", 150),
            office: keys("office", 40),
            batch: keys("batch", 1),
            backend: keys("backend", 1),
            ci: keys("ci", 1),
            agents: keys("agent", 3),
            outside: Vec::new(),
            h1: keys("h1", 1),
            h2: keys("h2", 2),
            h3: keys("h3", 16),
            far: keys("far", 1),
            relay_upstream: keys("relay", 3),
            relay_users: (0..20).map(|i| format!("sk-user-{i:02}")).collect(),
        }
    }

    /// Keys the inference server accepts (all but LiteLLM's end users).
    pub fn server_keys(&self) -> Vec<String> {
        [
            &self.humans,
            &self.apps,
            &self.people,
            &self.office,
            &self.batch,
            &self.backend,
            &self.ci,
            &self.agents,
            &self.outside,
            &self.h1,
            &self.h2,
            &self.h3,
            &self.far,
            &self.relay_upstream,
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect()
    }
}

/// Siphon's API-key hash: HMAC-SHA256 with the secret, first 16 bytes, hex.
pub fn key_hash(secret: &str, key: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(key.as_bytes());
    mac.finalize().into_bytes()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[derive(Clone, Debug)]
pub struct Actor {
    pub id: &'static str,
    pub kind: &'static str,
    pub level: Option<&'static str>,
    /// Ground truth: benign, harvester, relay.
    pub label: &'static str,
    /// Topology role of the namespace it runs in.
    pub node: &'static str,
    /// ingress, litellm or socks.
    pub via: &'static str,
    pub keys: Vec<String>,
    pub duration: u64,
    pub extra: Vec<String>,
    /// An outside actor's program (`--actors`); built-in actors run `actors.py`.
    pub program: Option<outside::Program>,
}

impl Actor {
    pub fn kind_label(&self) -> String {
        match self.level {
            Some(l) => format!("{}:{l}", self.kind),
            None => self.kind.to_owned(),
        }
    }

    /// The address the inference server sees in X-Forwarded-For for this actor's requests.
    pub fn seen_from(&self, topo: &Topology) -> Vec<String> {
        match self.via {
            "litellm" => vec![topo.node("relay1").ip().to_owned()],
            "socks" => vec![topo.node("relay2").ip().to_owned()],
            _ => topo.node(self.node).ips.clone(),
        }
    }

    pub fn log_path(&self, out: &Path) -> std::path::PathBuf {
        out.join(format!("actor-{}-requests.jsonl", self.id))
    }

    pub fn command(&self, topo: &Topology, lab_dir: &Path, out: &Path) -> Command {
        if let Some(p) = &self.program {
            return outside::command(self, p, topo, out);
        }
        let mut c = topo.command(self.node, "python3");
        c.arg(lab_dir.join("actors.py")).arg(self.kind);
        if let Some(level) = self.level {
            c.args(["--level", level]);
        }
        let base = match self.via {
            "litellm" => format!("http://relay1.lab:{LITELLM_PORT}"),
            _ => format!("https://ingress.lab:{INGRESS_PORT}"),
        };
        c.args([
            "--actor-id",
            self.id,
            "--base-url",
            &base,
            "--keys",
            &self.keys.join(","),
        ])
        .args([
            "--time-scale",
            TIME_SCALE,
            "--duration",
            &self.duration.to_string(),
            "--seed",
            &(self.id.len() * 7919 + 17).to_string(),
        ])
        .arg("--log")
        .arg(self.log_path(out))
        .arg("--ca-file")
        .arg(out.join("ca.pem"));
        if self.via == "socks" {
            c.args(["--proxy", &format!("socks5h://relay2.lab:{SOCKS_PORT}")]);
        }
        let ips = &topo.node(self.node).ips;
        if ips.len() > 1 {
            c.args(["--source-ips", &ips.join(",")]);
        }
        c.args(&self.extra);
        c
    }
}

/// The actors of a scenario. Every `actors.py` actor runs with `--time-scale` [`TIME_SCALE`].
/// Benign: the original humans and apps, and a population of 200-odd keys from 64 addresses
/// (people, an office, a batch job, an app backend, a CI job, agent loops).
pub fn plan(scenario: Scenario, keys: &Keys, duration: u64) -> Vec<Actor> {
    let a = |id, kind, level, label, node, via, keys: &Vec<String>, extra: &[&str]| Actor {
        id,
        kind,
        level,
        label,
        node,
        via,
        keys: keys.clone(),
        duration,
        extra: extra.iter().map(|s| s.to_string()).collect(),
        program: None,
    };
    let benign =
        |id, kind, node, keys, extra| a(id, kind, None, "benign", node, "ingress", keys, extra);
    let mut v = vec![
        benign("human", "human", "humans", &keys.humans, &[]),
        benign("app", "app", "apps", &keys.apps, &[]),
        // People chatting (the conversation trace), ~1.4 new conversations a second over 150
        // keys on 60 addresses, and an office: 40 keys behind one NAT address. Each person
        // comes about once in a run (25 minutes of the world at 10x).
        benign(
            "people",
            "human",
            "people",
            &keys.people,
            &[
                "--trace-fraction",
                "0.025",
                "--concurrency",
                "16",
                "--user-order",
                "round-robin",
            ],
        ),
        benign(
            "office",
            "human",
            "office",
            &keys.office,
            &[
                "--trace-fraction",
                "0.008",
                "--concurrency",
                "6",
                "--user-order",
                "round-robin",
            ],
        ),
        benign("batch", "batch", "batch", &keys.batch, &[]),
        benign("backend", "backend", "backend", &keys.backend, &[]),
        benign("ci", "ci", "ci", &keys.ci, &[]),
        benign("agents", "agent", "agents", &keys.agents, &[]),
    ];
    if matches!(scenario, Scenario::All | Scenario::Harvest) {
        v.push(a(
            "h1",
            "harvester",
            Some("h1"),
            "harvester",
            "h1",
            "ingress",
            &keys.h1,
            &[],
        ));
        v.push(a(
            "h2",
            "harvester",
            Some("h2"),
            "harvester",
            "h2",
            "ingress",
            &keys.h2,
            &[],
        ));
        v.push(a(
            "h3",
            "harvester",
            Some("h3"),
            "harvester",
            "h3",
            "ingress",
            &keys.h3,
            &["--rate-per-key", "6"],
        ));
    }
    if matches!(scenario, Scenario::All | Scenario::Relay) {
        v.push(a(
            "r1",
            "relay-user",
            None,
            "relay",
            "users",
            "litellm",
            &keys.relay_users,
            &[],
        ));
        // 20 s between requests in the world, 2 s in the lab.
        v.push(a(
            "r2",
            "far-client",
            None,
            "relay",
            "far",
            "socks",
            &keys.far,
            &["--gap-median", "20"],
        ));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hash_is_siphons_hmac() {
        // RFC 4231 test case 2 ("Jefe"), truncated to 16 bytes.
        assert_eq!(
            key_hash("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c7"
        );
    }

    #[test]
    fn keys_are_distinct_and_users_stay_off_the_server() {
        let k = Keys::new();
        let mut all = k.server_keys();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
        assert!(k.relay_users.iter().all(|u| !all.contains(u)));
    }
}
