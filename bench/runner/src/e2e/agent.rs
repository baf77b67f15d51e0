//! The real `siphon run` in the server's namespace, and what it costs: its programs' kernel
//! run time and its own CPU time.

use std::{
    collections::HashSet,
    io::{Read as _, Write as _},
    net::TcpStream,
    path::Path,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use agent_common::names;
use anyhow::{bail, Context as _};
use aya::{
    programs::loaded_programs,
    sys::{enable_stats, Stats},
};
use siphon_testkit::NetNs;

/// Its metrics endpoint, inside the server namespace only.
const LISTEN_PORT: u16 = 9947;
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

pub(super) struct Agent<'a> {
    ns: &'a NetNs,
    child: Option<Child>,
    /// Siphon's programs this agent loaded (ids that were not there before it started):
    /// other agents on the machine may have their own loaded.
    programs: Vec<u32>,
    /// Keeps the kernel's run-time statistics on while the agent runs.
    _stats: std::os::fd::OwnedFd,
    clock_ticks: f64,
}

/// What the agent cost so far, in CPU seconds.
pub(super) struct Cost {
    pub(super) bpf_s: f64,
    pub(super) agent_s: f64,
}

impl Cost {
    pub(super) fn since(&self, before: &Cost) -> Cost {
        Cost {
            bpf_s: self.bpf_s - before.bpf_s,
            agent_s: self.agent_s - before.agent_s,
        }
    }
}

fn siphon_program_ids() -> HashSet<u32> {
    loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| {
            p.name_as_str()
                .is_some_and(|n| n == names::PROG_INGRESS || n == names::PROG_EGRESS)
        })
        .map(|p| p.id())
        .collect()
}

impl<'a> Agent<'a> {
    pub(super) fn start(
        ns: &'a NetNs,
        siphon: &Path,
        dev: &str,
        exchange_log: &Path,
    ) -> anyhow::Result<Agent<'a>> {
        let stats = enable_stats(Stats::RunTime).context("BPF_ENABLE_STATS")?;
        let existing = siphon_program_ids();
        let listen = format!("127.0.0.1:{LISTEN_PORT}");
        let child = ns
            .command(&siphon.display().to_string())
            .args(["run", "--listen", &listen, "--iface", dev, "--exchange-log"])
            .arg(exchange_log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", siphon.display()))?;
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let mut agent = Agent {
            ns,
            child: Some(child),
            programs: Vec::new(),
            _stats: stats,
            clock_ticks: if ticks > 0 { ticks as f64 } else { 100.0 },
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(c) = agent.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    bail!("siphon run exited early: {status}");
                }
            }
            if agent.ready() {
                break;
            }
            if Instant::now() > deadline {
                bail!("siphon run not ready within {READY_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        agent.programs = siphon_program_ids()
            .difference(&existing)
            .copied()
            .collect();
        if agent.programs.is_empty() {
            bail!("siphon run is ready but no new Siphon program is loaded");
        }
        Ok(agent)
    }

    fn ready(&self) -> bool {
        self.ns
            .run(|| -> Option<bool> {
                let mut s = TcpStream::connect_timeout(
                    &([127, 0, 0, 1], LISTEN_PORT).into(),
                    Duration::from_secs(1),
                )
                .ok()?;
                s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
                s.write_all(b"GET /readyz HTTP/1.0\r\n\r\n").ok()?;
                let mut buf = String::new();
                s.read_to_string(&mut buf).ok()?;
                Some(buf.starts_with("HTTP/1.1 200") || buf.starts_with("HTTP/1.0 200"))
            })
            .ok()
            .flatten()
            .unwrap_or(false)
    }

    pub(super) fn cost(&self) -> anyhow::Result<Cost> {
        let mut bpf_ns = 0u128;
        for p in loaded_programs().filter_map(Result::ok) {
            if self.programs.contains(&p.id()) {
                bpf_ns += p.run_time().as_nanos();
            }
        }
        let pid = self.child.as_ref().map_or(0, Child::id);
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("/proc/{pid}/stat"))?;
        // Fields after the command name (which may hold spaces): state is field 3, utime 14,
        // stime 15.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .context("malformed /proc/<pid>/stat")?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| -> anyhow::Result<f64> {
            Ok(fields
                .get(i - 3)
                .context("short /proc/<pid>/stat")?
                .parse::<f64>()?)
        };
        Ok(Cost {
            bpf_s: bpf_ns as f64 / 1e9,
            agent_s: (ticks(14)? + ticks(15)?) / self.clock_ticks,
        })
    }

    /// SIGTERM, a bounded wait, then SIGKILL: by PID, only this child.
    pub(super) fn stop(mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // SAFETY: signals our own child by its PID.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        bail!("siphon run did not exit within {STOP_TIMEOUT:?} of SIGTERM")
    }
}

impl Drop for Agent<'_> {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
