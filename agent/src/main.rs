//! `siphon`: network telemetry for AI-inference clusters. See README.md.

use siphon_agent::cmd::{args, replay, run};

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    init_tracing(&cli.log_level);
    let result = match cli.command {
        args::Command::Run(args) => run::run(*args),
        args::Command::Replay(args) => replay::replay(args),
        args::Command::Detect(args) => detect_cmd(args),
        args::Command::Version => {
            println!("siphon {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` prints the whole context chain on one line: what failed and why.
            eprintln!("siphon: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn detect_cmd(args: args::DetectArgs) -> anyhow::Result<()> {
    use siphon_agent::{cmd::detect as offline, detect::config::Config};
    let config = match &args.config {
        Some(p) => Config::from_file(p)?,
        None => Config::default(),
    };
    offline::run(&offline::Options {
        logs: args.logs,
        config,
        events: args.events,
        metrics_out: args.metrics_out,
        summary_out: args.summary,
        scores_out: args.scores_out,
        scores_every_s: args.scores_every,
        top: args.top,
        quiet: args.quiet,
    })?;
    Ok(())
}

fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
