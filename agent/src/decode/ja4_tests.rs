use super::*;
use crate::decode::test_hello::*;

fn ja4_of(spec: &HelloSpec) -> Ja4 {
    Ja4::new(
        &ClientHello::parse_records(&spec.records(1 << 14)).unwrap(),
        Transport::Tcp,
    )
}

#[test]
fn spec_worked_example() {
    let ja4 = ja4_of(&spec_example());
    assert_eq!(ja4.fingerprint(), "t13d1516h2_8daaf6152771_e5627efa2ab1");
    assert_eq!(ja4.to_string(), ja4.fingerprint());
    assert_eq!(
        ja4.raw(),
        "t13d1516h2_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9_\
         0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01_\
         0403,0804,0401,0503,0805,0501,0806,0601"
    );
    assert_eq!(ja4.original(), "t13d1516h2_acb858a92679_18f69afefd3d");
    assert_eq!(
        ja4.raw_original(),
        "t13d1516h2_1301,1302,1303,c02b,c02f,c02c,c030,cca9,cca8,c013,c014,009c,009d,002f,0035_\
         001b,0000,0033,0010,4469,0017,002d,000d,0005,0023,0012,002b,ff01,000b,000a,0015_\
         0403,0804,0401,0503,0805,0501,0806,0601"
    );
}

#[test]
fn spec_example_without_signature_algorithms() {
    // JA4.md: with no signature algorithms the list is hashed without the
    // trailing underscore.
    let mut spec = spec_example();
    if let Some(exts) = spec.extensions.as_mut() {
        if let Some(sig) = exts.iter_mut().find(|(t, _)| *t == 0x000d) {
            *sig = ext_sigs(&[]);
        }
    }
    let ja4 = ja4_of(&spec);
    assert!(ja4.raw().ends_with("4469,ff01"), "{}", ja4.raw());
    assert!(
        ja4.fingerprint().ends_with("_6d807ffa2a79"),
        "{}",
        ja4.fingerprint()
    );
}

#[test]
fn transport_marker() {
    let hello = ClientHello::parse_records(&spec_example().records(512)).unwrap();
    for (t, c) in [
        (Transport::Tcp, 't'),
        (Transport::Quic, 'q'),
        (Transport::Dtls, 'd'),
    ] {
        assert!(Ja4::new(&hello, t).fingerprint().starts_with(c));
    }
}

#[test]
fn alpn_code_table() {
    // JA4.md's ALPN examples for ASCII bytes; non-ASCII bytes give "99" as FoxIO's tools do.
    let cases: &[(Option<&[u8]>, &str)] = &[
        (None, "00"),
        (Some(b""), "00"),
        (Some(b"h2"), "h2"),
        (Some(b"http/1.1"), "h1"),
        (Some(b"h"), "hh"),
        (Some(b"h3-29"), "h9"),
        (Some(&[0xab]), "99"),
        (Some(&[0x20]), "20"),
        (Some(&[0xab, 0xcd]), "99"),
        (Some(&[0x20, 0x61]), "21"),
        (Some(&[0x30, 0xab]), "99"),
        (Some(&[0x61, 0x20]), "60"),
        (Some(&[0x30, 0x31, 0xab, 0xcd]), "99"),
        (Some(&[0x30, 0xab, 0xcd, 0x31]), "01"),
        (Some(&[0xba, 0xad]), "99"),
    ];
    for (alpn, want) in cases {
        assert_eq!(alpn_code(*alpn), *want, "{alpn:?}");
    }
}

#[test]
fn version_table() {
    let cases: &[(u16, Option<&[u16]>, &str)] = &[
        (0x0303, Some(&[0x0304, 0x0303]), "13"),
        (0x0303, Some(&[0x0303, 0x0304]), "13"),
        (0x0303, Some(&[0x0a0a, 0x0303]), "12"),
        (0x0303, Some(&[0x0a0a]), "12"),
        (0x0303, Some(&[]), "12"),
        (0x0303, None, "12"),
        (0x0302, None, "11"),
        (0x0301, None, "10"),
        (0x0300, None, "s3"),
        (0x0002, None, "s2"),
        (0xfeff, None, "d1"),
        (0xfefd, None, "d2"),
        (0xfefc, None, "d3"),
        (0x0305, None, "00"),
        (0x0303, Some(&[0x7f1c]), "00"),
    ];
    for (legacy, versions, want) in cases {
        let exts = versions.map(|v| vec![ext_versions(v)]).unwrap_or_default();
        let spec = HelloSpec {
            legacy_version: *legacy,
            extensions: Some(exts),
            ..spec_example()
        };
        let fp = ja4_of(&spec).fingerprint();
        assert_eq!(fp.get(1..3), Some(*want), "{legacy:04x} {versions:?}: {fp}");
    }
}

#[test]
fn counts_ignore_grease_and_saturate() {
    let many: Vec<u16> = (0..150u16)
        .map(|i| 0x0100 + i)
        .chain([0x0a0a, 0xfafa])
        .collect();
    let exts: Vec<(u16, Vec<u8>)> = (0..120u16).map(|i| ext_empty(0x1000 + i)).collect();
    let spec = HelloSpec {
        ciphers: many,
        extensions: Some(exts),
        ..spec_example()
    };
    assert!(ja4_of(&spec).fingerprint().starts_with("t12i999900_"));

    let grease_only = HelloSpec {
        ciphers: vec![0x0a0a, 0x1a1a],
        extensions: Some(vec![ext_empty(0x2a2a)]),
        ..spec_example()
    };
    assert_eq!(
        ja4_of(&grease_only).fingerprint(),
        "t12i000000_000000000000_000000000000"
    );
}

#[test]
fn only_sni_and_alpn_zero_the_extension_hash() {
    // The JA4_o rule mirrors FoxIO's published output (socks-https-example):
    // zeros whenever the sorted list is empty, even if SNI/ALPN remain.
    let spec = HelloSpec {
        legacy_version: 0x0301,
        ciphers: vec![0x0035],
        extensions: Some(vec![ext_sni("www.example.com")]),
        ..spec_example()
    };
    let ja4 = ja4_of(&spec);
    assert_eq!(ja4.raw(), "t10d010100_0035_");
    assert_eq!(ja4.raw_original(), "t10d010100_0035_0000");
    assert!(ja4.fingerprint().ends_with("_000000000000"));
    assert!(ja4.original().ends_with("_000000000000"));
}

#[test]
fn grease_signature_algorithms_are_dropped() {
    let spec = HelloSpec {
        extensions: Some(vec![ext_sigs(&[0x0a0a, 0x0403])]),
        ..spec_example()
    };
    assert!(ja4_of(&spec).raw().ends_with("_000d_0403"));
}

#[test]
fn grease_detection() {
    for v in [0x0a0a, 0x1a1a, 0x2a2a, 0x9a9a, 0xfafa] {
        assert!(is_grease(v), "{v:04x}");
    }
    for v in [0x0a1a, 0x0b0b, 0x0000, 0xaaab, 0x1301] {
        assert!(!is_grease(v), "{v:04x}");
    }
}
