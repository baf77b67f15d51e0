//! `siphon replay` over FoxIO's reference captures must reproduce every JA4 (and its _r, _o,
//! _ro forms) and JA4H value in each capture's `.json` twin. The replay runs the real binary,
//! which loads the kernel program and feeds every packet through BPF_PROG_TEST_RUN: root only.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    process::Command,
};

use serde_json::Value;

/// The reference captures: the shared data set beside the project, or another directory of
/// captures with `.json` twins in the same format (SIPHON_JA4_DATA), e.g. FoxIO's whole set.
fn data_dir() -> PathBuf {
    let dir = std::env::var_os("SIPHON_JA4_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/ja4"));
    assert!(
        dir.is_dir(),
        "reference captures missing: expected {} (the shared data set beside the project, or \
         SIPHON_JA4_DATA)",
        dir.display()
    );
    dir
}

/// A flow regardless of direction.
type FlowId = (SocketAddr, SocketAddr);

fn flow_id(a: SocketAddr, b: SocketAddr) -> FlowId {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

/// Values produced by the replay, per flow, per kind (JA4, JA4_r, ..., JA4H).
fn replay(capture: &PathBuf) -> HashMap<FlowId, HashMap<&'static str, HashSet<String>>> {
    let out = std::env::temp_dir().join(format!(
        "siphon-ja4-{}-{}.json",
        std::process::id(),
        capture.file_name().and_then(|n| n.to_str()).unwrap_or("x")
    ));
    let status = Command::new(env!("CARGO_BIN_EXE_siphon"))
        .args(["replay", "--quiet", "--json"])
        .arg(&out)
        .arg(capture)
        .env("SIPHON_KEY_HASH_SECRET", "test-secret-0123456789")
        .status()
        .expect("run siphon replay");
    assert!(
        status.success(),
        "siphon replay {} failed: {status}",
        capture.display()
    );
    let text = std::fs::read_to_string(&out).expect("replay output");
    let _ = std::fs::remove_file(&out);
    let mut got: HashMap<FlowId, HashMap<&'static str, HashSet<String>>> = HashMap::new();
    for line in text.lines() {
        let r: Value = serde_json::from_str(line).expect("JSON line");
        let addr = |k: &str| {
            r[k].as_str()
                .and_then(|s| s.parse::<SocketAddr>().ok())
                .expect("endpoint")
        };
        let entry = got
            .entry(flow_id(addr("client"), addr("server")))
            .or_default();
        let mut add = |kind: &'static str, v: &Value| {
            if let Some(s) = v.as_str().filter(|s| !s.is_empty()) {
                entry.entry(kind).or_default().insert(s.to_owned());
            }
        };
        match r["record"].as_str() {
            Some("tls_client_hello") => {
                add("JA4", &r["ja4"]);
                add("JA4_r", &r["ja4_r"]);
                add("JA4_o", &r["ja4_o"]);
                add("JA4_ro", &r["ja4_ro"]);
            }
            Some("exchange") => add("JA4H", &r["http"]["ja4h"]),
            _ => {}
        }
    }
    got
}

/// The kinds we check, as they appear in the reference JSON (with an optional `.N` suffix).
const KINDS: [&str; 5] = ["JA4", "JA4_r", "JA4_o", "JA4_ro", "JA4H"];

#[test]
#[ignore = "privileged: replays through the kernel program; run with `cargo xtask test`"]
fn replay_reproduces_every_reference_fingerprint() {
    let dir = data_dir();
    let mut checked = 0usize;
    let mut failures = Vec::new();
    let mut captures: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("list captures")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
        .collect();
    captures.sort();
    assert!(!captures.is_empty(), "no captures in {}", dir.display());
    for capture in captures {
        let twin = PathBuf::from(format!("{}.json", capture.display()));
        let expected: Vec<Value> = serde_json::from_str(
            &std::fs::read_to_string(&twin).unwrap_or_else(|e| panic!("{}: {e}", twin.display())),
        )
        .expect("twin JSON");
        let got = replay(&capture);
        for stream in &expected {
            let Some(obj) = stream.as_object() else {
                continue;
            };
            let endpoint = |ip: &str, port: &str| -> Option<SocketAddr> {
                let ip: IpAddr = obj.get(ip)?.as_str()?.parse().ok()?;
                Some(SocketAddr::new(ip, obj.get(port)?.as_str()?.parse().ok()?))
            };
            for (key, value) in obj {
                let kind = key.split('.').next().unwrap_or("");
                let Some(kind) = KINDS.iter().find(|k| **k == kind) else {
                    continue;
                };
                let want = value.as_str().expect("fingerprint string");
                checked += 1;
                let (Some(src), Some(dst)) =
                    (endpoint("src", "srcport"), endpoint("dst", "dstport"))
                else {
                    failures.push(format!(
                        "{}: stream without endpoints for {key}",
                        capture.display()
                    ));
                    continue;
                };
                let have = got.get(&flow_id(src, dst)).and_then(|m| m.get(kind));
                if !have.is_some_and(|h| h.contains(want)) {
                    failures.push(format!(
                        "{} {src}->{dst} {key}: want {want}, got {have:?}",
                        capture.file_name().and_then(|n| n.to_str()).unwrap_or("?")
                    ));
                }
            }
        }
    }
    assert!(
        checked > 100,
        "only {checked} reference values found: is the data set complete?"
    );
    assert!(
        failures.is_empty(),
        "{} of {checked} reference values not reproduced:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
#[ignore = "privileged: replays through the kernel program; run with `cargo xtask test`"]
fn truncated_capture_keeps_what_was_read() {
    let full = std::fs::read(data_dir().join("http1.pcapng")).expect("read capture");
    let cut = std::env::temp_dir().join(format!("siphon-cut-{}.pcapng", std::process::id()));
    // Cut mid-file, inside a block.
    std::fs::write(&cut, &full[..full.len() / 2 + 7]).expect("write cut capture");
    let json = cut.with_extension("json");
    let out = Command::new(env!("CARGO_BIN_EXE_siphon"))
        .args(["replay", "--quiet", "--json"])
        .arg(&json)
        .arg(&cut)
        .env("SIPHON_KEY_HASH_SECRET", "test-secret-0123456789")
        .output()
        .expect("run siphon replay");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let exchanges = std::fs::read_to_string(&json)
        .unwrap_or_default()
        .lines()
        .count();
    let _ = std::fs::remove_file(&cut);
    let _ = std::fs::remove_file(&json);
    assert!(
        out.status.success(),
        "a cut capture still yields what was read: {stderr}"
    );
    assert!(stderr.contains("capture ended early"), "says so: {stderr}");
    assert!(
        exchanges > 5,
        "kept the exchanges before the cut: {exchanges}"
    );
}

#[test]
#[ignore = "privileged: loads the kernel program; run with `cargo xtask test`"]
fn unsupported_link_type_and_garbage_are_clear_errors() {
    let dir = std::env::temp_dir();
    // A valid pcap header with link type 105 (802.11) and one tiny packet.
    let mut wifi = Vec::new();
    wifi.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
    wifi.extend_from_slice(&2u16.to_le_bytes());
    wifi.extend_from_slice(&4u16.to_le_bytes());
    wifi.extend_from_slice(&[0u8; 8]);
    wifi.extend_from_slice(&65535u32.to_le_bytes());
    wifi.extend_from_slice(&105u32.to_le_bytes());
    wifi.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0, 1, 2, 3, 4]);
    let wifi_path = dir.join(format!("siphon-wifi-{}.pcap", std::process::id()));
    std::fs::write(&wifi_path, &wifi).expect("write");
    let garbage_path = dir.join(format!("siphon-garbage-{}.pcap", std::process::id()));
    std::fs::write(&garbage_path, b"this is not a capture at all").expect("write");
    for (path, needle) in [
        (&wifi_path, "unsupported link type"),
        (&garbage_path, "not a pcap or pcapng"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_siphon"))
            .args(["replay", "--quiet"])
            .arg(path)
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{} must fail", path.display());
        assert!(stderr.contains(needle), "{}: {stderr}", path.display());
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let _ = std::fs::remove_file(&wifi_path);
    let _ = std::fs::remove_file(&garbage_path);
}
