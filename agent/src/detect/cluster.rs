//! Keys in lockstep over shared infrastructure. Keys are grouped by what they run on (their
//! most used prefix and TLS stack, or User-Agent family where no TLS fingerprint is joined);
//! within a group two keys are linked when they were busy in the same activity slots and
//! their request rates and output sizes agree. Connected keys form a cluster (a "hydra" when
//! each key has its own address; a pool when several share one). Pairwise work is bounded by
//! `max_keys_per_group`.

use std::collections::{BTreeMap, HashMap};

use super::config::ClusterConfig;

/// What the cluster pass needs of one key.
#[derive(Clone, Debug)]
pub struct KeyView {
    pub key: Box<str>,
    /// (prefix, stack): keys are only compared within a group.
    pub group: (String, String),
    pub address: Option<String>,
    /// Activity slots as of now (bit 0 the current slot) and how many slots it has existed.
    pub slots: u64,
    pub age_slots: u64,
    pub requests_per_second: f64,
    /// The same rate per activity slot: how many requests one slot is expected to hold.
    pub requests_per_slot: f64,
    /// Requests behind that rate (for the counting-noise allowance).
    pub requests: u64,
    pub tokens_per_response: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Component {
    /// Member keys, sorted.
    pub keys: Vec<Box<str>>,
    /// Most keys of this component that share one address.
    pub pooled: u32,
    pub pooled_address: Option<String>,
}

fn within(a: f64, b: f64, factor: f64) -> bool {
    a > 0.0 && b > 0.0 && a.max(b) / a.min(b) <= factor
}

/// Activity compared over slots three times coarser: a key pacing one request per slot or so
/// leaves single idle slots that say nothing about lockstep.
const COARSEN: u32 = 3;
/// Keys slower than that are also compared over periods long enough for the slower key to be
/// expected to make this many requests in each: at one request per period, a key in strict
/// lockstep still leaves a third of its periods idle by chance (Poisson), and two such keys
/// agree on barely half of them, so a slow hydra (each key paced under the radar) would fall
/// apart into pieces however long it runs.
const EXPECTED_PER_PERIOD: f64 = 2.0;

fn coarse(bits: u64, period: u32) -> u64 {
    let mut out = 0u64;
    for i in 0..(64 / period) {
        if (bits >> (i * period)) & ((1 << period) - 1) != 0 {
            out |= 1 << i;
        }
    }
    out
}

/// Slots per period for the slower of two keys: long enough for `EXPECTED_PER_PERIOD`
/// requests, short enough that the keys' common age holds `min_active_slots` periods (so a
/// young pair is compared at once, more coarsely, rather than only once it is old enough), and
/// never shorter than `COARSEN`.
fn slow_period(a: &KeyView, b: &KeyView, cfg: &ClusterConfig) -> u32 {
    let per_slot = a.requests_per_slot.min(b.requests_per_slot);
    if per_slot.is_nan() || per_slot <= 0.0 {
        return COARSEN;
    }
    // At most 63 slots: the cast is lossless.
    let fit = a.age_slots.min(b.age_slots).min(63) / u64::from(cfg.min_active_slots.max(1));
    let longest = (fit as u32).max(COARSEN);
    // In range before the cast: the clamp bounds it to [COARSEN, longest].
    (EXPECTED_PER_PERIOD / per_slot)
        .ceil()
        .clamp(COARSEN as f64, longest as f64) as u32
}

/// Whether the two keys were busy in the same periods of `period` slots: at least
/// `min_active_slots` periods each, overlapping by `min_slot_jaccard`.
fn busy_together(a: &KeyView, b: &KeyView, period: u32, cfg: &ClusterConfig) -> bool {
    let span = a.age_slots.min(b.age_slots).min(63) / period as u64;
    if span == 0 {
        return false;
    }
    let mask = (1u64 << span) - 1;
    let (sa, sb) = (
        coarse(a.slots, period) & mask,
        coarse(b.slots, period) & mask,
    );
    if sa.count_ones() < cfg.min_active_slots || sb.count_ones() < cfg.min_active_slots {
        return false;
    }
    let jaccard = (sa & sb).count_ones() as f64 / (sa | sb).count_ones().max(1) as f64;
    jaccard >= cfg.min_slot_jaccard
}

pub fn in_lockstep(a: &KeyView, b: &KeyView, cfg: &ClusterConfig) -> bool {
    let slow = slow_period(a, b, cfg);
    (busy_together(a, b, COARSEN, cfg) || (slow > COARSEN && busy_together(a, b, slow, cfg)))
        // Keys behind one address may be shared unevenly (a router's shuffle, retries, per-key
        // cool-downs): only keys on different addresses must also agree on their rates.
        && ((a.address.is_some() && a.address == b.address)
            || within(
                a.requests_per_second,
                b.requests_per_second,
                cfg.max_rate_factor,
            ))
        && within(
            a.tokens_per_response,
            b.tokens_per_response,
            cfg.max_output_factor,
        )
}

/// Groups of two or more keys in lockstep. A key joins a group when it is in lockstep with more
/// than half of the group's keys (not merely one of them: chains of near-matches must not
/// merge two actors); the busiest keys are placed first.
pub fn components(keys: &[KeyView], cfg: &ClusterConfig) -> Vec<Component> {
    let mut groups: BTreeMap<&(String, String), Vec<usize>> = BTreeMap::new();
    for (i, k) in keys.iter().enumerate() {
        groups.entry(&k.group).or_default().push(i);
    }
    let mut found: Vec<Vec<usize>> = Vec::new();
    for members in groups.values_mut() {
        // The busiest first; the rest are not compared (bounded work).
        members.sort_by(|&a, &b| {
            keys[b]
                .requests_per_second
                .total_cmp(&keys[a].requests_per_second)
                .then(keys[a].key.cmp(&keys[b].key))
        });
        members.truncate(cfg.max_keys_per_group);
        let mut local: Vec<Vec<usize>> = Vec::new();
        for &i in members.iter() {
            let home = local.iter_mut().find(|c| {
                let agree = c
                    .iter()
                    .filter(|&&j| in_lockstep(&keys[i], &keys[j], cfg))
                    .count();
                2 * agree > c.len()
            });
            match home {
                Some(c) => c.push(i),
                None => local.push(vec![i]),
            }
        }
        found.extend(local);
    }
    found
        .into_iter()
        .filter(|m| m.len() >= 2)
        .map(|m| {
            let mut by_addr: HashMap<&str, u32> = HashMap::new();
            for &i in &m {
                if let Some(a) = &keys[i].address {
                    *by_addr.entry(a.as_str()).or_default() += 1;
                }
            }
            let (pooled_address, pooled) = by_addr
                .into_iter()
                .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
                .map_or((None, 0), |(a, n)| (Some(a.to_owned()), n));
            let mut keys: Vec<Box<str>> = m.iter().map(|&i| keys[i].key.clone()).collect();
            keys.sort();
            Component {
                keys,
                pooled,
                pooled_address,
            }
        })
        .collect()
}

/// Keeps cluster identities stable while membership drifts: a component takes the id of the
/// previous cluster it shares most keys with (at least half of either), else a new one. An id
/// is given once per pass (`taken`): a cluster that split keeps its id in one piece only, so two
/// reported clusters never share an id.
pub fn stable_id(
    keys: &[Box<str>],
    previous: &[(String, Vec<Box<str>>)],
    taken: &[String],
) -> String {
    let best = previous
        .iter()
        .filter(|(id, _)| !taken.contains(id))
        .map(|(id, old)| {
            let shared = keys.iter().filter(|k| old.contains(k)).count();
            (shared, id, old.len())
        })
        .filter(|(shared, _, old_len)| 2 * shared >= keys.len().min(*old_len) && *shared > 0)
        .max_by_key(|(shared, _, _)| *shared);
    if let Some((_, id, _)) = best {
        return id.clone();
    }
    // Named after its smallest member: deterministic, and a key hash says nothing. A piece of
    // a split cluster may hold the member its old id was named after: numbered apart.
    let first = keys.first().map_or("", |k| &**k);
    let base = format!("c-{}", &first[..first.len().min(12)]);
    let in_use = |id: &String| taken.contains(id) || previous.iter().any(|(p, _)| p == id);
    if !in_use(&base) {
        return base;
    }
    (2..)
        .map(|n| format!("{base}-{n}"))
        .find(|id| !in_use(id))
        .unwrap_or(base)
}

/// Whether a cluster not found this pass lives on inside one that was: at least half of its
/// members are now in that one (a piece of a split rejoining the rest). It is then cleared at
/// once rather than remembered through the memory lapse beside the cluster holding its keys.
pub fn absorbed<'a>(
    members: &[Box<str>],
    mut current: impl Iterator<Item = &'a [Box<str>]>,
) -> bool {
    !members.is_empty()
        && current
            .any(|now| 2 * members.iter().filter(|k| now.contains(k)).count() >= members.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, group: &str, addr: &str, slots: u64, rps: f64, tokens: f64) -> KeyView {
        KeyView {
            key: name.into(),
            group: ("10.0.0.0/24".into(), group.into()),
            address: Some(addr.into()),
            slots,
            age_slots: 30,
            requests_per_second: rps,
            requests_per_slot: rps * 10.0,
            requests: (rps * 1000.0) as u64,
            tokens_per_response: tokens,
        }
    }

    #[test]
    fn a_hydra_links_and_people_do_not() {
        let all = (1u64 << 30) - 1;
        let mut keys: Vec<KeyView> = (0..16)
            .map(|i| {
                key(
                    &format!("h{i:02}"),
                    "py",
                    &format!("10.0.0.{i}"),
                    all,
                    0.1,
                    1800.0,
                )
            })
            .collect();
        // People on the same stack and prefix: sporadic, different from each other.
        keys.push(key(
            "p1",
            "py",
            "10.0.0.100",
            0b1011_0000_0000_1111,
            0.05,
            120.0,
        ));
        keys.push(key(
            "p2",
            "py",
            "10.0.0.100",
            0b0000_1111_0110_0000,
            0.06,
            100.0,
        ));
        // A hydra key on another stack is not compared with these.
        keys.push(key("other", "curl", "10.0.0.50", all, 0.1, 1800.0));
        let comps = components(&keys, &ClusterConfig::default());
        assert_eq!(comps.len(), 1, "{comps:?}");
        assert_eq!(comps[0].keys.len(), 16);
        assert_eq!(
            comps[0].pooled, 1,
            "one key per address: a hydra, not a pool"
        );
    }

    #[test]
    fn a_pool_behind_one_address_is_counted() {
        let all = (1u64 << 30) - 1;
        let keys: Vec<KeyView> = (0..3)
            .map(|i| {
                key(
                    &format!("r{i}"),
                    "py",
                    "10.0.0.9",
                    all,
                    0.2 + 0.02 * i as f64,
                    1500.0,
                )
            })
            .collect();
        let comps = components(&keys, &ClusterConfig::default());
        assert_eq!(comps[0].pooled, 3);
        assert_eq!(comps[0].pooled_address.as_deref(), Some("10.0.0.9"));
    }

    #[test]
    fn a_chain_of_near_matches_does_not_merge_two_groups() {
        let all = (1u64 << 30) - 1;
        // Rates 1.0, 1.3, 1.69, 2.2: each within 1.4 of the next, not of the one after.
        let keys: Vec<KeyView> = (0..4)
            .map(|i| {
                key(
                    &format!("k{i}"),
                    "py",
                    &format!("10.0.0.{i}"),
                    all,
                    1.3f64.powi(i),
                    1500.0,
                )
            })
            .collect();
        let comps = components(&keys, &ClusterConfig::default());
        assert!(comps.iter().all(|c| c.keys.len() <= 2), "{comps:?}");
    }

    #[test]
    fn unequal_rates_do_not_link_across_addresses_but_do_behind_one() {
        let all = (1u64 << 30) - 1;
        let apart = vec![
            key("a", "py", "10.0.0.9", all, 0.2, 100.0),
            key("b", "py", "10.0.0.10", all, 0.1, 100.0),
        ];
        assert!(components(&apart, &ClusterConfig::default()).is_empty());
        let pooled = vec![
            key("a", "py", "10.0.0.9", all, 0.2, 100.0),
            key("b", "py", "10.0.0.9", all, 0.1, 100.0),
        ];
        assert_eq!(components(&pooled, &ClusterConfig::default()).len(), 1);
    }

    #[test]
    fn ids_survive_membership_drift() {
        let prev = vec![("c-aaa".to_owned(), vec!["a".into(), "b".into(), "c".into()])];
        let now: Vec<Box<str>> = vec!["b".into(), "c".into(), "d".into()];
        assert_eq!(stable_id(&now, &prev, &[]), "c-aaa");
        let fresh: Vec<Box<str>> = vec!["x1234567890abcdef".into(), "y".into()];
        assert_eq!(stable_id(&fresh, &prev, &[]), "c-x1234567890a");
    }

    #[test]
    fn a_piece_that_rejoined_its_cluster_is_absorbed_and_a_stranger_is_not() {
        let keys = |v: &[&str]| v.iter().map(|k| Box::<str>::from(*k)).collect::<Vec<_>>();
        let piece = keys(&["k4", "k5", "k6"]);
        let whole = keys(&["k1", "k2", "k3", "k4", "k5", "k6"]);
        let other = keys(&["x1", "x2", "k6"]);
        assert!(absorbed(&piece, [whole.as_slice()].into_iter()));
        assert!(!absorbed(&piece, [other.as_slice()].into_iter()));
        assert!(!absorbed(&piece, std::iter::empty()));
    }

    #[test]
    fn the_pieces_of_a_split_cluster_get_distinct_ids() {
        let old: Vec<Box<str>> = ["k1", "k2", "k3", "k4", "k5", "k6"]
            .map(Into::into)
            .to_vec();
        let prev = vec![("c-k1".to_owned(), old)];
        let a: Vec<Box<str>> = ["k1", "k2", "k3"].map(Into::into).to_vec();
        let b: Vec<Box<str>> = ["k4", "k5", "k6"].map(Into::into).to_vec();
        let id_a = stable_id(&a, &prev, &[]);
        let id_b = stable_id(&b, &prev, std::slice::from_ref(&id_a));
        assert_eq!(id_a, "c-k1");
        assert_ne!(id_a, id_b);
        // A piece holding the member the old id was named after is numbered apart.
        let id_c = stable_id(&a, &prev, &[id_a.clone(), id_b.clone()]);
        assert!(![&id_a, &id_b].contains(&&id_c), "{id_c}");
    }

    /// Activity of a key paced at one request every 2 to 5 slots (a round robin with jitter,
    /// ~3.5 slots apart on average), over `slots` slots.
    fn paced(rng: &mut u64, slots: u64) -> u64 {
        let mut bits = 0u64;
        let mut at = 0;
        while at < slots {
            bits |= 1 << at;
            // xorshift: deterministic jitter without a dependency.
            *rng ^= *rng << 13;
            *rng ^= *rng >> 7;
            *rng ^= *rng << 17;
            at += 2 + *rng % 4;
        }
        bits
    }

    #[test]
    fn a_slow_hydra_stays_one_cluster_and_sporadic_people_do_not_join() {
        // 16 keys, each making one request every ~35 s (slots of 10 s) for 200 s: at the
        // 30-s period a good part of each key's periods are idle by chance.
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut keys: Vec<KeyView> = (0..16)
            .map(|i| {
                let mut k = key(
                    &format!("h{i:02}"),
                    "py",
                    &format!("10.0.0.{i}"),
                    paced(&mut rng, 20),
                    1.0 / 35.0,
                    1800.0,
                );
                k.age_slots = 20;
                k
            })
            .collect();
        let split = components(&keys, &ClusterConfig::default());
        assert!(
            split.iter().any(|c| c.keys.len() == 16),
            "one cluster of 16: {:?}",
            split.iter().map(|c| c.keys.len()).collect::<Vec<_>>()
        );
        // Two people on the same stack at the same pace, busy in different minutes.
        for (name, bits) in [
            ("p1", 0b1111_1100_0000_0000_0011u64),
            ("p2", 0b0000_0011_1111_0000_0000),
        ] {
            let mut p = key(name, "py", "10.0.0.100", bits, 1.0 / 35.0, 1800.0);
            p.age_slots = 20;
            keys.push(p);
        }
        let comps = components(&keys, &ClusterConfig::default());
        let hydra = comps
            .iter()
            .find(|c| c.keys.len() >= 16)
            .expect("the hydra");
        assert_eq!(hydra.keys.len(), 16, "{comps:?}");
        assert!(
            comps
                .iter()
                .all(|c| !c.keys.iter().any(|k| k.starts_with('p'))),
            "{comps:?}"
        );
    }
}
