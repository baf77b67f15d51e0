//! The client's side of a turn: a client segment resumes, starts or extends the request turn,
//! may start or continue a TLS ClientHello to gather, or carries more of a request head.

use agent_common::{
    exchange_end, exchange_flag, payload_what, phase,
    wire::{is_unpipelined_request, starts_http_request, tls},
    FlowKey, FlowState, KernelCounter, Side, HELLOS_MAX, HELLO_MAX,
};
use aya_ebpf::programs::TcContext;
use core::mem::MaybeUninit;

use super::{payload_prefix, PREFIX};
use crate::{
    counters::bump,
    events::{self, Capture},
    mem::put,
    parse::Packet,
};

/// # Safety
/// `st` must point into a live FLOWS value (valid for this program run, as map values
/// stay for the whole run).
#[inline(always)]
pub(super) unsafe fn client_data(
    ctx: &TcContext,
    st: *mut FlowState,
    key: &FlowKey,
    side: Side,
    pkt: &Packet,
    now: u64,
    fresh: u32,
) {
    // SAFETY: `st` is valid (the caller's contract). `p` is read only where `sniffed` says
    // payload_prefix filled it.
    unsafe {
        let mut prefix = MaybeUninit::uninit();
        let sniffed = payload_prefix(ctx, pkt, &mut prefix);
        // Not read unless `sniffed`: then payload_prefix has filled it.
        let p: *const [u8; PREFIX] = prefix.as_ptr();
        let starts_head = sniffed && starts_http_request(&*p);
        let cap = events::head_capture_len();
        let seg = ClientSegment {
            side,
            now,
            cap,
            starts_head,
        };
        let Some(turn_offset) = advance_client_turn(ctx, st, key, pkt, &seg, fresh as u64, p)
        else {
            return;
        };
        if sniffed {
            notice_client_hello(st, pkt, &*p);
        }
        if gather_client_hello(ctx, st, key, pkt, &seg) {
            return;
        }
        if (*st).exchange.flags & exchange_flag::TLS != 0 {
            return;
        }
        capture_more_of_the_head(ctx, st, key, pkt, &seg, turn_offset);
    }
}

/// What the steps of [`client_data`] share about one client segment.
struct ClientSegment {
    side: Side,
    now: u64,
    /// The load-time head capture length.
    cap: u32,
    /// The segment starts like an HTTP request line.
    starts_head: bool,
}

/// Moves the exchange's client turn on by one segment of `len` new bytes: resumes it after a
/// 100 Continue, starts a new one (ending the previous exchange, capturing a request head), or
/// extends it. Returns the segment's offset in the turn, or none when the segment started a
/// request head and was fully handled (captured with the exchange it ends).
///
/// # Safety
/// `st` must point into a live FLOWS value; `p` must be filled when `seg.starts_head`.
#[inline(always)]
unsafe fn advance_client_turn(
    ctx: &TcContext,
    st: *mut FlowState,
    key: &FlowKey,
    pkt: &Packet,
    seg: &ClientSegment,
    len: u64,
    p: *const [u8; PREFIX],
) -> Option<u64> {
    // SAFETY: the caller's contract. A client turn's fields are written by client packets
    // only, except at turn changes (see the tcp module's docs).
    unsafe {
        let ex = &raw mut (*st).exchange;
        if (*ex).phase == phase::RESPONSE
            && (*ex).flags & exchange_flag::INTERIM != 0
            && !seg.starts_head
        {
            // The body after a 100 Continue: the same request's turn resumes, and the response
            // resumes after it (INTERIM stays set until a final status line is seen).
            (*ex).phase = phase::REQUEST;
            let turn_offset = (*ex).req_bytes;
            (*ex).req_bytes += len;
            (*ex).req_packets += 1;
            (*ex).req_last_ns = seg.now;
            return Some(turn_offset);
        }
        if (*ex).phase == phase::REQUEST {
            let turn_offset = (*ex).req_bytes;
            (*ex).req_bytes += len;
            (*ex).req_packets += 1;
            (*ex).req_last_ns = seg.now;
            return Some(turn_offset);
        }
        let seq = (*ex).seq.wrapping_add(1);
        if seg.starts_head {
            // One record for both: the new request's head carries the exchange it ends,
            // which halves the ring-buffer work on the request-start path.
            let prev_end = if (*ex).phase == phase::RESPONSE {
                exchange_end::NEXT_REQUEST
            } else {
                0
            };
            let capture = Capture {
                prev_end,
                ..Capture::new(
                    payload_what::REQUEST_HEAD,
                    seg.side,
                    seq,
                    seg.now,
                    0,
                    seg.cap,
                )
            };
            request_head(ctx, pkt, key, st, &capture);
        } else if (*ex).phase == phase::RESPONSE {
            events::exchange(st, key, exchange_end::NEXT_REQUEST);
        }
        // Field by field: a struct literal would be built on the (small) BPF stack.
        (*ex).seq = seq;
        (*ex).req_first_ns = seg.now;
        (*ex).req_last_ns = seg.now;
        (*ex).req_bytes = len;
        (*ex).req_packets = 1;
        put(&raw mut (*ex).resp_first_ns, 0);
        put(&raw mut (*ex).resp_last_ns, 0);
        put(&raw mut (*ex).resp_bytes, 0);
        put(&raw mut (*ex).resp_packets, 0);
        put(&raw mut (*ex).resp_psh, 0);
        (*ex).phase = phase::REQUEST;
        (*ex).flags &= exchange_flag::TLS;
        if !seg.starts_head {
            return Some(0);
        }
        (*ex).flags |= exchange_flag::HTTP_REQUEST;
        if !is_unpipelined_request(&*p) {
            (*ex).flags |= exchange_flag::MAY_PIPELINE;
        }
        if pkt.payload_len > seg.cap {
            (*ex).flags |= exchange_flag::HEAD_TRUNCATED;
        }
        None
    }
}

/// A ClientHello starts a client segment: the first one of the flow, a second one after a
/// HelloRetryRequest (behind a ChangeCipherSpec record), or one inside a tunnel that a SOCKS
/// or CONNECT exchange opened. Bounded per flow. Sets how many hello bytes to gather.
///
/// # Safety
/// `st` must point into a live FLOWS value.
#[inline(always)]
unsafe fn notice_client_hello(st: *mut FlowState, pkt: &Packet, p: &[u8; PREFIX]) {
    // SAFETY: the caller's contract.
    unsafe {
        if (*st).hellos >= HELLOS_MAX || (*st).hello_got < (*st).hello_want {
            return;
        }
        let want = if p[0] == tls::CONTENT_HANDSHAKE
            && p[1] == tls::VERSION_MAJOR
            && p[5] == tls::HANDSHAKE_CLIENT_HELLO
        {
            tls::RECORD_HEADER_LEN as u32 + u16::from_be_bytes([p[3], p[4]]) as u32
        } else if p[0] == tls::CONTENT_CHANGE_CIPHER_SPEC
            && p[1] == tls::VERSION_MAJOR
            && p[3] == 0
            && p[4] == 1
        {
            // CCS (6 bytes) then the handshake record, whose length we cannot see here.
            pkt.payload_len
        } else {
            0
        };
        if want == 0 {
            return;
        }
        (*st).hellos += 1;
        put(&raw mut (*st).hello_got, 0);
        (*st).hello_want = if want > HELLO_MAX {
            HELLO_MAX as u16
        } else {
            want as u16
        };
        if want > HELLO_MAX {
            bump(KernelCounter::EventHelloTruncated);
        }
        (*st).exchange.flags |= exchange_flag::TLS;
    }
}

/// Captures the next piece of a ClientHello being gathered; returns whether one was.
///
/// # Safety
/// `st` must point into a live FLOWS value.
#[inline(always)]
unsafe fn gather_client_hello(
    ctx: &TcContext,
    st: *mut FlowState,
    key: &FlowKey,
    pkt: &Packet,
    seg: &ClientSegment,
) -> bool {
    // SAFETY: the caller's contract.
    unsafe {
        if (*st).hello_got >= (*st).hello_want {
            return false;
        }
        let want = ((*st).hello_want - (*st).hello_got) as u32;
        let capture = Capture::new(
            payload_what::TLS_HELLO,
            seg.side,
            (*st).exchange.seq,
            seg.now,
            (*st).hello_got as u64,
            want,
        );
        let got = events::payload(ctx, pkt, key, st, &capture);
        if got == 0 || (got < want && got < pkt.payload_len) {
            // This segment did not fit in one record: the rest of the hello is lost.
            bump(KernelCounter::EventHelloTruncated);
            (*st).hello_want = (*st).hello_got;
        } else {
            (*st).hello_got += got as u16;
        }
        true
    }
}

/// A plaintext client segment inside a turn: the rest of a head written in pieces, or a second
/// request head in the same turn (pipelining).
///
/// # Safety
/// `st` must point into a live FLOWS value.
#[inline(always)]
unsafe fn capture_more_of_the_head(
    ctx: &TcContext,
    st: *mut FlowState,
    key: &FlowKey,
    pkt: &Packet,
    seg: &ClientSegment,
    turn_offset: u64,
) {
    // SAFETY: the caller's contract.
    unsafe {
        let ex = &raw mut (*st).exchange;
        if !seg.starts_head
            && (*ex).flags & exchange_flag::HTTP_REQUEST != 0
            && turn_offset < seg.cap as u64
        {
            // The head continues in this segment (a client writing the head in pieces).
            let capture = Capture::new(
                payload_what::REQUEST_MORE,
                seg.side,
                (*ex).seq,
                seg.now,
                turn_offset,
                seg.cap - turn_offset as u32,
            );
            events::payload(ctx, pkt, key, st, &capture);
            return;
        }
        if seg.starts_head {
            // A second request in the same turn: pipelining, whatever the method.
            (*ex).flags |= exchange_flag::MAY_PIPELINE;
            let capture = Capture::new(
                payload_what::REQUEST_HEAD,
                seg.side,
                (*ex).seq,
                seg.now,
                turn_offset,
                seg.cap,
            );
            request_head(ctx, pkt, key, st, &capture);
        }
    }
}

/// Captures a request head; a head longer than the capture is a counted truncation.
#[inline(always)]
fn request_head(
    ctx: &TcContext,
    pkt: &Packet,
    key: &FlowKey,
    st: *const FlowState,
    capture: &Capture,
) {
    events::payload(ctx, pkt, key, st, capture);
    if pkt.payload_len > capture.limit {
        bump(KernelCounter::EventHeadTruncated);
    }
}
