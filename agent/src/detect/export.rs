//! The detector's Prometheus series, with bounded cardinality: per-entity series only for the
//! top K entities by each score and by volume (plus every raised one); the rest fold into
//! `entity="_other"`. Series of entities that leave the selection are removed.

use std::collections::{BTreeMap, BTreeSet};

use prometheus::{GaugeVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use super::{
    entity::EntityType,
    events::{DetectionEvent, Kind, State},
    judge::Judged,
    Detector,
};
use crate::export::registry::register;

pub const OTHER: &str = "_other";

#[derive(Clone)]
pub struct DetectorMetrics {
    score: GaugeVec,
    raised: GaugeVec,
    rps: GaugeVec,
    bytes: GaugeVec,
    detections: IntCounterVec,
    active: IntGaugeVec,
    tracked: IntGaugeVec,
    created: IntCounterVec,
    evicted: IntCounterVec,
    records: IntCounterVec,
    memory: IntGauge,
    exported: BTreeSet<(EntityType, String)>,
    last_counts: BTreeMap<(&'static str, &'static str), u64>,
}

impl DetectorMetrics {
    pub fn new(r: &Registry) -> prometheus::Result<DetectorMetrics> {
        let m = DetectorMetrics::register(r)?;
        // Every counter exists from the start (at 0), so rules and dashboards find the series
        // before the first detection or eviction.
        for ty in EntityType::ALL {
            m.created.with_label_values(&[ty.label()]);
            m.evicted.with_label_values(&[ty.label()]);
            m.tracked.with_label_values(&[ty.label()]);
            for kind in Kind::ALL {
                m.detections.with_label_values(&[kind.label(), ty.label()]);
                m.active.with_label_values(&[kind.label(), ty.label()]);
            }
        }
        for result in [
            "request",
            "handshake",
            "late",
            "joined",
            "fingerprint_only",
            "duplicate",
        ] {
            m.records.with_label_values(&[result]);
        }
        Ok(m)
    }

    fn register(r: &Registry) -> prometheus::Result<DetectorMetrics> {
        let ke = &["kind", "entity_type", "entity"];
        let e = &["entity_type", "entity"];
        Ok(DetectorMetrics {
            score: register(r, GaugeVec::new(Opts::new("siphon_entity_score", "Detector score in [0, 1] by kind (harvest, relay), for the top K entities by score and by volume and every raised one; the rest as entity=\"_other\" (their maximum)."), ke)?)?,
            raised: register(r, GaugeVec::new(Opts::new("siphon_entity_raised", "1 while the entity's detection of this kind is raised."), ke)?)?,
            rps: register(r, GaugeVec::new(Opts::new("siphon_entity_requests_per_second", "Requests per second over the middle window (10 minutes by default); _other is the sum of the rest."), e)?)?,
            bytes: register(r, GaugeVec::new(Opts::new("siphon_entity_response_bytes_per_second", "Response bytes per second over the middle window; _other is the sum of the rest."), e)?)?,
            detections: register(r, IntCounterVec::new(Opts::new("siphon_detections_total", "Detections raised, by kind and entity type."), &["kind", "entity_type"])?)?,
            active: register(r, IntGaugeVec::new(Opts::new("siphon_detections_active", "Detections currently raised."), &["kind", "entity_type"])?)?,
            tracked: register(r, IntGaugeVec::new(Opts::new("siphon_entities_tracked", "Entities the detector holds state for."), &["entity_type"])?)?,
            created: register(r, IntCounterVec::new(Opts::new("siphon_entities_created_total", "Entities the detector started tracking (a flood of new clients shows here)."), &["entity_type"])?)?,
            evicted: register(r, IntCounterVec::new(Opts::new("siphon_entities_evicted_total", "Entities evicted because their table was full (least recently seen first)."), &["entity_type"])?)?,
            records: register(r, IntCounterVec::new(Opts::new("siphon_detector_records_total", "Exchanges the detector took, by result (request, handshake, late, ignored, joined, fingerprint_only, duplicate)."), &["result"])?)?,
            memory: register(r, IntGauge::new("siphon_detector_memory_bytes", "Estimated bytes of detector state (entities, clusters, pending joins).")?)?,
            exported: BTreeSet::new(),
            last_counts: BTreeMap::new(),
        })
    }

    fn add_delta(&mut self, c: &IntCounterVec, label: &'static str, what: &'static str, now: u64) {
        let last = self.last_counts.entry((what, label)).or_default();
        if now > *last {
            c.with_label_values(&[label]).inc_by(now - *last);
            *last = now;
        }
    }

    pub fn record_events(&self, events: &[DetectionEvent]) {
        for e in events {
            if e.state == State::Raised {
                self.detections
                    .with_label_values(&[e.kind.label(), &e.entity.ty])
                    .inc();
            }
        }
    }

    /// Refresh every series from the detector's state.
    pub fn update(&mut self, det: &Detector) {
        let k = det.config().top_k;
        let judged = det.judged();
        let mut selected: BTreeSet<(EntityType, String)> = BTreeSet::new();
        for kind in Kind::ALL {
            for j in top_by(&judged, k, |j| j.scores[kind.index()]) {
                selected.insert((j.ty, j.value.to_owned()));
            }
        }
        for j in top_by(&judged, k, |j| j.response_bytes_per_second) {
            selected.insert((j.ty, j.value.to_owned()));
        }
        for j in judged.iter().filter(|j| j.raised.iter().any(|r| *r)) {
            selected.insert((j.ty, j.value.to_owned()));
        }
        let mut other: BTreeMap<EntityType, ([f64; 2], [bool; 2], f64, f64)> = BTreeMap::new();
        let mut active: BTreeMap<(Kind, EntityType), i64> = BTreeMap::new();
        for j in &judged {
            for kind in Kind::ALL {
                if j.raised[kind.index()] {
                    *active.entry((kind, j.ty)).or_default() += 1;
                }
            }
            if selected.contains(&(j.ty, j.value.to_owned())) {
                self.set(
                    j.ty,
                    j.value,
                    j.scores,
                    j.raised,
                    j.requests_per_second,
                    j.response_bytes_per_second,
                );
            } else {
                let o = other
                    .entry(j.ty)
                    .or_insert(([0.0; 2], [false; 2], 0.0, 0.0));
                for i in 0..2 {
                    o.0[i] = o.0[i].max(j.scores[i]);
                    o.1[i] |= j.raised[i];
                }
                o.2 += j.requests_per_second;
                o.3 += j.response_bytes_per_second;
            }
        }
        for ty in EntityType::ALL {
            let (s, r, rps, b) = other
                .get(&ty)
                .copied()
                .unwrap_or(([0.0; 2], [false; 2], 0.0, 0.0));
            self.set(ty, OTHER, s, r, rps, b);
            for kind in Kind::ALL {
                self.active
                    .with_label_values(&[kind.label(), ty.label()])
                    .set(active.get(&(kind, ty)).copied().unwrap_or(0));
            }
        }
        for gone in self.exported.difference(&selected) {
            let (ty, v) = (gone.0.label(), gone.1.as_str());
            for kind in Kind::ALL {
                let _ = self.score.remove_label_values(&[kind.label(), ty, v]);
                let _ = self.raised.remove_label_values(&[kind.label(), ty, v]);
            }
            let _ = self.rps.remove_label_values(&[ty, v]);
            let _ = self.bytes.remove_label_values(&[ty, v]);
        }
        self.exported = selected;
        for ty in EntityType::TRACKED {
            if let Some(t) = det.table(ty) {
                self.tracked
                    .with_label_values(&[ty.label()])
                    .set(t.map.len() as i64);
                let (created, evicted) = (self.created.clone(), self.evicted.clone());
                self.add_delta(&created, ty.label(), "created", t.created);
                self.add_delta(&evicted, ty.label(), "evicted", t.evicted);
            }
        }
        self.tracked
            .with_label_values(&["cluster"])
            .set(det.clusters().len() as i64);
        let s = det.stats;
        let js = det.join_stats();
        let records = self.records.clone();
        for (label, n) in [
            ("request", s.requests),
            ("handshake", s.handshakes),
            ("late", s.late),
            ("ignored", s.ignored),
            ("joined", js.joined),
            ("fingerprint_only", js.fingerprint_only),
            ("duplicate", js.duplicates),
        ] {
            self.add_delta(&records, label, "records", n);
        }
        self.memory.set(det.memory_bytes as i64);
    }

    fn set(
        &self,
        ty: EntityType,
        v: &str,
        scores: [f64; 2],
        raised: [bool; 2],
        rps: f64,
        bytes: f64,
    ) {
        for kind in Kind::ALL {
            let i = kind.index();
            self.score
                .with_label_values(&[kind.label(), ty.label(), v])
                .set(scores[i]);
            self.raised
                .with_label_values(&[kind.label(), ty.label(), v])
                .set(if raised[i] { 1.0 } else { 0.0 });
        }
        self.rps.with_label_values(&[ty.label(), v]).set(rps);
        self.bytes.with_label_values(&[ty.label(), v]).set(bytes);
    }
}

fn top_by<'a, 'b>(
    judged: &'b [Judged<'a>],
    k: usize,
    key: impl Fn(&Judged<'a>) -> f64,
) -> Vec<&'b Judged<'a>> {
    let mut v: Vec<&Judged> = judged.iter().filter(|j| key(j) > 0.0).collect();
    if v.len() > k {
        v.select_nth_unstable_by(k - 1, |a, b| key(b).total_cmp(&key(a)));
        v.truncate(k);
    }
    v
}
