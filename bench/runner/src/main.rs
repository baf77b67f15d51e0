//! `siphon-bench`: the kernel program's cost per packet under BPF_PROG_TEST_RUN, next to two
//! baseline programs measured in the same process, the same way. Figures, not a pass/fail test:
//! a target missed is flagged and the exit status stays 0. Needs root; run it through
//! `cargo xtask bench`.
//!
//! # Method
//!
//! BPF_PROG_TEST_RUN runs a program on one frame `repeat` times in a kernel loop and reports
//! the mean time of one repetition (net/bpf/test_run.c divides the time around the loop by the
//! count, in whole ns). That time includes the loop and the call into the program, which the
//! *floor* program, returning at once, shows on its own.
//!
//! - **batch**: where a repetition leaves the flow as it found it (an ACK, a retransmitted
//!   segment, both baselines), a run is one call with `--repeat` repetitions and its figure is
//!   the kernel's mean.
//! - **single**: a mid-response segment, a request start and a ClientHello change what the
//!   next repetition would measure (Siphon tracks TCP sequence numbers, so the same data
//!   segment again is a retransmission; after a request start the flow is in the REQUEST
//!   phase; a connection gathers only a few hellos, counted from its SYN). Every frame is sent
//!   with its sender's next sequence number (`sequence`). Each sample first restores the state
//!   with untimed frames (a server data segment; a SYN, SYN-ACK and ACK), then times one
//!   repetition (repeat=1); a run's figure is the interquartile mean (the mean of the middle
//!   half) of `--samples` samples: robust to interrupts like a median, but finer than the
//!   kernel clock's step, which on some VMs is coarse (10 ns on the machine this was written
//!   on) and which a median would keep.
//!
//! A lone repetition pays what a loop amortises: the timer's closing clock read, which the
//! floor measured the same way shows, and caches the syscall cooled, which it does not. So a
//! single figure is first *shifted* to `median - floor(single) + floor(batch)`, and the ACK
//! and the retransmission are measured both ways: their shifted single figure less their batch
//! figure is the *single-shot excess*. A single-only path is held to its target on the batch
//! scale (`batch~`), the scale of the figures the targets were set next to (floor ~26 ns, LRU
//! counter ~55 ns): its shifted figure less the smallest excess of the run. Every single-only
//! path runs the calibration paths' code and touches their data, then more, so its own excess
//! is at least that: the estimate errs high. The both-ways single rows are calibrations only.
//!
//! Runs are interleaved (run 1 of every scenario, then run 2, ...) so that drift (frequency,
//! neighbours) hits every scenario alike; the table gives the median, min and max of the runs.
//! The process is pinned to one CPU: the per-CPU maps and caches stay the same between calls.
//!
//! Every Siphon path has a flow of its own, so none disturbs another's state. The ring
//! buffer is drained every [`DRAIN_EVERY`] samples, far below the program's wake-up threshold
//! (a forced wake-up would add its cost) and the buffer's size (a failing reserve is a cheaper
//! path that loses records). Drained records are counted by kind and must match what the
//! measured path emits, and each flow's state is checked after the warm-up, so a figure cannot
//! silently come from another path. The kernel's loss counters are printed at the end.

mod live;

use std::{fmt::Write as _, time::Duration};

use agent_common::{
    exchange_flag, names, phase, record_kind, tcp_flag, CounterKind, FlowState, KernelCounter,
};
use anyhow::{bail, ensure, Context as _};
use aya::{
    maps::{MapData, RingBuf},
    programs::{TestRun as _, TestRunOptions},
    Ebpf,
};
use clap::Parser;
use siphon_agent::kernel::{
    maps::{self as kernel_maps, CounterMaps, FlowMaps},
    object::{self as ebpf_object, LoadOptions},
};

/// The baseline programs (bench/ebpf), built by build.rs.
static BASELINES: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/baselines"));
const PROG_FLOOR: &str = "bench_floor";
const PROG_LRU: &str = "bench_lru_counter";

/// TC_ACT_UNSPEC (-1) as the u32 the kernel reports.
const PASS: u32 = u32::MAX;

/// Samples between ring-buffer drains. The busiest sample (a ClientHello with its handshake)
/// emits 4 records of ~2.5 KB in all, so at most 128 records (~80 KB) are ever unread: half the
/// program's wake-up threshold (256 records per CPU) and a fraction of the (>= 2 MiB) buffer.
const DRAIN_EVERY: u32 = 32;

/// `siphon run`'s defaults: the LRU's size shapes its cost, the head capture length the copy's.
const MAX_FLOWS: u32 = 131_072;
const HEAD_CAPTURE_BYTES: u32 = 1024;

/// Per-packet budget on flows that already exist (ACKs, data inside a turn).
const TARGET_EXISTING_FLOW_NS: f64 = 100.0;
/// Budget for a packet that starts a request and captures its head.
const TARGET_CAPTURE_NS: f64 = 250.0;

#[derive(Parser)]
#[command(
    name = "siphon-bench",
    about = "Per-packet cost of Siphon's TC program under BPF_PROG_TEST_RUN, with baselines"
)]
struct Args {
    /// Runs per scenario; the table reports their median, min and max.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(5..))]
    runs: u32,
    /// In-kernel repetitions in one batch run.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
    /// Timed single repetitions (repeat=1 calls) in one single run.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    samples: u32,
    /// Measure only the Siphon scenarios whose name contains this text (the baselines always
    /// run): for profiling one path, e.g. under `perf record`.
    #[arg(long)]
    only: Option<String>,
    /// Skip the live cross-check (real TCP through a veth pair, kernel run-time statistics).
    #[arg(long)]
    no_live: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pinned = pin_to_one_cpu();
    let mut kernel = Kernel::load()?;
    let cases: Vec<Case> = cases()
        .into_iter()
        .filter(|case| {
            case.prog != Prog::Siphon || args.only.as_ref().is_none_or(|o| case.name.contains(o))
        })
        .collect();
    print_header(&args, pinned);

    for case in &cases {
        kernel
            .warm_up(case, &args)
            .with_context(|| format!("setting up {:?}", case.name))?;
    }
    let mut figures = vec![Vec::new(); cases.len()];
    for _ in 0..args.runs {
        for (case, runs) in cases.iter().zip(&mut figures) {
            let ns = kernel
                .measure(case, args.repeat, args.samples)
                .with_context(|| format!("measuring {:?}", case.name))?;
            runs.push(ns);
        }
    }

    let rows: Vec<Row> = cases
        .iter()
        .zip(&mut figures)
        .map(|(case, runs)| Row::new(case, runs))
        .collect();
    print_table(&rows)?;
    print_kernel_counters(&kernel)?;
    if !args.no_live {
        live::cross_check().context("live cross-check (skip it with --no-live)")?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Prog {
    Floor,
    LruCounter,
    Siphon,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Method {
    Batch,
    Single,
}

impl Method {
    fn label(self) -> &'static str {
        match self {
            Method::Batch => "batch",
            Method::Single => "single",
        }
    }
}

/// Ring-buffer records, by kind.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
struct Records {
    exchange: u64,
    payload: u64,
    syn: u64,
}

impl Records {
    fn times(self, n: u64) -> Records {
        Records {
            exchange: self.exchange * n,
            payload: self.payload * n,
            syn: self.syn * n,
        }
    }

    fn count(&mut self, record: &[u8]) -> anyhow::Result<()> {
        let kind = record
            .first_chunk::<4>()
            .map(|b| u32::from_ne_bytes(*b))
            .context("ring-buffer record shorter than its kind")?;
        match kind {
            record_kind::EXCHANGE => self.exchange += 1,
            record_kind::PAYLOAD => self.payload += 1,
            record_kind::SYN => self.syn += 1,
            other => bail!("ring-buffer record of unknown kind {other}"),
        }
        Ok(())
    }
}

/// What the measured frame must leave on its flow.
#[derive(Clone, Copy, Debug)]
struct Leaves {
    phase: u8,
    /// Exchange flags that must all be set.
    flags: u8,
    /// Bytes of ClientHello gathered, where a hello is measured.
    hello_got: Option<u16>,
}

struct Case {
    name: &'static str,
    prog: Prog,
    method: Method,
    /// Frames run once before measuring: the flow's history up to the measured state.
    history: Vec<Vec<u8>>,
    /// Single only: untimed frames run before each sample to restore the measured state.
    restore: Vec<Vec<u8>>,
    /// The measured frame.
    frame: Vec<u8>,
    /// Send the measured frame with its sender's first data sequence number, which the history
    /// already carried: a retransmission, however often it is repeated.
    resend: bool,
    /// Records the restore frames and the measured frame emit, per repetition or sample.
    emits: Records,
    /// The flow the scenario uses (Siphon only) and the state it must be left in.
    flow: Option<(Flow, Leaves)>,
    target_ns: Option<f64>,
}

fn cases() -> Vec<Case> {
    // A flow per path: none changes another's state. (A path measured both ways uses its flow
    // twice; it leaves the flow as it found it.)
    let ack_flow = Flow::new(50_001, HTTP_PORT);
    let data_flow = Flow::new(50_002, HTTP_PORT);
    let request_flow = Flow::new(50_003, HTTP_PORT);
    let hello_flow = Flow::new(50_004, TLS_PORT);
    let pq_hello_flow = Flow::new(50_005, TLS_PORT);
    let resend_flow = Flow::new(50_006, HTTP_PORT);

    let in_response = Leaves {
        phase: phase::RESPONSE,
        flags: exchange_flag::HTTP_REQUEST | exchange_flag::HTTP_RESPONSE,
        hello_got: None,
    };
    let ack = ack_flow.client_sends(tcp_flag::ACK, &[]);
    let mid_response = data_flow.server_sends(tcp_flag::ACK, &response_data());
    let resent = resend_flow.server_sends(tcp_flag::ACK, &response_data());
    let request = request_flow.client_sends(tcp_flag::ACK | tcp_flag::PSH, &request_segment());
    let hello = client_hello(HELLO_CLASSIC_LEN, &[]);
    let pq_hello = client_hello(HELLO_PQ_LEN, &[ML_KEM_KEY_SHARE]);
    let pq_first_segment = &pq_hello[..MSS.min(pq_hello.len())];

    let baseline = |name, prog, method| Case {
        name,
        prog,
        method,
        // The LRU counter's entry exists before the clock starts, as a flow's would.
        history: vec![ack.clone()],
        restore: Vec::new(),
        frame: ack.clone(),
        resend: false,
        emits: Records::default(),
        flow: None,
        target_ns: None,
    };
    let steady = |name, method, flow: &Flow, frame: &Vec<u8>| Case {
        name,
        prog: Prog::Siphon,
        method,
        history: http_history(flow),
        restore: Vec::new(),
        frame: frame.clone(),
        resend: false,
        emits: Records::default(),
        flow: Some((*flow, in_response)),
        target_ns: Some(TARGET_EXISTING_FLOW_NS),
    };
    // A data segment the flow already carried: the stack retransmits. The same path whatever
    // the repetition, so it is measured both ways, like the ACK: two calibrations of the
    // single-shot method, one of them on a data segment.
    let retransmission = |method| Case {
        resend: true,
        ..steady("retransmitted data, 1448 B", method, &resend_flow, &resent)
    };
    let hello_case = |name, flow: &Flow, payload: &[u8]| {
        let frame = flow.client_sends(tcp_flag::ACK | tcp_flag::PSH, payload);
        let handshake = flow.handshake();
        let mut history = handshake.clone();
        history.push(frame.clone());
        Case {
            name,
            prog: Prog::Siphon,
            method: Method::Single,
            history,
            // A SYN on the known tuple is a new connection: hello gathering starts again.
            restore: handshake,
            frame,
            resend: false,
            // SYN and SYN-ACK records, the previous connection's exchange, the hello.
            emits: Records {
                exchange: 1,
                payload: 1,
                syn: 2,
            },
            flow: Some((
                *flow,
                Leaves {
                    phase: phase::REQUEST,
                    flags: exchange_flag::TLS,
                    hello_got: Some(payload.len() as u16),
                },
            )),
            target_ns: Some(TARGET_CAPTURE_NS),
        }
    };

    vec![
        baseline("floor: return TC_ACT_UNSPEC", Prog::Floor, Method::Batch),
        baseline(
            "minimal LRU 5-tuple counter",
            Prog::LruCounter,
            Method::Batch,
        ),
        steady(
            "ACK, no payload, existing flow",
            Method::Batch,
            &ack_flow,
            &ack,
        ),
        retransmission(Method::Batch),
        baseline("floor: return TC_ACT_UNSPEC", Prog::Floor, Method::Single),
        baseline(
            "minimal LRU 5-tuple counter",
            Prog::LruCounter,
            Method::Single,
        ),
        steady(
            "ACK, no payload, existing flow",
            Method::Single,
            &ack_flow,
            &ack,
        ),
        retransmission(Method::Single),
        steady(
            "mid-response data, 1448 B",
            Method::Single,
            &data_flow,
            &mid_response,
        ),
        Case {
            name: "request start + head capture",
            prog: Prog::Siphon,
            method: Method::Single,
            history: http_history(&request_flow),
            // The response resumes: the next request is a new turn again.
            restore: vec![request_flow.server_sends(tcp_flag::ACK, &response_data())],
            frame: request,
            resend: false,
            // The request head, carrying the exchange it ends in the same record.
            emits: Records {
                exchange: 0,
                payload: 1,
                syn: 0,
            },
            flow: Some((
                request_flow,
                Leaves {
                    phase: phase::REQUEST,
                    // The segment is longer than the head capture.
                    flags: exchange_flag::HTTP_REQUEST | exchange_flag::HEAD_TRUNCATED,
                    hello_got: None,
                },
            )),
            target_ns: Some(TARGET_CAPTURE_NS),
        },
        hello_case("TLS ClientHello, 517 B", &hello_flow, &hello),
        hello_case(
            "TLS ClientHello, 1800 B (ML-KEM), 1st 1448 B",
            &pq_hello_flow,
            pq_first_segment,
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// Kernel side: loading, running, draining
// ---------------------------------------------------------------------------------------------

struct Kernel {
    siphon: Ebpf,
    baselines: Ebpf,
    counters: CounterMaps,
    flows: FlowMaps,
    events: RingBuf<MapData>,
    /// Next TCP sequence number per sender (IPv4 address, port): every frame is sent with the
    /// sequence number a real connection would use, so payload is new data, not a
    /// retransmission (which Siphon recognises and leaves out of exchanges).
    next_seq: std::collections::HashMap<([u8; 4], u16), u32>,
}

/// Rewrites an Ethernet/IPv4/TCP frame's sequence number to its sender's next one, and advances
/// it by what the segment consumes (payload, SYN, FIN). Other frames are left alone.
fn sequence(next_seq: &mut std::collections::HashMap<([u8; 4], u16), u32>, frame: &mut [u8]) {
    if frame.len() < 34 || frame[12..14] != [0x08, 0x00] || frame[23] != 6 {
        return;
    }
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let tcp = 14 + ihl;
    if frame.len() < tcp + 20 {
        return;
    }
    let tot_len = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
    let doff = usize::from(frame[tcp + 12] >> 4) * 4;
    let payload = tot_len.saturating_sub(ihl + doff) as u32;
    let flags = frame[tcp + 13];
    let consumed = payload + u32::from(flags & (tcp_flag::SYN | tcp_flag::FIN) != 0);
    let src = (
        [frame[26], frame[27], frame[28], frame[29]],
        u16::from_be_bytes([frame[tcp], frame[tcp + 1]]),
    );
    let seq = next_seq.entry(src).or_insert(FIRST_DATA_SEQ - 1);
    set_seq(frame, *seq);
    *seq = seq.wrapping_add(consumed);
}

/// Every sender's initial sequence number is FIRST_DATA_SEQ - 1 (its SYN's).
const FIRST_DATA_SEQ: u32 = 1_001;

/// Sets an Ethernet/IPv4/TCP frame's sequence number (frames `sequence` accepts).
fn set_seq(frame: &mut [u8], seq: u32) {
    if frame.len() < 34 || frame[12..14] != [0x08, 0x00] || frame[23] != 6 {
        return;
    }
    let tcp = 14 + usize::from(frame[14] & 0x0f) * 4;
    if let Some(field) = frame.get_mut(tcp + 4..tcp + 8) {
        field.copy_from_slice(&seq.to_be_bytes());
    }
}

impl Kernel {
    fn load() -> anyhow::Result<Kernel> {
        // Siphon first: its loader also lifts RLIMIT_MEMLOCK for older kernels. The options
        // not set here are the tests' (the live clock).
        let mut siphon = ebpf_object::load(LoadOptions {
            max_flows: MAX_FLOWS,
            head_capture_bytes: HEAD_CAPTURE_BYTES,
            ringbuf_bytes: ebpf_object::default_ringbuf_bytes(),
            ..LoadOptions::for_tests()
        })?;
        let (counters, flows) = kernel_maps::take_all(&mut siphon)?;
        let events = siphon
            .take_map(names::MAP_EVENTS)
            .context("map EVENTS missing from the eBPF object")?;
        let events = RingBuf::try_from(events).context("map EVENTS is not a ring buffer")?;
        let mut baselines = Ebpf::load(BASELINES).context("loading the baseline programs")?;
        for name in [PROG_FLOOR, PROG_LRU] {
            ebpf_object::classifier(&mut baselines, name)?
                .load()
                .with_context(|| format!("verifier rejected program {name}"))?;
        }
        Ok(Kernel {
            siphon,
            baselines,
            counters,
            flows,
            events,
            next_seq: std::collections::HashMap::new(),
        })
    }

    /// One BPF_PROG_TEST_RUN call; returns the kernel's mean time per repetition.
    fn run(&mut self, prog: Prog, frame: &[u8], repeat: u32) -> anyhow::Result<Duration> {
        self.run_frame(prog, frame, repeat, false)
    }

    fn run_frame(
        &mut self,
        prog: Prog,
        frame: &[u8],
        repeat: u32,
        resend: bool,
    ) -> anyhow::Result<Duration> {
        let mut frame = frame.to_vec();
        if resend {
            set_seq(&mut frame, FIRST_DATA_SEQ);
        } else {
            sequence(&mut self.next_seq, &mut frame);
        }
        let frame = frame.as_slice();
        let (ebpf, name) = match prog {
            Prog::Floor => (&mut self.baselines, PROG_FLOOR),
            Prog::LruCounter => (&mut self.baselines, PROG_LRU),
            Prog::Siphon => (&mut self.siphon, names::PROG_INGRESS),
        };
        let result = ebpf_object::classifier(ebpf, name)?
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat,
                ..TestRunOptions::new()
            })
            .with_context(|| format!("BPF_PROG_TEST_RUN of {name}"))?;
        ensure!(
            result.return_value == PASS,
            "{name} returned {} instead of TC_ACT_UNSPEC",
            result.return_value as i32
        );
        Ok(result.duration)
    }

    fn drain(&mut self, into: &mut Records) -> anyhow::Result<()> {
        while let Some(record) = self.events.next() {
            into.count(&record)?;
        }
        Ok(())
    }

    /// Plays the scenario's history, measures one short run and checks the flow's state, so
    /// the timed runs start warm and on the intended path.
    fn warm_up(&mut self, case: &Case, args: &Args) -> anyhow::Result<()> {
        for frame in &case.history {
            self.run(case.prog, frame, 1)?;
        }
        self.drain(&mut Records::default())?;
        self.measure(case, (args.repeat / 10).max(1), (args.samples / 10).max(1))?;
        let Some((flow, leaves)) = case.flow else {
            return Ok(());
        };
        let st = self.flow_state(&flow)?;
        let ex = st.exchange;
        ensure!(
            ex.phase == leaves.phase && ex.flags & leaves.flags == leaves.flags,
            "flow left in phase {} with flags {:#04x}, expected phase {} with flags {:#04x}",
            ex.phase,
            ex.flags,
            leaves.phase,
            leaves.flags
        );
        ensure!(
            st.handshake.ack_ns != 0,
            "the flow's handshake was not seen complete"
        );
        if let Some(want) = leaves.hello_got {
            ensure!(
                st.hello_got == want,
                "{} bytes of ClientHello gathered, expected {want}",
                st.hello_got
            );
        }
        Ok(())
    }

    /// One run of a scenario: its figure in ns per packet.
    fn measure(&mut self, case: &Case, repeat: u32, samples: u32) -> anyhow::Result<f64> {
        let mut emitted = Records::default();
        let ns = match case.method {
            Method::Batch => {
                let mean = self.run_frame(case.prog, &case.frame, repeat, case.resend)?;
                self.drain(&mut emitted)?;
                mean.as_nanos() as f64
            }
            Method::Single => {
                let mut times = Vec::with_capacity(samples as usize);
                for i in 1..=samples {
                    for frame in &case.restore {
                        self.run(case.prog, frame, 1)?;
                    }
                    let time = self.run_frame(case.prog, &case.frame, 1, case.resend)?;
                    times.push(time.as_nanos() as f64);
                    if i % DRAIN_EVERY == 0 {
                        self.drain(&mut emitted)?;
                    }
                }
                self.drain(&mut emitted)?;
                interquartile_mean(&mut times)
            }
        };
        let repetitions = match case.method {
            Method::Batch => repeat,
            Method::Single => samples,
        };
        let expected = case.emits.times(u64::from(repetitions));
        ensure!(
            emitted == expected,
            "ring-buffer records {emitted:?}, expected {expected:?}: \
             the program did not take the measured path (or lost records)"
        );
        Ok(ns)
    }

    fn flow_state(&self, flow: &Flow) -> anyhow::Result<FlowState> {
        let ports = [flow.client_port, flow.server_port];
        self.flows
            .snapshot()?
            .into_iter()
            .find(|(k, _)| ports.contains(&k.port_a) && ports.contains(&k.port_b))
            .map(|(_, st)| st)
            .with_context(|| format!("flow {}->{} missing", flow.client_port, flow.server_port))
    }
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

struct Row {
    name: &'static str,
    method: Method,
    prog: Prog,
    median: f64,
    min: f64,
    max: f64,
    runs: usize,
    target_ns: Option<f64>,
}

impl Row {
    fn new(case: &Case, runs: &mut [f64]) -> Row {
        let min = runs.iter().copied().fold(f64::INFINITY, f64::min);
        let max = runs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Row {
            name: case.name,
            method: case.method,
            prog: case.prog,
            median: median(runs),
            min,
            max,
            runs: runs.len(),
            target_ns: case.target_ns,
        }
    }
}

fn floor_of(rows: &[Row], method: Method) -> anyhow::Result<f64> {
    rows.iter()
        .find(|r| r.prog == Prog::Floor && r.method == method)
        .map(|r| r.median)
        .with_context(|| format!("no {} floor measured", method.label()))
}

/// A Siphon row's figures on the batch scale.
struct Scaled {
    /// `net + floor(batch)`: the median for batch rows; for single rows, the single floor
    /// swapped for the batch floor.
    shifted: f64,
    /// What the target is checked against: `shifted` for batch rows; for single-only rows,
    /// `shifted` less the single-shot excess; none for calibration rows.
    batch_scale: Option<f64>,
}

fn print_table(rows: &[Row]) -> anyhow::Result<()> {
    let batch_floor = floor_of(rows, Method::Batch)?;
    let single_floor = floor_of(rows, Method::Single)?;
    let shifted = |row: &Row| match row.method {
        Method::Batch => row.median,
        Method::Single => row.median - single_floor + batch_floor,
    };
    let measured_both_ways = |row: &Row| {
        rows.iter()
            .filter(|r| r.prog == Prog::Siphon && r.name == row.name)
            .count()
            == 2
    };
    // The single-shot excess: what a lone repeat=1 call adds beyond the floor's share (caches
    // the syscall cooled), from the paths measured both ways. The smallest of them, so the
    // estimates err high: every single-only path runs those paths' code and touches their data,
    // then more, so its own excess is at least as large.
    let calibrations: Vec<(&str, f64, f64)> = rows
        .iter()
        .filter(|r| r.prog == Prog::Siphon && r.method == Method::Single && measured_both_ways(r))
        .filter_map(|single| {
            rows.iter()
                .find(|r| r.name == single.name && r.method == Method::Batch)
                .map(|batch| (single.name, shifted(single), batch.median))
        })
        .collect();
    let excess = calibrations
        .iter()
        .map(|(_, single, batch)| single - batch)
        .fold(f64::INFINITY, f64::min);
    let excess = if excess.is_finite() { excess } else { 0.0 };
    let scale = |row: &Row| Scaled {
        shifted: shifted(row),
        batch_scale: match row.method {
            Method::Batch => Some(row.median),
            Method::Single if measured_both_ways(row) => None,
            Method::Single => Some(shifted(row) - excess),
        },
    };

    let names: Vec<String> = rows
        .iter()
        .map(|row| match row.prog {
            Prog::Siphon => format!("siphon: {}", row.name),
            _ => row.name.to_owned(),
        })
        .collect();
    let width = names.iter().map(String::len).max().unwrap_or(0);
    let mut out = String::new();
    writeln!(
        out,
        "{:<width$}  {:<6} {:>7} {:>7} {:>7} {:>4} {:>7} {:>7} {:>7} {:>6}  status",
        "scenario (ns/packet)",
        "method",
        "median",
        "min",
        "max",
        "runs",
        "net",
        "shifted",
        "batch~",
        "target"
    )?;
    let mut misses = 0;
    for (row, name) in rows.iter().zip(&names) {
        let floor = match row.method {
            Method::Batch => batch_floor,
            Method::Single => single_floor,
        };
        let net = row.median - floor;
        let (shifted_col, scale_col, target_col, status) = match (row.prog, row.target_ns) {
            (Prog::Siphon, Some(target)) => {
                let s = scale(row);
                let (scale_col, status) = match s.batch_scale {
                    Some(v) => {
                        let ok = v <= target;
                        misses += usize::from(!ok);
                        (format!("{v:.1}"), if ok { "ok" } else { "MISS" })
                    }
                    None => ("-".to_owned(), "calibration"),
                };
                (
                    format!("{:.1}", s.shifted),
                    scale_col,
                    format!("<={target:.0}"),
                    status,
                )
            }
            _ => ("-".to_owned(), "-".to_owned(), "-".to_owned(), "baseline"),
        };
        let net_col = if row.prog == Prog::Floor {
            "-".to_owned()
        } else {
            format!("{net:.1}")
        };
        writeln!(
            out,
            "{name:<width$}  {:<6} {:>7.1} {:>7.1} {:>7.1} {:>4} {net_col:>7} {shifted_col:>7} \
             {scale_col:>7} {target_col:>6}  {status}",
            row.method.label(),
            row.median,
            row.min,
            row.max,
            row.runs,
        )?;
    }
    writeln!(
        out,
        "\nmedian, min, max: over the runs; a batch run's figure is the kernel's mean over its \
         repetitions,\n  a single run's the mean of the middle half of its repeat=1 samples.\n\
         net: median minus the floor measured the same way: the program's own cost.\n\
         shifted: net + floor(batch): for single rows the single floor ({single_floor:.1}) is \
         swapped for the\n  batch floor ({batch_floor:.1}).\n\
         batch~: the figure held to the target, on the batch scale the targets were set on: the \
         median for\n  batch rows; for single-only rows, shifted less the single-shot excess \
         ({excess:.1} ns, below).\n\
         targets: {TARGET_EXISTING_FLOW_NS:.0} ns on existing-flow paths (ACK, retransmission, \
         mid-response), {TARGET_CAPTURE_NS:.0} ns where\n  a payload is captured (request \
         start; the ClientHellos are held to the same capture budget)."
    )?;
    writeln!(
        out,
        "single-shot excess: a lone repeat=1 call runs on caches the syscall cooled, which a \
         loop does not;\n  the paths measured both ways show how much that adds beyond the \
         floor's share (shifted single\n  minus batch); the smallest is used:"
    )?;
    for (name, single, batch) in &calibrations {
        writeln!(
            out,
            "  {name}: single {single:.1} vs batch {batch:.1} ({:+.1})",
            single - batch
        )?;
    }
    if misses == 0 {
        writeln!(out, "all targets met")?;
    } else {
        writeln!(
            out,
            "{misses} target(s) MISSED (a benchmark: reported, not a failure)"
        )?;
    }
    print!("{out}");
    Ok(())
}

fn print_kernel_counters(kernel: &Kernel) -> anyhow::Result<()> {
    let values = kernel.counters.kernel_counters()?;
    let list = |kind: CounterKind, all: bool| -> String {
        let items: Vec<String> = KernelCounter::ALL
            .iter()
            .filter_map(|c| {
                let (k, label) = c.describe();
                let v = values[*c as usize];
                (k == kind && (all || v != 0)).then(|| format!("{label} {v}"))
            })
            .collect();
        if items.is_empty() {
            "none".to_owned()
        } else {
            items.join(", ")
        }
    };
    let lost: u64 = KernelCounter::ALL
        .iter()
        .filter(|c| c.describe().0 == CounterKind::Loss)
        .map(|c| values[*c as usize])
        .sum();
    println!("\nkernel counters after the bench (KERNEL_COUNTERS, all CPUs):");
    println!("  losses:      {}", list(CounterKind::Loss, true));
    println!(
        "  truncations: {}\n               (heads expected: each request segment is longer \
         than the {HEAD_CAPTURE_BYTES}-byte head capture)",
        list(CounterKind::Truncation, true)
    );
    println!("  skips:       {}", list(CounterKind::Skip, false));
    println!(
        "  events:      {}\n               (retransmitted bytes expected: the retransmission \
         scenario's repetitions)",
        list(CounterKind::Event, true)
    );
    if lost == 0 {
        println!("no record or flow was lost: every figure is the path that keeps its data");
    } else {
        println!("WARNING: {lost} loss(es): some figures may include a failure path");
    }
    Ok(())
}

fn print_header(args: &Args, pinned: Option<usize>) {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "?".to_owned())
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "?".to_owned());
    println!(
        "siphon-bench: kernel {}, CPU {cpu}, JIT {}, {}",
        read("/proc/sys/kernel/osrelease"),
        read("/proc/sys/net/core/bpf_jit_enable"),
        match pinned {
            Some(cpu) => format!("pinned to CPU {cpu}"),
            None => "not pinned".to_owned(),
        }
    );
    println!(
        "siphon run's defaults: flow table {MAX_FLOWS} entries, head capture \
         {HEAD_CAPTURE_BYTES} B, ring buffer {} KiB (1 MiB per online CPU)",
        ebpf_object::default_ringbuf_bytes() >> 10
    );
    if read("/proc/sys/kernel/bpf_stats_enabled") == "1" {
        println!(
            "WARNING: kernel.bpf_stats_enabled=1 adds two clock reads to every program run; \
             figures are inflated"
        );
    }
    println!(
        "{} runs per scenario, interleaved.\n\
         batch:  {} in-kernel repetitions per run (the kernel's mean), for paths a repetition \
         leaves unchanged.\n\
         single: {} repeat=1 calls per run, each after untimed frames that restore the state; \
         the mean\n        of their middle half.\n",
        args.runs, args.repeat, args.samples
    );
}

/// Pins the process to the highest-numbered CPU it may run on, so every call sees the same
/// per-CPU map slots and caches, and successive benches the same CPU (device interrupts tend to
/// land on CPU 0). Best effort: without it the figures are only noisier.
fn pin_to_one_cpu() -> Option<usize> {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut allowed: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `allowed` is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&allowed), &mut allowed) };
    if rc != 0 {
        return None;
    }
    let setsize = 8 * std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: CPU_ISSET reads one bit inside `allowed`; cpu < its size in bits.
    let cpu = (0..setsize)
        .rev()
        .find(|&cpu| unsafe { libc::CPU_ISSET(cpu, &allowed) })?;
    // SAFETY: plain data, all-zero is the empty set.
    let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes one bit inside `one`; cpu < its size in bits.
    unsafe { libc::CPU_SET(cpu, &mut one) };
    // SAFETY: `one` is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&one), &one) };
    (rc == 0).then_some(cpu)
}

/// The mean of the middle half: as deaf as the median to the few samples an interrupt or a
/// softirq run lands in, but it averages out the clock's steps, which the median keeps (with a
/// 10 ns step, a median flips between 60 and 70 where the mean of the middle half says 65).
fn interquartile_mean(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let quarter = values.len() / 4;
    let middle = &values[quarter..values.len() - quarter];
    middle.iter().sum::<f64>() / middle.len() as f64
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

// ---------------------------------------------------------------------------------------------
// Frames, built by hand: Ethernet + IPv4 + TCP with the options Linux sends
// ---------------------------------------------------------------------------------------------

const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const CLIENT_IP: [u8; 4] = [10, 0, 0, 1];
const SERVER_IP: [u8; 4] = [10, 0, 0, 2];
const HTTP_PORT: u16 = 8000;
const TLS_PORT: u16 = 443;
/// Payload of a full segment: 1500 MTU - 20 IPv4 - 20 TCP - 12 timestamps option.
const MSS: usize = 1448;

/// MSS 1460, SACK permitted, timestamps, NOP, window scale 7: a Linux SYN's options.
const SYN_OPTIONS: [u8; 20] = [
    2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
];
/// NOP, NOP, timestamps: every later segment of a Linux connection.
const TS_OPTIONS: [u8; 12] = [1, 1, 8, 10, 0, 0, 0, 2, 0, 0, 0, 1];

#[derive(Clone, Copy, Debug)]
struct Flow {
    client_port: u16,
    server_port: u16,
}

impl Flow {
    fn new(client_port: u16, server_port: u16) -> Flow {
        Flow {
            client_port,
            server_port,
        }
    }

    fn client_sends(&self, flags: u8, payload: &[u8]) -> Vec<u8> {
        tcp_frame(
            (CLIENT_MAC, CLIENT_IP, self.client_port),
            (SERVER_MAC, SERVER_IP, self.server_port),
            flags,
            payload,
        )
    }

    fn server_sends(&self, flags: u8, payload: &[u8]) -> Vec<u8> {
        tcp_frame(
            (SERVER_MAC, SERVER_IP, self.server_port),
            (CLIENT_MAC, CLIENT_IP, self.client_port),
            flags,
            payload,
        )
    }

    /// SYN, SYN-ACK, ACK.
    fn handshake(&self) -> Vec<Vec<u8>> {
        vec![
            self.client_sends(tcp_flag::SYN, &[]),
            self.server_sends(tcp_flag::SYN | tcp_flag::ACK, &[]),
            self.client_sends(tcp_flag::ACK, &[]),
        ]
    }
}

/// A connection that has sent one request and is streaming its response: handshake, request,
/// response head, then a data segment. The measured steady states start from here.
fn http_history(flow: &Flow) -> Vec<Vec<u8>> {
    let mut frames = flow.handshake();
    frames.push(flow.client_sends(tcp_flag::ACK | tcp_flag::PSH, &request_segment()));
    frames.push(flow.server_sends(tcp_flag::ACK | tcp_flag::PSH, RESPONSE_HEAD));
    frames.push(flow.server_sends(tcp_flag::ACK, &response_data()));
    frames
}

type Endpoint = ([u8; 6], [u8; 4], u16);

/// Sequence numbers are set when a frame is sent (`sequence`); acknowledgement numbers stay
/// fixed and the TCP checksum zero, as the program reads neither. The IPv4 checksum is real.
fn tcp_frame(src: Endpoint, dst: Endpoint, flags: u8, payload: &[u8]) -> Vec<u8> {
    let options: &[u8] = if flags & tcp_flag::SYN != 0 {
        &SYN_OPTIONS
    } else {
        &TS_OPTIONS
    };
    let tcp_len = 20 + options.len();
    let ip_len = 20 + tcp_len + payload.len();
    let mut f = Vec::with_capacity(14 + ip_len);
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let ip_start = f.len();
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&(ip_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]); // id, DF, TTL, TCP, checksum
    f.extend_from_slice(&src.1);
    f.extend_from_slice(&dst.1);
    let csum = ipv4_checksum(&f[ip_start..]);
    f[ip_start + 10..ip_start + 12].copy_from_slice(&csum.to_be_bytes());
    f.extend_from_slice(&src.2.to_be_bytes());
    f.extend_from_slice(&dst.2.to_be_bytes());
    f.extend_from_slice(&1_000u32.to_be_bytes());
    let ack = if flags & tcp_flag::ACK != 0 {
        2_000u32
    } else {
        0
    };
    f.extend_from_slice(&ack.to_be_bytes());
    f.push(((tcp_len / 4) as u8) << 4);
    f.push(flags);
    f.extend_from_slice(&502u16.to_be_bytes()); // window (scaled by 2^7: 64 KB)
    f.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    f.extend_from_slice(options);
    f.extend_from_slice(payload);
    f
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

// ---------------------------------------------------------------------------------------------
// Payloads
// ---------------------------------------------------------------------------------------------

/// The first segment of a streaming chat-completion request from the OpenAI Python client: the
/// head and the start of a body longer than the segment, as conversations with a system prompt
/// are. 1448 bytes, more than the 1024-byte head capture: the costliest capture by default.
fn request_segment() -> Vec<u8> {
    let mut body = String::from(
        r#"{"model":"meta-llama/Llama-3.1-70B-Instruct","stream":true,"max_tokens":1024,"temperature":0.2,"messages":[{"role":"system","content":""#,
    );
    while body.len() < 3 * MSS {
        body.push_str("You are a careful assistant for site reliability engineers. ");
    }
    body.push_str(r#""},{"role":"user","content":"Why is p99 time to first token up?"}]}"#);
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\n\
         Host: inference.internal:8000\r\n\
         Accept-Encoding: gzip, deflate\r\n\
         Connection: keep-alive\r\n\
         Accept: application/json\r\n\
         Content-Type: application/json\r\n\
         User-Agent: OpenAI/Python 1.54.4\r\n\
         X-Stainless-Lang: python\r\n\
         X-Stainless-Package-Version: 1.54.4\r\n\
         X-Stainless-Runtime: CPython\r\n\
         Authorization: Bearer sk-bench-7f3a9c2e5b8d4f1a6e0c3b9d2a7f5e81\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    let mut segment = (head + &body).into_bytes();
    segment.truncate(MSS);
    segment
}

const RESPONSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\n\
    date: Thu, 01 Jan 2026 00:00:00 GMT\r\n\
    server: uvicorn\r\n\
    content-type: text/event-stream; charset=utf-8\r\n\
    transfer-encoding: chunked\r\n\r\n";

/// A full segment of a server-sent-events token stream (not starting with "HTTP/").
fn response_data() -> Vec<u8> {
    let event = br#"data: {"id":"chatcmpl-8f2c","object":"chat.completion.chunk","model":"meta-llama/Llama-3.1-70B-Instruct","choices":[{"index":0,"delta":{"content":" latency"}}]}

"#;
    event.iter().copied().cycle().take(MSS).collect()
}

/// curl/OpenSSL's ClientHello, padded to 512 handshake bytes: 517 with the record header.
const HELLO_CLASSIC_LEN: usize = 517;
/// A browser's hello with a post-quantum key share: more than one segment.
const HELLO_PQ_LEN: usize = 1800;
/// X25519MLKEM768 key share: group 0x11ec, 1216 bytes.
const ML_KEM_KEY_SHARE: (u16, usize) = (0x11ec, 1216);

/// A TLS 1.3 ClientHello in one record of exactly `record_len` bytes (padding extension), with
/// an X25519 key share plus `extra_shares` (group, key length).
fn client_hello(record_len: usize, extra_shares: &[(u16, usize)]) -> Vec<u8> {
    fn ext(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
    }
    fn u16s(values: &[u16]) -> Vec<u8> {
        let mut v = ((values.len() * 2) as u16).to_be_bytes().to_vec();
        values
            .iter()
            .for_each(|x| v.extend_from_slice(&x.to_be_bytes()));
        v
    }
    let mut exts = Vec::new();
    let host = b"api.inference.example";
    let mut sni = ((host.len() + 3) as u16).to_be_bytes().to_vec();
    sni.push(0);
    sni.extend_from_slice(&(host.len() as u16).to_be_bytes());
    sni.extend_from_slice(host);
    ext(&mut exts, 0x0000, &sni);
    ext(&mut exts, 0x000b, &[3, 0, 1, 2]);
    let mut groups = vec![0x001d, 0x0017, 0x001e, 0x0019, 0x0018];
    groups.splice(0..0, extra_shares.iter().map(|(g, _)| *g));
    ext(&mut exts, 0x000a, &u16s(&groups));
    ext(&mut exts, 0x0023, &[]);
    ext(&mut exts, 0x0010, b"\x00\x0c\x02h2\x08http/1.1");
    ext(&mut exts, 0x0016, &[]);
    ext(&mut exts, 0x0017, &[]);
    ext(
        &mut exts,
        0x000d,
        &u16s(&[
            0x0403, 0x0503, 0x0603, 0x0807, 0x0808, 0x0804, 0x0805, 0x0806, 0x0401, 0x0501, 0x0601,
        ]),
    );
    ext(&mut exts, 0x002b, &[4, 0x03, 0x04, 0x03, 0x03]);
    ext(&mut exts, 0x002d, &[1, 1]);
    let mut shares = Vec::new();
    for &(group, len) in extra_shares.iter().chain(&[(0x001d, 32)]) {
        shares.extend_from_slice(&group.to_be_bytes());
        shares.extend_from_slice(&(len as u16).to_be_bytes());
        shares.extend((0..len).map(|i| (i * 7 + 3) as u8));
    }
    let mut key_share = (shares.len() as u16).to_be_bytes().to_vec();
    key_share.extend_from_slice(&shares);
    ext(&mut exts, 0x0033, &key_share);

    let mut body = vec![0x03, 0x03];
    body.extend((0..32u8).map(|i| i.wrapping_mul(37)));
    body.push(32);
    body.extend((0..32u8).map(|i| i.wrapping_mul(11)));
    body.extend_from_slice(&u16s(&[
        0x1302, 0x1303, 0x1301, 0xc02c, 0xc030, 0x009f, 0xcca9, 0xcca8, 0xccaa, 0xc02b, 0xc02f,
        0x009e, 0xc024, 0xc028, 0x006b, 0xc023, 0xc027, 0x0067, 0xc00a, 0xc014, 0x0039, 0xc009,
        0xc013, 0x0033, 0x009d, 0x009c, 0x003d, 0x003c, 0x0035, 0x002f, 0x00ff,
    ]));
    body.extend_from_slice(&[1, 0]);
    // Record 5 + handshake header 4 + body + extensions length 2 + extensions; padding
    // (4 bytes of extension header + n) fills the rest.
    let unpadded = 5 + 4 + body.len() + 2 + exts.len();
    if let Some(pad) = record_len.checked_sub(unpadded + 4) {
        ext(&mut exts, 0x0015, &vec![0; pad]);
    }
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);

    let mut hello = vec![0x16, 0x03, 0x01];
    hello.extend_from_slice(&((body.len() + 4) as u16).to_be_bytes());
    hello.push(1);
    hello.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hello.extend_from_slice(&body);
    hello
}

#[cfg(test)]
mod tests {
    use super::*;
    use siphon_agent::decode::{parse_request_head, ClientHello};

    #[test]
    fn hellos_have_their_sizes_and_decode() {
        for (len, shares) in [
            (HELLO_CLASSIC_LEN, &[][..]),
            (HELLO_PQ_LEN, &[ML_KEM_KEY_SHARE][..]),
        ] {
            let hello = client_hello(len, shares);
            assert_eq!(hello.len(), len);
            let parsed = ClientHello::parse_records(&hello).expect("decodes");
            assert_eq!(parsed.sni.as_deref(), Some("api.inference.example"));
            assert_eq!(parsed.supported_versions, vec![0x0304, 0x0303]);
        }
    }

    #[test]
    fn request_segment_is_a_full_segment_with_a_decodable_head() {
        let segment = request_segment();
        assert_eq!(segment.len(), MSS);
        assert!(segment.starts_with(b"POST /v1/chat/completions HTTP/1.1\r\n"));
        let head = parse_request_head(&segment, None).expect("decodes");
        assert_eq!(head.path, "/v1/chat/completions");
    }

    #[test]
    fn frames_have_consistent_lengths_and_checksum() {
        let flow = Flow::new(50_000, HTTP_PORT);
        let frame = flow.server_sends(tcp_flag::ACK, &response_data());
        assert_eq!(frame.len(), 14 + 20 + 32 + MSS);
        assert_eq!(frame.len(), 1514, "a full Ethernet frame");
        assert_eq!(
            u16::from_be_bytes([frame[16], frame[17]]) as usize,
            frame.len() - 14
        );
        // A correct header sums to 0xffff, so its checksum over itself is 0.
        assert_eq!(ipv4_checksum(&frame[14..34]), 0);
        let syn = flow.client_sends(tcp_flag::SYN, &[]);
        assert_eq!(
            syn[14 + 20 + 12] >> 4,
            10,
            "SYN header with 20 bytes of options"
        );
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn interquartile_mean_drops_the_outer_quarters() {
        let mut steps = [60.0, 70.0, 60.0, 70.0, 60.0, 70.0, 9_000.0, 10.0];
        assert_eq!(interquartile_mean(&mut steps), 65.0);
        assert_eq!(interquartile_mean(&mut [42.0]), 42.0);
        assert!(interquartile_mean(&mut []).is_nan());
    }
}
