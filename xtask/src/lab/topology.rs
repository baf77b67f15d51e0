//! The lab network: one bridge namespace, one namespace per node, veth pairs (through a userspace
//! delay line on the links of nodes with a delay, see delayline.rs), and per-namespace
//! /etc/netns/<ns>/hosts so nodes find each other by name. Everything is deleted when the
//! [`Topology`] drops, also on panic or Ctrl-C.

use std::{fs, path::PathBuf, process::Command};

use anyhow::Context as _;
use siphon_testkit::NetNs;

/// The lab subnet. Only inside the lab's own namespaces: nothing of it reaches the host.
pub const SUBNET: &str = "10.213.77";

#[derive(Clone, Debug)]
pub struct Node {
    pub role: &'static str,
    pub ns: String,
    /// Addresses on the node's eth0; the first is primary.
    pub ips: Vec<String>,
    /// Delay added on the node's link in each direction (RTT + 2x this), with jitter.
    pub delay_ms: u32,
    pub jitter_ms: u32,
}

impl Node {
    pub fn ip(&self) -> &str {
        &self.ips[0]
    }
}

pub struct Topology {
    pub prefix: String,
    pub net_ns: String,
    pub nodes: Vec<Node>,
    /// Namespace guards, deleted in reverse order of creation.
    created: Vec<NetNs>,
    hosts_dirs: Vec<PathBuf>,
    delay_lines: Vec<super::delayline::DelayLine>,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    siphon_testkit::ip(args).map(drop)
}

fn in_ns(ns: &str, program: &str, args: &[&str]) -> anyhow::Result<()> {
    let mut full = vec!["netns", "exec", ns, program];
    full.extend_from_slice(args);
    ip(&full).with_context(|| format!("in {ns}"))
}

/// Namespaces whose name starts with `prefix` (to check that nothing is left behind).
pub fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

impl Topology {
    /// Builds the bridge and every node. On error, what was built is removed (Drop).
    pub fn build(prefix: &str, nodes: Vec<Node>) -> anyhow::Result<Topology> {
        let mut t = Topology {
            prefix: prefix.to_owned(),
            net_ns: format!("{prefix}net"),
            nodes: Vec::new(),
            created: Vec::new(),
            hosts_dirs: Vec::new(),
            delay_lines: Vec::new(),
        };
        t.created.push(NetNs::create(&t.net_ns)?);
        let net = t.net_ns.clone();
        ip(&["-n", &net, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &net, "link", "set", "br0", "up"])?;
        let hosts: String = nodes
            .iter()
            .map(|n| format!("{} {}.lab\n", n.ip(), n.role))
            .chain(std::iter::once("127.0.0.1 localhost\n".to_owned()))
            .collect();
        for (i, node) in nodes.iter().enumerate() {
            t.created.push(NetNs::create(&node.ns)?);
            let port = format!("p{i}");
            if node.delay_ms == 0 {
                ip(&[
                    "-n", &net, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                    "netns", &node.ns,
                ])?;
            } else {
                // eth0 ═ dA{i} ─[delay line]─ dB{i} ═ p{i} ── br0 (see delayline.rs).
                let (da, db) = (format!("dA{i}"), format!("dB{i}"));
                ip(&[
                    "-n", &net, "link", "add", &da, "type", "veth", "peer", "name", "eth0",
                    "netns", &node.ns,
                ])?;
                ip(&[
                    "-n", &net, "link", "add", &db, "type", "veth", "peer", "name", &port,
                ])?;
                for dev in [&da, &db] {
                    let _ = in_ns(
                        &net,
                        "sysctl",
                        &["-qw", &format!("net.ipv6.conf.{dev}.disable_ipv6=1")],
                    );
                    ip(&["-n", &net, "link", "set", dev, "promisc", "on", "up"])?;
                }
                // Frames must fit the MTU to pass through a packet socket.
                for dev in [&da, &db, &port] {
                    in_ns(
                        &net,
                        "ethtool",
                        &[
                            "-K", dev, "tx", "off", "tso", "off", "gso", "off", "gro", "off",
                        ],
                    )?;
                }
                in_ns(
                    &node.ns,
                    "ethtool",
                    &["-K", "eth0", "tso", "off", "gso", "off", "gro", "off"],
                )?;
                t.delay_lines.push(super::delayline::DelayLine::start(
                    &net,
                    &da,
                    &db,
                    std::time::Duration::from_millis(node.delay_ms as u64),
                    std::time::Duration::from_millis(node.jitter_ms as u64),
                    i as u64 + 1,
                ));
            }
            ip(&["-n", &net, "link", "set", &port, "master", "br0", "up"])?;
            for addr in &node.ips {
                ip(&[
                    "-n",
                    &node.ns,
                    "addr",
                    "add",
                    &format!("{addr}/24"),
                    "dev",
                    "eth0",
                ])?;
            }
            ip(&["-n", &node.ns, "link", "set", "eth0", "up"])?;
            // Checksums computed in software: a frame with a checksum left to "hardware" reaches
            // a delay line's packet socket without one and would be dropped after it.
            in_ns(&node.ns, "ethtool", &["-K", "eth0", "tx", "off"])?;
            let dir = PathBuf::from("/etc/netns").join(&node.ns);
            fs::create_dir_all(&dir)?;
            t.hosts_dirs.push(dir.clone());
            fs::write(dir.join("hosts"), &hosts)?;
            t.nodes.push(node.clone());
        }
        Ok(t)
    }

    pub fn node(&self, role: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.role == role)
            .unwrap_or_else(|| panic!("lab node {role} is not part of the topology"))
    }

    /// A command run inside `role`'s namespace.
    pub fn command(&self, role: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.node(role).ns, program]);
        c
    }

    /// `command`, run ahead of the actors for CPU. The lab's nodes share this machine's cores,
    /// where in the world each is its own machine: a single-threaded router (LiteLLM's event
    /// loop) starved by the actors' load would throttle its users to a few requests a minute,
    /// and the lab would measure its own CPU rather than the relay's behaviour.
    pub fn priority_command(&self, role: &str, program: &str) -> Command {
        let mut c = Command::new("nice");
        c.args([
            "-n",
            "-5",
            "ip",
            "netns",
            "exec",
            &self.node(role).ns,
            program,
        ]);
        c
    }

    pub fn teardown(&mut self) {
        self.delay_lines.clear();
        // Dropping a guard deletes its namespace.
        while self.created.pop().is_some() {}
        for dir in self.hosts_dirs.drain(..) {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.teardown();
    }
}
