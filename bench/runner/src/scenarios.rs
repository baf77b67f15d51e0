//! The scenarios: which program, which frame, how it is timed, and what it must leave behind.

use agent_common::{exchange_flag, phase, record_kind, tcp_flag};
use anyhow::{bail, Context as _};

use crate::frames::{
    client_hello, http_history, request_segment, response_data, udp_frame, Flow, HELLO_CLASSIC_LEN,
    HELLO_PQ_LEN, HTTP_PORT, ML_KEM_KEY_SHARE, MSS, RESPONSE_HEAD, TLS_PORT,
};

/// Per-packet budget on flows that already exist (ACKs, data inside a turn, UDP).
pub(crate) const TARGET_EXISTING_FLOW_NS: f64 = 90.0;
/// ... and at most this many times the minimal LRU counter's figure of the same run.
pub(crate) const TARGET_EXISTING_FLOW_RATIO: f64 = 1.4;
/// Budget for a packet that captures a payload (request or response start, ClientHello).
pub(crate) const TARGET_CAPTURE_NS: f64 = 200.0;
/// Budget for the first packet of a flow the table has not seen.
pub(crate) const TARGET_NEW_FLOW_NS: f64 = 250.0;

/// What a scenario's figure is held to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Target {
    None,
    ExistingFlow,
    Capture,
    NewFlow,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Prog {
    Floor,
    LruCounter,
    Siphon,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Method {
    Batch,
    Single,
}

impl Method {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Method::Batch => "batch",
            Method::Single => "single",
        }
    }
}

/// Ring-buffer records, by kind.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub(crate) struct Records {
    pub(crate) exchange: u64,
    pub(crate) payload: u64,
    pub(crate) syn: u64,
}

impl Records {
    pub(crate) fn times(self, n: u64) -> Records {
        Records {
            exchange: self.exchange * n,
            payload: self.payload * n,
            syn: self.syn * n,
        }
    }

    pub(crate) fn count(&mut self, record: &[u8]) -> anyhow::Result<()> {
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
pub(crate) struct Leaves {
    pub(crate) phase: u8,
    /// Exchange flags that must all be set.
    pub(crate) flags: u8,
    /// Bytes of ClientHello gathered, where a hello is measured.
    pub(crate) hello_got: Option<u16>,
}

pub(crate) struct Case {
    pub(crate) name: &'static str,
    pub(crate) prog: Prog,
    pub(crate) method: Method,
    /// Frames run once before measuring: the flow's history up to the measured state.
    pub(crate) history: Vec<Vec<u8>>,
    /// Single only: untimed frames run before each sample to restore the measured state.
    pub(crate) restore: Vec<Vec<u8>>,
    /// The measured frame.
    pub(crate) frame: Vec<u8>,
    /// Send the measured frame with its sender's first data sequence number, which the history
    /// already carried: a retransmission, however often it is repeated.
    pub(crate) resend: bool,
    /// Records the restore frames and the measured frame emit, per repetition or sample.
    pub(crate) emits: Records,
    /// The flow the scenario uses (Siphon only) and the state it must be left in.
    pub(crate) flow: Option<(Flow, Leaves)>,
    /// The target the figure is held to.
    pub(crate) target: Target,
    /// Single only: each sample sends the frame from a client address of its own, so every
    /// sample meets a flow the table has not seen (the table's insert path).
    pub(crate) new_flow_per_sample: bool,
}

pub(crate) fn cases() -> Vec<Case> {
    // A flow per path: none changes another's state. (A path measured both ways uses its flow
    // twice; it leaves the flow as it found it.)
    let ack_flow = Flow::new(50_001, HTTP_PORT);
    let data_flow = Flow::new(50_002, HTTP_PORT);
    let request_flow = Flow::new(50_003, HTTP_PORT);
    let hello_flow = Flow::new(50_004, TLS_PORT);
    let pq_hello_flow = Flow::new(50_005, TLS_PORT);
    let resend_flow = Flow::new(50_006, HTTP_PORT);
    let response_flow = Flow::new(50_007, HTTP_PORT);
    let new_flow = Flow::new(50_008, HTTP_PORT);
    const UDP_CLIENT_PORT: u16 = 50_009;
    const UDP_SERVER_PORT: u16 = 53;

    let in_response = Leaves {
        phase: phase::RESPONSE,
        flags: exchange_flag::HTTP_REQUEST | exchange_flag::HTTP_RESPONSE,
        hello_got: None,
    };
    let ack = ack_flow.client_sends(tcp_flag::ACK, &[]);
    let mid_response = data_flow.server_sends(tcp_flag::ACK, &response_data());
    let resent = resend_flow.server_sends(tcp_flag::ACK, &response_data());
    let request = request_flow.client_sends(tcp_flag::ACK | tcp_flag::PSH, &request_segment());
    let udp = udp_frame(UDP_CLIENT_PORT, UDP_SERVER_PORT, 40);
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
        target: Target::None,
        new_flow_per_sample: false,
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
        target: Target::ExistingFlow,
        new_flow_per_sample: false,
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
            target: Target::Capture,
            new_flow_per_sample: false,
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
        Case {
            name: "UDP datagram, 40 B, existing flow",
            history: vec![udp.clone()],
            frame: udp,
            flow: None,
            ..steady("", Method::Batch, &ack_flow, &ack)
        },
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
            name: "new flow: first packet of an unseen 5-tuple (ACK)",
            history: Vec::new(),
            frame: new_flow.client_sends(tcp_flag::ACK, &[]),
            flow: None,
            target: Target::NewFlow,
            new_flow_per_sample: true,
            ..steady("", Method::Single, &new_flow, &ack)
        },
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
                    flags: exchange_flag::HTTP_REQUEST,
                    hello_got: None,
                },
            )),
            target: Target::Capture,
            new_flow_per_sample: false,
        },
        Case {
            name: "response start + head capture",
            prog: Prog::Siphon,
            method: Method::Single,
            history: http_history(&response_flow),
            // The next request: the server's next segment starts a response again.
            restore: vec![
                response_flow.client_sends(tcp_flag::ACK | tcp_flag::PSH, &request_segment())
            ],
            frame: response_flow.server_sends(tcp_flag::ACK | tcp_flag::PSH, RESPONSE_HEAD),
            resend: false,
            // The restoring request's head and the response head.
            emits: Records {
                exchange: 0,
                payload: 2,
                syn: 0,
            },
            flow: Some((response_flow, in_response)),
            target: Target::Capture,
            new_flow_per_sample: false,
        },
        hello_case("TLS ClientHello, 517 B", &hello_flow, &hello),
        hello_case(
            "TLS ClientHello, 1800 B (ML-KEM), 1st 1448 B",
            &pq_hello_flow,
            pq_first_segment,
        ),
    ]
}
