//! Pure decoders for bytes captured off the wire: HTTP/1.x heads, TLS
//! ClientHello, TCP SYN options, and the JA4 family of fingerprints built
//! from them.
//!
//! Every entry point takes untrusted bytes and returns `Result`/`Option`;
//! nothing here panics, allocates without a bound, or keeps a raw API key.

mod api_key;
mod forwarded;
mod header_names;
mod http_request;
mod http_response;
mod ja4;
mod ja4h;
mod ja4t;
mod route;
pub mod secret_watch;
mod text;
mod tls_hello;
mod user_agent;

#[cfg(test)]
mod reference_tests;
#[cfg(test)]
mod robustness_tests;
#[cfg(test)]
mod test_capture;
#[cfg(test)]
mod test_hello;

pub use api_key::{ApiKeyHash, ApiKeyHasher, SecretError, MIN_SECRET_LEN};
// Public for the fuzz targets (fuzz/): the chain is parsed from header values on its own.
pub use forwarded::{ForwardedChain, MAX_FORWARDED};
pub use header_names::HeaderNames;
pub use http_request::{client_ip, parse_request_head, Method, RequestHead};
pub use http_response::{parse_response_head, status_class_label, ResponseHead};
pub use ja4::{Ja4, Transport};
pub use ja4h::Ja4h;
pub use ja4t::{Ja4t, Ja4ts};
pub use route::Route;
pub use tls_hello::ClientHello;
pub use user_agent::UaFamily;

/// Header slots for httparse, left uninitialised: it writes the ones it fills, and zeroing a
/// hundred and more of them (32 bytes each) cost more than parsing a typical head.
pub(crate) fn header_slots<'b, const N: usize>() -> [std::mem::MaybeUninit<httparse::Header<'b>>; N]
{
    [const { std::mem::MaybeUninit::uninit() }; N]
}

/// Why a decoder gave up. Variants carry only static context, never input
/// bytes, so an error can be logged without leaking captured payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("input is empty")]
    Empty,
    #[error("input ends before the {0} is complete")]
    Truncated(&'static str),
    #[error("malformed HTTP {0}")]
    HttpSyntax(&'static str),
    #[error("HTTP head has more than {max} header lines", max = http_request::MAX_HEADERS)]
    TooManyHeaders,
    #[error("TLS record is not a handshake record")]
    TlsNotHandshake,
    #[error("TLS handshake message is not a ClientHello")]
    TlsNotClientHello,
    #[error("SSLv2-framed ClientHello is not supported")]
    TlsSslv2,
    #[error("TLS {0} length is inconsistent")]
    TlsBadLength(&'static str),
    #[error("TLS {0} exceeds the decoder's size limit")]
    TlsTooLarge(&'static str),
}

impl DecodeError {
    /// A short, fixed label for metrics; the set is closed so it is safe to
    /// use as a Prometheus label value.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::Truncated(_) => "truncated",
            Self::HttpSyntax(_) => "http_syntax",
            Self::TooManyHeaders => "http_too_many_headers",
            Self::TlsNotHandshake => "tls_not_handshake",
            Self::TlsNotClientHello => "tls_not_client_hello",
            Self::TlsSslv2 => "tls_sslv2",
            Self::TlsBadLength(_) => "tls_bad_length",
            Self::TlsTooLarge(_) => "tls_too_large",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_distinct_snake_case_labels() {
        let all = [
            DecodeError::Empty,
            DecodeError::Truncated("x"),
            DecodeError::HttpSyntax("x"),
            DecodeError::TooManyHeaders,
            DecodeError::TlsNotHandshake,
            DecodeError::TlsNotClientHello,
            DecodeError::TlsSslv2,
            DecodeError::TlsBadLength("x"),
            DecodeError::TlsTooLarge("x"),
        ];
        let mut seen = std::collections::HashSet::new();
        for e in all {
            let r = e.reason();
            assert!(seen.insert(r), "duplicate reason {r}");
            assert!(
                r.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{r}"
            );
            assert!(!e.to_string().is_empty());
        }
    }
}
