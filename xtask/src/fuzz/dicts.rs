//! libFuzzer dictionaries (`-dict=`), written under target/fuzz/seeds/dicts/ at every run: the
//! words a parser compares against (configuration keys, JSON field names, HTTP header names)
//! and numbers at the edges of arithmetic, which random mutation rarely spells.

use std::{fs, path::Path};

use anyhow::Context as _;

/// The dictionary file of a target, if it has one (libFuzzer's `-dict=`).
pub fn dict_path(dir: &Path, target: &str) -> Option<std::path::PathBuf> {
    let p = dir.join("dicts").join(format!("{target}.dict"));
    p.is_file().then_some(p)
}

/// Values that break arithmetic and range checks, in the spellings TOML and JSON accept.
const EDGE_NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1e300",
    "-1e300",
    "1e-300",
    "nan",
    "inf",
    "-inf",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775807",
    "65535",
    "65536",
];

const HTTP_WORDS: &[&str] = &[
    "HTTP/1.1",
    "HTTP/1.0",
    "\r\n",
    "\r\n\r\n",
    "Content-Length:",
    "Transfer-Encoding:",
    "chunked",
    "Content-Type:",
    "text/event-stream",
    "Authorization:",
    "Bearer ",
    "x-api-key:",
    "api-key:",
    "X-Forwarded-For:",
    "Forwarded:",
    "for=",
    "Cookie:",
    "Accept-Language:",
    "User-Agent:",
    "Host:",
    "Referer:",
    "Expect: 100-continue",
    "HTTP/1.1 100 Continue",
    "HTTP/1.1 101",
    "HTTP/1.1 103",
    "HTTP/1.1 200 OK",
];

/// Dictionaries: the words a parser compares against, which random mutation rarely spells.
/// The configuration's keys come from the shipped detect.toml, so they follow the code.
pub fn write_all(root: &Path, dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let shipped = fs::read_to_string(root.join("deploy/kubernetes/config/detect.toml"))?;
    let mut config: Vec<String> = shipped
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            if l.starts_with('[') {
                return Some(l.to_owned());
            }
            let (key, _) = l.split_once('=')?;
            (!l.starts_with('#')).then(|| format!("{} = ", key.trim()))
        })
        .collect();
    config.extend(
        [
            "[[allow]]",
            "api_key_hash = ",
            "client = ",
            "reason = ",
            "\"10.0.0.0/8\"",
            "[",
            "]",
        ]
        .map(String::from),
    );
    let json_keys = [
        "record",
        "exchange",
        "tls_client_hello",
        "detection",
        "client",
        "server",
        "seq",
        "request_start_ns",
        "request_start_unix_ns",
        "request_bytes",
        "response_bytes",
        "streamed_chunks",
        "ttfb_seconds",
        "response_duration_seconds",
        "http",
        "tls",
        "tcp",
        "api_key_hash",
        "client_ip",
        "forwarded_for",
        "status",
        "event_stream",
        "user_agent_family",
        "ja4",
        "ja4t",
        "synack_ack_seconds",
        "tls_rtt_seconds",
    ];
    let mut json: Vec<String> = json_keys.iter().map(|k| format!("\"{k}\":")).collect();
    json.extend(["null", "true", "\"[::1]:1\"", "\"10.0.0.1:80\"", "{", "}"].map(String::from));
    let numbers = EDGE_NUMBERS.iter().map(|n| n.to_string());
    let http: Vec<String> = HTTP_WORDS.iter().map(|w| w.to_string()).collect();
    for (target, words) in [
        (
            "detect_config",
            [config, numbers.clone().collect()].concat(),
        ),
        ("exchange_log", [json, numbers.collect()].concat()),
        ("http_request", http.clone()),
        ("http_response", http.clone()),
        ("turn_framing", http),
    ] {
        let text: String = words
            .iter()
            .map(|w| format!("\"{}\"\n", escape(w)))
            .collect();
        fs::write(dir.join(format!("{target}.dict")), text)?;
    }
    Ok(())
}

/// A dictionary entry's body: printable ASCII as is, `"` and `\` and the rest as `\xNN`.
fn escape(word: &str) -> String {
    word.bytes()
        .map(|b| match b {
            b'"' | b'\\' => format!("\\x{b:02x}"),
            0x20..=0x7e => char::from(b).to_string(),
            _ => format!("\\x{b:02x}"),
        })
        .collect()
}
