//! Checks the decoders against FoxIO's published fingerprints for their
//! reference captures: every JA4 / JA4_r / JA4_o / JA4_ro / JA4H / JA4H_ro /
//! JA4T value in the `.json` twins must be reproduced from the packets.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
};

use serde_json::Value;

use super::{
    parse_request_head,
    test_capture::{Capture, Connection, Endpoint},
    ClientHello, Ja4, Ja4h, Ja4t, Ja4ts, Transport,
};

/// The JSON twins carry no JA4T, so these come from FoxIO's Wireshark
/// plugin test data for the same captures (wireshark/test/testdata), keyed
/// by frame number: (capture, frame, "ja4t" | "ja4ts", value).
const WIRESHARK_JA4T: &[(&str, usize, &str, &str)] = &[
    ("CVE-2018-6794.pcap", 1, "ja4t", "8192_2-1-3-1-1-4_1460_8"),
    ("CVE-2018-6794.pcap", 2, "ja4ts", "15500_00_00_00"),
    ("CVE-2018-6794.pcap", 10, "ja4t", "8192_2-1-3-1-1-4_1460_8"),
    ("CVE-2018-6794.pcap", 11, "ja4ts", "15500_00_00_00"),
    ("CVE-2018-6794.pcap", 19, "ja4t", "8192_2-1-3-1-1-4_1460_8"),
    ("CVE-2018-6794.pcap", 20, "ja4ts", "15500_00_00_00"),
    (
        "badcurveball.pcap",
        1,
        "ja4t",
        "65535_2-1-3-1-1-8-4-0-0_1386_6",
    ),
    ("badcurveball.pcap", 2, "ja4ts", "26847_2-4-8-1-3_1460_7"),
    (
        "http-empty-useragent.pcap",
        1,
        "ja4t",
        "65535_2-1-3-1-1-8-4-0-0_16324_5",
    ),
    (
        "http-empty-useragent.pcap",
        2,
        "ja4ts",
        "65535_2-1-3-1-1-8-4-0-0_16324_5",
    ),
    (
        "http1-with-cookies.pcapng",
        1,
        "ja4t",
        "65535_2-1-3-1-1-8-4-0-0_16344_6",
    ),
    (
        "http1-with-cookies.pcapng",
        2,
        "ja4ts",
        "65535_2-1-3-1-1-8-4-0-0_16344_6",
    ),
    ("https-connect.pcap", 1, "ja4t", "29200_2-1-1-4-1-3_1460_7"),
    ("https-connect.pcap", 2, "ja4ts", "29200_2-1-1-4-1-3_1360_7"),
    ("ipv6.pcapng", 1, "ja4t", "65535_2-1-3-1-1-8-4-0-0_1346_6"),
    ("ipv6.pcapng", 2, "ja4ts", "65535_2-1-1-4-1-3_1346_10"),
    (
        "socks-https-example.pcap",
        1,
        "ja4t",
        "65535_2-1-3-1-1-8-4-0-0_1460_4",
    ),
    (
        "socks-https-example.pcap",
        2,
        "ja4ts",
        "14480_2-4-8-1-3_1460_7",
    ),
    (
        "socks-https-example.pcap",
        31,
        "ja4t",
        "65535_2-1-3-1-1-8-4-0-0_1460_4",
    ),
    (
        "socks-https-example.pcap",
        32,
        "ja4ts",
        "14480_2-4-8-1-3_1460_7",
    ),
    (
        "socks-https-example.pcap",
        61,
        "ja4t",
        "65535_2-1-3-1-1-8-4-0-0_1460_4",
    ),
    (
        "socks-https-example.pcap",
        62,
        "ja4ts",
        "14480_2-4-8-1-3_1460_7",
    ),
    ("socks4-https.pcap", 1, "ja4t", "8192_2-1-3-1-1-4_1360_2"),
    ("socks4-https.pcap", 2, "ja4ts", "5840_2-1-1-4-1-3_1460_7"),
    ("tcpdump-geneve.pcap", 3, "ja4t", "14600_2-4-8-1-3_1460_7"),
    ("tcpdump-geneve.pcap", 4, "ja4ts", "28960_2-4-8-1-3_1460_7"),
    (
        "tls-alpn-h2.pcap",
        1,
        "ja4t",
        "65535_2-1-3-1-1-8-4-0-0_1346_6",
    ),
    ("tls-alpn-h2.pcap", 2, "ja4ts", "65535_2-1-1-4-1-3_1346_10"),
];

fn data_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/ja4");
    assert!(
        dir.is_dir(),
        "JA4 reference data is missing: expected the FoxIO captures and their .json twins in \
         {} (workspace root's ../shared/data/ja4)",
        dir.display()
    );
    dir
}

fn captures(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name.ends_with(".pcap") || name.ends_with(".pcapng")) && p.is_file()
        })
        .collect();
    files.sort();
    files
}

/// Everything computed for one connection, in stream order.
#[derive(Default)]
struct Computed {
    ja4: Vec<Ja4>,
    sni: Vec<Option<String>>,
    ja4h: Vec<String>,
    ja4h_ro: Vec<String>,
}

/// ClientHellos are found by scanning for a handshake record header rather
/// than assuming offset 0: SOCKS and CONNECT put a preamble before TLS, and
/// a HelloRetryRequest makes the client send a second hello later on.
fn client_hellos(stream: &[u8], out: &mut Computed) {
    let mut i = 0;
    while let Some(rest) = stream.get(i..) {
        let looks_like_hello = matches!(rest, [0x16, 0x03, minor, _, _, 0x01, ..] if *minor <= 4);
        if looks_like_hello {
            if let Ok(hello) = ClientHello::parse_records(rest) {
                out.ja4.push(Ja4::new(&hello, Transport::Tcp));
                out.sni.push(hello.sni.clone());
                i += records_spanned(rest);
                continue;
            }
        }
        i += 1;
    }
}

/// Bytes taken by the records that carry the handshake message at `buf`.
fn records_spanned(buf: &[u8]) -> usize {
    let msg_len = buf.get(6..9).map_or(0, |b| {
        usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2])
    });
    let mut need = msg_len + 4;
    let mut at = 0;
    while need > 0 {
        let Some(len) = buf.get(at + 3..at + 5) else {
            return buf.len();
        };
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        need = need.saturating_sub(len);
        at += 5 + len;
    }
    at.min(buf.len())
}

/// Request heads in a client stream, each followed by its declared body.
/// After anything unparsable, resynchronise on the next line.
fn request_heads(stream: &[u8], out: &mut Computed) {
    let mut pos = 0;
    while let Some(rest) = stream.get(pos..).filter(|r| !r.is_empty()) {
        match parse_request_head(rest, None) {
            Ok(head) if !head.truncated => {
                out.ja4h.push(Ja4h::new(&head).to_string());
                out.ja4h_ro.push(Ja4h::raw_original(&head));
                let body = usize::try_from(head.content_length.unwrap_or(0)).unwrap();
                pos += head_len(rest) + body;
            }
            _ => match rest.iter().position(|&b| b == b'\n') {
                Some(lf) => pos += lf + 1,
                None => break,
            },
        }
    }
}

fn head_len(buf: &[u8]) -> usize {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b).unwrap_or(buf.len()),
    }
}

fn compute(conn: &Connection) -> Computed {
    let mut out = Computed::default();
    for stream in conn.streams() {
        client_hellos(&stream, &mut out);
        request_heads(&stream, &mut out);
    }
    out
}

fn endpoint(entry: &Value, ip_key: &str, port_key: &str) -> Endpoint {
    let ip: IpAddr = entry[ip_key].as_str().unwrap().parse().unwrap();
    let port: u16 = entry[port_key].as_str().unwrap().parse().unwrap();
    (ip, port)
}

#[derive(Default)]
struct Tally {
    checked: BTreeMap<String, usize>,
    failures: Vec<String>,
}

impl Tally {
    fn check(&mut self, family: &str, file: &str, what: &str, want: &str, got: Option<&str>) {
        *self.checked.entry(family.to_owned()).or_default() += 1;
        if got != Some(want) {
            self.failures
                .push(format!("{file} {what}: want {want}, got {got:?}"));
        }
    }

    fn check_in(&mut self, family: &str, file: &str, what: &str, want: &str, got: &[String]) {
        *self.checked.entry(family.to_owned()).or_default() += 1;
        if !got.iter().any(|g| g == want) {
            self.failures
                .push(format!("{file} {what}: want {want}, computed {got:?}"));
        }
    }
}

fn check_json(file: &str, json_path: &Path, cap: &Capture, tally: &mut Tally) {
    let text = std::fs::read_to_string(json_path)
        .unwrap_or_else(|e| panic!("{}: {e}", json_path.display()));
    let entries: Vec<Value> = serde_json::from_str(&text).unwrap();
    let mut cache: Vec<Option<Computed>> = cap.connections.iter().map(|_| None).collect();
    for entry in &entries {
        let src = endpoint(entry, "src", "srcport");
        let dst = endpoint(entry, "dst", "dstport");
        let stream = &entry["stream"];
        let Some(obj) = entry.as_object() else {
            continue;
        };
        let matching: Vec<usize> = cap
            .connections
            .iter()
            .enumerate()
            .filter(|(_, c)| c.matches(src, dst))
            .map(|(i, _)| i)
            .collect();
        for (key, value) in obj {
            let Some(published) = value.as_str() else {
                continue;
            };
            let (family, nth) = match key.split_once('.') {
                Some((f, n)) => (f, n.parse::<usize>().ok()),
                None => (key.as_str(), None),
            };
            if !matches!(
                family,
                "JA4" | "JA4_r" | "JA4_o" | "JA4_ro" | "JA4H" | "JA4H_ro" | "JA4T"
            ) {
                continue;
            }
            let want = published;
            let what = format!("stream {stream} {key}");
            let mut got_values: Vec<String> = Vec::new();
            for &i in &matching {
                let computed = cache[i].get_or_insert_with(|| compute(&cap.connections[i]));
                let idx = nth.unwrap_or(1).saturating_sub(1);
                let v = match family {
                    "JA4" => computed.ja4.get(idx).map(Ja4::fingerprint),
                    "JA4_r" => computed.ja4.get(idx).map(Ja4::raw),
                    "JA4_o" => computed.ja4.get(idx).map(Ja4::original),
                    "JA4_ro" => computed.ja4.get(idx).map(Ja4::raw_original),
                    "JA4T" => cap.connections[i]
                        .syns
                        .first()
                        .map(|s| Ja4t::new(s.window, &s.options).to_string()),
                    "JA4H" => {
                        got_values.extend(computed.ja4h.iter().cloned());
                        None
                    }
                    _ => {
                        got_values.extend(computed.ja4h_ro.iter().cloned());
                        None
                    }
                };
                got_values.extend(v);
                if family == "JA4" {
                    if let (Some(domain), Some(sni)) =
                        (entry["domain"].as_str(), computed.sni.get(idx))
                    {
                        let what = format!("stream {stream} SNI");
                        tally.check("SNI", file, &what, domain, sni.as_deref());
                    }
                }
            }
            tally.check_in(family, file, &what, want, &got_values);
        }
    }
}

fn check_wireshark_ja4t(file: &str, cap: &Capture, tally: &mut Tally) {
    for (f, frame, kind, want) in WIRESHARK_JA4T {
        if *f != file {
            continue;
        }
        let got = cap.connections.iter().find_map(|c| {
            let list = if *kind == "ja4t" { &c.syns } else { &c.synacks };
            list.iter().find(|s| s.frame == *frame).map(|s| {
                if *kind == "ja4t" {
                    Ja4t::new(s.window, &s.options).to_string()
                } else {
                    Ja4ts::new(s.window, &s.options).to_string()
                }
            })
        });
        let what = format!("frame {frame} {kind}");
        tally.check(&kind.to_uppercase(), file, &what, want, got.as_deref());
    }
}

#[test]
fn foxio_reference_captures() {
    let dir = data_dir();
    let files = captures(&dir);
    assert!(!files.is_empty(), "no captures in {}", dir.display());
    let mut tally = Tally::default();
    for path in &files {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let cap = Capture::read(path).unwrap_or_else(|e| panic!("{file}: {e}"));
        eprintln!(
            "{file}: {} TCP connections, {} frames not decodable as IP",
            cap.connections.len(),
            cap.undecodable_frames
        );
        let json = dir.join(format!("{file}.json"));
        if json.is_file() {
            check_json(&file, &json, &cap, &mut tally);
        }
        check_wireshark_ja4t(&file, &cap, &mut tally);
        // Every TCP stream in every capture goes through the decoders, with
        // or without expected values, to catch panics on odd traffic.
        for conn in &cap.connections {
            let _ = compute(conn);
        }
    }
    let families: Vec<String> = tally
        .checked
        .iter()
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
    eprintln!("reference values checked: {}", families.join(" "));
    assert!(
        tally.failures.is_empty(),
        "{} of the reference values did not match:\n{}",
        tally.failures.len(),
        tally.failures.join("\n")
    );
    for family in [
        "JA4", "JA4_r", "JA4_o", "JA4_ro", "JA4H", "JA4H_ro", "JA4T", "JA4TS",
    ] {
        assert!(
            tally.checked.get(family).copied().unwrap_or(0) > 0,
            "no {family} value was checked"
        );
    }
}
