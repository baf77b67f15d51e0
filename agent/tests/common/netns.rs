//! Network namespaces and veth pairs created by a test and deleted when the guard drops, also
//! when the test panics.

use std::{
    fs::File,
    os::fd::AsRawFd as _,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
    thread,
};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// `ip ...`, panicking with its stderr when it fails: set-up failures are test failures.
pub fn ip(args: &[&str]) -> Output {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (iproute2 installed?)");
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub struct NetNs {
    pub name: String,
}

impl NetNs {
    /// A fresh namespace with loopback up. Names are unique per process and call.
    pub fn new(tag: &str) -> NetNs {
        let name = format!(
            "sxt-{}-{}-{tag}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n <ns> ...`
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// A command run inside the namespace (`ip netns exec`, which also remounts /sys).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `f` on a thread that joined this namespace: sockets it opens live here.
    pub fn run<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let path = format!("/run/netns/{}", self.name);
        thread::scope(|s| {
            s.spawn(|| {
                let file = File::open(&path).expect("open netns");
                // SAFETY: setns on this thread only; the fd is valid for the call.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .expect("thread in netns panicked")
        })
    }

    /// Interface counters as the kernel keeps them (`ip -s -j link`).
    pub fn link_stats(&self, dev: &str) -> LinkStats {
        let out = self.ip(&["-s", "-j", "link", "show", "dev", dev]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip json");
        let s = &v[0]["stats64"];
        let get = |dir: &str, what: &str| s[dir][what].as_u64().expect("counter");
        LinkStats {
            rx_packets: get("rx", "packets"),
            rx_bytes: get("rx", "bytes"),
            tx_packets: get("tx", "packets"),
            tx_bytes: get("tx", "bytes"),
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace destroys its veth ends, their qdiscs and any tcx links.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
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

/// Two namespaces joined by a veth pair, with IPv4 and IPv6 addresses (no DAD, no router
/// solicitations, so the link is quiet when the test is not sending).
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
    pub fn new(subnet: u8) -> Pair {
        let a = NetNs::new("a");
        let b = NetNs::new("b");
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let dev_a = format!("sxa{}-{n}", std::process::id() % 10000);
        let dev_b = format!("sxb{}-{n}", std::process::id() % 10000);
        ip(&[
            "link", "add", &dev_a, "netns", &a.name, "type", "veth", "peer", "name", &dev_b,
            "netns", &b.name,
        ]);
        let v4_a = format!("10.251.{subnet}.1");
        let v4_b = format!("10.251.{subnet}.2");
        let v6_a = format!("fd00:5151:{subnet}::1");
        let v6_b = format!("fd00:5151:{subnet}::2");
        for (ns, dev, v4, v6) in [(&a, &dev_a, &v4_a, &v6_a), (&b, &dev_b, &v4_b, &v6_b)] {
            for sysctl in ["router_solicitations=0", "accept_ra=0", "accept_dad=0"] {
                let _ = ns
                    .command("sysctl")
                    .args(["-qw", &format!("net.ipv6.conf.{dev}.{sysctl}")])
                    .status();
            }
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", dev]);
            ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"]);
            ns.ip(&["link", "set", dev, "up"]);
        }
        Pair {
            a,
            b,
            dev_a,
            dev_b,
            v4_a,
            v4_b,
            v6_a,
            v6_b,
        }
    }
}
