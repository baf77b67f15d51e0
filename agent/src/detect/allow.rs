//! The allow-list: known heavy users (an evaluation job, a content generator, a partner's
//! backend) are scored and exported like everyone else, but never raised.

use std::{collections::HashMap, net::IpAddr};

use super::{
    config::{parse_prefix, AllowEntry},
    entity::EntityType,
};

pub struct AllowList {
    keys: HashMap<String, String>,
    nets: Vec<(IpAddr, u8, String)>,
}

fn contains(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

impl AllowList {
    pub fn new(entries: &[AllowEntry]) -> AllowList {
        let mut keys = HashMap::new();
        let mut nets = Vec::new();
        for e in entries {
            if let Some(k) = &e.api_key_hash {
                keys.insert(k.to_ascii_lowercase(), e.reason.clone());
            }
            if let Some((ip, len)) = e.client.as_deref().and_then(parse_prefix) {
                nets.push((ip, len, e.reason.clone()));
            }
        }
        AllowList { keys, nets }
    }

    /// Why the entity is allowed, if it is. A prefix entity is allowed when it lies inside an
    /// allowed network; fingerprints are shared by too many clients to allow by.
    pub fn allows(&self, ty: EntityType, value: &str) -> Option<&str> {
        match ty {
            EntityType::ApiKey => self.keys.get(value).map(String::as_str),
            EntityType::ClientIp | EntityType::Prefix => {
                // Every address and prefix asks at every evaluation: skip the parse when no
                // network is allowed (the usual case).
                if self.nets.is_empty() {
                    return None;
                }
                let (ip, len) = parse_prefix(value)?;
                self.nets
                    .iter()
                    .find(|(n, l, _)| *l <= len && contains(*n, *l, ip))
                    .map(|(_, _, r)| r.as_str())
            }
            EntityType::Ja4 | EntityType::Ja4t | EntityType::Cluster => None,
        }
    }

    /// A cluster is allowed when every member key is.
    pub fn allows_all(&self, keys: &[Box<str>]) -> Option<&str> {
        let mut reason = None;
        for k in keys {
            reason = Some(self.allows(EntityType::ApiKey, k)?);
        }
        reason
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_addresses_and_prefixes() {
        let a = AllowList::new(&[
            AllowEntry {
                api_key_hash: Some("ABCD".into()),
                client: None,
                reason: "nightly eval".into(),
            },
            AllowEntry {
                api_key_hash: None,
                client: Some("10.1.0.0/16".into()),
                reason: "office".into(),
            },
        ]);
        assert_eq!(a.allows(EntityType::ApiKey, "abcd"), Some("nightly eval"));
        assert_eq!(a.allows(EntityType::ApiKey, "ffff"), None);
        assert_eq!(a.allows(EntityType::ClientIp, "10.1.200.3"), Some("office"));
        assert_eq!(a.allows(EntityType::ClientIp, "10.2.0.1"), None);
        assert_eq!(a.allows(EntityType::Prefix, "10.1.7.0/24"), Some("office"));
        // A wider prefix than the allowed network is not allowed.
        assert_eq!(a.allows(EntityType::Prefix, "10.0.0.0/8"), None);
        assert_eq!(a.allows(EntityType::Ja4, "t13d"), None);
        assert_eq!(a.allows_all(&["abcd".into()]), Some("nightly eval"));
        assert_eq!(a.allows_all(&["abcd".into(), "ffff".into()]), None);
    }
}
