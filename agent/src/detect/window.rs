//! Sliding windows: a ring of buckets per window, each bucket the sums of what happened in
//! its slice of time. Adding is O(1); reading a window sums its buckets. Memory per window is
//! fixed (`buckets` × [`Bucket`]), whatever the traffic.

/// Log₂ bins of a duration in seconds: bin 0 is below 1/128 s, bin i covers
/// [2^(i-8), 2^(i-7)) s, the last bin everything from 2^(THINK_BINS-9) s (128 s) up.
pub const THINK_BINS: usize = 16;
/// Log₂ bins of a round-trip gap: bin 0 below 2 ms, bin i [2^i, 2^(i+1)) ms, the last from
/// 256 ms up.
pub const GAP_BINS: usize = 9;

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Bucket {
    pub requests: u32,
    /// Responses at or above the long-output threshold.
    pub long: u32,
    /// 429 answers.
    pub throttled: u32,
    /// Requests whose forwarding header carried origins the client supplied.
    pub claimed: u32,
    /// Requests whose User-Agent contradicts the TLS stack.
    pub ua_mismatch: u32,
    /// Requests with both TCP and TLS round trips of the client's connection.
    pub rtt_samples: u32,
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// Sum of request-start → response-end: busy time, for concurrency.
    pub busy_ns: u64,
    pub output_tokens: f32,
    /// Inter-arrival gaps between the entity's request starts.
    pub gap_n: u32,
    pub gap_sum: f32,
    pub gap_sumsq: f32,
    pub think: [u16; THINK_BINS],
    pub rtt_gap: [u16; GAP_BINS],
    /// Requests on connections from the client itself, and the connections they opened (the
    /// first exchange of each): requests per connection.
    pub direct_requests: u32,
    pub new_connections: u32,
    /// Gaps from a 429 answer to the same client's next request.
    pub retry_n: u32,
    pub retry_sum: f32,
}

impl Bucket {
    pub fn merge(&mut self, o: &Bucket) {
        self.requests = self.requests.saturating_add(o.requests);
        self.long = self.long.saturating_add(o.long);
        self.throttled = self.throttled.saturating_add(o.throttled);
        self.claimed = self.claimed.saturating_add(o.claimed);
        self.ua_mismatch = self.ua_mismatch.saturating_add(o.ua_mismatch);
        self.rtt_samples = self.rtt_samples.saturating_add(o.rtt_samples);
        self.request_bytes = self.request_bytes.saturating_add(o.request_bytes);
        self.response_bytes = self.response_bytes.saturating_add(o.response_bytes);
        self.busy_ns = self.busy_ns.saturating_add(o.busy_ns);
        self.output_tokens += o.output_tokens;
        self.gap_n = self.gap_n.saturating_add(o.gap_n);
        self.gap_sum += o.gap_sum;
        self.gap_sumsq += o.gap_sumsq;
        for (a, b) in self.think.iter_mut().zip(o.think) {
            *a = a.saturating_add(b);
        }
        for (a, b) in self.rtt_gap.iter_mut().zip(o.rtt_gap) {
            *a = a.saturating_add(b);
        }
        self.direct_requests = self.direct_requests.saturating_add(o.direct_requests);
        self.new_connections = self.new_connections.saturating_add(o.new_connections);
        self.retry_n = self.retry_n.saturating_add(o.retry_n);
        self.retry_sum += o.retry_sum;
    }

    pub fn add_think(&mut self, seconds: f64) {
        let i = think_bin(seconds);
        self.think[i] = self.think[i].saturating_add(1);
    }

    pub fn add_rtt_gap(&mut self, seconds: f64) {
        let i = gap_bin(seconds);
        self.rtt_gap[i] = self.rtt_gap[i].saturating_add(1);
        self.rtt_samples = self.rtt_samples.saturating_add(1);
    }

    pub fn add_gap(&mut self, seconds: f64) {
        self.gap_n = self.gap_n.saturating_add(1);
        self.gap_sum += seconds as f32;
        self.gap_sumsq += (seconds * seconds) as f32;
    }
}

fn think_bin(seconds: f64) -> usize {
    if seconds.is_nan() || seconds < 1.0 / 128.0 {
        return 0;
    }
    ((seconds.log2() + 8.0).floor() as usize).clamp(1, THINK_BINS - 1)
}

fn gap_bin(seconds: f64) -> usize {
    let ms = seconds * 1000.0;
    if ms.is_nan() || ms < 2.0 {
        return 0;
    }
    (ms.log2().floor() as usize).clamp(1, GAP_BINS - 1)
}

/// Lower edge of a think-time bin, seconds (the value reported for a quantile falling in it).
pub fn think_bin_floor(i: usize) -> f64 {
    if i == 0 {
        0.0
    } else {
        2f64.powi(i as i32 - 8)
    }
}

/// Lower edge of a round-trip-gap bin, seconds.
pub fn gap_bin_floor(i: usize) -> f64 {
    if i == 0 {
        0.0
    } else {
        2f64.powi(i as i32) / 1000.0
    }
}

/// The bin holding quantile `q` of a histogram, `None` when it is empty.
pub fn quantile_bin(hist: &[u16], q: f64) -> Option<usize> {
    let total: u64 = hist.iter().map(|&c| c as u64).sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0u64;
    for (i, &c) in hist.iter().enumerate() {
        seen += c as u64;
        if seen >= rank {
            return Some(i);
        }
    }
    Some(hist.len() - 1)
}

/// An empty bucket, to compare against without building one.
const EMPTY: Bucket = Bucket {
    requests: 0,
    long: 0,
    throttled: 0,
    claimed: 0,
    ua_mismatch: 0,
    rtt_samples: 0,
    request_bytes: 0,
    response_bytes: 0,
    busy_ns: 0,
    output_tokens: 0.0,
    gap_n: 0,
    gap_sum: 0.0,
    gap_sumsq: 0.0,
    think: [0; THINK_BINS],
    rtt_gap: [0; GAP_BINS],
    direct_requests: 0,
    new_connections: 0,
    retry_n: 0,
    retry_sum: 0.0,
};

/// One window: `buckets.len()` buckets of `bucket_ns` each; `newest` is the absolute index
/// (time / bucket_ns) of the newest bucket.
#[derive(Clone, Debug)]
pub struct Window {
    bucket_ns: u64,
    newest: u64,
    buckets: Box<[Bucket]>,
}

impl Window {
    pub fn new(window_ns: u64, buckets: usize) -> Window {
        let n = buckets.max(1);
        Window {
            bucket_ns: (window_ns / n as u64).max(1),
            newest: 0,
            buckets: vec![Bucket::default(); n].into_boxed_slice(),
        }
    }

    pub fn heap_bytes(&self) -> usize {
        self.buckets.len() * std::mem::size_of::<Bucket>()
    }

    pub fn len_ns(&self) -> u64 {
        self.bucket_ns * self.buckets.len() as u64
    }

    fn slot(&self, index: u64) -> usize {
        (index % self.buckets.len() as u64) as usize
    }

    fn advance(&mut self, index: u64) {
        if index <= self.newest {
            return;
        }
        let n = self.buckets.len() as u64;
        let clear = (index - self.newest).min(n);
        for k in 0..clear {
            let s = self.slot(index - k);
            self.buckets[s] = Bucket::default();
        }
        self.newest = index;
    }

    /// The bucket for time `t_ns`, moving the window forward if needed; `None` when `t_ns`
    /// is older than the window (a late record): the caller drops it from this window only.
    pub fn bucket_at(&mut self, t_ns: u64) -> Option<&mut Bucket> {
        let index = t_ns / self.bucket_ns;
        self.advance(index);
        if index + (self.buckets.len() as u64) <= self.newest {
            return None;
        }
        let s = self.slot(index);
        Some(&mut self.buckets[s])
    }

    /// Sum of the window's buckets as of `now`: the current bucket and the ones before it,
    /// `buckets` in all.
    pub fn sum(&self, now_ns: u64) -> Bucket {
        let now_index = now_ns / self.bucket_ns;
        let n = self.buckets.len() as u64;
        let mut total = Bucket::default();
        for k in 0..n {
            let Some(index) = now_index.checked_sub(k) else {
                break;
            };
            if index > self.newest || index + n <= self.newest {
                continue;
            }
            let b = &self.buckets[self.slot(index)];
            // Most buckets of a sparse entity are empty; merging one would add zeros (x + 0.0
            // is x for these non-negative sums), so skipping it leaves the sum bit-identical.
            if b.requests != 0 || *b != EMPTY {
                total.merge(b);
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn sums_what_falls_inside_and_forgets_what_slides_out() {
        let mut w = Window::new(60 * S, 6);
        for t in [1, 5, 15, 59] {
            w.bucket_at(t * S).unwrap().requests += 1;
        }
        assert_eq!(w.sum(59 * S).requests, 4);
        // At 75 s the window is the six buckets [20, 80): only the request at 59 s is left.
        assert_eq!(w.sum(75 * S).requests, 1);
        // At 65 s it is [10, 70): 15 s and 59 s.
        assert_eq!(w.sum(65 * S).requests, 2);
        // A new record at 125 s clears everything older than 70 s.
        w.bucket_at(125 * S).unwrap().requests += 1;
        assert_eq!(w.sum(125 * S).requests, 1);
        // Far in the future nothing is left.
        assert_eq!(w.sum(1000 * S).requests, 0);
    }

    #[test]
    fn late_records_outside_the_window_are_refused() {
        let mut w = Window::new(60 * S, 6);
        w.bucket_at(200 * S).unwrap().requests += 1;
        assert!(w.bucket_at(100 * S).is_none());
        assert!(w.bucket_at(150 * S).is_some());
    }

    #[test]
    fn think_bins_and_quantiles() {
        let mut b = Bucket::default();
        for s in [0.001, 0.3, 0.3, 0.3, 12.0] {
            b.add_think(s);
        }
        assert_eq!(think_bin(0.001), 0);
        assert_eq!(think_bin(0.3), 6); // [0.25, 0.5)
        assert_eq!(think_bin(12.0), 11); // [8, 16)
        assert_eq!(think_bin(1e9), THINK_BINS - 1);
        assert_eq!(think_bin(f64::NAN), 0);
        let p50 = quantile_bin(&b.think, 0.5).unwrap();
        assert_eq!(think_bin_floor(p50), 0.25);
        assert_eq!(quantile_bin(&b.think, 1.0), Some(11));
        assert_eq!(quantile_bin(&[0u16; 4], 0.5), None);
    }

    #[test]
    fn gap_bins() {
        assert_eq!(gap_bin(0.001), 0);
        assert_eq!(gap_bin(0.003), 1);
        assert_eq!(gap_bin(0.24), 7); // [128, 256) ms
        assert_eq!(gap_bin(5.0), GAP_BINS - 1);
        assert_eq!(gap_bin_floor(7), 0.128);
    }
}
