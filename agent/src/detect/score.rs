//! The two scores, in [0, 1], with their reasons. Each signal turns a feature into evidence in
//! [0, 1] between two levels (from the configuration, moved by the cluster's baseline where a
//! feature has one); signals combine by products and noisy-OR, both non-decreasing in every
//! evidence, so more evidence never lowers a score.
//!
//! harvest = volume × content × (½ + ½·pacing)
//!   volume:  output tokens/s at bulk level;
//!   content: long outputs (share at the output cap) or responses far larger than requests;
//!   pacing:  noisy-OR of short think time, high duty cycle, heavier than the cluster's
//!            typical key, regular inter-arrivals, 429s.
//! relay = noisy-OR of TLS-vs-TCP round-trip gap, keys pooled in lockstep behind one address,
//!   client-supplied forwarding origins, browser User-Agent over a non-browser TLS stack.

use serde::Serialize;

use super::{
    config::{HarvestConfig, RelayConfig},
    features::Features,
};

/// The cluster's typical entity (see `baseline.rs`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Baseline {
    /// Keys the baseline was computed over.
    pub keys: usize,
    pub output_tokens_per_second: f64,
    pub output_tokens_per_response: f64,
    pub think_p50_seconds: Option<f64>,
    pub rtt_gap_seconds: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Reason {
    pub feature: &'static str,
    pub value: f64,
    /// The cluster's typical value or the threshold the value is judged against.
    pub baseline: f64,
    /// Evidence in [0, 1] this reason contributed.
    #[serde(skip)]
    pub evidence: f64,
    pub text: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Score {
    pub value: f64,
    /// Contributing reasons, strongest first.
    pub reasons: Vec<Reason>,
}

/// 0 at or below `lo`, 1 at or above `hi`, linear between.
pub fn ramp(x: f64, lo: f64, hi: f64) -> f64 {
    if x.is_nan() || x <= lo {
        0.0
    } else if x >= hi || hi <= lo {
        1.0
    } else {
        (x - lo) / (hi - lo)
    }
}

/// As [`ramp`], on a log scale (all positive).
pub fn ramp_log(x: f64, lo: f64, hi: f64) -> f64 {
    if !(x > 0.0 && lo > 0.0 && hi > 0.0) {
        return if x >= hi && x > 0.0 { 1.0 } else { 0.0 };
    }
    // `ln` is most of scoring's cost and is monotonic, so the saturated ends, where most
    // entities sit, are decided without it, giving what `ramp` on the logarithms gives: at or
    // below `lo` 0; at or above `hi`, 1 unless ln x <= ln lo, which only `lo` itself can meet.
    if x <= lo {
        return 0.0;
    }
    if x >= hi {
        return if x.ln() <= lo.ln() { 0.0 } else { 1.0 };
    }
    ramp(x.ln(), lo.ln(), hi.ln())
}

/// 1 − Π(1 − wᵢ·eᵢ).
pub fn noisy_or(terms: &[(f64, f64)]) -> f64 {
    1.0 - terms
        .iter()
        .map(|&(w, e)| 1.0 - (w.clamp(0.0, 1.0) * e.clamp(0.0, 1.0)))
        .product::<f64>()
}

fn pct(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

fn secs_text(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else {
        format!("{s:.1} s")
    }
}

/// A reason's sentence, only when it will be shown (formatting floats is most of the cost of
/// scoring otherwise).
macro_rules! txt {
    ($explain:expr, $($a:tt)*) => {
        if $explain { format!($($a)*) } else { String::new() }
    };
}

pub fn harvest(
    f: &Features,
    base: &Baseline,
    cfg: &HarvestConfig,
    slot_s: u64,
    explain: bool,
) -> Score {
    if f.requests < cfg.min_requests {
        return Score::default();
    }
    // Sized for every reason a score can give, so pushing never reallocates.
    let mut reasons = Vec::with_capacity(8);
    let floor = cfg.volume_floor_tokens_per_second;
    let volume = ramp_log(
        f.output_tokens_per_second,
        floor,
        floor * cfg.volume_full_multiple,
    );
    reasons.push(Reason {
        feature: "output_tokens_per_second",
        value: f.output_tokens_per_second,
        baseline: base.output_tokens_per_second,
        evidence: volume,
        text: txt!(
            explain,
            "output ≈{:.0} tokens/s vs cluster typical {:.1}",
            f.output_tokens_per_second,
            base.output_tokens_per_second
        ),
    });
    let long_tokens = cfg.long_output_tokens;
    let long = ramp(f.long_share, cfg.long_share_lo, cfg.long_share_hi);
    reasons.push(Reason {
        feature: "long_output_share",
        value: f.long_share,
        baseline: long_tokens,
        evidence: long,
        text: txt!(explain,
            "{} of responses at ≥{long_tokens:.0} output tokens (mean {:.0}, cluster typical {:.0})",
            pct(f.long_share),
            f.output_tokens_per_response,
            base.output_tokens_per_response
        ),
    });
    let ratio = ramp_log(f.response_request_ratio, cfg.ratio_lo, cfg.ratio_hi);
    reasons.push(Reason {
        feature: "response_request_ratio",
        value: f.response_request_ratio,
        baseline: cfg.ratio_lo,
        evidence: ratio,
        text: txt!(
            explain,
            "responses {:.0}× the request bytes",
            f.response_request_ratio
        ),
    });
    let content = long.max(ratio);

    // Think time: suspicious below the configured level, or below the cluster's own typical
    // think time divided by think_vs_baseline if that is lower (a cluster of fast agents).
    let think_none = match base.think_p50_seconds {
        Some(b) if b > 0.0 => cfg.think_none_seconds.min(b / cfg.think_vs_baseline),
        _ => cfg.think_none_seconds,
    }
    .max(cfg.think_full_seconds * 1.01);
    let think = f.think_p50_seconds.map_or(0.0, |t| {
        1.0 - ramp_log(t.max(1e-3), cfg.think_full_seconds, think_none)
    });
    if let Some(t) = f.think_p50_seconds {
        reasons.push(Reason {
            feature: "think_time_p50_seconds",
            value: t,
            baseline: base.think_p50_seconds.unwrap_or(f64::NAN),
            evidence: think,
            text: txt!(
                explain,
                "think time p50 {} vs cluster p50 {}",
                secs_text(t),
                base.think_p50_seconds.map_or("unknown".into(), secs_text)
            ),
        });
    }
    let duty = f
        .duty_cycle
        .map_or(0.0, |d| ramp(d, cfg.duty_lo, cfg.duty_hi));
    if let Some(d) = f.duty_cycle {
        reasons.push(Reason {
            feature: "duty_cycle",
            value: d,
            baseline: cfg.duty_lo,
            evidence: duty,
            text: txt!(
                explain,
                "busy in {} of {slot_s} s slots since first seen",
                pct(d)
            ),
        });
    }
    let heavy_lo = cfg.volume_vs_baseline * base.output_tokens_per_second;
    let heavy = if base.keys >= 3 && heavy_lo > 0.0 {
        ramp_log(
            f.output_tokens_per_second,
            heavy_lo,
            heavy_lo * cfg.volume_full_multiple,
        )
    } else {
        0.0
    };
    if heavy > 0.0 {
        reasons.push(Reason {
            feature: "output_vs_cluster",
            value: f.output_tokens_per_second / base.output_tokens_per_second.max(1e-9),
            baseline: cfg.volume_vs_baseline,
            evidence: heavy,
            text: txt!(
                explain,
                "{:.0}× the cluster's typical key output",
                f.output_tokens_per_second / base.output_tokens_per_second.max(1e-9)
            ),
        });
    }
    let regular = f
        .interarrival_cv
        .map_or(0.0, |cv| 1.0 - ramp(cv, cfg.cv_full, cfg.cv_none));
    if let Some(cv) = f.interarrival_cv {
        reasons.push(Reason {
            feature: "interarrival_cv",
            value: cv,
            baseline: cfg.cv_none,
            evidence: regular,
            text: txt!(
                explain,
                "inter-arrival CV {cv:.2} (clockwork below {:.2})",
                cfg.cv_none
            ),
        });
    }
    let throttled = ramp(f.throttled_share, cfg.throttled_lo, cfg.throttled_hi);
    if f.throttled_share > 0.0 {
        reasons.push(Reason {
            feature: "throttled_share",
            value: f.throttled_share,
            baseline: cfg.throttled_lo,
            evidence: throttled,
            text: txt!(
                explain,
                "{} of requests answered 429",
                pct(f.throttled_share)
            ),
        });
    }
    let pacing = noisy_or(&[
        (cfg.weight_think, think),
        (cfg.weight_duty, duty),
        (cfg.weight_long.max(cfg.weight_duty), heavy),
        (cfg.weight_regular, regular),
        (cfg.weight_throttled, throttled),
    ]);
    let value = (volume * content * (0.5 + 0.5 * pacing)).clamp(0.0, 1.0);
    finish(value, reasons)
}

/// Evidence that an entity pulls long outputs or far more than it sends (harvest's content).
fn content_evidence(f: &Features, h: &HarvestConfig) -> f64 {
    ramp(f.long_share, h.long_share_lo, h.long_share_hi).max(ramp_log(
        f.response_request_ratio,
        h.ratio_lo,
        h.ratio_hi,
    ))
}

pub fn relay(
    f: &Features,
    base: &Baseline,
    pooled_keys: u32,
    cfg: &RelayConfig,
    harvest_cfg: &HarvestConfig,
    explain: bool,
) -> Score {
    if f.requests < cfg.min_requests {
        return Score::default();
    }
    // Sized for every reason a score can give, so pushing never reallocates.
    let mut reasons = Vec::with_capacity(8);
    let gap_lo = match base.rtt_gap_seconds {
        Some(b) => cfg.rtt_gap_lo_seconds.max(2.0 * b),
        None => cfg.rtt_gap_lo_seconds,
    };
    let gap_hi = cfg.rtt_gap_hi_seconds.max(gap_lo * 1.5);
    let gap = match f.rtt_gap_low_seconds {
        Some(g) if f.rtt_samples >= cfg.min_rtt_connections => ramp(g, gap_lo, gap_hi),
        _ => 0.0,
    };
    if let Some(g) = f.rtt_gap_low_seconds {
        reasons.push(Reason {
            feature: "tls_tcp_rtt_gap_seconds",
            value: g,
            baseline: base.rtt_gap_seconds.unwrap_or(f64::NAN),
            evidence: gap,
            text: txt!(
                explain,
                "TLS round trip exceeds TCP's by ≥{} (the lowest of {} connections; cluster typical {})",
                secs_text(g),
                f.rtt_samples,
                base.rtt_gap_seconds.map_or("unknown".into(), secs_text)
            ),
        });
    }
    // Keys in lockstep behind one address are only relay evidence when what flows through
    // them is bulk output: an office of people on one SDK can look like a pool by timing alone.
    let pooled = if pooled_keys >= 2 {
        ramp(pooled_keys as f64, 1.0, cfg.pooled_keys_full) * content_evidence(f, harvest_cfg)
    } else {
        0.0
    };
    if pooled_keys >= 2 {
        reasons.push(Reason {
            feature: "pooled_keys",
            value: pooled_keys as f64,
            baseline: 1.0,
            evidence: pooled,
            text: txt!(
                explain,
                "{pooled_keys} API keys used in lockstep from one address, {} of responses long",
                pct(f.long_share)
            ),
        });
    }
    let claimed = ramp(
        f.claimed_origin_share,
        cfg.claimed_origin_lo,
        cfg.claimed_origin_hi,
    );
    if f.claimed_origin_share > 0.0 {
        reasons.push(Reason {
            feature: "claimed_origin_share",
            value: f.claimed_origin_share,
            baseline: cfg.claimed_origin_lo,
            evidence: claimed,
            text: txt!(
                explain,
                "{} of requests carry forwarding origins the client supplied",
                pct(f.claimed_origin_share)
            ),
        });
    }
    let ua = ramp(f.ua_mismatch_share, cfg.ua_mismatch_lo, cfg.ua_mismatch_hi);
    if f.ua_mismatch_share > 0.0 {
        reasons.push(Reason {
            feature: "ua_tls_mismatch_share",
            value: f.ua_mismatch_share,
            baseline: cfg.ua_mismatch_lo,
            evidence: ua,
            text: txt!(
                explain,
                "{} of requests claim a browser over a non-browser TLS stack",
                pct(f.ua_mismatch_share)
            ),
        });
    }
    let value = noisy_or(&[
        (cfg.weight_rtt_gap, gap),
        (cfg.weight_pooled, pooled),
        (cfg.weight_claimed_origin, claimed),
        (cfg.weight_ua_mismatch, ua),
    ]);
    finish(value, reasons)
}

fn finish(value: f64, mut reasons: Vec<Reason>) -> Score {
    reasons.retain(|r| r.evidence > 0.0);
    reasons.sort_by(|a, b| b.evidence.total_cmp(&a.evidence));
    reasons.truncate(5);
    Score { value, reasons }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn harvester() -> Features {
        Features {
            span_seconds: 600.0,
            requests: 200,
            requests_per_second: 0.33,
            output_tokens_per_second: 600.0,
            output_tokens_per_response: 1800.0,
            response_request_ratio: 250.0,
            long_share: 0.95,
            think_p50_seconds: Some(0.06),
            duty_cycle: Some(1.0),
            interarrival_cv: Some(0.4),
            ..Features::default()
        }
    }

    fn base() -> Baseline {
        Baseline {
            keys: 50,
            output_tokens_per_second: 3.0,
            output_tokens_per_response: 150.0,
            think_p50_seconds: Some(20.0),
            rtt_gap_seconds: Some(0.002),
        }
    }

    #[test]
    fn a_pool_counts_only_when_bulk_output_flows_through_it() {
        let (rc, hc) = (RelayConfig::default(), HarvestConfig::default());
        let office = Features {
            requests: 100,
            long_share: 0.02,
            response_request_ratio: 2.0,
            ..Features::default()
        };
        assert_eq!(relay(&office, &base(), 6, &rc, &hc, true).value, 0.0);
        let relayed = Features {
            long_share: 0.95,
            response_request_ratio: 200.0,
            ..office
        };
        assert!(relay(&relayed, &base(), 3, &rc, &hc, true).value > 0.8);
    }

    #[test]
    fn ramps_and_noisy_or() {
        assert_eq!(ramp(5.0, 0.0, 10.0), 0.5);
        assert_eq!(ramp(-1.0, 0.0, 10.0), 0.0);
        assert_eq!(ramp(f64::NAN, 0.0, 10.0), 0.0);
        assert!((ramp_log(10.0, 1.0, 100.0) - 0.5).abs() < 1e-12);
        assert!((noisy_or(&[(1.0, 0.5), (0.5, 1.0)]) - 0.75).abs() < 1e-12);
    }

    #[test]
    fn a_harvester_scores_high_with_reasons() {
        let s = harvest(&harvester(), &base(), &HarvestConfig::default(), 10, true);
        assert!(s.value > 0.9, "{s:?}");
        let feats: Vec<_> = s.reasons.iter().map(|r| r.feature).collect();
        assert!(feats.contains(&"output_tokens_per_second"), "{feats:?}");
        assert!(feats.contains(&"think_time_p50_seconds"), "{feats:?}");
    }

    #[test]
    fn a_chatty_person_and_a_batch_job_do_not() {
        let cfg = HarvestConfig::default();
        let person = Features {
            output_tokens_per_second: 2.0,
            long_share: 0.05,
            response_request_ratio: 3.0,
            think_p50_seconds: Some(25.0),
            ..harvester()
        };
        assert!(harvest(&person, &base(), &cfg, 10, true).value < 0.1);
        // Batch summarisation: machine pacing, lots of volume, but long inputs, short outputs.
        let batch = Features {
            output_tokens_per_second: 400.0,
            output_tokens_per_response: 80.0,
            long_share: 0.0,
            response_request_ratio: 0.05,
            ..harvester()
        };
        assert_eq!(harvest(&batch, &base(), &cfg, 10, true).value, 0.0);
    }

    #[test]
    fn more_evidence_never_lowers_a_score() {
        let cfg = HarvestConfig::default();
        let b = base();
        let s0 = harvest(&harvester(), &b, &cfg, 10, true).value;
        type Tweak = Box<dyn Fn(&mut Features)>;
        let tweaks: Vec<Tweak> = vec![
            Box::new(|f| f.output_tokens_per_second *= 2.0),
            Box::new(|f| f.long_share = 1.0),
            Box::new(|f| f.response_request_ratio *= 2.0),
            Box::new(|f| f.think_p50_seconds = Some(0.01)),
            Box::new(|f| f.duty_cycle = Some(1.0)),
            Box::new(|f| f.interarrival_cv = Some(0.01)),
            Box::new(|f| f.throttled_share = 0.5),
        ];
        // From a middling entity, each step towards harvesting must not lower the score.
        let mut f = Features {
            output_tokens_per_second: 30.0,
            long_share: 0.4,
            response_request_ratio: 5.0,
            think_p50_seconds: Some(3.0),
            duty_cycle: Some(0.6),
            interarrival_cv: Some(0.6),
            ..harvester()
        };
        let mut last = harvest(&f, &b, &cfg, 10, true).value;
        for t in &tweaks {
            t(&mut f);
            let now = harvest(&f, &b, &cfg, 10, true).value;
            assert!(now >= last, "{now} < {last} after a tweak");
            last = now;
        }
        assert!(last >= s0 - 1e-12);
        // Relay: each signal alone raises it, together more.
        let rc = RelayConfig::default();
        let mut g = Features {
            requests: 50,
            ..Features::default()
        };
        let hc = HarvestConfig::default();
        let r0 = relay(&g, &b, 0, &rc, &hc, true).value;
        g.rtt_samples = 10;
        g.rtt_gap_low_seconds = Some(0.128);
        let r1 = relay(&g, &b, 0, &rc, &hc, true).value;
        let r2 = relay(&g, &b, 3, &rc, &hc, true).value;
        g.claimed_origin_share = 1.0;
        let r3 = relay(&g, &b, 3, &rc, &hc, true).value;
        assert!(
            r0 == 0.0 && r1 > 0.9 && r2 >= r1 && r3 >= r2,
            "{r0} {r1} {r2} {r3}"
        );
    }

    #[test]
    fn below_the_minimum_requests_nothing_scores() {
        let f = Features {
            requests: 3,
            ..harvester()
        };
        assert_eq!(
            harvest(&f, &base(), &HarvestConfig::default(), 10, true).value,
            0.0
        );
    }

    #[test]
    fn a_nearby_direct_client_has_no_rtt_gap_evidence() {
        let f = Features {
            requests: 50,
            rtt_samples: 20,
            rtt_gap_low_seconds: Some(0.004),
            ..Features::default()
        };
        assert_eq!(
            relay(
                &f,
                &base(),
                0,
                &RelayConfig::default(),
                &HarvestConfig::default(),
                true
            )
            .value,
            0.0
        );
    }
}
