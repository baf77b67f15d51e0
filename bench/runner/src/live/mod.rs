//! Live cross-check: the same programs on real TCP traffic, timed by the kernel.
//!
//! BPF_PROG_TEST_RUN times one frame at a time, and the paths that change a flow's state can
//! only be timed one repetition per call (see main.rs). Here Siphon and the two baselines are
//! attached together with tcx to both directions of the server end of a veth pair, in network
//! namespaces this run creates, and a TCP client and server exchange traffic through it. With
//! run-time statistics on (BPF_ENABLE_STATS) the kernel adds up each program's run time and run
//! count, so every program is timed on the very same packets, with the caches and timing the
//! stack leaves them. A program's own cost is its mean minus the floor's mean (the statistics'
//! clock reads and the dispatch). These figures are not held to the targets, which are set on
//! test_run's scale; they show what the same paths cost in place, next to the LRU counter's.
//!
//! Two connections, each built so that one path dominates on each side:
//! - **ping-pong**: the client writes a 1 KiB HTTP request (one segment) and reads a one-segment
//!   response, [`REQUESTS`] times. Server ingress: request starts with head capture (the client's
//!   ACKs ride on its next request); server egress: response starts (first byte, status-line
//!   capture), carrying the server's ACKs.
//! - **stream**: one request, then a [`STREAM_BYTES`] response. Server egress: data segments in
//!   the middle of a response; server ingress: the client's ACKs.
//!
//! Offloads are off on both veth ends, so received segments are not merged (GRO). Sent data
//! still reaches the egress hook as GSO packets of several segments, as it reaches a NIC's
//! with TSO: TCP segments after the hook. Run counts are printed beside the figures to show
//! the mix; the records Siphon emitted are counted, and every loop and socket operation is
//! bounded.

mod net;
pub(crate) mod traffic;

use std::{
    net::{Ipv4Addr, SocketAddrV4, TcpListener},
    os::fd::AsRawFd as _,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::Duration,
};

use agent_common::{names, payload_what, record_kind, CounterKind, KernelCounter};
use anyhow::Context as _;
use aya::{
    maps::{MapData, RingBuf},
    sys::{enable_stats, Stats},
    Ebpf,
};
use siphon_agent::kernel::maps as kernel_maps;

use self::{
    net::{Programs, Snapshot, Stat, Topology},
    traffic::{accept, ping_pong, serve_ping_pong, serve_stream, stream, unpin},
};
use crate::report::{LiveRow, Row as TestRunRow, TARGET_LIVE_RATIO};

/// Requests on the ping-pong connection. Each leaves two ring-buffer records (request head,
/// response head); a reader drains them while traffic runs.
pub(crate) const REQUESTS: usize = 1000;
pub(crate) const REQUEST_BYTES: usize = 1024;
pub(crate) const RESPONSE_BYTES: usize = 128;
/// The streamed response: ~23 000 segments of 1448 bytes.
pub(crate) const STREAM_BYTES: usize = 32 << 20;
pub(crate) const WRITE_CHUNK: usize = 16 << 10;
/// No socket operation waits longer than this; a stuck run fails instead of hanging.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(20);
pub(crate) const SERVER: Ipv4Addr = Ipv4Addr::new(10, 251, 79, 1);
pub(crate) const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 251, 79, 2);
pub(crate) const PORT: u16 = 8000;
/// The reader's poll timeout when no wakeup comes, the agent's.
const DRAIN_POLL: Duration = siphon_agent::kernel::object::READ_POLL;

/// Figures of one scenario on one hook.
struct Row {
    label: &'static str,
    /// The test_run scenario whose path dominates this hook.
    test_run: &'static str,
    /// Held to TARGET_LIVE_RATIO (the capture paths).
    held: bool,
    runs: u64,
    floor: f64,
    lru: f64,
    siphon: f64,
}

/// Runs both connections; each hook's figures next to its dominant path's test_run figure
/// (`rows`, net of `batch_floor`).
pub fn cross_check(
    test_run: &[TestRunRow],
    batch_floor: f64,
    head_capture_bytes: u32,
) -> anyhow::Result<Vec<LiveRow>> {
    let topology = Topology::create()?;
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (rows, records) = thread::scope(|s| -> anyhow::Result<_> {
        let server = s.spawn(|| serve(&topology, ready_tx, head_capture_bytes));
        let topology = &topology;
        let client = s.spawn(move || -> anyhow::Result<()> {
            ready_rx
                .recv_timeout(IO_TIMEOUT)
                .context("the server side did not come up")?;
            unpin();
            topology.client().enter()?;
            ping_pong()?;
            stream()
        });
        let client_result = client
            .join()
            .map_err(|_| anyhow::anyhow!("client thread panicked"))?;
        let server_result = server
            .join()
            .map_err(|_| anyhow::anyhow!("server thread panicked"))?;
        client_result.context("client")?;
        server_result.context("server")
    })?;
    print(records);
    Ok(rows
        .iter()
        .map(|row| {
            let test_run_net = test_run
                .iter()
                .find(|r| r.prog == "siphon" && r.name == row.test_run)
                .and_then(|r| r.held)
                .map(|h| h.median - batch_floor);
            let siphon_net = row.siphon - row.floor;
            let ratio = test_run_net.map(|t| siphon_net / t);
            let status = match (row.held, ratio) {
                (true, Some(r)) if r <= TARGET_LIVE_RATIO => "met".to_owned(),
                (true, Some(_)) => "MISSED".to_owned(),
                _ => "-".to_owned(),
            };
            LiveRow {
                label: row.label,
                runs: row.runs,
                floor: row.floor,
                lru_net: row.lru - row.floor,
                siphon_net,
                test_run_net,
                ratio,
                status,
            }
        })
        .collect())
}

/// What Siphon emitted on the live run, to check the figures come from the intended paths.
#[derive(Default, Clone, Copy)]
struct Emitted {
    request_heads: u64,
    response_heads: u64,
    losses: u64,
}

/// The server side: attaches the programs, serves both connections and snapshots the
/// statistics around each.
fn serve(
    topology: &Topology,
    ready: mpsc::Sender<()>,
    head_capture_bytes: u32,
) -> anyhow::Result<(Vec<Row>, Emitted)> {
    unpin();
    topology.server().enter()?;
    let mut programs = Programs::attach(topology.server_dev(), head_capture_bytes)?;
    let map = programs
        .siphon
        .take_map(names::MAP_EVENTS)
        .context("map EVENTS missing from the eBPF object")?;
    let ring = RingBuf::try_from(map).context("map EVENTS is not a ring buffer")?;
    let listener =
        TcpListener::bind(SocketAddrV4::new(SERVER, PORT)).context("binding the server socket")?;
    // Stats stay on while this fd is open.
    let _stats = enable_stats(Stats::RunTime).context("BPF_ENABLE_STATS")?;
    let stop = AtomicBool::new(false);
    let (before, between, after, records) = thread::scope(|s| -> anyhow::Result<_> {
        // The reader drains the ring while traffic runs, as the agent does: records are
        // written into ring memory a reader has been through, not into untouched pages.
        let reader = s.spawn(|| drain(ring, &stop));
        let result = (|| -> anyhow::Result<_> {
            let _ = ready.send(());
            let before = programs.snapshot()?;
            let (conn, _) = accept(&listener)?;
            serve_ping_pong(conn)?;
            let between = programs.snapshot()?;
            let (conn, _) = accept(&listener)?;
            serve_stream(conn)?;
            let after = programs.snapshot()?;
            Ok((before, between, after))
        })();
        stop.store(true, Ordering::Relaxed);
        let records = reader
            .join()
            .map_err(|_| anyhow::anyhow!("ring reader panicked"))?;
        let (before, between, after) = result?;
        Ok((before, between, after, records))
    })?;

    let row = |label, test_run, a: &Snapshot, b: &Snapshot, dir: usize| {
        let mean = |x: Stat, y: Stat| (y.ns - x.ns) as f64 / (y.runs - x.runs).max(1) as f64;
        Row {
            label,
            test_run,
            held: dir == 0 && test_run.starts_with("request")
                || dir == 1 && test_run.starts_with("response"),
            runs: b.siphon[dir].runs - a.siphon[dir].runs,
            floor: mean(a.floor[dir], b.floor[dir]),
            lru: mean(a.lru[dir], b.lru[dir]),
            siphon: mean(a.siphon[dir], b.siphon[dir]),
        }
    };
    let rows = vec![
        row(
            "ping-pong, server ingress: request starts + head capture",
            "request start + head capture",
            &before,
            &between,
            0,
        ),
        row(
            "ping-pong, server egress: response starts + head capture",
            "response start + head capture",
            &before,
            &between,
            1,
        ),
        row(
            "stream, server egress: mid-response data (GSO packets)",
            "mid-response data, 1448 B",
            &between,
            &after,
            1,
        ),
        row(
            "stream, server ingress: ACKs",
            "ACK, no payload, existing flow",
            &between,
            &after,
            0,
        ),
    ];
    Ok((rows, emitted(&mut programs.siphon, records)?))
}

/// Reads the ring until `stop`, then once more; counts the heads. Like the agent's reader:
/// it sleeps in poll(2) until its timer (the agent's) or the kernel wakes it (a quarter of the ring unread).
fn drain(mut ring: RingBuf<MapData>, stop: &AtomicBool) -> Emitted {
    unpin();
    let mut out = Emitted::default();
    loop {
        let last = stop.load(Ordering::Relaxed);
        while let Some(record) = ring.next() {
            // PayloadRecord: kind (u32), then `what` (u8).
            let kind = record.first_chunk::<4>().map(|b| u32::from_ne_bytes(*b));
            if kind == Some(record_kind::PAYLOAD) {
                match record.get(4).copied() {
                    Some(payload_what::REQUEST_HEAD) => out.request_heads += 1,
                    Some(payload_what::RESPONSE_HEAD) => out.response_heads += 1,
                    _ => {}
                }
            }
        }
        if last {
            return out;
        }
        let mut pfd = libc::pollfd {
            fd: ring.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut pfd, 1, DRAIN_POLL.as_millis() as i32) };
    }
}

fn emitted(siphon: &mut Ebpf, records: Emitted) -> anyhow::Result<Emitted> {
    let (counters, _flows) = kernel_maps::take_all(siphon)?;
    let values = counters.kernel_counters()?;
    let losses = KernelCounter::ALL
        .iter()
        .filter(|c| c.describe().0 == CounterKind::Loss)
        .map(|c| values[*c as usize])
        .sum();
    Ok(Emitted { losses, ..records })
}

fn print(emitted: Emitted) {
    println!(
        "live cross-check: Siphon emitted {} request heads and {} response heads for \
         {REQUESTS} + 1 requests; kernel losses: {}.",
        emitted.request_heads, emitted.response_heads, emitted.losses
    );
}
