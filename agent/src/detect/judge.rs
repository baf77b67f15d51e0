//! Scoring entities and clusters, and turning scores into raise/clear events.

use super::{
    allow::AllowList,
    baseline::{self, KeySample},
    cluster::{self, KeyView},
    config::Config,
    entity::{EntityState, EntityType, Links, Raised, Table},
    events::{DetectionEvent, EntityRef, Kind, Linked, State},
    features::{self, Features},
    score::{self, Baseline, Score},
    window::Bucket,
};

pub struct Ctx<'a> {
    pub cfg: &'a Config,
    pub baseline: &'a Baseline,
    pub allow: &'a AllowList,
    pub now: u64,
    /// Log raises and clears (live); offline the events file says it all.
    pub log: bool,
}

/// Rates are not taken over less than this (or the window, if shorter).
const SPAN_FLOOR_SECONDS: f64 = 30.0;

fn features_of(
    sum: &Bucket,
    window_s: f64,
    first_seen: u64,
    duty: Option<f64>,
    now: u64,
) -> Features {
    let span = features::span_seconds(window_s, first_seen, now, SPAN_FLOOR_SECONDS);
    features::compute(sum, span, duty)
}

/// The entity's features in window `i`.
pub fn window_features(cfg: &Config, st: &EntityState, i: usize, now: u64) -> Features {
    let slot_ns = cfg.slot_seconds * 1_000_000_000;
    let duty = features::duty_cycle(st, slot_ns, now);
    let (sum, len) = match st.windows.get(i) {
        Some(w) => (w.sum(now), agent_common::ns_to_secs(w.len_ns())),
        None => (Bucket::default(), 1.0),
    };
    features_of(&sum, len, st.first_seen_ns, duty, now)
}

/// Both scores: for each kind, the window that scores highest.
fn best_over_windows(
    ctx: &Ctx<'_>,
    n_windows: usize,
    feats: impl Fn(usize) -> Features,
    pooled: u32,
    explain: bool,
) -> [Score; 2] {
    let mut best = [Score::default(), Score::default()];
    for i in 0..n_windows {
        let f = feats(i);
        let h = score::harvest(
            &f,
            ctx.baseline,
            &ctx.cfg.harvest,
            ctx.cfg.slot_seconds,
            explain,
        );
        let r = score::relay(
            &f,
            ctx.baseline,
            pooled,
            &ctx.cfg.relay,
            &ctx.cfg.harvest,
            explain,
        );
        if h.value > best[0].value {
            best[0] = h;
        }
        if r.value > best[1].value {
            best[1] = r;
        }
    }
    best
}

/// Both scores; `explain` also writes the reasons' sentences (for events and tables).
pub fn score_entity(ctx: &Ctx<'_>, _ty: EntityType, st: &EntityState, explain: bool) -> [Score; 2] {
    best_over_windows(
        ctx,
        st.windows.len(),
        |i| window_features(ctx.cfg, st, i, ctx.now),
        st.pooled_keys,
        explain,
    )
}

/// Whether a score would raise or clear the detection held in `raised`.
fn crosses(ctx: &Ctx<'_>, kind: Kind, score: f64, raised: bool, allowed: bool) -> bool {
    let (raise, clear) = ctx.cfg.levels(kind);
    if raised {
        score < clear
    } else {
        score >= raise && !allowed
    }
}

fn linked_of(links: &Links, ty: EntityType) -> Linked {
    let names =
        |s: &super::sketch::LinkSet| s.top().into_iter().map(|(v, _)| v.to_owned()).collect();
    Linked {
        api_keys: if ty == EntityType::ApiKey {
            Vec::new()
        } else {
            names(&links.api_keys)
        },
        client_ips: if ty == EntityType::ClientIp {
            Vec::new()
        } else {
            names(&links.client_ips)
        },
        ja4: if ty == EntityType::Ja4 {
            Vec::new()
        } else {
            names(&links.ja4s)
        },
    }
}

/// Raise or clear one kind; pushes the event.
#[allow(clippy::too_many_arguments)]
fn transition(
    ctx: &Ctx<'_>,
    kind: Kind,
    // Built only for an event: most calls change nothing, and the name is an allocation.
    entity: &dyn Fn() -> EntityRef,
    score: &Score,
    raised: &mut Option<Raised>,
    allowed: Option<&str>,
    linked: &dyn Fn() -> Linked,
    first_seen: u64,
    events: &mut Vec<DetectionEvent>,
) {
    let (raise, clear) = ctx.cfg.levels(kind);
    let hold_ns = (ctx.cfg.hold_seconds * 1e9) as u64;
    let state = match raised {
        None if score.value >= raise && allowed.is_none() => {
            *raised = Some(Raised {
                since_ns: ctx.now,
                below_since_ns: None,
            });
            State::Raised
        }
        // A raised detection clears once its score has stayed below the clear level for the
        // hold time: a score hovering around a level must not page on every crossing.
        Some(r) if score.value < clear => {
            let below = *r.below_since_ns.get_or_insert(ctx.now);
            if ctx.now.saturating_sub(below) < hold_ns {
                return;
            }
            *raised = None;
            State::Cleared
        }
        Some(r) => {
            r.below_since_ns = None;
            return;
        }
        None => return,
    };
    let entity = entity();
    let ev = DetectionEvent::new(
        kind,
        state,
        entity.clone(),
        score.value,
        &score.reasons,
        linked(),
        first_seen,
        ctx.now,
    );
    if !ctx.log {
    } else if state == State::Raised {
        tracing::warn!(
            kind = kind.label(),
            entity_type = %entity.ty,
            entity = %entity.value,
            score = format!("{:.2}", score.value),
            reasons = %ev.reasons.iter().map(|r| r.text.as_str()).collect::<Vec<_>>().join("; "),
            "detection raised"
        );
    } else {
        tracing::info!(kind = kind.label(), entity_type = %entity.ty, entity = %entity.value, "detection cleared");
    }
    events.push(ev);
}

pub fn transitions(
    ctx: &Ctx<'_>,
    ty: EntityType,
    value: &str,
    st: &mut EntityState,
    scores: &[Score; 2],
    events: &mut Vec<DetectionEvent>,
) {
    let entity = || EntityRef {
        ty: ty.label().to_owned(),
        value: value.to_owned(),
    };
    let allowed = ctx.allow.allows(ty, value);
    // Reasons in words only for an event about to be written.
    let explained;
    let scores = if Kind::ALL.iter().any(|k| {
        crosses(
            ctx,
            *k,
            scores[k.index()].value,
            st.raised[k.index()].is_some(),
            allowed.is_some(),
        )
    }) {
        explained = score_entity(ctx, ty, st, true);
        &explained
    } else {
        scores
    };
    for kind in Kind::ALL {
        let k = kind.index();
        st.scores[k] = scores[k].value;
        st.max_scores[k] = st.max_scores[k].max(scores[k].value as f32);
        let first_seen = st.first_seen_ns;
        let links = &st.links;
        let raised = &mut st.raised[k];
        transition(
            ctx,
            kind,
            &entity,
            &scores[k],
            raised,
            allowed,
            &|| linked_of(links, ty),
            first_seen,
            events,
        );
    }
}

/// The baseline over keys (middle window) and client addresses (round-trip gaps).
pub fn baseline(cfg: &Config, tables: &[Table], mid: usize, now: u64) -> Baseline {
    let mut samples = Vec::new();
    if let Some(keys) = tables.get(EntityType::ApiKey.index()) {
        for st in keys.map.values() {
            if st.raised.iter().any(Option::is_some) {
                continue;
            }
            let f = window_features(cfg, st, mid, now);
            if f.requests < cfg.baseline.min_requests {
                continue;
            }
            samples.push(KeySample {
                cluster: st.cluster.as_deref(),
                output_tokens_per_second: f.output_tokens_per_second,
                output_tokens_per_response: f.output_tokens_per_response,
                think_p50_seconds: f.think_p50_seconds,
            });
        }
    }
    let mut gaps = Vec::new();
    if let Some(ips) = tables.get(EntityType::ClientIp.index()) {
        for st in ips.map.values() {
            if st.raised[Kind::Relay.index()].is_some() {
                continue;
            }
            if let Some(g) = window_features(cfg, st, mid, now).rtt_gap_low_seconds {
                gaps.push(g);
            }
        }
    }
    baseline::compute(&samples, &mut gaps, cfg.baseline.quantile)
}

/// A cluster of keys in lockstep, scored on the sum of its members.
#[derive(Clone, Debug)]
pub struct ClusterState {
    pub id: String,
    pub members: Vec<Box<str>>,
    pub client_ips: Vec<String>,
    pub ja4s: Vec<String>,
    pub pooled: u32,
    pub first_seen_ns: u64,
    /// When the cluster pass last found it.
    pub formed_ns: u64,
    pub raised: [Option<Raised>; 2],
    pub scores: [f64; 2],
    pub max_scores: [f32; 2],
    pub requests_per_second: f64,
    pub response_bytes_per_second: f64,
    pub reasons: [Vec<score::Reason>; 2],
}

/// What export and the offline table need of any entity.
#[derive(Clone, Debug)]
pub struct Judged<'a> {
    pub ty: EntityType,
    pub value: &'a str,
    pub scores: [f64; 2],
    pub max_scores: [f32; 2],
    pub raised: [bool; 2],
    pub requests_per_second: f64,
    pub response_bytes_per_second: f64,
}

impl<'a> Judged<'a> {
    pub fn of(
        ty: EntityType,
        value: &'a str,
        st: &EntityState,
        cfg: &Config,
        now: u64,
    ) -> Judged<'a> {
        let mid = cfg.middle_window();
        let f = window_features(cfg, st, mid, now);
        Judged {
            ty,
            value,
            scores: st.scores,
            max_scores: st.max_scores,
            raised: [st.raised[0].is_some(), st.raised[1].is_some()],
            requests_per_second: f.requests_per_second,
            response_bytes_per_second: f.response_bytes_per_second,
        }
    }
}

impl ClusterState {
    pub fn judged(&self) -> Judged<'_> {
        Judged {
            ty: EntityType::Cluster,
            value: &self.id,
            scores: self.scores,
            max_scores: self.max_scores,
            raised: [self.raised[0].is_some(), self.raised[1].is_some()],
            requests_per_second: self.requests_per_second,
            response_bytes_per_second: self.response_bytes_per_second,
        }
    }
}

fn key_view(cfg: &Config, key: &str, st: &EntityState, mid: usize, now: u64) -> Option<KeyView> {
    let f = window_features(cfg, st, mid, now);
    if f.requests < cfg.baseline.min_requests {
        return None;
    }
    let slot_ns = cfg.slot_seconds * 1_000_000_000;
    let now_slot = now / slot_ns;
    let stack = match st.links.ja4s.most_frequent() {
        Some(j) => format!("ja4:{j}"),
        None => format!("ua:{}", st.links.user_agents.most_frequent().unwrap_or("")),
    };
    Some(KeyView {
        key: key.into(),
        group: (
            st.links.prefixes.most_frequent().unwrap_or("").to_owned(),
            stack,
        ),
        address: st.links.client_ips.most_frequent().map(str::to_owned),
        slots: st.activity.at(now_slot),
        age_slots: now_slot.saturating_sub(st.first_seen_ns / slot_ns) + 1,
        requests_per_second: f.requests_per_second,
        requests_per_slot: f.requests_per_second * cfg.slot_seconds as f64,
        requests: f.requests,
        tokens_per_response: f.output_tokens_per_response,
    })
}

/// Find clusters and pools among the keys, mark their members and addresses, score the
/// clusters, and raise or clear them.
pub fn clusters(
    cfg: &Config,
    tables: &mut [Table],
    previous: Vec<ClusterState>,
    ctx: &Ctx<'_>,
    mid: usize,
    events: &mut Vec<DetectionEvent>,
) -> Vec<ClusterState> {
    let (ki, ii) = (EntityType::ApiKey.index(), EntityType::ClientIp.index());
    let views: Vec<KeyView> = tables[ki]
        .map
        .iter()
        .filter_map(|(k, st)| key_view(cfg, k, st, mid, ctx.now))
        .collect();
    let comps = cluster::components(&views, &cfg.cluster);
    // Pools and memberships not seen again within the memory lapse.
    let memory_ns = (cfg.cluster.memory_seconds * 1e9) as u64;
    let lapsed = |at: u64| ctx.now.saturating_sub(at) > memory_ns;
    for t in [ki, ii] {
        for st in tables[t].map.values_mut() {
            if (st.pooled_keys > 0 || st.cluster.is_some()) && lapsed(st.pooled_at_ns) {
                st.pooled_keys = 0;
                st.cluster = None;
                st.dirty = true;
            }
        }
    }
    let prev_ids: Vec<(String, Vec<Box<str>>)> = previous
        .iter()
        .map(|c| (c.id.clone(), c.members.clone()))
        .collect();
    let mut out: Vec<ClusterState> = Vec::new();
    let mut taken: Vec<String> = Vec::new();
    for comp in &comps {
        let pooled = if comp.pooled >= 2 { comp.pooled } else { 0 };
        let is_cluster = comp.keys.len() >= cfg.cluster.min_keys;
        let id = is_cluster.then(|| cluster::stable_id(&comp.keys, &prev_ids, &taken));
        if let Some(id) = &id {
            taken.push(id.clone());
        }
        if let (Some(addr), true) = (&comp.pooled_address, pooled > 0) {
            if let Some(st) = tables[ii].map.get_mut(addr.as_str()) {
                st.pooled_keys = pooled;
                st.pooled_at_ns = ctx.now;
                st.dirty = true;
            }
        }
        let mut windows: Vec<Bucket> = vec![Bucket::default(); cfg.windows_seconds.len()];
        let mut first_seen = u64::MAX;
        let mut slots = 0u64;
        let mut ips = Vec::new();
        let mut ja4s = Vec::new();
        for k in &comp.keys {
            let Some(st) = tables[ki].map.get_mut(k) else {
                continue;
            };
            if pooled > 0 && st.links.client_ips.most_frequent() == comp.pooled_address.as_deref() {
                st.pooled_keys = pooled;
                st.pooled_at_ns = ctx.now;
            }
            if let Some(id) = &id {
                st.cluster = Some(id.as_str().into());
                st.pooled_at_ns = st.pooled_at_ns.max(ctx.now);
            }
            st.dirty = true;
            first_seen = first_seen.min(st.first_seen_ns);
            slots |= st.activity.at(ctx.now / (cfg.slot_seconds * 1_000_000_000));
            for (i, w) in st.windows.iter().enumerate() {
                if let Some(b) = windows.get_mut(i) {
                    b.merge(&w.sum(ctx.now));
                }
            }
            if let Some(ip) = st.links.client_ips.most_frequent() {
                if !ips.iter().any(|x: &String| x == ip) {
                    ips.push(ip.to_owned());
                }
            }
            if let Some(j) = st.links.ja4s.most_frequent() {
                if !ja4s.iter().any(|x: &String| x == j) {
                    ja4s.push(j.to_owned());
                }
            }
        }
        let Some(id) = id else { continue };
        let slot_ns = cfg.slot_seconds * 1_000_000_000;
        let age = (ctx.now / slot_ns).saturating_sub(first_seen / slot_ns) + 1;
        let duty = (age >= features::MIN_DUTY_SLOTS).then(|| {
            let span = age.min(64);
            let mask = if span >= 64 {
                u64::MAX
            } else {
                (1u64 << span) - 1
            };
            (slots & mask).count_ones() as f64 / span as f64
        });
        let feats = |i: usize| {
            let len = cfg.windows_seconds.get(i).copied().unwrap_or(1) as f64;
            features_of(&windows[i], len, first_seen, duty, ctx.now)
        };
        let scores = best_over_windows(ctx, windows.len(), feats, pooled, true);
        let mid_f = feats(mid);
        let mut state = previous
            .iter()
            .find(|c| c.id == id)
            .cloned()
            .unwrap_or(ClusterState {
                id: id.clone(),
                members: Vec::new(),
                client_ips: Vec::new(),
                ja4s: Vec::new(),
                pooled: 0,
                first_seen_ns: first_seen,
                formed_ns: ctx.now,
                raised: [None; 2],
                scores: [0.0; 2],
                max_scores: [0.0; 2],
                requests_per_second: 0.0,
                response_bytes_per_second: 0.0,
                reasons: [Vec::new(), Vec::new()],
            });
        state.members = comp.keys.clone();
        state.client_ips = ips;
        state.ja4s = ja4s;
        state.pooled = pooled;
        state.formed_ns = ctx.now;
        state.first_seen_ns = state.first_seen_ns.min(first_seen);
        state.requests_per_second = mid_f.requests_per_second;
        state.response_bytes_per_second = mid_f.response_bytes_per_second;
        let entity = EntityRef {
            ty: "cluster".into(),
            value: id.clone(),
        };
        let allowed = ctx.allow.allows_all(&state.members);
        let linked = Linked {
            api_keys: state.members.iter().map(|k| k.to_string()).collect(),
            client_ips: state.client_ips.clone(),
            ja4: state.ja4s.clone(),
        };
        for kind in Kind::ALL {
            let k = kind.index();
            state.scores[k] = scores[k].value;
            state.max_scores[k] = state.max_scores[k].max(scores[k].value as f32);
            state.reasons[k] = scores[k].reasons.clone();
            let mut reasons = scores[k].clone();
            reasons.reasons.insert(
                0,
                score::Reason {
                    feature: "cluster_keys",
                    value: state.members.len() as f64,
                    baseline: cfg.cluster.min_keys as f64,
                    evidence: 1.0,
                    text: format!(
                        "{} keys in lockstep over {} address(es) and one software stack",
                        state.members.len(),
                        state.client_ips.len()
                    ),
                },
            );
            let mut raised = state.raised[k];
            transition(
                ctx,
                kind,
                &|| entity.clone(),
                &reasons,
                &mut raised,
                allowed,
                &|| linked.clone(),
                state.first_seen_ns,
                events,
            );
            state.raised[k] = raised;
        }
        out.push(state);
    }
    // Clusters not found this time: kept through the memory lapse, then cleared; at once if
    // their keys now sit in a cluster found this time.
    let found = out.len();
    for old in previous {
        if out.iter().any(|c| c.id == old.id) {
            continue;
        }
        let merged = cluster::absorbed(&old.members, out[..found].iter().map(|c| &c.members[..]));
        if !merged && !lapsed(old.formed_ns) {
            out.push(old);
            continue;
        }
        for kind in Kind::ALL {
            if old.raised[kind.index()].is_some() {
                let entity = EntityRef {
                    ty: "cluster".into(),
                    value: old.id.clone(),
                };
                let mut raised = old.raised[kind.index()];
                // The cluster is gone (its memory lapsed, or its keys joined another): clear
                // now, no hold.
                if let Some(r) = raised.as_mut() {
                    r.below_since_ns = Some(0);
                }
                let linked = Linked {
                    api_keys: old.members.iter().map(|k| k.to_string()).collect(),
                    client_ips: old.client_ips.clone(),
                    ja4: old.ja4s.clone(),
                };
                transition(
                    ctx,
                    kind,
                    &|| entity.clone(),
                    &Score::default(),
                    &mut raised,
                    None,
                    &|| linked.clone(),
                    old.first_seen_ns,
                    events,
                );
            }
        }
    }
    out
}
