//! The lab's OpenAI-compatible inference server (xtask/lab) as a child process in a test
//! namespace: the ground truth of what was requested.

use std::{
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use siphon_testkit::NetNs;

pub fn lab_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../xtask/lab")
}

/// The inference server as a child process in `ns`; killed on drop.
pub struct Server {
    child: Child,
    pub log: PathBuf,
}

impl Server {
    pub fn start(ns: &NetNs, dir: &Path, keys: &[&str], port: u16) -> Server {
        let log = dir.join("server.jsonl");
        let ready = dir.join("ready.json");
        let child = ns
            .command("python3")
            .arg(lab_dir().join("inference_server.py"))
            .args([
                "--listen",
                "::",
                "--port",
                &port.to_string(),
                "--keys",
                &keys.join(","),
            ])
            .args([
                "--tokens-per-second",
                "400",
                "--first-token-delay-ms",
                "40",
                "--seed",
                "7",
            ])
            .arg("--log")
            .arg(&log)
            .arg("--ready-file")
            .arg(&ready)
            .stdout(Stdio::null())
            .spawn()
            .expect("start inference server (python3)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ready.exists() {
            assert!(
                Instant::now() < deadline,
                "inference server not ready in 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Server { child, log }
    }

    pub fn entries(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("server log line"))
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: signalling the child we spawned, by its PID.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
