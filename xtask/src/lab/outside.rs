//! Actors from a file (`cargo xtask lab --actors FILE`): programs written outside the project,
//! each in its own namespace with its own keys, addresses and link delay, labelled in the
//! ground truth like the built-in actors. The format is documented in the README ("The lab").

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};
use serde::Deserialize;

use super::{
    actors::{self, Actor},
    topology::{Node, Topology, SUBNET},
    INGRESS_PORT, LITELLM_PORT, SOCKS_PORT,
};

/// Addresses handed to outside actors: `SUBNET.FIRST_FREE..=SUBNET.LAST_FREE` (the built-in
/// nodes stay below).
pub const FIRST_FREE: u32 = 100;
pub const LAST_FREE: u32 = 250;
const MAX_KEYS: usize = 256;
const MAX_DELAY_MS: u32 = 500;

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct ActorsFile {
    #[serde(default)]
    actor: Vec<Spec>,
}

#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    Benign,
    Harvester,
    Relay,
    /// An adversary spraying fresh identities (keys, addresses, fingerprints, paths) to fill
    /// the detector's tables: not a detection target itself; the checks want its churn seen
    /// and every harvester still raised.
    Flood,
}

impl Label {
    fn as_str(self) -> &'static str {
        match self {
            Label::Benign => "benign",
            Label::Harvester => "harvester",
            Label::Relay => "relay",
            Label::Flood => "flood",
        }
    }
}

#[derive(Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    #[default]
    Ingress,
    Litellm,
    Socks,
}

impl Via {
    fn as_str(self) -> &'static str {
        match self {
            Via::Ingress => "ingress",
            Via::Litellm => "litellm",
            Via::Socks => "socks",
        }
    }
}

fn one() -> usize {
    1
}

/// One `[[actor]]` table.
#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub id: String,
    pub label: Label,
    /// argv, run in the actor's namespace from the actors file's directory.
    pub command: Vec<String>,
    #[serde(default = "one")]
    pub keys: usize,
    #[serde(default = "one")]
    pub addresses: usize,
    #[serde(default)]
    pub delay_ms: u32,
    #[serde(default)]
    pub path: Via,
}

/// The actors of a file, and the directory their commands run in.
#[derive(Clone, Debug, Default)]
pub struct Outside {
    pub specs: Vec<Spec>,
    pub dir: PathBuf,
}

/// How an outside actor is started (its argv and working directory).
#[derive(Clone, Debug)]
pub struct Program {
    pub argv: Vec<String>,
    pub dir: PathBuf,
}

/// Parses and validates an actors file. `reserved` are the built-in actor ids and node roles.
pub fn load(path: &Path, reserved: &[&str]) -> anyhow::Result<Outside> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let specs = parse(&text, reserved).with_context(|| format!("in {}", path.display()))?;
    let dir = path
        .canonicalize()
        .with_context(|| format!("resolving {}", path.display()))?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    Ok(Outside { specs, dir })
}

pub fn parse(text: &str, reserved: &[&str]) -> anyhow::Result<Vec<Spec>> {
    let file: ActorsFile = toml::from_str(text)?;
    let mut seen = HashSet::new();
    for s in &file.actor {
        let id_ok = !s.id.is_empty()
            && s.id.len() <= 16
            && s.id
                .starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && s.id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !id_ok {
            bail!(
                "actor id {:?}: 1-16 characters of a-z, 0-9 and '-', starting with a letter or digit",
                s.id
            );
        }
        if reserved.contains(&s.id.as_str()) {
            bail!("actor id {:?} is taken by a built-in actor or node", s.id);
        }
        if !seen.insert(s.id.clone()) {
            bail!("actor id {:?} appears twice", s.id);
        }
        if s.command.is_empty() || s.command[0].is_empty() {
            bail!("actor {}: command must be a non-empty argv list", s.id);
        }
        if !(1..=MAX_KEYS).contains(&s.keys) {
            bail!("actor {}: keys must be 1..={MAX_KEYS}", s.id);
        }
        let room = (LAST_FREE - FIRST_FREE + 1) as usize;
        if s.addresses == 0 || s.addresses > room {
            bail!("actor {}: addresses must be 1..={room}", s.id);
        }
        if s.delay_ms > MAX_DELAY_MS {
            bail!("actor {}: delay_ms must be at most {MAX_DELAY_MS}", s.id);
        }
    }
    Ok(file.actor)
}

/// An outside actor's namespace role (its node in the topology).
fn role(id: &str) -> String {
    format!("x-{id}")
}

/// The topology's `&'static str` names: an outside actor's id and role live as long as the lab
/// process (a handful of short strings, once).
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// One node per outside actor, addresses allocated in file order from the free range.
pub fn nodes(prefix: &str, specs: &[Spec]) -> anyhow::Result<Vec<Node>> {
    let wanted: usize = specs.iter().map(|s| s.addresses).sum();
    let room = (LAST_FREE - FIRST_FREE + 1) as usize;
    if wanted > room {
        bail!(
            "outside actors ask for {wanted} source addresses; the lab has {room} free \
             ({SUBNET}.{FIRST_FREE}-{SUBNET}.{LAST_FREE})"
        );
    }
    let mut next = FIRST_FREE;
    let mut v = Vec::new();
    for s in specs {
        let ips = (next..next + s.addresses as u32)
            .map(|l| format!("{SUBNET}.{l}"))
            .collect();
        next += s.addresses as u32;
        let role = leak(role(&s.id));
        v.push(Node {
            role,
            ns: format!("{prefix}{role}"),
            ips,
            delay_ms: s.delay_ms,
            jitter_ms: s.delay_ms / 5,
        });
    }
    Ok(v)
}

/// An outside actor's keys. Behind LiteLLM they are end-user keys (`sk-user-*`, which the
/// lab's LiteLLM accepts and the server never sees).
pub fn keys(s: &Spec) -> Vec<String> {
    match s.path {
        Via::Litellm => actors::make_keys(&format!("user-x-{}", s.id), s.keys),
        _ => actors::make_keys(&format!("x-{}", s.id), s.keys),
    }
}

/// Keys of outside actors the inference server must accept (all but LiteLLM end users').
pub fn server_keys(o: &Outside) -> Vec<String> {
    o.specs
        .iter()
        .filter(|s| s.path != Via::Litellm)
        .flat_map(keys)
        .collect()
}

pub fn plan(o: &Outside, duration: u64) -> Vec<Actor> {
    o.specs
        .iter()
        .map(|s| Actor {
            id: leak(s.id.clone()),
            kind: "outside",
            level: None,
            label: s.label.as_str(),
            node: leak(role(&s.id)),
            via: s.path.as_str(),
            keys: keys(s),
            duration,
            extra: Vec::new(),
            program: Some(Program {
                argv: s.command.clone(),
                dir: o.dir.clone(),
            }),
        })
        .collect()
}

/// A stable seed per actor id (FNV-1a).
fn seed(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    }) % 1_000_000_007
}

/// The command line of an outside actor, with its `SIPHON_LAB_*` environment.
pub fn command(a: &Actor, p: &Program, topo: &Topology, out: &Path) -> Command {
    let mut c = topo.command(a.node, &p.argv[0]);
    let litellm = format!("http://relay1.lab:{LITELLM_PORT}");
    let base = match a.via {
        "litellm" => litellm.clone(),
        _ => format!("https://ingress.lab:{INGRESS_PORT}"),
    };
    c.args(&p.argv[1..])
        .current_dir(&p.dir)
        .env("SIPHON_LAB_ACTOR_ID", a.id)
        .env("SIPHON_LAB_PATH", a.via)
        .env("SIPHON_LAB_BASE_URL", base)
        .env("SIPHON_LAB_CA_FILE", out.join("ca.pem"))
        .env("SIPHON_LAB_KEYS", a.keys.join(","))
        .env("SIPHON_LAB_SOURCE_IPS", topo.node(a.node).ips.join(","))
        .env("SIPHON_LAB_DURATION", a.duration.to_string())
        .env("SIPHON_LAB_SEED", seed(a.id).to_string())
        .env("SIPHON_LAB_LITELLM_URL", litellm)
        .env(
            "SIPHON_LAB_SOCKS_URL",
            format!("socks5h://relay2.lab:{SOCKS_PORT}"),
        )
        .env("SIPHON_LAB_LOG", a.log_path(out));
    for v in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "all_proxy",
    ] {
        c.env_remove(v);
    }
    c
}

/// Kills (SIGKILL, by PID) whatever still runs in outside actors' namespaces after they were
/// stopped: children a script left behind, or a program that escaped its process group.
pub fn kill_leftovers(topo: &Topology, actors: &[Actor]) -> Vec<String> {
    let mut killed = Vec::new();
    for a in actors.iter().filter(|a| a.program.is_some()) {
        let ns = &topo.node(a.node).ns;
        let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() else {
            continue;
        };
        for pid in String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            // SAFETY: signalling a process inside a namespace the lab created for this actor.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed.push(format!("{} (pid {pid})", a.id));
        }
    }
    killed
}

/// Processes of outside actors still alive anywhere (found by the `SIPHON_LAB_LOG` in their
/// environment, unique to this run's output directory): after teardown there must be none.
pub fn survivors(out: &Path, actors: &[Actor]) -> Vec<String> {
    let marks: Vec<(String, &str)> = actors
        .iter()
        .filter(|a| a.program.is_some())
        .map(|a| {
            (
                format!("SIPHON_LAB_LOG={}", a.log_path(out).display()),
                a.id,
            )
        })
        .collect();
    if marks.is_empty() {
        return Vec::new();
    }
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        for var in env.split(|b| *b == 0) {
            if let Some((_, id)) = marks.iter().find(|(m, _)| m.as_bytes() == var) {
                found.push(format!("{id} (pid {pid})"));
            }
        }
    }
    found
}

/// The labels of outside actors reach the ground truth, the summary and the verdict table.
pub fn checks(out: &Path, actors: &[Actor], verdicts: &[(String, String)]) -> Vec<String> {
    let read = |f: &str| -> serde_json::Value {
        std::fs::read_to_string(out.join(f))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(serde_json::Value::Null)
    };
    let truth = read("ground_truth.json");
    let summary = read("summary.json");
    let mut fail = Vec::new();
    for a in actors.iter().filter(|a| a.program.is_some()) {
        let in_truth = truth["actors"].as_array().into_iter().flatten().any(|t| {
            t["id"] == a.id
                && t["label"] == a.label
                && t["key_hashes"].as_array().map(Vec::len) == Some(a.keys.len())
        });
        let in_summary = summary
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["actor"] == a.id && r["label"] == a.label);
        let in_verdicts = verdicts.iter().any(|(id, l)| id == a.id && l == a.label);
        for (ok, what) in [
            (in_truth, "ground_truth.json (with its key hashes)"),
            (in_summary, "summary.json"),
            (in_verdicts, "the verdict table"),
        ] {
            if !ok {
                fail.push(format!(
                    "outside actor {} (label {}) is missing from {what}",
                    a.id, a.label
                ));
            }
        }
    }
    fail
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../lab/examples/actors.example.toml");

    #[test]
    fn example_file_parses() {
        let specs = parse(EXAMPLE, &["human"]).expect("example parses");
        assert!(specs.len() >= 2);
        assert!(specs.iter().any(|s| s.label == Label::Benign));
        assert!(specs.iter().any(|s| s.label == Label::Harvester));
    }

    #[test]
    fn defaults_and_fields() {
        let specs = parse(
            r#"
            [[actor]]
            id = "a1"
            label = "relay"
            command = ["sh", "x.sh", "--fast"]
            keys = 3
            addresses = 2
            delay_ms = 40
            path = "litellm"

            [[actor]]
            id = "b"
            label = "benign"
            command = ["true"]
            "#,
            &[],
        )
        .expect("parses");
        assert_eq!(specs[0].keys, 3);
        assert_eq!(specs[0].path, Via::Litellm);
        assert_eq!(specs[0].command, ["sh", "x.sh", "--fast"]);
        assert_eq!(
            (specs[1].keys, specs[1].addresses, specs[1].delay_ms),
            (1, 1, 0)
        );
        assert_eq!(specs[1].path, Via::Ingress);
        // Behind LiteLLM: end-user keys, which the server is not given.
        assert!(keys(&specs[0])
            .iter()
            .all(|k| k.starts_with("sk-user-x-a1-")));
        let o = Outside {
            specs: specs.clone(),
            dir: PathBuf::from("/"),
        };
        assert_eq!(server_keys(&o), keys(&specs[1]));
        let n = nodes("p-", &specs).expect("nodes");
        assert_eq!(n[0].ips, [format!("{SUBNET}.100"), format!("{SUBNET}.101")]);
        assert_eq!(n[1].ips, [format!("{SUBNET}.102")]);
        assert_eq!((n[0].ns.as_str(), n[0].delay_ms), ("p-x-a1", 40));
    }

    #[test]
    fn bad_files_fail_clearly() {
        let one = |body: &str| parse(&format!("[[actor]]\n{body}"), &["human"]);
        let base = "label = \"benign\"\ncommand = [\"true\"]\n";
        for (body, needle) in [
            (format!("id = \"Bad_Id\"\n{base}"), "actor id"),
            (format!("id = \"human\"\n{base}"), "taken"),
            (format!("id = \"a\"\n{base}keys = 0\n"), "keys"),
            (format!("id = \"a\"\n{base}delay_ms = 9000\n"), "delay_ms"),
            (
                "id = \"a\"\nlabel = \"benign\"\ncommand = []\n".to_owned(),
                "command",
            ),
            (
                "id = \"a\"\nlabel = \"evil\"\ncommand = [\"true\"]\n".to_owned(),
                "unknown variant",
            ),
            (
                format!("id = \"a\"\n{base}path = \"tor\"\n"),
                "unknown variant",
            ),
            (format!("id = \"a\"\n{base}colour = 1\n"), "unknown field"),
        ] {
            let e = format!("{:#}", one(&body).expect_err(&body));
            assert!(e.contains(needle), "{body}: {e}");
        }
        let twice = "[[actor]]\nid = \"a\"\nlabel = \"benign\"\ncommand = [\"true\"]\n".repeat(2);
        assert!(format!("{:#}", parse(&twice, &[]).expect_err("dup")).contains("twice"));
    }

    #[test]
    fn address_range_exhaustion_is_reported() {
        let spec = |id: &str, n: usize| Spec {
            id: id.into(),
            label: Label::Benign,
            command: vec!["true".into()],
            keys: 1,
            addresses: n,
            delay_ms: 0,
            path: Via::Ingress,
        };
        let full = nodes("p-", &[spec("a", 100), spec("b", 51)]).expect("151 fit");
        assert_eq!(
            full[1].ips.last().map(String::as_str),
            Some("10.213.77.250")
        );
        let e = nodes("p-", &[spec("a", 100), spec("b", 52)]).expect_err("152 do not");
        assert!(e.to_string().contains("152 source addresses"), "{e}");
    }
}
