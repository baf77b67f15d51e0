//! Every decoder fed mutated and random bytes: none may panic, and no
//! output may carry a raw API key.

use super::{test_hello::spec_example, *};

const RAW_KEY: &str = "sk-RAWKEY-0123456789abcdefghijklmnop";

/// Deterministic so a failure reproduces; quality is irrelevant here.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n.max(1)).unwrap()).unwrap()
    }

    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let request = format!(
        "POST /v1/messages?x=1 HTTP/1.1\r\nHost: api.anthropic.com\r\nx-api-key: {RAW_KEY}\r\n\
         api-key: {RAW_KEY}\r\nAuthorization: Bearer {RAW_KEY}\r\nUser-Agent: Anthropic/Python 0.3\r\n\
         X-Forwarded-For: 1.2.3.4, [::1]:80\r\nForwarded: for=\"[2001:db8::1]:1\"\r\n\
         Cookie: a=1; b=2\r\nAccept-Language: fr-CH, fr;q=0.9\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    vec![
        request.into_bytes(),
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec(),
        spec_example().records(1 << 14),
        spec_example().records(7),
        spec_example().handshake(),
        vec![
            2, 4, 5, 180, 1, 3, 3, 8, 1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 4, 2, 0, 0,
        ],
    ]
}

fn mutate(rng: &mut XorShift, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(5) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.byte();
            }
            1 => v.truncate(rng.below(v.len() + 1)),
            2 => {
                let i = rng.below(v.len() + 1);
                let n = rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
                v.splice(i..i, bytes);
            }
            3 if !v.is_empty() => {
                let i = rng.below(v.len());
                v.remove(i);
            }
            _ => {
                let i = rng.below(v.len() + 1);
                let tokens: [&[u8]; 4] = [b"\r\n", b"\n", b"\xff", b"\x16\x03\x01"];
                v.splice(i..i, tokens[rng.below(4)].iter().copied());
            }
        }
    }
    v
}

fn exercise(input: &[u8], keys: &ApiKeyHasher) -> Vec<String> {
    let mut out = Vec::new();
    match parse_request_head(input, Some(keys)) {
        Ok(head) => {
            let ja4h = Ja4h::new(&head);
            out.push(format!(
                "{head:?} {ja4h:?} {ja4h} {}",
                head.route.as_label()
            ));
            out.push(Ja4h::raw(&head));
            out.push(Ja4h::raw_original(&head));
            out.push(head.user_agent_family.as_label().to_owned());
            let peer = "10.0.0.1".parse().unwrap();
            for hops in 0..4 {
                out.push(client_ip(&head.forwarded_for, peer, hops).to_string());
            }
        }
        Err(e) => out.push(format!("{e} {e:?} {}", e.reason())),
    }
    match parse_response_head(input) {
        Ok(head) => out.push(format!("{head:?} {}", head.class_label())),
        Err(e) => out.push(format!("{e} {e:?} {}", e.reason())),
    }
    for hello in [
        ClientHello::parse_records(input),
        ClientHello::parse_handshake(input),
    ] {
        match hello {
            Ok(hello) => {
                let ja4 = Ja4::new(&hello, Transport::Tcp);
                out.push(format!("{hello:?} {ja4:?}"));
                out.extend([
                    ja4.fingerprint(),
                    ja4.raw(),
                    ja4.original(),
                    ja4.raw_original(),
                ]);
            }
            Err(e) => out.push(format!("{e} {e:?} {}", e.reason())),
        }
    }
    let t = Ja4t::new(0xffff, input);
    out.push(format!("{t:?} {t} {}", Ja4ts::new(1, input)));
    out
}

#[test]
fn mutated_and_random_inputs_never_panic() {
    let keys = ApiKeyHasher::new(b"robustness-secret-0123456789").unwrap();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for seed in seeds() {
        for _ in 0..3000 {
            inputs.push(mutate(&mut rng, &seed));
        }
        inputs.push(seed);
    }
    for _ in 0..3000 {
        let n = rng.below(600);
        let mut v: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
        if rng.below(2) == 0 {
            v.splice(
                0..0,
                [
                    0x16, 0x03, 0x01, 0x01, 0x00, 0x01, 0x00, 0x00, 0xfc, 0x03, 0x03,
                ],
            );
        }
        inputs.push(v);
    }
    for input in &inputs {
        for s in exercise(input, &keys) {
            assert!(!s.contains("RAWKEY"), "raw key leaked: {s}");
        }
    }
}

#[test]
fn seeds_decode() {
    let keys = ApiKeyHasher::new(b"robustness-secret-0123456789").unwrap();
    let [request, response, records, fragmented, handshake, options] =
        <[Vec<u8>; 6]>::try_from(seeds()).unwrap();
    let head = parse_request_head(&request, Some(&keys)).unwrap();
    assert_eq!(head.api_key, Some(keys.hash(RAW_KEY.as_bytes())));
    assert_eq!(head.route, Route::Messages);
    assert_eq!(head.user_agent_family, UaFamily::PythonAnthropic);
    assert_eq!(head.forwarded_for.len(), 3);
    assert!(parse_response_head(&response).unwrap().event_stream);
    let a = ClientHello::parse_records(&records).unwrap();
    assert_eq!(ClientHello::parse_records(&fragmented).unwrap(), a);
    assert_eq!(ClientHello::parse_handshake(&handshake).unwrap(), a);
    assert_eq!(
        Ja4t::new(65535, &options).to_string(),
        "65535_2-1-3-1-1-8-4-0-0_1460_8"
    );
}
