//! Records for userspace through one BPF ring buffer. Submits do not wake the reader: a wakeup
//! is a self-IPI, microseconds (an exit to the hypervisor in a VM), so the reader polls on a
//! short timer and is woken early only when the ring fills faster than it drains.

use agent_common::{
    record_kind, Exchange, ExchangeRecord, FlowKey, FlowState, Handshake, KernelCounter,
    PayloadRecord, Side, SynRecord, CAPTURE_CLASSES, CAPTURE_MAX, TCP_OPTIONS_MAX,
};
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{PerCpuArray, RingBuf},
    programs::TcContext,
};

use crate::{
    counters::bump,
    mem::{put, put_addr},
    parse::Packet,
};

/// Default size; the loader overrides it from `--ringbuf-bytes`.
#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

/// Every this many records from one CPU, a submit checks how full the ring is. Set by the
/// loader.
#[unsafe(no_mangle)]
static FILL_CHECK_RECORDS: u32 = 256;

/// Unread bytes past which that check wakes the reader. Set by the loader (a quarter of
/// the ring).
#[unsafe(no_mangle)]
static WAKE_AVAIL_BYTES: u64 = 4 << 20;

/// Records submitted on this CPU since its last fill check.
#[map(name = "WAKE_COUNT")]
static WAKE_COUNT: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Bytes of a head to capture. Set by the loader, at most CAPTURE_MAX.
#[unsafe(no_mangle)]
static HEAD_CAPTURE_LEN: u32 = 1024;

#[inline(always)]
pub fn head_capture_len() -> u32 {
    // SAFETY: plain read of a load-time constant.
    let n = unsafe { core::ptr::read_volatile(&HEAD_CAPTURE_LEN) };
    if n > CAPTURE_MAX as u32 {
        CAPTURE_MAX as u32
    } else {
        n
    }
}

/// Wakes the reader only when more than WAKE_AVAIL_BYTES are unread, checked once every
/// FILL_CHECK_RECORDS records per CPU: at the rates the reader's timer keeps up with, no submit
/// wakes it; past them, a CPU wakes it every FILL_CHECK_RECORDS records. Checked rarely because `bpf_ringbuf_query` reads the consumer's position, a cache
/// line userspace writes (~100 ns per record in the benchmark when asked on every submit).
/// Between two checks a CPU adds at most FILL_CHECK_RECORDS records (~590 KiB), less than
/// its share of the ring (at least 1 MiB per CPU, see the loader).
#[inline(always)]
fn submit_flags() -> u64 {
    // SAFETY: plain read of a load-time constant.
    let every = unsafe { core::ptr::read_volatile(&FILL_CHECK_RECORDS) };
    if let Some(n) = WAKE_COUNT.get_ptr_mut(0) {
        // SAFETY: this CPU's slot.
        let due = unsafe {
            *n += 1;
            let due = *n >= every;
            if due {
                *n = 0;
            }
            due
        };
        if due && ring_filling() {
            return BPF_RB_FORCE_WAKEUP as u64;
        }
    }
    BPF_RB_NO_WAKEUP as u64
}

/// Whether the reader has fallen behind: more than WAKE_AVAIL_BYTES unread.
#[inline(always)]
fn ring_filling() -> bool {
    // SAFETY: plain read of a load-time constant.
    let limit = unsafe { core::ptr::read_volatile(&WAKE_AVAIL_BYTES) };
    EVENTS.query(BPF_RB_AVAIL_DATA as u64) > limit
}

// Field-by-field copies. A struct assignment into ring-buffer memory becomes a memmove, i.e. a
// byte-at-a-time loop (see mem.rs), which costs cycles and, in the verifier, explodes into
// states: replay mode hit the one-million-instruction limit that way. Arrays and zeroes go
// through `put` for the same reason.

/// # Safety
/// Both pointers valid for a `FlowKey`.
#[inline(always)]
unsafe fn copy_key(dst: *mut FlowKey, src: &FlowKey) {
    // SAFETY: the caller guarantees `dst` is valid for a FlowKey; only its fields are written.
    unsafe {
        put_addr(&raw mut (*dst).addr_a, &src.addr_a);
        put_addr(&raw mut (*dst).addr_b, &src.addr_b);
        (*dst).ifindex = src.ifindex;
        (*dst).port_a = src.port_a;
        (*dst).port_b = src.port_b;
        (*dst).proto = src.proto;
        put(&raw mut (*dst)._pad, 0);
        put(&raw mut (*dst)._pad2, 0);
    }
}

/// # Safety
/// Both pointers valid for an `Exchange`.
#[inline(always)]
unsafe fn copy_exchange(dst: *mut Exchange, src: *const Exchange) {
    // SAFETY: the caller guarantees both pointers are valid for an Exchange; field-wise reads
    // and writes stay inside them.
    unsafe {
        (*dst).phase = (*src).phase;
        (*dst).flags = (*src).flags;
        put(&raw mut (*dst)._pad, 0);
        (*dst).seq = (*src).seq;
        (*dst).resp_bytes = (*src).resp_bytes;
        (*dst).resp_last_ns = (*src).resp_last_ns;
        (*dst).resp_packets = (*src).resp_packets;
        (*dst).resp_psh = (*src).resp_psh;
        (*dst).req_bytes = (*src).req_bytes;
        (*dst).req_last_ns = (*src).req_last_ns;
        (*dst).req_packets = (*src).req_packets;
        put(&raw mut (*dst)._pad2, 0);
        (*dst).req_first_ns = (*src).req_first_ns;
        (*dst).resp_first_ns = (*src).resp_first_ns;
    }
}

/// # Safety
/// Both pointers valid for a `Handshake`.
#[inline(always)]
unsafe fn copy_handshake(dst: *mut Handshake, src: *const Handshake) {
    // SAFETY: the caller guarantees both pointers are valid for a Handshake.
    unsafe {
        (*dst).syn_ns = (*src).syn_ns;
        (*dst).synack_ns = (*src).synack_ns;
        (*dst).ack_ns = (*src).ack_ns;
    }
}

/// Out of line (a BPF subprogram), like the other paths that run a few times per connection:
/// the per-packet code stays compact (20 KiB of BPF per program instead of 26).
#[inline(never)]
pub fn exchange(st: *const FlowState, key: &FlowKey, end: u8) {
    let Some(mut entry) = EVENTS.reserve::<ExchangeRecord>(0) else {
        bump(KernelCounter::LossRingbufFull);
        return;
    };
    // SAFETY: `st` points into a live map value; the entry is ours until submitted.
    unsafe {
        let r = entry.as_mut_ptr();
        (*r).kind = record_kind::EXCHANGE;
        (*r).end = end;
        (*r).client = (*st).client;
        put(&raw mut (*r)._pad, 0);
        copy_key(&raw mut (*r).key, key);
        put(&raw mut (*r)._pad2, 0);
        copy_exchange(&raw mut (*r).exchange, &raw const (*st).exchange);
        copy_handshake(&raw mut (*r).handshake, &raw const (*st).handshake);
    }
    entry.submit(submit_flags());
}

/// What to capture of a segment's payload, and where it sits in the conversation.
pub struct Capture {
    /// One of `payload_what`.
    pub what: u8,
    /// The sender of the segment.
    pub side: Side,
    pub seq: u32,
    pub ts_ns: u64,
    pub turn_offset: u64,
    /// Capture at most this many bytes.
    pub limit: u32,
    /// Non-zero (an `exchange_end`): the record also carries the flow's current exchange,
    /// which this segment ends.
    pub prev_end: u8,
}

impl Capture {
    /// A capture of segment payload that ends no exchange.
    #[inline(always)]
    pub fn new(
        what: u8,
        side: Side,
        seq: u32,
        ts_ns: u64,
        turn_offset: u64,
        limit: u32,
    ) -> Capture {
        Capture {
            what,
            side,
            seq,
            ts_ns,
            turn_offset,
            limit,
            prev_end: 0,
        }
    }
}

/// Copies up to `c.limit` bytes of the packet's payload into a payload record. Returns how many
/// bytes were captured (0 when nothing could be recorded; the loss is counted).
///
/// Out of line (one BPF subprogram for its five callers): each of the four size classes below
/// has its own copy of the record code.
#[inline(never)]
pub fn payload(
    ctx: &TcContext,
    pkt: &Packet,
    key: &FlowKey,
    st: *const FlowState,
    c: &Capture,
) -> u32 {
    let mut n = if pkt.payload_len < c.limit {
        pkt.payload_len
    } else {
        c.limit
    };
    if n > CAPTURE_MAX as u32 {
        n = CAPTURE_MAX as u32;
    }
    // The smallest size class that holds the capture: the ring holds more records, and the
    // reserve does not pass over kilobytes of unwritten ring memory.
    const SMALL: usize = CAPTURE_CLASSES[0];
    const MEDIUM: usize = CAPTURE_CLASSES[1];
    const LARGE: usize = CAPTURE_CLASSES[2];
    if n == 0 {
        0
    } else if n <= SMALL as u32 {
        capture::<SMALL>(ctx, pkt, key, st, c, n)
    } else if n <= MEDIUM as u32 {
        capture::<MEDIUM>(ctx, pkt, key, st, c, n)
    } else if n <= LARGE as u32 {
        capture::<LARGE>(ctx, pkt, key, st, c, n)
    } else {
        capture::<CAPTURE_MAX>(ctx, pkt, key, st, c, n)
    }
}

/// One payload record with room for `N` bytes (a power of two), holding the first `n`
/// (1 <= n <= N).
#[inline(always)]
fn capture<const N: usize>(
    ctx: &TcContext,
    pkt: &Packet,
    key: &FlowKey,
    st: *const FlowState,
    c: &Capture,
    n: u32,
) -> u32 {
    let Some(mut entry) = EVENTS.reserve::<PayloadRecord<N>>(0) else {
        bump(KernelCounter::LossRingbufFull);
        return 0;
    };
    // LLVM knows 1 <= n <= N from the caller's checks and may drop or move them, leaving the
    // verifier without a bound on the helper's length. Passing n through black_box hides the
    // value from LLVM, so the check below stays.
    let n = core::hint::black_box(n);
    if n == 0 || n > N as u32 {
        entry.discard(0);
        return 0;
    }
    // The same value, as arithmetic the verifier bounds to 1..=N by itself: older verifiers
    // (6.1) do not carry the bounds of the check above to the register the helper gets, and
    // reject a length that may be 0. N is a power of two, so for 1 <= n <= N this is n.
    let len = (n.wrapping_sub(1) & (N as u32 - 1)) + 1;
    // SAFETY: the entry is ours until submitted or discarded; `data` has N bytes and
    // 1 <= n <= N.
    let loaded = unsafe {
        let r = entry.as_mut_ptr();
        let h = &raw mut (*r).header;
        (*h).kind = record_kind::PAYLOAD;
        (*h).what = c.what;
        (*h).side = c.side as u8;
        (*h).prev_end = c.prev_end;
        (*h).client = (*st).client;
        if c.prev_end != 0 {
            copy_exchange(&raw mut (*h).prev, &raw const (*st).exchange);
            copy_handshake(&raw mut (*h).handshake, &raw const (*st).handshake);
        }
        copy_key(&raw mut (*h).key, key);
        (*h).seq = c.seq;
        (*h).ts_ns = c.ts_ns;
        (*h).turn_offset = c.turn_offset;
        (*h).payload_len = pkt.payload_len;
        (*h).captured = n;
        aya_ebpf::helpers::bpf_skb_load_bytes(
            ctx.skb.skb as *const _,
            pkt.payload_off,
            (&raw mut (*r).data) as *mut _,
            len,
        )
    };
    if loaded != 0 {
        entry.discard(0);
        bump(KernelCounter::LossPayloadLoad);
        return 0;
    }
    entry.submit(submit_flags());
    n
}

#[inline(never)]
pub fn syn(ctx: &TcContext, pkt: &Packet, key: &FlowKey, side: Side, ts_ns: u64) {
    let Some(mut entry) = EVENTS.reserve::<SynRecord>(0) else {
        bump(KernelCounter::LossRingbufFull);
        return;
    };
    let opt_len = (pkt.tcp_hlen as usize).saturating_sub(20);
    let start = ctx.data() + pkt.l4_off as usize + 20;
    let end = ctx.data_end();
    // SAFETY: the entry is ours; every packet byte read is checked against data_end, and at
    // most TCP_OPTIONS_MAX bytes are written into `options`. A SYN's header is always in the
    // linear area; a byte loop (SYNs are rare) keeps the verifier's bounds simple.
    unsafe {
        let r = entry.as_mut_ptr();
        (*r).kind = record_kind::SYN;
        (*r).tcp_flags = pkt.tcp_flags;
        (*r).side = side as u8;
        (*r).window = pkt.window;
        copy_key(&raw mut (*r).key, key);
        (*r).ttl = pkt.ttl;
        put(&raw mut (*r)._pad, 0);
        (*r).ts_ns = ts_ns;
        let mut copied = 0usize;
        for i in 0..TCP_OPTIONS_MAX {
            if i >= opt_len || start + i + 1 > end {
                break;
            }
            (*r).options[i] = *((start + i) as *const u8);
            copied += 1;
        }
        (*r).options_len = copied as u8;
    }
    entry.submit(submit_flags());
}
