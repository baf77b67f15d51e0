//! End to end, request level: the lab's OpenAI-compatible server in one namespace, real clients
//! (curl, also with a body large enough for `Expect: 100-continue`, the official `openai` Python
//! SDK, a raw pipelining client) in another, Siphon attached
//! on the server's side as a DaemonSet would be. The server's request log is the ground truth:
//! per request, the bytes it read and wrote, status and path. IPv4 and IPv6.

mod common;

use std::{
    collections::{BTreeMap, HashMap},
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    time::{Duration, Instant},
};

use common::{lab_server::Server, prom, siphon::Agent};
use serde_json::Value;
use siphon_testkit::{NetNs, Pair};

const KEYS: [&str; 2] = ["sk-lab-alpha-7f3c9e1d2b", "sk-lab-bravo-4a8e6c0f91"];
const PORT: u16 = 8000;

fn chat_body(stream: bool, max_tokens: u32) -> String {
    format!(
        r#"{{"model":"siphon-lab-1","stream":{stream},"max_tokens":{max_tokens},"messages":[{{"role":"user","content":"Tell me about eBPF please"}}]}}"#
    )
}

/// curl in `ns`: several POSTs on one keep-alive connection. Returns curl's per-transfer
/// (time_starttransfer - time_pretransfer): the client-side time to first byte.
fn curl_keepalive(ns: &NetNs, base: &str, key: &str, bodies: &[String]) -> Vec<f64> {
    let mut cmd = ns.command("curl");
    cmd.args(["-sS", "--max-time", "30", "-o", "/dev/null"]);
    for (i, body) in bodies.iter().enumerate() {
        if i > 0 {
            cmd.arg("--next").args(["-sS", "-o", "/dev/null"]);
        }
        cmd.args(["-w", "%{time_pretransfer} %{time_starttransfer}\n"])
            .args([
                "-H",
                &format!("Authorization: Bearer {key}"),
                "-H",
                "Content-Type: application/json",
            ])
            .args(["--data-binary", body])
            .arg(format!("{base}/v1/chat/completions"));
    }
    let out = cmd.output().expect("run curl");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Vec<f64> = l
                .split_whitespace()
                .map(|x| x.parse().expect("curl time"))
                .collect();
            v[1] - v[0]
        })
        .collect()
}

/// curl in `ns` with a request body over 1 MiB, which makes curl send `Expect: 100-continue`
/// and wait for the server's `100 Continue` before the body: one request, four turns.
fn curl_expect_continue(ns: &NetNs, base: &str, key: &str, dir: &Path) {
    let prompt = "eBPF ".repeat((1 << 20) / 5 + 1000);
    let body = format!(
        r#"{{"model":"siphon-lab-1","stream":false,"max_tokens":8,"messages":[{{"role":"user","content":"{prompt}"}}]}}"#
    );
    let file = dir.join("large-body.json");
    std::fs::write(&file, body).expect("write body");
    let out = ns
        .command("curl")
        .args(["-sS", "--max-time", "30", "-o", "/dev/null", "-v"])
        .args([
            "-H",
            &format!("Authorization: Bearer {key}"),
            "-H",
            "Content-Type: application/json",
        ])
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg(format!("{base}/v1/chat/completions"))
        .output()
        .expect("run curl");
    let trace = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "curl failed: {trace}");
    assert!(
        trace.contains("Expect: 100-continue") && trace.contains("HTTP/1.1 100 Continue"),
        "curl did not go through 100-continue: {trace}"
    );
}

/// The official openai SDK in `ns`: two plain and two streaming chat completions on one client
/// (keep-alive pool), plus a models list.
fn openai_sdk(ns: &NetNs, base: &str, key: &str) {
    let script = format!(
        r#"
import openai
c = openai.OpenAI(base_url="{base}/v1", api_key="{key}", max_retries=0, timeout=30)
for _ in range(2):
    r = c.chat.completions.create(model="siphon-lab-1", max_tokens=20, messages=[{{"role": "user", "content": "hi"}}])
    assert r.choices[0].message.content
for _ in range(2):
    n = 0
    for chunk in c.chat.completions.create(model="siphon-lab-1", max_tokens=30, stream=True, messages=[{{"role": "user", "content": "stream"}}]):
        n += 1
    assert n > 0
c.models.list()
"#
    );
    let out = ns
        .command("python3")
        .args(["-c", &script])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "openai client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two GETs written together before reading anything, then both responses read.
fn pipelined_pair(ns: &NetNs, server: SocketAddr, key: &str) {
    let key = key.to_owned();
    ns.run(move || {
        let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(10)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let req =
            format!("GET /v1/models HTTP/1.1\r\nHost: lab\r\nAuthorization: Bearer {key}\r\n\r\n");
        s.write_all(format!("{req}{req}").as_bytes())
            .expect("write pair");
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        // Read until two complete responses (Content-Length framed) are in.
        let deadline = Instant::now() + Duration::from_secs(10);
        while complete_responses(&got) < 2 {
            assert!(Instant::now() < deadline, "pipelined responses incomplete");
            let n = s.read(&mut buf).expect("read");
            assert!(n > 0, "server closed early");
            got.extend_from_slice(&buf[..n]);
        }
    })
    .expect("a thread in the test namespace");
}

fn complete_responses(mut b: &[u8]) -> usize {
    let mut n = 0;
    while let Some(end) = b.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&b[..end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().expect("len"))
            .unwrap_or(0);
        if b.len() < end + 4 + len {
            break;
        }
        b = &b[end + 4 + len..];
        n += 1;
    }
    n
}

/// Siphon's exchange log lines for `server` port.
fn exchanges(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("exchange log line"))
        .filter(|v| {
            v["record"] == "exchange"
                && v["server"]
                    .as_str()
                    .is_some_and(|s| s.ends_with(&format!(":{PORT}")))
        })
        .collect()
}

#[test]
#[ignore = "privileged: network namespaces and eBPF; run with `cargo xtask test`"]
fn requests_match_the_server_log() {
    let pair = Pair::new(21).expect("a veth pair between two test namespaces");
    let dir = std::env::temp_dir().join(format!("siphon-e2e-http-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let server = Server::start(&pair.b, &dir, &KEYS, PORT);
    let exlog = dir.join("exchanges.jsonl");
    let secret = "e2e-secret-0123456789abcdef";
    std::env::set_var("SIPHON_KEY_HASH_SECRET", secret);
    let mut agent = Agent::start(
        &pair.b,
        19_960,
        &[
            "--iface",
            &pair.dev_b,
            "--service",
            &format!("llm=:{PORT}"),
            "--exchange-log",
            exlog.to_str().expect("utf8 path"),
            "--sweep-interval",
            "500ms",
            "--exchange-idle-timeout",
            "2s",
        ],
    );

    let base4 = format!("http://{}:{PORT}", pair.v4_b);
    let base6 = format!("http://[{}]:{PORT}", pair.v6_b);
    let mut client_ttfb = Vec::new();
    client_ttfb.extend(curl_keepalive(
        &pair.a,
        &base4,
        KEYS[0],
        &[
            chat_body(false, 16),
            chat_body(true, 40),
            chat_body(false, 64),
        ],
    ));
    client_ttfb.extend(curl_keepalive(
        &pair.a,
        &base6,
        KEYS[1],
        &[chat_body(true, 25), chat_body(false, 8)],
    ));
    openai_sdk(&pair.a, &base4, KEYS[1]);
    openai_sdk(&pair.a, &base6, KEYS[0]);
    curl_expect_continue(&pair.a, &base4, KEYS[0], &dir);
    pipelined_pair(
        &pair.a,
        format!("{}:{PORT}", pair.v4_b).parse().expect("addr"),
        KEYS[0],
    );
    pipelined_pair(
        &pair.a,
        format!("[{}]:{PORT}", pair.v6_b).parse().expect("addr"),
        KEYS[1],
    );
    // A bad key: 401.
    let out = pair
        .a
        .command("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "Authorization: Bearer nope",
        ])
        .arg(format!("{base4}/v1/models"))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "401");

    // Every connection closed; wait until Siphon has reported as many exchanges as the server
    // logged requests (FIN, or the idle sweep).
    let truth = server.entries();
    assert!(truth.len() >= 20, "server logged {} requests", truth.len());
    let deadline = Instant::now() + Duration::from_secs(20);
    while exchanges(&exlog).len() < truth.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let seen = exchanges(&exlog);
    eprintln!(
        "server logged {} requests on {} connections; siphon reported {} exchanges",
        truth.len(),
        truth
            .iter()
            .map(|t| t["conn_id"].as_u64())
            .collect::<std::collections::HashSet<_>>()
            .len(),
        seen.len()
    );

    // Pair them up per connection (client port), in order.
    let mut by_conn_truth: BTreeMap<u64, Vec<&Value>> = BTreeMap::new();
    for t in &truth {
        by_conn_truth
            .entry(t["peer_port"].as_u64().expect("peer_port"))
            .or_default()
            .push(t);
    }
    let mut by_conn_seen: BTreeMap<u64, Vec<&Value>> = BTreeMap::new();
    for s in &seen {
        let client: SocketAddr = s["client"].as_str().expect("client").parse().expect("addr");
        by_conn_seen
            .entry(client.port() as u64)
            .or_default()
            .push(s);
    }
    for v in by_conn_seen.values_mut() {
        v.sort_by_key(|s| (s["seq"].as_u64(), s["part"].as_u64()));
    }
    for v in by_conn_truth.values_mut() {
        v.sort_by_key(|t| t["seq"].as_u64());
    }
    assert_eq!(
        seen.len(),
        truth.len(),
        "one exchange per logged request\nseen: {seen:#?}\ntruth: {truth:#?}"
    );
    for (port, t_list) in &by_conn_truth {
        let s_list = by_conn_seen
            .get(port)
            .unwrap_or_else(|| panic!("no exchanges for client port {port}"));
        assert_eq!(
            s_list.len(),
            t_list.len(),
            "requests on connection from port {port}"
        );
        for (s, t) in s_list.iter().zip(t_list) {
            let ctx = format!("port {port} seq {}: siphon {s} vs server {t}", t["seq"]);
            assert_eq!(
                s["request_bytes"].as_u64(),
                t["request_bytes"].as_u64(),
                "request bytes, {ctx}"
            );
            assert_eq!(
                s["response_bytes"].as_u64(),
                t["response_bytes"].as_u64(),
                "response bytes, {ctx}"
            );
            assert_eq!(
                s["http"]["status"].as_u64(),
                t["status"].as_u64(),
                "status, {ctx}"
            );
            assert_eq!(
                s["http"]["path"].as_str(),
                t["path"].as_str(),
                "path, {ctx}"
            );
            let key_hashed = s["http"]["api_key_hash"].as_str().is_some();
            assert_eq!(
                key_hashed,
                t["key_id"].is_number() || t["status"] == 401,
                "key seen, {ctx}"
            );
        }
    }

    // Time to first byte: Siphon, at the server, against curl's own measurement at the client.
    // They differ by one round trip in the namespaces plus scheduling: bound 15 ms.
    let mut siphon_ttfb: Vec<f64> = by_conn_seen
        .values()
        .flatten()
        .filter(|s| {
            s["http"]["user_agent_family"] == "curl"
                && s["http"]["route"] == "/v1/chat/completions"
                // Not the 100-continue upload: curl's own figure includes sending the body.
                && s["request_bytes"].as_u64() < Some(1 << 20)
        })
        .map(|s| s["ttfb_seconds"].as_f64().expect("ttfb"))
        .collect();
    siphon_ttfb.sort_by(f64::total_cmp);
    client_ttfb.sort_by(f64::total_cmp);
    assert_eq!(siphon_ttfb.len(), client_ttfb.len(), "curl requests");
    eprintln!("TTFB siphon {siphon_ttfb:.4?} curl {client_ttfb:.4?}");
    for (s, c) in siphon_ttfb.iter().zip(&client_ttfb) {
        assert!((s - c).abs() < 0.015, "TTFB siphon {s:.4}s vs curl {c:.4}s");
        assert!(
            *s >= 0.040,
            "TTFB below the server's first-token delay: {s}"
        );
    }

    // Metrics: counts per route and status class equal the log's; byte sums equal.
    let m = agent.metrics();
    let mut want: HashMap<(String, String), u64> = HashMap::new();
    for t in &truth {
        let route = match t["path"].as_str().unwrap_or("") {
            "/v1/chat/completions" => "/v1/chat/completions",
            "/v1/models" => "/v1/models",
            p => panic!("unexpected path {p}"),
        };
        let class = format!("{}xx", t["status"].as_u64().expect("status") / 100);
        *want.entry((route.to_owned(), class)).or_default() += 1;
    }
    for ((route, class), n) in &want {
        let got: f64 = ["GET", "POST"]
            .iter()
            .filter_map(|method| {
                prom::value(
                    &m,
                    "siphon_requests_total",
                    &[
                        ("service", "llm"),
                        ("method", method),
                        ("route", route),
                        ("status_class", class),
                    ],
                )
            })
            .sum();
        assert_eq!(
            got as u64, *n,
            "siphon_requests_total route={route} status_class={class}"
        );
    }
    let sum = |k: &str| {
        truth
            .iter()
            .map(|t| t[k].as_u64().expect("bytes"))
            .sum::<u64>() as f64
    };
    assert_eq!(
        prom::value(&m, "siphon_request_size_bytes_sum", &[("service", "llm")]),
        Some(sum("request_bytes"))
    );
    assert_eq!(
        prom::value(&m, "siphon_response_size_bytes_sum", &[("service", "llm")]),
        Some(sum("response_bytes"))
    );

    // No raw key anywhere we write.
    let (status, stderr) = agent.stop();
    assert!(status.success(), "{stderr}");
    let metrics_text = format!("{m:?}");
    let exlog_text = std::fs::read_to_string(&exlog).expect("exchange log");
    for key in KEYS {
        assert!(!metrics_text.contains(key), "key in /metrics");
        assert!(!exlog_text.contains(key), "key in the exchange log");
        assert!(!stderr.contains(key), "key in Siphon's log");
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
