//! The `siphon replay` command: arguments to options, summary to the terminal.

use crate::{
    cmd::{args::ReplayArgs, decode_config},
    replay::{self, ReplayOptions},
};

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
            .unwrap_or(crate::kernel::object::REPLAY_HEAD_CAPTURE_BYTES),
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
