//! Crash and restart: `kill -9` the agent while traffic flows, start a new one, and check from
//! outside the agent (the interface's own counters, the kernel's list of programs and links,
//! `tc`) that nothing was attached twice, nothing leaked, and the crash window's packets are in
//! the new agent's totals. Maps and links are pinned in a bpffs the test mounts.

mod common;

use common::{
    bpffs::{programs_using, BpfFs},
    load::{minus, quiet_reading, udp_flows},
    prom,
    siphon::Agent,
};
use siphon_testkit::{NetNs, Pair};

/// Names of Siphon's programs attached to `dev` with tcx, by the kernel's account.
fn tcx_programs(ns: &NetNs, dev: &str) -> Vec<String> {
    let dev = dev.to_owned();
    ns.run(move || {
        let mut names = Vec::new();
        for t in [
            aya::programs::TcAttachType::Ingress,
            aya::programs::TcAttachType::Egress,
        ] {
            let (_, progs) = aya::programs::SchedClassifier::query_tcx(&dev, t).expect("query tcx");
            names.extend(
                progs
                    .iter()
                    .map(|p| p.name_as_str().unwrap_or("?").to_owned()),
            );
        }
        names.sort();
        names
    })
    .expect("a thread in the test namespace")
}

fn tc(ns: &NetNs, args: &[&str]) -> String {
    let out = ns.command("tc").args(args).output().expect("tc");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Datagrams from A to B in the namespace (each its own flow, so the flow table moves too).
fn traffic(pair: &Pair, first_port: u16, n: u16) {
    let host = pair.v4_b.clone();
    pair.a
        .run(move || udp_flows(&host, first_port..first_port + n))
        .expect("a thread in the test namespace");
}

const SIPHON_PROGS: [&str; 2] = ["siphon_egress", "siphon_ingress"];

#[test]
#[ignore = "privileged: network namespaces, bpffs and eBPF; run with `cargo xtask test`"]
fn kill_9_and_restart_keeps_counts_and_attaches_once() {
    const RESTARTS: usize = 5;
    let pair = Pair::new(31).expect("a veth pair between two test namespaces");
    let fs = BpfFs::mount("tcx");
    let base = fs.base().to_string_lossy().into_owned();
    // A leftover of another layout version for this namespace, as an upgrade would find it: a
    // pinned map that must be removed, not read.
    let netns = std::fs::metadata(format!("/run/netns/{}", pair.a.name))
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .expect("netns inode");
    let stale = fs
        .base()
        .join(format!("v0-0123456789abcdef/netns-{netns}/maps"));
    std::fs::create_dir_all(&stale).expect("stale version dir");
    let stale_map = stale.join("FLOWS");
    let made = std::process::Command::new("bpftool")
        .args(["map", "create"])
        .arg(&stale_map)
        .args([
            "type", "hash", "key", "4", "value", "4", "entries", "8", "name", "FLOWS",
        ])
        .status()
        .expect("bpftool");
    assert!(made.success(), "creating the stale pinned map");

    let port = 19_960;
    let args = |max_flows: &'static str| {
        vec![
            "--iface".to_owned(),
            pair.dev_a.clone(),
            "--sweep-interval".to_owned(),
            "500ms".to_owned(),
            "--pin-path".to_owned(),
            base.clone(),
            "--max-flows".to_owned(),
            max_flows.to_owned(),
        ]
    };
    let start = |max_flows| {
        let a = args(max_flows);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        Agent::start(&pair.a, port, &a)
    };
    let mut agent = start("4096");
    assert!(!stale_map.exists(), "the other version's pins were removed");
    assert!(
        !fs.base().join("v0-0123456789abcdef").exists(),
        "and its now empty directory"
    );
    let (agent0, kernel0) = quiet_reading(&agent, &pair.a, &pair.dev_a);
    let mut sent = 0u64;
    for round in 0..RESTARTS {
        let first = 20_000 + round as u16 * 200;
        traffic(&pair, first, 100);
        let log = agent.kill9();
        // Pinned links outlive the process: the programs still count.
        assert_eq!(
            tcx_programs(&pair.a, &pair.dev_a),
            SIPHON_PROGS,
            "still attached after kill -9 (round {round}): {log}"
        );
        // The crash window: nobody reads the maps, the kernel program still counts.
        traffic(&pair, first + 100, 100);
        sent += 200;
        // The last restart also changes the flow table's size: that map is replaced, the
        // counters are kept.
        agent = start(if round + 1 == RESTARTS {
            "2048"
        } else {
            "4096"
        });
        assert_eq!(
            tcx_programs(&pair.a, &pair.dev_a),
            SIPHON_PROGS,
            "attached exactly once after restart {round}"
        );
        let flows = fs.find("FLOWS").expect("FLOWS pinned");
        assert_eq!(
            programs_using(&flows).len(),
            2,
            "only the running agent's two programs use the pinned maps (none leaked)"
        );
    }
    let flows = fs.find("FLOWS").expect("FLOWS pinned");
    let info = common::bpffs::bpftool(&["map", "show", "pinned", &flows.to_string_lossy()]);
    assert_eq!(info["max_entries"].as_u64(), Some(2048), "FLOWS replaced");

    let (agent1, kernel1) = quiet_reading(&agent, &pair.a, &pair.dev_a);
    let seen = minus(agent1, agent0);
    let truth = minus(kernel1, kernel0);
    assert!(
        truth[2] >= sent,
        "the datagrams crossed the link: {truth:?}"
    );
    assert_eq!(
        seen, truth,
        "the agent's totals over {RESTARTS} kill -9 restarts equal the interface's own counters \
         (rx packets, rx bytes, tx packets, tx bytes)"
    );
    eprintln!(
        "restart: {RESTARTS} kill -9 restarts, {} packets ({sent} datagrams, half of them sent \
         while no agent ran) all counted",
        truth[0] + truth[2]
    );

    let (status, log) = agent.stop();
    assert!(status.success(), "exit 0 after SIGTERM: {log}");
    assert!(tcx_programs(&pair.a, &pair.dev_a).is_empty(), "detached");
    assert!(
        fs.pins().iter().all(|p| !p.contains("/links/")),
        "link pins removed on a clean stop: {:?}",
        fs.pins()
    );
    assert!(
        programs_using(&flows).is_empty(),
        "no program left using the maps (they stay pinned for the next start)"
    );
}

#[test]
#[ignore = "privileged: network namespaces, bpffs and eBPF; run with `cargo xtask test`"]
fn kill_9_with_netlink_attach_replaces_the_leftover_filters() {
    let pair = Pair::new(32).expect("a veth pair between two test namespaces");
    let fs = BpfFs::mount("netlink");
    let base = fs.base().to_string_lossy().into_owned();
    let port = 19_961;
    let args = [
        "--iface",
        &pair.dev_a,
        "--attach-mode",
        "netlink",
        "--pin-path",
        &base,
    ];
    let mut agent = Agent::start(&pair.a, port, &args);
    let (agent0, kernel0) = quiet_reading(&agent, &pair.a, &pair.dev_a);
    traffic(&pair, 30_000, 100);
    agent.kill9();
    // Netlink filters outlive the process; the crash window is still counted.
    traffic(&pair, 30_100, 100);
    let mut agent = Agent::start(&pair.a, port, &args);
    for dir in ["ingress", "egress"] {
        let filters = tc(&pair.a, &["filter", "show", "dev", &pair.dev_a, dir]);
        assert_eq!(
            filters.lines().filter(|l| l.contains("siphon_")).count(),
            1,
            "one Siphon filter on {dir} after the restart: {filters}"
        );
    }
    let (agent1, kernel1) = quiet_reading(&agent, &pair.a, &pair.dev_a);
    assert_eq!(
        minus(agent1, agent0),
        minus(kernel1, kernel0),
        "counts across the restart equal the interface's"
    );
    let m = agent.metrics();
    assert_eq!(
        prom::value(&m, "siphon_attached_interfaces", &[]),
        Some(1.0)
    );
    let (status, log) = agent.stop();
    assert!(status.success(), "exit 0 after SIGTERM: {log}");
    let qdiscs = tc(&pair.a, &["qdisc", "show", "dev", &pair.dev_a]);
    assert!(
        !qdiscs.contains("clsact"),
        "the clsact qdisc the first agent made is removed by the second: {qdiscs}"
    );
}
