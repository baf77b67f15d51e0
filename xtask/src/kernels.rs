//! `cargo xtask kernels`: Siphon on other kernels, in qemu. For each kernel line (Debian's
//! cloud kernels: 6.1 without tcx, 6.12 with it) it downloads the newest image package, boots
//! it under `qemu-system-x86_64 -accel tcg` with a busybox initramfs holding the release
//! `siphon` binary, and checks inside the guest that the programs pass that kernel's verifier
//! and work: `siphon replay` over reference captures, `siphon run --iface lo` attached (tcx or
//! cls_bpf), serving metrics, exiting 0 on SIGTERM. Not part of `cargo xtask test`: booting
//! under TCG takes tens of seconds per kernel, and it downloads each image (~30 MB).

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{ensure, Context as _};
use clap::Args;

use crate::{
    cmd::{build_agent_release, output, require_root, run, workspace_root},
    setup::ensure_debian_packages,
};

#[derive(Args)]
pub struct KernelsArgs {
    /// Kernel lines to boot (Debian cloud kernels), repeatable [default: 6.1 and 6.12].
    #[arg(long = "kernel", value_name = "LINE")]
    kernels: Vec<String>,
}

/// What the guest needs from the host: an emulator, a static busybox, the archive tool.
const PACKAGES: &[&str] = &["qemu-system-x86", "busybox-static", "cpio", "xz-utils"];

/// Captures replayed in the guest, from the shared reference set, with the number of JA4
/// records each must give (the host's replay gives the same).
const CAPTURES: &[&str] = &["tls12.pcap", "tls-sni.pcapng", "http1-with-cookies.pcapng"];

/// Modules the attach path may need (cls_bpf on a clsact qdisc where tcx is missing).
const MODULES: &[&str] = &["net/sched/sch_ingress.ko", "net/sched/cls_bpf.ko"];

pub fn kernels(args: &KernelsArgs) -> anyhow::Result<()> {
    require_root("installing packages and booting kernels")?;
    let packages: Vec<String> = PACKAGES.iter().map(|p| p.to_string()).collect();
    ensure_debian_packages(&packages)?;
    let siphon = build_agent_release("siphon")?;
    let work = workspace_root().join("target/kernels");
    fs::create_dir_all(&work)?;
    let lines = if args.kernels.is_empty() {
        vec!["6.1".to_owned(), "6.12".to_owned()]
    } else {
        args.kernels.clone()
    };
    let mut failed = Vec::new();
    for line in &lines {
        match boot(&work, line, &siphon) {
            Ok(()) => eprintln!("kernels: {line}: ok"),
            Err(e) => {
                eprintln!("kernels: {line}: FAILED: {e:#}");
                failed.push(line.clone());
            }
        }
    }
    ensure!(failed.is_empty(), "failed on kernel(s) {failed:?}");
    Ok(())
}

/// The newest Debian cloud kernel image package of a line (`6.1` → linux-image-6.1.0-N-...).
fn newest_image(line: &str) -> anyhow::Result<String> {
    let list = output(Command::new("apt-cache").args(["search", "--names-only", "^linux-image-"]))
        .context("apt-cache search")?;
    let mut names: Vec<&str> = list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| {
            n.strip_prefix("linux-image-")
                .and_then(|v| v.strip_prefix(line))
                .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('-'))
                && (n.ends_with("-cloud-amd64") || n.ends_with("-cloud-amd64-unsigned"))
        })
        .collect();
    // Version order within the line: compare the numeric runs.
    names.sort_by_key(|n| {
        n.split(|c: char| !c.is_ascii_digit())
            .filter_map(|d| d.parse::<u64>().ok())
            .collect::<Vec<_>>()
    });
    names.last().map(|n| n.to_string()).with_context(|| {
        format!("no linux-image-{line}*-cloud-amd64 package in apt (apt-get update?)")
    })
}

fn boot(work: &Path, line: &str, siphon: &Path) -> anyhow::Result<()> {
    let package = newest_image(line)?;
    let dir = work.join(&package);
    let extracted = dir.join("root");
    if !extracted.join("boot").is_dir() {
        fs::create_dir_all(&dir)?;
        run(Command::new("apt-get")
            .current_dir(&dir)
            .args(["download", &package]))?;
        let deb = fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .context("downloaded package missing")?;
        run(Command::new("dpkg").arg("-x").arg(&deb).arg(&extracted))?;
    }
    let vmlinuz = fs::read_dir(extracted.join("boot"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz"))
        })
        .context("no vmlinuz in the package")?;
    let initrd = build_initramfs(&dir, &extracted, siphon)?;
    let console = dir.join("console.log");
    eprintln!("kernels: booting {package} (TCG)");
    let log = fs::File::create(&console)?;
    let status = Command::new("timeout")
        .arg("900")
        .arg("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-m",
            "2048",
            "-smp",
            "2",
            "-nographic",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(&vmlinuz)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", "console=ttyS0 quiet panic=-1"])
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .context("running qemu-system-x86_64")?;
    let text = String::from_utf8_lossy(&fs::read(&console)?).into_owned();
    check_console(&text).with_context(|| {
        format!(
            "guest console in {} (qemu exit {status})",
            console.display()
        )
    })
}

/// The guest's report: every marker the init script prints, with the outcomes required.
fn check_console(text: &str) -> anyhow::Result<()> {
    let kernel = text
        .lines()
        .find_map(|l| l.split("KERNEL ").nth(1))
        .context("the guest never started the checks")?;
    eprintln!("kernels: guest kernel {kernel}");
    for capture in CAPTURES {
        let marker = format!("REPLAY {capture} rc=");
        let rc = text
            .lines()
            .find_map(|l| l.split(&marker).nth(1))
            .with_context(|| format!("no replay of {capture}"))?;
        ensure!(rc.trim() == "0", "siphon replay {capture} exited {rc}");
    }
    ensure!(
        text.lines()
            .any(|l| l.trim() == "siphon_attached_interfaces 1"),
        "siphon run did not report one attached interface"
    );
    let rc = text
        .lines()
        .find_map(|l| l.split("RUN rc=").nth(1))
        .context("siphon run did not finish")?;
    ensure!(rc.trim() == "0", "siphon run exited {rc} after SIGTERM");
    Ok(())
}

fn build_initramfs(dir: &Path, kernel_root: &Path, siphon: &Path) -> anyhow::Result<PathBuf> {
    let tree = dir.join("initramfs");
    if tree.exists() {
        fs::remove_dir_all(&tree)?;
    }
    for d in ["bin", "lib64", "mod", "data", "proc", "sys", "tmp", "dev"] {
        fs::create_dir_all(tree.join(d))?;
    }
    fs::copy("/bin/busybox", tree.join("bin/busybox")).context("busybox-static")?;
    for applet in [
        "sh", "mount", "insmod", "ip", "sleep", "kill", "wget", "grep", "cat", "mkdir", "poweroff",
        "head", "seq",
    ] {
        std::os::unix::fs::symlink("busybox", tree.join("bin").join(applet))?;
    }
    fs::copy(siphon, tree.join("siphon"))?;
    copy_libraries(siphon, &tree)?;
    let modules = fs::read_dir(kernel_root.join("lib/modules"))?
        .filter_map(|e| e.ok().map(|e| e.path().join("kernel")))
        .next()
        .context("no modules in the package")?;
    for m in MODULES {
        let plain = modules.join(m);
        let packed = modules.join(format!("{m}.xz"));
        let name = Path::new(m).file_name().context("module name")?;
        let dest = tree.join("mod").join(name);
        if plain.exists() {
            fs::copy(&plain, &dest)?;
        } else if packed.exists() {
            let out = Command::new("xz").arg("-dc").arg(&packed).output()?;
            ensure!(out.status.success(), "xz -dc {}", packed.display());
            fs::write(&dest, out.stdout)?;
        }
        // Built in, when neither exists: nothing to load.
    }
    let data = workspace_root().join("../shared/data/ja4");
    for capture in CAPTURES {
        fs::copy(data.join(capture), tree.join("data").join(capture)).with_context(|| {
            format!(
                "reference capture {capture} (expected in {})",
                data.display()
            )
        })?;
    }
    let init = tree.join("init");
    fs::write(&init, INIT)?;
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755))?;
    let image = dir.join("initramfs.cpio.gz");
    run(Command::new("sh").current_dir(&tree).arg("-c").arg(format!(
        "find . | cpio -o -H newc --quiet | gzip > '{}'",
        image.display()
    )))?;
    Ok(image)
}

/// The dynamic libraries `siphon` needs, from `ldd`, at the same paths in the guest.
fn copy_libraries(binary: &Path, tree: &Path) -> anyhow::Result<()> {
    let listing = output(Command::new("ldd").arg(binary)).context("ldd")?;
    for path in listing
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/')))
    {
        let dest = tree.join(path.trim_start_matches('/'));
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::copy(path, &dest).with_context(|| format!("copying {path}"))?;
    }
    Ok(())
}

/// The guest's PID 1: load the attach modules, replay the captures, run on `lo`, report.
const INIT: &str = r#"#!/bin/sh
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t tmpfs tmp /tmp; mount -t devtmpfs dev /dev
mkdir -p /sys/fs/bpf; mount -t bpf bpf /sys/fs/bpf
for m in /mod/*.ko; do [ -e "$m" ] && insmod "$m"; done
echo "KERNEL $(cat /proc/sys/kernel/osrelease)"
export SIPHON_KEY_HASH_SECRET=kernels-check-0123456789
for f in /data/*; do
  /siphon replay --quiet --json /tmp/out.json "$f"
  echo "REPLAY ${f#/data/} rc=$?"
done
ip link set lo up
/siphon run --iface lo --listen 127.0.0.1:9947 > /tmp/run.log 2>&1 &
pid=$!
# Bounded wait for the agent to attach and serve (emulated CPUs are slow).
for i in $(seq 60); do
  wget -qO /tmp/metrics http://127.0.0.1:9947/metrics 2>/dev/null && grep -q '^siphon_attached_interfaces 1' /tmp/metrics && break
  sleep 1
done
grep '^siphon_attached_interfaces' /tmp/metrics
kill $pid; wait $pid; echo "RUN rc=$?"
head -20 /tmp/run.log
poweroff -f
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_checks_need_every_marker() {
        let good = "KERNEL 6.1.0-47-cloud-amd64\nREPLAY tls12.pcap rc=0\nREPLAY tls-sni.pcapng rc=0\n\
                    REPLAY http1-with-cookies.pcapng rc=0\nsiphon_attached_interfaces 1\nRUN rc=0\n";
        assert!(check_console(good).is_ok());
        for bad in [
            good.replace("REPLAY tls12.pcap rc=0", "REPLAY tls12.pcap rc=1"),
            good.replace(
                "siphon_attached_interfaces 1",
                "siphon_attached_interfaces 0",
            ),
            good.replace("RUN rc=0", "RUN rc=1"),
            good.replace("KERNEL", "PANIC"),
        ] {
            assert!(check_console(&bad).is_err(), "{bad}");
        }
    }
}
