use super::*;
use crate::decode::http_request::parse_request_head;

fn head(raw: &str) -> RequestHead {
    parse_request_head(raw.as_bytes(), None).unwrap()
}

#[test]
fn reference_request_with_cookies() {
    // Values published by FoxIO for http1-with-cookies.pcapng.
    let h = head(
        "GET / HTTP/1.1\r\nHost: localhost:8000\r\nUser-Agent: curl/8.1.2\r\nAccept: */*\r\n\
         Accept-Language: da, en-gb;q=0.8\r\nReferer: http://x/\r\n\
         Cookie: yummy_cookie=choco; tasty_cookie=strawberry\r\n\r\n",
    );
    let ja4h = Ja4h::new(&h);
    assert_eq!(
        ja4h.fingerprint(),
        "ge11cr04da00_8ddaef5d77af_280f366eaa04_c2fb0fe53442"
    );
    assert_eq!(
        Ja4h::raw_original(&h),
        "ge11cr04da00_Host,User-Agent,Accept,Accept-Language_yummy_cookie,tasty_cookie_\
         yummy_cookie=choco,tasty_cookie=strawberry"
    );
    assert_eq!(
        Ja4h::raw(&h),
        "ge11cr04da00_Host,User-Agent,Accept,Accept-Language_tasty_cookie,yummy_cookie_\
         tasty_cookie=strawberry,yummy_cookie=choco"
    );
}

#[test]
fn reference_requests_without_cookies() {
    let cases = [
        (
            "GET / HTTP/1.0\r\nUser-Agent:\r\n\r\n",
            "ge10nn010000_b8bcd45ac095_000000000000_000000000000",
            "ge10nn010000_User-Agent_",
        ),
        (
            "CONNECT example.com:443 HTTP/1.0\r\nUser-Agent: x\r\n\r\n",
            "co10nn010000_b8bcd45ac095_000000000000_000000000000",
            "co10nn010000_User-Agent_",
        ),
    ];
    for (raw, want, want_ro) in cases {
        let h = head(raw);
        assert_eq!(Ja4h::new(&h).to_string(), want);
        assert_eq!(Ja4h::raw_original(&h), want_ro);
    }
}

#[test]
fn prefix_table() {
    let cases = [
        ("GET / HTTP/1.1\r\n\r\n", "ge11nn000000"),
        ("POST / HTTP/1.1\r\nreferer: x\r\n\r\n", "po11nr000000"),
        ("HEAD / HTTP/1.1\r\nCOOKIE: a=1\r\n\r\n", "he11cn000000"),
        (
            "OPTIONS * HTTP/1.1\r\nCookie:\r\nA: 1\r\n\r\n",
            "op11cn010000",
        ),
        ("X / HTTP/1.1\r\n\r\n", "x011nn000000"),
        (
            "GET / HTTP/1.1\r\nAccept-Language: en-US,en;q=0.9\r\n\r\n",
            "ge11nn01enus",
        ),
        (
            "GET / HTTP/1.1\r\nAccept-Language: en;q=0.5\r\n\r\n",
            "ge11nn01en00",
        ),
        (
            "GET / HTTP/1.1\r\nAccept-Language: zh-Hant-TW\r\n\r\n",
            "ge11nn01zhha",
        ),
        (
            "GET / HTTP/1.1\r\nAccept-Language: *\r\n\r\n",
            "ge11nn01*000",
        ),
        ("GET / HTTP/1.1\r\nAccept-Language:\r\n\r\n", "ge11nn010000"),
        (
            "GET / HTTP/1.1\r\nAccept-Language: DE-de\r\n\r\n",
            "ge11nn01dede",
        ),
        (
            "GET / HTTP/1.1\r\nAccept-Language: \u{c9}st\r\n\r\n",
            "ge11nn01\u{e9}st0",
        ),
    ];
    for (raw, want) in cases {
        let fp = Ja4h::new(&head(raw)).to_string();
        assert_eq!(fp.split('_').next(), Some(want), "{raw:?}");
    }
}

#[test]
fn header_count_saturates_at_99() {
    let mut raw = String::from("GET / HTTP/1.1\r\n");
    for i in 0..120 {
        raw.push_str(&format!("X-{i}: v\r\n"));
    }
    raw.push_str("\r\n");
    let fp = Ja4h::new(&head(&raw)).to_string();
    assert!(fp.starts_with("ge11nn990000_"), "{fp}");
}

#[test]
fn cookie_sorting_is_stable_by_name() {
    let h = head("GET / HTTP/1.1\r\nCookie: b=2; a=9; a=1;; c ; =x\r\n\r\n");
    assert_eq!(Ja4h::raw(&h), "ge11cn000000__,a,a,b,c_=x,a=9,a=1,b=2,c");
}

#[test]
fn empty_lists_hash_to_zeros() {
    let fp = Ja4h::new(&head("GET / HTTP/1.1\r\nCookie:  \r\n\r\n")).to_string();
    assert_eq!(fp, "ge11cn000000_000000000000_000000000000_000000000000");
}

#[test]
fn truncated_request_line_still_fingerprints() {
    let h = parse_request_head(b"PATCH /very/long", None).unwrap();
    assert_eq!(
        Ja4h::new(&h).to_string(),
        "pa00nn000000_000000000000_000000000000_000000000000"
    );
}

#[test]
fn cookie_values_stay_out_of_debug() {
    let h = head("GET / HTTP/1.1\r\nCookie: session=SECRETVALUE\r\n\r\n");
    let ja4h = Ja4h::new(&h);
    assert!(!format!("{ja4h:?} {ja4h} {h:?}").contains("SECRETVALUE"));
}

/// Fuzz finding (http_request target): a method token with `_` (a token character) gave a
/// fingerprint of five `_`-separated fields. Input bytes as found.
#[test]
fn fuzz_regression_underscore_in_method_keeps_four_fields() {
    let input = b"s_ccP \xffexle2\xf0lojmt";
    let h = parse_request_head(input, None).unwrap();
    let fp = Ja4h::new(&h).fingerprint();
    assert_eq!(fp.split('_').count(), 4, "{fp}");
    assert!(fp.starts_with("s0"), "{fp}");
}

#[test]
fn posix_locale_language_is_read_like_a_language_tag() {
    let posix = head("GET / HTTP/1.1\r\nAccept-Language: en_US\r\n\r\n");
    let tag = head("GET / HTTP/1.1\r\nAccept-Language: en-US\r\n\r\n");
    let fp = Ja4h::new(&posix).fingerprint();
    assert_eq!(fp, Ja4h::new(&tag).fingerprint());
    assert!(fp.starts_with("ge11nn01enus_"), "{fp}");
    assert_eq!(fp.split('_').count(), 4, "{fp}");
}
