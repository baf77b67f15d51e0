//! The flow table: key normalisation and the per-flow state the kernel keeps.

/// An IP address as four 32-bit words holding the address bytes in network order
/// (`u32::from_ne_bytes` of each 4-byte group). IPv4 is stored v4-mapped (`::ffff:a.b.c.d`),
/// so one key type serves both families and the kernel never converts byte order.
pub type Addr = [u32; 4];

/// Builds the v4-mapped form of an IPv4 address given as its 4 network-order bytes.
#[inline(always)]
pub const fn v4_mapped(v4_network_order: u32) -> Addr {
    [
        0,
        0,
        u32::from_ne_bytes([0, 0, 0xff, 0xff]),
        v4_network_order,
    ]
}

/// The address an [`Addr`] holds: IPv4 when v4-mapped, IPv6 otherwise. The inverse of how the
/// kernel stores addresses, kept next to [`v4_mapped`] so the two cannot drift.
pub fn addr_to_ip(a: &Addr) -> core::net::IpAddr {
    let mut bytes = [0u8; 16];
    for (chunk, word) in bytes.chunks_exact_mut(4).zip(a) {
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    let v6 = core::net::Ipv6Addr::from(bytes);
    match v6.to_ipv4_mapped() {
        Some(v4) => core::net::IpAddr::V4(v4),
        None => core::net::IpAddr::V6(v6),
    }
}

/// The kernel form of an address: the inverse of [`addr_to_ip`].
pub fn ip_to_addr(ip: core::net::IpAddr) -> Addr {
    let v6 = match ip {
        core::net::IpAddr::V4(a) => a.to_ipv6_mapped(),
        core::net::IpAddr::V6(a) => a,
    };
    let mut words = [0u32; 4];
    for (word, chunk) in words.iter_mut().zip(v6.octets().chunks_exact(4)) {
        let mut b = [0u8; 4];
        b.copy_from_slice(chunk);
        *word = u32::from_ne_bytes(b);
    }
    words
}

/// Which side of a normalised flow key a packet travels from.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// From endpoint A (the lower endpoint) towards B.
    A = 0,
    /// From endpoint B towards A.
    B = 1,
}

impl Side {
    /// The [`client`] value saying this side opened the conversation.
    #[inline(always)]
    pub const fn as_client(self) -> u8 {
        match self {
            Side::A => client::A,
            Side::B => client::B,
        }
    }

    #[inline(always)]
    pub const fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// `FlowState::client` values: which endpoint opened the conversation.
pub mod client {
    pub const UNKNOWN: u8 = 0;
    pub const A: u8 = 1;
    pub const B: u8 = 2;
}

/// Normalised flow key: the two endpoints ordered so that both directions of a conversation
/// map to one entry. Per interface, so a flow crossing two watched interfaces of one node is
/// counted on each without the two mixing.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowKey {
    pub addr_a: Addr,
    pub addr_b: Addr,
    pub ifindex: u32,
    pub port_a: u16,
    pub port_b: u16,
    pub proto: u8,
    // Integers, not `[u8; 3]`: rustc zeroes an array with a memset, which the BPF backend
    // turns into a call to a byte loop on every packet.
    pub _pad: u8,
    pub _pad2: u16,
}

/// One write of the key's words, where the derived hash makes one per field (ten calls into a
/// keyed SipHash): userspace hashes a flow key for nearly every record it takes. The padding
/// is left out; keys that compare equal have equal padding anyway.
impl core::hash::Hash for FlowKey {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        let [a0, a1, a2, a3] = self.addr_a;
        let [b0, b1, b2, b3] = self.addr_b;
        let words = [
            a0,
            a1,
            a2,
            a3,
            b0,
            b1,
            b2,
            b3,
            self.ifindex,
            u32::from(self.port_a) << 16 | u32::from(self.port_b),
            u32::from(self.proto),
        ];
        // `hash_slice` of integers is a single `write` of their bytes, with no length prefix.
        u32::hash_slice(&words, state);
    }
}

impl FlowKey {
    /// Orders (src, dst) into (A, B) and says which side the packet came from. Endpoints compare
    /// address first, then port; any total order works as long as both directions agree.
    #[inline(always)]
    pub fn normalise(
        ifindex: u32,
        proto: u8,
        src: &Addr,
        sport: u16,
        dst: &Addr,
        dport: u16,
    ) -> (FlowKey, Side) {
        let src_first = endpoint_le(src, sport, dst, dport);
        let (addr_a, port_a, addr_b, port_b, side) = if src_first {
            (*src, sport, *dst, dport, Side::A)
        } else {
            (*dst, dport, *src, sport, Side::B)
        };
        (
            FlowKey {
                addr_a,
                addr_b,
                ifindex,
                port_a,
                port_b,
                proto,
                _pad: 0,
                _pad2: 0,
            },
            side,
        )
    }
}

/// `(a, pa) <= (b, pb)` comparing the address words in order, then the port. Written as straight
/// comparisons (no loop, no slice compare) so the eBPF side compiles it to a few branches.
#[inline(always)]
fn endpoint_le(a: &Addr, pa: u16, b: &Addr, pb: u16) -> bool {
    if a[0] != b[0] {
        return a[0] < b[0];
    }
    if a[1] != b[1] {
        return a[1] < b[1];
    }
    if a[2] != b[2] {
        return a[2] < b[2];
    }
    if a[3] != b[3] {
        return a[3] < b[3];
    }
    pa <= pb
}

/// Counters for one direction of a flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DirCounters {
    pub packets: u64,
    /// Bytes as the interface sees them (`skb->len`, link-layer header included).
    pub bytes: u64,
    /// Transport payload bytes (after the TCP/UDP header).
    pub payload_bytes: u64,
}

/// Per-flow state kept by the kernel. Counters are updated with atomic adds: both directions
/// of one flow are routinely handled on different CPUs at the same time.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowState {
    // Ordered so that what every packet of an established flow touches comes first, in as
    // few cache lines as possible (a flow's entry is usually cold when its packet arrives):
    // counters, flags, sides, sequence tracking, the clock anchor, then the exchange (whose
    // own hot fields come first). Handshake times, the reordering gap and the first-seen time
    // are touched rarely and go last.
    /// Indexed by [`Side`]: `[A→B, B→A]`.
    pub dir: [DirCounters; 2],
    /// OR of the TCP flags seen: bits 0..8 from A, bits 8..16 from B.
    /// 64 bits wide because BPF has atomic OR only for 64-bit words without alu32.
    pub tcp_flags: u64,
    pub last_seen_ns: u64,
    /// One of [`client`].
    pub client: u8,
    /// Bit per [`Side`]: `seq_end` holds a sequence number for that direction.
    pub seq_known: u8,
    /// 1 from the SYN-ACK until the handshake's last ACK is timed: pure ACKs need a clock only
    /// then, and this byte says so without reading the handshake times.
    pub await_ack: u8,
    /// ClientHellos seen on this flow (a HelloRetryRequest or a TLS tunnel after a proxy
    /// handshake brings more than one); capture stops at a small bound.
    pub hellos: u8,
    /// ClientHello bytes still to gather, and gathered so far (TCP payload, across segments).
    pub hello_want: u16,
    pub hello_got: u16,
    /// Per [`Side`]: the TCP sequence number after the furthest payload byte seen. Payload at
    /// or before it is a retransmission: wire bytes, but not new data of an exchange.
    pub seq_end: [u32; 2],
    /// The last precise clock reading on this flow and the jiffies counter at that moment:
    /// mid-response segments extrapolate from it with the (inlined) jiffies read instead of a
    /// clock helper call.
    pub clock_anchor_ns: u64,
    pub clock_anchor_jiffies: u64,
    pub exchange: crate::Exchange,
    pub handshake: crate::Handshake,
    /// Per [`Side`]: one gap `[start, end)` left by a segment that arrived ahead of its
    /// predecessors (reordering). Data filling it later is new, not a retransmission. Empty
    /// when start == end.
    pub hole: [[u32; 2]; 2],
    pub first_seen_ns: u64,
}

impl FlowState {
    pub fn tcp_flags_from(&self, side: Side) -> u8 {
        (self.tcp_flags >> (8 * side as u64)) as u8
    }
}

/// TCP flag bits as in the header's 13th byte.
pub mod tcp_flag {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// The service-port map: ports userspace knows to be listening or configured as services, used
/// to tell client from server on flows whose SYN was not seen. A bitmap in an array map, one bit
/// per (protocol, port): an array lookup is inlined by the verifier into a bounds check and an
/// address computation, where a hash lookup is a helper call and a hash of the key, twice on
/// every new flow picked up mid-stream.
pub mod service_ports {
    /// Bits per map word.
    const WORD_BITS: u32 = u64::BITS;
    /// Words of one protocol's bitmap (65,536 ports).
    pub const WORDS_PER_PROTO: u32 = (u16::MAX as u32 + 1) / WORD_BITS;
    /// Entries of the map: TCP's bitmap, then UDP's (16 KiB in all).
    pub const WORDS: u32 = 2 * WORDS_PER_PROTO;

    /// The map word holding (proto, port) and its bit in that word; none for a protocol that
    /// has no service ports (neither TCP nor UDP).
    #[inline(always)]
    pub fn bit(proto: u8, port: u16) -> Option<(u32, u64)> {
        let base = match proto {
            6 => 0,
            17 => WORDS_PER_PROTO,
            _ => return None,
        };
        let port = port as u32;
        Some((base + port / WORD_BITS, 1u64 << (port % WORD_BITS)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    extern crate std;

    fn hash_of(k: &FlowKey) -> u64 {
        use core::hash::{BuildHasher, BuildHasherDefault};
        BuildHasherDefault::<std::hash::DefaultHasher>::default().hash_one(k)
    }

    #[test]
    fn the_flow_key_hash_covers_every_field_and_agrees_with_equality() {
        let base = FlowKey {
            addr_a: v4_mapped(0x0a00_0001),
            addr_b: v4_mapped(0x0a00_0002),
            ifindex: 3,
            port_a: 443,
            port_b: 50_000,
            proto: 6,
            _pad: 0,
            _pad2: 0,
        };
        let copy = base;
        assert_eq!(hash_of(&base), hash_of(&copy));
        let changed: [fn(&mut FlowKey); 7] = [
            |k| k.addr_a[3] ^= 1,
            |k| k.addr_b[0] = 0x2001_0db8,
            |k| k.ifindex = 4,
            |k| k.port_a = 444,
            |k| k.port_b = 50_001,
            |k| k.proto = 17,
            // The ports packed into one word must not alias with each other swapped.
            |k| core::mem::swap(&mut k.port_a, &mut k.port_b),
        ];
        for (i, change) in changed.iter().enumerate() {
            let mut k = base;
            change(&mut k);
            assert_ne!(k, base);
            assert_ne!(hash_of(&k), hash_of(&base), "field change {i} not hashed");
        }
    }

    #[test]
    fn every_service_port_has_its_own_bit_inside_the_map() {
        use service_ports::{bit, WORDS};
        let mut map = [0u64; WORDS as usize];
        for proto in [6u8, 17] {
            for port in 0..=u16::MAX {
                let (word, mask) = bit(proto, port).expect("tcp and udp have service ports");
                assert!(word < WORDS, "{proto}/{port} -> word {word}");
                assert_eq!(mask.count_ones(), 1);
                assert_eq!(map[word as usize] & mask, 0, "{proto}/{port} shares a bit");
                map[word as usize] |= mask;
            }
        }
        assert!(
            map.iter().all(|w| *w == u64::MAX),
            "every bit belongs to a port"
        );
        assert_eq!(bit(1, 80), None, "icmp has no ports");
    }

    #[test]
    fn addresses_round_trip_through_the_kernel_form() {
        let v4 = v4_mapped(u32::from_ne_bytes([10, 1, 2, 3]));
        assert_eq!(addr_to_ip(&v4), IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)));
        let v6: Addr = [
            u32::from_ne_bytes([0xfd, 0, 0, 0]),
            0,
            0,
            u32::from_ne_bytes([0, 0, 0, 1]),
        ];
        assert_eq!(
            addr_to_ip(&v6),
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1))
        );
        // And back.
        assert_eq!(ip_to_addr(addr_to_ip(&v4)), v4);
        assert_eq!(ip_to_addr(addr_to_ip(&v6)), v6);
    }
}
