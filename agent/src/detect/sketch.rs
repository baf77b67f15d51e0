//! Bounded per-entity state for what an entity is linked to: the few most frequent linked
//! values by count (for reasons, events and clustering) and a HyperLogLog of all distinct
//! ones (mergeable, so nodes' sketches can later be combined).

use std::{collections::hash_map::DefaultHasher, hash::BuildHasherDefault};

use hyperloglogplus::{HyperLogLog as _, HyperLogLogPF};

/// 2^8 registers: standard error 1.04/√256 ≈ 6.5%, about 200 bytes of registers. The hasher
/// has fixed keys so sketches of different processes and nodes merge.
pub const HLL_PRECISION: u8 = 8;

type Hll = HyperLogLogPF<String, BuildHasherDefault<DefaultHasher>>;

/// A linked value held by name, with its count and a tag of its bytes: the tags sit next to
/// each other in the set, so looking a value up compares them and reads a value's bytes (a
/// cache miss each, across thousands of entities) only where the tags agree.
#[derive(Clone, Debug)]
struct Top {
    value: Box<str>,
    count: u32,
    tag: u32,
}

/// The lookup tag of a value: any cheap hash will do, equal tags are confirmed by comparing the
/// bytes, so a collision (chosen or not) costs one comparison, never a wrong count.
fn tag_of(value: &str) -> u32 {
    use std::hash::BuildHasher as _;
    foldhash::fast::FixedState::with_seed(0x5171_0a11).hash_one(value.as_bytes()) as u32
}

/// Replaces a kept value. On a busy shared entity (a prefix, a JA4) nearly every request
/// brings a value not kept and replaces one; values of one kind mostly have one length (JA4s,
/// key hashes, addresses of a subnet), so the old allocation is reused in place where it can.
fn overwrite(slot: &mut Box<str>, value: &str) {
    if slot.len() == value.len() {
        // SAFETY: the bytes written are a whole `str`'s, so the slot stays valid UTF-8.
        unsafe { slot.as_bytes_mut() }.copy_from_slice(value.as_bytes());
    } else {
        *slot = value.into();
    }
}

/// Linked values kept by name (the most frequent).
pub const TOP_LINKS: usize = 8;

#[derive(Clone, Debug, Default)]
pub struct LinkSet {
    /// (value, times seen), at most [`TOP_LINKS`]; a new value replaces the least seen one
    /// (space-saving: the newcomer inherits its count, so heavy hitters stay, with an error of
    /// at most the smallest count).
    top: Vec<Top>,
    distinct: Option<Box<Hll>>,
    /// Exact count while every value seen is still in `top`.
    exact: bool,
}

impl LinkSet {
    pub fn new() -> LinkSet {
        LinkSet {
            top: Vec::new(),
            distinct: None,
            exact: true,
        }
    }

    pub fn insert(&mut self, value: &str) {
        let tag = tag_of(value);
        if let Some(e) = self
            .top
            .iter_mut()
            .find(|e| e.tag == tag && &*e.value == value)
        {
            e.count = e.count.saturating_add(1);
            return;
        }
        if let Some(h) = self.hll() {
            h.insert_any(value);
        }
        if self.top.len() < TOP_LINKS {
            self.top.push(Top {
                value: value.into(),
                count: 1,
                tag,
            });
            return;
        }
        self.exact = false;
        if let Some(min) = self.top.iter_mut().min_by_key(|e| e.count) {
            overwrite(&mut min.value, value);
            min.count = min.count.saturating_add(1);
            min.tag = tag;
        }
    }

    fn hll(&mut self) -> Option<&mut Hll> {
        if self.distinct.is_none() {
            let mut h = Hll::new(HLL_PRECISION, BuildHasherDefault::default()).ok()?;
            for e in &self.top {
                h.insert_any(&*e.value);
            }
            self.distinct = Some(Box::new(h));
        }
        self.distinct.as_deref_mut()
    }

    /// Distinct values seen: exact up to [`TOP_LINKS`], estimated beyond.
    pub fn distinct(&mut self) -> u64 {
        if self.exact {
            return self.top.len() as u64;
        }
        let n = self.top.len() as u64;
        match self.distinct.as_deref_mut() {
            Some(h) => (h.count().round() as u64).max(n),
            None => n,
        }
    }

    /// As [`LinkSet::distinct`] without changing the sketch (it caches its estimate).
    pub fn estimate(&self) -> u64 {
        self.clone().distinct()
    }

    /// The most frequent values, most frequent first.
    pub fn top(&self) -> Vec<(&str, u32)> {
        let mut v: Vec<(&str, u32)> = self.top.iter().map(|e| (&*e.value, e.count)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v
    }

    pub fn most_frequent(&self) -> Option<&str> {
        self.top
            .iter()
            .max_by(|a, b| a.count.cmp(&b.count).then(b.value.cmp(&a.value)))
            .map(|e| &*e.value)
    }

    /// Bytes held, for the memory budget.
    pub fn heap_bytes(&self) -> usize {
        self.top.capacity() * std::mem::size_of::<Top>()
            + self.top.iter().map(|e| e.value.len()).sum::<usize>()
            + self
                .distinct
                .as_ref()
                .map_or(0, |_| std::mem::size_of::<Hll>() + (1 << HLL_PRECISION))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_while_small() {
        let mut s = LinkSet::new();
        for v in ["a", "b", "a", "c"] {
            s.insert(v);
        }
        assert_eq!(s.distinct(), 3);
        assert_eq!(s.top()[0], ("a", 2));
        assert_eq!(s.most_frequent(), Some("a"));
    }

    #[test]
    fn estimates_within_the_stated_error_beyond() {
        let mut s = LinkSet::new();
        for i in 0..5000 {
            s.insert(&format!("10.0.{}.{}", i / 256, i % 256));
        }
        let d = s.distinct() as f64;
        // 3 standard errors of 6.5%.
        assert!((d - 5000.0).abs() / 5000.0 < 0.2, "{d}");
        assert!(s.top().len() <= TOP_LINKS);
    }

    #[test]
    fn heavy_hitters_stay_in_the_top() {
        let mut s = LinkSet::new();
        for i in 0..2000 {
            s.insert("heavy");
            s.insert(&format!("noise-{i}"));
        }
        assert_eq!(s.most_frequent(), Some("heavy"));
    }

    #[test]
    fn a_replaced_value_is_the_newcomer_whatever_its_length() {
        let mut s = LinkSet::new();
        for i in 0..TOP_LINKS {
            s.insert(&format!("10.0.0.{}", 10 + i));
        }
        // Same length as every kept value (reused in place), then a longer and a shorter one.
        for newcomer in ["10.0.0.99", "10.0.0.100", "1.0.0.1"] {
            s.insert(newcomer);
            let kept: Vec<&str> = s.top().iter().map(|(v, _)| *v).collect();
            assert!(kept.contains(&newcomer), "{newcomer} not in {kept:?}");
            assert_eq!(kept.len(), TOP_LINKS);
            // The newcomer is counted once more on a second sight, not replaced again.
            s.insert(newcomer);
            let count = s
                .top()
                .into_iter()
                .find(|(v, _)| *v == newcomer)
                .map(|(_, c)| c);
            assert!(count >= Some(2), "{newcomer}: {count:?}");
        }
        // Estimated once past the kept values: 11 distinct, within the sketch's error.
        let d = s.distinct();
        assert!((9..=13).contains(&d), "{d}");
    }
}
