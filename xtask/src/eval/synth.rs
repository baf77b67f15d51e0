//! A synthetic cluster population, as exchange-log lines (the format `siphon run
//! --exchange-log` writes), with ground truth. Each client is an instance of a kind (people,
//! offices behind one address, app backends, batch jobs, nightly evaluation runs, agent loops,
//! content generators; and attackers) whose requests are drawn from its own process: sizes
//! from the Azure LLM traces, timing from the kind's behaviour, all on one simulated clock.
//!
//! Simpler than the world, knowingly: one server, no network queueing, a fixed token rate,
//! the records as a TLS-terminating node with the plaintext would see them (client address,
//! key, JA4 and both round trips on one record, so no ingress join is needed).

use std::io::Write;

use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::{Distribution, Exp, LogNormal, Poisson};
use sha2::{Digest, Sha256};

pub const NS: u64 = 1_000_000_000;
/// 2026-01-01T00:00:00Z: records carry Unix time.
pub const T0: u64 = 1_767_225_600 * NS;
/// Server generation speed (tokens/s) and SSE bytes per token event (the lab's server: ~260).
const TOKENS_PER_SECOND: f64 = 60.0;
const SSE_BYTES_PER_TOKEN: u64 = 260;
/// One client address in this many is a busy host (see `World::handshake_delay`).
const BUSY_HOST_EVERY: u32 = 8;

/// (context tokens, generated tokens) rows of a trace.
pub type Trace = Vec<(u32, u32)>;

pub fn load_trace(path: &std::path::Path) -> anyhow::Result<Trace> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    let mut rows = Vec::new();
    for line in text.lines().skip(1) {
        let mut f = line.split(',');
        let (_, ctx, gen) = (f.next(), f.next(), f.next());
        if let (Some(c), Some(g)) = (ctx, gen) {
            if let (Ok(c), Ok(g)) = (c.trim().parse(), g.trim().parse()) {
                rows.push((c, g));
            }
        }
    }
    anyhow::ensure!(!rows.is_empty(), "{}: no rows", path.display());
    Ok(rows)
}

#[derive(Clone, Debug)]
pub struct Instance {
    pub id: String,
    pub kind: &'static str,
    /// benign, harvester, relay
    pub label: &'static str,
    pub keys: Vec<String>,
    pub ips: Vec<String>,
    /// When its activity (for attackers: the attack) starts.
    pub start_ns: u64,
}

/// One request, before it becomes a line.
pub struct Rec {
    pub start_ns: u64,
    pub ttfb_s: f64,
    pub dur_s: f64,
    pub req_bytes: u64,
    pub resp_bytes: u64,
    pub chunks: u32,
    pub stream: bool,
    pub status: u16,
    pub key: u32,
    pub ip: u32,
    pub stack: u8,
    pub tcp_rtt: f32,
    pub tls_rtt: f32,
}

impl Rec {
    pub fn end_ns(&self) -> u64 {
        self.start_ns + ((self.ttfb_s + self.dur_s) * 1e9) as u64
    }
}

/// Client software stacks: (User-Agent family, JA4).
pub const STACKS: [(&str, &str); 5] = [
    ("python_openai", "t13d3112h2_e8f1e7e78f70_b26ce05bbdd6"),
    ("browser", "t13d1516h2_8daaf6152771_02713d6af862"),
    ("nodejs", "t13d1712h2_5b57614c22b0_3d5424432f57"),
    ("curl", "t13d1812h1_85036bcba153_d41ae481755e"),
    ("python_requests", "t13d141100_fa82ebbed50e_d41ae481755e"),
];

pub struct World<'a> {
    pub rng: StdRng,
    pub conv: &'a Trace,
    pub code: &'a Trace,
    pub hours: f64,
    pub instances: Vec<Instance>,
    pub keys: Vec<String>,
    pub ips: Vec<String>,
    pub recs: Vec<Rec>,
    seed: u64,
    /// Busy hosts' handshake delays draw from their own stream, so that adding them left every
    /// other draw of a seed (and the figures that do not depend on the gap) as it was.
    handshake_rng: StdRng,
}

/// Share of a day's activity in each hour (people's working day, UTC-shifted per client).
fn diurnal(hour: f64) -> f64 {
    let h = hour.rem_euclid(24.0);
    0.2 + (((h - 14.0) / 24.0 * std::f64::consts::TAU).cos() + 1.0) * 0.9
}

impl<'a> World<'a> {
    pub fn new(seed: u64, hours: f64, conv: &'a Trace, code: &'a Trace) -> World<'a> {
        World {
            rng: StdRng::seed_from_u64(seed),
            conv,
            code,
            hours,
            instances: Vec::new(),
            keys: Vec::new(),
            ips: Vec::new(),
            recs: Vec::new(),
            seed,
            handshake_rng: StdRng::seed_from_u64(seed ^ 0x005e_ed0f_b05f),
        }
    }

    pub fn end_ns(&self) -> u64 {
        T0 + (self.hours * 3600.0 * 1e9) as u64
    }

    /// A new key (a keyed-hash-looking id, stable per seed and instance).
    pub fn key(&mut self, owner: &str, i: usize) -> u32 {
        let h = Sha256::digest(format!("{}/{owner}/{i}", self.seed).as_bytes());
        self.keys
            .push(h[..16].iter().map(|b| format!("{b:02x}")).collect());
        (self.keys.len() - 1) as u32
    }

    pub fn ip(&mut self, addr: String) -> u32 {
        self.ips.push(addr);
        (self.ips.len() - 1) as u32
    }

    pub fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        LogNormal::new(median.ln(), sigma)
            .map(|d| d.sample(&mut self.rng))
            .unwrap_or(median)
    }

    pub fn exp(&mut self, mean: f64) -> f64 {
        Exp::new(1.0 / mean.max(1e-9))
            .map(|d| d.sample(&mut self.rng))
            .unwrap_or(mean)
    }

    pub fn poisson(&mut self, mean: f64) -> u64 {
        if mean <= 0.0 {
            return 0;
        }
        Poisson::new(mean)
            .map(|d| d.sample(&mut self.rng) as u64)
            .unwrap_or(0)
    }

    /// A start time in the run, weighted by the diurnal curve (shifted by `tz` hours).
    pub fn diurnal_time(&mut self, tz: f64) -> u64 {
        for _ in 0..64 {
            let t = self.rng.gen::<f64>() * self.hours;
            if self.rng.gen::<f64>() * 2.0 < diurnal(t + tz) {
                return T0 + (t * 3600.0 * 1e9) as u64;
            }
        }
        T0
    }

    pub fn conv_row(&mut self) -> (u32, u32) {
        self.conv[self.rng.gen_range(0..self.conv.len())]
    }

    pub fn code_row(&mut self) -> (u32, u32) {
        self.code[self.rng.gen_range(0..self.code.len())]
    }

    /// The client's own delay in answering the server's TLS flight, seconds: none for most
    /// clients; for one address in `BUSY_HOST_EVERY` (a saturated host, a client running many
    /// threads under one interpreter lock, as the lab's Python actors do on a slow machine) a
    /// heavy-tailed delay on every handshake (median 60 ms; in the lab, gaps of 40-490 ms).
    fn handshake_delay(&mut self, ip: u32) -> f64 {
        // Fibonacci hashing: busy hosts spread over the address space, the same every seed.
        if ip.wrapping_mul(0x9e37_79b9) >> 24 < 256 / BUSY_HOST_EVERY {
            LogNormal::new(0.06f64.ln(), 0.8)
                .map(|d| d.sample(&mut self.handshake_rng))
                .unwrap_or(0.06)
                .min(1.0)
        } else {
            0.0
        }
    }

    /// One request: sizes from tokens, time from the server's generation rate.
    #[allow(clippy::too_many_arguments)]
    pub fn request(
        &mut self,
        start_ns: u64,
        ctx_tokens: u32,
        gen_tokens: u32,
        stream: bool,
        key: u32,
        ip: u32,
        stack: u8,
        rtt: f64,
        relay_gap: f64,
    ) -> u64 {
        let ttfb = 0.05 + self.lognormal(0.25, 0.5).min(5.0) + ctx_tokens as f64 / 20_000.0;
        let dur = gen_tokens as f64 / TOKENS_PER_SECOND;
        let (resp_bytes, chunks) = if stream {
            (
                gen_tokens as u64 * SSE_BYTES_PER_TOKEN + 200,
                gen_tokens.max(1),
            )
        } else {
            (gen_tokens as u64 * 4 + 350, 1 + (gen_tokens / 2000))
        };
        let rec = Rec {
            start_ns,
            ttfb_s: ttfb,
            dur_s: if stream { dur } else { 0.0 },
            req_bytes: ctx_tokens as u64 * 4 + 300,
            resp_bytes,
            chunks,
            stream,
            status: 200,
            key,
            ip,
            stack,
            tcp_rtt: rtt as f32,
            tls_rtt: (rtt + relay_gap + 0.001 + self.rng.gen::<f64>() * 0.002) as f32
                + self.handshake_delay(ip) as f32,
        };
        let end = if stream {
            rec.end_ns()
        } else {
            start_ns + ((ttfb + dur) * 1e9) as u64
        };
        let rec = Rec {
            ttfb_s: if stream { ttfb } else { ttfb + dur },
            ..rec
        };
        if start_ns < self.end_ns() {
            self.recs.push(rec);
        }
        end
    }

    /// Writes every record as an exchange-log line, in order of the end of each exchange (the
    /// order an agent writes them). Returns the number written.
    pub fn write(&mut self, out: &mut dyn Write) -> anyhow::Result<u64> {
        self.recs.sort_by_key(Rec::end_ns);
        let mut n = 0u64;
        for (i, r) in self.recs.iter().enumerate() {
            let ip = &self.ips[r.ip as usize];
            let (ua, ja4) = STACKS[r.stack as usize % STACKS.len()];
            // Each exchange on a connection of its own, from the client's address.
            let port = 1024 + (i % 60_000);
            let client = if ip.contains(':') {
                format!("[{ip}]:{port}")
            } else {
                format!("{ip}:{port}")
            };
            writeln!(
                out,
                r#"{{"record":"exchange","client":"{client}","server":"10.0.0.1:443","seq":2,"request_start_ns":{s},"request_start_unix_ns":{s},"request_bytes":{rq},"response_bytes":{rs},"ttfb_seconds":{tt:.6},"response_duration_seconds":{du:.6},"streamed_chunks":{ch},"http":{{"status":{st},"event_stream":{es},"user_agent_family":"{ua}","api_key_hash":"{key}","client_ip":"{ip}","forwarded_for":[]}},"tls":{{"ja4":"{ja4}"}},"tcp":{{"ja4t":"64240_2-4-8-1-3_1460_7","synack_ack_seconds":{tcp:.6},"tls_rtt_seconds":{tls:.6}}}}}"#,
                s = r.start_ns,
                rq = r.req_bytes,
                rs = r.resp_bytes,
                tt = r.ttfb_s,
                du = r.dur_s,
                ch = r.chunks,
                st = r.status,
                es = r.stream,
                key = self.keys[r.key as usize],
                tcp = r.tcp_rtt,
                tls = r.tls_rtt,
            )?;
            n += 1;
        }
        Ok(n)
    }
}
