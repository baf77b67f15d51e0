//! Network namespaces and veth pairs created by a test or tool and deleted on drop: deleting a
//! namespace destroys its veth ends, their qdiscs and any tcx links with them.

use std::{
    fs::File,
    os::fd::AsRawFd as _,
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
};

use anyhow::{ensure, Context as _};

/// Makes names unique within a process; the PID makes them unique between processes.
static SEQ: AtomicU32 = AtomicU32::new(0);

/// Runs `program` with `args` to completion; a failure carries its stderr.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<Output> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program} (installed by `cargo xtask setup`)"))?;
    ensure!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(out)
}

/// `ip ...` (iproute2).
pub fn ip(args: &[&str]) -> anyhow::Result<Output> {
    run("ip", args)
}

/// A network namespace this process created; deleted on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    /// A fresh namespace with loopback up, named uniquely per process and call (`tag` says what
    /// it is for, so a leftover is recognisable).
    pub fn new(tag: &str) -> anyhow::Result<NetNs> {
        let name = format!(
            "sx{}-{}-{tag}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        NetNs::create(&name)
    }

    /// A namespace with exactly this name (the lab's, whose names its checks look for).
    pub fn create(name: &str) -> anyhow::Result<NetNs> {
        ip(&["netns", "add", name])?;
        // From here on the guard owns it: an error below still deletes it.
        let ns = NetNs {
            name: name.to_owned(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n <ns> ...`
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<Output> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// A command to run inside the namespace (`ip netns exec`, which also remounts /sys and
    /// applies /etc/netns/<name>/).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `program args` inside the namespace to completion.
    pub fn exec(&self, program: &str, args: &[&str]) -> anyhow::Result<Output> {
        let mut full = vec!["netns", "exec", self.name.as_str(), program];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Moves the calling thread into this namespace: sockets it opens afterwards live here.
    pub fn enter(&self) -> anyhow::Result<()> {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).with_context(|| format!("opening {path}"))?;
        // SAFETY: setns changes only the calling thread's namespace; the fd is open for the call.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        ensure!(rc == 0, "setns {path}: {}", std::io::Error::last_os_error());
        Ok(())
    }

    /// Runs `f` on a thread that joined this namespace, and returns what it returns.
    pub fn run<F, R>(&self, f: F) -> anyhow::Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        thread::scope(|s| {
            s.spawn(|| -> anyhow::Result<R> {
                self.enter()?;
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the thread in {} panicked", self.name))?
        })
    }

    /// Interface counters as the kernel keeps them (`ip -s -j link`).
    pub fn link_stats(&self, dev: &str) -> anyhow::Result<LinkStats> {
        let out = self.ip(&["-s", "-j", "link", "show", "dev", dev])?;
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("parsing `ip -s -j link`")?;
        let s = &v[0]["stats64"];
        let get = |dir: &str, what: &str| {
            s[dir][what]
                .as_u64()
                .with_context(|| format!("no {dir}.{what} for {dev}"))
        };
        Ok(LinkStats {
            rx_packets: get("rx", "packets")?,
            rx_bytes: get("rx", "bytes")?,
            tx_packets: get("tx", "packets")?,
            tx_bytes: get("tx", "bytes")?,
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdin(Stdio::null())
            .status();
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LinkStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

/// Two namespaces joined by a veth pair, with IPv4 (10.251.`subnet`.1/.2) and IPv6
/// (fd00:5151:`subnet`::1/::2) addresses; no DAD and no router solicitations, so the link is
/// quiet when nothing is sent.
pub struct Pair {
    pub a: NetNs,
    pub b: NetNs,
    pub dev_a: String,
    pub dev_b: String,
    pub v4_a: String,
    pub v4_b: String,
    pub v6_a: String,
    pub v6_b: String,
}

impl Pair {
    pub fn new(subnet: u8) -> anyhow::Result<Pair> {
        let a = NetNs::new("a")?;
        let b = NetNs::new("b")?;
        // Interface names hold at most 15 bytes.
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let dev_a = format!("sxa{}-{n}", std::process::id() % 10000);
        let dev_b = format!("sxb{}-{n}", std::process::id() % 10000);
        ip(&[
            "link", "add", &dev_a, "netns", &a.name, "type", "veth", "peer", "name", &dev_b,
            "netns", &b.name,
        ])?;
        let pair = Pair {
            v4_a: format!("10.251.{subnet}.1"),
            v4_b: format!("10.251.{subnet}.2"),
            v6_a: format!("fd00:5151:{subnet}::1"),
            v6_b: format!("fd00:5151:{subnet}::2"),
            a,
            b,
            dev_a,
            dev_b,
        };
        for (ns, dev, v4, v6) in [
            (&pair.a, &pair.dev_a, &pair.v4_a, &pair.v6_a),
            (&pair.b, &pair.dev_b, &pair.v4_b, &pair.v6_b),
        ] {
            for sysctl in ["router_solicitations=0", "accept_ra=0", "accept_dad=0"] {
                // Best effort: a kernel without IPv6 still gets a working IPv4 link.
                let _ = ns.exec("sysctl", &["-qw", &format!("net.ipv6.conf.{dev}.{sysctl}")]);
            }
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", dev])?;
            ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"])?;
            ns.ip(&["link", "set", dev, "up"])?;
        }
        Ok(pair)
    }

    /// Turns segmentation and receive offloads off on both ends, so every packet the hook
    /// sees is one MTU-sized segment (the bench's like-for-like condition).
    pub fn without_offloads(self) -> anyhow::Result<Pair> {
        for (ns, dev) in [(&self.a, &self.dev_a), (&self.b, &self.dev_b)] {
            ns.exec(
                "ethtool",
                &["-K", dev, "tso", "off", "gso", "off", "gro", "off"],
            )?;
        }
        Ok(self)
    }
}
