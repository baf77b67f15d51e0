//! The `siphon replay` command: arguments to options, summary to the terminal.

use anyhow::Context as _;

use crate::{
    assemble::DecodeConfig,
    cli::{PipelineArgs, ReplayArgs},
    decode::ApiKeyHasher,
    replay::{self, ReplayOptions},
    services::ServiceMap,
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

pub fn decode_config(args: &PipelineArgs) -> anyhow::Result<(DecodeConfig, ServiceMap)> {
    let services = ServiceMap::parse(&args.services)?;
    Ok((
        DecodeConfig {
            hasher: key_hasher(args)?,
            trusted_hops: args.trusted_proxy_hops as usize,
        },
        services,
    ))
}

pub fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let (decode, services) = decode_config(&args.pipeline)?;
    let summary = replay::replay(ReplayOptions {
        capture: args.capture.clone(),
        json: args.json.clone(),
        metrics_out: args.metrics_out.clone(),
        decode,
        services,
        head_capture_bytes: args
            .pipeline
            .head_capture_bytes
            .unwrap_or(agent_common::CAPTURE_MAX as u32),
        progress: !args.quiet,
    })?;
    eprintln!(
        "replay: {}: {} packets ({} skipped), {} exchanges, {} TLS ClientHellos",
        args.capture.display(),
        summary.packets,
        summary.skipped,
        summary.exchanges,
        summary.hellos
    );
    if let Some(w) = summary.warning {
        eprintln!("replay: warning: {w}");
    }
    Ok(())
}
