//! Siphon and the baselines in the kernel: loading, BPF_PROG_TEST_RUN calls, draining the ring.

use std::time::Duration;

use agent_common::{names, FlowState};
use anyhow::{ensure, Context as _};
use aya::{
    maps::{MapData, RingBuf},
    programs::{TestRun as _, TestRunOptions},
    Ebpf,
};
use siphon_agent::kernel::{
    maps::{self as kernel_maps, CounterMaps, FlowMaps},
    object::{self as ebpf_object, LoadOptions},
};

use crate::{
    frames::{sequence, set_client, set_seq, Flow, NextSeq, FIRST_DATA_SEQ},
    report::interquartile_mean,
    scenarios::{Case, Method, Prog, Records},
    BASELINES, DRAIN_EVERY, MAX_FLOWS, PASS, PROG_FLOOR, PROG_LRU,
};

pub(crate) struct Kernel {
    siphon: Ebpf,
    baselines: Ebpf,
    pub(crate) counters: CounterMaps,
    flows: FlowMaps,
    events: RingBuf<MapData>,
    /// Next TCP sequence number per sender (IPv4 address, port): every frame is sent with the
    /// sequence number a real connection would use, so payload is new data, not a
    /// retransmission (which Siphon recognises and leaves out of exchanges).
    next_seq: NextSeq,
    /// Client addresses handed out to new-flow samples so far: each sample gets the next one.
    new_flows: u32,
}

impl Kernel {
    pub(crate) fn load(head_capture_bytes: u32, ringbuf_bytes: u32) -> anyhow::Result<Kernel> {
        // Siphon first: its loader also lifts RLIMIT_MEMLOCK for older kernels. The options
        // not set here are the tests' (the live clock).
        let mut siphon = ebpf_object::load(LoadOptions {
            max_flows: MAX_FLOWS,
            head_capture_bytes,
            ringbuf_bytes,
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
            next_seq: NextSeq::new(),
            new_flows: 0,
        })
    }

    /// One BPF_PROG_TEST_RUN call; returns the kernel's mean time per repetition.
    pub(crate) fn run(
        &mut self,
        prog: Prog,
        frame: &[u8],
        repeat: u32,
    ) -> anyhow::Result<Duration> {
        self.run_frame(prog, frame, repeat, false)
    }

    pub(crate) fn run_frame(
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
        test_run(ebpf, name, frame, repeat)
    }

    pub(crate) fn drain(&mut self, into: &mut Records) -> anyhow::Result<()> {
        while let Some(record) = self.events.next() {
            into.count(&record)?;
        }
        Ok(())
    }

    /// Plays the scenario's history, measures one short run and checks the flow's state, so
    /// the timed runs start warm and on the intended path.
    pub(crate) fn warm_up(&mut self, case: &Case, repeat: u32, samples: u32) -> anyhow::Result<()> {
        for frame in &case.history {
            self.run(case.prog, frame, 1)?;
        }
        self.drain(&mut Records::default())?;
        self.measure(case, (repeat / 10).max(1), (samples / 10).max(1))?;
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
    pub(crate) fn measure(
        &mut self,
        case: &Case,
        repeat: u32,
        samples: u32,
    ) -> anyhow::Result<f64> {
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
                    let time = if case.new_flow_per_sample {
                        let mut frame = case.frame.clone();
                        self.new_flows += 1;
                        set_client(&mut frame, self.new_flows);
                        self.run_frame(case.prog, &frame, 1, case.resend)?
                    } else {
                        self.run_frame(case.prog, &case.frame, 1, case.resend)?
                    };
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

    pub(crate) fn flow_state(&self, flow: &Flow) -> anyhow::Result<FlowState> {
        let ports = [flow.client_port, flow.server_port];
        self.flows
            .snapshot()?
            .into_iter()
            .find(|(k, _)| ports.contains(&k.port_a) && ports.contains(&k.port_b))
            .map(|(_, st)| st)
            .with_context(|| format!("flow {}->{} missing", flow.client_port, flow.server_port))
    }
}

/// One BPF_PROG_TEST_RUN call of program `name`; the kernel's mean time per repetition. The
/// program must pass the packet.
pub(crate) fn test_run(
    ebpf: &mut Ebpf,
    name: &str,
    frame: &[u8],
    repeat: u32,
) -> anyhow::Result<Duration> {
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
