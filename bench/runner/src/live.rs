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

use std::{
    fs::File,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::Duration,
};

use agent_common::{names, payload_what, record_kind, CounterKind, KernelCounter};
use anyhow::{bail, ensure, Context as _};
use aya::{
    maps::{MapData, RingBuf},
    programs::{tc::TcAttachOptions, LinkOrder, TcAttachType},
    sys::{enable_stats, Stats},
    Ebpf,
};
use siphon_agent::kernel::{
    maps as kernel_maps,
    object::{self as ebpf_object, LoadOptions},
};

use crate::{BASELINES, HEAD_CAPTURE_BYTES, MAX_FLOWS, PROG_FLOOR, PROG_LRU};

/// Requests on the ping-pong connection. Each leaves two ring-buffer records (request head,
/// response head); a reader drains them while traffic runs.
const REQUESTS: usize = 1000;
const REQUEST_BYTES: usize = 1024;
const RESPONSE_BYTES: usize = 128;
/// The streamed response: ~23 000 segments of 1448 bytes.
const STREAM_BYTES: usize = 32 << 20;
const WRITE_CHUNK: usize = 16 << 10;
/// No socket operation waits longer than this; a stuck run fails instead of hanging.
const IO_TIMEOUT: Duration = Duration::from_secs(20);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 213, 79, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 213, 79, 2);
const PORT: u16 = 8000;
/// The reader's poll timeout when no wakeup comes, the agent's.
const DRAIN_POLL: Duration = Duration::from_millis(100);

/// Run time and count of one program, from the kernel's statistics.
#[derive(Clone, Copy, Default)]
struct Stat {
    ns: u64,
    runs: u64,
}

/// The six attached programs: Siphon, LRU counter and floor, on ingress and on egress.
#[derive(Clone, Copy, Default)]
struct Snapshot {
    // [ingress, egress]
    siphon: [Stat; 2],
    lru: [Stat; 2],
    floor: [Stat; 2],
}

struct Programs {
    siphon: Ebpf,
    /// One instance of the baselines per direction: statistics are per program.
    baselines: [Ebpf; 2],
}

const DIRECTIONS: [TcAttachType; 2] = [TcAttachType::Ingress, TcAttachType::Egress];

impl Programs {
    /// Loads all three and attaches them to `dev`, in this thread's namespace: Siphon first in
    /// each direction (it meets the packet first, as it would alone), then the LRU counter,
    /// then the floor.
    fn attach(dev: &str) -> anyhow::Result<Programs> {
        let siphon = ebpf_object::load(LoadOptions {
            max_flows: MAX_FLOWS,
            head_capture_bytes: HEAD_CAPTURE_BYTES,
            ringbuf_bytes: ebpf_object::default_ringbuf_bytes(),
            ..LoadOptions::for_tests()
        })?;
        let baselines = [load_baselines()?, load_baselines()?];
        let mut programs = Programs { siphon, baselines };
        for (i, direction) in DIRECTIONS.into_iter().enumerate() {
            let siphon_name = siphon_program(i);
            attach_last(&mut programs.siphon, siphon_name, dev, direction)?;
            for name in [PROG_LRU, PROG_FLOOR] {
                attach_last(&mut programs.baselines[i], name, dev, direction)?;
            }
        }
        Ok(programs)
    }

    fn snapshot(&mut self) -> anyhow::Result<Snapshot> {
        let mut s = Snapshot::default();
        for i in 0..2 {
            s.siphon[i] = stat(&mut self.siphon, siphon_program(i))?;
            s.lru[i] = stat(&mut self.baselines[i], PROG_LRU)?;
            s.floor[i] = stat(&mut self.baselines[i], PROG_FLOOR)?;
        }
        Ok(s)
    }
}

fn siphon_program(direction: usize) -> &'static str {
    if direction == 0 {
        names::PROG_INGRESS
    } else {
        names::PROG_EGRESS
    }
}

fn load_baselines() -> anyhow::Result<Ebpf> {
    let mut ebpf = Ebpf::load(BASELINES).context("loading the baseline programs")?;
    for name in [PROG_FLOOR, PROG_LRU] {
        ebpf_object::classifier(&mut ebpf, name)?
            .load()
            .with_context(|| format!("verifier rejected program {name}"))?;
    }
    Ok(ebpf)
}

fn attach_last(
    ebpf: &mut Ebpf,
    name: &str,
    dev: &str,
    direction: TcAttachType,
) -> anyhow::Result<()> {
    ebpf_object::classifier(ebpf, name)?
        .attach_with_options(dev, direction, TcAttachOptions::TcxOrder(LinkOrder::last()))
        .with_context(|| format!("attaching {name} to {dev} ({direction:?}) with tcx"))?;
    Ok(())
}

fn stat(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<Stat> {
    let info = ebpf_object::classifier(ebpf, name)?
        .info()
        .with_context(|| format!("program info of {name}"))?;
    Ok(Stat {
        ns: info.run_time().as_nanos() as u64,
        runs: info.run_count(),
    })
}

/// A network namespace of this run, deleted on drop (with its veth end, qdiscs and links).
struct NetNs {
    name: String,
}

impl NetNs {
    fn new(tag: &str) -> anyhow::Result<NetNs> {
        let name = format!("sxb{}-{tag}", std::process::id());
        run("ip", &["netns", "add", &name])?;
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn ip(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    fn exec(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let mut full = vec!["netns", "exec", self.name.as_str(), program];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Moves the calling thread into this namespace.
    fn enter(&self) -> anyhow::Result<()> {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).with_context(|| format!("opening {path}"))?;
        // SAFETY: setns on the calling thread with a valid namespace fd.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        ensure!(rc == 0, "setns {path}: {}", std::io::Error::last_os_error());
        Ok(())
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program} (installed by `cargo xtask setup`)"))?;
    ensure!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// The server and client namespaces and the veth pair between them, offloads off.
struct Topology {
    server: NetNs,
    client: NetNs,
    server_dev: String,
}

impl Topology {
    fn create() -> anyhow::Result<Topology> {
        let server = NetNs::new("srv")?;
        let client = NetNs::new("cli")?;
        let server_dev = format!("sxbs{}", std::process::id() % 100_000);
        let client_dev = format!("sxbc{}", std::process::id() % 100_000);
        run(
            "ip",
            &[
                "link",
                "add",
                &server_dev,
                "netns",
                &server.name,
                "type",
                "veth",
                "peer",
                "name",
                &client_dev,
                "netns",
                &client.name,
            ],
        )?;
        for (ns, dev, addr) in [
            (&server, &server_dev, SERVER),
            (&client, &client_dev, CLIENT),
        ] {
            ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", dev])?;
            ns.exec(
                "ethtool",
                &["-K", dev, "tso", "off", "gso", "off", "gro", "off"],
            )?;
            ns.ip(&["link", "set", dev, "up"])?;
        }
        Ok(Topology {
            server,
            client,
            server_dev,
        })
    }
}

/// Figures of one scenario on one hook.
struct Row {
    label: &'static str,
    runs: u64,
    floor: f64,
    lru: f64,
    siphon: f64,
}

/// Runs both connections and prints the table.
pub fn cross_check() -> anyhow::Result<()> {
    let topology = Topology::create()?;
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (rows, records) = thread::scope(|s| -> anyhow::Result<_> {
        let server = s.spawn(|| serve(&topology, ready_tx));
        let topology = &topology;
        let client = s.spawn(move || -> anyhow::Result<()> {
            ready_rx
                .recv_timeout(IO_TIMEOUT)
                .context("the server side did not come up")?;
            unpin();
            topology.client.enter()?;
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
    print(&rows, records);
    Ok(())
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
fn serve(topology: &Topology, ready: mpsc::Sender<()>) -> anyhow::Result<(Vec<Row>, Emitted)> {
    unpin();
    topology.server.enter()?;
    let mut programs = Programs::attach(&topology.server_dev)?;
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

    let row = |label, a: &Snapshot, b: &Snapshot, dir: usize| {
        let mean = |x: Stat, y: Stat| (y.ns - x.ns) as f64 / (y.runs - x.runs).max(1) as f64;
        Row {
            label,
            runs: b.siphon[dir].runs - a.siphon[dir].runs,
            floor: mean(a.floor[dir], b.floor[dir]),
            lru: mean(a.lru[dir], b.lru[dir]),
            siphon: mean(a.siphon[dir], b.siphon[dir]),
        }
    };
    let rows = vec![
        row(
            "ping-pong, server ingress: request starts + head capture",
            &before,
            &between,
            0,
        ),
        row(
            "ping-pong, server egress: response starts + head capture",
            &before,
            &between,
            1,
        ),
        row(
            "stream, server egress: mid-response data (GSO packets)",
            &between,
            &after,
            1,
        ),
        row("stream, server ingress: ACKs", &between, &after, 0),
    ];
    Ok((rows, emitted(&mut programs.siphon, records)?))
}

/// Reads the ring until `stop`, then once more; counts the heads. Like the agent's reader:
/// it sleeps in poll(2) until the kernel wakes it (every 256 records per CPU) or a timeout.
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

/// Lets the calling thread run on every online CPU: the bench pins itself to one CPU for
/// test_run, but live traffic, like a node's, spreads its client, server and reader.
fn unpin() {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut all: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for cpu in aya::util::online_cpus().unwrap_or_default() {
        // SAFETY: CPU_SET writes one bit inside `all` (online CPUs are below CPU_SETSIZE).
        unsafe { libc::CPU_SET(cpu as usize, &mut all) };
    }
    // SAFETY: `all` is a valid cpu_set_t of the size passed; failure leaves the thread pinned.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&all), &all) };
}

fn accept(listener: &TcpListener) -> anyhow::Result<(TcpStream, std::net::SocketAddr)> {
    // A bounded wait: poll the non-blocking listener until the deadline.
    listener.set_nonblocking(true)?;
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    loop {
        match listener.accept() {
            Ok((conn, peer)) => {
                conn.set_nonblocking(false)?;
                configure(&conn)?;
                return Ok((conn, peer));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                ensure!(
                    std::time::Instant::now() < deadline,
                    "no client connected within {IO_TIMEOUT:?}"
                );
                thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(e).context("accept"),
        }
    }
}

fn configure(conn: &TcpStream) -> anyhow::Result<()> {
    conn.set_nodelay(true)?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(())
}

fn connect() -> anyhow::Result<TcpStream> {
    let conn = TcpStream::connect_timeout(&SocketAddrV4::new(SERVER, PORT).into(), IO_TIMEOUT)
        .context("connecting to the server")?;
    configure(&conn)?;
    Ok(conn)
}

/// A 1 KiB HTTP/1.1 request, head and body in one write.
fn request() -> Vec<u8> {
    let head =
        "POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n";
    let body_len = REQUEST_BYTES - head.len() - "Content-Length: 0000\r\n\r\n".len();
    let mut req = format!("{head}Content-Length: {body_len:04}\r\n\r\n").into_bytes();
    req.resize(REQUEST_BYTES, b'x');
    req
}

fn response_head(body: usize) -> String {
    format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {body}\r\n\r\n")
}

fn ping_pong() -> anyhow::Result<()> {
    let mut conn = connect()?;
    let req = request();
    let mut resp = [0u8; RESPONSE_BYTES];
    for _ in 0..REQUESTS {
        conn.write_all(&req)
            .context("ping-pong: sending a request")?;
        conn.read_exact(&mut resp)
            .context("ping-pong: reading a response")?;
    }
    Ok(())
}

fn serve_ping_pong(mut conn: TcpStream) -> anyhow::Result<()> {
    // The body that makes head + body exactly RESPONSE_BYTES (its length's digits count).
    let mut body = RESPONSE_BYTES - response_head(0).len();
    while response_head(body).len() + body > RESPONSE_BYTES {
        body -= 1;
    }
    let mut response = response_head(body).into_bytes();
    response.resize(RESPONSE_BYTES, b'y');
    let mut req = [0u8; REQUEST_BYTES];
    for _ in 0..REQUESTS {
        conn.read_exact(&mut req)
            .context("ping-pong: reading a request")?;
        conn.write_all(&response)
            .context("ping-pong: sending a response")?;
    }
    wait_for_close(conn)
}

fn stream() -> anyhow::Result<()> {
    let mut conn = connect()?;
    conn.write_all(&request())
        .context("stream: sending the request")?;
    let mut buf = vec![0u8; 1 << 16];
    let mut got = 0usize;
    let expected = response_head(STREAM_BYTES).len() + STREAM_BYTES;
    while got < expected {
        let n = conn.read(&mut buf).context("stream: reading")?;
        ensure!(
            n > 0,
            "stream: the server closed after {got} of {expected} bytes"
        );
        got += n;
    }
    Ok(())
}

fn serve_stream(mut conn: TcpStream) -> anyhow::Result<()> {
    let mut req = [0u8; REQUEST_BYTES];
    conn.read_exact(&mut req)
        .context("stream: reading the request")?;
    conn.write_all(response_head(STREAM_BYTES).as_bytes())?;
    let chunk = vec![b'z'; WRITE_CHUNK];
    let mut sent = 0;
    while sent < STREAM_BYTES {
        let n = WRITE_CHUNK.min(STREAM_BYTES - sent);
        conn.write_all(&chunk[..n]).context("stream: sending")?;
        sent += n;
    }
    wait_for_close(conn)
}

/// Waits for the client's FIN, so the connection's last packets fall in its own snapshot.
fn wait_for_close(mut conn: TcpStream) -> anyhow::Result<()> {
    let mut buf = [0u8; 64];
    match conn.read(&mut buf) {
        Ok(0) => Ok(()),
        Ok(_) => bail!("unexpected bytes after the last request"),
        Err(e) => Err(e).context("waiting for the client to close"),
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

fn print(rows: &[Row], emitted: Emitted) {
    println!(
        "\nlive cross-check: real TCP through a veth pair (namespaces of this run, offloads off),\n\
         Siphon, the LRU counter and the floor chained with tcx on the server end; mean ns per\n\
         run from the kernel's run-time statistics over the same packets. Not held to the\n\
         targets, which are test_run figures: here every program pays the caches the stack\n\
         leaves, and a record's ring memory was last touched by the reader on another CPU."
    );
    println!(
        "{:<58} {:>6} {:>7} {:>7} {:>7} {:>8} {:>11}",
        "scenario, hook: dominant path", "runs", "floor", "LRU", "siphon", "LRU net", "siphon net"
    );
    for row in rows {
        println!(
            "{:<58} {:>6} {:>7.1} {:>7.1} {:>7.1} {:>8.1} {:>11.1}",
            row.label,
            row.runs,
            row.floor,
            row.lru,
            row.siphon,
            row.lru - row.floor,
            row.siphon - row.floor,
        );
    }
    println!(
        "net: the program's mean minus the floor's (the statistics' clock reads and the dispatch).\n\
         Siphon emitted {} request heads and {} response heads for {REQUESTS} + 1 requests; \
         kernel losses: {}.",
        emitted.request_heads, emitted.response_heads, emitted.losses
    );
}
