//! Reading pcap and pcapng files into Ethernet frames with nanosecond timestamps. Other link
//! types (Linux cooked, raw IP, BSD loopback) get a synthetic Ethernet header, since the kernel
//! program parses from Ethernet.

use std::{
    cell::Cell,
    fs::File,
    io::{BufReader, Read},
    path::Path,
    rc::Rc,
};

use anyhow::{bail, Context as _};
use pcap_file::{
    pcap::PcapReader,
    pcapng::{
        blocks::{
            interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
            Block,
        },
        PcapNgReader,
    },
    DataLink,
};

/// A packet ready for the kernel program.
pub struct Frame {
    pub ts_ns: u64,
    pub ethernet: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// This packet cannot be replayed (counted, the rest goes on).
    #[error("{0}")]
    Skip(String),
    /// The file cannot be read further (truncated, corrupt).
    #[error(transparent)]
    Fatal(anyhow::Error),
}

const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];
const ETHERTYPE_IPV6: [u8; 2] = [0x86, 0xdd];

/// Counts bytes read, for progress reports.
struct Counting<R> {
    inner: R,
    read: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

/// Any byte source: a file for `siphon replay`, bytes in memory for the fuzz target.
type Input = Counting<BufReader<Box<dyn Read>>>;

enum Format {
    Pcap {
        reader: PcapReader<Input>,
        link: DataLink,
    },
    PcapNg(PcapNgReader<Input>),
}

pub struct CaptureReader {
    format: Format,
    read: Rc<Cell<u64>>,
}

pub fn open(path: &Path) -> anyhow::Result<CaptureReader> {
    let file = File::open(path).with_context(|| format!("opening capture {}", path.display()))?;
    from_source(&path.display().to_string(), Box::new(file), 1 << 20)
}

/// A capture held in memory (the fuzz target's input). The buffer is small: the bytes are
/// already in memory, and a large one would dominate the cost of each fuzz run.
pub fn from_bytes(bytes: Vec<u8>) -> anyhow::Result<CaptureReader> {
    from_source("capture", Box::new(std::io::Cursor::new(bytes)), 8 << 10)
}

/// Reads the magic number, then hands the whole stream (magic included) to the reader for
/// that format. `name` only labels errors.
fn from_source(
    name: &str,
    mut source: Box<dyn Read>,
    buffer: usize,
) -> anyhow::Result<CaptureReader> {
    let mut magic = [0u8; 4];
    source
        .read_exact(&mut magic)
        .with_context(|| format!("{name}: too short to be a capture"))?;
    let read = Rc::new(Cell::new(0));
    let stream: Box<dyn Read> = Box::new(std::io::Cursor::new(magic).chain(source));
    let input = Counting {
        inner: BufReader::with_capacity(buffer, stream),
        read: Rc::clone(&read),
    };
    let format = match magic {
        [0x0a, 0x0d, 0x0d, 0x0a] => Format::PcapNg(
            PcapNgReader::new(input)
                .map_err(|e| anyhow::anyhow!("{name}: bad pcapng header: {e}"))?,
        ),
        [0xd4, 0xc3, 0xb2, 0xa1]
        | [0xa1, 0xb2, 0xc3, 0xd4]
        | [0x4d, 0x3c, 0xb2, 0xa1]
        | [0xa1, 0xb2, 0x3c, 0x4d] => {
            let reader = PcapReader::new(input)
                .map_err(|e| anyhow::anyhow!("{name}: bad pcap header: {e}"))?;
            let header = reader.header();
            Format::Pcap {
                link: header.datalink,
                reader,
            }
        }
        other => bail!("{name}: not a pcap or pcapng file (magic {other:02x?})"),
    };
    Ok(CaptureReader { format, read })
}

impl CaptureReader {
    /// Bytes of the file consumed so far.
    pub fn position(&self) -> u64 {
        self.read.get()
    }

    pub fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        match &mut self.format {
            Format::Pcap { reader, link } => match reader.next_packet() {
                None => Ok(None),
                Some(Err(e)) => Err(CaptureError::Fatal(anyhow::anyhow!("{e}"))),
                Some(Ok(p)) => {
                    // pcap-file already scales both µs and ns files into the Duration.
                    let ts_ns = p.timestamp.as_nanos() as u64;
                    to_ethernet(*link, &p.data).map(|ethernet| Some(Frame { ts_ns, ethernet }))
                }
            },
            Format::PcapNg(reader) => loop {
                let block = match reader.next_block() {
                    None => return Ok(None),
                    Some(Err(e)) => return Err(CaptureError::Fatal(anyhow::anyhow!("{e}"))),
                    Some(Ok(b)) => b,
                };
                let (iface, ts_raw, data) = match &block {
                    Block::EnhancedPacket(p) => (
                        p.interface_id,
                        p.timestamp.as_nanos() as u64,
                        p.data.to_vec(),
                    ),
                    Block::SimplePacket(p) => (0, 0, p.data.to_vec()),
                    _ => continue,
                };
                let Some(idb) = reader.interfaces().get(iface as usize) else {
                    return Err(CaptureError::Skip(format!(
                        "packet names unknown interface {iface}"
                    )));
                };
                let ts_ns = scale_pcapng_ts(ts_raw, idb);
                return to_ethernet(idb.linktype, &data)
                    .map(|ethernet| Some(Frame { ts_ns, ethernet }));
            },
        }
    }
}

/// pcap-file hands pcapng timestamps over as raw units in a Duration's nanoseconds; the unit is
/// the interface's if_tsresol (default microseconds).
fn scale_pcapng_ts(raw: u64, idb: &InterfaceDescriptionBlock<'_>) -> u64 {
    let resol = idb
        .options
        .iter()
        .find_map(|o| {
            if let InterfaceDescriptionOption::IfTsResol(r) = o {
                Some(*r)
            } else {
                None
            }
        })
        .unwrap_or(6);
    if resol & 0x80 != 0 {
        // Negative power of two.
        let shift = (resol & 0x7f) as u32;
        ((raw as u128 * 1_000_000_000) >> shift.min(127)) as u64
    } else {
        let exp = resol as u32;
        if exp <= 9 {
            raw.saturating_mul(10u64.pow(9 - exp))
        } else {
            raw / 10u64.saturating_pow(exp - 9)
        }
    }
}

fn ethernet_with(ethertype: [u8; 2], l3: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(14 + l3.len());
    v.extend_from_slice(&[0u8; 12]);
    v.extend_from_slice(&ethertype);
    v.extend_from_slice(l3);
    v
}

fn by_ip_version(l3: &[u8]) -> Result<Vec<u8>, CaptureError> {
    match l3.first().map(|b| b >> 4) {
        Some(4) => Ok(ethernet_with(ETHERTYPE_IPV4, l3)),
        Some(6) => Ok(ethernet_with(ETHERTYPE_IPV6, l3)),
        _ => Err(CaptureError::Skip(
            "raw packet is neither IPv4 nor IPv6".into(),
        )),
    }
}

/// The packet as an Ethernet frame.
pub fn to_ethernet(link: DataLink, data: &[u8]) -> Result<Vec<u8>, CaptureError> {
    let short = || CaptureError::Skip("packet shorter than its link-layer header".into());
    match link {
        DataLink::ETHERNET => Ok(data.to_vec()),
        DataLink::LINUX_SLL => {
            let proto = data.get(14..16).ok_or_else(short)?;
            Ok(ethernet_with([proto[0], proto[1]], data.get(16..).ok_or_else(short)?))
        }
        DataLink::LINUX_SLL2 => {
            let proto = data.get(0..2).ok_or_else(short)?;
            Ok(ethernet_with([proto[0], proto[1]], data.get(20..).ok_or_else(short)?))
        }
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => by_ip_version(data),
        DataLink::NULL | DataLink::LOOP => by_ip_version(data.get(4..).ok_or_else(short)?),
        other => Err(CaptureError::Fatal(anyhow::anyhow!(
            "unsupported link type {other:?}; supported: Ethernet, Linux cooked (SLL, SLL2), raw IP, BSD loopback"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_types_become_ethernet() {
        let ip4 = [0x45u8, 0, 0, 20];
        let e = to_ethernet(DataLink::RAW, &ip4).expect("raw");
        assert_eq!((&e[12..14], &e[14..]), (&ETHERTYPE_IPV4[..], &ip4[..]));
        let mut sll = vec![0u8; 16];
        sll[14..16].copy_from_slice(&ETHERTYPE_IPV6);
        sll.extend_from_slice(&[0x60, 0, 0, 0]);
        let e = to_ethernet(DataLink::LINUX_SLL, &sll).expect("sll");
        assert_eq!((&e[12..14], e.len()), (&ETHERTYPE_IPV6[..], 18));
        let mut null = 2u32.to_ne_bytes().to_vec();
        null.extend_from_slice(&ip4);
        assert_eq!(to_ethernet(DataLink::NULL, &null).expect("null").len(), 18);
    }

    #[test]
    fn bad_packets_skip_and_unknown_links_stop() {
        assert!(matches!(
            to_ethernet(DataLink::LINUX_SLL, &[0; 5]),
            Err(CaptureError::Skip(_))
        ));
        assert!(matches!(
            to_ethernet(DataLink::RAW, &[0x10]),
            Err(CaptureError::Skip(_))
        ));
        assert!(matches!(
            to_ethernet(DataLink::IEEE802_11, &[0; 40]),
            Err(CaptureError::Fatal(_))
        ));
    }
}
