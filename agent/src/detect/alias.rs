//! Keeps an API key one entity across a rotation of the hash secret. During the overlap the
//! agent reports each key under the new secret (`api_key_hash`) and the previous one
//! (`api_key_hash_prev`); the detector then files the new hash under the entity it already
//! knew, and keeps doing so after the overlap ends, so windows, baselines, clusters and
//! allow-list entries written with the old hash carry on.

use std::{borrow::Cow, collections::HashMap};

pub struct KeyAliases {
    /// New hash → the hash the entity is filed under.
    to_entity: HashMap<String, String>,
    cap: usize,
}

impl KeyAliases {
    /// At most `cap` aliases: past that the oldest rotation's links are dropped wholesale
    /// (those keys start afresh), which bounds memory under a flood of new keys mid-overlap.
    pub fn new(cap: usize) -> KeyAliases {
        KeyAliases {
            to_entity: HashMap::new(),
            cap,
        }
    }

    /// The entity name for a key reported as `hash` (and `prev`, during an overlap).
    /// Borrowed when the hash is its own entity (no rotation): the case of every request but
    /// those during and after a rotation.
    pub fn resolve<'a>(&mut self, hash: &'a str, prev: Option<&str>) -> Cow<'a, str> {
        if self.to_entity.is_empty() && prev.is_none() {
            return Cow::Borrowed(hash);
        }
        if let Some(e) = self.to_entity.get(hash) {
            return Cow::Owned(e.clone());
        }
        let Some(prev) = prev else {
            return Cow::Borrowed(hash);
        };
        // Chained rotations: the previous hash may itself be an alias.
        let entity = self
            .to_entity
            .get(prev)
            .cloned()
            .unwrap_or_else(|| prev.to_owned());
        if self.to_entity.len() >= self.cap {
            self.to_entity.clear();
        }
        self.to_entity.insert(hash.to_owned(), entity.clone());
        Cow::Owned(entity)
    }

    pub fn len(&self) -> usize {
        self.to_entity.len()
    }

    pub fn is_empty(&self) -> bool {
        self.to_entity.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_stays_one_entity_across_rotations() {
        let mut a = KeyAliases::new(16);
        assert_eq!(a.resolve("old", None), "old");
        assert_eq!(a.resolve("new", Some("old")), "old", "during the overlap");
        assert_eq!(a.resolve("new", None), "old", "after it");
        assert_eq!(a.resolve("newer", Some("new")), "old", "a second rotation");
        assert_eq!(a.resolve("other", None), "other", "keys never seen before");
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn bounded() {
        let mut a = KeyAliases::new(4);
        for i in 0..100 {
            a.resolve(&format!("n{i}"), Some(&format!("o{i}")));
            assert!(a.len() <= 4);
        }
    }
}
