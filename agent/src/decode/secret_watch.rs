//! Rotating the API-key hash secret without a restart. The secret file is polled (content, not
//! mtime: a Kubernetes Secret volume swaps a symlink and keeps old mtimes); when it changes to
//! a valid secret, keys are hashed under the new secret and, for one overlap window, also
//! under the previous one. Exchange records then carry both (`api_key_hash`,
//! `api_key_hash_prev`) so the detector, and anyone joining logs, can link a key's history
//! across the rotation. A file that is missing or invalid for a while (mid-swap, a typo) keeps
//! the secret in force and is reported once per distinct problem.

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use sha2::{Digest as _, Sha256};

use crate::decode::ApiKeyHasher;

/// The hasher in force, published by the watcher, read by the assembler.
struct Published {
    generation: AtomicU64,
    hasher: Mutex<ApiKeyHasher>,
}

/// The assembler's end: picks up a new hasher when the generation moved (one atomic load per
/// request otherwise).
pub struct KeyUpdates {
    published: Arc<Published>,
    seen: u64,
}

impl KeyUpdates {
    pub fn refresh(&mut self, hasher: &mut ApiKeyHasher) {
        let g = self.published.generation.load(Ordering::Acquire);
        if g != self.seen {
            *hasher = self
                .published
                .hasher
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            self.seen = g;
        }
    }
}

/// What one poll did.
#[derive(Debug, PartialEq, Eq)]
pub enum Poll {
    Unchanged,
    /// A new valid secret: hashed under both until the overlap ends.
    Rotated,
    /// The overlap window ended: the previous secret is forgotten.
    OverlapEnded,
    /// The file could not be used; the secret in force stays.
    Kept,
}

/// The watcher's end.
pub struct SecretWatch {
    path: PathBuf,
    overlap: Duration,
    published: Arc<Published>,
    /// SHA-256 of the file's trimmed content: enough to see a change without keeping a second
    /// copy of the secret.
    digest: [u8; 32],
    current: ApiKeyHasher,
    overlap_until: Option<Instant>,
    last_problem: Option<String>,
}

/// How often the file is read.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

impl SecretWatch {
    /// Starts from the hasher already built from `path` at start-up.
    pub fn new(
        path: PathBuf,
        current: ApiKeyHasher,
        overlap: Duration,
    ) -> (SecretWatch, KeyUpdates) {
        let digest = std::fs::read(&path).map(|b| digest(&b)).unwrap_or_default();
        let published = Arc::new(Published {
            generation: AtomicU64::new(0),
            hasher: Mutex::new(current.clone()),
        });
        let updates = KeyUpdates {
            published: Arc::clone(&published),
            seen: 0,
        };
        let watch = SecretWatch {
            path,
            overlap,
            published,
            digest,
            current,
            overlap_until: None,
            last_problem: None,
        };
        (watch, updates)
    }

    fn publish(&self, hasher: ApiKeyHasher) {
        *self
            .published
            .hasher
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = hasher;
        self.published.generation.fetch_add(1, Ordering::Release);
    }

    pub fn poll(&mut self, now: Instant) -> Poll {
        let origin = self.path.display().to_string();
        let read = std::fs::read(&self.path)
            .map_err(|e| format!("reading {origin}: {e}"))
            .and_then(|bytes| {
                let d = digest(&bytes);
                if d == self.digest {
                    return Ok(None);
                }
                ApiKeyHasher::from_bytes(&bytes, &origin)
                    .map(|h| Some((h, d)))
                    .map_err(|e| e.to_string())
            });
        match read {
            Ok(Some((new, d))) => {
                let previous = self.current.without_previous();
                self.digest = d;
                self.current = new.without_previous();
                self.overlap_until = Some(now + self.overlap);
                self.last_problem = None;
                self.publish(self.current.with_previous(&previous));
                tracing::info!(
                    overlap = %humantime::format_duration(self.overlap),
                    "API-key hash secret rotated: keys are hashed under both the new and the \
                     previous secret (api_key_hash, api_key_hash_prev) for the overlap"
                );
                Poll::Rotated
            }
            Ok(None) => {
                if self.overlap_until.is_some_and(|t| now >= t) {
                    self.overlap_until = None;
                    self.publish(self.current.clone());
                    tracing::info!("API-key hash overlap ended: previous secret forgotten");
                    Poll::OverlapEnded
                } else {
                    Poll::Unchanged
                }
            }
            Err(problem) => {
                if self.last_problem.as_ref() != Some(&problem) {
                    tracing::warn!("{problem}; the secret in force stays");
                    self.last_problem = Some(problem);
                }
                // The overlap still ends on time: a broken file does not extend it.
                if self.overlap_until.is_some_and(|t| now >= t) {
                    self.overlap_until = None;
                    self.publish(self.current.clone());
                }
                Poll::Kept
            }
        }
    }

    /// Polls every [`POLL_INTERVAL`] on its own thread for the life of the process.
    pub fn spawn(mut self) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name("secret-watch".into())
            .spawn(move || loop {
                std::thread::sleep(POLL_INTERVAL);
                self.poll(Instant::now());
            })
            .map(|_| ())
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes.trim_ascii()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "first-secret-0123456789abcdef";
    const B: &str = "second-secret-fedcba9876543210";

    #[test]
    fn rotation_overlaps_for_one_window_then_ends() {
        let dir = std::env::temp_dir().join(format!("siphon-secret-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("key-hash");
        std::fs::write(&path, format!("{A}\n")).expect("write");
        let start = ApiKeyHasher::from_bytes(A.as_bytes(), "a").expect("a");
        let (mut watch, mut updates) =
            SecretWatch::new(path.clone(), start.clone(), Duration::from_secs(60));
        let mut used = start.clone();
        let t0 = Instant::now();
        let key = b"sk-live-key";
        let under = |s: &str| {
            ApiKeyHasher::from_bytes(s.as_bytes(), "t")
                .expect("secret")
                .hash(key)
        };

        assert_eq!(watch.poll(t0), Poll::Unchanged);
        // Whitespace only: the same secret.
        std::fs::write(&path, format!("  {A}  \n\n")).expect("write");
        assert_eq!(watch.poll(t0), Poll::Unchanged);

        std::fs::write(&path, B).expect("write");
        assert_eq!(watch.poll(t0), Poll::Rotated);
        updates.refresh(&mut used);
        assert_eq!(used.hash(key), under(B), "new secret in force");
        assert_eq!(used.hash_previous(key), Some(under(A)), "old one alongside");

        // A broken file mid-overlap keeps B and does not stretch the window.
        std::fs::write(&path, "short").expect("write");
        assert_eq!(watch.poll(t0 + Duration::from_secs(30)), Poll::Kept);
        std::fs::remove_file(&path).expect("rm");
        assert_eq!(watch.poll(t0 + Duration::from_secs(31)), Poll::Kept);
        std::fs::write(&path, B).expect("write");
        updates.refresh(&mut used);
        assert_eq!(used.hash(key), under(B));
        assert_eq!(used.hash_previous(key), Some(under(A)));

        assert_eq!(watch.poll(t0 + Duration::from_secs(59)), Poll::Unchanged);
        assert_eq!(watch.poll(t0 + Duration::from_secs(60)), Poll::OverlapEnded);
        updates.refresh(&mut used);
        assert_eq!(used.hash(key), under(B));
        assert_eq!(used.hash_previous(key), None, "overlap over");
        assert_eq!(watch.poll(t0 + Duration::from_secs(90)), Poll::Unchanged);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
