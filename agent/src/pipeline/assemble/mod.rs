//! Joins the kernel's records into reports: an exchange record with the request and response
//! heads captured during it, the flow's ClientHello and SYNs. Splits a turn that carried several
//! pipelined HTTP requests into one report per request.

mod split;

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use agent_common::{client, exchange_end, payload_what, ExchangeRecord, FlowKey, Side, SynRecord};

use split::split;
#[cfg(test)]
use split::{fold_interim, is_interim, Start};

use agent_common::{addr_to_ip, secs_between as secs, wire::tls};

use crate::{
    decode::{self, ApiKeyHasher, ClientHello, Ja4, Ja4h, Ja4t, Ja4ts, Transport},
    pipeline::{
        records::{Event, Payload},
        report::{ExchangeReport, HelloReport, HttpInfo, Report, TcpInfo, TlsInfo},
    },
};

/// How decoded heads are attributed.
pub struct DecodeConfig {
    pub hasher: ApiKeyHasher,
    /// Where a rotated hash secret arrives from (`siphon run` with a secret file).
    pub key_updates: Option<decode::secret_watch::KeyUpdates>,
    /// Proxies in front of the server whose X-Forwarded-For entries are trusted.
    pub trusted_hops: usize,
}

/// A captured segment start (request or response head).
#[derive(Clone, Debug, Default)]
struct Seg {
    seq: u32,
    offset: u64,
    ts_ns: u64,
    data: Vec<u8>,
}

#[derive(Default)]
struct FlowCtx {
    req_heads: Vec<Seg>,
    resp_heads: Vec<Seg>,
    hello: Vec<u8>,
    /// Side that sent the hello: the client, whatever the port heuristics said.
    hello_side: Option<u8>,
    hello_done: bool,
    tls: Option<Arc<TlsInfo>>,
    syn: Option<SynRecord>,
    synack: Option<SynRecord>,
    /// JA4T of `syn` and JA4TS of `synack`, formatted once per connection rather than for
    /// every exchange on it.
    ja4t: Option<Arc<str>>,
    ja4ts: Option<Arc<str>>,
    last_seq: u32,
    touched_ns: u64,
    /// End of the server's answer to the ClientHello (the first exchange of a TLS flow).
    hello_answer_end_ns: Option<u64>,
    /// Server's handshake flight end → client's next flight, once seen.
    tls_rtt_seconds: Option<f64>,
}

/// Counters of what the assembler could not do, for export.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AssemblyStats {
    pub duplicate_exchanges: u64,
    pub hello_incomplete: u64,
    pub hello_decode_errors: u64,
    pub request_decode_errors: u64,
    pub response_decode_errors: u64,
    pub contexts_evicted: u64,
    pub heads_dropped: u64,
}

pub struct Assembler {
    cfg: DecodeConfig,
    flows: HashMap<FlowKey, FlowCtx>,
    max_flows: usize,
    pub stats: AssemblyStats,
}

/// Heads kept per flow while waiting for their exchange record: a bound against a peer that
/// sends endless tiny pipelined requests.
const MAX_PENDING_HEADS: usize = 256;

impl Assembler {
    pub fn new(cfg: DecodeConfig, max_flows: usize) -> Assembler {
        Assembler {
            cfg,
            flows: HashMap::new(),
            max_flows,
            stats: AssemblyStats::default(),
        }
    }

    fn ctx(&mut self, key: &FlowKey, now_ns: u64) -> &mut FlowCtx {
        if self.flows.len() >= self.max_flows && !self.flows.contains_key(key) {
            self.evict_oldest();
        }
        let ctx = self.flows.entry(*key).or_default();
        ctx.touched_ns = ctx.touched_ns.max(now_ns);
        ctx
    }

    fn evict_oldest(&mut self) {
        // Drop the least recently touched tenth: amortises the scan.
        let mut ages: Vec<(u64, FlowKey)> =
            self.flows.iter().map(|(k, c)| (c.touched_ns, *k)).collect();
        ages.sort_unstable_by_key(|(t, _)| *t);
        let n = (ages.len() / 10).max(1);
        for (_, k) in ages.into_iter().take(n) {
            self.flows.remove(&k);
            self.stats.contexts_evicted += 1;
        }
    }

    /// The flow left the kernel table: forget what we held for it.
    pub fn flow_gone(&mut self, key: &FlowKey) {
        self.flows.remove(key);
    }

    pub fn handle(&mut self, event: Event, out: &mut Vec<Report>) {
        match event {
            Event::Payload(mut p) => {
                // The exchange it ends comes first: its heads were captured before this one.
                if let Some(x) = p.ends.take() {
                    self.on_exchange(&x, out);
                }
                self.on_payload(p, out)
            }
            Event::Syn(s) => self.on_syn(s),
            Event::Exchange(x) => self.on_exchange(&x, out),
        }
    }

    fn on_syn(&mut self, s: SynRecord) {
        let ctx = self.ctx(&s.key, s.ts_ns);
        if s.tcp_flags & agent_common::tcp_flag::ACK != 0 {
            ctx.synack = Some(s);
            ctx.ja4ts = Some(Ja4ts::new(s.window, syn_options(&s)).to_string().into());
        } else {
            // A new connection on this tuple: start over.
            *ctx = FlowCtx {
                syn: Some(s),
                ja4t: Some(Ja4t::new(s.window, syn_options(&s)).to_string().into()),
                touched_ns: s.ts_ns,
                ..FlowCtx::default()
            };
        }
    }

    fn on_payload(&mut self, p: Payload, out: &mut Vec<Report>) {
        let ts = p.ts_ns;
        let key = p.key;
        let ctx = self.ctx(&key, ts);
        match p.what {
            payload_what::REQUEST_HEAD | payload_what::RESPONSE_HEAD => {
                let list = if p.what == payload_what::REQUEST_HEAD {
                    &mut ctx.req_heads
                } else {
                    &mut ctx.resp_heads
                };
                let full = list.len() >= MAX_PENDING_HEADS;
                if full {
                    list.remove(0);
                }
                list.push(Seg {
                    seq: p.seq,
                    offset: p.turn_offset,
                    ts_ns: ts,
                    data: p.data,
                });
                if full {
                    self.stats.heads_dropped += 1;
                }
            }
            payload_what::REQUEST_MORE => {
                // Continues the last request head of this exchange if it is contiguous with it.
                if let Some(last) = ctx
                    .req_heads
                    .last_mut()
                    .filter(|l| l.seq == p.seq && l.offset + l.data.len() as u64 == p.turn_offset)
                {
                    let room = agent_common::CAPTURE_MAX.saturating_sub(last.data.len());
                    last.data
                        .extend_from_slice(&p.data[..p.data.len().min(room)]);
                }
            }
            payload_what::TLS_HELLO => {
                if p.turn_offset == 0 {
                    // A new ClientHello (after a HelloRetryRequest, or in a tunnel).
                    ctx.hello.clear();
                    ctx.hello_done = false;
                }
                // Segments arrive in order; one that does not continue what we hold is a gap.
                if ctx.hello_done || p.turn_offset != ctx.hello.len() as u64 {
                    return;
                }
                ctx.hello.extend_from_slice(&p.data);
                ctx.hello_side = Some(p.side);
                let want = hello_len(&ctx.hello);
                if want.is_some_and(|w| ctx.hello.len() >= w) {
                    self.finish_hello(&key, ts, out);
                }
            }
            _ => {}
        }
    }

    fn finish_hello(&mut self, key: &FlowKey, ts_ns: u64, out: &mut Vec<Report>) {
        let Some(ctx) = self.flows.get_mut(key) else {
            return;
        };
        if ctx.hello_done || ctx.hello.is_empty() {
            return;
        }
        ctx.hello_done = true;
        let parsed = ClientHello::parse_records(skip_change_cipher_spec(&ctx.hello));
        ctx.hello = Vec::new();
        let client_side = match ctx.hello_side {
            Some(s) if s == Side::A as u8 => client::A,
            Some(_) => client::B,
            None => ctx.client_side(),
        };
        let (client, server) = endpoints(key, client_side, ctx.syn.as_ref());
        let (tls, error) = match parsed {
            Ok(h) => {
                let ja4 = Ja4::new(&h, Transport::Tcp);
                let info = TlsInfo {
                    ja4: ja4.fingerprint().into(),
                    ja4_r: ja4.raw(),
                    ja4_o: ja4.original(),
                    ja4_ro: ja4.raw_original(),
                    sni: h.sni.clone(),
                };
                ctx.tls = Some(Arc::new(info.clone()));
                (Some(info), None)
            }
            Err(e) => {
                if matches!(e, decode::DecodeError::Truncated(_)) {
                    self.stats.hello_incomplete += 1;
                } else {
                    self.stats.hello_decode_errors += 1;
                }
                (None, Some(e.reason()))
            }
        };
        out.push(Report::TlsClientHello(Box::new(HelloReport {
            ifindex: key.ifindex,
            client,
            server,
            ts_ns,
            ts_unix_ns: None,
            tls,
            error,
        })));
    }

    fn on_exchange(&mut self, x: &ExchangeRecord, out: &mut Vec<Report>) {
        let seq = x.exchange.seq;
        let key = x.key;
        let client_side = x.client;
        let ctx = self.ctx(&key, x.exchange.resp_last_ns.max(x.exchange.req_last_ns));
        if seq != 0 && seq <= ctx.last_seq {
            self.stats.duplicate_exchanges += 1;
            return;
        }
        ctx.last_seq = seq;
        // A hello still short when its exchange ends will not complete: decode what we have.
        // Only then is the context looked up twice.
        let ctx = if !ctx.hello_done && !ctx.hello.is_empty() {
            self.finish_hello(&key, x.exchange.req_first_ns, out);
            match self.flows.get_mut(&key) {
                Some(ctx) => ctx,
                None => return,
            }
        } else {
            ctx
        };
        let req_heads = take_seq(&mut ctx.req_heads, seq);
        let resp_heads = take_seq(&mut ctx.resp_heads, seq);
        note_tls_round_trip(ctx, x);
        let mut tcp = tcp_info(ctx, &x.handshake);
        tcp.tls_rtt_seconds = ctx.tls_rtt_seconds;
        let mut tls = ctx.tls.clone();
        let (client, server) = endpoints(&key, client_side, ctx.syn.as_ref());
        if matches!(x.end, exchange_end::FIN | exchange_end::RST) {
            // The connection is over; nothing more will join this context.
            self.flows.remove(&key);
        }
        let mut parts = split(&req_heads, &resp_heads, x).into_iter().peekable();
        while let Some(part) = parts.next() {
            // The last part takes the connection's fingerprints, the others copies (usually
            // there is one part: no copy).
            let (tls, tcp) = if parts.peek().is_none() {
                (std::mem::take(&mut tls), std::mem::take(&mut tcp))
            } else {
                (tls.clone(), tcp.clone())
            };
            let http = part
                .request_head
                .map(|h| self.http_info(h, part.response_head, client.ip()));
            out.push(Report::Exchange(Box::new(ExchangeReport {
                ifindex: key.ifindex,
                client,
                server,
                seq,
                part: part.index,
                end: end_label(x.end),
                request_start_ns: part.req_first_ns,
                request_start_unix_ns: None,
                request_bytes: part.req_bytes,
                response_bytes: part.resp_bytes,
                request_packets: part.req_packets,
                response_packets: part.resp_packets,
                ttfb_seconds: if part.resp_bytes > 0 {
                    secs(part.req_last_ns, part.resp_first_ns)
                } else {
                    None
                },
                response_duration_seconds: if part.resp_bytes > 0 {
                    secs(part.resp_first_ns, part.resp_last_ns)
                } else {
                    None
                },
                streamed_chunks: part.chunks,
                http,
                tls,
                tcp,
            })));
        }
    }

    fn http_info(&mut self, req: &[u8], resp: Option<&[u8]>, peer: std::net::IpAddr) -> HttpInfo {
        let mut decode_error = None;
        if let Some(u) = &mut self.cfg.key_updates {
            u.refresh(&mut self.cfg.hasher);
        }
        let head = match decode::parse_request_head(req, Some(&self.cfg.hasher)) {
            Ok(h) => Some(h),
            Err(e) => {
                self.stats.request_decode_errors += 1;
                decode_error = Some(e.reason());
                None
            }
        };
        let response = resp.map(decode::parse_response_head);
        let (status, event_stream) = match response {
            Some(Ok(r)) => (Some(r.status), r.event_stream),
            Some(Err(e)) => {
                self.stats.response_decode_errors += 1;
                decode_error = decode_error.or(Some(e.reason()));
                (None, false)
            }
            None => (None, false),
        };
        let status_class = status.map(decode::status_class_label).unwrap_or("none");
        match head {
            Some(h) => {
                // A head cut by the capture length would give a wrong fingerprint: none instead.
                let ja4h = if h.truncated {
                    String::new()
                } else {
                    Ja4h::new(&h).fingerprint()
                };
                // The head is ours: its strings move into the report, not copied.
                HttpInfo {
                    method: h.method.as_label(),
                    route: h.route.as_label(),
                    status,
                    status_class,
                    event_stream,
                    user_agent_family: h.user_agent_family.as_label(),
                    api_key_hash: h.api_key.map(|k| k.to_hex()),
                    api_key_hash_prev: h.api_key_prev.map(|k| k.to_hex()),
                    client_ip: decode::client_ip(&h.forwarded_for, peer, self.cfg.trusted_hops),
                    ja4h,
                    head_truncated: h.truncated,
                    decode_error,
                    path: h.path,
                    host: h.host,
                    forwarded_for: h.forwarded_for,
                }
            }
            None => HttpInfo {
                method: "invalid",
                route: "_other",
                path: String::new(),
                host: None,
                status,
                status_class,
                event_stream,
                user_agent_family: "missing",
                api_key_hash: None,
                api_key_hash_prev: None,
                client_ip: peer,
                forwarded_for: Vec::new(),
                ja4h: String::new(),
                head_truncated: false,
                decode_error,
            },
        }
    }
}

impl FlowCtx {
    fn client_side(&self) -> u8 {
        self.syn
            .map(|s| {
                if s.side == Side::A as u8 {
                    client::A
                } else {
                    client::B
                }
            })
            .unwrap_or(client::UNKNOWN)
    }
}

fn end_label(end: u8) -> &'static str {
    match end {
        exchange_end::NEXT_REQUEST => "next_request",
        exchange_end::FIN => "fin",
        exchange_end::RST => "rst",
        exchange_end::IDLE => "idle",
        _ => "unknown",
    }
}

/// A second ClientHello (after a HelloRetryRequest) may follow a ChangeCipherSpec record in the
/// same segment: skip that record.
fn skip_change_cipher_spec(buf: &[u8]) -> &[u8] {
    if buf.first() == Some(&tls::CONTENT_CHANGE_CIPHER_SPEC) {
        if let Some(len) = buf
            .get(3..5)
            .map(|l| u16::from_be_bytes([l[0], l[1]]) as usize)
        {
            return buf.get(tls::RECORD_HEADER_LEN + len..).unwrap_or(&[]);
        }
    }
    buf
}

/// Bytes the hello occupies (its first handshake record, after any ChangeCipherSpec), once
/// the record header is present.
fn hello_len(buf: &[u8]) -> Option<usize> {
    let skipped = buf.len() - skip_change_cipher_spec(buf).len();
    let hello = &buf[skipped..];
    let len = u16::from_be_bytes([*hello.get(3)?, *hello.get(4)?]) as usize;
    Some((skipped + tls::RECORD_HEADER_LEN + len).min(agent_common::HELLO_MAX as usize))
}

/// Removes and returns the segments of exchange `seq`; older ones (their exchange was lost)
/// are dropped.
fn take_seq(list: &mut Vec<Seg>, seq: u32) -> Vec<Seg> {
    list.retain(|s| s.seq >= seq);
    // Usually every segment held is this exchange's: take the list whole, no copies.
    let mut mine = if list.iter().all(|s| s.seq == seq) {
        std::mem::take(list)
    } else {
        let mut mine = Vec::new();
        list.retain_mut(|s| {
            if s.seq == seq {
                mine.push(std::mem::take(s));
                false
            } else {
                true
            }
        });
        mine
    };
    mine.sort_by_key(|s| s.offset);
    mine
}

/// (client, server) socket addresses of a flow.
fn endpoints(key: &FlowKey, client_side: u8, syn: Option<&SynRecord>) -> (SocketAddr, SocketAddr) {
    let a = SocketAddr::new(addr_to_ip(&key.addr_a), key.port_a);
    let b = SocketAddr::new(addr_to_ip(&key.addr_b), key.port_b);
    let side = match client_side {
        client::A => Side::A as u8,
        client::B => Side::B as u8,
        _ => syn.map(|s| s.side).unwrap_or(Side::A as u8),
    };
    if side == Side::A as u8 {
        (a, b)
    } else {
        (b, a)
    }
}

fn tcp_info(ctx: &FlowCtx, hs: &agent_common::Handshake) -> TcpInfo {
    TcpInfo {
        ja4t: ctx.ja4t.clone(),
        ja4ts: ctx.ja4ts.clone(),
        syn_synack_seconds: secs(hs.syn_ns, hs.synack_ns),
        synack_ack_seconds: secs(hs.synack_ns, hs.ack_ns),
        tls_rtt_seconds: None,
    }
}

/// The TCP options a SYN record carries.
fn syn_options(r: &SynRecord) -> &[u8] {
    &r.options[..(r.options_len as usize).min(r.options.len())]
}

/// The TLS round trip of a flow: the first exchange of a TLS flow is the ClientHello and the
/// server's answer; the client's next turn starts once that answer has reached it and its own
/// reply has come back, so the gap is one round trip to the TLS client (plus its handshake
/// computation, a millisecond or so).
fn note_tls_round_trip(ctx: &mut FlowCtx, x: &ExchangeRecord) {
    if ctx.tls_rtt_seconds.is_some() || !(ctx.hello_done || ctx.tls.is_some()) {
        return;
    }
    match ctx.hello_answer_end_ns {
        None if x.exchange.resp_bytes > 0 => {
            ctx.hello_answer_end_ns = Some(x.exchange.resp_last_ns)
        }
        None => {}
        Some(end) => ctx.tls_rtt_seconds = secs(end, x.exchange.req_first_ns),
    }
}

#[cfg(test)]
mod tests;
