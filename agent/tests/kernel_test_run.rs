//! The kernel program under BPF_PROG_TEST_RUN with crafted frames: parsing and counting. Every
//! frame must return "pass" and change exactly the counters it should. Needs root (CAP_BPF):
//! run through `cargo xtask test`.

mod common;

use agent_common::{names, IfaceCounters, KernelCounter, Side};
use common::test_run::*;
use etherparse::{PacketBuilder, VlanId};

#[test]
#[ignore = "privileged: loads eBPF; run with `cargo xtask test`"]
fn ipv4_tcp_creates_a_flow_with_exact_counts() {
    let mut h = Harness::new();
    let frame = tcp4(&payload(100), 40000, 80);
    let d = h.delta(&frame);
    assert_eq!(d.kernel(), vec![(KernelCounter::FlowsCreated, 1)]);
    assert_eq!(
        d.iface(),
        IfaceCounters {
            packets: 1,
            bytes: frame.len() as u64
        }
    );
    let (key, st, before) = only_flow(&d);
    assert!(before.is_none());
    assert_eq!(key.proto, 6);
    let c = side_counters(&key, &st, 40000);
    assert_eq!(
        (c.packets, c.bytes, c.payload_bytes),
        (1, frame.len() as u64, 100)
    );
    // The reply lands in the same flow, other direction.
    let reply = {
        let b = PacketBuilder::ethernet2(MAC_B, MAC_A)
            .ipv4([10, 0, 0, 2], [10, 0, 0, 1], 64)
            .tcp(80, 40000, 9, 500)
            .ack(101);
        let mut v = Vec::new();
        b.write(&mut v, &payload(300)).expect("write");
        v
    };
    let d = h.delta(&reply);
    assert!(
        d.kernel().is_empty(),
        "no new flow, no skip: {:?}",
        d.kernel()
    );
    let (key2, st2, _) = only_flow(&d);
    assert_eq!(key2, key);
    assert_eq!(side_counters(&key, &st2, 80).payload_bytes, 300);
    assert_eq!(side_counters(&key, &st2, 40000).payload_bytes, 100);
}

#[test]
#[ignore = "privileged: loads eBPF; run with `cargo xtask test`"]
fn ipv4_options_move_the_transport_header() {
    let mut h = Harness::new();
    let mut frame = tcp4(&payload(40), 40001, 80);
    // IHL 5 -> 7: insert 8 bytes of NOP options and fix the lengths.
    frame[14] = 0x47;
    let tot = u16::from_be_bytes([frame[16], frame[17]]) + 8;
    frame[16..18].copy_from_slice(&tot.to_be_bytes());
    frame.splice(34..34, [1u8; 8]);
    let d = h.delta(&frame);
    let (key, st, _) = only_flow(&d);
    assert_eq!(sorted_ports(&key), (80, 40001));
    assert_eq!(side_counters(&key, &st, 40001).payload_bytes, 40);
}

#[test]
#[ignore = "privileged: loads eBPF; run with `cargo xtask test`"]
fn ipv6_extension_headers_are_walked() {
    let mut h = Harness::new();
    // Hop-by-hop (8 bytes) -> destination options (16 bytes) -> TCP.
    let mut ext = vec![60u8, 0, 1, 4, 0, 0, 0, 0];
    ext.extend_from_slice(&[6u8, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let frame = with_ipv6_ext(tcp6(&payload(77)), 14, 0, &ext);
    let d = h.delta(&frame);
    assert_eq!(d.kernel(), vec![(KernelCounter::FlowsCreated, 1)]);
    let (key, st, _) = only_flow(&d);
    assert_eq!((sorted_ports(&key), key.proto), ((443, 40000), 6));
    assert_eq!(side_counters(&key, &st, 40000).payload_bytes, 77);
}

#[test]
#[ignore = "privileged: loads eBPF; run with `cargo xtask test`"]
fn ipv6_fragments_first_counts_later_skip() {
    let mut h = Harness::new();
    // First fragment (offset 0, M=1) still carries the TCP header: a flow.
    let first = with_ipv6_ext(tcp6(&payload(10)), 14, 44, &[6u8, 0, 0, 1, 0, 0, 0, 42]);
    let d = h.delta(&first);
    assert_eq!(d.kernel(), vec![(KernelCounter::FlowsCreated, 1)]);
    // A later fragment (offset 8 units) has no transport header.
    let later = with_ipv6_ext(tcp6(&payload(10)), 14, 44, &[6u8, 0, 0, 0x40, 0, 0, 0, 42]);
    let d = h.delta(&later);
    assert_eq!(d.kernel(), vec![(KernelCounter::SkipFragment, 1)]);
    assert!(d.changed_flows().is_empty());
    assert_eq!(
        d.iface().packets,
        1,
        "skipped packets still count on the interface"
    );
}

#[test]
#[ignore = "privileged: loads eBPF; run with `cargo xtask test`"]
fn vlan_tags_single_and_double() {
    let mut h = Harness::new();
    for (name, builder) in [
        (
            "802.1Q",
            PacketBuilder::ethernet2(MAC_A, MAC_B).single_vlan(VlanId::try_new(10).expect("vid")),
        ),
        (
            "QinQ",
            PacketBuilder::ethernet2(MAC_A, MAC_B).double_vlan(
                VlanId::try_new(100).expect("vid"),
                VlanId::try_new(200).expect("vid"),
            ),
        ),
    ] {
        let b = builder
            .ipv4([10, 1, 0, 1], [10, 1, 0, 2], 64)
            .udp(1000 + name.len() as u16, 53);
        let mut frame = Vec::new();
        b.write(&mut frame, &payload(33)).expect("write");
        let d = h.delta(&frame);
        assert_eq!(d.kernel(), vec![(KernelCounter::FlowsCreated, 1)], "{name}");
        let (key, st, _) = only_flow(&d);
        assert_eq!(
            side_counters(&key, &st, 1000 + name.len() as u16).payload_bytes,
            33,
            "{name}"
        );
    }
    // Three tags: deeper than we walk, counted as such.
    let mut frame = tcp4(&payload(5), 1, 2);
    frame.splice(
        12..12,
        [0x88, 0xa8, 0, 1, 0x81, 0x00, 0, 2, 0x81, 0x00, 0, 3],
    );
    let d = h.delta(&frame);
    assert_eq!(d.kernel(), vec![(KernelCounter::SkipVlanDepth, 1)]);
}

#[test]
#[ignore = "privileged: loads eBPF; run with `cargo xtask test`"]
fn truncated_at_every_header_boundary() {
    let mut h = Harness::new();
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .single_vlan(VlanId::try_new(7).expect("vid"))
        .ipv4([10, 2, 0, 1], [10, 2, 0, 2], 64)
        .tcp(5555, 80, 1, 100);
    let mut full = Vec::new();
    b.write(&mut full, &payload(20)).expect("write");
    // Ethernet 14, VLAN 4, IPv4 20, TCP 20, payload 20.
    let cases: &[(usize, KernelCounter)] = &[
        (14, KernelCounter::SkipTruncatedL2), // VLAN tag missing (test_run needs >= 14 bytes)
        (17, KernelCounter::SkipTruncatedL2),
        (18, KernelCounter::SkipTruncatedL3),
        (37, KernelCounter::SkipTruncatedL3),
        (38, KernelCounter::SkipTruncatedL4),
        (51, KernelCounter::SkipTruncatedL4),
    ];
    for (len, counter) in cases {
        let d = h.delta(&full[..*len]);
        assert_eq!(d.kernel(), vec![(*counter, 1)], "cut at {len}");
        assert!(d.changed_flows().is_empty(), "cut at {len}");
        assert_eq!(
            d.iface(),
            IfaceCounters {
                packets: 1,
                bytes: *len as u64
            },
            "cut at {len}"
        );
    }
    // Cut inside the payload: a flow, with only the payload bytes present counted.
    let d = h.delta(&full[..58 + 5]);
    let (key, st, _) = only_flow(&d);
    assert_eq!(side_counters(&key, &st, 5555).payload_bytes, 5);
}

#[test]
#[ignore = "privileged: loads eBPF; run with `cargo xtask test`"]
fn zero_payload_and_syn_set_the_client() {
    let mut h = Harness::new();
    // SYN from the high port... to a low port, but sent by 10.9.0.2:80 -> 10.9.0.1:40000 would
    // confuse a port heuristic; the SYN must win.
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4([10, 9, 0, 2], [10, 9, 0, 1], 64)
        .tcp(80, 40000, 1, 100)
        .syn();
    let mut syn = Vec::new();
    b.write(&mut syn, &[]).expect("write");
    let d = h.delta(&syn);
    let (key, st, _) = only_flow(&d);
    let c = side_counters(&key, &st, 80);
    assert_eq!((c.packets, c.payload_bytes), (1, 0));
    let client_side = if key.port_a == 80 {
        agent_common::client::A
    } else {
        agent_common::client::B
    };
    assert_eq!(st.client, client_side, "the SYN's sender is the client");
    assert_eq!(
        st.tcp_flags_from(if key.port_a == 80 { Side::A } else { Side::B }),
        agent_common::tcp_flag::SYN
    );
}

/// A flow picked up mid-stream by a pure ACK, and a UDP flow, are created with their first
/// packet already counted in the inserted value: the same state as inserting a zeroed flow and
/// counting the packet on it, and later packets count on as usual.
#[test]
#[ignore = "privileged: loads eBPF; run with `cargo xtask test`"]
fn first_packet_counted_in_the_inserted_flow() {
    let mut h = Harness::new();
    let ack = {
        let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4([10, 8, 0, 1], [10, 8, 0, 2], 64)
            .tcp(40001, 80, 7, 500)
            .ack(9);
        let mut v = Vec::new();
        b.write(&mut v, &[]).expect("write");
        v
    };
    let d = h.delta(&ack);
    assert_eq!(d.kernel(), vec![(KernelCounter::FlowsCreated, 1)]);
    let (key, st, before) = only_flow(&d);
    assert!(before.is_none());
    let c = side_counters(&key, &st, 40001);
    assert_eq!(
        (c.packets, c.bytes, c.payload_bytes),
        (1, ack.len() as u64, 0)
    );
    let other = side_counters(&key, &st, 80);
    assert_eq!((other.packets, other.bytes), (0, 0));
    let side = if key.port_a == 40001 {
        Side::A
    } else {
        Side::B
    };
    assert_eq!(st.tcp_flags_from(side), agent_common::tcp_flag::ACK);
    assert_eq!(st.client, side.as_client(), "the higher port is the client");
    assert!(st.first_seen_ns != 0 && st.last_seen_ns == st.first_seen_ns);
    assert_eq!(st.exchange.phase, agent_common::phase::IDLE);
    let d = h.delta(&ack);
    assert!(d.kernel().is_empty(), "{:?}", d.kernel());
    let (_, st2, _) = only_flow(&d);
    assert_eq!(side_counters(&key, &st2, 40001).packets, 2);

    let dgram = udp4(&payload(40));
    let d = h.delta(&dgram);
    let (key, st, _) = only_flow(&d);
    let c = side_counters(&key, &st, 5353);
    assert_eq!(
        (c.packets, c.bytes, c.payload_bytes),
        (1, dgram.len() as u64, 40)
    );
    assert!(st.first_seen_ns != 0 && st.last_seen_ns == st.first_seen_ns);
    // Later datagrams read the time from the flow's anchor: never behind the first.
    let d = h.delta(&dgram);
    let (_, st2, _) = only_flow(&d);
    assert_eq!(side_counters(&key, &st2, 5353).packets, 2);
    assert!(st2.last_seen_ns >= st.last_seen_ns);
    assert_eq!(st2.first_seen_ns, st.first_seen_ns);
}

#[test]
#[ignore = "privileged: loads eBPF; run with `cargo xtask test`"]
fn non_ip_and_other_protocols_are_counted_not_flowed() {
    let mut h = Harness::new();
    let mut arp = vec![0xffu8; 6];
    arp.extend_from_slice(&MAC_A);
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0u8; 28]);
    let d = h.delta(&arp);
    assert_eq!(d.kernel(), vec![(KernelCounter::SkipNotIp, 1)]);
    assert_eq!(
        d.iface(),
        IfaceCounters {
            packets: 1,
            bytes: arp.len() as u64
        }
    );

    let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .icmpv4_echo_request(1, 1);
    let mut icmp = Vec::new();
    b.write(&mut icmp, &payload(56)).expect("write");
    let d = h.delta(&icmp);
    assert_eq!(d.kernel(), vec![(KernelCounter::SkipOtherProto, 1)]);
    assert!(d.changed_flows().is_empty());
    let before = d.before.protos.get(&1).copied().unwrap_or_default();
    let after = d.after.protos.get(&1).copied().expect("icmp counted");
    assert_eq!(
        (after.packets - before.packets, after.bytes - before.bytes),
        (1, icmp.len() as u64)
    );
}

#[test]
#[ignore = "privileged: loads eBPF; run with `cargo xtask test`"]
fn udp_payload_is_counted() {
    let mut h = Harness::new();
    let frame = udp4(&payload(512));
    let d = h.delta(&frame);
    let (key, st, _) = only_flow(&d);
    assert_eq!(key.proto, 17);
    assert_eq!(side_counters(&key, &st, 5353).payload_bytes, 512);
}

#[test]
#[ignore = "privileged: loads eBPF; run with `cargo xtask test`"]
fn gso_sized_frame_counts_its_full_length() {
    let mut h = Harness::new();
    // A TSO/GSO skb as the egress hook sees it: one IPv4 packet whose total length is nearly
    // 64 KiB. BPF_PROG_TEST_RUN refuses linear data larger than about a page, so the frame
    // carries the headers and the first 2946 payload bytes while the IP header claims the whole
    // 64 KiB, as a GSO skb's header does. (The end-to-end test covers real 64 KiB TSO skbs.)
    let body = 65_535 - 20 - 20;
    let mut frame = tcp4(&payload(body), 40100, 8080);
    assert_eq!(u16::from_be_bytes([frame[16], frame[17]]), 65_535);
    frame.truncate(3000);
    let sent_len = frame.len();
    let before = h.snapshot();
    assert_eq!(h.run(names::PROG_EGRESS, &frame), PASS);
    let d = Delta {
        before,
        after: h.snapshot(),
    };
    assert_eq!(d.kernel(), vec![(KernelCounter::FlowsCreated, 1)]);
    assert_eq!(
        d.iface(),
        IfaceCounters {
            packets: 1,
            bytes: sent_len as u64
        }
    );
    let (key, st, _) = only_flow(&d);
    // Payload counted is what the skb holds, never more than the IP header claims.
    assert_eq!(
        side_counters(&key, &st, 40100).payload_bytes,
        (sent_len - 54).min(body) as u64
    );
}

#[test]
#[ignore = "privileged: loads eBPF; run with `cargo xtask test`"]
fn retransmitted_payload_counts_on_the_wire_not_in_the_exchange() {
    let mut h = Harness::new();
    let seg = |flags_syn: bool, seq: u32, payload: &[u8]| {
        let b = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4([10, 7, 0, 1], [10, 7, 0, 2], 64);
        let b = if flags_syn {
            b.tcp(41000, 8000, seq, 64240).syn()
        } else {
            b.tcp(41000, 8000, seq, 64240).ack(1).psh()
        };
        let mut v = Vec::new();
        b.write(&mut v, payload).expect("write");
        v
    };
    h.delta(&seg(true, 999, &[]));
    let request = seg(
        false,
        1000,
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    let first = h.delta(&request);
    assert!(first
        .kernel()
        .iter()
        .all(|(c, _)| *c != KernelCounter::TcpRetransmittedBytes));
    let again = h.delta(&request);
    let n = (request.len() - 54) as u64;
    assert_eq!(
        again.kernel(),
        vec![(KernelCounter::TcpRetransmittedBytes, n)]
    );
    let (key, st, _) = only_flow(&again);
    assert_eq!(
        side_counters(&key, &st, 41000).payload_bytes,
        2 * n,
        "the wire carried it twice"
    );
    assert_eq!(st.exchange.req_bytes, n, "the request is counted once");
    assert_eq!(
        st.exchange.seq, 1,
        "a retransmission starts no new exchange"
    );
}

#[test]
#[ignore = "privileged: loads eBPF; run with `cargo xtask test`"]
fn reordered_segments_are_new_data_and_repeats_are_not() {
    let mut h = Harness::new();
    let seg = |syn: bool, seq: u32, payload: &[u8]| {
        let b = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4([10, 8, 0, 1], [10, 8, 0, 2], 64);
        let b = if syn {
            b.tcp(42000, 8000, seq, 64240).syn()
        } else {
            b.tcp(42000, 8000, seq, 64240).ack(1).psh()
        };
        let mut v = Vec::new();
        b.write(&mut v, payload).expect("write");
        v
    };
    let head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n";
    let body = [b'x'; 100];
    h.delta(&seg(true, 999, &[]));
    let first = seg(false, 1000, head);
    let second = seg(false, 1000 + head.len() as u32, &body);
    // The second segment overtakes the first: a gap, then the late segment fills it.
    h.delta(&second);
    let late = h.delta(&first);
    assert!(
        late.kernel()
            .iter()
            .all(|(c, _)| *c != KernelCounter::TcpRetransmittedBytes),
        "{:?}",
        late.kernel()
    );
    let again = h.delta(&first);
    assert_eq!(
        again.kernel(),
        vec![(KernelCounter::TcpRetransmittedBytes, head.len() as u64)]
    );
    let (_, st, _) = only_flow(&again);
    assert_eq!(
        st.exchange.req_bytes,
        (head.len() + body.len()) as u64,
        "both segments, once each"
    );
}

/// A flow picked up mid-stream (no SYN seen) takes its client from the service ports userspace
/// wrote: the side not on a service port, whichever direction the first packet goes. Without
/// one, the side on the higher port is guessed the client.
#[test]
#[ignore = "privileged: loads eBPF; run with `cargo xtask test`"]
fn service_ports_name_the_client_of_a_flow_picked_up_midstream() {
    let mut h = Harness::new();
    let client_port = |h: &mut Harness, sport: u16, dport: u16| {
        let d = h.delta(&tcp4(&payload(10), sport, dport));
        let (key, st, _) = only_flow(&d);
        match st.client {
            agent_common::client::A => key.port_a,
            agent_common::client::B => key.port_b,
            other => panic!("no client guessed: {other}"),
        }
    };
    assert_eq!(client_port(&mut h, 1234, 60000), 60000, "port heuristic");
    h.flows.add_service_port(60000, 6).expect("service port");
    assert_eq!(client_port(&mut h, 1235, 60000), 1235, "to the service");
    assert_eq!(client_port(&mut h, 60000, 1236), 1236, "from the service");
    // Another port in the same map word stays unknown.
    assert_eq!(client_port(&mut h, 1237, 60001), 60001, "port heuristic");
}
