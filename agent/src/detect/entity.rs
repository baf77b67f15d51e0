//! Entities (who a request is attributed to) and the bounded table of their state.

use std::hash::RandomState;

use hashbrown::{hash_map::EntryRef, HashMap};

use super::{sketch::LinkSet, window::Window};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntityType {
    ApiKey,
    ClientIp,
    Prefix,
    Ja4,
    Ja4t,
    Cluster,
}

impl EntityType {
    /// Types with a table of their own (clusters are derived from keys).
    pub const TRACKED: [EntityType; 5] = [
        EntityType::ApiKey,
        EntityType::ClientIp,
        EntityType::Prefix,
        EntityType::Ja4,
        EntityType::Ja4t,
    ];
    pub const ALL: [EntityType; 6] = [
        EntityType::ApiKey,
        EntityType::ClientIp,
        EntityType::Prefix,
        EntityType::Ja4,
        EntityType::Ja4t,
        EntityType::Cluster,
    ];

    pub fn label(self) -> &'static str {
        match self {
            EntityType::ApiKey => "api_key",
            EntityType::ClientIp => "client_ip",
            EntityType::Prefix => "prefix",
            EntityType::Ja4 => "ja4",
            EntityType::Ja4t => "ja4t",
            EntityType::Cluster => "cluster",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// What an entity is linked to.
#[derive(Clone, Debug, Default)]
pub struct Links {
    pub api_keys: LinkSet,
    pub client_ips: LinkSet,
    pub prefixes: LinkSet,
    pub ja4s: LinkSet,
    pub user_agents: LinkSet,
}

/// Activity slots: bit 0 is the newest slot (`newest`), bit i the slot i before it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Activity {
    pub newest: u64,
    pub bits: u64,
}

impl Activity {
    pub fn mark(&mut self, slot: u64) {
        if self.bits == 0 || slot > self.newest {
            let shift = slot.saturating_sub(self.newest);
            self.bits = if self.bits == 0 || shift >= 64 {
                0
            } else {
                self.bits << shift
            };
            self.newest = slot;
        }
        let back = self.newest - slot;
        if back < 64 {
            self.bits |= 1 << back;
        }
    }

    /// The bits as of slot `now` (older ones shifted out).
    pub fn at(&self, now: u64) -> u64 {
        let shift = now.saturating_sub(self.newest);
        if shift >= 64 {
            0
        } else {
            self.bits << shift
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Raised {
    pub since_ns: u64,
    /// Since when the score has stayed below the clear level (cleared after `hold_seconds`).
    pub below_since_ns: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct EntityState {
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    pub windows: Box<[Window]>,
    pub activity: Activity,
    pub links: Links,
    /// Ends of the latest responses (for think time), newest last.
    pub recent_ends: [u64; 4],
    pub last_start_ns: u64,
    /// End of the latest 429 answer not yet followed by a request (retry gaps).
    pub throttled_end_ns: u64,
    /// Request sizes seen (distinct count: a script replaying few prompts repeats sizes).
    pub request_sizes: super::sketch::LinkSet,
    /// Raised detections, by score kind.
    pub raised: [Option<Raised>; 2],
    /// Latest scores, by kind, and the highest each reached.
    pub scores: [f64; 2],
    pub max_scores: [f32; 2],
    /// Keys of this entity's address used in lockstep (set by the cluster pass), and when the
    /// pass last saw the pool.
    pub pooled_keys: u32,
    pub pooled_at_ns: u64,
    /// The cluster this key belongs to.
    pub cluster: Option<Box<str>>,
    pub dirty: bool,
}

impl EntityState {
    pub fn new(now_ns: u64, windows: &[u64], buckets: usize) -> EntityState {
        EntityState {
            first_seen_ns: now_ns,
            last_seen_ns: now_ns,
            windows: windows
                .iter()
                .map(|&w| Window::new(w * 1_000_000_000, buckets))
                .collect(),
            activity: Activity::default(),
            links: Links {
                api_keys: LinkSet::new(),
                client_ips: LinkSet::new(),
                prefixes: LinkSet::new(),
                ja4s: LinkSet::new(),
                user_agents: LinkSet::new(),
            },
            recent_ends: [0; 4],
            last_start_ns: 0,
            throttled_end_ns: 0,
            request_sizes: LinkSet::new(),
            raised: [None; 2],
            scores: [0.0; 2],
            max_scores: [0.0; 2],
            pooled_keys: 0,
            pooled_at_ns: 0,
            cluster: None,
            dirty: true,
        }
    }

    /// Think time before a request starting at `start_ns`: from the latest response end at or
    /// before it. `None` on a first request or after a long absence (a new session, not a
    /// think time).
    pub fn think_before(&self, start_ns: u64, max_ns: u64) -> Option<f64> {
        let prev = self
            .recent_ends
            .iter()
            .copied()
            .filter(|&e| e != 0 && e <= start_ns)
            .max()?;
        let gap = start_ns - prev;
        (gap <= max_ns).then(|| agent_common::ns_to_secs(gap))
    }

    pub fn note_end(&mut self, end_ns: u64) {
        // Keep the four latest ends: replace the oldest.
        if let Some(min) = self.recent_ends.iter_mut().min() {
            if *min < end_ns {
                *min = end_ns;
            }
        }
    }

    /// Bytes this entity holds (for the memory budget).
    pub fn bytes(&self) -> usize {
        std::mem::size_of::<EntityState>()
            + self
                .windows
                .iter()
                .map(|w| std::mem::size_of::<Window>() + w.heap_bytes())
                .sum::<usize>()
            + self.links.api_keys.heap_bytes()
            + self.links.client_ips.heap_bytes()
            + self.links.prefixes.heap_bytes()
            + self.links.ja4s.heap_bytes()
            + self.links.user_agents.heap_bytes()
            + self.request_sizes.heap_bytes()
    }
}

/// Entities of one type, at most `capacity`; beyond it the least recently seen are evicted
/// (raised ones last).
pub struct Table {
    /// Keyed SipHash (std's `RandomState`): the keys come off the wire (addresses, key hashes,
    /// fingerprints), so a peer must not be able to choose colliding ones.
    pub map: HashMap<Box<str>, EntityState, RandomState>,
    /// Entities changed since the last evaluation (each queued once while `dirty`), and those
    /// with a raised detection: the only ones an evaluation needs to look at.
    pub queue: Vec<Box<str>>,
    pub raised_keys: std::collections::BTreeSet<Box<str>>,
    capacity: usize,
    pub created: u64,
    pub evicted: u64,
}

impl Table {
    pub fn new(capacity: usize) -> Table {
        Table {
            map: HashMap::with_hasher(RandomState::new()),
            queue: Vec::new(),
            raised_keys: std::collections::BTreeSet::new(),
            capacity,
            created: 0,
            evicted: 0,
        }
    }

    /// The entity, created if new (evicting first when full).
    pub fn entry(
        &mut self,
        value: &str,
        now_ns: u64,
        windows: &[u64],
        buckets: usize,
    ) -> &mut EntityState {
        if self.map.len() >= self.capacity && !self.map.contains_key(value) {
            self.evict(now_ns);
        }
        // One hash and no key allocation for an entity already there: this runs for every
        // entity of every request.
        match self.map.entry_ref(value) {
            EntryRef::Occupied(o) => o.into_mut(),
            EntryRef::Vacant(v) => {
                self.created += 1;
                self.queue.push(value.into());
                v.insert_with_key(value.into(), EntityState::new(now_ns, windows, buckets))
            }
        }
    }

    /// Drop a sixteenth (at least one; amortises the scan): newcomers first, least recently
    /// seen first among them. An entity with [`ESTABLISHED_REQUESTS`] in its longest window
    /// goes only when no newcomer is left, and one with a raised detection only when nothing
    /// else is: a flood of one-request identities evicts its own kind, not the harvester whose
    /// history it was sent to erase.
    fn evict(&mut self, now_ns: u64) {
        let mut order: Vec<(bool, bool, u64, Box<str>)> = self
            .map
            .iter()
            .map(|(k, s)| {
                let established = s
                    .windows
                    .last()
                    .is_some_and(|w| w.sum(now_ns).requests >= ESTABLISHED_REQUESTS);
                (
                    s.raised.iter().any(Option::is_some),
                    established,
                    s.last_seen_ns,
                    k.clone(),
                )
            })
            .collect();
        order.sort_unstable();
        let n = (order.len() / 16).max(1);
        for (_, _, _, k) in order.into_iter().take(n) {
            self.map.remove(&k);
            self.raised_keys.remove(&k);
            self.evicted += 1;
        }
    }

    pub fn bytes(&self) -> usize {
        self.map
            .iter()
            .map(|(k, s)| k.len() + s.bytes() + 16)
            .sum::<usize>()
            + self.queue.capacity() * std::mem::size_of::<Box<str>>()
    }

    /// Queue every entity flagged dirty outside the record path (the cluster pass).
    pub fn queue_dirty(&mut self) {
        let dirty = self
            .map
            .iter()
            .filter(|(_, s)| s.dirty)
            .map(|(k, _)| k.clone());
        self.queue.extend(dirty);
    }
}

/// Requests in an entity's longest window that make its history worth more than a
/// newcomer's when the table must evict (the baseline's smallest sample, `min_requests`).
pub const ESTABLISHED_REQUESTS: u32 = 8;

/// The most one entity holds with the default windows (3 windows of 6 buckets) when every
/// linked set is full and has spilled into its HyperLogLog: the README's memory formula.
pub const ENTITY_BYTES_MAX: usize = 8 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_entity_stays_within_its_stated_size() {
        let mut s = EntityState::new(0, &[60, 600, 3600], 6);
        let empty = s.bytes();
        for i in 0..1000 {
            let long = format!("{i:032x}");
            s.links.api_keys.insert(&long);
            s.links
                .client_ips
                .insert(&format!("2001:db8:ffff:ffff::{i:x}"));
            s.links.prefixes.insert(&format!("2001:db8:{i:x}::/48"));
            s.links
                .ja4s
                .insert(&format!("t13d1516h2_8daaf6152771_{i:012x}"));
            s.links.user_agents.insert(&format!("family{i}"));
        }
        let full = s.bytes();
        println!("entity bytes: empty {empty}, full {full}");
        assert!(full <= ENTITY_BYTES_MAX, "{full}");
    }

    #[test]
    fn activity_slots_shift_with_time() {
        let mut a = Activity::default();
        a.mark(10);
        a.mark(12);
        a.mark(11);
        assert_eq!(a.bits, 0b111);
        assert_eq!(a.at(14), 0b11100);
        assert_eq!(a.at(100), 0);
        a.mark(200);
        assert_eq!(a.bits, 1);
    }

    #[test]
    fn think_time_from_the_latest_end_before_the_request() {
        let mut s = EntityState::new(0, &[60], 6);
        assert_eq!(s.think_before(5_000_000_000, u64::MAX), None);
        s.note_end(2_000_000_000);
        s.note_end(4_000_000_000);
        s.note_end(9_000_000_000); // a concurrent request ending later
        assert_eq!(s.think_before(5_000_000_000, u64::MAX), Some(1.0));
        assert_eq!(s.think_before(5_000_000_000, 500_000_000), None);
    }

    #[test]
    fn the_table_stays_within_capacity_and_counts_evictions() {
        let mut t = Table::new(100);
        for i in 0..1000u64 {
            t.entry(&format!("k{i}"), i, &[60, 600], 6).last_seen_ns = i;
        }
        assert!(t.map.len() <= 100);
        assert_eq!(t.created, 1000);
        assert_eq!(t.created - t.evicted, t.map.len() as u64);
        // The newest survive.
        assert!(t.map.contains_key("k999"));
    }

    /// A flood of one-request identities cannot push out an entity with history, however
    /// long ago that entity was last seen.
    #[test]
    fn a_flood_of_newcomers_evicts_newcomers_not_established_entities() {
        let mut t = Table::new(100);
        let windows = [60, 600];
        for r in 0..ESTABLISHED_REQUESTS as u64 {
            let st = t.entry("harvester", r, &windows, 6);
            for w in st.windows.iter_mut() {
                if let Some(b) = w.bucket_at(r) {
                    b.requests += 1;
                }
            }
            st.last_seen_ns = r;
        }
        for i in 0..10_000u64 {
            let now = 1_000_000 + i;
            t.entry(&format!("flood{i}"), now, &windows, 6).last_seen_ns = now;
        }
        assert!(t.map.len() <= 100);
        assert!(
            t.map.contains_key("harvester"),
            "the established entity was evicted"
        );
        assert!(t.evicted >= 9_900);
    }
}
