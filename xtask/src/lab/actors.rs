//! The traffic actors: who they are (ground truth), which keys they hold, where they run, and
//! the `actors.py` command line for each.

use std::{path::Path, process::Command};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{topology::Topology, Scenario, INGRESS_PORT, LITELLM_PORT, SOCKS_PORT};

/// Every key of the lab, by owner. Keys are made up here, never printed; the ground truth holds
/// their keyed hashes.
pub struct Keys {
    pub humans: Vec<String>,
    pub apps: Vec<String>,
    pub h1: Vec<String>,
    pub h2: Vec<String>,
    pub h3: Vec<String>,
    pub far: Vec<String>,
    /// LiteLLM's own keys to the ingress.
    pub relay_upstream: Vec<String>,
    /// End users' keys to LiteLLM (the server never sees them).
    pub relay_users: Vec<String>,
}

fn keys(prefix: &str, n: usize) -> Vec<String> {
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
        Keys {
            humans: keys("human", 6),
            apps: keys("app", 2),
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
        if self.node == "h3" {
            c.args(["--source-ips", &topo.node("h3").ips.join(",")]);
        }
        c.args(&self.extra);
        c
    }
}

/// The actors of a scenario. Trace-driven actors run faster than the trace so a few minutes show
/// their shape: 10x (compressing more would give one person a harvester's request rate, and
/// push an app's key over the server's per-key limit).
pub fn plan(scenario: Scenario, keys: &Keys, _topo: &Topology, duration: u64) -> Vec<Actor> {
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
    };
    let mut v = vec![
        a(
            "human",
            "human",
            None,
            "benign",
            "humans",
            "ingress",
            &keys.humans,
            &["--time-scale", "10"],
        ),
        a(
            "app",
            "app",
            None,
            "benign",
            "apps",
            "ingress",
            &keys.apps,
            &["--time-scale", "10"],
        ),
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
            &["--time-scale", "10"],
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
        v.push(a(
            "r2",
            "far-client",
            None,
            "relay",
            "far",
            "socks",
            &keys.far,
            &[],
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
