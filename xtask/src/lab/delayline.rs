//! Link delay for the lab's client nodes, in userspace: this machine's kernel has no netem (nor
//! fq/etf to enforce departure times), so each delayed node is wired through a delay line, two
//! AF_PACKET sockets in the bridge namespace that pass every frame on after a delay with jitter:
//!
//! ```text
//!  node ns: eth0 ═veth═ dA (net ns) ─[delay line]─ dB ═veth═ pB ── br0
//! ```
//!
//! Frames keep their order (a jittered release time never precedes the previous one), and
//! offloads are off on the path so every frame fits the MTU.

use std::{
    collections::VecDeque,
    fs::File,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

/// Frames held at most per direction (beyond: dropped, as a full queue would).
const MAX_QUEUED: usize = 20_000;
const MAX_FRAME: usize = 9_216;

pub struct DelayLine {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// An AF_PACKET socket bound to `ifname` in the calling thread's namespace.
fn packet_socket(ifname: &str) -> anyhow::Result<(OwnedFd, i32)> {
    let proto = (libc::ETH_P_ALL as u16).to_be() as i32;
    // SAFETY: plain socket creation; the fd is owned immediately.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = std::ffi::CString::new(ifname)?;
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
    if ifindex == 0 {
        bail!("no interface {ifname}");
    }
    // SAFETY: zeroed sockaddr_ll with the fields bind needs.
    let rc = unsafe {
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto as u16;
        sll.sll_ifindex = ifindex;
        libc::bind(
            fd.as_raw_fd(),
            (&raw const sll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if rc != 0 {
        bail!("binding to {ifname}: {}", std::io::Error::last_os_error());
    }
    Ok((fd, ifindex))
}

fn enter_netns(ns: &str) -> anyhow::Result<()> {
    let f =
        File::open(format!("/run/netns/{ns}")).with_context(|| format!("opening netns {ns}"))?;
    // SAFETY: setns on this thread only.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns {ns}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// A normal sample (Box-Muller) from a small xorshift generator: jitter needs no crypto.
struct Jitter(u64);

impl Jitter {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-12);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// One direction: frames read on `from` leave on `to` after `delay` ± `jitter`.
fn pump(
    ns: String,
    from: String,
    to: String,
    delay: Duration,
    jitter: Duration,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    enter_netns(&ns)?;
    let (rx, _) = packet_socket(&from)?;
    let (tx, _) = packet_socket(&to)?;
    let mut queue: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut rng = Jitter(seed | 1);
    let mut last_release = Instant::now();
    let mut buf = vec![0u8; MAX_FRAME];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        while queue.front().is_some_and(|(t, _)| *t <= now) {
            if let Some((_, frame)) = queue.pop_front() {
                // SAFETY: sending a buffer we own on our socket.
                unsafe { libc::send(tx.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
            }
        }
        let wait_ms = queue
            .front()
            .map(|(t, _)| t.saturating_duration_since(now).as_millis() as i32)
            .unwrap_or(50)
            .clamp(0, 50);
        let mut pfd = libc::pollfd {
            fd: rx.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, wait_ms) } <= 0 {
            continue;
        }
        loop {
            // SAFETY: recvfrom into our buffer; sll tells incoming from outgoing frames.
            let (n, pkttype) = unsafe {
                let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                let n = libc::recvfrom(
                    rx.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    (&raw mut sll).cast(),
                    &mut len,
                );
                (n, sll.sll_pkttype)
            };
            if n <= 0 {
                break;
            }
            // Our own sends on this interface come back as outgoing: skip them.
            if pkttype == libc::PACKET_OUTGOING || queue.len() >= MAX_QUEUED {
                continue;
            }
            let extra = jitter.as_secs_f64() * rng.normal();
            let hold = (delay.as_secs_f64() + extra).max(0.0);
            let release = (Instant::now() + Duration::from_secs_f64(hold)).max(last_release);
            last_release = release;
            queue.push_back((release, buf[..n as usize].to_vec()));
        }
    }
    Ok(())
}

impl DelayLine {
    /// Starts both directions between `a` and `b` in namespace `ns`, each delayed by `delay`.
    pub fn start(
        ns: &str,
        a: &str,
        b: &str,
        delay: Duration,
        jitter: Duration,
        seed: u64,
    ) -> DelayLine {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (i, (from, to)) in [(a, b), (b, a)].into_iter().enumerate() {
            let (ns, from, to, stop2) = (
                ns.to_owned(),
                from.to_owned(),
                to.to_owned(),
                Arc::clone(&stop),
            );
            let seed = seed.wrapping_mul(31).wrapping_add(i as u64);
            threads.push(std::thread::spawn(move || {
                if let Err(e) = pump(ns, from.clone(), to, delay, jitter, seed, stop2) {
                    eprintln!("lab: delay line from {from} stopped: {e:#}");
                }
            }));
        }
        DelayLine { stop, threads }
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
