//! Processes the lab started, stopped by PID on teardown: SIGTERM, a grace period, SIGKILL.

use std::{
    fs::File,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;

pub struct Procs {
    /// Name, child, and whether it leads its own process group (signalled as a group).
    children: Vec<(String, Child, bool)>,
}

impl Procs {
    pub fn new() -> Procs {
        Procs {
            children: Vec::new(),
        }
    }

    /// Starts `cmd` with its output in `log`.
    pub fn spawn(&mut self, name: &str, cmd: Command, log: &Path) -> anyhow::Result<u32> {
        self.start(name, cmd, log, false)
    }

    /// Starts `cmd` as the leader of a new process group: stopping it signals the whole group
    /// (a script and the programs it runs).
    pub fn spawn_group(&mut self, name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<u32> {
        use std::os::unix::process::CommandExt as _;
        cmd.process_group(0);
        self.start(name, cmd, log, true)
    }

    fn start(
        &mut self,
        name: &str,
        mut cmd: Command,
        log: &Path,
        group: bool,
    ) -> anyhow::Result<u32> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let pid = child.id();
        self.children.push((name.to_owned(), child, group));
        Ok(pid)
    }

    /// Whether `name` has exited, and how.
    pub fn exited(&mut self, name: &str) -> Option<std::process::ExitStatus> {
        self.children
            .iter_mut()
            .find(|(n, _, _)| n == name)
            .and_then(|(_, c, _)| c.try_wait().ok().flatten())
    }

    /// Stops the processes whose names start with `prefix` (all with ""), newest first.
    pub fn stop_matching(&mut self, prefix: &str, grace: Duration) -> Vec<(String, Option<i32>)> {
        let mut stopped = Vec::new();
        let (matching, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.children)
            .into_iter()
            .partition(|(n, _, _)| n.starts_with(prefix));
        self.children = rest;
        // A group is addressed by the negated PID of its leader.
        let target = |child: &Child, group: bool| {
            let pid = child.id() as i32;
            if group {
                -pid
            } else {
                pid
            }
        };
        for (_, child, group) in matching.iter().rev() {
            // SAFETY: signalling a child we spawned (or the group it leads), by its PID.
            unsafe { libc::kill(target(child, *group), libc::SIGTERM) };
        }
        let deadline = Instant::now() + grace;
        for (name, mut child, group) in matching.into_iter().rev() {
            let status = loop {
                match child.try_wait() {
                    Ok(Some(s)) => break Some(s),
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    _ => {
                        let _ = child.kill();
                        break child.wait().ok();
                    }
                }
            };
            if group {
                // Whatever the leader left running in its group goes too.
                // SAFETY: the group of a child we spawned, by its leader's PID.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            }
            stopped.push((name, status.and_then(|s| s.code())));
        }
        stopped
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        self.stop_matching("", Duration::from_secs(5));
    }
}
