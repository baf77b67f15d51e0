//! The detector: entities, sliding-window features, harvest and relay scores with reasons,
//! detection events. Fed observations from one seam (the pipeline's reports live, exchange-log
//! lines offline) and driven by the records' own clock only, so `siphon detect` over a node's
//! log replays exactly what the live agent decided.
//!
//! observe → join (TLS at the ingress with HTTP behind it) → attribute to entities → update
//! windows → every `eval_interval` of record time: score the entities that changed (and the
//! raised ones, to clear them), refresh baseline and clusters every `refresh_seconds`.

pub mod alias;
pub mod allow;
pub mod baseline;
pub mod cluster;
pub mod config;
pub mod entity;
pub mod events;
pub mod export;
pub mod features;
pub mod input;
pub mod join;
pub mod judge;
pub mod score;
pub mod sink;
pub mod sketch;
pub mod window;

use std::net::IpAddr;

use self::{
    allow::AllowList,
    config::Config,
    entity::{EntityState, EntityType, Table},
    events::DetectionEvent,
    input::Observation,
    join::Joiner,
    judge::{ClusterState, Judged},
    score::Baseline,
};
use crate::pipeline::addr_text::AddrText;

/// Think times longer than this are a new session, not a think time.
const MAX_THINK_NS: u64 = 600_000_000_000;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Observations taken as requests.
    pub requests: u64,
    /// Encrypted handshake turns (not requests).
    pub handshakes: u64,
    /// Records older than every window when they arrived.
    pub late: u64,
    pub evaluations: u64,
    /// Exchanges to ignored (monitoring) server ports.
    pub ignored: u64,
    pub raised: u64,
    pub cleared: u64,
}

pub struct Detector {
    cfg: Config,
    allow: AllowList,
    tables: Vec<Table>,
    clusters: Vec<ClusterState>,
    joiner: Joiner,
    baseline: Baseline,
    clock_ns: u64,
    next_eval_ns: u64,
    next_refresh_ns: u64,
    events: Vec<DetectionEvent>,
    pub stats: Stats,
    /// Estimated bytes held, at the last refresh.
    pub memory_bytes: usize,
    /// Log raises and clears.
    pub log_events: bool,
    /// Key hashes linked across a rotation of the hash secret.
    aliases: alias::KeyAliases,
}

impl Detector {
    pub fn new(cfg: Config) -> anyhow::Result<Detector> {
        cfg.validate()?;
        Ok(Detector {
            allow: AllowList::new(&cfg.allow),
            tables: EntityType::TRACKED
                .iter()
                .map(|_| Table::new(cfg.max_entities_per_type))
                .collect(),
            clusters: Vec::new(),
            joiner: Joiner::new(cfg.join_delay_seconds, cfg.join_tolerance_seconds),
            baseline: Baseline::default(),
            clock_ns: 0,
            next_eval_ns: 0,
            next_refresh_ns: 0,
            events: Vec::new(),
            stats: Stats::default(),
            memory_bytes: 0,
            log_events: true,
            aliases: alias::KeyAliases::new(cfg.max_entities_per_type),
            cfg,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn baseline(&self) -> &Baseline {
        &self.baseline
    }

    pub fn clock_ns(&self) -> u64 {
        self.clock_ns
    }

    pub fn table(&self, ty: EntityType) -> Option<&Table> {
        self.tables.get(ty.index())
    }

    pub fn entity(&self, ty: EntityType, value: &str) -> Option<&EntityState> {
        self.tables.get(ty.index())?.map.get(value)
    }

    pub fn clusters(&self) -> &[ClusterState] {
        &self.clusters
    }

    pub fn join_stats(&self) -> join::JoinStats {
        self.joiner.stats
    }

    /// Events produced since the last call.
    pub fn take_events(&mut self) -> Vec<DetectionEvent> {
        for e in &self.events {
            match e.state {
                events::State::Raised => self.stats.raised += 1,
                events::State::Cleared => self.stats.cleared += 1,
            }
        }
        std::mem::take(&mut self.events)
    }

    pub fn observe(&mut self, obs: Observation) {
        if self.cfg.ignore_server_ports.contains(&obs.server.port()) {
            self.stats.ignored += 1;
            return;
        }
        self.clock_ns = self.clock_ns.max(obs.end_ns);
        self.joiner.push(obs);
        self.drain(false);
    }

    /// End of input: everything pending is taken and scored once more.
    pub fn finish(&mut self) {
        self.drain(true);
        self.evaluate(self.clock_ns);
    }

    fn drain(&mut self, all: bool) {
        while let Some(obs) = self.joiner.pop(self.clock_ns, all) {
            let t = obs.end_ns;
            self.apply(&obs);
            if t >= self.next_eval_ns {
                self.evaluate(t);
                let step = (self.cfg.eval_interval_seconds * 1e9) as u64;
                // Saturating: a clock at the end of time evaluates every record, never panics.
                self.next_eval_ns = (t / step.max(1) + 1).saturating_mul(step.max(1));
            }
        }
    }

    fn apply(&mut self, obs: &Observation) {
        if obs.is_tls_handshake() || is_ticket_turn(obs) {
            self.stats.handshakes += 1;
            return;
        }
        self.stats.requests += 1;
        let cfg = &self.cfg;
        let ip = obs.client_ip();
        // On the stack: made for every request, copied only into a new entity.
        let ip_s = AddrText::ip(ip);
        let Ok(prefix) = prefix_text(ip, cfg.prefix_v4, cfg.prefix_v6) else {
            // Not reached: an address's prefix always fits.
            return;
        };
        let (ip_s, prefix) = (ip_s.as_str(), prefix.as_str());
        let http = obs.http.as_ref();
        // A rotated key's new hash resolves to the entity its old hash made (alias.rs).
        let key_entity = http.and_then(|h| {
            let k = h.api_key_hash.as_deref()?;
            Some(self.aliases.resolve(k, h.api_key_hash_prev.as_deref()))
        });
        // Borrowed from the observation: allocations saved per exchange.
        let key = key_entity.as_deref();
        let ua = http.map(|h| h.user_agent_family.as_ref());
        let ja4 = obs.transport.ja4.as_deref();
        let ja4t = obs.transport.ja4t.as_deref();
        let tokens = features::output_tokens(
            obs.response_bytes,
            obs.streamed_chunks,
            http.map(|h| h.event_stream),
            cfg.harvest.bytes_per_token,
        );
        let mut sample = Sample {
            t: obs.end_ns,
            start: obs.start_ns,
            tokens,
            long: tokens >= cfg.harvest.long_output_tokens,
            throttled: http.is_some_and(|h| h.status == Some(429)),
            claimed: http.is_some_and(|h| h.claimed_origins > 0),
            ua_mismatch: matches!((ua, ja4), (Some(u), Some(j)) if u == "browser" && !browser_like_ja4(j)),
            rtt_gap: match (obs.transport.tls_rtt_seconds, obs.transport.tcp_rtt_seconds) {
                (Some(tls), Some(tcp)) => Some((tls - tcp).max(0.0)),
                _ => None,
            },
            think: None,
            retry: None,
            obs,
        };
        let mut entities: Vec<(EntityType, &str)> = Vec::with_capacity(5);
        if let Some(k) = key {
            entities.push((EntityType::ApiKey, k));
        }
        entities.push((EntityType::ClientIp, ip_s));
        entities.push((EntityType::Prefix, prefix));
        if let Some(j) = ja4 {
            entities.push((EntityType::Ja4, j));
        }
        if let Some(j) = ja4t {
            entities.push((EntityType::Ja4t, j));
        }
        // Borrowed, not cloned: this runs for every exchange.
        let (windows, buckets) = (&cfg.windows_seconds[..], cfg.buckets);
        let links = Links {
            key,
            ip: ip_s,
            prefix,
            ja4,
            ua,
        };
        let slot_ns = cfg.slot_seconds * 1_000_000_000;
        let mut late = false;
        for (i, (ty, value)) in entities.iter().enumerate() {
            let table = &mut self.tables[ty.index()];
            let st = table.entry(value, obs.end_ns, windows, buckets);
            if i == 0 {
                // Think time is a property of one client, the first entity: its key, else its
                // address. Worked out here, in the one lookup of it, before any update.
                (sample.think, sample.retry) = pacing(st, obs, sample.throttled);
            }
            let queued = st.dirty;
            late |= !update(st, &sample, slot_ns);
            links.add_to(st, *ty);
            if !queued {
                table.queue.push((*value).into());
            }
        }
        if late {
            self.stats.late += 1;
        }
    }

    fn evaluate(&mut self, now: u64) {
        self.stats.evaluations += 1;
        if now >= self.next_refresh_ns {
            self.refresh(now);
            self.next_refresh_ns =
                now.saturating_add((self.cfg.baseline.refresh_seconds * 1e9) as u64);
        }
        let ctx = judge::Ctx {
            cfg: &self.cfg,
            baseline: &self.baseline,
            allow: &self.allow,
            now,
            log: self.log_events,
        };
        for (i, ty) in EntityType::TRACKED.iter().enumerate() {
            // In key order: events of one evaluation come out the same in every process (a hash
            // map's order differs between runs), so a log replays to the same event file.
            let table = &mut self.tables[i];
            let mut due = std::mem::take(&mut table.queue);
            due.extend(table.raised_keys.iter().cloned());
            due.sort_unstable();
            due.dedup();
            for value in due {
                let Some(st) = table.map.get_mut(&value) else {
                    continue;
                };
                st.dirty = false;
                let judged = judge::score_entity(&ctx, *ty, st, false);
                judge::transitions(&ctx, *ty, &value, st, &judged, &mut self.events);
                if st.raised.iter().any(Option::is_some) {
                    table.raised_keys.insert(value);
                } else {
                    table.raised_keys.remove(&value);
                }
            }
        }
    }

    /// Baseline, clusters, memory estimate.
    fn refresh(&mut self, now: u64) {
        let mid = self.cfg.middle_window();
        self.baseline = judge::baseline(&self.cfg, &self.tables, mid, now);
        self.clusters = judge::clusters(
            &self.cfg,
            &mut self.tables,
            std::mem::take(&mut self.clusters),
            &judge::Ctx {
                cfg: &self.cfg,
                baseline: &self.baseline,
                allow: &self.allow,
                now,
                log: self.log_events,
            },
            mid,
            &mut self.events,
        );
        for t in &mut self.tables {
            t.queue_dirty();
        }
        self.memory_bytes = self.tables.iter().map(Table::bytes).sum::<usize>()
            + self.clusters.len() * 256
            + self.joiner.pending() * std::mem::size_of::<Observation>();
    }

    /// Both scores of one entity now, with their reasons.
    pub fn explain(&self, ty: EntityType, value: &str) -> Option<[score::Score; 2]> {
        let ctx = judge::Ctx {
            cfg: &self.cfg,
            baseline: &self.baseline,
            allow: &self.allow,
            now: self.clock_ns,
            log: false,
        };
        if ty == EntityType::Cluster {
            let c = self.clusters.iter().find(|c| c.id == value)?;
            return Some([
                score::Score {
                    value: c.scores[0],
                    reasons: c.reasons[0].clone(),
                },
                score::Score {
                    value: c.scores[1],
                    reasons: c.reasons[1].clone(),
                },
            ]);
        }
        let st = self.tables.get(ty.index())?.map.get(value)?;
        Some(judge::score_entity(&ctx, ty, st, true))
    }

    /// Scores of every tracked entity and cluster as of the last evaluation.
    pub fn judged(&self) -> Vec<Judged<'_>> {
        let mut out = Vec::new();
        for (i, ty) in EntityType::TRACKED.iter().enumerate() {
            for (value, st) in &self.tables[i].map {
                out.push(Judged::of(*ty, value, st, &self.cfg, self.clock_ns));
            }
        }
        for c in &self.clusters {
            out.push(c.judged());
        }
        out
    }
}

/// What one request adds to each of its entities.
struct Sample<'a> {
    t: u64,
    start: u64,
    tokens: f64,
    long: bool,
    throttled: bool,
    claimed: bool,
    ua_mismatch: bool,
    rtt_gap: Option<f64>,
    think: Option<f64>,
    retry: Option<f64>,
    obs: &'a Observation,
}

/// False if the record was older than every window.
fn update(st: &mut EntityState, s: &Sample<'_>, slot_ns: u64) -> bool {
    st.last_seen_ns = st.last_seen_ns.max(s.t);
    st.first_seen_ns = st.first_seen_ns.min(s.start);
    st.dirty = true;
    let gap = (st.last_start_ns != 0 && s.start >= st.last_start_ns)
        .then(|| agent_common::ns_to_secs(s.start - st.last_start_ns));
    st.last_start_ns = st.last_start_ns.max(s.start);
    let mut any = false;
    for w in st.windows.iter_mut() {
        let Some(b) = w.bucket_at(s.t) else {
            continue;
        };
        any = true;
        b.requests = b.requests.saturating_add(1);
        b.long = b.long.saturating_add(s.long as u32);
        b.throttled = b.throttled.saturating_add(s.throttled as u32);
        b.claimed = b.claimed.saturating_add(s.claimed as u32);
        b.ua_mismatch = b.ua_mismatch.saturating_add(s.ua_mismatch as u32);
        b.request_bytes = b.request_bytes.saturating_add(s.obs.request_bytes);
        b.response_bytes = b.response_bytes.saturating_add(s.obs.response_bytes);
        b.busy_ns = b.busy_ns.saturating_add(s.t.saturating_sub(s.start));
        b.output_tokens += s.tokens as f32;
        if let Some(g) = gap {
            b.add_gap(g);
        }
        if let Some(th) = s.think {
            b.add_think(th);
        }
        if let Some(g) = s.rtt_gap {
            b.add_rtt_gap(g);
        }
        if s.obs.peer_is_client() {
            b.direct_requests = b.direct_requests.saturating_add(1);
            b.new_connections = b.new_connections.saturating_add((s.obs.seq == 1) as u32);
        }
        if let Some(r) = s.retry {
            b.retry_n = b.retry_n.saturating_add(1);
            b.retry_sum += r as f32;
        }
    }
    // Sizes to 16 bytes: the same prompt template with another number is the same size.
    st.request_sizes
        .insert(itoa::Buffer::new().format(s.obs.request_bytes / 16));
    // Busy slots: every slot the request was open in (at most 64).
    let (first, last) = (s.start / slot_ns, s.t / slot_ns);
    for slot in first.max(last.saturating_sub(63))..=last {
        st.activity.mark(slot);
    }
    any
}

/// The client's think time before this request (its previous end to this start), and after a
/// 429 how long it waited to retry; notes this request's end (and a 429) for the next one.
fn pacing(st: &mut EntityState, obs: &Observation, throttled: bool) -> (Option<f64>, Option<f64>) {
    let think = st.think_before(obs.start_ns, MAX_THINK_NS);
    st.note_end(obs.end_ns);
    let retry = (st.throttled_end_ns != 0 && obs.start_ns >= st.throttled_end_ns)
        .then(|| agent_common::ns_to_secs(obs.start_ns - st.throttled_end_ns));
    if retry.is_some() {
        st.throttled_end_ns = 0;
    }
    if throttled {
        st.throttled_end_ns = obs.end_ns;
    }
    (think, retry)
}

struct Links<'a> {
    key: Option<&'a str>,
    ip: &'a str,
    prefix: &'a str,
    ja4: Option<&'a str>,
    ua: Option<&'a str>,
}

impl Links<'_> {
    fn add_to(&self, st: &mut EntityState, ty: EntityType) {
        if let Some(k) = self.key.filter(|_| ty != EntityType::ApiKey) {
            st.links.api_keys.insert(k);
        }
        if ty != EntityType::ClientIp {
            st.links.client_ips.insert(self.ip);
        }
        if ty != EntityType::Prefix {
            st.links.prefixes.insert(self.prefix);
        }
        if let Some(j) = self.ja4.filter(|_| ty != EntityType::Ja4) {
            st.links.ja4s.insert(j);
        }
        if let Some(u) = self.ua {
            st.links.user_agents.insert(u);
        }
    }
}

/// `a.b.c.0/24` or `x:y:z::/48` (lengths from the configuration).
pub fn prefix_of(ip: IpAddr, v4: u8, v6: u8) -> String {
    prefix_text(ip, v4, v6)
        .map(|t| t.as_str().to_owned())
        .unwrap_or_default()
}

fn prefix_text(ip: IpAddr, v4: u8, v6: u8) -> Result<AddrText, std::fmt::Error> {
    match ip {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let mask = if v4 == 0 {
                0
            } else {
                u32::MAX << (32 - v4.min(32))
            };
            Ok(AddrText::v4_prefix(
                std::net::Ipv4Addr::from(bits & mask),
                v4,
            ))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let mask = if v6 == 0 {
                0
            } else {
                u128::MAX << (128 - v6.min(128))
            };
            AddrText::format(format_args!(
                "{}/{}",
                std::net::Ipv6Addr::from(bits & mask),
                v6
            ))
        }
    }
}

/// TLS 1.3's second turn on an encrypted connection: the client's Finished answered by session
/// tickets, before any request.
fn is_ticket_turn(obs: &Observation) -> bool {
    obs.http.is_none()
        && obs.transport.ja4.is_some()
        && obs.seq == 2
        && obs.request_bytes <= 128
        && obs.response_bytes <= 2048
}

/// Browsers offer HTTP/2 (ALPN h2 or h3) and many cipher suites; a JA4 without either is not a
/// browser's, whatever the User-Agent says.
pub fn browser_like_ja4(ja4: &str) -> bool {
    let a = ja4.split('_').next().unwrap_or("");
    let ciphers: u32 = a.get(4..6).and_then(|s| s.parse().ok()).unwrap_or(0);
    let alpn = a.get(8..10).unwrap_or("");
    (alpn == "h2" || alpn == "h3") && ciphers >= 10
}

#[cfg(test)]
mod tests;
