use super::*;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const RAW_KEY: &str = "sk-proj-RAWKEYabcdefghijklmnopqrstuvwxyz0123456789";

fn keys() -> ApiKeyHasher {
    ApiKeyHasher::new(SECRET).unwrap()
}

fn parse(buf: &[u8]) -> Result<RequestHead, DecodeError> {
    parse_request_head(buf, Some(&keys()))
}

fn openai_request() -> Vec<u8> {
    format!(
        "POST /v1/chat/completions?api-version=2024 HTTP/1.1\r\n\
         Host: api.openai.com\r\n\
         User-Agent: OpenAI/Python 1.35.3\r\n\
         Authorization: Bearer {RAW_KEY}\r\n\
         Content-Type: application/json\r\n\
         Content-Length: 123\r\n\
         X-Forwarded-For: 203.0.113.7, 10.0.0.1\r\n\
         Forwarded: for=192.0.2.60;proto=https\r\n\
         Cookie: b=2; a=1\r\n\
         Accept-Language: en-US,en;q=0.9\r\n\
         \r\n{{\"model\":\"gpt-4o\"}}"
    )
    .into_bytes()
}

#[test]
fn complete_request_decodes_every_field() {
    let head = parse(&openai_request()).unwrap();
    assert_eq!(head.method, Method::Post);
    assert_eq!(head.method_token, "POST");
    assert_eq!(head.version, 11);
    assert_eq!(head.path, "/v1/chat/completions");
    assert_eq!(head.route, Route::ChatCompletions);
    assert_eq!(head.host.as_deref(), Some("api.openai.com"));
    assert_eq!(head.content_length, Some(123));
    assert_eq!(head.user_agent_family, UaFamily::PythonOpenai);
    let want: Vec<IpAddr> = ["203.0.113.7", "10.0.0.1", "192.0.2.60"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(head.forwarded_for, want);
    assert_eq!(head.api_key, Some(keys().hash(RAW_KEY.as_bytes())));
    assert_eq!(
        head.header_names,
        [
            "Host",
            "User-Agent",
            "Authorization",
            "Content-Type",
            "Content-Length",
            "X-Forwarded-For",
            "Forwarded",
            "Cookie",
            "Accept-Language"
        ]
    );
    assert_eq!(head.cookie.as_deref(), Some("b=2; a=1"));
    assert_eq!(head.accept_language.as_deref(), Some("en-US,en;q=0.9"));
    assert!(!head.truncated);
}

#[test]
fn without_hasher_no_key_is_kept() {
    let head = parse_request_head(&openai_request(), None).unwrap();
    assert_eq!(head.api_key, None);
}

#[test]
fn raw_key_and_cookie_never_appear_in_debug() {
    let full = openai_request();
    let mut outputs = Vec::new();
    for cut in 1..=full.len() {
        match parse(full.get(..cut).unwrap()) {
            Ok(head) => outputs.push(format!("{head:?}")),
            Err(e) => outputs.push(format!("{e} {e:?}")),
        }
    }
    for out in outputs {
        assert!(!out.contains("RAWKEY"), "{out}");
        assert!(!out.contains("b=2"), "{out}");
    }
}

#[test]
fn api_key_header_variants() {
    let cases: &[(&str, bool)] = &[
        ("Authorization: Bearer k-123", true),
        ("authorization: bearer k-123", true),
        ("x-api-key: k-123", true),
        ("X-API-KEY: k-123", true),
        ("api-key: k-123", true),
        ("Authorization: Basic k-123", false),
        ("X-Api-Key:", false),
    ];
    for (line, found) in cases {
        let req = format!("GET / HTTP/1.1\r\n{line}\r\n\r\n");
        let head = parse(req.as_bytes()).unwrap();
        let want = found.then(|| keys().hash(b"k-123"));
        assert_eq!(head.api_key, want, "{line}");
    }
}

#[test]
fn first_api_key_wins() {
    let req = b"GET / HTTP/1.1\r\nx-api-key: first\r\nAuthorization: Bearer second\r\n\r\n";
    assert_eq!(parse(req).unwrap().api_key, Some(keys().hash(b"first")));
}

#[test]
fn truncated_mid_header_keeps_complete_lines() {
    let full = openai_request();
    // Cut inside "Content-Type: applic".
    let at = full.windows(6).position(|w| w == b"applic").unwrap() + 3;
    let head = parse(full.get(..at).unwrap()).unwrap();
    assert!(head.truncated);
    assert_eq!(head.route, Route::ChatCompletions);
    assert_eq!(head.header_names, ["Host", "User-Agent", "Authorization"]);
    assert_eq!(head.api_key, Some(keys().hash(RAW_KEY.as_bytes())));
    assert_eq!(head.content_length, None);
}

#[test]
fn every_prefix_decodes_or_errors_cleanly() {
    let full = openai_request();
    let head_end = full.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    for cut in 1..=full.len() {
        let prefix = full.get(..cut).unwrap();
        match parse(prefix) {
            Ok(head) => {
                assert_eq!(head.truncated, cut < head_end, "cut {cut}");
                assert_eq!(head.method, Method::Post);
            }
            Err(e) => {
                assert!(cut <= "POST ".len(), "cut {cut}: {e:?}");
                assert_eq!(e, DecodeError::Truncated("request line"));
            }
        }
    }
}

#[test]
fn request_line_longer_than_capture() {
    let mut req = b"GET /v1/models/".to_vec();
    req.extend(std::iter::repeat_n(b'a', 2000));
    let head = parse(req.get(..1024).unwrap()).unwrap();
    assert!(head.truncated);
    assert_eq!(head.method, Method::Get);
    assert_eq!(head.version, 0);
    assert_eq!(head.route, Route::Model);
    assert!(head.path.len() <= MAX_PATH_BYTES);
    assert!(head.header_names.is_empty());
}

#[test]
fn malformed_input_table() {
    let cases: &[(&[u8], DecodeError)] = &[
        (b"", DecodeError::Empty),
        (b"G", DecodeError::Truncated("request line")),
        (b"GET", DecodeError::Truncated("request line")),
        (b"GET ", DecodeError::Truncated("request line")),
        (b"G\x00T /x", DecodeError::HttpSyntax("request line")),
        (
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            DecodeError::HttpSyntax("request line"),
        ),
        (
            b"GET /\xff\xfe HTTP/1.1\r\n\r\n",
            DecodeError::HttpSyntax("request line"),
        ),
        (
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            DecodeError::HttpSyntax("version"),
        ),
        (
            b"GET / HTTP/1.1 extra\r\n\r\n",
            DecodeError::HttpSyntax("line ending"),
        ),
        (b"GET / FTP/1.0\r\n\r\n", DecodeError::HttpSyntax("version")),
        // Leading blank lines are allowed before the request line (RFC 9112 §2.2).
        (b"\r\n\r\n", DecodeError::Truncated("request head")),
    ];
    for (input, want) in cases {
        assert_eq!(parse(input).unwrap_err(), *want, "{input:?}");
    }
}

#[test]
fn bare_lf_line_endings_are_accepted() {
    let head = parse(b"GET /health HTTP/1.0\nHost: a\nUser-Agent: curl/8.0\n\n").unwrap();
    assert_eq!(head.version, 10);
    assert_eq!(head.route, Route::Health);
    assert_eq!(head.header_names, ["Host", "User-Agent"]);
    assert_eq!(head.user_agent_family, UaFamily::Curl);
    assert!(!head.truncated);

    let cut = parse(b"GET /health HTTP/1.1\nHost: a\nUser-Ag").unwrap();
    assert!(cut.truncated);
    assert_eq!(cut.header_names, ["Host"]);
}

#[test]
fn non_utf8_header_values_are_lossy() {
    let head = parse(b"GET / HTTP/1.1\r\nHost: h\xffst\r\nUser-Agent: \xfe\r\n\r\n").unwrap();
    assert_eq!(head.host.as_deref(), Some("h\u{fffd}st"));
    assert_eq!(head.user_agent_family, UaFamily::Other);
}

#[test]
fn invalid_header_lines_are_skipped() {
    let head = parse(b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\nAccept: */*\r\n\r\n").unwrap();
    assert_eq!(head.header_names, ["Host", "Accept"]);
}

#[test]
fn huge_header_line_is_bounded() {
    let mut req = b"GET /v1/embeddings HTTP/1.1\r\nHost: a\r\nCookie: ".to_vec();
    req.extend(std::iter::repeat_n(b'x', 3 * MAX_HEAD_BYTES));
    req.extend_from_slice(b"\r\n\r\n");
    let head = parse(&req).unwrap();
    assert!(head.truncated);
    assert_eq!(head.route, Route::Embeddings);
    assert_eq!(head.header_names, ["Host"]);

    let mut fits = b"GET / HTTP/1.1\r\nCookie: ".to_vec();
    fits.extend(std::iter::repeat_n(b'y', MAX_HEAD_BYTES / 2));
    fits.extend_from_slice(b"\r\nHost: a\r\n\r\n");
    let head = parse(&fits).unwrap();
    assert!(!head.truncated);
    assert!(head.cookie.unwrap().len() <= MAX_COOKIE_BYTES);
}

#[test]
fn too_many_headers_is_an_error() {
    let mut req = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        req.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    assert_eq!(parse(&req).unwrap_err(), DecodeError::TooManyHeaders);
}

#[test]
fn content_length_table() {
    let cases: &[(&str, Option<u64>)] = &[
        ("Content-Length: 0", Some(0)),
        ("Content-Length:  42 ", Some(42)),
        ("Content-Length: 18446744073709551615", Some(u64::MAX)),
        ("Content-Length: 18446744073709551616", None),
        ("Content-Length: -1", None),
        ("Content-Length: +1", None),
        ("Content-Length: 1 2", None),
        ("Content-Length:", None),
        ("Content-Length: 5\r\nContent-Length: 5", Some(5)),
        ("Content-Length: 5\r\nContent-Length: 6", None),
        ("Content-Length: x\r\nContent-Length: 6", None),
    ];
    for (lines, want) in cases {
        let req = format!("POST / HTTP/1.1\r\n{lines}\r\n\r\n");
        assert_eq!(
            parse(req.as_bytes()).unwrap().content_length,
            *want,
            "{lines}"
        );
    }
}

#[test]
fn method_table() {
    let cases = [
        ("GET", Method::Get),
        ("POST", Method::Post),
        ("PUT", Method::Put),
        ("DELETE", Method::Delete),
        ("PATCH", Method::Patch),
        ("HEAD", Method::Head),
        ("OPTIONS", Method::Options),
        ("CONNECT", Method::Connect),
        ("TRACE", Method::Trace),
        ("get", Method::Other),
        ("PROPFIND", Method::Other),
    ];
    for (token, want) in cases {
        let head = parse(format!("{token} / HTTP/1.1\r\n\r\n").as_bytes()).unwrap();
        assert_eq!(head.method, want);
        assert_eq!(head.method_token, token);
    }
    let long = format!("{} / HTTP/1.1\r\n\r\n", "X".repeat(100));
    assert_eq!(
        parse(long.as_bytes()).unwrap().method_token.len(),
        MAX_METHOD_BYTES
    );
}

#[test]
fn multiple_cookie_headers_are_joined() {
    let head = parse(b"GET / HTTP/1.1\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n").unwrap();
    assert_eq!(head.cookie.as_deref(), Some("a=1; b=2"));
}

#[test]
fn client_ip_table() {
    let peer: IpAddr = "10.9.9.9".parse().unwrap();
    let chain: Vec<IpAddr> = ["1.1.1.1", "2.2.2.2", "3.3.3.3"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let cases: &[(&[IpAddr], usize, &str)] = &[
        (&chain, 0, "10.9.9.9"),
        (&chain, 1, "3.3.3.3"),
        (&chain, 2, "2.2.2.2"),
        (&chain, 3, "1.1.1.1"),
        (&chain, 4, "1.1.1.1"),
        (&chain, usize::MAX, "1.1.1.1"),
        (&[], 0, "10.9.9.9"),
        (&[], 1, "10.9.9.9"),
        (&[], usize::MAX, "10.9.9.9"),
    ];
    for (fwd, hops, want) in cases {
        let want: IpAddr = want.parse().unwrap();
        assert_eq!(client_ip(fwd, peer, *hops), want, "hops {hops}");
    }
}

/// The kernel starts a turn where a segment begins with one of `wire::HTTP_REQUEST_PREFIXES`;
/// the decoder names methods. Every prefix must belong to a method the decoder names, and every
/// named method must start a turn, or one side would split requests the other does not.
#[test]
fn turn_start_prefixes_and_named_methods_agree() {
    use agent_common::wire::{starts_http_request, HTTP_REQUEST_PREFIXES};
    let named = [
        "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE",
    ];
    for token in named {
        let line = format!("{token} / HTTP/1.1\r\n\r\n");
        assert_ne!(parse(line.as_bytes()).unwrap().method, Method::Other);
        assert!(
            starts_http_request(line.as_bytes()),
            "{token} starts no turn"
        );
    }
    for prefix in HTTP_REQUEST_PREFIXES {
        let owner = named
            .iter()
            .filter(|m| format!("{m} ").as_bytes().starts_with(&prefix))
            .count();
        assert_eq!(owner, 1, "prefix {:?}", String::from_utf8_lossy(&prefix));
    }
    assert_eq!(HTTP_REQUEST_PREFIXES.len(), named.len());
}
