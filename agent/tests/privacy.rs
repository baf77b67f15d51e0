//! Privacy, end to end: real requests with known API keys (bearer, `x-api-key`, `api-key`, one
//! the server refuses, one in a query string) and known markers in an unparsed header, a cookie
//! and the body, through the lab's server with Siphon attached; the hash secret rotated half
//! way. Then every output is searched for the keys' bytes (whole, hex, base64 and every
//! 8-byte window) and the markers: `/metrics`, the agent's log (at debug level), the exchange
//! log, the detection log, and `siphon replay`'s JSON and metrics of a capture of the same
//! traffic. The exchange log holds only the documented parsed fields, and the rotation shows
//! as documented (`api_key_hash_prev` during the overlap only).

mod common;

use std::{
    collections::BTreeSet,
    path::Path,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use base64::Engine as _;
use common::{lab_server::Server, siphon::Agent};
use serde_json::Value;
use siphon_agent::decode::ApiKeyHasher;
use siphon_testkit::{NetNs, Pair};

const KEYS: [&str; 2] = ["sk-priv-quartz-5d1e8b7a0c", "sk-priv-umber-93f0a6c2e4"];
/// Sent but not accepted by the server.
const BAD_KEY: &str = "sk-priv-refused-71b4d09e2f";
/// In a query string, which Siphon drops with the rest of the query.
const QUERY_KEY: &str = "qk-priv-hidden-2c8f5a1e77";
const MARKERS: [&str; 3] = [
    "HDR-MARKER-v3q9x",
    "COOKIE-MARKER-j7w2p",
    "BODY-MARKER-t5n8k",
];
const PORT: u16 = 8000;
const SECRET_A: &str = "privacy-secret-a-0123456789abcdef";
const SECRET_B: &str = "privacy-secret-b-fedcba9876543210";
/// Hair-trigger detector thresholds (any volume, any response at least a ten-thousandth of its
/// request), so that the detection log this test scans holds events, with the keys' hashes
/// and the clients' addresses in them, rather than nothing.
const HAIR_TRIGGER: &str = "windows_seconds = [5]\nslot_seconds = 1\neval_interval_seconds = 1.0\n\
    hold_seconds = 0.0\n[harvest]\nraise = 0.002\nclear = 0.001\nmin_requests = 1\n\
    volume_floor_tokens_per_second = 0.0\nratio_lo = 0.0001\nratio_hi = 0.001\n";

/// What must not appear: each key whole, as hex and base64, and every 8-byte window of it
/// (the `sk-priv-` prefix alone is shared and excluded); the markers.
fn needles() -> Vec<String> {
    let mut out = BTreeSet::new();
    for key in KEYS.iter().chain([&BAD_KEY, &QUERY_KEY]) {
        out.insert(key.to_string());
        out.insert(key.bytes().map(|b| format!("{b:02x}")).collect());
        out.insert(base64::engine::general_purpose::STANDARD.encode(key));
        for w in key.as_bytes().windows(8) {
            let w = String::from_utf8_lossy(w).into_owned();
            if !"sk-priv-".contains(&w) && !"qk-priv-".contains(&w) {
                out.insert(w);
            }
        }
    }
    out.extend(MARKERS.iter().map(|m| m.to_string()));
    out.into_iter().collect()
}

fn assert_clean(what: &str, text: &str) {
    for n in needles() {
        assert!(!text.contains(&n), "{n:?} found in {what}");
    }
}

/// Captures every frame on `dev` in `ns` to a pcap file (AF_PACKET, Python standard library:
/// no tcpdump needed); stopped by SIGTERM, and by itself after 120 s.
fn start_capture(ns: &NetNs, dev: &str, out: &Path) -> Child {
    const SCRIPT: &str = r#"
import socket, struct, sys, time, signal
dev, path = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(3))
s.bind((dev, 0)); s.settimeout(0.2)
f = open(path, "wb")
f.write(struct.pack("<IHHiIII", 0xa1b2c3d4, 2, 4, 0, 0, 65535, 1)); f.flush()
open(path + ".ready", "w").close()
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
end = time.time() + 120
while not stop and time.time() < end:
    try:
        data = s.recv(65535)
    except socket.timeout:
        continue
    t = time.time()
    f.write(struct.pack("<IIII", int(t), int((t % 1) * 1e6), len(data), len(data)) + data)
    f.flush()
"#;
    let child = ns
        .command("python3")
        .args(["-c", SCRIPT, dev])
        .arg(out)
        .stdout(Stdio::null())
        .spawn()
        .expect("python3 capture");
    let ready = out.with_extension("pcap.ready");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "capture not started");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn stop_child(mut c: Child) {
    // SAFETY: signalling the child we spawned, by its PID.
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = c.kill();
    let _ = c.wait();
}

/// One request per way of sending a key, each with the markers.
fn traffic(ns: &NetNs, base: &str) {
    let body = format!(
        r#"{{"model":"siphon-lab-1","max_tokens":8,"messages":[{{"role":"user","content":"{}"}}]}}"#,
        MARKERS[2]
    );
    let url = format!("{base}/v1/chat/completions");
    let query_url = format!("{url}?api_key={QUERY_KEY}");
    let requests: [(String, &str); 5] = [
        (format!("Authorization: Bearer {}", KEYS[0]), url.as_str()),
        (format!("x-api-key: {}", KEYS[1]), url.as_str()),
        (format!("api-key: {}", KEYS[0]), url.as_str()),
        (format!("Authorization: Bearer {BAD_KEY}"), url.as_str()),
        (
            format!("Authorization: Bearer {}", KEYS[1]),
            query_url.as_str(),
        ),
    ];
    for (auth, url) in requests {
        let out = ns
            .command("curl")
            .args(["-sS", "--max-time", "20", "-o", "/dev/null"])
            .args(["-H", &auth, "-H", "Content-Type: application/json"])
            .args(["-H", &format!("X-Trace-Note: {}", MARKERS[0])])
            .args(["-H", &format!("Cookie: session={}", MARKERS[1])])
            .args(["--data-binary", &body, url])
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Every field name in an exchange record, as `http.api_key_hash`.
fn field_names(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    if let Value::Object(m) = v {
        for (k, v) in m {
            let name = format!("{prefix}{k}");
            if matches!(k.as_str(), "http" | "tls" | "tcp") {
                field_names(v, &format!("{name}."), out);
            }
            out.insert(name);
        }
    }
}

/// README "Exchange records": the parsed fields, nothing else.
const DOCUMENTED: &[&str] = &[
    "record",
    "ifindex",
    "client",
    "server",
    "seq",
    "part",
    "end",
    "request_start_ns",
    "request_start_unix_ns",
    "request_bytes",
    "response_bytes",
    "request_packets",
    "response_packets",
    "ttfb_seconds",
    "response_duration_seconds",
    "streamed_chunks",
    "http",
    "tls",
    "tcp",
    "http.method",
    "http.route",
    "http.path",
    "http.host",
    "http.status",
    "http.status_class",
    "http.event_stream",
    "http.user_agent_family",
    "http.api_key_hash",
    "http.api_key_hash_prev",
    "http.client_ip",
    "http.forwarded_for",
    "http.ja4h",
    "http.head_truncated",
    "http.decode_error",
    "tls.ja4",
    "tls.ja4_r",
    "tls.ja4_o",
    "tls.ja4_ro",
    "tls.sni",
    "tcp.ja4t",
    "tcp.ja4ts",
    "tcp.syn_synack_seconds",
    "tcp.synack_ack_seconds",
    "tcp.tls_rtt_seconds",
];

fn exchanges(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON line"))
        .filter(|v| v["record"] == "exchange" && v["http"].is_object())
        .collect()
}

fn hash(secret: &str, key: &str) -> String {
    ApiKeyHasher::new(secret.as_bytes())
        .expect("secret")
        .hash(key.as_bytes())
        .to_string()
}

#[test]
#[ignore = "privileged: loads eBPF, creates network namespaces"]
fn no_key_or_payload_bytes_leave_the_agent() {
    let pair = Pair::new(31).expect("a veth pair between two test namespaces");
    let dir = std::env::temp_dir().join(format!("siphon-privacy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let server = Server::start(&pair.b, &dir, &KEYS, PORT);
    let secret = dir.join("key-hash");
    std::fs::write(&secret, format!("{SECRET_A}\n")).expect("secret");
    let (exlog, detlog) = (dir.join("exchanges.jsonl"), dir.join("detections.jsonl"));
    let detect_config = dir.join("detect.toml");
    std::fs::write(&detect_config, HAIR_TRIGGER).expect("detector config");
    let capture = dir.join("traffic.pcap");
    let cap = start_capture(&pair.a, &pair.dev_a, &capture);
    let path = |p: &Path| p.to_str().expect("utf8 path").to_owned();
    let mut agent = Agent::start(
        &pair.b,
        19_974,
        &[
            "--iface",
            &pair.dev_b,
            "--service",
            &format!("llm=:{PORT}"),
            "--exchange-log",
            &path(&exlog),
            "--detection-log",
            &path(&detlog),
            "--detect-config",
            &path(&detect_config),
            "--key-hash-secret-file",
            &path(&secret),
            "--key-hash-overlap",
            "1h",
            "--sweep-interval",
            "500ms",
            "--exchange-idle-timeout",
            "1s",
            "--log-level",
            "debug",
        ],
    );
    let base = format!("http://{}:{PORT}", pair.v4_b);
    traffic(&pair.a, &base);
    // Rotate: the watcher polls every 2 s.
    std::thread::sleep(Duration::from_secs(3));
    std::fs::write(&secret, SECRET_B).expect("rotate");
    std::thread::sleep(Duration::from_secs(3));
    traffic(&pair.a, &base);
    std::thread::sleep(Duration::from_secs(3));
    let (_, metrics_text) = agent.get("/metrics").expect("scrape");
    let (status, stderr) = agent.stop();
    assert!(status.success(), "{stderr}");
    stop_child(cap);
    drop(server);

    assert!(stderr.contains("secret rotated"), "{stderr}");
    let exlog_text = std::fs::read_to_string(&exlog).expect("exchange log");
    let detlog_text = std::fs::read_to_string(&detlog).unwrap_or_default();
    assert_clean("/metrics", &metrics_text);
    assert_clean("the agent's log", &stderr);
    assert_clean("the exchange log", &exlog_text);
    assert_clean("the detection log", &detlog_text);
    // The scan above searched real events: raised ones, naming clients by their keys' hashes.
    let raised: Vec<Value> = detlog_text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["state"] == "raised")
        .collect();
    assert!(
        raised.iter().any(|e| e["entity"]["type"] == "api_key"),
        "no key raised with hair-trigger thresholds:\n{detlog_text}"
    );

    let records = exchanges(&exlog_text);
    assert_eq!(records.len(), 10, "one record per request:\n{exlog_text}");
    let mut names = BTreeSet::new();
    for r in &records {
        field_names(r, "", &mut names);
        assert_eq!(r["http"]["path"], "/v1/chat/completions", "no query string");
    }
    let extra: Vec<_> = names
        .iter()
        .filter(|n| !DOCUMENTED.contains(&n.as_str()))
        .collect();
    assert!(extra.is_empty(), "undocumented fields: {extra:?}");

    // Before the rotation: secret A only. After: B, with A alongside.
    let sent = [KEYS[0], KEYS[1], KEYS[0], BAD_KEY, KEYS[1]];
    let mut by_time = records.clone();
    by_time.sort_by_key(|r| r["request_start_ns"].as_u64());
    for (i, r) in by_time.iter().enumerate() {
        let key = sent[i % 5];
        let http = &r["http"];
        if i < 5 {
            assert_eq!(http["api_key_hash"], hash(SECRET_A, key), "{r}");
            assert!(http.get("api_key_hash_prev").is_none(), "{r}");
        } else {
            assert_eq!(http["api_key_hash"], hash(SECRET_B, key), "{r}");
            assert_eq!(http["api_key_hash_prev"], hash(SECRET_A, key), "{r}");
        }
    }

    // The same traffic through `siphon replay`. The capture does hold every key and marker,
    // so a clean replay output means they were dropped, not missed.
    let raw = std::fs::read(&capture).expect("capture");
    let raw = String::from_utf8_lossy(&raw);
    for n in KEYS
        .iter()
        .chain([&BAD_KEY, &QUERY_KEY])
        .chain(MARKERS.iter())
    {
        assert!(raw.contains(n), "{n} not in the capture");
    }
    let json = dir.join("replay.jsonl");
    let replay_metrics = dir.join("replay.prom");
    let out = std::process::Command::new(common::siphon::BIN)
        .args(["replay", "--quiet", "--json", &path(&json), "--metrics-out"])
        .arg(&replay_metrics)
        .args(["--key-hash-secret-file", &path(&secret)])
        .arg(&capture)
        .output()
        .expect("siphon replay");
    let replay_err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{replay_err}");
    let replay_text = std::fs::read_to_string(&json).expect("replay json");
    assert!(
        exchanges(&replay_text).len() >= 10,
        "replay saw the requests:\n{replay_text}"
    );
    assert_clean("replay JSON", &replay_text);
    assert_clean("replay's log", &replay_err);
    assert_clean(
        "replay metrics",
        &std::fs::read_to_string(&replay_metrics).expect("replay metrics"),
    );
    let _ = std::fs::remove_dir_all(&dir);
}
