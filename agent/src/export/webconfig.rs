//! `--web-config-file`: TLS, client certificates and basic auth for the metrics listener, in
//! the Prometheus exporter-toolkit format (the file node_exporter's `--web.config.file` reads),
//! so one file and one set of bcrypt hashes serve every exporter on a node.
//!
//! Supported keys: `tls_server_config.{cert_file, key_file, client_auth_type, client_ca_file,
//! min_version, max_version}` and `basic_auth_users`. Any other key is refused by name rather
//! than ignored: silently skipping, say, `cipher_suites` would serve weaker TLS than the
//! operator asked for.

use std::{
    collections::{BTreeMap, HashSet},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use axum::{
    extract::{Request, State},
    http::{header, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    Router,
};
use base64::Engine as _;
use rustls::{
    pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer},
    server::WebPkiClientVerifier,
    RootCertStore, ServerConfig,
};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{server::TlsStream, TlsAcceptor};

pub use super::webconfig_reload::LiveWebConfig;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileFormat {
    tls_server_config: Option<TlsFormat>,
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFormat {
    cert_file: PathBuf,
    key_file: PathBuf,
    #[serde(default)]
    client_auth_type: Option<String>,
    #[serde(default)]
    client_ca_file: Option<PathBuf>,
    #[serde(default)]
    min_version: Option<String>,
    #[serde(default)]
    max_version: Option<String>,
}

/// What the listener enforces.
pub struct WebConfig {
    pub tls: Option<Arc<ServerConfig>>,
    pub auth: Option<Arc<BasicAuth>>,
    /// The files the TLS settings name (certificate, key, client CA), resolved: a change to
    /// any of them is a change of the config (see webconfig_reload.rs).
    pub files: Vec<PathBuf>,
}

impl WebConfig {
    /// `--web-config-file`, or plain HTTP without it.
    pub fn load(path: Option<&Path>) -> anyhow::Result<WebConfig> {
        match path {
            Some(p) => Self::from_file(p),
            None => Ok(WebConfig {
                tls: None,
                auth: None,
                files: Vec::new(),
            }),
        }
    }

    pub fn from_file(path: &Path) -> anyhow::Result<WebConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading --web-config-file {}", path.display()))?;
        // Relative certificate paths are relative to the config file, as in exporter-toolkit.
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base).with_context(|| format!("--web-config-file {}", path.display()))
    }

    pub fn parse(text: &str, base: &Path) -> anyhow::Result<WebConfig> {
        // An empty file is a valid config that turns nothing on.
        let f: FileFormat = if text.trim().is_empty() {
            FileFormat::default()
        } else {
            serde_norway::from_str(text)?
        };
        let files = f.tls_server_config.as_ref().map_or_else(Vec::new, |t| {
            [
                Some(&t.cert_file),
                Some(&t.key_file),
                t.client_ca_file.as_ref(),
            ]
            .into_iter()
            .flatten()
            .map(|p| base.join(p))
            .collect()
        });
        let tls = f
            .tls_server_config
            .map(|t| tls_config(&t, base).map(Arc::new))
            .transpose()?;
        let auth = f
            .basic_auth_users
            .map(BasicAuth::new)
            .transpose()?
            .map(Arc::new);
        Ok(WebConfig { tls, auth, files })
    }
}

fn tls_config(t: &TlsFormat, base: &Path) -> anyhow::Result<ServerConfig> {
    let at = |p: &Path| base.join(p);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(at(&t.cert_file))
        .with_context(|| format!("cert_file {}", t.cert_file.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("cert_file {}", t.cert_file.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "cert_file {}: no certificate",
        t.cert_file.display()
    );
    let key = PrivateKeyDer::from_pem_file(at(&t.key_file))
        .with_context(|| format!("key_file {}", t.key_file.display()))?;
    let versions = versions(t.min_version.as_deref(), t.max_version.as_deref())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)?;
    let auth_type = t.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let roots = || -> anyhow::Result<Arc<RootCertStore>> {
        let ca = t
            .client_ca_file
            .as_ref()
            .with_context(|| format!("client_auth_type {auth_type} needs client_ca_file"))?;
        let mut store = RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(at(ca))
            .with_context(|| format!("client_ca_file {}", ca.display()))?
        {
            store.add(c.with_context(|| format!("client_ca_file {}", ca.display()))?)?;
        }
        anyhow::ensure!(
            !store.is_empty(),
            "client_ca_file {}: no certificate",
            ca.display()
        );
        Ok(Arc::new(store))
    };
    let builder = match auth_type {
        "NoClientCert" => builder.with_no_client_auth(),
        "RequireAndVerifyClientCert" => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(roots()?, provider).build()?,
        ),
        "VerifyClientCertIfGiven" => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(roots()?, provider)
                .allow_unauthenticated()
                .build()?,
        ),
        // Accepting a certificate without verifying it authenticates nobody.
        "RequestClientCert" | "RequireAnyClientCert" => anyhow::bail!(
            "client_auth_type {auth_type} (certificates accepted unverified) is not supported: \
             use RequireAndVerifyClientCert or VerifyClientCertIfGiven"
        ),
        other => anyhow::bail!(
            "client_auth_type {other:?}: expected NoClientCert, RequireAndVerifyClientCert or \
             VerifyClientCertIfGiven"
        ),
    };
    Ok(builder.with_single_cert(certs, key)?)
}

/// rustls speaks TLS 1.2 and 1.3 only: an older minimum is raised to 1.2 (stricter than asked,
/// never weaker), with a warning.
fn versions(
    min: Option<&str>,
    max: Option<&str>,
) -> anyhow::Result<Vec<&'static rustls::SupportedProtocolVersion>> {
    let rank = |v: &str| -> anyhow::Result<u8> {
        Ok(match v {
            "TLS10" => 10,
            "TLS11" => 11,
            "TLS12" => 12,
            "TLS13" => 13,
            other => anyhow::bail!("TLS version {other:?}: expected TLS10, TLS11, TLS12 or TLS13"),
        })
    };
    let lo = min.map(rank).transpose()?.unwrap_or(12);
    let hi = max.map(rank).transpose()?.unwrap_or(13);
    if lo < 12 {
        tracing::warn!(
            "web config: min_version below TLS12 is raised to TLS12 (rustls has no older TLS)"
        );
    }
    let mut out = Vec::new();
    if lo <= 12 && hi >= 12 {
        out.push(&rustls::version::TLS12);
    }
    if hi >= 13 {
        out.push(&rustls::version::TLS13);
    }
    anyhow::ensure!(
        !out.is_empty(),
        "min_version/max_version leave no TLS version rustls speaks (TLS12, TLS13)"
    );
    Ok(out)
}

/// At most this many successful (user, password) checks are remembered: bcrypt costs tens of
/// milliseconds by design and Prometheus sends the same credentials every scrape.
const AUTH_CACHE_ENTRIES: usize = 1024;

/// A bcrypt hash of a random password at `cost`, checked for unknown users so that the answer
/// takes as long as for a known one (no user enumeration by timing).
fn dummy_hash(cost: u32) -> String {
    let mut pw = [0u8; 16];
    let _ = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut pw));
    bcrypt::hash(pw, cost).unwrap_or_default()
}

/// `basic_auth_users`: user → bcrypt hash.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    /// SHA-256 of (user, hash, password) for checks that passed; never the password itself.
    cache: Mutex<HashSet<[u8; 32]>>,
    /// What an unknown user's password is checked against, made on first use (off the async
    /// threads, as every bcrypt call) at `dummy_cost`.
    dummy: std::sync::OnceLock<String>,
    /// The highest cost among the configured hashes, so an unknown user's check takes as long
    /// as a known one's (at bcrypt's default cost it took several times longer than checks of
    /// users hashed at a lower cost, and seconds on a loaded machine).
    dummy_cost: u32,
}

impl BasicAuth {
    fn new(users: BTreeMap<String, String>) -> anyhow::Result<BasicAuth> {
        let mut cost = None;
        for (user, hash) in &users {
            let parts = hash.parse::<bcrypt::HashParts>().map_err(|e| {
                anyhow::anyhow!("basic_auth_users {user:?}: not a bcrypt hash ({e})")
            })?;
            cost = cost.max(Some(parts.get_cost()));
        }
        Ok(BasicAuth {
            users,
            cache: Mutex::new(HashSet::new()),
            dummy: std::sync::OnceLock::new(),
            dummy_cost: cost.unwrap_or(bcrypt::DEFAULT_COST),
        })
    }

    /// Whether an `Authorization` header value names a user with the right password.
    pub async fn check(self: Arc<Self>, header: Option<Vec<u8>>) -> bool {
        let Some((user, password)) = header.as_deref().and_then(basic_credentials) else {
            return false;
        };
        let known = self.users.contains_key(&user);
        let hash = self.users.get(&user).cloned();
        let fingerprint: [u8; 32] = {
            let mut d = Sha256::new();
            let h = hash.as_deref().unwrap_or_default();
            for part in [user.as_bytes(), h.as_bytes(), &password] {
                d.update((part.len() as u64).to_le_bytes());
                d.update(part);
            }
            d.finalize().into()
        };
        if known && self.lock().contains(&fingerprint) {
            return true;
        }
        // bcrypt blocks for tens of milliseconds: off the async thread.
        let auth = Arc::clone(&self);
        let ok = tokio::task::spawn_blocking(move || {
            let hash = hash.unwrap_or_else(|| {
                auth.dummy
                    .get_or_init(|| dummy_hash(auth.dummy_cost))
                    .clone()
            });
            bcrypt::verify(&password, &hash)
        })
        .await
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or(false);
        if ok && known {
            let mut cache = self.lock();
            if cache.len() >= AUTH_CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(fingerprint);
        }
        ok && known
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<[u8; 32]>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `Basic base64(user:password)` → (user, password).
fn basic_credentials(value: &[u8]) -> Option<(String, Vec<u8>)> {
    let rest = value
        .strip_prefix(b"Basic ")
        .or_else(|| value.strip_prefix(b"basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim_ascii())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(decoded.get(..colon)?.to_vec()).ok()?;
    Some((user, decoded.get(colon + 1..)?.to_vec()))
}

/// Paths answered without credentials: the kubelet's probes carry none, and they tell nothing
/// but up/ready.
const OPEN_PATHS: &[&str] = &["/healthz", "/readyz"];

/// Checks against the users of the config in force at the request (reloads apply at once).
async fn require_auth(
    State(live): State<Arc<LiveWebConfig>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(auth) = live.current().auth.clone() else {
        return next.run(req).await;
    };
    if OPEN_PATHS.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes().to_vec());
    if auth.check(header).await {
        next.run(req).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"siphon\"")],
            "unauthorized\n",
        )
            .into_response()
    }
}

/// Wraps the routes in basic auth whenever a config file is given: its users may be added by
/// a reload.
pub fn with_auth(app: Router, live: &Arc<LiveWebConfig>) -> Router {
    if live.from_file() {
        app.layer(axum::middleware::from_fn_with_state(
            Arc::clone(live),
            require_auth,
        ))
    } else {
        app
    }
}

/// Serves `app` on `listener`, over TLS when configured, until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    live: Arc<LiveWebConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = with_auth(app, &live);
    if live.serves_tls() {
        axum::serve(TlsListener::new(listener, live), app)
            .with_graceful_shutdown(shutdown)
            .await
    } else {
        // Plain HTTP: connections bounded in number and idle time (limits.rs). With TLS the
        // handshakes are bounded (MAX_HANDSHAKES, HANDSHAKE_TIMEOUT) instead.
        axum::serve(super::limits::bounded(listener), app)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

/// Handshakes in flight at once: a bound against clients that open connections and stall.
const MAX_HANDSHAKES: usize = 64;
/// A handshake not done by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A listener whose connections have completed a TLS handshake. Handshakes run in their own
/// tasks, so one slow or plain-HTTP client does not hold up the others.
pub struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, std::net::SocketAddr)>,
    local: std::io::Result<std::net::SocketAddr>,
}

impl TlsListener {
    /// Each handshake uses the TLS settings in force when its connection arrives, so a
    /// rotated certificate serves new connections at once.
    pub fn new(tcp: TcpListener, live: Arc<LiveWebConfig>) -> TlsListener {
        let local = tcp.local_addr();
        let (tx, rx) = tokio::sync::mpsc::channel(MAX_HANDSHAKES);
        let permits = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                    return;
                };
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors and the like: wait rather than spin.
                        tracing::warn!("metrics listener: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                // A reload never turns TLS off (webconfig_reload.rs); were it absent, the
                // connection is dropped rather than served in the clear.
                let Some(cfg) = live.current().tls.clone() else {
                    continue;
                };
                let (acceptor, conn_tx) = (TlsAcceptor::from(cfg), tx.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = conn_tx.send((tls, peer)).await;
                        }
                        // Plain HTTP, unknown client certificates and scanners end here.
                        Ok(Err(e)) => tracing::debug!("metrics listener: TLS handshake: {e}"),
                        Err(_) => tracing::debug!("metrics listener: TLS handshake timed out"),
                    }
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        TlsListener { rx, local }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept task ended, which it does only when this listener is gone.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        match &self.local {
            Ok(a) => Ok(*a),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        }
    }
}

#[cfg(test)]
#[path = "webconfig_tests.rs"]
mod tests;
