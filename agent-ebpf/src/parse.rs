//! Header parsing with direct packet access: Ethernet (+ up to two VLAN tags), IPv4 (any IHL),
//! IPv6 (walking the usual extension headers), TCP and UDP. Returns what the flow table needs,
//! or the reason the packet cannot be attributed to a flow.

use agent_common::{v4_mapped, Addr, KernelCounter};
use aya_ebpf::{macros::map, maps::PerCpuArray, programs::TcContext};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const VLAN_HLEN: usize = 4;
const MAX_VLAN_TAGS: usize = 2;

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
const IPV6_HOPOPTS: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AH: u8 = 51;
const IPV6_DSTOPTS: u8 = 60;
/// Extension headers walked before giving up; real traffic rarely carries more than two.
const MAX_IPV6_EXT: usize = 6;
/// Largest transport-header offset after IPv6 extension headers that we follow.
const MAX_IPV6_L4_OFF: usize = 4096;

/// Where the IPv6 path passes its offsets through memory the verifier does not track (see
/// `forget_path`). Per CPU, one slot: [transport offset, extension-header bytes].
#[map(name = "PARSE_SCRATCH")]
static PARSE_SCRATCH: PerCpuArray<[u32; 2]> = PerCpuArray::with_max_entries(1, 0);

/// Returns `(l4_off, ext_len)` unchanged, except to the verifier, which sees unknown values
/// (bounded below). Each chain of IPv6 extension headers leaves different known offsets, and
/// the verifier would check everything after parsing once per chain: about 8x the work, which
/// Linux 6.1's verifier cannot finish within its budget. Only IPv6 packets pay this (a per-CPU
/// slot written and read back, a few ns).
#[inline(always)]
fn forget_path(l4_off: usize, ext_len: u32) -> Option<(usize, u32)> {
    let words = PARSE_SCRATCH.get_ptr_mut(0)? as *mut u32;
    // SAFETY: this CPU's slot of a live map (two u32); nothing else runs on this CPU meanwhile.
    // Volatile, so that LLVM keeps the round trip rather than forwarding the stored values.
    let (off, ext) = unsafe {
        core::ptr::write_volatile(words, l4_off as u32);
        core::ptr::write_volatile(words.add(1), ext_len);
        (
            core::ptr::read_volatile(words),
            core::ptr::read_volatile(words.add(1)),
        )
    };
    let off = off as usize;
    if off > MAX_IPV6_L4_OFF || ext as usize > MAX_IPV6_L4_OFF {
        return None;
    }
    Some((off, ext))
}

/// What the flow table needs to know about one packet.
pub struct Packet {
    pub src: Addr,
    pub dst: Addr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub tcp_flags: u8,
    /// Transport payload length in bytes.
    pub payload_len: u32,
    /// Offset of the transport payload from the start of the frame.
    pub payload_off: u32,
    /// Offset of the transport header.
    pub l4_off: u32,
    /// TCP header length (20..60), 0 for UDP.
    pub tcp_hlen: u8,
    /// IPv4 TTL / IPv6 hop limit.
    pub ttl: u8,
    /// TCP window (unscaled), 0 for UDP.
    pub window: u16,
    /// TCP sequence number, 0 for UDP.
    pub seq: u32,
}

/// Why a packet was not attributed to a flow. `OtherProto` still carries its IP protocol so it
/// can be counted per protocol.
pub enum Skip {
    Counter(KernelCounter),
    OtherProto(u8),
}

#[inline(always)]
fn ptr_at<T>(ctx: &TcContext, off: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + off) as *const T)
}

/// Reads a `T` from a packet address that `ptr_at` bounds-checked.
///
/// A plain load, not `read_unaligned`, on purpose: headers behind the 14-byte Ethernet header
/// are only 2-byte aligned, and for an unaligned read the BPF backend emits one byte load plus
/// shifts per byte (a 20-byte IPv4 header becomes ~60 instructions). The verifier and JITs
/// accept misaligned packet loads where the CPU handles them (x86-64, arm64: the kernel's
/// CONFIG_HAVE_EFFICIENT_UNALIGNED_ACCESS), which is what C programs rely on with `iph->saddr`.
///
/// # Safety
/// `p` must point at `size_of::<T>()` readable packet bytes.
#[inline(always)]
unsafe fn word<T: Copy>(p: *const u8, off: usize) -> T {
    // SAFETY: the caller guarantees the bytes are readable packet data; a misaligned packet
    // load is accepted by the verifier and handled by the CPU (see above).
    unsafe { core::ptr::read(p.add(off) as *const T) }
}

#[inline(always)]
fn load<T: Copy>(ctx: &TcContext, off: usize) -> Option<T> {
    // SAFETY: ptr_at checked the bounds against data_end; unaligned read because headers
    // after a VLAN tag or IPv4 options are not naturally aligned.
    ptr_at::<T>(ctx, off).map(|p| unsafe { core::ptr::read_unaligned(p) })
}

#[inline(always)]
pub fn parse(ctx: &TcContext) -> Result<Packet, Skip> {
    let mut ethertype =
        u16::from_be(load::<u16>(ctx, 12).ok_or(Skip::Counter(KernelCounter::SkipTruncatedL2))?);
    let mut l3 = ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        ethertype = u16::from_be(
            load::<u16>(ctx, l3 + 2).ok_or(Skip::Counter(KernelCounter::SkipTruncatedL2))?,
        );
        l3 += VLAN_HLEN;
    }
    match ethertype {
        ETH_P_IP => parse_ipv4(ctx, l3),
        ETH_P_IPV6 => parse_ipv6(ctx, l3),
        ETH_P_8021Q | ETH_P_8021AD => Err(Skip::Counter(KernelCounter::SkipVlanDepth)),
        _ => Err(Skip::Counter(KernelCounter::SkipNotIp)),
    }
}

#[inline(always)]
fn parse_ipv4(ctx: &TcContext, l3: usize) -> Result<Packet, Skip> {
    const TRUNC: Skip = Skip::Counter(KernelCounter::SkipTruncatedL3);
    // One bounds check for the fixed header, then word loads.
    let h = ptr_at::<[u8; 20]>(ctx, l3).ok_or(TRUNC)? as *const u8;
    // SAFETY: 20 bytes at `h` were checked against data_end.
    let (vihl, tot_len, frag, ttl, proto, src, dst) = unsafe {
        (
            word::<u8>(h, 0),
            u16::from_be(word::<u16>(h, 2)) as u32,
            u16::from_be(word::<u16>(h, 6)),
            word::<u8>(h, 8),
            word::<u8>(h, 9),
            word::<u32>(h, 12),
            word::<u32>(h, 16),
        )
    };
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if ihl < 20 {
        return Err(TRUNC);
    }
    if frag & 0x1fff != 0 {
        return Err(Skip::Counter(KernelCounter::SkipFragment));
    }
    let src = v4_mapped(src);
    let dst = v4_mapped(dst);
    // tot_len is 0 on BIG TCP GSO packets; the transport layer then falls back to skb->len.
    let l3_payload = if tot_len == 0 {
        0
    } else {
        tot_len.saturating_sub(ihl as u32)
    };
    parse_l4(ctx, l3 + ihl, proto, src, dst, l3_payload, ttl)
}

#[inline(always)]
fn parse_ipv6(ctx: &TcContext, l3: usize) -> Result<Packet, Skip> {
    const TRUNC: Skip = Skip::Counter(KernelCounter::SkipTruncatedL3);
    let h = ptr_at::<[u8; 40]>(ctx, l3).ok_or(TRUNC)? as *const u8;
    // SAFETY: 40 bytes at `h` were checked against data_end.
    let (payload_len, mut next, ttl, src, dst) = unsafe {
        (
            u16::from_be(word::<u16>(h, 4)) as u32,
            word::<u8>(h, 6),
            word::<u8>(h, 7),
            [
                word::<u32>(h, 8),
                word::<u32>(h, 12),
                word::<u32>(h, 16),
                word::<u32>(h, 20),
            ],
            [
                word::<u32>(h, 24),
                word::<u32>(h, 28),
                word::<u32>(h, 32),
                word::<u32>(h, 36),
            ],
        )
    };
    let mut off = l3 + 40;
    let mut ext_len: u32 = 0;
    let mut walked = 0usize;
    while walked < MAX_IPV6_EXT {
        let hdr_len = match next {
            IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS => {
                let e: [u8; 2] = load(ctx, off).ok_or(TRUNC)?;
                next = e[0];
                (e[1] as usize + 1) * 8
            }
            IPV6_AH => {
                let e: [u8; 2] = load(ctx, off).ok_or(TRUNC)?;
                next = e[0];
                (e[1] as usize + 2) * 4
            }
            IPV6_FRAGMENT => {
                let e: [u8; 4] = load(ctx, off).ok_or(TRUNC)?;
                if u16::from_be_bytes([e[2], e[3]]) & 0xfff8 != 0 {
                    return Err(Skip::Counter(KernelCounter::SkipFragment));
                }
                next = e[0];
                8
            }
            _ => break,
        };
        off += hdr_len;
        ext_len += hdr_len as u32;
        walked += 1;
    }
    if walked == MAX_IPV6_EXT
        && matches!(
            next,
            IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS | IPV6_AH | IPV6_FRAGMENT
        )
    {
        return Err(Skip::Counter(KernelCounter::SkipIpv6ExtChain));
    }
    let (off, ext_len) = forget_path(off, ext_len).ok_or(TRUNC)?;
    // payload_len is 0 for jumbograms (BIG TCP); fall back to skb->len as for IPv4.
    let l3_payload = if payload_len == 0 {
        0
    } else {
        payload_len.saturating_sub(ext_len)
    };
    parse_l4(ctx, off, next, src, dst, l3_payload, ttl)
}

#[inline(always)]
fn parse_l4(
    ctx: &TcContext,
    l4: usize,
    proto: u8,
    src: Addr,
    dst: Addr,
    l3_payload: u32,
    ttl: u8,
) -> Result<Packet, Skip> {
    const TRUNC: Skip = Skip::Counter(KernelCounter::SkipTruncatedL4);
    let (sport, dport, l4_hlen, tcp_flags, window, seq) = match proto {
        IPPROTO_TCP => {
            let t = ptr_at::<[u8; 16]>(ctx, l4).ok_or(TRUNC)? as *const u8;
            // SAFETY: 16 bytes at `t` were checked against data_end.
            let (sport, dport, seq, doff, flags, window) = unsafe {
                (
                    u16::from_be(word::<u16>(t, 0)),
                    u16::from_be(word::<u16>(t, 2)),
                    u32::from_be(word::<u32>(t, 4)),
                    ((word::<u8>(t, 12) >> 4) as u32) * 4,
                    word::<u8>(t, 13),
                    u16::from_be(word::<u16>(t, 14)),
                )
            };
            if doff < 20 {
                return Err(TRUNC);
            }
            (sport, dport, doff, flags, window, seq)
        }
        IPPROTO_UDP => {
            let u = ptr_at::<[u8; 4]>(ctx, l4).ok_or(TRUNC)? as *const u8;
            // SAFETY: 4 bytes at `u` were checked against data_end.
            let (sport, dport) = unsafe {
                (
                    u16::from_be(word::<u16>(u, 0)),
                    u16::from_be(word::<u16>(u, 2)),
                )
            };
            (sport, dport, 8, 0, 0, 0)
        }
        other => return Err(Skip::OtherProto(other)),
    };
    let payload_off = l4 as u32 + l4_hlen;
    // What the frame really carries after the transport header: trailing Ethernet padding makes
    // skb->len larger than the IP length, so the IP length wins when it is present and smaller.
    let in_frame = ctx.len().saturating_sub(payload_off);
    let claimed = l3_payload.saturating_sub(l4_hlen);
    // Replaying a capture, frames may be cut (snap length, test_run's size limit): the IP length
    // is the truth there.
    let payload_len = if l3_payload != 0 && (claimed < in_frame || crate::time::replaying()) {
        claimed
    } else {
        in_frame
    };
    Ok(Packet {
        src,
        dst,
        sport,
        dport,
        proto,
        tcp_flags,
        payload_len,
        payload_off,
        l4_off: l4 as u32,
        tcp_hlen: if proto == IPPROTO_TCP {
            l4_hlen as u8
        } else {
            0
        },
        ttl,
        window,
        seq,
    })
}
