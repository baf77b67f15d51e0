//! Waiting for the lab's services, and reading an agent's metrics, inside node namespaces.

use std::{
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::bail;

use super::{Lab, SIPHON_PORT};

impl Lab {
    /// curl inside `role`'s namespace until it answers 2xx.
    pub(super) fn wait_http(
        &self,
        role: &str,
        url: &str,
        timeout: Duration,
        stop: &AtomicBool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let ok = self
                .topo
                .command(role, "curl")
                .args(["-sf", "-o", "/dev/null", "--max-time", "2", url])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline || stop.load(Ordering::SeqCst) {
                bail!("{url} did not answer within {} s", timeout.as_secs());
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    pub(super) fn wait_tcp(
        &self,
        role: &str,
        ip: &str,
        port: u16,
        stop: &AtomicBool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = self
                .topo
                .command(role, "bash")
                .args(["-c", &format!("exec 3<>/dev/tcp/{ip}/{port}")])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline || stop.load(Ordering::SeqCst) {
                bail!("{ip}:{port} in {role} is not accepting connections");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub(super) fn metrics(&self, role: &str) -> anyhow::Result<String> {
        let out = self
            .topo
            .command(role, "curl")
            .args([
                "-sf",
                "--max-time",
                "5",
                &format!("http://127.0.0.1:{SIPHON_PORT}/metrics"),
            ])
            .output()?;
        if !out.status.success() {
            bail!("scraping Siphon on {role} failed");
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

pub(super) fn wait_for(
    path: &Path,
    what: &str,
    timeout: Duration,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        if Instant::now() > deadline || stop.load(Ordering::SeqCst) {
            bail!("{what} not ready within {} s", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}
