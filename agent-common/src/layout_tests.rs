//! Layout checks: the size of every shared struct equals the sum of its fields' sizes, so there
//! is no implicit padding, and the sizes match what the other side was built against.
use super::*;
use core::mem::{align_of, size_of};

/// Asserts that `$ty` is exactly its fields laid end to end: no implicit padding anywhere.
macro_rules! assert_no_padding {
    ($ty:ty { $($field:ident : $fty:ty),+ $(,)? }) => {{
        let sum = 0 $(+ size_of::<$fty>())+;
        assert_eq!(size_of::<$ty>(), sum, concat!(stringify!($ty), " has implicit padding"));
        // Offsets increase in declaration order with no gaps.
        let mut expected = 0usize;
        $(
            assert_eq!(core::mem::offset_of!($ty, $field), expected,
                concat!(stringify!($ty), ".", stringify!($field), " is not where expected"));
            expected += size_of::<$fty>();
        )+
        let _ = expected;
    }};
}

#[test]
fn flow_key_has_no_padding() {
    assert_no_padding!(FlowKey {
        addr_a: Addr,
        addr_b: Addr,
        ifindex: u32,
        port_a: u16,
        port_b: u16,
        proto: u8,
        _pad: u8,
        _pad2: u16
    });
    assert_eq!(size_of::<FlowKey>(), 44);
}

#[test]
fn flow_state_has_no_padding() {
    assert_no_padding!(DirCounters {
        packets: u64,
        bytes: u64,
        payload_bytes: u64
    });
    assert_no_padding!(FlowState {
        dir: [DirCounters; 2],
        tcp_flags: u64,
        last_seen_ns: u64,
        client: u8,
        seq_known: u8,
        await_ack: u8,
        hellos: u8,
        hello_want: u16,
        hello_got: u16,
        seq_end: [u32; 2],
        clock_anchor_ns: u64,
        clock_anchor_jiffies: u64,
        exchange: Exchange,
        handshake: Handshake,
        hole: [[u32; 2]; 2],
        first_seen_ns: u64,
    });
    // What every packet of an established flow touches (counters, flags, sides, sequence
    // tracking, clock anchor, the exchange's hot half) lies in the first 128 bytes.
    assert_eq!(core::mem::offset_of!(FlowState, exchange), 96);
    assert!(
        core::mem::offset_of!(FlowState, exchange) + core::mem::offset_of!(Exchange, req_bytes)
            <= 128
    );
    assert_eq!(size_of::<FlowState>(), 216);
    assert_eq!(align_of::<FlowState>(), 8);
}

#[test]
fn counter_structs_have_no_padding() {
    assert_no_padding!(IfaceKey {
        ifindex: u32,
        direction: u32
    });
    assert_no_padding!(IfaceCounters {
        packets: u64,
        bytes: u64
    });
}

#[test]
fn kernel_counter_indices_are_dense_and_ordered() {
    for (i, c) in KernelCounter::ALL.iter().enumerate() {
        assert_eq!(*c as u32, i as u32);
    }
    assert_eq!(KernelCounter::ALL.len() as u32, KernelCounter::COUNT);
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> Addr {
    v4_mapped(u32::from_ne_bytes([a, b, c, d]))
}

#[test]
fn both_directions_normalise_to_one_key() {
    let client = v4(10, 0, 0, 1);
    let server = v4(10, 0, 0, 2);
    let (k1, s1) = FlowKey::normalise(3, 6, &client, 40000, &server, 80);
    let (k2, s2) = FlowKey::normalise(3, 6, &server, 80, &client, 40000);
    assert_eq!(k1, k2);
    assert_ne!(s1, s2);
    assert_eq!((s1, s2), (Side::A, Side::B));
}

#[test]
fn same_address_orders_by_port() {
    let lo = v4(127, 0, 0, 1);
    let (k, s) = FlowKey::normalise(1, 17, &lo, 9000, &lo, 53);
    assert_eq!((k.port_a, k.port_b), (53, 9000));
    assert_eq!(s, Side::B);
}

#[test]
fn v4_mapped_is_the_standard_mapping() {
    let a = v4(192, 0, 2, 7);
    let mut bytes = [0u8; 16];
    for (i, w) in a.iter().enumerate() {
        bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
    }
    assert_eq!(
        bytes,
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 7]
    );
}

#[test]
fn tcp_flags_split_per_side() {
    let st = FlowState {
        tcp_flags: 0x1202,
        ..Default::default()
    };
    assert_eq!(st.tcp_flags_from(Side::A), tcp_flag::SYN);
    assert_eq!(st.tcp_flags_from(Side::B), tcp_flag::SYN | tcp_flag::ACK);
}

#[test]
fn exchange_records_have_no_padding() {
    assert_no_padding!(Exchange {
        phase: u8,
        flags: u8,
        _pad: u16,
        seq: u32,
        resp_bytes: u64,
        resp_last_ns: u64,
        resp_packets: u32,
        resp_psh: u32,
        req_bytes: u64,
        req_last_ns: u64,
        req_packets: u32,
        _pad2: u32,
        req_first_ns: u64,
        resp_first_ns: u64,
    });
    assert_no_padding!(Handshake {
        syn_ns: u64,
        synack_ns: u64,
        ack_ns: u64
    });
    assert_no_padding!(ExchangeRecord {
        kind: u32,
        end: u8,
        client: u8,
        _pad: u16,
        key: FlowKey,
        _pad2: u32,
        exchange: Exchange,
        handshake: Handshake,
    });
    assert_no_padding!(PayloadHeader {
        kind: u32,
        what: u8,
        side: u8,
        prev_end: u8,
        client: u8,
        key: FlowKey,
        seq: u32,
        ts_ns: u64,
        turn_offset: u64,
        payload_len: u32,
        captured: u32,
        prev: Exchange,
        handshake: Handshake,
    });
    // The captured bytes follow the header directly in every size class.
    assert_eq!(core::mem::size_of::<PayloadHeader>() % 8, 0);
    assert_eq!(
        core::mem::size_of::<PayloadRecord<256>>(),
        core::mem::size_of::<PayloadHeader>() + 256
    );
    assert_eq!(
        core::mem::size_of::<PayloadRecord<CAPTURE_MAX>>(),
        core::mem::size_of::<PayloadHeader>() + CAPTURE_MAX
    );
    assert_eq!(CAPTURE_CLASSES.last(), Some(&CAPTURE_MAX));
    assert!(CAPTURE_CLASSES
        .windows(2)
        .all(|w| w[0] < w[1] && w[0] % 8 == 0));
    assert_no_padding!(SynRecord {
        kind: u32,
        tcp_flags: u8,
        side: u8,
        window: u16,
        key: FlowKey,
        options_len: u8,
        ttl: u8,
        _pad: u16,
        ts_ns: u64,
        options: [u8; TCP_OPTIONS_MAX],
    });
    // Every record starts with its kind, so userspace can dispatch on the first u32.
    assert_eq!(core::mem::offset_of!(ExchangeRecord, kind), 0);
    assert_eq!(core::mem::offset_of!(PayloadHeader, kind), 0);
    assert_eq!(core::mem::offset_of!(SynRecord, kind), 0);
}
