//! Each tracking rule on packets built with etherparse: port reuse, mid-stream start,
//! keep-alive, zero window, and the fingerprint of the packet that ended a connection.

use vantage::tcp::{IpIdPattern, Side, TerminationKind};

mod common;
use common::{track, track_live, AGENT, P, VIP};

/// A handshake agent -> VIP:8080 with ISNs 1000 / 5000, and a 100-byte request.
fn handshake(sport: u16, t0: f64) -> Vec<(f64, P)> {
    let c = P::new(AGENT, sport, VIP, 8080);
    let s = P::new(VIP, 8080, AGENT, sport).ttl(63);
    vec![
        (t0, c.seq(1000).syn().id(1)),
        (t0 + 0.001, s.seq(5000).syn().ack(1001).id(100)),
        (t0 + 0.002, c.seq(1001).ack(5001).id(2)),
        (t0 + 0.003, c.seq(1001).ack(5001).len(100).id(3)),
        (t0 + 0.004, s.seq(5001).ack(1101).id(101)),
    ]
}

#[test]
fn handshake_rtt_state_and_history() {
    let c = track(&handshake(40000, 0.0));
    assert_eq!(c.len(), 1);
    let c = &c[0];
    assert_eq!(c.orig_p, 40000);
    assert_eq!(c.conn_state, Some("S1"));
    assert_eq!(c.history.as_deref(), Some("ShADa"));
    assert!((c.rtt_s.unwrap() - 0.002).abs() < 1e-6);
    assert_eq!((c.orig.bytes, c.resp.bytes), (100, 0));
    assert!(!c.mid_stream);
}

#[test]
fn port_reuse_after_rst_starts_a_new_connection() {
    let mut p = handshake(40000, 0.0);
    let c = P::new(AGENT, 40000, VIP, 8080);
    p.push((1.0, c.seq(1101).ack(5001).rst().id(4)));
    // The same 5-tuple, a new SYN with a new ISN.
    p.push((2.0, c.seq(9000).syn().id(5)));
    let conns = track(&p);
    assert_eq!(conns.len(), 2);
    assert_eq!(conns[0].conn_state, Some("RSTO"));
    assert!(!conns[0].reused_port);
    assert!(conns[1].reused_port);
    assert_eq!(conns[1].conn_state, Some("S0"));
    assert_eq!(conns[1].first_frame, 7);
}

#[test]
fn retransmitted_syn_is_not_port_reuse() {
    let c = P::new(AGENT, 40001, VIP, 8080);
    let conns = track(&[(0.0, c.seq(77).syn()), (1.0, c.seq(77).syn())]);
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0].orig.retransmissions, 1);
    assert_eq!(conns[0].conn_state, Some("S0"));
}

#[test]
fn mid_stream_start_uses_the_port_rule() {
    // The capture starts with the server (port 8080) sending data to the agent.
    let s = P::new(VIP, 8080, AGENT, 40002);
    let c = P::new(AGENT, 40002, VIP, 8080);
    let conns = track(&[
        (0.0, s.seq(5000).ack(1000).len(20)),
        (0.1, c.seq(1000).ack(5020)),
    ]);
    assert_eq!(conns.len(), 1);
    let k = &conns[0];
    assert!(k.mid_stream);
    assert_eq!((k.orig_p, k.resp_p), (40002, 8080));
    assert_eq!(k.history.as_deref(), Some("dA"));
    // Neither port a known server port: the lower port is the responder.
    let a = P::new(AGENT, 50001, VIP, 40000);
    let conns = track(&[(0.0, a.seq(1).ack(1).len(5))]);
    assert_eq!((conns[0].orig_p, conns[0].resp_p), (50001, 40000));
}

#[test]
fn keepalive_and_zero_window_as_wireshark_counts_them() {
    let mut p = handshake(40003, 0.0);
    let c = P::new(AGENT, 40003, VIP, 8080);
    let s = P::new(VIP, 8080, AGENT, 40003).ttl(63);
    // TCP keep-alive: seq = next expected - 1, no payload.
    p.push((10.0, c.seq(1100).ack(5001).id(4)));
    p.push((10.001, s.seq(5001).ack(1101).id(102)));
    // The server's window closes.
    p.push((11.0, s.seq(5001).ack(1101).win(0).id(103)));
    let conns = track(&p);
    let k = &conns[0];
    assert_eq!(k.orig.keepalives, 1);
    assert_eq!(k.orig.retransmissions, 0);
    assert_eq!(k.resp.zero_windows, 1);
    assert!(k.history.as_deref().unwrap().contains('w'));
    // The keep-alive ended the longest silence.
    let g = k.max_idle.unwrap();
    assert!((g.secs - 9.996).abs() < 1e-6, "{}", g.secs);
    assert_eq!((g.from_frame, g.to_frame), (5, 6));
}

#[test]
fn rst_built_by_a_middlebox_does_not_fit_the_sender() {
    // The agent's view through an L4 balancer: the server's packets arrive with TTL 63 and an
    // incrementing IP ID; after 8 s of silence a RST "from the VIP" arrives with TTL 64, IP ID 0,
    // no ACK flag and window 0, as nftables' `reject with tcp reset` builds it.
    let mut p = handshake(40004, 0.0);
    let c = P::new(AGENT, 40004, VIP, 8080);
    let s = P::new(VIP, 8080, AGENT, 40004).ttl(63);
    p.push((3.0, c.seq(1101).ack(5001).len(4).id(4)));
    p.push((3.001, s.seq(5001).ack(1105).len(2).id(102)));
    p.push((11.0, c.seq(1105).ack(5003).len(4).id(5)));
    p.push((11.0001, s.seq(5003).rst().win(0).ttl(64).id(0)));
    let conns = track(&p);
    let k = &conns[0];
    let t = k.termination.as_ref().unwrap();
    assert_eq!(t.kind, TerminationKind::Rst);
    assert_eq!(t.by, Side::Resp);
    assert_eq!(t.frame, 9);
    assert_eq!(t.ttl, 64);
    assert_eq!(t.sender_usual.ttl_usual, 63);
    assert_eq!(t.ttl_fits, Some(false));
    assert_eq!(t.sender_usual.ip_id_pattern, IpIdPattern::Incrementing);
    assert_eq!(t.ip_id_fits, Some(false));
    assert!(!t.ack_flag);
    assert!(t.idle_before_s < 0.001);
    assert_eq!(k.conn_state, Some("RSTR"));
    // The silence before the agent's fatal packet is the longest one.
    assert!((k.max_idle.unwrap().secs - 7.999).abs() < 1e-6);
}

#[test]
fn rst_from_the_endpoint_itself_fits() {
    let mut p = handshake(40005, 0.0);
    let s = P::new(VIP, 8080, AGENT, 40005).ttl(63);
    p.push((1.0, s.seq(5001).ack(1101).rst().id(102)));
    let conns = track(&p);
    let t = conns[0].termination.as_ref().unwrap();
    assert_eq!(t.ttl_fits, Some(true));
    assert_eq!(t.ip_id_fits, Some(true));
}

#[test]
fn fin_both_ways_is_sf() {
    let mut p = handshake(40006, 0.0);
    let c = P::new(AGENT, 40006, VIP, 8080);
    let s = P::new(VIP, 8080, AGENT, 40006).ttl(63);
    p.push((5.0, s.seq(5001).ack(1101).fin().id(102)));
    p.push((5.001, c.seq(1101).ack(5002).fin().id(4)));
    p.push((5.002, s.seq(5002).ack(1102).id(103)));
    let conns = track(&p);
    let k = &conns[0];
    assert_eq!(k.conn_state, Some("SF"));
    assert_eq!(k.history.as_deref(), Some("ShADafF"));
    let t = k.termination.as_ref().unwrap();
    assert_eq!((t.kind, t.by), (TerminationKind::Fin, Side::Resp));
    assert!((t.idle_before_s - 4.996).abs() < 1e-6);
}

/// A closed connection leaves the live table once it has been quiet for Zeek's
/// `tcp_close_delay` (5 s), not before; a late packet after the close keeps it 5 s longer.
#[test]
fn closed_connections_leave_the_live_table_after_the_close_delay() {
    let mut p = handshake(40000, 0.0);
    let c = P::new(AGENT, 40000, VIP, 8080);
    let s = P::new(VIP, 8080, AGENT, 40000).ttl(63);
    p.push((1.0, c.seq(1101).ack(5001).fin().id(4)));
    p.push((1.001, s.seq(5001).ack(1102).fin().id(102)));
    p.push((1.002, c.seq(1102).ack(5002).id(5)));
    // A second connection closes the same way, but its peer sends one late ACK at 4 s.
    let mut q = handshake(40001, 0.0);
    let c2 = P::new(AGENT, 40001, VIP, 8080);
    let s2 = P::new(VIP, 8080, AGENT, 40001).ttl(63);
    q.push((1.0, c2.seq(1101).ack(5001).fin().id(4)));
    q.push((1.001, s2.seq(5001).ack(1102).fin().id(102)));
    q.push((4.0, s2.seq(5002).ack(1102).id(103)));
    p.extend(q);
    // A third, long-lived connection whose keep-alives drive the clock on.
    let k = P::new(AGENT, 40002, VIP, 8080);
    let mut t = 0.5;
    while t < 12.0 {
        p.push((t, k.seq(1).ack(1).len(1)));
        t += 0.5;
    }
    p.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (live, conns) = track_live(&p);
    let at = |secs: f64| live[p.iter().rposition(|(t, _)| *t <= secs).unwrap()];
    assert_eq!(
        at(5.9),
        3,
        "quiet for less than 5 s after the close: still live"
    );
    assert_eq!(at(7.6), 2, "the first is gone 5 s after its last packet");
    assert_eq!(
        at(8.9),
        2,
        "the late ACK at 4 s keeps the second until after 9 s"
    );
    assert_eq!(at(10.6), 1);
    assert_eq!(conns.len(), 3);
    let second = conns.iter().find(|c| c.orig_p == 40001).unwrap();
    assert_eq!(
        second.resp.pkts, 4,
        "the late ACK counted on the closed connection"
    );
}

/// A UDP flow is over after Zeek's `udp_inactivity_timeout` (60 s) of quiet.
#[test]
fn quiet_udp_flows_leave_the_live_table() {
    use vantage::capture::{Frame, LinkType, Timestamp};
    use vantage::decode::{decode, Decoded};
    let udp = |sport: u16| {
        let mut v = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(AGENT, VIP, 64)
            .udp(sport, 5060)
            .write(&mut v, b"hello")
            .unwrap();
        v
    };
    let mut t = vantage::tcp::Tracker::new("udp.pcap");
    let mut live = Vec::new();
    for (i, (secs, port)) in [
        (0.0, 1000u16),
        (1.0, 1001),
        (30.0, 1001),
        (61.5, 1001),
        (95.0, 1001),
    ]
    .into_iter()
    .enumerate()
    {
        let data = udp(port);
        let frame = Frame {
            number: i as u64 + 1,
            ts: Timestamp((secs * 1e9) as i64),
            link: LinkType::ETHERNET,
            interface: 0,
            orig_len: data.len() as u32,
            offset: 0,
            data: &data,
        };
        let Decoded::Ip(pkt) = decode(&frame) else {
            panic!("not decoded")
        };
        t.packet(&frame, &pkt);
        live.push(t.live_connections());
    }
    // At 61.5 s the first flow (last packet at 0 s) is over; the second, heard at 30 s, is not.
    assert_eq!(live, vec![1, 2, 2, 1, 1]);
    let conns = t.finish();
    assert_eq!(conns.len(), 2);
    assert_eq!(conns[1].orig.pkts, 4);
}

/// The silence list keeps the six longest silences, longest first, whatever order they came in
/// (it holds exactly six: a longer one replaces the shortest).
#[test]
fn the_six_longest_silences_are_kept_longest_first() {
    let mut p = handshake(40000, 0.0);
    let c = P::new(AGENT, 40000, VIP, 8080);
    let mut t = 0.004;
    for gap in [1.0, 5.0, 2.0, 8.0, 3.0, 9.0, 0.7, 4.0, 7.0, 0.2, 6.0] {
        t += gap;
        p.push((t, c.seq(1101).ack(5001).len(1)));
    }
    let conns = track(&p);
    let secs: Vec<f64> = conns[0]
        .silences
        .iter()
        .map(|g| (g.secs * 10.0).round() / 10.0)
        .collect();
    assert_eq!(secs, vec![9.0, 8.0, 7.0, 6.0, 5.0, 4.0]);
    assert_eq!(conns[0].max_idle.unwrap().secs.round(), 9.0);
}
