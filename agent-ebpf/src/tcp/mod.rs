//! Request/response turn-taking on TCP flows. Client payload after server payload (or on a
//! fresh connection) starts a new exchange; the server's first payload after it is the
//! response's first byte. An exchange is emitted when the next request starts, when the server
//! closes (FIN) or either side resets; userspace emits the rest when the flow goes idle.
//!
//! The state is written by both directions' packets without locks. Within one direction
//! packets of a flow are serialised by the stack (socket lock on transmit, one RX queue on
//! receive), and the two directions write disjoint fields except at turn changes, which a
//! request/response protocol does not make concurrently.

use agent_common::{
    exchange_end, exchange_flag, payload_what, phase, tcp_flag, FlowKey, FlowState, KernelCounter,
    Side,
};
use aya_ebpf::programs::TcContext;
use core::mem::MaybeUninit;

use crate::{
    counters::bump_by,
    events::{self, Capture},
    mem::put,
    parse::Packet,
};

mod client;

use client::client_data;

/// Payload bytes sniffed: enough for a TLS record header and the handshake type.
const PREFIX: usize = 6;

#[inline(always)]
pub fn on_segment(
    ctx: &TcContext,
    st: *mut FlowState,
    key: &FlowKey,
    side: Side,
    pkt: &Packet,
    now: u64,
) {
    let flags = pkt.tcp_flags;
    // SAFETY: `st` points into a live map value for this program run.
    unsafe {
        if flags & tcp_flag::SYN != 0 {
            on_syn(ctx, st, key, side, pkt, now);
            return;
        }
        let from_client = is_client(st, side);
        if pkt.payload_len != 0 {
            // Only new data takes part in exchanges: a retransmitted request segment must not
            // start a turn, nor a retransmitted response add to its size.
            let fresh = new_payload(st, side, pkt);
            if fresh == 0 {
                // Pure retransmission: counted on the flow (wire bytes), nothing more.
            } else if from_client {
                client_data(ctx, st, key, side, pkt, now, fresh);
            } else {
                server_data(ctx, st, key, side, pkt, now, fresh);
            }
        } else if from_client && flags & tcp_flag::ACK != 0 && (*st).await_ack != 0 {
            (*st).handshake.ack_ns = now;
            (*st).await_ack = 0;
        }
        if flags & (tcp_flag::FIN | tcp_flag::RST) != 0 {
            on_close(st, key, from_client, flags);
        }
    }
}

/// Payload bytes of this segment that are new data in its direction; the rest was sent before
/// (a retransmission, counted as such). Tracks the furthest sequence number seen and one gap
/// left by reordering, so a late segment that fills the gap counts as new. Sequence numbers
/// compare with wrapping.
///
/// # Safety
/// `st` must point into a live FLOWS value (valid for this program run, as map values
/// stay for the whole run).
#[inline(always)]
unsafe fn new_payload(st: *mut FlowState, side: Side, pkt: &Packet) -> u32 {
    // SAFETY: `st` is valid (the caller's contract); only this direction's fields of the flow
    // are written, which packets of one direction write one at a time (module docs).
    unsafe {
        let bit = 1u8 << side as u8;
        let i = side as usize;
        let len = pkt.payload_len;
        let start = pkt.seq;
        let end = start.wrapping_add(len);
        let fresh = if (*st).seq_known & bit == 0 {
            (*st).seq_end[i] = end;
            (*st).seq_known |= bit;
            len
        } else {
            let furthest = (*st).seq_end[i];
            let ahead = end.wrapping_sub(furthest) as i32;
            if ahead > 0 {
                if start.wrapping_sub(furthest) as i32 > 0 {
                    // Arrived ahead of data not seen yet: remember the gap it leaves.
                    (*st).hole[i] = [furthest, start];
                }
                (*st).seq_end[i] = end;
                if ahead as u32 > len {
                    len
                } else {
                    ahead as u32
                }
            } else {
                let [h0, h1] = (*st).hole[i];
                let in_hole = h0 != h1
                    && start.wrapping_sub(h0) as i32 >= 0
                    && h1.wrapping_sub(end) as i32 >= 0;
                if in_hole {
                    // Fills (part of) the gap: new data. Shrink the gap from the end it touches.
                    if start == h0 {
                        (*st).hole[i][0] = end;
                    } else if end == h1 {
                        (*st).hole[i][1] = start;
                    }
                    len
                } else {
                    0
                }
            }
        };
        if fresh < len {
            bump_by(KernelCounter::TcpRetransmittedBytes, (len - fresh) as u64);
        }
        fresh
    }
}

/// # Safety
/// `st` must point into a live FLOWS value (valid for this program run, as map values
/// stay for the whole run).
#[inline(always)]
unsafe fn is_client(st: *const FlowState, side: Side) -> bool {
    // SAFETY: a one-byte read of a valid map value (the caller's contract).
    unsafe { (*st).client == side.as_client() }
}

/// # Safety
/// `st` must point into a live FLOWS value (valid for this program run, as map values
/// stay for the whole run).
#[inline(always)]
unsafe fn on_syn(
    ctx: &TcContext,
    st: *mut FlowState,
    key: &FlowKey,
    side: Side,
    pkt: &Packet,
    now: u64,
) {
    // SAFETY: `st` is valid (the caller's contract); the fields written are plain integers.
    unsafe {
        if pkt.tcp_flags & tcp_flag::ACK == 0 {
            new_connection(st, key, now);
        } else {
            (*st).handshake.synack_ns = now;
            // The client's ACK that completes the handshake is timed next (once).
            (*st).await_ack = ((*st).handshake.ack_ns == 0) as u8;
        }
        // The SYN takes one sequence number: data starts right after it.
        (*st).seq_end[side as usize] = pkt.seq.wrapping_add(1);
        (*st).seq_known |= 1u8 << side as u8;
    }
    events::syn(ctx, pkt, key, side, now);
}

/// A SYN opens a new connection, possibly on a tuple we saw before: close out what was open
/// and start the flow's conversation state afresh (its counters keep counting).
///
/// # Safety
/// `st` must point into a live FLOWS value (valid for this program run, as map values
/// stay for the whole run).
#[inline(never)]
unsafe fn new_connection(st: *mut FlowState, key: &FlowKey, now: u64) {
    // SAFETY: `st` is valid (the caller's contract); every store stays inside its value.
    unsafe {
        if (*st).exchange.phase != phase::IDLE {
            events::exchange(st, key, exchange_end::IDLE);
        }
        let ex = &raw mut (*st).exchange;
        (*ex).phase = phase::IDLE;
        put(&raw mut (*ex).flags, 0);
        put(&raw mut (*ex).seq, 0);
        (*st).handshake.syn_ns = now;
        put(&raw mut (*st).handshake.synack_ns, 0);
        put(&raw mut (*st).handshake.ack_ns, 0);
        put(&raw mut (*st).await_ack, 0);
        put(&raw mut (*st).seq_known, 0);
        put(&raw mut (*st).hole[0][0], 0);
        put(&raw mut (*st).hole[0][1], 0);
        put(&raw mut (*st).hole[1][0], 0);
        put(&raw mut (*st).hole[1][1], 0);
        put(&raw mut (*st).hellos, 0);
        put(&raw mut (*st).hello_want, 0);
        put(&raw mut (*st).hello_got, 0);
    }
}

/// Copies the first PREFIX payload bytes into `out`, for protocol sniffing. False if the payload is
/// shorter or cannot be read (then we simply do not sniff, and `out` stays uninitialised). An
/// out-parameter rather than an `Option<[u8; 6]>`: LLVM packs the latter into a register in
/// ways the verifier rejects. Uninitialised rather than zeroed: zeroing a byte array is a
/// memset call in BPF (see mem.rs).
#[inline(always)]
fn payload_prefix(ctx: &TcContext, pkt: &Packet, out: &mut MaybeUninit<[u8; PREFIX]>) -> bool {
    if pkt.payload_len < PREFIX as u32 {
        return false;
    }
    let start = ctx.data() + pkt.payload_off as usize;
    if start + PREFIX <= ctx.data_end() {
        // SAFETY: bounds checked against data_end. Two plain word loads (as in parse.rs):
        // `read_unaligned` of a byte array compiles to a load and a shift per byte.
        let (w, h) = unsafe {
            (
                core::ptr::read(start as *const u32),
                core::ptr::read((start + 4) as *const u16),
            )
        };
        let (w, h) = (w.to_ne_bytes(), h.to_ne_bytes());
        out.write([w[0], w[1], w[2], w[3], h[0], h[1]]);
        return true;
    }
    // Not in the linear area (a paged skb): copy, with a constant length for the verifier.
    // SAFETY: `out` has PREFIX bytes; the helper writes all of them (zeroes on failure).
    let rc = unsafe {
        aya_ebpf::helpers::bpf_skb_load_bytes(
            ctx.skb.skb as *const _,
            pkt.payload_off,
            out.as_mut_ptr() as *mut _,
            PREFIX as u32,
        )
    };
    rc == 0
}

/// Whether the payload starts with `HTTP/` (a response status line). Checked on every server
/// segment of an HTTP exchange, so one word load and compare, not a byte-wise copy.
#[inline(always)]
fn starts_with_http(ctx: &TcContext, pkt: &Packet) -> bool {
    if pkt.payload_len < 5 {
        return false;
    }
    let start = ctx.data() + pkt.payload_off as usize;
    if start + 5 <= ctx.data_end() {
        // SAFETY: bounds checked against data_end; a plain word load, as in parse.rs.
        let word = unsafe { core::ptr::read(start as *const u32) };
        // SAFETY: as above.
        return word == u32::from_ne_bytes(*b"HTTP")
            && unsafe { *((start + 4) as *const u8) } == b'/';
    }
    let mut p = MaybeUninit::uninit();
    // SAFETY: read only once payload_prefix has filled it.
    payload_prefix(ctx, pkt, &mut p) && unsafe { &p.assume_init_ref()[..5] } == b"HTTP/"
}

/// Offset of the space before the status code in a status line (`HTTP/1.1 200`).
const STATUS_AT: u32 = 8;

/// Whether a status line that starts this payload is an interim response (1xx other than
/// 101 Switching Protocols): 100 Continue or 103 Early Hints, after which the final response
/// follows. Read once per response start, so a helper call for paged payloads is affordable.
#[inline(always)]
fn is_interim_status(ctx: &TcContext, pkt: &Packet) -> bool {
    if pkt.payload_len < STATUS_AT + 4 {
        return false;
    }
    let at = ctx.data() + (pkt.payload_off + STATUS_AT) as usize;
    let code: [u8; 4] = if at + 4 <= ctx.data_end() {
        // SAFETY: bounds checked against data_end; a plain word load, as in parse.rs.
        unsafe { core::ptr::read(at as *const u32) }.to_ne_bytes()
    } else {
        let mut word = 0u32;
        // SAFETY: four bytes into a local.
        let rc = unsafe {
            aya_ebpf::helpers::bpf_skb_load_bytes(
                ctx.skb.skb as *const _,
                pkt.payload_off + STATUS_AT,
                (&raw mut word) as *mut _,
                4,
            )
        };
        if rc != 0 {
            return false;
        }
        word.to_ne_bytes()
    };
    // " 1xx", and not " 101".
    code[0] == b' ' && code[1] == b'1' && !(code[2] == b'0' && code[3] == b'1')
}

/// # Safety
/// `st` must point into a live FLOWS value (valid for this program run, as map values
/// stay for the whole run).
#[inline(always)]
unsafe fn server_data(
    ctx: &TcContext,
    st: *mut FlowState,
    key: &FlowKey,
    side: Side,
    pkt: &Packet,
    now: u64,
    fresh: u32,
) {
    // SAFETY: `st` is valid (the caller's contract); the response's fields are written by
    // server packets only, except at turn changes (module docs).
    unsafe {
        let ex = &raw mut (*st).exchange;
        let len = fresh as u64;
        let psh = (pkt.tcp_flags & tcp_flag::PSH != 0) as u32;
        let turn_offset;
        if (*ex).phase != phase::RESPONSE {
            if (*ex).phase == phase::IDLE {
                // The server spoke first (a banner, or we joined mid-flow): an exchange with no
                // request.
                (*ex).seq = (*ex).seq.wrapping_add(1);
                put(&raw mut (*ex).req_first_ns, 0);
                put(&raw mut (*ex).req_last_ns, 0);
                put(&raw mut (*ex).req_bytes, 0);
                put(&raw mut (*ex).req_packets, 0);
                (*ex).flags &= exchange_flag::TLS;
            }
            (*ex).resp_first_ns = now;
            (*ex).resp_last_ns = now;
            (*ex).phase = phase::RESPONSE;
            if (*ex).flags & exchange_flag::INTERIM != 0 {
                // The final response after a 100 Continue and the request body: the response
                // goes on (its bytes include the interim one's, as the server sent them for
                // this request); its first byte is the final response's, after the body.
                turn_offset = (*ex).resp_bytes;
                (*ex).resp_bytes += len;
                (*ex).resp_packets += 1;
                (*ex).resp_psh += psh;
            } else {
                (*ex).resp_bytes = len;
                (*ex).resp_packets = 1;
                (*ex).resp_psh = psh;
                turn_offset = 0;
            }
        } else {
            turn_offset = (*ex).resp_bytes;
            (*ex).resp_bytes += len;
            (*ex).resp_packets += 1;
            (*ex).resp_psh += psh;
            // Mid-response segments carry coarse time, which may lag the precise first byte.
            if now > (*ex).resp_last_ns {
                (*ex).resp_last_ns = now;
            }
        }
        // Only HTTP exchanges look for response heads, at the start of the server's turn, and
        // past it only after requests that may have been pipelined: the check costs a load on
        // every segment, a helper call where the payload is paged.
        let flags = (*ex).flags;
        if flags & exchange_flag::HTTP_REQUEST == 0
            || (turn_offset != 0 && flags & exchange_flag::MAY_PIPELINE == 0)
        {
            return;
        }
        if starts_with_http(ctx, pkt) {
            let cap = events::head_capture_len();
            let capture = Capture::new(
                payload_what::RESPONSE_HEAD,
                side,
                (*ex).seq,
                now,
                turn_offset,
                cap,
            );
            events::payload(ctx, pkt, key, st, &capture);
            (*ex).flags |= exchange_flag::HTTP_RESPONSE;
            if is_interim_status(ctx, pkt) {
                // The final response follows, in this turn or after the client sends the
                // body: look for its head past the turn start too.
                (*ex).flags |= exchange_flag::MAY_PIPELINE | exchange_flag::INTERIM;
            } else {
                (*ex).flags &= !exchange_flag::INTERIM;
            }
        }
    }
}

/// # Safety
/// `st` must point into a live FLOWS value (valid for this program run, as map values
/// stay for the whole run).
#[inline(never)]
unsafe fn on_close(st: *mut FlowState, key: &FlowKey, from_client: bool, flags: u8) {
    // SAFETY: `st` is valid (the caller's contract); phase is a plain byte.
    unsafe {
        let ex = &raw mut (*st).exchange;
        if (*ex).phase == phase::IDLE {
            return;
        }
        // A client FIN is a half-close: the response may still be coming. The exchange ends
        // when the server closes or either side resets.
        let end = if flags & tcp_flag::RST != 0 {
            exchange_end::RST
        } else if !from_client {
            exchange_end::FIN
        } else {
            return;
        };
        events::exchange(st, key, end);
        (*ex).phase = phase::IDLE;
    }
}
