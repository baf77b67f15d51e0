//! Builds ClientHello bytes for tests, so malformed variants can be made by
//! changing one field instead of hand-editing hex dumps.

pub const GREASE: u16 = 0x1a1a;

#[derive(Clone)]
pub struct HelloSpec {
    pub legacy_version: u16,
    pub session_id: Vec<u8>,
    pub ciphers: Vec<u16>,
    pub compression: Vec<u8>,
    /// `None` omits the extensions block entirely (pre-TLS-1.2 style).
    pub extensions: Option<Vec<(u16, Vec<u8>)>>,
}

impl HelloSpec {
    pub fn body(&self) -> Vec<u8> {
        let mut b = self.legacy_version.to_be_bytes().to_vec();
        b.extend_from_slice(&[0x11; 32]);
        b.push(u8::try_from(self.session_id.len()).unwrap());
        b.extend_from_slice(&self.session_id);
        b.extend_from_slice(&u16_len(self.ciphers.len() * 2));
        for c in &self.ciphers {
            b.extend_from_slice(&c.to_be_bytes());
        }
        b.push(u8::try_from(self.compression.len()).unwrap());
        b.extend_from_slice(&self.compression);
        if let Some(exts) = &self.extensions {
            let mut e = Vec::new();
            for (t, data) in exts {
                e.extend_from_slice(&t.to_be_bytes());
                e.extend_from_slice(&u16_len(data.len()));
                e.extend_from_slice(data);
            }
            b.extend_from_slice(&u16_len(e.len()));
            b.extend_from_slice(&e);
        }
        b
    }

    pub fn handshake(&self) -> Vec<u8> {
        handshake_of(&self.body())
    }

    /// The handshake message split into TLS records of at most `fragment`
    /// bytes each.
    pub fn records(&self, fragment: usize) -> Vec<u8> {
        records_of(&self.handshake(), fragment)
    }
}

pub fn handshake_of(body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len()).unwrap().to_be_bytes();
    let mut m = vec![1, len[1], len[2], len[3]];
    m.extend_from_slice(body);
    m
}

pub fn records_of(msg: &[u8], fragment: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in msg.chunks(fragment) {
        out.extend_from_slice(&[22, 3, 1]);
        out.extend_from_slice(&u16_len(chunk.len()));
        out.extend_from_slice(chunk);
    }
    out
}

pub fn u16_len(n: usize) -> [u8; 2] {
    u16::try_from(n).unwrap().to_be_bytes()
}

pub fn ext_sni(host: &str) -> (u16, Vec<u8>) {
    let mut entry = vec![0];
    entry.extend_from_slice(&u16_len(host.len()));
    entry.extend_from_slice(host.as_bytes());
    let mut d = u16_len(entry.len()).to_vec();
    d.extend_from_slice(&entry);
    (0x0000, d)
}

pub fn ext_alpn(protos: &[&[u8]]) -> (u16, Vec<u8>) {
    let mut list = Vec::new();
    for p in protos {
        list.push(u8::try_from(p.len()).unwrap());
        list.extend_from_slice(p);
    }
    let mut d = u16_len(list.len()).to_vec();
    d.extend_from_slice(&list);
    (0x0010, d)
}

pub fn ext_versions(versions: &[u16]) -> (u16, Vec<u8>) {
    let mut d = vec![u8::try_from(versions.len() * 2).unwrap()];
    for v in versions {
        d.extend_from_slice(&v.to_be_bytes());
    }
    (0x002b, d)
}

pub fn ext_sigs(algs: &[u16]) -> (u16, Vec<u8>) {
    let mut d = u16_len(algs.len() * 2).to_vec();
    for a in algs {
        d.extend_from_slice(&a.to_be_bytes());
    }
    (0x000d, d)
}

pub fn ext_empty(t: u16) -> (u16, Vec<u8>) {
    (t, Vec::new())
}

/// The ClientHello used as the worked example in FoxIO's JA4.md, with
/// GREASE values sprinkled in to check they are ignored.
pub fn spec_example() -> HelloSpec {
    let mut ciphers = vec![GREASE];
    ciphers.extend_from_slice(&[
        0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013, 0xc014,
        0x009c, 0x009d, 0x002f, 0x0035,
    ]);
    let sigs = [
        0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601,
    ];
    let exts = vec![
        ext_empty(0x2a2a),
        ext_empty(0x001b),
        ext_sni("example.com"),
        ext_empty(0x0033),
        ext_alpn(&[b"h2", b"http/1.1"]),
        ext_empty(0x4469),
        ext_empty(0x0017),
        ext_empty(0x002d),
        ext_sigs(&sigs),
        ext_empty(0x0005),
        ext_empty(0x0023),
        ext_empty(0x0012),
        ext_versions(&[0x3a3a, 0x0304, 0x0303]),
        ext_empty(0xff01),
        ext_empty(0x000b),
        ext_empty(0x000a),
        ext_empty(0x0015),
        ext_empty(0x4a4a),
    ];
    HelloSpec {
        legacy_version: 0x0303,
        session_id: vec![0x22; 32],
        ciphers,
        compression: vec![0],
        extensions: Some(exts),
    }
}
