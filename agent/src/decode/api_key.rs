//! API keys are identities worth counting but secrets worth nothing to keep:
//! they are turned into a keyed hash the moment they are seen, and the raw
//! bytes never reach a returned value, a `Debug` string, or an error.

use std::{fmt, path::Path};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Shorter HMAC keys make the hashes guessable offline for short API keys.
pub const MIN_SECRET_LEN: usize = 16;

/// First 16 bytes of HMAC-SHA256(secret, api_key): enough to tell keys apart
/// in metrics, useless for recovering the key without the secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ApiKeyHash(pub [u8; 16]);

impl ApiKeyHash {
    /// Lowercase hex, as `Display` writes it: 32 ASCII bytes encoded in one pass, since every
    /// request's report carries it (per-byte `write!` was a visible share of the pipeline).
    pub fn to_hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut hex = String::with_capacity(2 * self.0.len());
        for b in self.0 {
            hex.push(DIGITS[usize::from(b >> 4)] as char);
            hex.push(DIGITS[usize::from(b & 0xf)] as char);
        }
        hex
    }
}

impl fmt::Display for ApiKeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ApiKeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeyHash({self})")
    }
}

/// Why the hashing secret could not be loaded. The secret itself is never
/// part of the message.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("API key hashing secret file {path} could not be read: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("environment variable {0} holding the API key hashing secret is not set")]
    MissingEnv(String),
    #[error("API key hashing secret from {0} is empty")]
    Empty(String),
    #[error(
        "API key hashing secret from {origin} is {len} bytes; at least {min} are required",
        min = MIN_SECRET_LEN
    )]
    TooShort { origin: String, len: usize },
    #[error(
        "API key hashing secret from {origin} is {why}, not a random secret: \
         make one with `openssl rand -hex 32 > secret` (Kubernetes: `kubectl -n siphon \
         create secret generic siphon-key-hash --from-file=key-hash=<(openssl rand -hex 32)`)"
    )]
    Placeholder { origin: String, why: &'static str },
}

/// Words that mark a secret copied from documentation or a manifest rather than generated,
/// lower case, with the reason given.
const PLACEHOLDER_WORDS: &[(&str, &str)] = &[
    ("replace-me", "a placeholder (it contains \"REPLACE-ME\")"),
    ("changeme", "a placeholder (it contains \"changeme\")"),
    ("example", "a placeholder (it contains \"example\")"),
    ("placeholder", "a placeholder (it contains \"placeholder\")"),
];

/// Why a secret is a known placeholder, if it is one: it contains a placeholder word
/// (case-insensitive) or is one byte repeated.
fn placeholder_reason(secret: &[u8]) -> Option<&'static str> {
    let lower = secret.to_ascii_lowercase();
    let contains = |word: &str| lower.windows(word.len()).any(|w| w == word.as_bytes());
    if let Some((_, why)) = PLACEHOLDER_WORDS.iter().find(|(w, _)| contains(w)) {
        return Some(why);
    }
    match secret.split_first() {
        Some((first, rest)) if rest.iter().all(|b| b == first) => Some("one byte repeated"),
        _ => None,
    }
}

#[derive(Clone)]
pub struct ApiKeyHasher {
    mac: Hmac<Sha256>,
    /// The secret in force before a rotation, while the overlap window lasts
    /// (`decode::secret_watch`): keys are then hashed under both.
    previous: Option<Hmac<Sha256>>,
}

impl fmt::Debug for ApiKeyHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKeyHasher { .. }")
    }
}

impl ApiKeyHasher {
    pub fn new(secret: &[u8]) -> Result<Self, SecretError> {
        Self::checked(secret, "argument")
    }

    /// A hasher from a secret read elsewhere (surrounding whitespace dropped, as for files);
    /// `origin` names where it came from in errors.
    pub fn from_bytes(secret: &[u8], origin: &str) -> Result<Self, SecretError> {
        Self::checked(secret.trim_ascii(), origin)
    }

    /// This hasher, also hashing under `prev`'s current secret.
    pub fn with_previous(&self, prev: &ApiKeyHasher) -> Self {
        Self {
            mac: self.mac.clone(),
            previous: Some(prev.mac.clone()),
        }
    }

    /// This hasher without the previous secret (the overlap is over).
    pub fn without_previous(&self) -> Self {
        Self {
            mac: self.mac.clone(),
            previous: None,
        }
    }

    /// The key's hash under the previous secret, while there is one.
    pub fn hash_previous(&self, api_key: &[u8]) -> Option<ApiKeyHash> {
        self.previous.as_ref().map(|m| truncated(m, api_key))
    }

    /// Surrounding whitespace is dropped because secret files and variables
    /// nearly always end in a newline the operator did not mean as key bytes.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, SecretError> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| SecretError::Read {
            path: origin.clone(),
            source,
        })?;
        Self::checked(bytes.trim_ascii(), &origin)
    }

    pub fn from_env(var: &str) -> Result<Self, SecretError> {
        use std::os::unix::ffi::OsStrExt as _;
        let value = std::env::var_os(var).ok_or_else(|| SecretError::MissingEnv(var.to_owned()))?;
        Self::checked(value.as_bytes().trim_ascii(), &format!("${var}"))
    }

    fn checked(secret: &[u8], origin: &str) -> Result<Self, SecretError> {
        if secret.is_empty() {
            return Err(SecretError::Empty(origin.to_owned()));
        }
        if secret.len() < MIN_SECRET_LEN {
            return Err(SecretError::TooShort {
                origin: origin.to_owned(),
                len: secret.len(),
            });
        }
        if let Some(why) = placeholder_reason(secret) {
            return Err(SecretError::Placeholder {
                origin: origin.to_owned(),
                why,
            });
        }
        // HMAC accepts keys of any length, so this cannot fail; map it anyway
        // rather than unwrap.
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
            .map_err(|_| SecretError::Empty(origin.to_owned()))?;
        Ok(Self {
            mac,
            previous: None,
        })
    }

    pub fn hash(&self, api_key: &[u8]) -> ApiKeyHash {
        truncated(&self.mac, api_key)
    }

    /// Hashes the key carried by one request header, if the header is one
    /// that carries keys: `Authorization: Bearer`, `x-api-key`, `api-key`.
    pub fn hash_header(&self, name: &str, value: &[u8]) -> Option<ApiKeyHash> {
        api_key_in_header(name, value).map(|k| self.hash(k))
    }
}

fn truncated(mac: &Hmac<Sha256>, api_key: &[u8]) -> ApiKeyHash {
    let mut mac = mac.clone();
    mac.update(api_key);
    let full = mac.finalize().into_bytes();
    let mut out = [0u8; 16];
    for (o, b) in out.iter_mut().zip(full.iter()) {
        *o = *b;
    }
    ApiKeyHash(out)
}

/// The key bytes inside a header value, borrowed from the input so the
/// caller can hash them without ever owning a copy.
pub(crate) fn api_key_in_header<'a>(name: &str, value: &'a [u8]) -> Option<&'a [u8]> {
    let value = value.trim_ascii();
    let key = if name.eq_ignore_ascii_case("authorization") {
        bearer_token(value)?
    } else if name.eq_ignore_ascii_case("x-api-key") || name.eq_ignore_ascii_case("api-key") {
        value
    } else {
        return None;
    };
    (!key.is_empty()).then_some(key)
}

fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer";
    let scheme = value.get(..SCHEME.len())?;
    let rest = value.get(SCHEME.len()..)?;
    // The scheme must be followed by whitespace; "Bearerxyz" is not a token.
    if !scheme.eq_ignore_ascii_case(SCHEME) || !rest.first()?.is_ascii_whitespace() {
        return None;
    }
    Some(rest.trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef-test-secret";

    fn hasher() -> ApiKeyHasher {
        ApiKeyHasher::new(SECRET).unwrap()
    }

    #[test]
    fn hash_is_truncated_hmac_sha256() {
        // RFC 4231 vectors use keys shorter than MIN_SECRET_LEN, so the
        // reference comes from an independent implementation instead.
        let h = ApiKeyHasher::new(b"0123456789abcdef").unwrap();
        let got = h.hash(b"sk-test").to_string();
        assert_eq!(got.len(), 32);
        assert!(got
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(got, REFERENCE_HMAC_PREFIX);
    }

    // printf 'sk-test' | openssl dgst -sha256 -hmac 0123456789abcdef | cut -c1-32
    const REFERENCE_HMAC_PREFIX: &str = "fa9e1d36d8db096979eaa1a666c567c2";

    #[test]
    fn different_secrets_give_different_hashes() {
        let a = ApiKeyHasher::new(b"0123456789abcdef").unwrap();
        let b = ApiKeyHasher::new(b"fedcba9876543210").unwrap();
        assert_ne!(a.hash(b"k"), b.hash(b"k"));
        assert_eq!(a.hash(b"k"), a.hash(b"k"));
    }

    #[test]
    fn secret_length_is_enforced() {
        assert!(matches!(ApiKeyHasher::new(b""), Err(SecretError::Empty(_))));
        assert!(matches!(
            ApiKeyHasher::new(b"short"),
            Err(SecretError::TooShort { len: 5, .. })
        ));
        assert!(ApiKeyHasher::new(&[0u8; MIN_SECRET_LEN - 1]).is_err());
        assert!(ApiKeyHasher::new(b"0123456789abcdef").is_ok());
    }

    #[test]
    fn placeholder_secrets_are_refused() {
        for bad in [
            &b"REPLACE-ME-with-a-random-secret-of-32-hex-chars"[..],
            b"please-replace-me-0123456789",
            b"ChangeMe-0123456789abcdef",
            b"this-is-an-EXAMPLE-secret-0123",
            b"Placeholder-0123456789abcdef",
            &[0u8; 32],
            &[b'a'; MIN_SECRET_LEN],
            b"00000000000000000000000000000000",
        ] {
            let err = ApiKeyHasher::new(bad).expect_err("placeholder accepted");
            assert!(matches!(err, SecretError::Placeholder { .. }), "{err}");
            let msg = err.to_string();
            assert!(msg.contains("openssl rand -hex 32"), "{msg}");
            assert!(
                !msg.contains(&String::from_utf8_lossy(bad).into_owned()),
                "{msg}"
            );
        }
        // Random-looking secrets, including hex with repeats, are fine.
        for good in [
            &b"3f9a1c7e5b2d4068a1b2c3d4e5f60718"[..],
            b"0000000000000000000000000000000a",
        ] {
            assert!(ApiKeyHasher::new(good).is_ok());
        }
    }

    #[test]
    fn placeholder_refused_from_file_and_env() {
        let dir = std::env::temp_dir().join(format!("siphon-apikey-ph-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("key-hash");
        std::fs::write(&file, b"REPLACE-ME-with-a-random-secret-of-32-hex-chars\n").unwrap();
        let err = ApiKeyHasher::from_file(&file).unwrap_err();
        assert!(matches!(err, SecretError::Placeholder { .. }), "{err}");
        assert!(err.to_string().contains("key-hash"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();

        let var = "SIPHON_TEST_PLACEHOLDER_SECRET_VAR";
        std::env::set_var(var, "changeme-changeme-changeme\n");
        let err = ApiKeyHasher::from_env(var).unwrap_err();
        std::env::remove_var(var);
        assert!(matches!(err, SecretError::Placeholder { .. }), "{err}");
        assert!(err.to_string().contains(var), "{err}");
    }

    #[test]
    fn from_file_trims_and_reports_path() {
        let dir = std::env::temp_dir().join(format!("siphon-apikey-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();

        let good = dir.join("good");
        std::fs::write(&good, b"0123456789abcdef\n").unwrap();
        let from_file = ApiKeyHasher::from_file(&good).unwrap();
        assert_eq!(
            from_file.hash(b"k"),
            ApiKeyHasher::new(b"0123456789abcdef").unwrap().hash(b"k")
        );

        let blank = dir.join("blank");
        std::fs::write(&blank, b" \n").unwrap();
        let err = ApiKeyHasher::from_file(&blank).unwrap_err();
        assert!(matches!(err, SecretError::Empty(_)));
        assert!(err.to_string().contains("blank"));

        let short = dir.join("short");
        std::fs::write(&short, b"tiny-secret").unwrap();
        let err = ApiKeyHasher::from_file(&short).unwrap_err();
        assert!(matches!(err, SecretError::TooShort { len: 11, .. }));
        assert!(!err.to_string().contains("tiny-secret"), "{err}");

        let missing = dir.join("missing");
        let err = ApiKeyHasher::from_file(&missing).unwrap_err();
        assert!(matches!(err, SecretError::Read { .. }));
        assert!(err.to_string().contains("missing"), "{err}");

        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn from_env_reports_missing_variable() {
        let var = "SIPHON_TEST_SURELY_UNSET_SECRET_VAR";
        let err = ApiKeyHasher::from_env(var).unwrap_err();
        assert!(matches!(err, SecretError::MissingEnv(_)));
        assert!(err.to_string().contains(var));
    }

    #[test]
    fn key_extraction_table() {
        type Case<'a> = (&'a str, &'a [u8], Option<&'a [u8]>);
        let cases: &[Case] = &[
            ("Authorization", b"Bearer sk-abc", Some(b"sk-abc")),
            ("authorization", b"bearer   sk-abc  ", Some(b"sk-abc")),
            ("AUTHORIZATION", b"BEARER\tsk-abc", Some(b"sk-abc")),
            ("Authorization", b"Bearer", None),
            ("Authorization", b"Bearer ", None),
            ("Authorization", b"Bearersk-abc", None),
            ("Authorization", b"Basic dXNlcjpwYXNz", None),
            ("Authorization", b"", None),
            ("x-api-key", b"sk-ant-123", Some(b"sk-ant-123")),
            ("X-Api-Key", b"  sk-ant-123 ", Some(b"sk-ant-123")),
            ("api-key", b"azure-key", Some(b"azure-key")),
            ("Api-Key", b"", None),
            ("x-api-key", b"\xff\xfe", Some(b"\xff\xfe")),
            ("x-other", b"sk-abc", None),
            ("Proxy-Authorization", b"Bearer sk-abc", None),
        ];
        for (name, value, want) in cases {
            assert_eq!(api_key_in_header(name, value), *want, "{name}: {value:?}");
            let hashed = hasher().hash_header(name, value);
            assert_eq!(hashed, want.map(|k| hasher().hash(k)));
        }
    }

    #[test]
    fn debug_and_errors_never_show_secret() {
        let secret = "super-secret-hmac-key-material";
        let h = ApiKeyHasher::new(secret.as_bytes()).unwrap();
        assert!(!format!("{h:?}").contains(secret));
        let hash = h.hash(b"sk-live-raw-key");
        for s in [format!("{hash:?}"), hash.to_string()] {
            assert!(!s.contains("sk-live-raw-key"));
        }
        let err = ApiKeyHasher::new(b"sk-live-short").unwrap_err();
        assert!(!format!("{err} {err:?}").contains("sk-live-short"));
    }
}
