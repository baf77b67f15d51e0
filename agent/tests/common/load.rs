//! Traffic for the overload and restart tests: an HTTP/1.1 ping-pong server that logs what it
//! answered (the ground truth), keep-alive clients that count what they completed, and UDP
//! datagrams to many ports (one flow each).

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use siphon_testkit::NetNs;

pub const REQUEST: &[u8] = b"GET /v1/models HTTP/1.1\r\nHost: lab\r\nUser-Agent: t\r\n\r\n";
pub const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

/// One answered request: the client's port, its number on the connection (1-based), when.
#[derive(Clone, Copy, Debug)]
pub struct Answered {
    pub client_port: u16,
    pub n: u32,
    pub at: Instant,
}

/// A server in its namespace; stops (and its threads end) when dropped.
pub struct Server {
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<Answered>>>,
    stop: Arc<AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(ns: &NetNs, addr: SocketAddr) -> Server {
        let listener = ns
            .run(move || TcpListener::bind(addr).expect("bind"))
            .expect("a thread in the server namespace");
        listener.set_nonblocking(true).expect("nonblocking");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (log, stop) = (Arc::clone(&log), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((conn, peer)) => {
                            let (log, stop) = (Arc::clone(&log), Arc::clone(&stop));
                            std::thread::spawn(move || serve(conn, peer.port(), &log, &stop));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Server {
            addr,
            log,
            stop,
            accept: Some(accept),
        }
    }

    pub fn answered(&self) -> Vec<Answered> {
        self.log.lock().expect("log").clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut conn: TcpStream, port: u16, log: &Mutex<Vec<Answered>>, stop: &AtomicBool) {
    let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
    let _ = conn.set_nodelay(true);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        match conn.read(&mut chunk) {
            Ok(0) => return,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(_) => return,
        }
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            if conn.write_all(RESPONSE).is_err() {
                return;
            }
            n += 1;
            log.lock().expect("log").push(Answered {
                client_port: port,
                n,
                at: Instant::now(),
            });
        }
    }
}

/// Keep-alive ping-pong from the calling thread (which must be in the client namespace) until
/// `stop` is set, `max` requests are done or `limit` passes, `pace` apart (zero: flat out).
/// Returns (local port, requests).
pub fn ping_pong(
    server: SocketAddr,
    stop: &AtomicBool,
    max: u32,
    limit: Duration,
    pace: Duration,
) -> (u16, u32) {
    let deadline = Instant::now() + limit;
    let mut c = TcpStream::connect_timeout(&server, Duration::from_secs(5)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    c.set_nodelay(true).expect("nodelay");
    let port = c.local_addr().expect("local").port();
    let mut done = 0;
    let mut answer = vec![0u8; RESPONSE.len()];
    while done < max && !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        c.write_all(REQUEST).expect("request");
        c.read_exact(&mut answer).expect("response");
        done += 1;
        if !pace.is_zero() {
            std::thread::sleep(pace);
        }
    }
    (port, done)
}

/// One datagram from one socket to each of `ports` on `host`: one flow per port.
pub fn udp_flows(host: &str, ports: std::ops::Range<u16>) -> u64 {
    let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
    let mut sent = 0;
    for port in ports {
        let addr: SocketAddr = format!("{host}:{port}").parse().expect("addr");
        if sock.send_to(b"x", addr).is_ok() {
            sent += 1;
        }
    }
    sent
}

/// The agent's interface counters for `dev`: (rx packets, rx bytes, tx packets, tx bytes).
pub fn agent_iface(m: &std::collections::HashMap<String, f64>, dev: &str) -> [u64; 4] {
    let get = |name: &str, dir: &str| {
        super::prom::value(m, name, &[("interface", dev), ("direction", dir)]).unwrap_or(0.0) as u64
    };
    [
        get("siphon_interface_packets_total", "ingress"),
        get("siphon_interface_bytes_total", "ingress"),
        get("siphon_interface_packets_total", "egress"),
        get("siphon_interface_bytes_total", "egress"),
    ]
}

/// The kernel's own counters for `dev` (`ip -s link`), in [`agent_iface`]'s order.
pub fn kernel_iface(ns: &NetNs, dev: &str) -> [u64; 4] {
    let s = ns.link_stats(dev).expect("link stats");
    [s.rx_packets, s.rx_bytes, s.tx_packets, s.tx_bytes]
}

/// Agent and kernel counters at one quiet moment: agent, kernel, agent again, retried (at most
/// 50 times, 10 s) until both agent reads agree, i.e. nothing crossed the link in between.
pub fn quiet_reading(agent: &super::siphon::Agent, ns: &NetNs, dev: &str) -> ([u64; 4], [u64; 4]) {
    for _ in 0..50 {
        let before = agent_iface(&agent.metrics(), dev);
        let kernel = kernel_iface(ns, dev);
        let after = agent_iface(&agent.metrics(), dev);
        if before == after {
            return (before, kernel);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the link never went quiet");
}

pub fn minus(a: [u64; 4], b: [u64; 4]) -> [u64; 4] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2], a[3] - b[3]]
}
