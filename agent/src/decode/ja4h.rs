//! JA4H HTTP client fingerprint (FoxIO, technical_details/JA4H.md) from a
//! decoded HTTP/1.x request head.
//!
//! Only hashes are stored: cookie values feed JA4H_d but may be session
//! secrets, so the raw renderings are built on demand from the head.

use std::{borrow::Cow, fmt};

use sha2::{Digest as _, Sha256};

use super::{
    http_request::RequestHead,
    text::{hash12, push_hex_byte, two_digits, EMPTY_HASH12},
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ja4h {
    /// JA4H_a, e.g. `ge11cr06enus`.
    prefix: String,
    headers: String,
    /// Borrowed constants for a request without cookies (most API traffic): no allocation.
    cookie_names: Cow<'static, str>,
    cookie_pairs: Cow<'static, str>,
}

impl Ja4h {
    pub fn new(head: &RequestHead) -> Self {
        let parts = Parts::new(head);
        let cookies = parts.sorted_cookies();
        let (names, pairs) = match &cookies {
            Some(c) => (
                Cow::Owned(hash12(&join_names(c))),
                Cow::Owned(hash12(&join_pairs(c))),
            ),
            None => (Cow::Borrowed(EMPTY_HASH12), Cow::Borrowed(EMPTY_HASH12)),
        };
        Self {
            headers: hash12_joined(&parts.headers),
            prefix: parts.prefix,
            cookie_names: names,
            cookie_pairs: pairs,
        }
    }

    pub fn fingerprint(&self) -> String {
        let mut out = String::with_capacity(
            self.prefix.len()
                + self.headers.len()
                + self.cookie_names.len()
                + self.cookie_pairs.len()
                + 3,
        );
        for (i, part) in [
            &*self.prefix,
            &*self.headers,
            &*self.cookie_names,
            &*self.cookie_pairs,
        ]
        .into_iter()
        .enumerate()
        {
            if i > 0 {
                out.push(FIELD_SEPARATOR);
            }
            out.push_str(part);
        }
        out
    }

    /// JA4H_r: header names in order, cookies sorted. Contains cookie
    /// values verbatim, so treat it like the cookie itself.
    pub fn raw(head: &RequestHead) -> String {
        let parts = Parts::new(head);
        let cookies = parts.sorted_cookies();
        parts.render_raw(cookies.as_deref())
    }

    /// JA4H_ro: like [`Ja4h::raw`] with cookies in the order sent.
    pub fn raw_original(head: &RequestHead) -> String {
        let parts = Parts::new(head);
        parts.render_raw(parts.cookies.as_deref())
    }
}

impl fmt::Display for Ja4h {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}_{}_{}_{}",
            self.prefix, self.headers, self.cookie_names, self.cookie_pairs
        )
    }
}

/// [`hash12`] of `names` joined with commas, hashed as they are fed (no joined copy): this
/// runs for every request.
fn hash12_joined(names: &[&str]) -> String {
    if names.iter().all(|n| n.is_empty()) && names.len() <= 1 {
        return EMPTY_HASH12.to_owned();
    }
    let mut sha = Sha256::new();
    for (i, n) in names.iter().enumerate() {
        if i > 0 {
            sha.update(b",");
        }
        sha.update(n.as_bytes());
    }
    let digest = sha.finalize();
    let mut out = String::with_capacity(12);
    for b in digest.iter().take(6) {
        push_hex_byte(&mut out, *b);
    }
    out
}

/// Between JA4H's four parts; no part of the hashed fingerprint may contain it.
const FIELD_SEPARATOR: char = '_';

struct Cookie<'a> {
    name: &'a str,
    pair: &'a str,
}

struct Parts<'a> {
    prefix: String,
    headers: Vec<&'a str>,
    cookies: Option<Vec<Cookie<'a>>>,
}

impl<'a> Parts<'a> {
    fn new(head: &'a RequestHead) -> Self {
        let is = |n: &str, want: &str| n.eq_ignore_ascii_case(want);
        let headers: Vec<&str> = head
            .header_names
            .iter()
            .filter(|n| !is(n, "cookie") && !is(n, "referer"))
            .collect();
        let referer = head.header_names.iter().any(|n| is(n, "referer"));
        // Built in place: `format!` of four temporary strings cost five allocations a request.
        let mut prefix = String::with_capacity(12);
        push_method_code(&mut prefix, &head.method_token);
        prefix.push_str(version_code(head.version));
        prefix.push(if head.cookie.is_some() { 'c' } else { 'n' });
        prefix.push(if referer { 'r' } else { 'n' });
        prefix.push_str(&two_digits(headers.len()));
        push_language_code(&mut prefix, head.accept_language.as_deref());
        Self {
            prefix,
            headers,
            cookies: head.cookie.as_deref().map(split_cookies),
        }
    }

    /// Sorted by name only, and stably, so same-named cookies keep the order
    /// they were sent in, as FoxIO's reference implementation does.
    fn sorted_cookies(&self) -> Option<Vec<Cookie<'a>>> {
        let mut cookies: Vec<Cookie<'a>> = self
            .cookies
            .as_ref()?
            .iter()
            .map(|c| Cookie {
                name: c.name,
                pair: c.pair,
            })
            .collect();
        cookies.sort_by(|a, b| a.name.cmp(b.name));
        Some(cookies)
    }

    fn render_raw(&self, cookies: Option<&[Cookie<'_>]>) -> String {
        let mut out = format!("{}_{}_", self.prefix, self.headers.join(","));
        if let Some(c) = cookies {
            out.push_str(&join_names(c));
            out.push('_');
            out.push_str(&join_pairs(c));
        }
        out
    }
}

fn split_cookies(value: &str) -> Vec<Cookie<'_>> {
    value
        .split(';')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| Cookie {
            name: pair.split('=').next().unwrap_or_default().trim(),
            pair,
        })
        .collect()
}

fn join_names(cookies: &[Cookie<'_>]) -> String {
    cookies.iter().map(|c| c.name).collect::<Vec<_>>().join(",")
}

fn join_pairs(cookies: &[Cookie<'_>]) -> String {
    cookies.iter().map(|c| c.pair).collect::<Vec<_>>().join(",")
}

/// First two letters of the method, lowercased; padded so the prefix keeps
/// its fixed width even for a one-letter method. `_` is a token character a
/// method may hold, but it separates the fingerprint's fields: it becomes `0`,
/// so the fingerprint always splits into its four parts.
fn push_method_code(out: &mut String, token: &str) {
    let start = out.len();
    out.extend(
        token
            .chars()
            .flat_map(char::to_lowercase)
            .map(|c| if c == FIELD_SEPARATOR { '0' } else { c })
            .take(2),
    );
    while out[start..].chars().count() < 2 {
        out.push('0');
    }
}

fn version_code(version: u8) -> &'static str {
    match version {
        10 => "10",
        11 => "11",
        _ => "00",
    }
}

/// The primary language tag: up to the first `,` or `;`, hyphens dropped,
/// lowercased, first four characters, zero-padded. Underscores (POSIX
/// locales, `en_US`) are dropped like hyphens: they mean the same, and kept
/// they would split the fingerprint into five fields.
fn push_language_code(out: &mut String, value: Option<&str>) {
    let primary = value
        .unwrap_or_default()
        .split([',', ';'])
        .next()
        .unwrap_or_default();
    let start = out.len();
    out.extend(
        primary
            .chars()
            .filter(|&c| c != '-' && c != FIELD_SEPARATOR)
            .flat_map(char::to_lowercase)
            .take(4),
    );
    while out[start..].chars().count() < 4 {
        out.push('0');
    }
}

#[cfg(test)]
#[path = "ja4h_tests.rs"]
mod tests;
