//! Features of one entity over one window, from the window's bucket sums and the entity's
//! other state. Pure functions of their inputs, so each is tested against hand-computed values.

use super::{
    entity::EntityState,
    window::{gap_bin_floor, quantile_bin, think_bin_floor, Bucket},
};

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Features {
    /// The window's length, or the time since the entity was first seen if shorter.
    pub span_seconds: f64,
    pub requests: u64,
    pub requests_per_second: f64,
    /// Mean requests in flight (busy time / span).
    pub concurrency: f64,
    pub response_bytes_per_second: f64,
    /// Estimated output tokens per second and per response.
    pub output_tokens_per_second: f64,
    pub output_tokens_per_response: f64,
    pub response_request_ratio: f64,
    /// Share of responses at or above the long-output threshold.
    pub long_share: f64,
    pub think_p50_seconds: Option<f64>,
    pub think_p90_seconds: Option<f64>,
    pub interarrival_cv: Option<f64>,
    /// Share of activity slots used since first seen (None until enough slots have passed).
    pub duty_cycle: Option<f64>,
    pub throttled_share: f64,
    pub claimed_origin_share: f64,
    pub ua_mismatch_share: f64,
    pub rtt_samples: u64,
    /// TLS minus TCP round trip, the lowest over the connections (lower bin edge), seconds. The
    /// floor: a relay adds its far round trip to every handshake, a busy client its CPU time to
    /// some, and rarely to all of them.
    pub rtt_gap_low_seconds: Option<f64>,
    /// Requests per connection, over connections from the client itself.
    pub requests_per_connection: Option<f64>,
    /// Mean gap from a 429 answer to the client's next request, seconds.
    pub retry_after_429_seconds: Option<f64>,
}

/// The quantile of TLS-minus-TCP gaps taken as an entity's gap: the lowest. A client starved of
/// CPU when the server's TLS flight reaches it (a saturated host; in the lab, Python clients
/// running many threads under one interpreter lock) answers late on most handshakes, with gaps
/// spread over an order of magnitude (e.g. 59, 108, 152 and 280 ms), where a relay's gaps sit
/// tightly above its path (227-260 ms over 48 connections): the 20th percentile raised such a
/// client as a relay; the floor over `min_rtt_connections` does not.
pub const RTT_GAP_QUANTILE: f64 = 0.0;

/// Minimum samples for a quantile or a coefficient of variation to be reported.
pub const MIN_SAMPLES: u64 = 5;
/// Activity slots that must have passed before a duty cycle is reported.
pub const MIN_DUTY_SLOTS: u64 = 6;

/// The span a window's rates are divided by: the window, or less for a young entity, but never
/// below `floor_seconds` (a burst in the first seconds is not a rate).
pub fn span_seconds(window_s: f64, first_seen_ns: u64, now_ns: u64, floor_seconds: f64) -> f64 {
    let age = agent_common::ns_to_secs(now_ns.saturating_sub(first_seen_ns));
    age.min(window_s).max(floor_seconds.min(window_s))
}

pub fn compute(b: &Bucket, span_s: f64, duty: Option<f64>) -> Features {
    let n = b.requests as u64;
    let per = |x: f64| if n > 0 { x / n as f64 } else { 0.0 };
    // Summed once for both quantiles (it was summed per quantile, a hot spot in profiles).
    let think_total: u64 = b.think.iter().map(|&c| c as u64).sum();
    let think_p = |q| {
        (think_total >= MIN_SAMPLES)
            .then(|| quantile_bin(&b.think, q).map(think_bin_floor))
            .flatten()
    };
    let cv = (b.gap_n as u64 >= MIN_SAMPLES).then(|| {
        let m = b.gap_sum as f64 / b.gap_n as f64;
        let var = (b.gap_sumsq as f64 / b.gap_n as f64 - m * m).max(0.0);
        if m > 0.0 {
            var.sqrt() / m
        } else {
            0.0
        }
    });
    Features {
        span_seconds: span_s,
        requests: n,
        requests_per_second: n as f64 / span_s,
        concurrency: agent_common::ns_to_secs(b.busy_ns) / span_s,
        response_bytes_per_second: b.response_bytes as f64 / span_s,
        output_tokens_per_second: b.output_tokens as f64 / span_s,
        output_tokens_per_response: per(b.output_tokens as f64),
        response_request_ratio: b.response_bytes as f64 / (b.request_bytes.max(1)) as f64,
        long_share: per(b.long as f64),
        think_p50_seconds: think_p(0.5),
        think_p90_seconds: think_p(0.9),
        interarrival_cv: cv,
        duty_cycle: duty,
        throttled_share: per(b.throttled as f64),
        claimed_origin_share: per(b.claimed as f64),
        ua_mismatch_share: per(b.ua_mismatch as f64),
        rtt_samples: b.rtt_samples as u64,
        rtt_gap_low_seconds: (b.rtt_samples >= 1)
            .then(|| quantile_bin(&b.rtt_gap, RTT_GAP_QUANTILE).map(gap_bin_floor))
            .flatten(),
        requests_per_connection: (b.new_connections > 0)
            .then(|| b.direct_requests as f64 / b.new_connections as f64),
        retry_after_429_seconds: (b.retry_n > 0).then(|| b.retry_sum as f64 / b.retry_n as f64),
    }
}

/// Duty cycle: share of the activity slots since the entity was first seen (at most 64) in
/// which it had a request open.
pub fn duty_cycle(st: &EntityState, slot_ns: u64, now_ns: u64) -> Option<f64> {
    let now_slot = now_ns / slot_ns;
    let first_slot = st.first_seen_ns / slot_ns;
    let slots = (now_slot.saturating_sub(first_slot) + 1).min(64);
    if slots < MIN_DUTY_SLOTS {
        return None;
    }
    let bits = st.activity.at(now_slot);
    let mask = if slots >= 64 {
        u64::MAX
    } else {
        (1u64 << slots) - 1
    };
    Some((bits & mask).count_ones() as f64 / slots as f64)
}

/// Estimated output tokens of a response: a streamed (SSE) response pushes about one event
/// per token, so its pushed segments count them; a whole body is bytes / `bytes_per_token`.
/// Encrypted responses (no HTTP view) that arrive in many small pushes are taken as streams.
pub fn output_tokens(
    response_bytes: u64,
    chunks: u32,
    event_stream: Option<bool>,
    bytes_per_token: f64,
) -> f64 {
    let whole = response_bytes as f64 / bytes_per_token;
    let streamed = match event_stream {
        Some(s) => s,
        None => chunks >= 8 && response_bytes / (chunks as u64).max(1) < 1024,
    };
    if streamed {
        (chunks as f64).min(whole)
    } else {
        whole
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_shares_and_ratios_by_hand() {
        let mut b = Bucket {
            requests: 10,
            long: 4,
            throttled: 1,
            request_bytes: 1000,
            response_bytes: 50_000,
            busy_ns: 30_000_000_000,
            output_tokens: 2000.0,
            ..Bucket::default()
        };
        for s in [1.0, 1.0, 1.0, 1.0, 3.0] {
            b.add_gap(s);
        }
        for s in [0.1, 0.1, 0.1, 2.0, 2.0, 20.0] {
            b.add_think(s);
        }
        let f = compute(&b, 60.0, Some(0.5));
        assert_eq!(f.requests, 10);
        assert!((f.requests_per_second - 10.0 / 60.0).abs() < 1e-12);
        assert!((f.concurrency - 0.5).abs() < 1e-12);
        assert!((f.output_tokens_per_second - 2000.0 / 60.0).abs() < 1e-9);
        assert_eq!(f.output_tokens_per_response, 200.0);
        assert_eq!(f.response_request_ratio, 50.0);
        assert_eq!(f.long_share, 0.4);
        assert_eq!(f.throttled_share, 0.1);
        // Gaps 1,1,1,1,3: mean 1.4, variance 0.64, sd 0.8 → CV 0.8/1.4.
        assert!((f.interarrival_cv.unwrap() - 0.8 / 1.4).abs() < 1e-6);
        // Six think samples: the 3rd (p50) is 0.1 s → bin [1/16, 1/8).
        assert_eq!(f.think_p50_seconds, Some(0.0625));
        // p90: the 6th, 20 s → bin [16, 32).
        assert_eq!(f.think_p90_seconds, Some(16.0));
        assert_eq!(f.duty_cycle, Some(0.5));
        assert_eq!(f.requests_per_connection, None);
        let b2 = Bucket {
            requests: 6,
            direct_requests: 6,
            new_connections: 2,
            retry_n: 2,
            retry_sum: 3.0,
            ..Bucket::default()
        };
        let f2 = compute(&b2, 60.0, None);
        assert_eq!(f2.requests_per_connection, Some(3.0));
        assert_eq!(f2.retry_after_429_seconds, Some(1.5));
    }

    #[test]
    fn too_few_samples_give_no_quantile() {
        let mut b = Bucket {
            requests: 3,
            ..Bucket::default()
        };
        b.add_think(1.0);
        b.add_gap(1.0);
        let f = compute(&b, 60.0, None);
        assert_eq!(f.think_p50_seconds, None);
        assert_eq!(f.interarrival_cv, None);
        assert_eq!(f.rtt_gap_low_seconds, None);
    }

    #[test]
    fn span_is_the_window_or_the_age_with_a_floor() {
        let s = 1_000_000_000;
        assert_eq!(span_seconds(600.0, 0, 100 * s, 30.0), 100.0);
        assert_eq!(span_seconds(600.0, 0, 1000 * s, 30.0), 600.0);
        assert_eq!(span_seconds(600.0, 0, 5 * s, 30.0), 30.0);
        assert_eq!(span_seconds(10.0, 0, 5 * s, 30.0), 10.0);
    }

    #[test]
    fn duty_cycle_over_slots_since_first_seen() {
        let slot = 10_000_000_000u64;
        let mut st = EntityState::new(0, &[60], 6);
        assert_eq!(duty_cycle(&st, slot, 3 * slot), None);
        for s in [0, 2, 4, 6] {
            st.activity.mark(s);
        }
        // Slots 0..=7 have passed (8), 4 active.
        assert_eq!(duty_cycle(&st, slot, 7 * slot), Some(0.5));
    }

    #[test]
    fn output_token_estimates() {
        assert_eq!(output_tokens(4000, 1, Some(false), 4.0), 1000.0);
        assert_eq!(output_tokens(260_000, 1000, Some(true), 4.0), 1000.0);
        // Encrypted, many small pushes: a stream.
        assert_eq!(output_tokens(26_000, 100, None, 4.0), 100.0);
        // Encrypted, one big push: a body.
        assert_eq!(output_tokens(4000, 2, None, 4.0), 1000.0);
    }
}
