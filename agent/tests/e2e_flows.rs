//! End to end: the real `siphon` process attached to one end of a veth pair between two network
//! namespaces, real TCP and UDP sockets moving known amounts of data both ways over IPv4 and
//! IPv6. Ground truth: the kernel's own interface counters and what the sockets wrote.

mod common;

use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

use common::{prom, siphon::Agent};
use siphon_testkit::{LinkStats, NetNs, Pair};

const TIMEOUT: Duration = Duration::from_secs(20);

/// What one exchange moved: client→server and server→client payload bytes on the wire.
struct Moved {
    to_server: u64,
    to_client: u64,
}

fn tcp_info(s: &TcpStream) -> libc::tcp_info {
    use std::os::fd::AsRawFd as _;
    // SAFETY: getsockopt fills at most `len` bytes of the zeroed struct we own.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        );
        assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
        info
    }
}

/// Payload bytes the sender's TCP stack retransmitted on this socket (TCP_INFO), read once all
/// it sent is acknowledged, so no tail-loss probe or timeout can add more: the wire carries
/// what the socket wrote plus these, and that is what a packet counter must see.
fn bytes_retrans(s: &TcpStream) -> u64 {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let info = tcp_info(s);
        if info.tcpi_unacked == 0 {
            return info.tcpi_bytes_retrans;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "data never fully acknowledged"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Server in `server_ns` reads until EOF, then answers `reply` bytes; client in `client_ns`
/// sends `request` bytes, half-closes, reads to EOF. Returns what the sockets wrote.
fn tcp_exchange(
    client_ns: &NetNs,
    server_ns: &NetNs,
    server: SocketAddr,
    request: usize,
    reply: usize,
) -> Moved {
    let listener = server_ns
        .run(move || TcpListener::bind(server).expect("bind"))
        .expect("a thread in the test namespace");
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        let srv = s.spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            conn.set_read_timeout(Some(TIMEOUT)).expect("timeout");
            let mut got = Vec::new();
            conn.read_to_end(&mut got).expect("server read");
            conn.write_all(&vec![b's'; reply]).expect("server write");
            conn.shutdown(Shutdown::Write).expect("server half-close");
            done_rx.recv_timeout(TIMEOUT).expect("client done");
            (got.len() as u64, bytes_retrans(&conn))
        });
        let (client_got, client_retrans) = client_ns
            .run(move || {
                let mut c = TcpStream::connect_timeout(&server, TIMEOUT).expect("connect");
                c.set_read_timeout(Some(TIMEOUT)).expect("timeout");
                c.write_all(&vec![b'c'; request]).expect("client write");
                c.shutdown(Shutdown::Write).expect("half-close");
                let mut got = Vec::new();
                c.read_to_end(&mut got).expect("client read");
                let retrans = bytes_retrans(&c);
                done_tx.send(()).expect("signal");
                (got.len() as u64, retrans)
            })
            .expect("a thread in the test namespace");
        let (server_got, server_retrans) = srv.join().expect("server thread");
        assert_eq!(
            server_got, request as u64,
            "server received what the client wrote"
        );
        assert_eq!(
            client_got, reply as u64,
            "client received what the server wrote"
        );
        if client_retrans + server_retrans > 0 {
            eprintln!("{server}: TCP retransmitted {client_retrans} B to the server, {server_retrans} B to the client");
        }
        Moved {
            to_server: request as u64 + client_retrans,
            to_client: reply as u64 + server_retrans,
        }
    })
}

/// `n` datagrams of `size` bytes, each echoed back with `reply` bytes.
fn udp_exchange(
    client_ns: &NetNs,
    server_ns: &NetNs,
    server: SocketAddr,
    n: usize,
    size: usize,
    reply: usize,
) -> Moved {
    let sock = server_ns
        .run(move || UdpSocket::bind(server).expect("bind udp"))
        .expect("a thread in the test namespace");
    sock.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut buf = vec![0u8; 65536];
            for _ in 0..n {
                let (len, from) = sock.recv_from(&mut buf).expect("udp recv");
                assert_eq!(len, size);
                assert_eq!(
                    sock.send_to(&vec![b'r'; reply], from).expect("udp send"),
                    reply
                );
            }
        });
        client_ns
            .run(move || {
                let bind: SocketAddr = if server.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                }
                .parse()
                .expect("addr");
                let c = UdpSocket::bind(bind).expect("bind client");
                c.set_read_timeout(Some(TIMEOUT)).expect("timeout");
                let mut buf = vec![0u8; 65536];
                // One at a time: a lost datagram shows up as a timeout, not as a miscount.
                for _ in 0..n {
                    assert_eq!(
                        c.send_to(&vec![b'q'; size], server).expect("udp send"),
                        size
                    );
                    assert_eq!(c.recv_from(&mut buf).expect("udp recv").0, reply);
                }
            })
            .expect("a thread in the test namespace");
    });
    Moved {
        to_server: (n * size) as u64,
        to_client: (n * reply) as u64,
    }
}

/// Interface counters from the agent, for `dev`.
fn agent_iface(m: &std::collections::HashMap<String, f64>, dev: &str) -> LinkStats {
    let get = |name: &str, dir: &str| {
        prom::value(m, name, &[("interface", dev), ("direction", dir)]).unwrap_or(0.0) as u64
    };
    LinkStats {
        rx_packets: get("siphon_interface_packets_total", "ingress"),
        rx_bytes: get("siphon_interface_bytes_total", "ingress"),
        tx_packets: get("siphon_interface_packets_total", "egress"),
        tx_bytes: get("siphon_interface_bytes_total", "egress"),
    }
}

/// Reads agent and kernel counters at one quiet moment: agent, kernel, agent again, retried
/// until both agent reads agree (nothing crossed the link in between).
fn quiet_reading(agent: &Agent, ns: &NetNs, dev: &str) -> (LinkStats, LinkStats) {
    for _ in 0..50 {
        let before = agent_iface(&agent.metrics(), dev);
        let kernel = ns.link_stats(dev).expect("link stats");
        let after = agent_iface(&agent.metrics(), dev);
        if before == after {
            return (before, kernel);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the link never went quiet");
}

fn delta(a: LinkStats, b: LinkStats) -> LinkStats {
    LinkStats {
        rx_packets: b.rx_packets - a.rx_packets,
        rx_bytes: b.rx_bytes - a.rx_bytes,
        tx_packets: b.tx_packets - a.tx_packets,
        tx_bytes: b.tx_bytes - a.tx_bytes,
    }
}

/// The flow on /flows whose server is `server`, as JSON.
fn flow_for(agent: &Agent, server: SocketAddr) -> serde_json::Value {
    let (code, body) = agent.get("/flows?limit=100000").expect("/flows");
    assert_eq!(code, 200);
    let flows: Vec<serde_json::Value> = serde_json::from_str(&body).expect("flows json");
    let want = server.to_string();
    let matching: Vec<_> = flows
        .into_iter()
        .filter(|f| f["server"] == want.as_str())
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "exactly one flow to {want}: {matching:?}"
    );
    matching.into_iter().next().expect("one")
}

fn assert_flow_payload(agent: &Agent, server: SocketAddr, moved: &Moved) {
    let f = flow_for(agent, server);
    assert_eq!(f["client_known"], true, "{f}");
    assert_eq!(
        f["to_server"]["payload_bytes"].as_u64(),
        Some(moved.to_server),
        "to server: {f}"
    );
    assert_eq!(
        f["to_client"]["payload_bytes"].as_u64(),
        Some(moved.to_client),
        "to client: {f}"
    );
}

#[test]
#[ignore = "privileged: network namespaces and eBPF; run with `cargo xtask test`"]
fn counts_match_kernel_and_sockets_then_detaches_cleanly() {
    let pair = Pair::new(11).expect("a veth pair between two test namespaces");
    let port = 19_947;
    let mut agent = Agent::start(
        &pair.a,
        port,
        &[
            "--iface",
            &pair.dev_a,
            "--sweep-interval",
            "500ms",
            "--flow-closed-timeout",
            "10m",
            "--flow-idle-timeout",
            "10m",
        ],
    );
    let (agent0, kernel0) = quiet_reading(&agent, &pair.a, &pair.dev_a);

    // A is the client for the TCP flows, B the server; sizes differ per flow so a mix-up shows.
    let v4_srv: SocketAddr = format!("{}:8080", pair.v4_b).parse().expect("addr");
    let v6_srv: SocketAddr = format!("[{}]:8443", pair.v6_b).parse().expect("addr");
    let udp4_srv: SocketAddr = format!("{}:5353", pair.v4_b).parse().expect("addr");
    let udp6_srv: SocketAddr = format!("[{}]:5354", pair.v6_b).parse().expect("addr");
    // B opens a flow to A as well: the agent must see A as the server there.
    let rev_srv: SocketAddr = format!("{}:9000", pair.v4_a).parse().expect("addr");
    let tcp4 = tcp_exchange(&pair.a, &pair.b, v4_srv, 1_048_576 + 17, 3 * 1_048_576 + 5);
    let tcp6 = tcp_exchange(&pair.a, &pair.b, v6_srv, 200_003, 5_000_011);
    let rev = tcp_exchange(&pair.b, &pair.a, rev_srv, 70_001, 123);
    let udp4 = udp_exchange(&pair.a, &pair.b, udp4_srv, 10, 1200, 300);
    let udp6 = udp_exchange(&pair.a, &pair.b, udp6_srv, 7, 999, 1);

    let (agent1, kernel1) = quiet_reading(&agent, &pair.a, &pair.dev_a);
    let seen = delta(agent0, agent1);
    let truth = delta(kernel0, kernel1);
    assert!(
        truth.rx_bytes > 8_000_000 && truth.tx_bytes > 1_000_000,
        "traffic went through the link: {truth:?}"
    );
    assert_eq!(
        seen, truth,
        "agent totals equal the interface's own counters"
    );

    // Let a sweep publish the flows, then compare payload with what the sockets wrote.
    std::thread::sleep(Duration::from_millis(1500));
    assert_flow_payload(&agent, v4_srv, &tcp4);
    assert_flow_payload(&agent, v6_srv, &tcp6);
    assert_flow_payload(&agent, rev_srv, &rev);
    assert_flow_payload(&agent, udp4_srv, &udp4);
    assert_flow_payload(&agent, udp6_srv, &udp6);

    let m = agent.metrics();
    assert_eq!(
        prom::value(&m, "siphon_attached_interfaces", &[]),
        Some(1.0)
    );
    for reason in ["flow_map_insert", "iface_map_insert"] {
        assert_eq!(
            prom::value(&m, "siphon_kernel_lost_total", &[("reason", reason)]),
            Some(0.0),
            "{reason}"
        );
    }
    let to_server = prom::value(
        &m,
        "siphon_flow_payload_bytes_total",
        &[("direction", "to_server")],
    )
    .expect("series");
    let expected_to_server =
        tcp4.to_server + tcp6.to_server + rev.to_server + udp4.to_server + udp6.to_server;
    assert_eq!(
        to_server as u64, expected_to_server,
        "flow totals by direction"
    );

    // A second agent on the same interface must refuse, not double-attach.
    let second = pair
        .a
        .command(common::siphon::BIN)
        .args(["run", "--iface", &pair.dev_a, "--listen", "127.0.0.1:19948"])
        .output()
        .expect("run second siphon");
    assert!(!second.status.success(), "second instance must fail");
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("already"), "clear error, got: {err}");

    let (status, log) = agent.stop();
    assert!(
        status.success(),
        "exit 0 after SIGTERM, got {status}: {log}"
    );
    assert_nothing_left(&pair.a, &pair.dev_a);
}

fn assert_nothing_left(ns: &NetNs, dev: &str) {
    let dev_owned = dev.to_owned();
    let attached = ns
        .run(move || {
            let mut names = Vec::new();
            for t in [
                aya::programs::TcAttachType::Ingress,
                aya::programs::TcAttachType::Egress,
            ] {
                let (_, progs) =
                    aya::programs::SchedClassifier::query_tcx(&dev_owned, t).expect("query tcx");
                names.extend(
                    progs
                        .iter()
                        .map(|p| p.name_as_str().unwrap_or("?").to_owned()),
                );
            }
            names
        })
        .expect("a thread in the test namespace");
    assert!(
        attached.is_empty(),
        "tcx programs left on {dev}: {attached:?}"
    );
    let qdiscs = ns
        .command("tc")
        .args(["qdisc", "show", "dev", dev])
        .output()
        .expect("tc");
    let text = String::from_utf8_lossy(&qdiscs.stdout);
    assert!(
        !text.contains("clsact"),
        "clsact qdisc left on {dev}: {text}"
    );
    let filters = ns
        .command("tc")
        .args(["filter", "show", "dev", dev, "ingress"])
        .output()
        .expect("tc");
    assert!(
        filters.stdout.is_empty(),
        "filters left: {}",
        String::from_utf8_lossy(&filters.stdout)
    );
}
