//! Test-only capture reader: pcap/pcapng files to per-connection TCP byte
//! streams plus SYN / SYN-ACK headers, enough to feed the decoders the way
//! the agent's kernel side would.

use std::{collections::HashMap, net::IpAddr, path::Path};

use etherparse::{EtherType, NetSlice, SlicedPacket, TransportSlice};
use pcap_file::{
    pcap::PcapReader,
    pcapng::{Block, PcapNgReader},
    DataLink,
};

/// Plenty for every request in the reference captures.
const MAX_STREAM_BYTES: u64 = 4 << 20;
const GENEVE_PORT: u16 = 6081;
const TRANSPARENT_ETHERNET: u16 = 0x6558;

pub type Endpoint = (IpAddr, u16);

#[derive(Debug, Clone)]
pub struct Syn {
    /// 1-based, as Wireshark numbers frames.
    pub frame: usize,
    pub window: u16,
    pub options: Vec<u8>,
}

#[derive(Default)]
pub struct Direction {
    isn: Option<u32>,
    reference: Option<u32>,
    segments: Vec<(i64, Vec<u8>)>,
}

impl Direction {
    /// Contiguous bytes from the start of the stream, duplicates and
    /// retransmissions folded, stopping at the first gap.
    pub fn bytes(&self) -> Vec<u8> {
        let mut segs: Vec<&(i64, Vec<u8>)> = self.segments.iter().collect();
        segs.sort_by_key(|(off, _)| *off);
        let start = if self.isn.is_some() {
            0
        } else {
            segs.first().map_or(0, |(off, _)| *off)
        };
        let mut out: Vec<u8> = Vec::new();
        let mut end = start;
        for (off, data) in segs {
            let seg_end = off + i64::try_from(data.len()).unwrap();
            if *off > end {
                break;
            }
            if seg_end <= end {
                continue;
            }
            let skip = usize::try_from(end - off).unwrap();
            out.extend_from_slice(&data[skip..]);
            end = seg_end;
            if u64::try_from(out.len()).unwrap() > MAX_STREAM_BYTES {
                break;
            }
        }
        out
    }

    fn add(&mut self, seq: u32, syn: bool, payload: &[u8]) {
        if syn {
            let isn = seq.wrapping_add(1);
            self.isn = Some(isn);
            self.reference = Some(isn);
        }
        if payload.is_empty() {
            return;
        }
        let data_seq = if syn { seq.wrapping_add(1) } else { seq };
        let reference = *self.reference.get_or_insert(data_seq);
        let off = i64::from(data_seq.wrapping_sub(reference) as i32);
        self.segments.push((off, payload.to_vec()));
    }
}

/// One TCP connection: `a` is whichever endpoint was seen first.
pub struct Connection {
    pub a: Endpoint,
    pub b: Endpoint,
    pub a_to_b: Direction,
    pub b_to_a: Direction,
    pub syns: Vec<Syn>,
    pub synacks: Vec<Syn>,
    saw_payload: bool,
}

impl Connection {
    pub fn matches(&self, x: Endpoint, y: Endpoint) -> bool {
        (self.a == x && self.b == y) || (self.a == y && self.b == x)
    }

    pub fn streams(&self) -> [Vec<u8>; 2] {
        [self.a_to_b.bytes(), self.b_to_a.bytes()]
    }
}

#[derive(Default)]
pub struct Capture {
    pub connections: Vec<Connection>,
    current: HashMap<(Endpoint, Endpoint), usize>,
    pub undecodable_frames: usize,
}

impl Capture {
    pub fn read(path: &Path) -> Result<Self, String> {
        let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut cap = Self::default();
        let mut frame = 0usize;
        // The extension lies for some reference files, so go by magic.
        if data.get(..4) == Some(&[0x0a, 0x0d, 0x0d, 0x0a]) {
            let mut reader = PcapNgReader::new(data.as_slice()).map_err(|e| e.to_string())?;
            // Collected as they stream past: the reader's own table cannot be
            // borrowed while a block from it is alive.
            let mut links: Vec<DataLink> = Vec::new();
            while let Some(block) = reader.next_block() {
                let block = block.map_err(|e| e.to_string())?;
                let (iface, bytes) = match &block {
                    Block::SectionHeader(_) => {
                        links.clear();
                        continue;
                    }
                    Block::InterfaceDescription(i) => {
                        links.push(i.linktype);
                        continue;
                    }
                    Block::EnhancedPacket(p) => (p.interface_id, &p.data),
                    Block::SimplePacket(p) => (0, &p.data),
                    _ => continue,
                };
                let link = usize::try_from(iface)
                    .ok()
                    .and_then(|i| links.get(i).copied())
                    .ok_or("packet without interface")?;
                frame += 1;
                cap.frame(frame, link, bytes);
            }
        } else {
            let mut reader = PcapReader::new(data.as_slice()).map_err(|e| e.to_string())?;
            let link = reader.header().datalink;
            while let Some(pkt) = reader.next_packet() {
                let pkt = pkt.map_err(|e| e.to_string())?;
                frame += 1;
                cap.frame(frame, link, &pkt.data);
            }
        }
        Ok(cap)
    }

    fn frame(&mut self, frame: usize, link: DataLink, data: &[u8]) {
        let sliced = match link {
            DataLink::ETHERNET => SlicedPacket::from_ethernet(data),
            DataLink::LINUX_SLL => SlicedPacket::from_linux_sll(data),
            DataLink::LINUX_SLL2 => match (data.get(..2), data.get(20..)) {
                (Some(&[hi, lo]), Some(rest)) => {
                    SlicedPacket::from_ether_type(EtherType(u16::from_be_bytes([hi, lo])), rest)
                }
                _ => {
                    self.undecodable_frames += 1;
                    return;
                }
            },
            // BSD loopback: a 4-byte address family, then the IP packet.
            DataLink::NULL | DataLink::LOOP => SlicedPacket::from_ip(data.get(4..).unwrap_or(&[])),
            DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => SlicedPacket::from_ip(data),
            _ => {
                self.undecodable_frames += 1;
                return;
            }
        };
        let Ok(sliced) = sliced else {
            self.undecodable_frames += 1;
            return;
        };
        self.sliced(frame, &sliced);
    }

    fn sliced(&mut self, frame: usize, sliced: &SlicedPacket<'_>) {
        let (src, dst) = match &sliced.net {
            Some(NetSlice::Ipv4(ip)) => (
                IpAddr::V4(ip.header().source_addr()),
                IpAddr::V4(ip.header().destination_addr()),
            ),
            Some(NetSlice::Ipv6(ip)) => (
                IpAddr::V6(ip.header().source_addr()),
                IpAddr::V6(ip.header().destination_addr()),
            ),
            None => return,
        };
        match &sliced.transport {
            Some(TransportSlice::Tcp(tcp)) => {
                let from = (src, tcp.source_port());
                let to = (dst, tcp.destination_port());
                let seg = Segment {
                    frame,
                    seq: tcp.sequence_number(),
                    syn: tcp.syn(),
                    ack: tcp.ack(),
                    window: tcp.window_size(),
                    options: tcp.options(),
                    payload: tcp.payload(),
                };
                self.tcp(from, to, &seg);
            }
            // Geneve wraps whole Ethernet frames; unwrap one level so the
            // tunnelled handshake is seen like any other.
            Some(TransportSlice::Udp(udp)) if udp.destination_port() == GENEVE_PORT => {
                let p = udp.payload();
                let (Some(&b0), Some(&[hi, lo])) = (p.first(), p.get(2..4)) else {
                    return;
                };
                let inner_at = 8 + usize::from(b0 & 0x3f) * 4;
                if u16::from_be_bytes([hi, lo]) == TRANSPARENT_ETHERNET {
                    if let Some(inner) = p.get(inner_at..) {
                        if let Ok(s) = SlicedPacket::from_ethernet(inner) {
                            self.sliced(frame, &s);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn tcp(&mut self, from: Endpoint, to: Endpoint, seg: &Segment<'_>) {
        let key = if from <= to { (from, to) } else { (to, from) };
        let fresh_syn = seg.syn && !seg.ack;
        let idx = match self.current.get(&key) {
            // A new SYN on a tuple that already carried data is port reuse.
            Some(&i) if !(fresh_syn && self.connections.get(i).is_some_and(|c| c.saw_payload)) => i,
            _ => {
                self.connections.push(Connection {
                    a: from,
                    b: to,
                    a_to_b: Direction::default(),
                    b_to_a: Direction::default(),
                    syns: Vec::new(),
                    synacks: Vec::new(),
                    saw_payload: false,
                });
                let i = self.connections.len() - 1;
                self.current.insert(key, i);
                i
            }
        };
        let conn = &mut self.connections[idx];
        if seg.syn {
            let syn = Syn {
                frame: seg.frame,
                window: seg.window,
                options: seg.options.to_vec(),
            };
            if seg.ack {
                conn.synacks.push(syn);
            } else {
                conn.syns.push(syn);
            }
        }
        conn.saw_payload |= !seg.payload.is_empty();
        let dir = if conn.a == from {
            &mut conn.a_to_b
        } else {
            &mut conn.b_to_a
        };
        dir.add(seg.seq, seg.syn, seg.payload);
    }
}

struct Segment<'a> {
    frame: usize,
    seq: u32,
    syn: bool,
    ack: bool,
    window: u16,
    options: &'a [u8],
    payload: &'a [u8],
}
