//! `cargo xtask fuzz --minutes N`: the cargo-fuzz targets in `fuzz/` (one per parser of outside
//! bytes), N minutes in total split evenly over them, each from seeds generated here
//! (`seeds`) plus the corpus earlier runs grew. Reports executions per target and writes
//! `target/fuzz/summary.{json,md}`; a crash, hang or memory blow-up fails the run and leaves
//! its input under `target/fuzz/artifacts/<target>/`.
//!
//! `cargo xtask test` runs the same with a short budget from the seeds alone (`smoke`).

mod dicts;
mod records;
mod seeds;

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

use crate::cmd::{run, workspace_root};

/// Every target, with the parser it drives (fuzz/fuzz_targets/<name>.rs).
pub const TARGETS: &[(&str, &str)] = &[
    (
        "http_request",
        "decode::parse_request_head, JA4H, client_ip",
    ),
    (
        "http_response",
        "decode::parse_response_head (status, chunked, SSE)",
    ),
    (
        "tls_hello",
        "decode::ClientHello::parse_records/parse_handshake, JA4",
    ),
    ("ja4t", "decode::Ja4t/Ja4ts (TCP SYN options)"),
    (
        "forwarded",
        "decode::ForwardedChain (X-Forwarded-For, Forwarded)",
    ),
    (
        "api_key",
        "decode::ApiKeyHasher::hash_header, ApiKeyHasher::new",
    ),
    (
        "ring_records",
        "events::parse (ring-buffer records) into assemble::Assembler",
    ),
    (
        "turn_framing",
        "assemble split: pipelined heads, Content-Length, chunked, 1xx",
    ),
    ("capture", "replay::from_bytes/next_frame (pcap, pcapng)"),
    (
        "exchange_log",
        "detect::input::parse_line into the Detector",
    ),
    (
        "detect_config",
        "detect::config::Config::parse (TOML) into the Detector",
    ),
];

/// The smoke run inside `cargo xtask test`: about two minutes of fuzzing in all.
const SMOKE_SECONDS_PER_TARGET: u64 = 11;
/// An input running longer than this is a hang.
const INPUT_TIMEOUT_SECONDS: u64 = 10;
/// A target above this much memory has a leak or an unbounded allocation.
const RSS_LIMIT_MB: u64 = 2048;
/// A target not done this long after its budget is stuck (libFuzzer stops at its budget).
const GRACE_SECONDS: u64 = 60;

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Minutes of fuzzing in total, split evenly over the targets.
    #[arg(long, default_value_t = 10.0)]
    pub minutes: f64,
    /// Only these targets (repeatable); default: all.
    #[arg(long = "target")]
    pub targets: Vec<String>,
    /// The short run of `cargo xtask test` instead: 11 s per target, from the seeds alone.
    #[arg(long, conflicts_with = "minutes")]
    pub smoke: bool,
}

/// What one target's run gave.
#[derive(serde::Serialize)]
struct Outcome {
    target: String,
    parser: String,
    seconds: u64,
    executions: Option<u64>,
    executions_per_second: Option<u64>,
    corpus_inputs: usize,
    /// `ok`, or what libFuzzer found (`crash`, `timeout`, `oom`, `leak`) or `error`.
    result: String,
    artifacts: Vec<String>,
    log: String,
}

pub fn fuzz(args: &FuzzArgs) -> anyhow::Result<()> {
    let targets = selected(&args.targets)?;
    if args.smoke {
        return run_targets(&targets, SMOKE_SECONDS_PER_TARGET, Corpus::Fresh);
    }
    let budget = (args.minutes * 60.0).max(1.0);
    let per_target = ((budget / targets.len() as f64).round() as u64).max(1);
    run_targets(&targets, per_target, Corpus::Kept)
}

/// Where a run starts from.
#[derive(Clone, Copy, PartialEq)]
enum Corpus {
    /// The seeds plus `target/fuzz/corpus/<target>/`, which the run grows.
    Kept,
    /// The seeds alone, in a directory emptied first: replaying a corpus that long runs grew
    /// to thousands of inputs would eat a short budget and make it unpredictable.
    Fresh,
}

/// The bounded run of `cargo xtask test`.
pub fn smoke() -> anyhow::Result<()> {
    let targets = selected(&[])?;
    run_targets(&targets, SMOKE_SECONDS_PER_TARGET, Corpus::Fresh)
}

fn selected(names: &[String]) -> anyhow::Result<Vec<(&'static str, &'static str)>> {
    if names.is_empty() {
        return Ok(TARGETS.to_vec());
    }
    names
        .iter()
        .map(|n| {
            TARGETS
                .iter()
                .find(|(t, _)| t == n)
                .copied()
                .with_context(|| format!("no fuzz target {n:?}; targets: {}", target_names()))
        })
        .collect()
}

fn target_names() -> String {
    TARGETS
        .iter()
        .map(|(t, _)| *t)
        .collect::<Vec<_>>()
        .join(", ")
}

fn run_targets(targets: &[(&str, &str)], seconds: u64, corpus: Corpus) -> anyhow::Result<()> {
    crate::setup::ensure_cargo_fuzz()?;
    let root = workspace_root();
    // Without the `xtask/..` detour, so the paths printed are the ones to type.
    let root = root.canonicalize().unwrap_or(root);
    let out = root.join("target/fuzz");
    let started = Instant::now();
    let binaries = build(&root)?;
    let built_s = started.elapsed().as_secs();
    let shared = root.join("../shared/data/ja4");
    let seed_dir = out.join("seeds");
    // Regenerated every run: they follow the code and the shared captures.
    let _ = fs::remove_dir_all(&seed_dir);
    seeds::write_all(&root, &shared, &seed_dir)?;
    let mut outcomes = Vec::new();
    for (target, parser) in targets {
        let o = run_one(&binaries, &out, target, parser, seconds, corpus)?;
        eprintln!(
            "xtask: fuzz {target}: {} in {} s, {} executions ({}/s), corpus {}",
            o.result,
            o.seconds,
            o.executions.map_or("?".into(), |n| n.to_string()),
            o.executions_per_second
                .map_or("?".into(), |n| n.to_string()),
            o.corpus_inputs,
        );
        outcomes.push(o);
    }
    write_summary(&out, &outcomes, built_s)?;
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.result != "ok").collect();
    if !failed.is_empty() {
        for o in &failed {
            eprintln!(
                "xtask: fuzz {}: {}; input(s): {}; log: {}",
                o.target,
                o.result,
                o.artifacts.join(", "),
                o.log
            );
        }
        bail!(
            "fuzzing found {} failing target(s); reproduce with \
             `fuzz/target/x86_64-unknown-linux-gnu/release/<target> <input>`, then add a \
             regression test next to the parser",
            failed.len()
        );
    }
    eprintln!(
        "xtask: fuzzing done: {} targets, build {built_s} s, total {} s; {}",
        outcomes.len(),
        started.elapsed().as_secs(),
        out.join("summary.md").display()
    );
    Ok(())
}

/// Builds every target with cargo-fuzz's flags (nightly, AddressSanitizer, coverage, debug
/// assertions and overflow checks) into fuzz/target; returns the binaries' directory.
///
/// CARGO_TARGET_DIR is dropped so a main-workspace setting does not mix sanitizer builds into
/// the main target directory. The eBPF object that agent/build.rs builds is unaffected by the
/// sanitizer flags: cargo-fuzz passes them in RUSTFLAGS for `--target x86_64-unknown-linux-gnu`
/// only (build scripts run unflagged), and aya-build's nested cargo sets
/// CARGO_ENCODED_RUSTFLAGS, which takes precedence over RUSTFLAGS.
fn build(root: &Path) -> anyhow::Result<PathBuf> {
    let fuzz_dir = root.join("fuzz");
    run(Command::new("cargo")
        .current_dir(&fuzz_dir)
        .env_remove("CARGO_TARGET_DIR")
        .args(["+nightly", "fuzz", "build"]))?;
    Ok(fuzz_dir.join("target/x86_64-unknown-linux-gnu/release"))
}

fn run_one(
    binaries: &Path,
    out: &Path,
    target: &str,
    parser: &str,
    seconds: u64,
    start: Corpus,
) -> anyhow::Result<Outcome> {
    let corpus = match start {
        Corpus::Kept => out.join("corpus").join(target),
        Corpus::Fresh => {
            let d = out.join("smoke-corpus").join(target);
            let _ = fs::remove_dir_all(&d);
            d
        }
    };
    let artifacts = out.join("artifacts").join(target);
    let logs = out.join("logs");
    for d in [&corpus, &artifacts, &logs] {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let log_path = logs.join(format!("{target}.log"));
    let log = fs::File::create(&log_path)?;
    let before: Vec<PathBuf> = list(&artifacts);
    // New inputs go to the first directory (the corpus kept between runs); the seeds are read.
    let mut cmd = Command::new(binaries.join(target));
    if let Some(dict) = dicts::dict_path(&out.join("seeds"), target) {
        cmd.arg(format!("-dict={}", dict.display()));
    }
    let mut child = cmd
        .arg(&corpus)
        .arg(out.join("seeds").join(target))
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECONDS}"))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting fuzz target {target} (built by `cargo fuzz build`?)"))?;
    let deadline = Instant::now() + Duration::from_secs(seconds + GRACE_SECONDS);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() > deadline {
            // Only our own child, by its id.
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = fs::read_to_string(&log_path).unwrap_or_default();
    let found: Vec<String> = list(&artifacts)
        .into_iter()
        .filter(|p| !before.contains(p))
        .map(|p| p.display().to_string())
        .collect();
    let (executions, per_second) = stats(&text);
    let result = match status {
        None => "error: did not stop after its budget".to_owned(),
        Some(s) if s.success() && found.is_empty() => "ok".to_owned(),
        Some(_) => finding(&text, &found),
    };
    Ok(Outcome {
        target: target.to_owned(),
        parser: parser.to_owned(),
        seconds,
        executions,
        executions_per_second: per_second,
        corpus_inputs: list(&corpus).len(),
        result,
        artifacts: found,
        log: log_path.display().to_string(),
    })
}

fn list(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// What kind of failure libFuzzer reported, from its artifact names (`crash-…`, `timeout-…`,
/// `oom-…`, `leak-…`).
fn finding(log: &str, artifacts: &[String]) -> String {
    let kinds = ["crash", "timeout", "oom", "leak", "slow-unit"];
    for a in artifacts {
        let name = Path::new(a)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(k) = kinds.iter().find(|k| name.starts_with(&format!("{k}-"))) {
            return (*k).to_owned();
        }
    }
    let tail: String = log.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
    format!("error: {tail}")
}

/// Executions and executions per second from libFuzzer's final statistics
/// (`stat::number_of_executed_units: N`), else its last `Done N runs in S second(s)` line.
fn stats(log: &str) -> (Option<u64>, Option<u64>) {
    let value = |key: &str| {
        log.lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix(key)?.trim().parse::<u64>().ok())
    };
    let runs = value("stat::number_of_executed_units:").or_else(|| {
        log.lines().rev().find_map(|l| {
            l.trim()
                .strip_prefix("Done ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
    });
    (runs, value("stat::average_exec_per_sec:"))
}

fn write_summary(out: &Path, outcomes: &[Outcome], build_s: u64) -> anyhow::Result<()> {
    let json = serde_json::json!({ "build_seconds": build_s, "targets": outcomes });
    fs::write(
        out.join("summary.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    let mut md = String::from(
        "| target | parser | seconds | executions | exec/s | corpus | result |\n|---|---|---|---|---|---|---|\n",
    );
    for o in outcomes {
        let n = |v: Option<u64>| v.map_or("?".to_owned(), |n| n.to_string());
        md.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} | {} |\n",
            o.target,
            o.parser,
            o.seconds,
            n(o.executions),
            n(o.executions_per_second),
            o.corpus_inputs,
            o.result
        ));
    }
    md.push_str(&format!("\nBuild: {build_s} s.\n"));
    fs::write(out.join("summary.md"), md)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_stats_are_read() {
        let log = "#2\tINITED cov: 1\nDone 123 runs in 2 second(s)\n\
                   stat::number_of_executed_units: 4567\nstat::average_exec_per_sec:     2283\n";
        assert_eq!(stats(log), (Some(4567), Some(2283)));
        assert_eq!(stats("Done 99 runs in 1 second(s)\n"), (Some(99), None));
        assert_eq!(stats("nothing"), (None, None));
    }

    #[test]
    fn findings_are_named_by_their_artifact() {
        let found = vec!["/x/artifacts/ja4t/timeout-abc".to_owned()];
        assert_eq!(finding("", &found), "timeout");
        assert!(finding("a\nb", &[]).starts_with("error: "));
    }

    #[test]
    fn every_target_has_a_source_file() {
        let dir = workspace_root().join("fuzz/fuzz_targets");
        for (t, _) in TARGETS {
            assert!(dir.join(format!("{t}.rs")).is_file(), "{t}");
        }
        let manifest = fs::read_to_string(workspace_root().join("fuzz/Cargo.toml")).unwrap();
        assert_eq!(manifest.matches("[[bin]]").count(), TARGETS.len());
    }

    #[test]
    fn unknown_targets_are_refused() {
        assert!(selected(&["nope".to_owned()]).is_err());
        assert_eq!(selected(&["ja4t".to_owned()]).unwrap().len(), 1);
    }
}
