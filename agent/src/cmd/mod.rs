//! The `siphon` subcommands: flags ([`args`]), `run` (live), `replay` (a capture through the
//! kernel program) and `detect` (the detector over exchange logs).

pub mod args;
pub mod caps;
pub mod detect;
pub mod replay;
pub mod run;

use anyhow::Context as _;

use crate::{
    cmd::args::PipelineArgs,
    decode::ApiKeyHasher,
    pipeline::{assemble::DecodeConfig, services::ServiceMap},
};

/// Environment variable holding the API-key hash secret when no file is given.
pub const SECRET_ENV: &str = "SIPHON_KEY_HASH_SECRET";

/// The API-key hasher: from the file, else the environment, else a random per-process secret.
pub fn key_hasher(args: &PipelineArgs) -> anyhow::Result<ApiKeyHasher> {
    if let Some(path) = &args.key_hash_secret_file {
        return ApiKeyHasher::from_file(path)
            .with_context(|| format!("--key-hash-secret-file {}", path.display()));
    }
    if std::env::var_os(SECRET_ENV).is_some() {
        return ApiKeyHasher::from_env(SECRET_ENV).with_context(|| format!("${SECRET_ENV}"));
    }
    tracing::warn!("no API-key hash secret configured: using a random one, so key hashes differ between restarts and nodes");
    let mut secret = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut secret)?;
    Ok(ApiKeyHasher::new(&secret)?)
}

/// How `run` and `replay` attribute what they decode, from the flags they share.
pub fn decode_config(args: &PipelineArgs) -> anyhow::Result<(DecodeConfig, ServiceMap)> {
    let services = ServiceMap::parse(&args.services)?;
    Ok((
        DecodeConfig {
            hasher: key_hasher(args)?,
            key_updates: None,
            trusted_hops: args.trusted_proxy_hops as usize,
        },
        services,
    ))
}

/// With a secret file, a watcher that rotates the hash secret when the file changes (README
/// "Exchange records": `api_key_hash_prev`); started by the caller once privileges are dropped.
pub fn watch_secret(
    args: &PipelineArgs,
    decode: &mut DecodeConfig,
    overlap: std::time::Duration,
) -> Option<crate::decode::secret_watch::SecretWatch> {
    let path = args.key_hash_secret_file.clone()?;
    let (watch, updates) =
        crate::decode::secret_watch::SecretWatch::new(path, decode.hasher.clone(), overlap);
    decode.key_updates = Some(updates);
    Some(watch)
}
