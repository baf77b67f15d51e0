//! The outside programs of the end-to-end runs: iperf3, wrk and the lab's inference server,
//! each started in a namespace of the run, bounded in time, ended by its PID.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use siphon_testkit::NetNs;

const IPERF_PORT: u16 = 5201;
const LAB_PORT: u16 = 8000;
const LAB_KEY: &str = "sk-bench-e2e-0000000000000001";
/// Extra time a tool may take beyond its own duration before it is killed.
const GRACE: Duration = Duration::from_secs(20);

pub(super) struct Iperf {
    pub(super) gbit_per_s: f64,
    /// Bytes the receiver got.
    pub(super) bytes: u64,
}

/// Waits for `child`, killing it (by PID) after `limit`.
fn bounded(mut child: Child, limit: Duration, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                bail!("{what} failed: {status}");
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `cmd` with its output to `stdout` (a file: a pipe nobody reads could fill and stall
/// it), or nowhere.
fn spawn(mut cmd: Command, what: &str, stdout: Option<&Path>) -> anyhow::Result<Child> {
    let out = match stdout {
        Some(p) => Stdio::from(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        ),
        None => Stdio::null(),
    };
    cmd.stdout(out)
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {what} (is it installed? `cargo xtask setup`)"))
}

/// One iperf3 run: a one-off server in `server_ns`, the client in `client_ns`.
pub(super) fn iperf3(
    server_ns: &NetNs,
    client_ns: &NetNs,
    server_ip: &str,
    streams: u32,
    reverse: bool,
    seconds: u32,
    out_file: &Path,
) -> anyhow::Result<Iperf> {
    let limit = Duration::from_secs(u64::from(seconds)) + GRACE;
    let mut s = server_ns.command("iperf3");
    s.args(["-s", "-1", "-p", &IPERF_PORT.to_string()]);
    let server = spawn(s, "iperf3 -s", None)?;
    // The server listens within a moment; the client retries its connection briefly.
    std::thread::sleep(Duration::from_millis(300));
    let mut c = client_ns.command("iperf3");
    c.args([
        "-c",
        server_ip,
        "-p",
        &IPERF_PORT.to_string(),
        "-t",
        &seconds.to_string(),
        "-P",
        &streams.to_string(),
        "-J",
    ]);
    if reverse {
        c.arg("-R");
    }
    let client = bounded(spawn(c, "iperf3 -c", Some(out_file))?, limit, "iperf3 -c");
    let server = bounded(server, limit, "iperf3 -s");
    let text = std::fs::read(out_file).context("reading iperf3's output");
    let json: serde_json::Value =
        serde_json::from_slice(&text?).context("parsing iperf3 -J output")?;
    if let Some(e) = json["error"].as_str() {
        bail!("iperf3: {e}");
    }
    client?;
    server?;
    let recv = &json["end"]["sum_received"];
    Ok(Iperf {
        gbit_per_s: recv["bits_per_second"]
            .as_f64()
            .context("iperf3: no end.sum_received.bits_per_second")?
            / 1e9,
        bytes: recv["bytes"].as_u64().context("iperf3: no bytes")?,
    })
}

/// The lab's inference server, without token pacing, in the server namespace.
pub(super) struct LabServer {
    child: Option<Child>,
    pub(super) port: u16,
}

impl LabServer {
    pub(super) fn start(ns: &NetNs, script: &Path, out: &Path) -> anyhow::Result<LabServer> {
        let ready = out.join("e2e-server-ready.json");
        let _ = std::fs::remove_file(&ready);
        let mut cmd = ns.command("python3");
        cmd.arg(script)
            .args([
                "--listen",
                "0.0.0.0",
                "--port",
                &LAB_PORT.to_string(),
                "--keys",
                LAB_KEY,
            ])
            .args(["--tokens-per-second", "0", "--first-token-delay-ms", "0"])
            .args(["--output-len-median", "16", "--ready-file"])
            .arg(&ready)
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(out.join("e2e-server.log"))
                    .context("creating e2e-server.log")?,
            ));
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", script.display()))?;
        let mut server = LabServer {
            child: Some(child),
            port: LAB_PORT,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ready.exists() {
            if let Some(c) = server.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    bail!("the lab server exited early ({status}); see e2e-server.log");
                }
            }
            if Instant::now() > deadline {
                bail!("the lab server was not ready within 20 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(server)
    }
}

impl Drop for LabServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// wrk: non-streaming chat completions with a key, requests/s.
pub(super) fn wrk(
    client_ns: &NetNs,
    server_ip: &str,
    port: u16,
    seconds: u32,
    out: &Path,
) -> anyhow::Result<f64> {
    let script = out.join("e2e-wrk.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\n\
             wrk.headers[\"Content-Type\"] = \"application/json\"\n\
             wrk.headers[\"Authorization\"] = \"Bearer {LAB_KEY}\"\n\
             wrk.body = '{{\"model\":\"siphon-lab-1\",\"max_tokens\":16,\"messages\":[{{\"role\":\"user\",\"content\":\"hello\"}}]}}'\n"
        ),
    )
    .context("writing the wrk script")?;
    let mut c = client_ns.command("wrk");
    c.args(["-t", "2", "-c", "16", "-d", &format!("{seconds}s"), "-s"])
        .arg(&script)
        .arg(format!("http://{server_ip}:{port}/v1/chat/completions"));
    let limit = Duration::from_secs(u64::from(seconds)) + GRACE;
    let out_file = out.join("e2e-wrk.txt");
    bounded(spawn(c, "wrk", Some(&out_file))?, limit, "wrk")?;
    let text = std::fs::read_to_string(&out_file).context("reading wrk's output")?;
    if text.contains("Non-2xx") {
        bail!("wrk saw non-2xx answers: {text}");
    }
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("no Requests/sec in wrk's output: {text}"))
}
