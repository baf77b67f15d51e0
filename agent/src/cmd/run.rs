//! `siphon run`: load, attach, sweep, serve; detach everything on SIGTERM/SIGINT.

use std::{
    sync::{atomic::Ordering, mpsc, Arc},
    thread,
    time::{Duration, Instant},
};

use std::os::fd::AsRawFd as _;

use agent_common::{names, FlowKey, FlowState, TimeSource};
use anyhow::Context as _;
use aya::{
    maps::{MapData, RingBuf},
    Ebpf,
};

use crate::{
    cmd::args::RunArgs,
    export::{
        capacity::CapacityMetrics,
        metrics::{BuildInfo, Metrics},
        server,
        state::Shared,
        webconfig, webconfig_reload,
    },
    kernel::{
        attach::{Attacher, Mechanism},
        ifaces::{self, Selection},
        maps::{self, FlowMaps},
        object::{self, LoadOptions},
        sweep::{ExpiryConfig, FlowTracker},
    },
    pipeline::{
        logfile::{LogFile, LogMetrics},
        service_ports, Pipeline,
    },
};

const IPPROTO_TCP: u8 = 6;

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    super::caps::check_at_start()?;
    let selection = Selection::from_args(&args.ifaces, &args.iface_patterns)?;
    let mechanism = Mechanism::resolve(args.attach_mode)?;
    let expiry = ExpiryConfig {
        idle: args.flow_idle_timeout,
        closed: args.flow_closed_timeout,
        exchange_idle: args.exchange_idle_timeout,
    };
    let (mut decode, services) = super::decode_config(&args.pipeline)?;
    let secret_watch = super::watch_secret(&args.pipeline, &mut decode, args.key_hash_overlap);
    let web = webconfig::LiveWebConfig::load(args.web_config_file.as_deref())?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // Bind before touching the kernel: a taken port should fail fast with nothing attached.
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(args.listen))
        .with_context(|| format!("cannot listen on {}", args.listen))?;

    let load_options = LoadOptions {
        max_flows: args.max_flows,
        time_source: TimeSource::Monotonic,
        head_capture_bytes: args
            .pipeline
            .head_capture_bytes
            .unwrap_or(object::LIVE_HEAD_CAPTURE_BYTES),
        ringbuf_bytes: args
            .ringbuf_bytes
            .unwrap_or_else(object::default_ringbuf_bytes),
    };
    let pins = crate::kernel::pin::from_args(&args, &load_options)?;
    let mut ebpf = object::load_with_pins(load_options, pins.as_ref())?;
    let (counters, mut flow_maps) = maps::take_all(&mut ebpf)?;
    let ring = RingBuf::try_from(
        ebpf.take_map(names::MAP_EVENTS)
            .context("EVENTS map missing")?,
    )?;
    for port in args
        .service_ports
        .iter()
        .copied()
        .chain(services.ports())
        .chain(service_ports::listening_tcp_ports())
    {
        flow_maps.add_service_port(port, IPPROTO_TCP)?;
    }

    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let metrics = Metrics::new(&BuildInfo {
        attach_mode: mechanism.label(),
        kernel: kernel.trim(),
    })?;
    let capacity = CapacityMetrics::new(metrics.registry(), services)?;
    let log_metrics = LogMetrics::new(metrics.registry())?;
    let exchange_log: Option<Box<dyn std::io::Write + Send>> = match &args.exchange_log {
        Some(path) => Some(Box::new(LogFile::open(path, "exchange", &log_metrics)?)),
        None => None,
    };
    let detector = detector_sink(&args, metrics.registry(), &log_metrics)?;
    let web_reloader = webconfig_reload::Reloader::new(&web, metrics.registry())?;
    let pipeline = Pipeline::new(decode, capacity, exchange_log).with_sink(Box::new(detector));
    let shared = Arc::new(Shared::new(metrics, counters));
    {
        let mut g = shared.lock();
        let created =
            g.counters.kernel_counters()?[agent_common::KernelCounter::FlowsCreated as usize];
        g.metrics
            .baseline_lru(created, flow_maps.snapshot()?.len() as u64);
    }

    let mut attacher = Attacher::new(mechanism, pins);
    if let Err(e) = attach_initial(&mut ebpf, &mut attacher, &selection, &shared) {
        attacher.detach_all(&mut ebpf);
        return Err(e);
    }
    // Before any other thread starts: capabilities are per thread, and new threads inherit them.
    super::caps::drop_after_attach(
        &super::caps::Needs {
            later_attach: selection.is_dynamic(),
            netlink_detach: mechanism == Mechanism::Netlink,
        },
        || shared.scrape(Instant::now()).is_ok(),
    )?;
    if let Some(w) = secret_watch {
        w.spawn().context("starting the secret watcher")?;
    }
    shared.ready.store(true, Ordering::Release);
    tracing::info!(listen = %args.listen, interfaces = attacher.count(), "siphon running");

    let (to_reader, reader_rx) = mpsc::channel::<ReaderMsg>();
    let reader = thread::Builder::new()
        .name("events".into())
        .spawn(move || read_events(ring, pipeline, reader_rx))
        .context("starting the event reader thread")?;
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let sweeper = {
        let to_reader = to_reader.clone();
        let shared = Arc::clone(&shared);
        let interval = args.sweep_interval;
        thread::Builder::new()
            .name("sweeper".into())
            .spawn(move || {
                let mut s = Sweeper {
                    ebpf,
                    flow_maps,
                    attacher,
                    selection,
                    expiry,
                    tracker: FlowTracker::default(),
                    shared,
                    to_reader,
                };
                s.run(interval, stop_rx);
                s.shutdown();
            })
            .context("starting the sweeper thread")?
    };

    let served = runtime.block_on(async {
        let app = server::router(Arc::clone(&shared), !args.no_flows_endpoint);
        if let Some(r) = web_reloader {
            r.spawn();
        }
        webconfig::serve(listener, app, web, shutdown_signal()).await
    });
    shared.ready.store(false, Ordering::Release);
    let _ = stop_tx.send(());
    if sweeper.join().is_err() {
        anyhow::bail!("the sweeper thread panicked; programs were detached when the process exits");
    }
    let _ = to_reader.send(ReaderMsg::Stop);
    if reader.join().is_err() {
        anyhow::bail!("the event reader thread panicked");
    }
    served.context("HTTP server failed")?;
    tracing::info!("siphon stopped");
    Ok(())
}

/// The detector, its metrics and its event log.
fn detector_sink(
    args: &RunArgs,
    registry: &prometheus::Registry,
    log_metrics: &LogMetrics,
) -> anyhow::Result<crate::detect::sink::DetectorSink> {
    use crate::detect::{config::Config, export::DetectorMetrics, Detector};
    let config = match &args.detect_config {
        Some(p) => Config::from_file(p).context("--detect-config")?,
        None => Config::default(),
    };
    let log: Option<Box<dyn std::io::Write + Send>> = match &args.detection_log {
        Some(path) => Some(Box::new(LogFile::open(path, "detection", log_metrics)?)),
        None => None,
    };
    Ok(crate::detect::sink::DetectorSink::new(
        Detector::new(config)?,
        DetectorMetrics::new(registry)?,
        log,
    ))
}

fn attach_initial(
    ebpf: &mut Ebpf,
    attacher: &mut Attacher,
    selection: &Selection,
    shared: &Shared,
) -> anyhow::Result<()> {
    let all = ifaces::list()?;
    for iface in selection.pick_initial(&all)? {
        attacher.attach(ebpf, &iface)?;
        let mut g = shared.lock();
        g.metrics.track_iface(&iface.name);
        g.iface_names.insert(iface.index, iface.name.clone());
    }
    shared
        .lock()
        .metrics
        .attached_interfaces
        .set(attacher.count() as i64);
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: detaching"),
        _ = int.recv() => tracing::info!("SIGINT: detaching"),
    }
}

/// Owns the eBPF object: sweeps the flow table and keeps attachments in line with the
/// interfaces that exist.
struct Sweeper {
    ebpf: Ebpf,
    flow_maps: FlowMaps,
    attacher: Attacher,
    selection: Selection,
    expiry: ExpiryConfig,
    tracker: FlowTracker,
    shared: Arc<Shared>,
    to_reader: mpsc::Sender<ReaderMsg>,
}

impl Sweeper {
    fn run(&mut self, interval: Duration, stop: mpsc::Receiver<()>) {
        loop {
            match stop.recv_timeout(interval) {
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            if let Err(e) = self.reconcile_interfaces() {
                tracing::warn!("checking interfaces: {e:#}");
            }
            if let Err(e) = self.sweep_once() {
                tracing::warn!("flow sweep failed: {e:#}");
            }
        }
    }

    fn sweep_once(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        // Read before the snapshot, so flows created in between make the LRU count low, not high.
        let created = self
            .shared
            .lock()
            .counters
            .kernel_counters()
            .ok()
            .map(|c| c[agent_common::KernelCounter::FlowsCreated as usize]);
        let mut outcome = self
            .tracker
            .sweep(&mut self.flow_maps, monotonic_ns(), &self.expiry)?;
        for (key, state) in outcome.ended.drain(..) {
            let _ = self.to_reader.send(ReaderMsg::FlowEnded {
                key,
                state: Box::new(state),
                gone: true,
            });
        }
        for (key, state) in outcome.idle_exchanges.drain(..) {
            let _ = self.to_reader.send(ReaderMsg::FlowEnded {
                key,
                state: Box::new(state),
                gone: false,
            });
        }
        let mut g = self.shared.lock();
        g.metrics.record_sweep(&outcome, started.elapsed(), created);
        g.flows = outcome.flows;
        Ok(())
    }

    /// Drops interfaces that vanished and, for dynamic selections, attaches new matches.
    fn reconcile_interfaces(&mut self) -> anyhow::Result<()> {
        let all = ifaces::list()?;
        for ifindex in self.attacher.attached_ifindexes() {
            if !all.iter().any(|i| i.index == ifindex) {
                if let Some(name) = self.attacher.forget(&mut self.ebpf, ifindex) {
                    tracing::info!(interface = %name, "interface gone");
                    let mut g = self.shared.lock();
                    g.counters.remove_iface(ifindex);
                    g.metrics.forget_iface(ifindex, &name);
                    g.iface_names.remove(&ifindex);
                }
            }
        }
        if self.selection.is_dynamic() {
            for iface in self.selection.pick(&all)? {
                if self.attacher.is_attached(iface.index) {
                    continue;
                }
                match self.attacher.attach(&mut self.ebpf, &iface) {
                    Ok(()) => {
                        let mut g = self.shared.lock();
                        g.metrics.track_iface(&iface.name);
                        g.iface_names.insert(iface.index, iface.name.clone());
                    }
                    Err(e) => {
                        tracing::warn!("{e:#}");
                        self.shared.lock().metrics.attach_errors.inc();
                    }
                }
            }
        }
        self.shared
            .lock()
            .metrics
            .attached_interfaces
            .set(self.attacher.count() as i64);
        Ok(())
    }

    /// Detaches, then reports the exchanges still open, so the exchange log and the metrics
    /// hold every request that was answered before the stop.
    fn shutdown(mut self) {
        self.attacher.detach_all(&mut self.ebpf);
        match self.flow_maps.snapshot() {
            Ok(flows) => {
                for (key, state) in flows {
                    if state.exchange.phase != agent_common::phase::IDLE {
                        let _ = self.to_reader.send(ReaderMsg::FlowEnded {
                            key,
                            state: Box::new(state),
                            gone: false,
                        });
                    }
                }
            }
            Err(e) => tracing::warn!("reading the flow table at shutdown: {e:#}"),
        }
    }
}

/// What the sweeper tells the event reader.
enum ReaderMsg {
    /// A flow left the table (`gone`) or its open exchange went quiet: report that exchange.
    FlowEnded {
        key: FlowKey,
        state: Box<FlowState>,
        gone: bool,
    },
    Stop,
}

/// How often the event reader writes the logs' buffered lines out: what a reader tailing the
/// exchange or detection log waits at most for a line beyond the ring's own poll.
const LOG_FLUSH: Duration = Duration::from_millis(100);

/// The event reader: drains the ring buffer into the pipeline.
fn read_events(mut ring: RingBuf<MapData>, mut pipeline: Pipeline, rx: mpsc::Receiver<ReaderMsg>) {
    let fd = ring.as_raw_fd();
    let mut last_flush = Instant::now();
    loop {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut pfd, 1, object::READ_POLL.as_millis() as i32) };
        while let Some(item) = ring.next() {
            pipeline.on_record(&item);
        }
        // Logs reach their files every LOG_FLUSH, not every poll: one write per 100 ms, not
        // 200 a second (each a syscall with the file system's per-call work); a log that grows
        // faster is written early by its own buffer limit (logfile.rs).
        if last_flush.elapsed() >= LOG_FLUSH {
            last_flush = Instant::now();
            if let Err(e) = pipeline.flush() {
                tracing::warn!("flushing the exchange log: {e}");
            }
        }
        loop {
            match rx.try_recv() {
                Ok(ReaderMsg::FlowEnded { key, state, gone }) => {
                    pipeline.flow_ended(&key, &state, gone)
                }
                Ok(ReaderMsg::Stop) | Err(mpsc::TryRecvError::Disconnected) => {
                    while let Some(item) = ring.next() {
                        pipeline.on_record(&item);
                    }
                    pipeline.finish_sinks();
                    let _ = pipeline.flush();
                    return;
                }
                Err(mpsc::TryRecvError::Empty) => break,
            }
        }
    }
}

/// CLOCK_MONOTONIC in ns: the clock `bpf_ktime_get_coarse_ns` follows.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the struct we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
