//! Lining up on packets built with etherparse: NAT with rewritten sequence numbers, port reuse
//! within a capture, and two look-alike connections (ambiguous, not guessed).

use etherparse::PacketBuilder;

mod common;
use vantage::align::{align, AlignOptions, MatchMethod, Vantage};
use vantage::capture::{Frame, LinkType, Timestamp};
use vantage::decode::{decode, Decoded};
use vantage::tcp::Tracker;

type Addr = ([u8; 4], u16);

/// A TCP packet: (time s, src, dst, seq, ack, flags "S", "SA", "A", "PA", "R", payload).
struct Pkt {
    t: f64,
    src: Addr,
    dst: Addr,
    seq: u32,
    ack: u32,
    flags: &'static str,
    payload: Vec<u8>,
}

fn bytes(p: &Pkt) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(p.src.0, p.dst.0, 64)
        .tcp(p.src.1, p.dst.1, p.seq, 1000);
    if p.flags.contains('S') {
        b = b.syn();
    }
    if p.flags.contains('R') {
        b = b.rst();
    }
    if p.flags.contains('P') {
        b = b.psh();
    }
    if p.flags.contains('A') {
        b = b.ack(p.ack);
    }
    let mut v = Vec::new();
    b.write(&mut v, &p.payload).unwrap();
    v
}

fn capture(name: &str, pkts: &[Pkt], shift: f64) -> Vantage {
    let mut t = Tracker::new(format!("{name}.pcap"));
    for (i, p) in pkts.iter().enumerate() {
        let data = bytes(p);
        let frame = Frame {
            number: i as u64 + 1,
            ts: Timestamp(((p.t + shift) * 1e9) as i64 + 1_700_000_000_000_000_000),
            link: LinkType::ETHERNET,
            interface: 0,
            orig_len: data.len() as u32,
            offset: 0,
            data: &data,
        };
        let Decoded::Ip(pkt) = decode(&frame) else {
            panic!()
        };
        t.packet(&frame, &pkt);
    }
    common::built_vantage(name, pkts.len() as u64, None, t.finish())
}

/// One WebSocket-ish exchange: handshake, a request, a reply, two more messages.
/// `client`/`server` are this leg's addresses, `cisn`/`sisn` its ISNs, `t0` its start, `d` the
/// one-way delay added at this point (for the downstream capture).
fn exchange(client: Addr, server: Addr, cisn: u32, sisn: u32, t0: f64, tag: u8) -> Vec<Pkt> {
    let msg = |n: u8, len: usize| {
        let mut v = vec![tag; len];
        v[0] = n;
        v
    };
    vec![
        Pkt {
            t: t0,
            src: client,
            dst: server,
            seq: cisn,
            ack: 0,
            flags: "S",
            payload: vec![],
        },
        Pkt {
            t: t0 + 0.010,
            src: server,
            dst: client,
            seq: sisn,
            ack: cisn + 1,
            flags: "SA",
            payload: vec![],
        },
        Pkt {
            t: t0 + 0.020,
            src: client,
            dst: server,
            seq: cisn + 1,
            ack: sisn + 1,
            flags: "A",
            payload: vec![],
        },
        Pkt {
            t: t0 + 0.030,
            src: client,
            dst: server,
            seq: cisn + 1,
            ack: sisn + 1,
            flags: "PA",
            payload: msg(1, 120),
        },
        Pkt {
            t: t0 + 0.040,
            src: server,
            dst: client,
            seq: sisn + 1,
            ack: cisn + 121,
            flags: "PA",
            payload: msg(2, 80),
        },
        Pkt {
            t: t0 + 1.000,
            src: client,
            dst: server,
            seq: cisn + 121,
            ack: sisn + 81,
            flags: "PA",
            payload: msg(3, 4),
        },
        Pkt {
            t: t0 + 1.010,
            src: server,
            dst: client,
            seq: sisn + 81,
            ack: cisn + 125,
            flags: "PA",
            payload: msg(4, 2),
        },
    ]
}

const AGENT: Addr = ([192, 0, 2, 10], 40000);
const VIP: Addr = ([198, 51, 100, 10], 8080);
const INSIDE: Addr = ([203, 0, 113, 1], 20001);
const SWITCH: Addr = ([203, 0, 113, 20], 8080);

/// The downstream view of the agent's packets: client packets arrive `delay` later, server
/// packets left `delay` earlier than the agent saw them.
fn downstream(
    mut pkts: Vec<Pkt>,
    delay: f64,
    client: Addr,
    server: Addr,
    seq_shift: u32,
) -> Vec<Pkt> {
    for p in &mut pkts {
        let from_client = p.src == AGENT;
        p.t += if from_client { delay } else { -delay };
        if from_client {
            p.src = client;
            p.dst = server;
            p.seq = p.seq.wrapping_add(seq_shift);
        } else {
            p.src = server;
            p.dst = client;
            if p.flags.contains('A') {
                p.ack = p.ack.wrapping_add(seq_shift);
            }
        }
    }
    pkts
}

#[test]
fn nat_with_rewritten_sequence_numbers_matches_by_stream() {
    let a = exchange(AGENT, VIP, 1000, 5000, 0.0, b'a');
    let b = downstream(
        exchange(AGENT, VIP, 1000, 5000, 0.0, b'a'),
        0.003,
        INSIDE,
        SWITCH,
        0x4000_0000,
    );
    let al = align(
        vec![capture("agent", &a, 0.0), capture("softswitch", &b, 2.0)],
        &AlignOptions::default(),
    );
    let tcp: Vec<_> = al.connections.iter().collect();
    assert_eq!(tcp.len(), 1, "{:?}", tcp);
    assert_eq!(tcp[0].legs.len(), 2);
    assert_eq!(tcp[0].matched.method, MatchMethod::Stream);
    let off = &al.clock_offsets[0];
    assert_eq!(off.vantage, "softswitch");
    assert!((off.offset_s - 2.0).abs() <= off.bound_s + 1e-6, "{off:?}");
    assert!((off.offset_s - 2.0).abs() < 1e-4, "{off:?}");
    assert!(
        off.bound_s >= 0.003 - 1e-6 && off.bound_s < 0.004,
        "{off:?}"
    );
}

#[test]
fn port_reuse_legs_pair_one_to_one() {
    // The agent reuses its port: two connections on one 5-tuple, the first ended by a RST.
    // Behind the NAT they have two different source ports; conntrack keeps the ISNs.
    let mut a = exchange(AGENT, VIP, 1000, 5000, 0.0, b'a');
    a.push(Pkt {
        t: 2.0,
        src: AGENT,
        dst: VIP,
        seq: 1125,
        ack: 5081,
        flags: "R",
        payload: vec![],
    });
    a.extend(exchange(AGENT, VIP, 9000, 7000, 3.0, b'a'));
    let mut b = downstream(
        exchange(AGENT, VIP, 1000, 5000, 0.0, b'a'),
        0.001,
        INSIDE,
        SWITCH,
        0,
    );
    b.push(Pkt {
        t: 2.001,
        src: INSIDE,
        dst: SWITCH,
        seq: 1125,
        ack: 5081,
        flags: "R",
        payload: vec![],
    });
    let inside2 = ([203, 0, 113, 1], 20002);
    b.extend(downstream(
        exchange(AGENT, VIP, 9000, 7000, 3.0, b'a'),
        0.001,
        inside2,
        SWITCH,
        0,
    ));
    let al = align(
        vec![capture("agent", &a, 0.0), capture("softswitch", &b, 0.0)],
        &AlignOptions::default(),
    );
    assert_eq!(al.connections.len(), 2);
    for (l, port) in al.connections.iter().zip([20001, 20002]) {
        assert_eq!(l.matched.method, MatchMethod::NatIsn);
        assert_eq!(l.legs.len(), 2);
        let sw = l.legs.iter().find(|g| &*g.vantage == "softswitch").unwrap();
        assert_eq!(sw.sport, port);
    }
    assert!(
        al.connection(&al.connections.get(1).unwrap().legs[0])
            .reused_port
    );
}

#[test]
fn look_alike_connections_are_ambiguous_not_guessed() {
    // Two agents open identical sessions in the same millisecond; behind a proxy that
    // rewrites ports and sequence numbers, nothing but content ties the legs together, and
    // the content is the same.
    let agent2: Addr = ([192, 0, 2, 11], 40000);
    let mut a = exchange(AGENT, VIP, 1000, 5000, 0.0, b'x');
    a.extend(exchange(agent2, VIP, 3000, 6000, 0.0005, b'x'));
    let mut b = downstream(
        exchange(AGENT, VIP, 1000, 5000, 0.0, b'x'),
        0.001,
        INSIDE,
        SWITCH,
        77,
    );
    let mut b2 = exchange(agent2, VIP, 3000, 6000, 0.0005, b'x');
    for p in &mut b2 {
        let from_client = p.src == agent2;
        p.t += 0.001;
        if from_client {
            p.src = ([203, 0, 113, 1], 20002);
            p.dst = SWITCH;
            p.seq += 99;
        } else {
            p.src = SWITCH;
            p.dst = ([203, 0, 113, 1], 20002);
            if p.flags.contains('A') {
                p.ack += 99;
            }
        }
    }
    b.append(&mut b2);
    let al = align(
        vec![capture("agent", &a, 0.0), capture("softswitch", &b, 0.0)],
        &AlignOptions::default(),
    );
    assert!(al.ambiguous > 0);
    assert!(al.connections.iter().all(|l| l.legs.len() == 1));
    assert!(al
        .connections
        .iter()
        .all(|l| l.matched.method == MatchMethod::Ambiguous));
}

#[test]
fn unrelated_traffic_matches_nothing() {
    let a = exchange(AGENT, VIP, 1000, 5000, 0.0, b'a');
    let other = exchange(
        ([192, 0, 2, 50], 50000),
        ([198, 51, 100, 99], 443),
        42,
        4242,
        0.0,
        b'z',
    );
    let al = align(
        vec![capture("agent", &a, 0.0), capture("elsewhere", &other, 0.0)],
        &AlignOptions::default(),
    );
    assert_eq!(al.connections.len(), 2);
    assert!(al
        .connections
        .iter()
        .all(|l| l.matched.method == MatchMethod::Unmatched && l.legs.len() == 1));
    assert!(al.clock_offsets.is_empty());
}

#[test]
fn manual_offset_wins_and_is_reported_as_given() {
    let a = exchange(AGENT, VIP, 1000, 5000, 0.0, b'a');
    let b = downstream(
        exchange(AGENT, VIP, 1000, 5000, 0.0, b'a'),
        0.003,
        INSIDE,
        SWITCH,
        0,
    );
    let al = align(
        vec![capture("agent", &a, 0.0), capture("softswitch", &b, 2.0)],
        &AlignOptions {
            reference: 0,
            offsets: vec![("softswitch".into(), 1.5)],
            threads: 1,
        },
    );
    let off = &al.clock_offsets[0];
    assert_eq!(
        (off.offset_s, off.bound_s, off.method.as_str()),
        (1.5, 0.0, "manual")
    );
}

/// A connection both captures joined in the middle (no SYN), behind a source NAT that keeps
/// sequence numbers: the same TCP connection (`NatIsn`), not two legs of a proxy. A proxy's
/// legs have their own sequence numbers, and stay `L7Proxy`.
#[test]
fn mid_stream_connection_behind_a_nat_is_one_connection() {
    for (seq_shift, want) in [(0, MatchMethod::NatIsn), (77, MatchMethod::L7Proxy)] {
        let mid_stream = || {
            let mut p = exchange(AGENT, VIP, 1000, 5000, 0.0, b'm');
            p.drain(..3); // SYN, SYN-ACK, ACK: before both captures started
            p
        };
        let a = mid_stream();
        let b = downstream(mid_stream(), 0.001, INSIDE, VIP, seq_shift);
        let al = align(
            vec![capture("agent", &a, 0.0), capture("softswitch", &b, 0.0)],
            &AlignOptions::default(),
        );
        assert_eq!(al.connections.len(), 1, "seq shift {seq_shift}");
        assert_eq!(
            al.connections.get(0).unwrap().legs.len(),
            2,
            "seq shift {seq_shift}"
        );
        assert_eq!(
            al.connections.get(0).unwrap().matched.method,
            want,
            "seq shift {seq_shift}"
        );
    }
}
