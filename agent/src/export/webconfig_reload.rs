//! `--web-config-file` re-read without a restart, as exporter-toolkit re-reads it: a rotated
//! certificate (cert-manager rewrites the files, a Secret volume swaps a symlink) or changed
//! users take effect within [`POLL_INTERVAL`], for new connections and requests. The file and
//! the files it names are polled by content, not mtime (a swapped Secret volume keeps old
//! mtimes). A config that does not load keeps the one in force, reported once per distinct
//! problem and in `siphon_web_config_last_reload_successful`. Switching between plain HTTP and
//! TLS changes what the listener is, so it needs a restart and is refused on reload.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use prometheus::{IntCounterVec, IntGauge, Registry};
use sha2::{Digest as _, Sha256};

use super::{registry, webconfig::WebConfig};

/// How often the files are read.
pub const POLL_INTERVAL: Duration = Duration::from_secs(5);

/// The web config in force, shared by the listener, the auth layer and the reloader.
pub struct LiveWebConfig {
    path: Option<PathBuf>,
    tls: bool,
    current: RwLock<Arc<WebConfig>>,
}

impl LiveWebConfig {
    /// `--web-config-file`, or plain HTTP without it. A file that does not load fails start-up.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Arc<LiveWebConfig>> {
        let web = WebConfig::load(path)?;
        Ok(Arc::new(LiveWebConfig {
            path: path.map(Path::to_path_buf),
            tls: web.tls.is_some(),
            current: RwLock::new(Arc::new(web)),
        }))
    }

    pub fn current(&self) -> Arc<WebConfig> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The listener speaks TLS (fixed at start).
    pub fn serves_tls(&self) -> bool {
        self.tls
    }

    /// Settings come from a file, which may change.
    pub fn from_file(&self) -> bool {
        self.path.is_some()
    }

    fn publish(&self, web: WebConfig) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(web);
    }
}

/// What one poll did.
#[derive(Debug, PartialEq, Eq)]
pub enum Poll {
    Unchanged,
    Reloaded,
    /// The files changed but do not load: the config in force stays.
    Kept(String),
}

/// Polls the files behind a [`LiveWebConfig`] and publishes a changed config that loads.
pub struct Reloader {
    live: Arc<LiveWebConfig>,
    path: PathBuf,
    /// SHA-256 over the config file and the files it names, as last loaded or tried.
    digest: [u8; 32],
    last_problem: Option<String>,
    reloads: IntCounterVec,
    last_ok: IntGauge,
}

impl Reloader {
    /// None without a config file (nothing to reload). Registers the reload metrics.
    pub fn new(live: &Arc<LiveWebConfig>, registry: &Registry) -> anyhow::Result<Option<Reloader>> {
        let Some(path) = live.path.clone() else {
            return Ok(None);
        };
        let reloads = registry::counter_vec(
            registry,
            "siphon_web_config_reloads_total",
            "Re-reads of --web-config-file after its files changed, by result (success, failure).",
            &["result"],
        )?;
        let last_ok = registry::register(
            registry,
            IntGauge::new(
                "siphon_web_config_last_reload_successful",
                "1 if the last change to --web-config-file (or the files it names) loaded; 0 if \
                 the previous config is still in force because it did not.",
            )?,
        )?;
        last_ok.set(1);
        let digest = digest(&path, &live.current().files);
        Ok(Some(Reloader {
            live: Arc::clone(live),
            path,
            digest,
            last_problem: None,
            reloads,
            last_ok,
        }))
    }

    pub fn poll(&mut self) -> Poll {
        let now = digest(&self.path, &self.live.current().files);
        if now == self.digest {
            return Poll::Unchanged;
        }
        let loaded = WebConfig::from_file(&self.path).and_then(|web| {
            anyhow::ensure!(
                web.tls.is_some() == self.live.serves_tls(),
                "turning TLS on or off needs a restart"
            );
            Ok(web)
        });
        match loaded {
            Ok(web) => {
                // The digest of the files the new config names, which may differ from the old.
                self.digest = digest(&self.path, &web.files);
                self.live.publish(web);
                self.last_problem = None;
                self.reloads.with_label_values(&["success"]).inc();
                self.last_ok.set(1);
                tracing::info!("web config {} reloaded", self.path.display());
                Poll::Reloaded
            }
            Err(e) => {
                // Tried: not retried until the files change again.
                self.digest = now;
                let problem = format!("{e:#}");
                if self.last_problem.as_deref() != Some(problem.as_str()) {
                    tracing::warn!("{problem}; the previous web config stays in force");
                }
                self.last_problem = Some(problem.clone());
                self.reloads.with_label_values(&["failure"]).inc();
                self.last_ok.set(0);
                Poll::Kept(problem)
            }
        }
    }

    /// Polls on the runtime until the process ends.
    pub fn spawn(mut self) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                self.poll();
            }
        });
    }
}

/// SHA-256 over the contents of the config file and `files` (a missing file hashes as its
/// absence): enough to see a change without keeping copies of keys.
fn digest(path: &Path, files: &[PathBuf]) -> [u8; 32] {
    let mut d = Sha256::new();
    for f in std::iter::once(path).chain(files.iter().map(PathBuf::as_path)) {
        match std::fs::read(f) {
            Ok(bytes) => {
                d.update([1u8]);
                d.update((bytes.len() as u64).to_le_bytes());
                d.update(&bytes);
            }
            Err(_) => d.update([0u8]),
        }
    }
    d.finalize().into()
}
