//! `/metrics` render time and size, and resident memory, at 1k, 10k and 100k tracked clients.
//!
//! Each size runs in a child process of its own (`siphon-bench --scale-child N`), so its
//! resident memory is what that detector holds, not what an earlier, larger one left in the
//! allocator. The child feeds N clients (a key and an address each, 2 requests, 5 client
//! stacks) into a detector allowed N entities per type, then times the detector's part of
//! `/metrics` as the agent serves it: `DetectorMetrics::update` (which walks every entity) and
//! the text encoding of the registry. Memory is VmRSS after the feed less VmRSS before it,
//! held to the README's formula: at most 8 KiB per tracked entity (`typical` 2.6 KiB).

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    process::Command,
    time::Instant,
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use siphon_agent::detect::{
    config::Config,
    entity::EntityType,
    export::DetectorMetrics,
    input::{HttpObs, Observation, Transport},
    Detector,
};

use super::Figure;

pub(crate) const SIZES: [usize; 3] = [1_000, 10_000, 100_000];
/// `/metrics` at 10k entities.
const TARGET_RENDER_MS_10K: f64 = 50.0;
/// The README's bound per tracked entity, and its typical figure.
const BOUND_BYTES_PER_ENTITY: f64 = 8.0 * 1024.0;
const TYPICAL_BYTES_PER_ENTITY: f64 = 2.6 * 1024.0;

#[derive(Serialize, Deserialize)]
pub(crate) struct ChildResult {
    clients: usize,
    entities: usize,
    render_ms: Vec<f64>,
    metrics_bytes: usize,
    rss_bytes: u64,
    estimate_bytes: usize,
}

pub(crate) fn measure(runs: u32) -> anyhow::Result<Vec<Figure>> {
    let exe = std::env::current_exe().context("locating siphon-bench")?;
    let mut figures = Vec::new();
    for n in SIZES {
        eprintln!("userspace: {n} clients in a child process");
        let out = Command::new(&exe)
            .args(["--scale-child", &n.to_string(), "--runs", &runs.to_string()])
            .output()
            .context("running the scale child")?;
        anyhow::ensure!(
            out.status.success(),
            "scale child for {n} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r: ChildResult =
            serde_json::from_slice(&out.stdout).context("parsing the scale child's result")?;
        let mut ms = r.render_ms.clone();
        let render = Figure::new(
            format!("/metrics render (detector part), {n} clients"),
            "ms",
            &mut ms,
        )
        .note(format!(
            "{} entities, {} KiB of text",
            r.entities,
            r.metrics_bytes >> 10
        ));
        figures.push(if n == 10_000 {
            let met = render.value.median <= TARGET_RENDER_MS_10K;
            render.target(format!("<= {TARGET_RENDER_MS_10K:.0}"), met)
        } else {
            render
        });
        let per_entity = r.rss_bytes as f64 / r.entities.max(1) as f64;
        let bound = BOUND_BYTES_PER_ENTITY * r.entities as f64;
        figures.push(
            Figure::new(
                format!("resident memory, {n} clients"),
                "MiB",
                &mut [r.rss_bytes as f64 / (1 << 20) as f64],
            )
            .note(format!(
                "{} entities, {per_entity:.0} B each; formula: typical {:.1} MiB, bound {:.1} MiB; \
                 the detector's estimate {:.1} MiB",
                r.entities,
                TYPICAL_BYTES_PER_ENTITY * r.entities as f64 / (1 << 20) as f64,
                bound / (1 << 20) as f64,
                r.estimate_bytes as f64 / (1 << 20) as f64
            ))
            .target(
                format!("<= {:.0} B/entity", BOUND_BYTES_PER_ENTITY),
                (r.rss_bytes as f64) <= bound,
            ),
        );
    }
    Ok(figures)
}

/// The child: prints one [`ChildResult`] as JSON on stdout.
pub(crate) fn child(clients: usize, runs: u32) -> anyhow::Result<()> {
    let cfg = Config {
        max_entities_per_type: clients.max(16),
        ..Config::default()
    };
    let before = rss_bytes()?;
    let mut det = Detector::new(cfg)?;
    det.log_events = false;
    let t0: u64 = 1_767_225_600_000_000_000;
    let stacks = [
        "t13d1516h2_8daaf6152771_02713d6af862",
        "t13d1517h2_8daaf6152771_b6f405a00624",
        "t13d311100_e8f1e7e78f70_d339722ba4af",
        "t12d190800_d83cc789557e_7af1ed941c26",
        "t13d4907h2_0d8feac7bc37_7395dae3b2f3",
    ];
    for round in 0..2u64 {
        for c in 0..clients {
            // Every client within the first minute, so all are in every window.
            let start = t0 + round * 30_000_000_000 + (c as u64 * 25_000_000_000) / clients as u64;
            let [_, a, b, d] = (c as u32).to_be_bytes();
            let ip = IpAddr::V4(Ipv4Addr::new(10, 64 | (a & 0x3f), b, d));
            det.observe(Observation {
                start_ns: start,
                end_ns: start + 2_000_000_000,
                peer: SocketAddr::new(ip, 40_000),
                server: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 8000),
                seq: round as u32 + 1,
                request_bytes: 1_500,
                response_bytes: 20_000,
                streamed_chunks: 120,
                http: Some(HttpObs {
                    api_key_hash: Some(format!("{c:032x}")),
                    api_key_hash_prev: None,
                    client_ip: ip,
                    claimed_origins: 0,
                    status: Some(200),
                    event_stream: true,
                    user_agent_family: "python".into(),
                }),
                transport: Transport {
                    ja4: Some(stacks[c % stacks.len()].into()),
                    ja4t: Some("64240_2-4-8-1-3_1460_10".into()),
                    tcp_rtt_seconds: Some(0.010),
                    tls_rtt_seconds: Some(0.011),
                },
            });
        }
    }
    det.finish();
    let rss = rss_bytes()?.saturating_sub(before);
    let entities = EntityType::TRACKED
        .iter()
        .filter_map(|ty| det.table(*ty))
        .map(|t| t.map.len())
        .sum();
    let registry = prometheus::Registry::new();
    let mut metrics = DetectorMetrics::new(&registry)?;
    let mut render_ms = Vec::new();
    let mut metrics_bytes = 0;
    for _ in 0..runs {
        let started = Instant::now();
        metrics.update(&det);
        let text = prometheus::TextEncoder::new().encode_to_string(&registry.gather())?;
        render_ms.push(started.elapsed().as_secs_f64() * 1e3);
        metrics_bytes = text.len();
    }
    let result = ChildResult {
        clients,
        entities,
        render_ms,
        metrics_bytes,
        rss_bytes: rss,
        estimate_bytes: det.memory_bytes,
    };
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

/// This process's resident memory (VmRSS).
fn rss_bytes() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status").context("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .context("no VmRSS in /proc/self/status")
}
