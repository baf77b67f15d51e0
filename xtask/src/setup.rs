//! `cargo xtask setup`: installs what is missing, and nothing else. Safe to run every time: the
//! README's commands call it first.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

use crate::cmd::{output, run};

/// Debian packages the build and the tests use.
/// - llvm-N-dev: bpf-linker links against it (N is added at run time);
/// - iproute2: `ip netns`, veth pairs, `tc` for the privileged tests;
/// - python3, curl: the lab's inference server and a real HTTP client;
/// - ethtool: inspecting offloads in the end-to-end tests;
/// - bpftool: the restart tests create a stale pinned map and read pinned maps' properties;
/// - haproxy, dante-server, openssl, python3-venv: the lab's TLS ingress, SOCKS relay, lab
///   certificates, and LiteLLM's virtual environment;
/// - prometheus: its `promtool` checks and unit-tests deploy/prometheus's rules;
/// - fonts-dejavu-core: the font `cargo xtask eval` draws its plot's text with.
const TEST_PACKAGES: &[&str] = &[
    "iproute2",
    "python3",
    "curl",
    "ethtool",
    "bpftool",
    "haproxy",
    "dante-server",
    "openssl",
    "python3-venv",
    "prometheus",
    "fonts-dejavu-core",
    // `cargo xtask bench`'s end-to-end runs: TCP throughput and an HTTP load generator.
    "iperf3",
    "wrk",
];

/// LiteLLM, the lab's real LLM router, pinned to a vetted release (1.82.7, 1.82.8 and 1.107.0
/// were compromised). In its own virtual environment: it pulls ~100 packages that would
/// otherwise replace the system's.
const LITELLM: &str = "litellm[proxy]==1.108.7";
const LITELLM_VERSION: &str = "1.108.7";

/// `cargo xtask test` fails on a declared dependency nothing uses.
const CARGO_MACHETE_VERSION: &str = "0.9.2";

#[derive(clap::Args)]
pub struct SetupArgs {
    /// Only what building the `siphon` binary needs (nightly rust-src, LLVM, bpf-linker): no
    /// test packages, Python clients or LiteLLM. The Dockerfile's build stage uses it.
    #[arg(long)]
    pub build_only: bool,
}

/// Everything: what the build, the tests and the lab need.
pub fn setup() -> anyhow::Result<()> {
    setup_with(&SetupArgs { build_only: false })
}

pub fn setup_with(args: &SetupArgs) -> anyhow::Result<()> {
    if !is_debian_like() {
        print_manual_steps();
        bail!("automatic set-up supports Debian and derivatives; follow the steps above");
    }
    ensure_nightly()?;
    let llvm = nightly_llvm_major()?;
    let mut packages: Vec<String> = if args.build_only {
        Vec::new()
    } else {
        TEST_PACKAGES.iter().map(|s| s.to_string()).collect()
    };
    packages.push(format!("llvm-{llvm}-dev"));
    ensure_debian_packages(&packages)?;
    ensure_bpf_linker(llvm)?;
    if args.build_only {
        eprintln!("xtask: build set-up complete (nightly LLVM {llvm}, bpf-linker ready)");
        return Ok(());
    }
    ensure_python_packages()?;
    ensure_litellm()?;
    ensure_cargo_tool("cargo-machete", CARGO_MACHETE_VERSION)?;
    ensure_cargo_fuzz()?;
    warn_without_kubectl();
    eprintln!("xtask: set-up complete (nightly LLVM {llvm}, bpf-linker ready)");
    Ok(())
}

fn is_debian_like() -> bool {
    let Ok(text) = fs::read_to_string("/etc/os-release") else {
        return false;
    };
    text.lines().any(|l| {
        let l = l.trim();
        (l.starts_with("ID=") || l.starts_with("ID_LIKE="))
            && (l.contains("debian") || l.contains("ubuntu"))
    })
}

fn print_manual_steps() {
    eprintln!(
        "Siphon needs, on any distribution:\n\
         1. rustup toolchains `stable` and `nightly`, and `rustup component add rust-src --toolchain nightly`\n\
         2. the LLVM development package whose major version matches `rustc +nightly -vV` (\"LLVM version\"),\n\
            e.g. llvm-22-dev / llvm22-devel\n\
         3. LLVM_PREFIX=<llvm prefix> cargo install bpf-linker --no-default-features --features llvm-<major>\n\
         4. for the tests: iproute2 (ip, tc), python3, curl, ethtool, bpftool\n\
         Then run `cargo xtask test`."
    );
}

fn ensure_nightly() -> anyhow::Result<()> {
    let toolchains =
        output(Command::new("rustup").args(["toolchain", "list"])).context("rustup is required")?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    let components = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))
    .unwrap_or_default();
    if !components.lines().any(|l| l.starts_with("rust-src")) {
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    Ok(())
}

/// The LLVM major version nightly rustc was built with: bpf-linker must match it.
fn nightly_llvm_major() -> anyhow::Result<u32> {
    let vv = output(Command::new("rustc").args(["+nightly", "-vV"]))
        .context("running rustc +nightly -vV")?;
    parse_llvm_major(&vv).context("no \"LLVM version\" in `rustc +nightly -vV`")
}

fn parse_llvm_major(vv: &str) -> Option<u32> {
    let line = vv.lines().find_map(|l| l.strip_prefix("LLVM version: "))?;
    line.split('.').next()?.trim().parse().ok()
}

fn is_installed(package: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_some_and(|s| s.contains("install ok installed"))
}

pub fn ensure_debian_packages(packages: &[String]) -> anyhow::Result<()> {
    let missing: Vec<&String> = packages.iter().filter(|p| !is_installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {missing:?}");
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// Python packages the end-to-end tests and the lab's actors drive real clients with: the
/// official `openai` SDK and `requests` (a second HTTP stack, with its own fingerprints); and
/// `kubernetes-validate`, which checks the rendered manifests against the Kubernetes OpenAPI
/// schemas (offline: the schemas ship in the package).
const PYTHON_PACKAGES: &[(&str, &str)] = &[
    ("openai", "openai>=1,<4"),
    ("requests", "requests>=2,<3"),
    ("kubernetes_validate", "kubernetes-validate>=1.31,<2"),
];

fn ensure_python_packages() -> anyhow::Result<()> {
    for (module, requirement) in PYTHON_PACKAGES {
        let present = Command::new("python3")
            .args(["-c", &format!("import {module}")])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !present {
            run(Command::new("python3").args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                requirement,
            ]))?;
        }
    }
    Ok(())
}

/// `cargo xtask test` renders the manifests with `kubectl kustomize` (kustomize v5). kubectl is
/// not installed here: Debian's `kubernetes-client` (1.20) is too old, and the current one comes
/// from the Kubernetes apt repository, which set-up does not add on its own.
fn warn_without_kubectl() {
    if output(Command::new("kubectl").args(["version", "--client"])).is_none() {
        eprintln!(
            "xtask: warning: no kubectl: `cargo xtask test` needs kubectl >= 1.27 (with kustomize v5) \
             to check deploy/kubernetes; see https://kubernetes.io/docs/tasks/tools/install-kubectl-linux/"
        );
    }
}

fn ensure_litellm() -> anyhow::Result<()> {
    let venv = Path::new(crate::lab::LITELLM_VENV);
    let pip = venv.join("bin/pip");
    let installed = output(Command::new(&pip).args(["show", "litellm"])).is_some_and(|s| {
        s.lines()
            .any(|l| l.trim() == format!("Version: {LITELLM_VERSION}"))
    });
    if installed {
        return Ok(());
    }
    if !pip.exists() {
        run(Command::new("python3").arg("-m").arg("venv").arg(venv))?;
    }
    run(Command::new(&pip).args(["install", "--quiet", "--disable-pip-version-check", LITELLM]))
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
}

/// bpf-linker must be built against the same LLVM major as nightly; a stamp next to it records
/// which one it was built for, so a nightly upgrade triggers a rebuild and nothing else does.
fn ensure_bpf_linker(llvm: u32) -> anyhow::Result<()> {
    let home = cargo_home();
    let stamp = home.join("siphon-bpf-linker.llvm");
    let linker_ok = output(Command::new(home.join("bin/bpf-linker")).arg("--version")).is_some();
    let stamped = fs::read_to_string(&stamp)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    if linker_ok && (stamped == Some(llvm) || stamped.is_none() && linker_llvm_matches(&home, llvm))
    {
        fs::write(&stamp, llvm.to_string())?;
        return Ok(());
    }
    run(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--force",
            "--no-default-features",
            "--features",
        ])
        .arg(format!("llvm-{llvm}"))
        .env("LLVM_PREFIX", format!("/usr/lib/llvm-{llvm}")))?;
    fs::write(&stamp, llvm.to_string())?;
    Ok(())
}

/// cargo-fuzz drives the fuzz targets (`cargo xtask fuzz`, the smoke run of `cargo xtask
/// test`); it runs on nightly, which `ensure_nightly` installs.
pub fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    if output(Command::new("cargo").args(["fuzz", "--version"])).is_some() {
        return Ok(());
    }
    run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
}

/// For a linker installed before the stamp existed: cargo's install record names its features.
fn linker_llvm_matches(home: &Path, llvm: u32) -> bool {
    let record = fs::read_to_string(home.join(".crates2.json")).unwrap_or_default();
    record.contains("bpf-linker") && record.contains(&format!("\"llvm-{llvm}\""))
}

/// Installs a cargo subcommand at `version` unless that version answers `--version` already
/// (`cargo install` would rebuild it every time otherwise).
fn ensure_cargo_tool(tool: &str, version: &str) -> anyhow::Result<()> {
    let sub = tool.trim_start_matches("cargo-");
    let installed = output(Command::new("cargo").args([sub, "--version"]));
    if installed.is_some_and(|v| v.contains(version)) {
        return Ok(());
    }
    eprintln!("xtask: installing {tool} {version}");
    run(Command::new("cargo").args(["install", "--locked", tool, "--version", version]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llvm_major_from_rustc_vv() {
        let vv =
            "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)\nbinary: rustc\nLLVM version: 22.1.4\n";
        assert_eq!(parse_llvm_major(vv), Some(22));
        assert_eq!(parse_llvm_major("rustc 1.0\n"), None);
        assert_eq!(parse_llvm_major("LLVM version: x.1\n"), None);
    }
}
