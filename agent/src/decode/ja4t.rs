//! JA4T / JA4TS TCP fingerprints (FoxIO, technical_details/JA4T.md) from
//! the window and raw options of a SYN or SYN-ACK.

use std::fmt;

const KIND_EOL: u8 = 0;
const KIND_NOP: u8 = 1;
const KIND_MSS: u8 = 2;
const KIND_WSCALE: u8 = 3;
/// The TCP header leaves at most 40 bytes for options, hence 40 kinds.
const MAX_OPTIONS_LEN: usize = 40;

/// `window_options_mss_wscale`, e.g. `64240_2-1-3-1-1-4_1460_8`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ja4t {
    pub window: u16,
    /// Option kinds in wire order, padding (NOP, EOL) included, because the
    /// padding layout differs between stacks and is part of the signal.
    pub option_kinds: Vec<u8>,
    pub mss: Option<u16>,
    pub window_scale: Option<u8>,
    /// An option length ran past the end or below 2; kinds up to and
    /// including the bad one are kept.
    pub malformed: bool,
}

impl Ja4t {
    /// `options` are the bytes between the fixed 20-byte TCP header and the
    /// data offset; anything past 40 bytes is ignored.
    pub fn new(window: u16, options: &[u8]) -> Self {
        let mut out = Self {
            window,
            option_kinds: Vec::new(),
            mss: None,
            window_scale: None,
            malformed: false,
        };
        let mut rest = options.get(..MAX_OPTIONS_LEN).unwrap_or(options);
        while let Some((&kind, after_kind)) = rest.split_first() {
            out.option_kinds.push(kind);
            // EOL is listed and parsing goes on: stacks pad with several EOL
            // bytes and the published fingerprints show each one (macOS
            // `...-4-0-0`).
            if kind == KIND_EOL || kind == KIND_NOP {
                rest = after_kind;
                continue;
            }
            let Some(len) = after_kind.first().map(|&l| usize::from(l)) else {
                out.malformed = true;
                break;
            };
            let Some(body) = (len >= 2).then(|| rest.get(2..len)).flatten() else {
                out.malformed = true;
                break;
            };
            match (kind, body) {
                (KIND_MSS, [hi, lo]) => out.mss = Some(u16::from_be_bytes([*hi, *lo])),
                (KIND_WSCALE, [shift]) => out.window_scale = Some(*shift),
                _ => {}
            }
            rest = rest.get(len..).unwrap_or_default();
        }
        out
    }
}

impl fmt::Display for Ja4t {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_", self.window)?;
        if self.option_kinds.is_empty() {
            f.write_str("00")?;
        }
        for (i, kind) in self.option_kinds.iter().enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            write!(f, "{kind}")?;
        }
        // Absent values print as "00", as do a zero MSS or zero shift, which
        // FoxIO's tools cannot tell apart from absence either.
        write!(f, "_{:02}_", self.mss.unwrap_or(0))?;
        match self.window_scale {
            None | Some(0) => f.write_str("00"),
            Some(shift) => write!(f, "{shift}"),
        }
    }
}

/// JA4TS: the SYN-ACK's JA4T, plus the rounded seconds between SYN-ACK
/// retransmissions and an `R` delay for a final RST when any were seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ja4ts {
    pub synack: Ja4t,
    pub retransmit_delays_secs: Vec<u32>,
    pub rst_delay_secs: Option<u32>,
}

impl Ja4ts {
    pub fn new(window: u16, options: &[u8]) -> Self {
        Self {
            synack: Ja4t::new(window, options),
            retransmit_delays_secs: Vec::new(),
            rst_delay_secs: None,
        }
    }
}

impl fmt::Display for Ja4ts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.synack)?;
        if self.retransmit_delays_secs.is_empty() {
            return Ok(());
        }
        for (i, d) in self.retransmit_delays_secs.iter().enumerate() {
            f.write_str(if i == 0 { "_" } else { "-" })?;
            write!(f, "{d}")?;
        }
        if let Some(r) = self.rst_delay_secs {
            write!(f, "-R{r}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WIN10: &[u8] = &[2, 4, 0x05, 0xb4, 1, 3, 3, 8, 1, 1, 4, 2];
    const MACOS: &[u8] = &[
        2, 4, 0x05, 0xb4, 1, 3, 3, 6, 1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 4, 2, 0, 0,
    ];
    const LINUX: &[u8] = &[
        2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
    ];

    #[test]
    fn ja4t_table() {
        let cases: &[(u16, &[u8], &str, bool)] = &[
            // Examples from the JA4T specification.
            (64240, WIN10, "64240_2-1-3-1-1-4_1460_8", false),
            (65535, MACOS, "65535_2-1-3-1-1-8-4-0-0_1460_6", false),
            (64240, LINUX, "64240_2-4-8-1-3_1460_7", false),
            (1024, &[2, 4, 0x05, 0xb4], "1024_2_1460_00", false),
            (65535, &[], "65535_00_00_00", false),
            (1024, &[], "1024_00_00_00", false),
            // Zero shift prints like an absent one.
            (100, &[3, 3, 0], "100_3_00_00", false),
            (100, &[3, 3, 14], "100_3_00_14", false),
            // MSS below 10 keeps two digits.
            (100, &[2, 4, 0, 5], "100_2_05_00", false),
            // Wrong-size MSS/WS bodies are listed but not read.
            (100, &[2, 3, 5, 3, 4, 1, 2], "100_2-3_00_00", false),
            // Malformed lengths stop the walk.
            (100, &[2], "100_2_00_00", true),
            (100, &[2, 4, 5], "100_2_00_00", true),
            (100, &[1, 8, 0], "100_1-8_00_00", true),
            (100, &[1, 8, 1], "100_1-8_00_00", true),
            (100, &[1, 254, 10, 1, 2], "100_1-254_00_00", true),
            (0, &[0], "0_0_00_00", false),
        ];
        for (win, opts, want, malformed) in cases {
            let t = Ja4t::new(*win, opts);
            assert_eq!(t.to_string(), *want, "{opts:?}");
            assert_eq!(t.malformed, *malformed, "{opts:?}");
        }
    }

    #[test]
    fn options_past_forty_bytes_are_ignored() {
        let opts = [1u8; 64];
        let t = Ja4t::new(1, &opts);
        assert_eq!(t.option_kinds.len(), MAX_OPTIONS_LEN);
    }

    #[test]
    fn ja4ts_table() {
        let base = Ja4ts::new(62727, &[2, 4, 0x23, 0x01]);
        assert_eq!(base.to_string(), "62727_2_8961_00");
        let retrans = Ja4ts {
            retransmit_delays_secs: vec![1, 2, 4, 8, 16],
            ..base.clone()
        };
        assert_eq!(retrans.to_string(), "62727_2_8961_00_1-2-4-8-16");
        let rst = Ja4ts {
            synack: Ja4t::new(65535, &[2, 4, 0xff, 0xd7, 1, 3, 3, 8, 1, 1, 4, 2]),
            retransmit_delays_secs: vec![1, 2, 4, 8],
            rst_delay_secs: Some(6),
        };
        assert_eq!(rst.to_string(), "65535_2-1-3-1-1-4_65495_8_1-2-4-8-R6");
    }
}
