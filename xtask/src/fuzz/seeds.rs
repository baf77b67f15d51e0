//! Seed inputs for the fuzz targets, written under target/fuzz/seeds/<target>/ at every run:
//! hand-written cases for each parser, the project's own test files (detect.toml, the
//! detection-event golden file), and pieces carved out of the JA4 reference captures in
//! ../shared/data/ja4 (read in place, never copied into the repository): TLS records and HTTP
//! heads found by their first bytes, and the small captures themselves for the pcap reader.

use std::{fs, path::Path};

use anyhow::Context as _;

/// Captures larger than this are carved but not used whole: libFuzzer's input length follows
/// the largest seed, and large inputs slow every execution.
const MAX_CAPTURE_SEED: u64 = 64 << 10;
/// Carved heads and records are cut here (the kernel copies at most 2 KiB of a head).
const MAX_CARVED: usize = 4096;
/// Carved pieces kept per kind and capture: enough variety, few duplicates.
const MAX_CARVED_PER_FILE: usize = 8;

const KEY: &str = "sk-proj-0123456789abcdefghijklmnopqrstuv";

pub fn write_all(root: &Path, shared: &Path, dir: &Path) -> anyhow::Result<()> {
    let captures = captures(shared);
    if captures.is_empty() {
        eprintln!(
            "xtask: fuzz: no captures in {} (../shared/data/ja4): seeds are the built-in ones only",
            shared.display()
        );
    }
    let mut hellos = Vec::new();
    let mut requests = Vec::new();
    let mut responses = Vec::new();
    for (_, bytes) in &captures {
        hellos.extend(carve_tls_records(bytes));
        requests.extend(carve(bytes, REQUEST_STARTS));
        responses.extend(carve(bytes, &[b"HTTP/1."]));
    }
    let mut sets: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("http_request", [http_requests(), requests.clone()].concat()),
        (
            "http_response",
            [http_responses(), responses.clone()].concat(),
        ),
        ("tls_hello", tls_hellos(&hellos)),
        ("ja4t", syn_options()),
        ("forwarded", forwarded()),
        ("api_key", api_key_headers()),
        (
            "ring_records",
            super::records::ring_records(&hellos, minimal_hello, KEY),
        ),
        ("turn_framing", turns(&requests, &responses)),
        ("exchange_log", exchange_logs(root)?),
        ("detect_config", detect_configs(root)?),
    ];
    sets.push((
        "capture",
        captures
            .into_iter()
            .filter(|(len, _)| *len <= MAX_CAPTURE_SEED)
            .map(|(_, b)| b)
            .collect(),
    ));
    for (target, seeds) in sets {
        let d = dir.join(target);
        fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        for (i, s) in seeds.iter().enumerate() {
            fs::write(d.join(format!("seed-{i:04}")), s)?;
        }
    }
    super::dicts::write_all(root, &dir.join("dicts"))
}

/// (size, bytes) of every pcap/pcapng in `dir`, in name order.
fn captures(dir: &Path) -> Vec<(u64, Vec<u8>)> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<_> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pcap" || x == "pcapng"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .filter_map(|p| fs::read(&p).ok())
        .map(|b| (b.len() as u64, b))
        .collect()
}

const REQUEST_STARTS: &[&[u8]] = &[b"GET /", b"POST /", b"PUT /", b"HEAD /", b"CONNECT "];

/// Bytes from each occurrence of a start marker, up to MAX_CARVED.
fn carve(bytes: &[u8], starts: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for i in 0..bytes.len() {
        if out.len() >= MAX_CARVED_PER_FILE {
            break;
        }
        if starts.iter().any(|s| bytes[i..].starts_with(s)) {
            out.push(bytes[i..bytes.len().min(i + MAX_CARVED)].to_vec());
        }
    }
    out
}

/// TLS handshake records holding a ClientHello: 0x16, version 3.x, length, then type 1.
fn carve_tls_records(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for i in 0..bytes.len().saturating_sub(6) {
        if out.len() >= MAX_CARVED_PER_FILE {
            break;
        }
        let b = &bytes[i..];
        if b[0] == 0x16 && b[1] == 3 && b[2] <= 4 && b[5] == 1 {
            let len = usize::from(u16::from_be_bytes([b[3], b[4]]));
            out.push(b[..b.len().min(5 + len).min(MAX_CARVED)].to_vec());
        }
    }
    out
}

fn http_requests() -> Vec<Vec<u8>> {
    [
        format!(
            "POST /v1/chat/completions?api-key=x HTTP/1.1\r\nHost: api.example.net\r\n\
             Authorization: Bearer {KEY}\r\nUser-Agent: OpenAI/Python 1.30.1\r\n\
             X-Forwarded-For: 203.0.113.7, [2001:db8::2]:443\r\n\
             Forwarded: for=\"[2001:db8:cafe::17]:4711\";proto=https\r\nCookie: a=1; b=2\r\n\
             Accept-Language: fr-CH, fr;q=0.9\r\nContent-Type: application/json\r\n\
             Content-Length: 17\r\n\r\n{{\"stream\":true}}"
        ),
        format!("POST /v1/messages HTTP/1.1\r\nx-api-key: {KEY}\r\napi-key: {KEY}\r\n\r\n"),
        "GET /v1/models/gpt-4o HTTP/1.0\r\nUser-Agent: curl/8.5.0\r\n\r\n".to_owned(),
        "POST /v1/embeddings HTTP/1.1\r\nHost: a\r\nContent-Le".to_owned(),
        "OPTIONS * HTTP/1.1\r\n\r\n".to_owned(),
        "GET http://proxy.example/v1/responses HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_owned(),
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_owned(),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect()
}

fn http_responses() -> Vec<Vec<u8>> {
    [
        &b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n\
           Transfer-Encoding: gzip, chunked\r\n\r\n1a\r\ndata: {\"delta\":\"hi\"}\n\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\n\r\n",
        b"HTTP/1.0 503 Service Unavailable\r\nX-Old: a\r\n  folded\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        b"HTTP/1.1 2",
    ]
    .iter()
    .map(|s| s.to_vec())
    .collect()
}

/// Carved records, each also as a bare handshake message and split over small records, plus
/// a minimal hello in case no capture is at hand.
fn tls_hellos(carved: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut out = vec![minimal_hello()];
    for r in carved {
        out.push(r.clone());
        if let Some(msg) = r.get(5..) {
            out.push(msg.to_vec());
            let mut split = Vec::new();
            for piece in msg.chunks(64) {
                split.extend_from_slice(&[0x16, 3, 1]);
                split.extend_from_slice(&(piece.len() as u16).to_be_bytes());
                split.extend_from_slice(piece);
            }
            out.push(split);
        }
    }
    out
}

/// A TLS 1.3 ClientHello record with SNI, ALPN h2, supported_versions and signature
/// algorithms.
pub fn minimal_hello() -> Vec<u8> {
    let ext = |t: u16, body: &[u8]| -> Vec<u8> {
        let mut v = t.to_be_bytes().to_vec();
        v.extend_from_slice(&(body.len() as u16).to_be_bytes());
        v.extend_from_slice(body);
        v
    };
    let mut exts = Vec::new();
    exts.extend(ext(0, b"\x00\x0e\x00\x00\x0bexample.net"));
    exts.extend(ext(0x10, b"\x00\x03\x02h2"));
    exts.extend(ext(0x2b, b"\x04\x03\x04\x03\x03"));
    exts.extend(ext(0x0d, b"\x00\x04\x04\x03\x08\x04"));
    exts.extend(ext(0x0a0a, b""));
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]);
    body.push(0);
    body.extend_from_slice(&[0, 6, 0x13, 1, 0x13, 2, 0x0a, 0x0a]);
    body.extend_from_slice(&[1, 0]);
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend(exts);
    let mut msg = vec![1];
    msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    msg.extend(body);
    let mut rec = vec![0x16, 3, 1];
    rec.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    rec.extend(msg);
    rec
}

/// Window (u16 little-endian), then SYN options as Linux, Windows and macOS send them.
fn syn_options() -> Vec<Vec<u8>> {
    let with_window = |w: u16, opts: &[u8]| [&w.to_le_bytes()[..], opts].concat();
    vec![
        with_window(
            64240,
            &[
                2, 4, 5, 180, 4, 2, 8, 10, 0, 1, 2, 3, 0, 0, 0, 0, 1, 3, 3, 7,
            ],
        ),
        with_window(64240, &[2, 4, 5, 180, 1, 3, 3, 8, 1, 1, 4, 2]),
        with_window(
            65535,
            &[
                2, 4, 5, 180, 1, 3, 3, 6, 1, 1, 8, 10, 1, 2, 3, 4, 0, 0, 0, 0, 4, 2, 0, 0,
            ],
        ),
        with_window(1024, &[2, 4, 5]),
    ]
}

/// Lines of `F<Forwarded value>` or `X<X-Forwarded-For value>`.
fn forwarded() -> Vec<Vec<u8>> {
    [
        "X203.0.113.7, 10.0.0.1\nFfor=192.0.2.60;proto=http;by=203.0.113.43",
        "FFor=\"[2001:db8:cafe::17]:4711\", for=unknown, for=_hidden\nX[2001:db8::2]:443",
        "X203.0.113.7:5678, 2001:db8::1, \u{ff}\nFfor=\"",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

/// `name:value` headers.
fn api_key_headers() -> Vec<Vec<u8>> {
    [
        format!("Authorization: Bearer {KEY}"),
        format!("authorization:bearer\t{KEY}  "),
        format!("x-api-key: {KEY}"),
        format!("Api-Key:{KEY}"),
        "Authorization: Basic dXNlcjpwYXNz".to_owned(),
        "Authorization: Bearerxyz".to_owned(),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect()
}

/// Turns: segments separated by 0xFF, each led by its direction (0: request, 1: response).
fn turns(requests: &[Vec<u8>], responses: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let seg = |dir: u8, bytes: &[u8]| [&[dir][..], bytes].concat();
    let join = |segs: Vec<Vec<u8>>| segs.join(&0xffu8);
    let mut out = vec![
        // Two pipelined requests written together, answered by 100-continue, then two
        // responses (one Content-Length, one chunked event stream).
        join(vec![
            seg(0, b"POST /v1/completions HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}GET /v1/models HTTP/1.1\r\n\r\n"),
            seg(1, b"HTTP/1.1 100 Continue\r\n\r\n"),
            seg(1, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
            seg(1, b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n5\r\ndata:\r\n"),
            seg(1, b"0\r\n\r\n"),
        ]),
        join(vec![
            seg(0, b"GET / HTTP/1.1\r\n\r\n"),
            seg(0, b"GET /a HTTP/1.1\r\n\r\n"),
            seg(1, b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"),
        ]),
    ];
    for (q, r) in requests.iter().zip(responses).take(8) {
        out.push(join(vec![seg(0, q), seg(1, r)]));
    }
    out
}

fn exchange_logs(root: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let exchange = |client: &str, seq: u32, start: u64, extra: &str| {
        format!(
            "{{\"record\":\"exchange\",\"ifindex\":2,\"client\":\"{client}\",\"server\":\"10.0.0.1:8000\",\
             \"seq\":{seq},\"part\":0,\"end\":\"next_request\",\"request_start_ns\":{start},\
             \"request_start_unix_ns\":{},\"request_bytes\":300,\"response_bytes\":90000,\
             \"request_packets\":1,\"response_packets\":40,\"ttfb_seconds\":0.3,\
             \"response_duration_seconds\":4.5,\"streamed_chunks\":40{extra}}}",
            1_700_000_000_000_000_000u64 + start
        )
    };
    let http = ",\"http\":{\"method\":\"POST\",\"route\":\"/v1/chat/completions\",\"status\":200,\
         \"event_stream\":true,\"user_agent_family\":\"openai-python\",\
         \"api_key_hash\":\"00112233445566778899aabbccddeeff\",\"client_ip\":\"192.0.2.7\",\
         \"forwarded_for\":[\"198.51.100.1\",\"192.0.2.7\"]},\
         \"tls\":{\"ja4\":\"t13d1516h2_8daaf6152771_02713d6af862\"},\
         \"tcp\":{\"ja4t\":\"64240_2-4-8-1-3_1460_7\",\"synack_ack_seconds\":0.002,\"tls_rtt_seconds\":0.03}"
    .to_owned();
    let mut lines: Vec<String> = (1..=20u32)
        .map(|i| exchange("10.0.0.9:40000", i, u64::from(i) * 2_000_000_000, &http))
        .collect();
    lines.push(exchange("[2001:db8::5]:1", 1, 9, ""));
    lines.push(r#"{"record":"tls_client_hello","ts_ns":1,"error":"truncated"}"#.to_owned());
    let golden = fs::read_to_string(root.join("agent/tests/data/detection_event.golden.json"))
        .context("reading the detection-event golden file")?;
    let one_line: String = golden.lines().map(str::trim).collect();
    Ok(vec![
        lines.join("\n").into_bytes(),
        lines[..3].join("\n").into_bytes(),
        one_line.into_bytes(),
    ])
}

fn detect_configs(root: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let shipped = fs::read(root.join("deploy/kubernetes/config/detect.toml"))
        .context("reading deploy/kubernetes/config/detect.toml")?;
    Ok(vec![
        shipped,
        b"top_k = 7\nwindows_seconds = [1]\nbuckets = 1\neval_interval_seconds = 0.001\n\
          [harvest]\nraise = 0.8\n[[allow]]\nclient = \"10.0.0.0/8\"\nreason = \"lab\"\n\
          [[allow]]\napi_key_hash = \"00112233445566778899aabbccddeeff\"\nreason = \"batch\"\n"
            .to_vec(),
        b"windows_seconds = [604800, 60]\nprefix_v4 = 0\nprefix_v6 = 128\n".to_vec(),
    ])
}
