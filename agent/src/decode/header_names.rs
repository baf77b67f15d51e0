//! A request's header names in order and original case, as JA4H needs them, held in one
//! buffer: two allocations a head instead of one per header (most heads carry 5 to 15).

use std::fmt;

#[derive(Clone, Default, PartialEq, Eq)]
pub struct HeaderNames {
    text: String,
    /// Where each name ends in `text`.
    ends: Vec<u32>,
}

impl HeaderNames {
    pub fn with_capacity(headers: usize) -> HeaderNames {
        HeaderNames {
            text: String::with_capacity(headers * 16),
            ends: Vec::with_capacity(headers),
        }
    }

    /// Appends a name, cut to at most `max_bytes` on a character boundary.
    pub fn push(&mut self, name: &str, max_bytes: usize) {
        let mut cut = name.len().min(max_bytes);
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        self.text.push_str(name.get(..cut).unwrap_or_default());
        // A head is at most a few KiB (decode::MAX_HEAD_BYTES), far below u32::MAX.
        self.ends.push(self.text.len() as u32);
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let name = self.text.get(start..end as usize).unwrap_or_default();
            start = end as usize;
            name
        })
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

impl<const N: usize> PartialEq<[&str; N]> for HeaderNames {
    fn eq(&self, other: &[&str; N]) -> bool {
        self.len() == N && self.iter().zip(other).all(|(a, b)| a == *b)
    }
}

impl fmt::Debug for HeaderNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_back_in_order_and_cut_on_a_character_boundary() {
        let mut n = HeaderNames::with_capacity(1);
        assert!(n.is_empty());
        n.push("Host", 64);
        n.push("", 64);
        // "é" is two bytes: a cut at 6 would split it, so the name keeps 5.
        n.push("X-abcé", 6);
        n.push("User-Agent", 64);
        assert_eq!(n, ["Host", "", "X-abc", "User-Agent"]);
        assert_ne!(n, ["Host", "", "X-abc"]);
        assert_eq!(format!("{n:?}"), r#"["Host", "", "X-abc", "User-Agent"]"#);
    }
}
