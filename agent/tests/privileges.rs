//! `siphon run`'s privileges, observed from outside: the capabilities a running agent still
//! holds (`/proc/<pid>/task/*/status`, every thread), what it says when it lacks some, and its
//! endpoint behind `--web-config-file` once those capabilities are gone.

mod common;

use std::time::{Duration, Instant};

use common::siphon::{Agent, BIN};
use siphon_testkit::Pair;

const CAP_DAC_OVERRIDE: u32 = 1;
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// (CapEff, CapPrm, CapBnd) of every thread of `pid`.
fn thread_caps(pid: u32) -> Vec<(u64, u64, u64)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let status =
            std::fs::read_to_string(task.expect("task").path().join("status")).expect("status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| u64::from_str_radix(v.trim(), 16).expect("hex"))
                .expect("cap field")
        };
        out.push((field("CapEff:"), field("CapPrm:"), field("CapBnd:")));
    }
    assert!(out.len() >= 3, "main, reader and sweeper threads: {out:?}");
    out
}

fn bits(caps: &[u32]) -> u64 {
    caps.iter().fold(0, |m, c| m | 1 << c)
}

/// Linux before 6.5 gates every bpf() call, map reads included, behind CAP_BPF while
/// unprivileged BPF is disabled: there the agent keeps it.
fn kernel_gates_map_reads() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let mut v = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
    (major, minor) < (6, 5)
}

fn curl_code(pair_ns: &siphon_testkit::NetNs, url: &str, extra: &[&str]) -> String {
    let out = pair_ns
        .command("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
        ])
        .args(extra)
        .arg(url)
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
#[ignore = "privileged: loads eBPF, creates network namespaces"]
fn fixed_interfaces_keep_no_capability_and_still_serve() {
    let pair = Pair::new(32).expect("a veth pair between two test namespaces");
    let dir = std::env::temp_dir().join(format!("siphon-privileges-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let web = dir.join("web.yml");
    let hash = bcrypt::hash("scrape-pw", 4).expect("bcrypt");
    std::fs::write(&web, format!("basic_auth_users:\n  prom: '{hash}'\n")).expect("web config");
    let mut agent = Agent::start(
        &pair.b,
        19_971,
        &[
            "--iface",
            &pair.dev_b,
            "--attach-mode",
            "tcx",
            "--sweep-interval",
            "500ms",
            "--web-config-file",
            web.to_str().expect("utf8"),
        ],
    );
    let gated = kernel_gates_map_reads();
    let allowed = if gated { bits(&[CAP_BPF]) } else { 0 };
    for (eff, prm, bnd) in thread_caps(agent.pid()) {
        assert_eq!(eff & !allowed, 0, "effective {eff:x}");
        assert_eq!(prm & !allowed, 0, "permitted {prm:x}");
        assert_eq!(bnd & !allowed, 0, "bounding {bnd:x}");
    }
    // Still counting and serving with nothing left: map reads through descriptors it holds.
    let url = format!("http://127.0.0.1:{}/metrics", agent.port);
    assert_eq!(
        curl_code(&pair.b, &url, &[]),
        "401",
        "basic auth on /metrics"
    );
    assert_eq!(curl_code(&pair.b, &url, &["-u", "prom:nope"]), "401");
    // Three refused connections: a SYN in and a RST out each (no ping on every machine).
    for _ in 0..3 {
        let _ = curl_code(&pair.a, &format!("http://{}:9/", pair.v4_b), &[]);
    }
    std::thread::sleep(Duration::from_millis(300));
    let body = pair
        .b
        .command("curl")
        .args(["-s", "--max-time", "5", "-u", "prom:scrape-pw", &url])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&body.stdout);
    let packets: f64 = text
        .lines()
        .filter(|l| l.starts_with("siphon_interface_packets_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(packets >= 6.0, "counted after the drop: {packets}\n{text}");
    let (status, stderr) = agent.stop();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("capabilities dropped"), "{stderr}");
    // The tcx links went away with their descriptors: a new agent attaches cleanly.
    let mut again = Agent::start(
        &pair.b,
        19_972,
        &["--iface", &pair.dev_b, "--attach-mode", "tcx"],
    );
    let (status, stderr) = again.stop();
    assert!(status.success(), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "privileged: loads eBPF, creates network namespaces"]
fn patterns_keep_what_later_attaches_need_and_attach() {
    let pair = Pair::new(33).expect("a veth pair between two test namespaces");
    let agent = Agent::start(
        &pair.b,
        19_973,
        &["--iface-pattern", "sxb*", "--sweep-interval", "500ms"],
    );
    let kept = bits(&[CAP_BPF, CAP_NET_ADMIN]);
    for (eff, prm, _) in thread_caps(agent.pid()) {
        assert_eq!(eff, kept, "effective {eff:x}");
        assert_eq!(prm, kept, "permitted {prm:x}");
        for c in [CAP_SYS_ADMIN, CAP_PERFMON, CAP_DAC_OVERRIDE] {
            assert_eq!(eff & 1 << c, 0);
        }
    }
    // An interface that appears after the drop is attached.
    let n = std::process::id() % 10000;
    let (x, y) = (format!("sxbq{n}"), format!("sxbr{n}"));
    pair.b
        .ip(&["link", "add", &x, "type", "veth", "peer", "name", &y])
        .expect("veth");
    pair.b.ip(&["link", "set", &x, "up"]).expect("up");
    pair.b.ip(&["link", "set", &y, "up"]).expect("up");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = agent.metrics();
        let attached = m.get("siphon_attached_interfaces").copied().unwrap_or(0.0);
        if attached >= 3.0 {
            assert_eq!(m.get("siphon_attach_errors_total").copied(), Some(0.0));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new interfaces not attached: {attached}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
#[ignore = "privileged: needs root to take capabilities away"]
fn missing_capabilities_are_named_at_start() {
    let out = std::process::Command::new("setpriv")
        .args([
            "--bounding-set",
            "-bpf,-net_admin,-sys_admin,-perfmon",
            "--inh-caps",
            "-all",
            "--",
            BIN,
            "run",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .expect("setpriv (util-linux)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    for name in ["CAP_BPF", "CAP_NET_ADMIN"] {
        assert!(stderr.contains(name), "{name} not named: {stderr}");
    }
    assert!(
        stderr.contains("CAP_PERFMON"),
        "the recommended one is named: {stderr}"
    );
}
