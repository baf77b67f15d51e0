//! The detector's configuration: windows, table bounds, thresholds, weights and the allow-list.
//! Read from a TOML file (`--detect-config`); every field has a default, documented in
//! README.md ("Detection"), and unknown fields are an error so a typo is not silently ignored.

use std::{net::IpAddr, path::Path};

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Sliding windows features are computed over, seconds (each a ring of `buckets` buckets).
    pub windows_seconds: Vec<u64>,
    /// Buckets per window: the window slides by window/buckets.
    pub buckets: usize,
    /// Activity slots (for duty cycle and key synchrony), seconds each; 64 slots are kept.
    pub slot_seconds: u64,
    /// Scores are evaluated at most this often (record time), seconds.
    pub eval_interval_seconds: f64,
    /// Tracked entities of each type at most; the least recently seen is evicted beyond it.
    pub max_entities_per_type: usize,
    /// Entities exported as Prometheus series per score kind and by volume (the rest fold
    /// into `entity="_other"`).
    pub top_k: usize,
    /// An HTTP exchange waits this long (record time) for the TLS/TCP record of the same
    /// request from an ingress node, and matches one within `join_tolerance_seconds`.
    pub join_delay_seconds: f64,
    pub join_tolerance_seconds: f64,
    /// A raised detection clears only after its score stayed below the clear level this long
    /// (seconds of record time).
    pub hold_seconds: f64,
    /// Exchanges to these server ports are not scored: monitoring, not inference (Siphon's
    /// own metrics port, Prometheus, node_exporter). Add `--listen`'s port if you change it.
    pub ignore_server_ports: Vec<u16>,
    /// Address prefix lengths of the `prefix` entity.
    pub prefix_v4: u8,
    pub prefix_v6: u8,
    pub harvest: HarvestConfig,
    pub relay: RelayConfig,
    pub cluster: ClusterConfig,
    pub baseline: BaselineConfig,
    pub allow: Vec<AllowEntry>,
}

/// Evidence levels: a feature gives no evidence at `lo` and full evidence at `hi` (linear in
/// between; on a log scale for rates and sizes).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HarvestConfig {
    /// Raise at this score, clear below `clear`.
    pub raise: f64,
    pub clear: f64,
    /// Requests an entity needs in a window before that window can score.
    pub min_requests: u64,
    /// Output rate (≈tokens/s) that starts counting as bulk: the larger of this floor and
    /// `volume_vs_baseline` times the cluster's typical key.
    pub volume_floor_tokens_per_second: f64,
    pub volume_vs_baseline: f64,
    /// Full volume evidence at this multiple of the threshold.
    pub volume_full_multiple: f64,
    /// A response is "long" at or above this many (estimated) output tokens, or the cluster's
    /// p95 if higher. Share of long responses: evidence from `long_share_lo` to `long_share_hi`.
    pub long_output_tokens: f64,
    pub long_share_lo: f64,
    pub long_share_hi: f64,
    /// Think time (a key's previous response end to its next request), p50, seconds: full
    /// evidence at or below `think_full_seconds`, none at or above `think_none_seconds` (or
    /// the cluster's p50 / `think_vs_baseline` if lower).
    pub think_full_seconds: f64,
    pub think_none_seconds: f64,
    pub think_vs_baseline: f64,
    /// Duty cycle (share of activity slots used since first seen).
    pub duty_lo: f64,
    pub duty_hi: f64,
    /// Response/request byte ratio.
    pub ratio_lo: f64,
    pub ratio_hi: f64,
    /// Inter-arrival coefficient of variation: full evidence at or below `cv_full`.
    pub cv_full: f64,
    pub cv_none: f64,
    /// Share of 429 answers.
    pub throttled_lo: f64,
    pub throttled_hi: f64,
    /// Weights of the shape signals (noisy-OR); the score is volume × shape.
    pub weight_long: f64,
    pub weight_think: f64,
    pub weight_duty: f64,
    pub weight_ratio: f64,
    pub weight_regular: f64,
    pub weight_throttled: f64,
    /// Bytes per output token, to put streamed and whole responses on one scale: SSE events
    /// are counted by the server's pushes (≈one per token); whole bodies by bytes.
    pub bytes_per_token: f64,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    pub raise: f64,
    pub clear: f64,
    pub min_requests: u64,
    /// Connections with both round trips an entity needs before the gap (their lowest) counts:
    /// enough that a client starved of CPU on some handshakes has one it answered in time.
    pub min_rtt_connections: u64,
    /// TLS round trip minus TCP round trip (median over connections), seconds.
    pub rtt_gap_lo_seconds: f64,
    pub rtt_gap_hi_seconds: f64,
    /// Keys used in lockstep from one address (a pool): evidence from 2 keys, full at this many.
    pub pooled_keys_full: f64,
    /// Share of requests whose forwarding header names origins the client itself supplied.
    pub claimed_origin_lo: f64,
    pub claimed_origin_hi: f64,
    /// Share of requests whose User-Agent claims a browser over a non-browser TLS stack.
    pub ua_mismatch_lo: f64,
    pub ua_mismatch_hi: f64,
    pub weight_rtt_gap: f64,
    pub weight_pooled: f64,
    pub weight_claimed_origin: f64,
    pub weight_ua_mismatch: f64,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Keys in lockstep over one software stack and prefix form a cluster from this many.
    pub min_keys: usize,
    /// Two keys are in lockstep when their activity slots overlap this much (Jaccard)...
    pub min_slot_jaccard: f64,
    /// ...over at least this many busy periods of 3 activity slots each...
    pub min_active_slots: u32,
    /// ...and their request rates and mean output sizes are within these factors.
    pub max_rate_factor: f64,
    pub max_output_factor: f64,
    /// Keys compared per group (the busiest), bounding the pairwise work.
    pub max_keys_per_group: usize,
    /// A pool or cluster seen once is remembered this long (seconds of record time) before
    /// its evidence lapses: one refresh that misses it does not clear a detection.
    pub memory_seconds: f64,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BaselineConfig {
    /// Keys need this many requests in the middle window to join the baseline.
    pub min_requests: u64,
    /// Quantile of the keys' values taken as "typical".
    pub quantile: f64,
    /// Recomputed at most this often, seconds of record time (also the cluster pass).
    pub refresh_seconds: f64,
}

/// Known heavy users: scored and exported, never raised.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AllowEntry {
    /// An API-key hash as Siphon exports it.
    #[serde(default)]
    pub api_key_hash: Option<String>,
    /// An address or a prefix (`10.1.2.0/24`).
    #[serde(default)]
    pub client: Option<String>,
    /// Why (shown in logs and events).
    pub reason: String,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            windows_seconds: vec![60, 600, 3600],
            buckets: 6,
            slot_seconds: 10,
            eval_interval_seconds: 1.0,
            max_entities_per_type: 10_000,
            top_k: 100,
            join_delay_seconds: 2.0,
            join_tolerance_seconds: 0.5,
            hold_seconds: 300.0,
            ignore_server_ports: vec![9947, 9090, 9100],
            prefix_v4: 24,
            prefix_v6: 48,
            harvest: HarvestConfig::default(),
            relay: RelayConfig::default(),
            cluster: ClusterConfig::default(),
            baseline: BaselineConfig::default(),
            allow: Vec::new(),
        }
    }
}

impl Default for HarvestConfig {
    fn default() -> HarvestConfig {
        // Floors from the Azure conversation trace (generated tokens p50 129, p90 424, p99
        // 601): a person reading answers produces well under 5 tokens/s on average over a
        // minute; harvesting at the output cap runs at tens to hundreds.
        HarvestConfig {
            raise: 0.7,
            clear: 0.4,
            min_requests: 8,
            volume_floor_tokens_per_second: 15.0,
            volume_vs_baseline: 4.0,
            volume_full_multiple: 4.0,
            long_output_tokens: 500.0,
            long_share_lo: 0.3,
            long_share_hi: 0.8,
            think_full_seconds: 0.5,
            think_none_seconds: 5.0,
            think_vs_baseline: 2.0,
            duty_lo: 0.5,
            duty_hi: 0.9,
            // People in conversation send their history back: answers run 1-6× the request.
            ratio_lo: 8.0,
            ratio_hi: 50.0,
            cv_full: 0.1,
            cv_none: 0.5,
            throttled_lo: 0.05,
            throttled_hi: 0.3,
            weight_long: 0.8,
            weight_think: 0.7,
            weight_duty: 0.6,
            weight_ratio: 0.5,
            weight_regular: 0.3,
            weight_throttled: 0.5,
            bytes_per_token: 4.0,
        }
    }
}

impl Default for RelayConfig {
    fn default() -> RelayConfig {
        RelayConfig {
            raise: 0.7,
            clear: 0.4,
            min_requests: 5,
            min_rtt_connections: 5,
            rtt_gap_lo_seconds: 0.03,
            rtt_gap_hi_seconds: 0.1,
            pooled_keys_full: 3.0,
            claimed_origin_lo: 0.2,
            claimed_origin_hi: 0.8,
            ua_mismatch_lo: 0.2,
            ua_mismatch_hi: 0.8,
            weight_rtt_gap: 0.95,
            weight_pooled: 0.9,
            weight_claimed_origin: 0.5,
            weight_ua_mismatch: 0.5,
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> ClusterConfig {
        ClusterConfig {
            min_keys: 3,
            min_slot_jaccard: 0.8,
            min_active_slots: 3,
            max_rate_factor: 1.4,
            max_output_factor: 2.0,
            max_keys_per_group: 256,
            memory_seconds: 120.0,
        }
    }
}

impl Default for BaselineConfig {
    fn default() -> BaselineConfig {
        BaselineConfig {
            min_requests: 3,
            quantile: 0.5,
            refresh_seconds: 30.0,
        }
    }
}

impl Config {
    pub fn from_file(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        Config::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let cfg: Config = toml::from_str(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        let mut errs = Vec::new();
        if self.windows_seconds.is_empty() || self.windows_seconds.len() > 4 {
            errs.push("windows_seconds: give 1 to 4 windows".to_owned());
        }
        if self
            .windows_seconds
            .iter()
            .any(|&w| w == 0 || w > 7 * 86_400)
        {
            errs.push("windows_seconds: each between 1 s and 7 days".to_owned());
        }
        if !(1..=64).contains(&self.buckets) {
            errs.push("buckets: 1 to 64".to_owned());
        }
        // Times are nanoseconds in a u64: a slot (or refresh) of centuries would overflow them.
        if !(1..=86_400).contains(&self.slot_seconds) {
            errs.push("slot_seconds: 1 to 86400".to_owned());
        }
        if !(0.0..=86_400.0).contains(&self.baseline.refresh_seconds) {
            errs.push("baseline.refresh_seconds: 0 to 86400".to_owned());
        }
        if !(self.eval_interval_seconds > 0.0 && self.eval_interval_seconds <= 3600.0) {
            errs.push("eval_interval_seconds: above 0, at most 3600".to_owned());
        }
        if !(16..=10_000_000).contains(&self.max_entities_per_type) {
            errs.push("max_entities_per_type: 16 to 10,000,000".to_owned());
        }
        if !(1..=10_000).contains(&self.top_k) {
            errs.push("top_k: 1 to 10,000".to_owned());
        }
        if !(0.0..=60.0).contains(&self.join_delay_seconds)
            || !(0.0..=60.0).contains(&self.join_tolerance_seconds)
        {
            errs.push("join_delay_seconds, join_tolerance_seconds: 0 to 60".to_owned());
        }
        if !(0.0..=86_400.0).contains(&self.hold_seconds) {
            errs.push("hold_seconds: 0 to 86400".to_owned());
        }
        if self.prefix_v4 > 32 || self.prefix_v6 > 128 {
            errs.push("prefix_v4 at most 32, prefix_v6 at most 128".to_owned());
        }
        for (name, raise, clear) in [
            ("harvest", self.harvest.raise, self.harvest.clear),
            ("relay", self.relay.raise, self.relay.clear),
        ] {
            if !(0.0 < clear && clear < raise && raise <= 1.0) {
                errs.push(format!("{name}: need 0 < clear < raise <= 1"));
            }
        }
        if !(self.baseline.quantile > 0.0 && self.baseline.quantile < 1.0) {
            errs.push("baseline.quantile: strictly between 0 and 1".to_owned());
        }
        if self.harvest.bytes_per_token <= 0.0 {
            errs.push("harvest.bytes_per_token: above 0".to_owned());
        }
        if self.cluster.min_keys < 2 {
            errs.push("cluster.min_keys: at least 2".to_owned());
        }
        for a in &self.allow {
            if a.api_key_hash.is_none() && a.client.is_none() {
                errs.push(format!(
                    "allow entry {:?}: give api_key_hash or client",
                    a.reason
                ));
            }
            if let Some(c) = &a.client {
                if parse_prefix(c).is_none() {
                    errs.push(format!("allow entry {:?}: bad address {c:?}", a.reason));
                }
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("invalid detector configuration: {}", errs.join("; "))
        }
    }

    /// Raise and clear levels of a score kind.
    pub fn levels(&self, kind: super::events::Kind) -> (f64, f64) {
        match kind {
            super::events::Kind::Harvest => (self.harvest.raise, self.harvest.clear),
            super::events::Kind::Relay => (self.relay.raise, self.relay.clear),
        }
    }

    /// The window the baseline, clusters and exported rates use: the second one (10 minutes
    /// by default), or the only one.
    pub fn middle_window(&self) -> usize {
        self.windows_seconds.len().min(2).saturating_sub(1)
    }
}

/// `ADDR` or `ADDR/LEN`.
pub fn parse_prefix(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l.parse::<u8>().ok()?)),
        None => (s, None),
    };
    let ip: IpAddr = addr.trim().parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = len.unwrap_or(max);
    (len <= max).then_some((ip, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_an_empty_file_gives_them() {
        Config::default().validate().unwrap();
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn the_shipped_file_states_the_defaults() {
        let shipped = include_str!("../../../deploy/kubernetes/config/detect.toml");
        assert_eq!(Config::parse(shipped).unwrap(), Config::default());
    }

    #[test]
    fn partial_files_override_only_what_they_name() {
        let c = Config::parse("top_k = 7\n[harvest]\nraise = 0.8\n").unwrap();
        assert_eq!(c.top_k, 7);
        assert_eq!(c.harvest.raise, 0.8);
        assert_eq!(c.harvest.clear, HarvestConfig::default().clear);
    }

    #[test]
    fn mistakes_are_errors_that_name_the_field() {
        for (text, needle) in [
            ("topk = 3", "topk"),
            ("top_k = 0", "top_k"),
            ("[harvest]\nraise = 0.3\nclear = 0.5", "harvest"),
            ("windows_seconds = []", "windows_seconds"),
            ("[[allow]]\nreason = \"x\"", "api_key_hash or client"),
            (
                "[[allow]]\nclient = \"10.0.0.0/99\"\nreason = \"x\"",
                "bad address",
            ),
            ("top_k = \"many\"", "top_k"),
            // Fuzz findings (detect_config target): both overflowed nanosecond arithmetic.
            ("slot_seconds = 18446744073709551", "slot_seconds"),
            ("[baseline]\nrefresh_seconds = 1e300", "refresh_seconds"),
            ("[baseline]\nrefresh_seconds = nan", "refresh_seconds"),
        ] {
            let e = Config::parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?} gave {e:?}");
        }
    }

    #[test]
    fn prefixes_parse() {
        assert_eq!(
            parse_prefix("10.1.2.0/24"),
            Some(("10.1.2.0".parse().unwrap(), 24))
        );
        assert_eq!(parse_prefix("::1"), Some(("::1".parse().unwrap(), 128)));
        assert_eq!(parse_prefix("10.0.0.1/33"), None);
        assert_eq!(parse_prefix("nope"), None);
    }
}
