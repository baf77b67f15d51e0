//! The `siphon` binary as a child process inside a test namespace.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    process::{Child, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use siphon_testkit::NetNs;

pub struct Agent<'a> {
    pub ns: &'a NetNs,
    pub port: u16,
    child: Option<Child>,
}

pub const BIN: &str = env!("CARGO_BIN_EXE_siphon");

impl<'a> Agent<'a> {
    /// Starts `siphon run <args> --listen 127.0.0.1:<port>` in `ns` and waits for /readyz.
    pub fn start(ns: &'a NetNs, port: u16, args: &[&str]) -> Agent<'a> {
        let listen = format!("127.0.0.1:{port}");
        let child = ns
            .command(BIN)
            .args(["run", "--listen", &listen])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn siphon");
        let mut agent = Agent {
            ns,
            port,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = agent.try_wait() {
                panic!("siphon exited early ({status}): {}", agent.stderr());
            }
            if agent.get("/readyz").is_some_and(|(code, _)| code == 200) {
                return agent;
            }
            assert!(Instant::now() < deadline, "siphon not ready within 20 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(e) = self.child.as_mut().and_then(|c| c.stderr.as_mut()) {
            let _ = e.read_to_string(&mut s);
        }
        s
    }

    /// HTTP/1.0 GET on the agent's loopback inside its namespace: (status, body).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let port = self.port;
        let path = path.to_owned();
        self.ns
            .run(move || http_get(port, &path))
            .expect("a thread in the test namespace")
    }

    pub fn metrics(&self) -> std::collections::HashMap<String, f64> {
        let (code, body) = self.get("/metrics").expect("scrape");
        assert_eq!(code, 200, "{body}");
        super::prom::parse(&body)
    }

    /// SIGKILL (no chance to detach or flush), then reap it. Returns what it printed.
    pub fn kill9(&mut self) -> String {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
        let mut err = String::new();
        if let Some(e) = child.stderr.as_mut() {
            let _ = e.read_to_string(&mut err);
        }
        err
    }

    /// Resident memory of the agent process, KiB (/proc/<pid>/status).
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// Sockets the agent process holds open.
    pub fn open_sockets(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| {
                d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                    .filter(|t| t.to_string_lossy().starts_with("socket:"))
                    .count()
            })
            .unwrap_or(0)
    }

    /// SIGTERM, then wait up to 15 s. Returns the exit status and what it printed.
    pub fn stop(&mut self) -> (ExitStatus, String) {
        let mut child = self.child.take().expect("running");
        // SAFETY: signalling the child we spawned, by its PID.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                let mut err = String::new();
                if let Some(e) = child.stderr.as_mut() {
                    let _ = e.read_to_string(&mut err);
                }
                return (status, err);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("siphon did not exit within 15 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
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

pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_owned()))
}
