use super::*;
use crate::decode::test_hello::*;

#[test]
fn decodes_spec_example() {
    let spec = spec_example();
    let hello = ClientHello::parse_records(&spec.records(1 << 14)).unwrap();
    assert_eq!(hello.legacy_version, 0x0303);
    assert_eq!(hello.cipher_suites.len(), 16);
    assert_eq!(hello.cipher_suites.first(), Some(&GREASE));
    assert_eq!(hello.extensions.len(), 18);
    assert_eq!(hello.sni.as_deref(), Some("example.com"));
    assert_eq!(hello.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
    assert_eq!(hello.supported_versions, [0x3a3a, 0x0304, 0x0303]);
    assert_eq!(hello.signature_algorithms.len(), 8);
    assert_eq!(
        ClientHello::parse_handshake(&spec.handshake()).unwrap(),
        hello
    );
}

#[test]
fn handshake_split_across_records() {
    let spec = spec_example();
    let whole = ClientHello::parse_records(&spec.records(1 << 14)).unwrap();
    for fragment in [1, 2, 3, 4, 5, 17, 100, 255] {
        let got = ClientHello::parse_records(&spec.records(fragment)).unwrap();
        assert_eq!(got, whole, "fragment {fragment}");
    }
}

#[test]
fn trailing_records_are_ignored() {
    let mut bytes = spec_example().records(64);
    bytes.extend_from_slice(&[20, 3, 3, 0, 1, 1]);
    bytes.extend_from_slice(b"garbage");
    assert!(ClientHello::parse_records(&bytes).is_ok());
}

#[test]
fn every_prefix_is_truncated_not_panicking() {
    for fragment in [7, 1 << 14] {
        let bytes = spec_example().records(fragment);
        for cut in 1..bytes.len() {
            let err = ClientHello::parse_records(bytes.get(..cut).unwrap()).unwrap_err();
            assert!(
                matches!(err, DecodeError::Truncated(_)),
                "cut {cut}: {err:?}"
            );
        }
    }
}

#[test]
fn minimal_hello_without_extensions() {
    let spec = HelloSpec {
        legacy_version: 0x0301,
        session_id: Vec::new(),
        ciphers: vec![0x002f],
        compression: vec![0],
        extensions: None,
    };
    let hello = ClientHello::parse_records(&spec.records(512)).unwrap();
    assert_eq!(hello.cipher_suites, [0x002f]);
    assert!(hello.extensions.is_empty());
    assert_eq!(hello.sni, None);
}

#[test]
fn malformed_table() {
    let base = spec_example();
    let body = base.body();

    let mut odd_ciphers = base.clone();
    odd_ciphers.ciphers = vec![];
    let mut odd_body = odd_ciphers.body();
    // Claim 3 bytes of ciphers: an odd length.
    let at = 2 + 32 + 1 + 32;
    *odd_body.get_mut(at + 1).unwrap() = 3;
    odd_body.splice(at + 2..at + 2, [0, 0x2f, 0]);

    let mut long_session = body.clone();
    *long_session.get_mut(34).unwrap() = 33;

    let mut ext_overrun = body.clone();
    let last = ext_overrun.len() - 1;
    ext_overrun.truncate(last);

    let mut trailing = body.clone();
    trailing.push(0);

    let bad_alpn = HelloSpec {
        extensions: Some(vec![(0x0010, vec![0, 3, 5, b'h', b'2'])]),
        ..base.clone()
    };
    let bad_versions = HelloSpec {
        extensions: Some(vec![(0x002b, vec![3, 3, 4, 3])]),
        ..base.clone()
    };
    let bad_sigs = HelloSpec {
        extensions: Some(vec![(0x000d, vec![0, 4, 4, 3])]),
        ..base.clone()
    };
    let bad_sni = HelloSpec {
        extensions: Some(vec![(0x0000, vec![0, 9, 0, 0])]),
        ..base.clone()
    };

    let hs = |b: &[u8]| records_of(&handshake_of(b), 1 << 14);
    let cases: Vec<(&str, Vec<u8>, Result<(), DecodeError>)> = vec![
        ("empty", vec![], Err(DecodeError::Empty)),
        (
            "http",
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            Err(DecodeError::TlsNotHandshake),
        ),
        (
            "alert",
            vec![21, 3, 3, 0, 2, 2, 40],
            Err(DecodeError::TlsNotHandshake),
        ),
        (
            "sslv2",
            vec![0x80, 0x2e, 1, 3, 1],
            Err(DecodeError::TlsSslv2),
        ),
        (
            "zero record",
            vec![22, 3, 1, 0, 0],
            Err(DecodeError::TlsBadLength("record")),
        ),
        (
            "huge record",
            vec![22, 3, 1, 0xff, 0xff],
            Err(DecodeError::TlsTooLarge("record")),
        ),
        (
            "server hello",
            records_of(&[2, 0, 0, 0], 64),
            Err(DecodeError::TlsNotClientHello),
        ),
        (
            "huge hello",
            records_of(&[1, 0xff, 0xff, 0xff, 0], 64),
            Err(DecodeError::TlsTooLarge("ClientHello")),
        ),
        (
            "odd ciphers",
            hs(&odd_body),
            Err(DecodeError::TlsBadLength("cipher suites")),
        ),
        (
            "long session id",
            hs(&long_session),
            Err(DecodeError::TlsBadLength("session id")),
        ),
        (
            "ext overrun",
            hs(&ext_overrun),
            Err(DecodeError::TlsBadLength("extensions")),
        ),
        (
            "trailing byte",
            hs(&trailing),
            Err(DecodeError::TlsBadLength("extensions")),
        ),
        (
            "bad alpn",
            bad_alpn.records(512),
            Err(DecodeError::TlsBadLength("ALPN")),
        ),
        (
            "bad versions",
            bad_versions.records(512),
            Err(DecodeError::TlsBadLength("supported versions")),
        ),
        (
            "bad sigs",
            bad_sigs.records(512),
            Err(DecodeError::TlsBadLength("signature algorithms")),
        ),
        // A broken server_name list still marks the hello as carrying SNI.
        ("bad sni", bad_sni.records(512), Ok(())),
        (
            "short body",
            hs(&[3, 3, 0]),
            Err(DecodeError::Truncated("ClientHello")),
        ),
    ];
    for (name, input, want) in cases {
        let got = ClientHello::parse_records(&input).map(|_| ());
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn parse_handshake_rejects_short_input() {
    assert_eq!(ClientHello::parse_handshake(&[]), Err(DecodeError::Empty));
    assert_eq!(
        ClientHello::parse_handshake(&[1, 0, 0]),
        Err(DecodeError::Truncated("handshake header"))
    );
    assert_eq!(
        ClientHello::parse_handshake(&[1, 0, 0, 9, 3]),
        Err(DecodeError::Truncated("ClientHello"))
    );
}

#[test]
fn sni_is_bounded_and_lossy() {
    let host = "a".repeat(1000);
    let spec = HelloSpec {
        extensions: Some(vec![ext_sni(&host)]),
        ..spec_example()
    };
    let hello = ClientHello::parse_records(&spec.records(1 << 14)).unwrap();
    assert_eq!(hello.sni.map(|s| s.len()), Some(MAX_SNI_BYTES));

    let mut raw = ext_sni("ab");
    *raw.1.last_mut().unwrap() = 0xff;
    let spec = HelloSpec {
        extensions: Some(vec![raw]),
        ..spec_example()
    };
    let hello = ClientHello::parse_records(&spec.records(1 << 14)).unwrap();
    assert_eq!(hello.sni.as_deref(), Some("a\u{fffd}"));
}
