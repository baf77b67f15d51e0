//! Ring-buffer loss at a given request rate, with the agent's reader.
//!
//! Siphon is loaded as `siphon run` loads it (live clock, default ring size). A producer
//! thread replays keep-alive HTTP requests over [`FLOWS`] established flows through the
//! kernel program with test_run, paced to the rate: each request is the client's request
//! segment (a head capture) and the server's response head (a head capture, and the previous
//! exchange's record). A reader thread does what the agent's event thread does: poll the ring
//! with the agent's timeout, hand every record to a pipeline with the detector attached. Loss is
//! the kernel's `ringbuf_full` counter over the run: counted, never silent. Producer and reader
//! may use every CPU (the bench itself is pinned to one).

use std::{
    os::fd::AsRawFd as _,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use agent_common::{names, tcp_flag, KernelCounter};
use anyhow::{ensure, Context as _};
use aya::{
    maps::RingBuf,
    programs::{TestRun as _, TestRunOptions},
};
use siphon_agent::kernel::{
    maps as kernel_maps,
    object::{self as ebpf_object, LoadOptions},
};

use super::Figure;
use crate::{
    frames::{
        sequence, tcp_frame, NextSeq, CLIENT_MAC, HTTP_PORT, RESPONSE_HEAD, SERVER_IP, SERVER_MAC,
    },
    live::traffic::unpin,
    MAX_FLOWS, PASS,
};

pub(crate) const RATES: [u32; 3] = [10_000, 50_000, 100_000];
/// No loss at this rate.
const TARGET_LOSSLESS_RATE: u32 = 50_000;
const FLOWS: usize = 2_000;
const SECONDS: f64 = 2.0;
/// The agent's reader poll timeout.
const READ_POLL_MS: i32 = ebpf_object::READ_POLL.as_millis() as i32;

struct Outcome {
    achieved: f64,
    lost: u64,
    records: u64,
}

pub(crate) fn measure(runs: u32) -> anyhow::Result<Vec<Figure>> {
    let mut per_rate: Vec<Vec<Outcome>> = RATES.iter().map(|_| Vec::new()).collect();
    // Interleaved: every rate once, then again, so drift spreads over all of them.
    for _ in 0..runs.min(3) {
        for (i, rate) in RATES.iter().enumerate() {
            per_rate[i].push(one(*rate).with_context(|| format!("loss at {rate} requests/s"))?);
        }
    }
    Ok(RATES
        .iter()
        .zip(per_rate)
        .map(|(rate, outcomes)| {
            let mut lost: Vec<f64> = outcomes.iter().map(|o| o.lost as f64).collect();
            let achieved: Vec<f64> = outcomes.iter().map(|o| o.achieved).collect();
            let records: u64 = outcomes.iter().map(|o| o.records).sum();
            let lost_total: u64 = outcomes.iter().map(|o| o.lost).sum();
            let fig = Figure::new(
                format!("ring-buffer records lost at {rate} requests/s"),
                "records",
                &mut lost,
            )
            .note(format!(
                "achieved {:.0}-{:.0} requests/s, {records} records read, {lost_total} lost \
                 (kernel counter) over {} runs of {SECONDS:.0} s",
                achieved.iter().copied().fold(f64::INFINITY, f64::min),
                achieved.iter().copied().fold(0.0, f64::max),
                outcomes.len()
            ));
            if *rate <= TARGET_LOSSLESS_RATE {
                fig.target("0", lost_total == 0)
            } else {
                fig.target("counted", true)
            }
        })
        .collect())
}

fn one(rate: u32) -> anyhow::Result<Outcome> {
    let mut ebpf = ebpf_object::load(LoadOptions {
        max_flows: MAX_FLOWS,
        ringbuf_bytes: ebpf_object::default_ringbuf_bytes(),
        ..LoadOptions::for_tests()
    })?;
    let (counters, _flows) = kernel_maps::take_all(&mut ebpf)?;
    let ring = RingBuf::try_from(
        ebpf.take_map(names::MAP_EVENTS)
            .context("map EVENTS missing from the eBPF object")?,
    )?;
    let program = ebpf_object::classifier(&mut ebpf, names::PROG_INGRESS)?;
    let mut next_seq = NextSeq::new();
    let mut send = |frame: &[u8]| -> anyhow::Result<()> {
        let mut frame = frame.to_vec();
        sequence(&mut next_seq, &mut frame);
        let r = program
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                ..TestRunOptions::new()
            })
            .context("BPF_PROG_TEST_RUN")?;
        ensure!(r.return_value == PASS, "Siphon did not pass a frame");
        Ok(())
    };
    let flows: Vec<_> = (0..FLOWS)
        .map(|c| {
            let [_, a, b, d] = (c as u32).to_be_bytes();
            (
                (CLIENT_MAC, [10, 64 | (a & 0x3f), b, d], 30_000u16),
                (SERVER_MAC, SERVER_IP, HTTP_PORT),
            )
        })
        .collect();
    use tcp_flag::{ACK, PSH, SYN};
    for (cl, sv) in &flows {
        send(&tcp_frame(*cl, *sv, SYN, &[]))?;
        send(&tcp_frame(*sv, *cl, SYN | ACK, &[]))?;
        send(&tcp_frame(*cl, *sv, ACK, &[]))?;
    }
    let requests: Vec<(Vec<u8>, Vec<u8>)> = flows
        .iter()
        .enumerate()
        .map(|(c, (cl, sv))| {
            let head = format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nUser-Agent: curl/8.5.0\r\n\
                 Authorization: Bearer sk-loss-{c:020}\r\nContent-Length: 2\r\n\r\n{{}}"
            );
            (
                tcp_frame(*cl, *sv, ACK | PSH, head.as_bytes()),
                tcp_frame(*sv, *cl, ACK | PSH, RESPONSE_HEAD),
            )
        })
        .collect();
    let lost_before = counters.kernel_counters()?[KernelCounter::LossRingbufFull as usize];

    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = Arc::clone(&stop);
        thread::Builder::new()
            .name("bench-reader".into())
            .spawn(move || -> anyhow::Result<u64> {
                unpin();
                read(ring, &stop)
            })
            .context("starting the reader")?
    };
    unpin();
    let started = Instant::now();
    let mut sent = 0u64;
    let deadline = Duration::from_secs_f64(SECONDS);
    let mut result = Ok(());
    while started.elapsed() < deadline {
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        if sent >= due {
            thread::sleep(Duration::from_micros(200));
            continue;
        }
        let (req, resp) = &requests[sent as usize % requests.len()];
        if let Err(e) = send(req).and_then(|()| send(resp)) {
            result = Err(e);
            break;
        }
        sent += 1;
    }
    let achieved = sent as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Release);
    let records = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader thread panicked"))??;
    result?;
    let lost = counters.kernel_counters()?[KernelCounter::LossRingbufFull as usize]
        .saturating_sub(lost_before);
    Ok(Outcome {
        achieved,
        lost,
        records,
    })
}

/// The agent's reader loop: poll, drain into the pipeline with the detector, until stopped.
fn read(mut ring: RingBuf<aya::maps::MapData>, stop: &AtomicBool) -> anyhow::Result<u64> {
    let mut pipeline = super::pipeline(None)?;
    let fd = ring.as_raw_fd();
    let mut records = 0u64;
    loop {
        let done = stop.load(Ordering::Acquire);
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut pfd, 1, READ_POLL_MS) };
        while let Some(item) = ring.next() {
            pipeline.on_record(&item);
            records += 1;
        }
        if done {
            return Ok(records);
        }
    }
}
