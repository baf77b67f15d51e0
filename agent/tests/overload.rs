//! Overload: more flows than the kernel table holds, a ring-buffer burst, hung and concurrent
//! scrapers, an exchange log on a full disk, and SIGTERM while requests flow. Ground truth from
//! outside the agent: `ip -s link` counters, what the test's server answered, the kernel's
//! list of programs and pins, the agent's own /proc entries.

mod common;

use std::{
    collections::{HashMap, HashSet},
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use common::{
    bpffs::BpfFs,
    load::{minus, ping_pong, quiet_reading, udp_flows, Server},
    prom,
    siphon::{http_get, Agent},
};
use siphon_testkit::Pair;

fn value(m: &HashMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> u64 {
    prom::value(m, name, labels).unwrap_or(0.0) as u64
}

/// Sum of every series of `name` (any labels).
fn sum(m: &HashMap<String, f64>, name: &str) -> u64 {
    m.iter()
        .filter(|(s, _)| s.as_str() == name || s.starts_with(&format!("{name}{{")))
        .map(|(_, v)| *v as u64)
        .sum()
}

#[test]
#[ignore = "privileged: network namespaces and eBPF; run with `cargo xtask test`"]
fn flows_beyond_the_table_are_counted_and_the_agent_stays_responsive() {
    const FLOWS: u16 = 20_000;
    let pair = Pair::new(33).expect("a veth pair between two test namespaces");
    let port = 19_970;
    let agent = Agent::start(
        &pair.a,
        port,
        &[
            "--iface",
            &pair.dev_a,
            "--max-flows",
            "1024",
            "--sweep-interval",
            "300ms",
        ],
    );
    let (agent0, kernel0) = quiet_reading(&agent, &pair.a, &pair.dev_a);
    let watched = [
        "siphon_flows_created_total",
        "siphon_interface_packets_total",
    ];
    let done = AtomicBool::new(false);
    let (sent, scrapes) = std::thread::scope(|s| {
        // Scrapes during the flood: each answered in time, every counter monotonic.
        let scraper = s.spawn(|| {
            let mut last: HashMap<String, f64> = HashMap::new();
            let mut n = 0;
            let deadline = Instant::now() + Duration::from_secs(30);
            while !done.load(Ordering::Relaxed) && Instant::now() < deadline {
                let t = Instant::now();
                let m = agent.metrics();
                assert!(
                    t.elapsed() < Duration::from_secs(2),
                    "scrape took {:?}",
                    t.elapsed()
                );
                for (series, v) in &m {
                    let counter =
                        series.contains("_total") || watched.iter().any(|w| series.starts_with(w));
                    if let (true, Some(prev)) = (counter, last.get(series)) {
                        assert!(v >= prev, "{series} went backwards: {prev} -> {v}");
                    }
                }
                last = m;
                n += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            n
        });
        let host = pair.v4_b.clone();
        let sent = pair
            .a
            .run(move || udp_flows(&host, 10_000..10_000 + FLOWS))
            .expect("a thread in the test namespace");
        // Two sweeps to see the end of the flood.
        std::thread::sleep(Duration::from_millis(900));
        done.store(true, Ordering::Relaxed);
        (sent, scraper.join().expect("scraper"))
    });
    let (agent1, kernel1) = quiet_reading(&agent, &pair.a, &pair.dev_a);
    assert_eq!(
        minus(agent1, agent0),
        minus(kernel1, kernel0),
        "interface totals stay exact while the flow table overflows"
    );
    let m = agent.metrics();
    let created = value(&m, "siphon_flows_created_total", &[]);
    let lru = value(&m, "siphon_flows_evicted_total", &[("reason", "lru")]);
    let active = value(&m, "siphon_flows_active", &[]);
    assert!(sent == u64::from(FLOWS), "sent {sent}");
    assert!(created >= sent, "every flow created: {created} < {sent}");
    assert!(active <= 1024, "the table holds at most 1024: {active}");
    assert!(
        lru + active + 16 >= created,
        "evictions counted: {lru} evicted + {active} active vs {created} created"
    );
    eprintln!(
        "overload: {sent} flows through a 1024-entry table: {created} created, {lru} LRU \
         evictions counted, {active} active, {scrapes} scrapes answered during the flood"
    );
}

#[test]
#[ignore = "privileged: network namespaces and eBPF; run with `cargo xtask test`"]
fn a_ring_burst_counts_its_losses_and_a_full_disk_log_keeps_exporting() {
    let pair = Pair::new(34).expect("a veth pair between two test namespaces");
    let server = Server::start(
        &pair.b,
        format!("{}:8000", pair.v4_b).parse().expect("addr"),
    );
    let port = 19_971;
    // The smallest ring (64 KiB) and a log on a device that is always full.
    let agent = Agent::start(
        &pair.a,
        port,
        &[
            "--iface",
            &pair.dev_a,
            "--ringbuf-bytes",
            "65536",
            "--exchange-log",
            "/dev/full",
            "--exchange-idle-timeout",
            "500ms",
            "--sweep-interval",
            "300ms",
        ],
    );
    let (agent0, kernel0) = quiet_reading(&agent, &pair.a, &pair.dev_a);
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let (requests, healthz) = std::thread::scope(|s| {
        let clients: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    pair.a.enter().expect("enter");
                    ping_pong(
                        server.addr,
                        &stop,
                        1_000_000,
                        Duration::from_millis(1500),
                        Duration::ZERO,
                    )
                    .1
                })
            })
            .collect();
        // /healthz during the burst: nothing in the agent blocks on the ring.
        let mut slow = Duration::ZERO;
        for _ in 0..10 {
            let t = Instant::now();
            assert_eq!(agent.get("/healthz").map(|r| r.0), Some(200));
            slow = slow.max(t.elapsed());
            std::thread::sleep(Duration::from_millis(100));
        }
        let n: u32 = clients.into_iter().map(|c| c.join().expect("client")).sum();
        stop.store(true, Ordering::Relaxed);
        (n, slow)
    });
    let burst = started.elapsed();
    let (agent1, kernel1) = quiet_reading(&agent, &pair.a, &pair.dev_a);
    assert_eq!(
        minus(agent1, agent0),
        minus(kernel1, kernel0),
        "every packet counted on the interface even as records were lost"
    );
    assert_eq!(
        server.answered().len() as u32,
        requests,
        "the server answered each"
    );
    std::thread::sleep(Duration::from_millis(1500));
    let m = agent.metrics();
    let lost = value(
        &m,
        "siphon_kernel_lost_total",
        &[("reason", "ringbuf_full")],
    );
    let reported = sum(&m, "siphon_requests_total");
    let errors = value(&m, "siphon_log_write_errors_total", &[("log", "exchange")]);
    let dropped = value(&m, "siphon_log_lines_dropped_total", &[("log", "exchange")]);
    assert!(
        lost > 0,
        "a 64 KiB ring overflows under {requests} requests: losses counted"
    );
    assert!(
        reported > 0 && reported <= u64::from(requests),
        "{reported} of {requests}"
    );
    assert!(
        errors > 0 && dropped > 0,
        "log failures counted: {errors} writes, {dropped} lines"
    );
    assert!(
        healthz < Duration::from_secs(1),
        "healthz answered within {healthz:?}"
    );
    let mut agent = agent;
    let (status, log) = agent.stop();
    assert!(status.success(), "exit 0 after SIGTERM: {log}");
    let reports = log.matches("writing the exchange log failed").count();
    let allowed = 1 + (started.elapsed().as_secs() / 10) as usize;
    assert!(
        (1..=allowed).contains(&reports),
        "the failure is logged once per 10 s, not per write: {reports} lines"
    );
    eprintln!(
        "overload: ring burst of {requests} requests in {burst:?} through a 64 KiB ring: \
         {lost} records lost (counted), {reported} requests reported; log on a full disk: \
         {errors} failed writes, {dropped} lines dropped, {reports} error line(s)"
    );
}

#[test]
#[ignore = "privileged: network namespaces and eBPF; run with `cargo xtask test`"]
fn hung_and_concurrent_scrapers_leave_other_scrapes_answered() {
    const HUNG: usize = 200;
    const OVER: usize = 100;
    let pair = Pair::new(35).expect("a veth pair between two test namespaces");
    let port = 19_972;
    let agent = Agent::start(&pair.a, port, &["--iface", &pair.dev_a]);
    let rss0 = agent.rss_kib();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    // More hung clients than the agent serves at once: half stop mid-request, half ask for
    // /metrics and never read the answer.
    let hung: Vec<TcpStream> = pair
        .a
        .run(move || {
            (0..HUNG)
                .map(|i| {
                    let mut c = TcpStream::connect(addr).expect("connect");
                    let head: &[u8] = if i % 2 == 0 {
                        b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
                    } else {
                        b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
                    };
                    c.write_all(head).expect("write");
                    c
                })
                .collect()
        })
        .expect("a thread in the test namespace");
    std::thread::sleep(Duration::from_millis(300));
    let sockets = agent.open_sockets();
    let times: Vec<Duration> = std::thread::scope(|s| {
        let scrapers: Vec<_> = (0..20)
            .map(|_| {
                s.spawn(|| {
                    pair.a.enter().expect("enter");
                    let t = Instant::now();
                    let r = http_get(port, "/metrics");
                    assert_eq!(r.map(|r| r.0), Some(200), "scrape answered");
                    t.elapsed()
                })
            })
            .collect();
        scrapers
            .into_iter()
            .map(|h| h.join().expect("scraper"))
            .collect()
    });
    let slowest = times.iter().max().copied().unwrap_or_default();
    // Past the bound, connections wait in the backlog instead of costing the agent anything.
    let more: Vec<TcpStream> = pair
        .a
        .run(move || {
            (0..OVER)
                .map(|_| TcpStream::connect(addr).expect("connect"))
                .collect()
        })
        .expect("a thread in the test namespace");
    std::thread::sleep(Duration::from_millis(300));
    let bounded = agent.open_sockets();
    assert!(
        bounded <= 256 + 8,
        "connections held at once are bounded: {bounded} sockets with {} clients",
        HUNG + OVER
    );
    drop(more);
    let rss1 = agent.rss_kib();
    // The hung connections are closed by the agent, not by us.
    let mut closed = 0;
    for mut c in hung {
        c.set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        let mut sink = Vec::new();
        let timed_out = |e: &std::io::Error| {
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            )
        };
        if c.read_to_end(&mut sink)
            .map_or_else(|e| !timed_out(&e), |_| true)
        {
            closed += 1;
        }
    }
    assert!(
        slowest < Duration::from_secs(2),
        "every scrape answered beside {HUNG} hung clients: {slowest:?}"
    );
    assert!(
        rss1 < rss0 + 32 * 1024,
        "memory bounded: {rss0} KiB -> {rss1} KiB"
    );
    assert_eq!(closed, HUNG, "hung connections closed by the agent");
    eprintln!(
        "overload: {HUNG} hung connections + 20 concurrent scrapes: {sockets} sockets held, \
         slowest scrape {slowest:?}; {} clients: {bounded} sockets; RSS {rss0} -> {rss1} KiB",
        HUNG + OVER
    );
}

#[test]
#[ignore = "privileged: network namespaces, bpffs and eBPF; run with `cargo xtask test`"]
fn sigterm_under_load_flushes_the_log_and_detaches() {
    let pair = Pair::new(36).expect("a veth pair between two test namespaces");
    let fs = BpfFs::mount("sigterm");
    let server = Server::start(
        &pair.b,
        format!("{}:8000", pair.v4_b).parse().expect("addr"),
    );
    let dir = std::env::temp_dir().join(format!("siphon-sigterm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let log_path = dir.join("exchanges.jsonl");
    let port = 19_973;
    let mut agent = Agent::start(
        &pair.a,
        port,
        &[
            "--iface",
            &pair.dev_a,
            "--exchange-log",
            &log_path.to_string_lossy(),
            "--ringbuf-bytes",
            "8388608",
            "--pin-path",
            &fs.base().to_string_lossy(),
        ],
    );
    let stop = AtomicBool::new(false);
    let (term_at, exit) = std::thread::scope(|s| {
        let clients: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    pair.a.enter().expect("enter");
                    // About 1,000 requests/s each: a busy service, within what the agent
                    // keeps up with (the burst test above is the overload).
                    ping_pong(
                        server.addr,
                        &stop,
                        1_000_000,
                        Duration::from_secs(20),
                        Duration::from_millis(1),
                    )
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(1500));
        let term_at = Instant::now();
        let exit = agent.stop();
        // The load runs on past the exit; then it stops.
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.join().expect("client");
        }
        (term_at, exit)
    });
    let (status, stderr) = exit;
    assert!(
        status.success(),
        "exit 0 after SIGTERM under load: {stderr}"
    );
    let text = std::fs::read_to_string(&log_path).expect("exchange log");
    let _ = std::fs::remove_dir_all(&dir);
    let mut logged: HashSet<(u16, u64)> = HashSet::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("every line whole JSON");
        if v["record"] != "exchange" {
            continue;
        }
        let client: SocketAddr = v["client"].as_str().expect("client").parse().expect("addr");
        logged.insert((client.port(), v["seq"].as_u64().expect("seq")));
    }
    let before: Vec<_> = server
        .answered()
        .into_iter()
        .filter(|a| a.at < term_at)
        .collect();
    assert!(before.len() > 100, "load before SIGTERM: {}", before.len());
    let missing: Vec<_> = before
        .iter()
        // Both count from 1 on each connection.
        .filter(|a| !logged.contains(&(a.client_port, u64::from(a.n))))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} requests answered before SIGTERM are not in the exchange log, e.g. {:?}",
        missing.len(),
        before.len(),
        missing.first()
    );
    let dev = pair.dev_a.clone();
    let attached = pair
        .a
        .run(move || {
            [
                aya::programs::TcAttachType::Ingress,
                aya::programs::TcAttachType::Egress,
            ]
            .into_iter()
            .map(|t| {
                aya::programs::SchedClassifier::query_tcx(&dev, t)
                    .expect("query tcx")
                    .1
                    .len()
            })
            .sum::<usize>()
        })
        .expect("a thread in the test namespace");
    assert_eq!(attached, 0, "no tcx program left");
    assert!(
        fs.pins().iter().all(|p| !p.contains("/links/")),
        "no link pin left: {:?}",
        fs.pins()
    );
    eprintln!(
        "overload: SIGTERM under load: {} requests answered before it, all {} in the exchange log",
        before.len(),
        before.len()
    );
}
