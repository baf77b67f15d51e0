//! The cluster's own typical key: a quantile (the median by default) of per-key features over
//! the keys active in the middle window. Raised keys are left out, and a cluster of keys in
//! lockstep counts once, so that attackers cannot move the baseline by being many.

use std::collections::BTreeMap;

use super::score::Baseline;

/// Addresses with round trips needed before their gaps make a baseline.
pub const MIN_RTT_ADDRESSES: usize = 5;

/// One key's contribution.
pub struct KeySample<'a> {
    pub cluster: Option<&'a str>,
    pub output_tokens_per_second: f64,
    pub output_tokens_per_response: f64,
    pub think_p50_seconds: Option<f64>,
}

/// The value at rank ⌊(n−1)·q⌋ (the lower one of an even-sized median): a few outliers on the
/// high side cannot become the baseline.
pub fn quantile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let i = ((values.len() - 1) as f64 * q).floor() as usize;
    values.get(i.min(values.len() - 1)).copied()
}

pub fn compute(samples: &[KeySample<'_>], rtt_gaps: &mut [f64], q: f64) -> Baseline {
    // Members of one cluster fold into their median first.
    let mut singles: Vec<(f64, f64, Option<f64>)> = Vec::new();
    let mut clustered: BTreeMap<&str, Vec<&KeySample<'_>>> = BTreeMap::new();
    for s in samples {
        match s.cluster {
            Some(c) => clustered.entry(c).or_default().push(s),
            None => singles.push((
                s.output_tokens_per_second,
                s.output_tokens_per_response,
                s.think_p50_seconds,
            )),
        }
    }
    for members in clustered.values() {
        let med = |f: &dyn Fn(&KeySample<'_>) -> Option<f64>| {
            let mut v: Vec<f64> = members.iter().filter_map(|m| f(m)).collect();
            quantile(&mut v, 0.5)
        };
        singles.push((
            med(&|m| Some(m.output_tokens_per_second)).unwrap_or(0.0),
            med(&|m| Some(m.output_tokens_per_response)).unwrap_or(0.0),
            med(&|m| m.think_p50_seconds),
        ));
    }
    let mut tps: Vec<f64> = singles.iter().map(|s| s.0).collect();
    let mut tpr: Vec<f64> = singles.iter().map(|s| s.1).collect();
    let mut think: Vec<f64> = singles.iter().filter_map(|s| s.2).collect();
    Baseline {
        keys: singles.len(),
        output_tokens_per_second: quantile(&mut tps, q).unwrap_or(0.0),
        output_tokens_per_response: quantile(&mut tpr, q).unwrap_or(0.0),
        think_p50_seconds: quantile(&mut think, q),
        rtt_gap_seconds: if rtt_gaps.len() >= MIN_RTT_ADDRESSES {
            quantile(rtt_gaps, q)
        } else {
            None
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(c: Option<&str>, tps: f64) -> KeySample<'_> {
        KeySample {
            cluster: c,
            output_tokens_per_second: tps,
            output_tokens_per_response: tps * 10.0,
            think_p50_seconds: Some(tps),
        }
    }

    #[test]
    fn a_many_keyed_cluster_counts_once() {
        // Five people at 1..5 tokens/s, and a 16-key hydra at 200.
        let mut v: Vec<KeySample> = (1..=5).map(|i| s(None, i as f64)).collect();
        v.extend((0..16).map(|_| s(Some("c-1"), 200.0)));
        let b = compute(&v, &mut [], 0.5);
        assert_eq!(b.keys, 6);
        // Sorted 1,2,3,4,5,200: index ⌊2.5⌋ = 2 → 3.
        assert_eq!(b.output_tokens_per_second, 3.0);
        assert_eq!(b.output_tokens_per_response, 30.0);
        assert_eq!(b.rtt_gap_seconds, None);
    }

    #[test]
    fn quantiles() {
        assert_eq!(quantile(&mut [3.0, 1.0, 2.0], 0.5), Some(2.0));
        assert_eq!(quantile(&mut [], 0.5), None);
        assert_eq!(quantile(&mut [1.0, 2.0, 3.0, 4.0, 5.0], 0.9), Some(4.0));
        assert_eq!(quantile(&mut [1.0, 9.0], 0.5), Some(1.0));
    }
}
