//! `siphon replay <capture>`: every packet of a pcap/pcapng file through the same kernel program
//! with BPF_PROG_TEST_RUN, the capture's timestamps standing in for the clock, and the same
//! userspace pipeline as the live agent.

mod capture;
pub mod skb_ctx;

use std::{
    fs::File,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use agent_common::{names, TimeSource};
use anyhow::Context as _;
use aya::{
    maps::{MapData, RingBuf},
    programs::{SchedClassifier, TestRun as _, TestRunOptions},
};

use crate::{
    export::{
        capacity::CapacityMetrics,
        metrics::{BuildInfo, Metrics},
    },
    kernel::{
        maps,
        object::{self, LoadOptions},
    },
    pipeline::{assemble::DecodeConfig, Pipeline},
};

// `from_bytes` and the reader are public for the fuzz target (fuzz/): captures are outside bytes.
pub use capture::{from_bytes, CaptureError, CaptureReader, Frame};

/// What `siphon replay` needs besides the capture.
pub struct ReplayOptions {
    pub capture: PathBuf,
    /// `-` for stdout.
    pub json: Option<PathBuf>,
    pub metrics_out: Option<PathBuf>,
    pub decode: DecodeConfig,
    pub services: crate::pipeline::services::ServiceMap,
    pub head_capture_bytes: u32,
    pub progress: bool,
}

#[derive(Debug, Default)]
pub struct ReplaySummary {
    pub packets: u64,
    pub skipped: u64,
    pub exchanges: u64,
    pub hellos: u64,
    pub warning: Option<String>,
}

/// Largest frame BPF_PROG_TEST_RUN takes as linear skb data (a page minus headroom and
/// skb_shared_info). Longer frames are cut; the program then trusts the IP length in replay.
const MAX_TEST_RUN_FRAME: usize = 3_500;
/// Drain the ring buffer this often (each packet adds at most two records).
const DRAIN_EVERY: u64 = 512;

pub fn replay(opts: ReplayOptions) -> anyhow::Result<ReplaySummary> {
    let mut ebpf = object::load(LoadOptions {
        max_flows: 1 << 20,
        time_source: TimeSource::SkbTstamp,
        head_capture_bytes: opts.head_capture_bytes,
        ringbuf_bytes: 64 << 20,
    })?;
    let (counters, flow_maps) = maps::take_all(&mut ebpf)?;
    let mut ring = RingBuf::try_from(
        ebpf.take_map(names::MAP_EVENTS)
            .context("EVENTS map missing")?,
    )?;
    let metrics = Metrics::new(&BuildInfo {
        attach_mode: "replay",
        kernel: "",
    })?;
    let capacity = CapacityMetrics::new(metrics.registry(), opts.services.clone())?;
    let json: Option<Box<dyn Write + Send>> = match opts.json.as_deref() {
        None => None,
        Some(p) if p == Path::new("-") => Some(Box::new(BufWriter::new(std::io::stdout()))),
        Some(p) => Some(Box::new(BufWriter::new(
            File::create(p).with_context(|| format!("creating {}", p.display()))?,
        ))),
    };
    let mut pipeline = Pipeline::new(opts.decode, capacity, json)
        .with_wall_clock(crate::pipeline::WallClock::Unix);
    let program: &mut SchedClassifier = object::classifier(&mut ebpf, names::PROG_INGRESS)?;

    let mut reader = capture::open(&opts.capture)?;
    let total_bytes = std::fs::metadata(&opts.capture)
        .map(|m| m.len())
        .unwrap_or(0);
    let mut summary = ReplaySummary::default();
    let started = Instant::now();
    let mut last_progress = Instant::now();
    loop {
        let frame = match reader.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(CaptureError::Skip(reason)) => {
                summary.skipped += 1;
                tracing::debug!("skipping a packet: {reason}");
                continue;
            }
            Err(CaptureError::Fatal(e)) if summary.packets == 0 => {
                return Err(e).with_context(|| format!("reading {}", opts.capture.display()));
            }
            Err(CaptureError::Fatal(e)) => {
                // Keep what was read: finish the pipeline, then report.
                summary.warning = Some(format!(
                    "capture ended early after {} packets: {e:#}",
                    summary.packets
                ));
                break;
            }
        };
        summary.packets += 1;
        let mut data = frame.ethernet;
        data.truncate(MAX_TEST_RUN_FRAME);
        let ctx = skb_ctx::with_tstamp(frame.ts_ns);
        let run = program.test_run(TestRunOptions {
            data_in: Some(&data),
            ctx_in: Some(&ctx),
            ..TestRunOptions::new()
        });
        if let Err(e) = run {
            summary.skipped += 1;
            tracing::debug!("test_run rejected a {}-byte frame: {e}", data.len());
        }
        if summary.packets % DRAIN_EVERY == 0 {
            drain(&mut ring, &mut pipeline);
        }
        if opts.progress && last_progress.elapsed() >= Duration::from_secs(2) {
            last_progress = Instant::now();
            let done = reader.position();
            let pct = if total_bytes > 0 {
                done as f64 * 100.0 / total_bytes as f64
            } else {
                0.0
            };
            eprintln!(
                "replay: {} packets, {:.1}% of the file, {:.0} packets/s",
                summary.packets,
                pct,
                summary.packets as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    drain(&mut ring, &mut pipeline);
    // The capture ended: whatever exchange is still open ends here.
    for (key, st) in flow_maps.snapshot()? {
        pipeline.flow_ended(&key, &st, true);
    }
    drain(&mut ring, &mut pipeline);
    pipeline.flush().context("writing JSON output")?;
    summary.exchanges = pipeline.exchanges;
    summary.hellos = pipeline.hellos;

    if let Some(path) = &opts.metrics_out {
        let mut metrics = metrics;
        metrics.refresh_kernel(&counters, &|ifindex| format!("replay{ifindex}"))?;
        let text = metrics.encode(Instant::now())?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(summary)
}

fn drain(ring: &mut RingBuf<MapData>, pipeline: &mut Pipeline) {
    while let Some(item) = ring.next() {
        pipeline.on_record(&item);
    }
}
