//! Diagnosis rules on packets built with etherparse, where the lab has no case: one agent that
//! loses its connection twice is one agent_outage finding with both windows.

mod common;

use common::{track_named, AGENT, P, VIP};
use vantage::align::{align, AlignOptions, Vantage};
use vantage::capture::Format;
use vantage::diagnose::diagnose;
use vantage::pipeline::{CaptureFlows, CaptureSummary};

/// One connection from `sport` starting at `t0`: handshake, a request and its answer, then
/// `silence` seconds of nothing, the agent's keep-alive, and a RST "from the VIP" built like
/// nftables' `reject with tcp reset` (TTL 64, IP ID 0) against the server's TTL 63 and counter.
fn killed(sport: u16, t0: f64, silence: f64, isn: u32) -> Vec<(f64, P)> {
    let c = P::new(AGENT, sport, VIP, 8080);
    let s = P::new(VIP, 8080, AGENT, sport).ttl(63);
    let t1 = t0 + 0.004 + silence;
    vec![
        (t0, c.seq(isn).syn().id(1)),
        (t0 + 0.001, s.seq(5000).syn().ack(isn + 1).id(100)),
        (t0 + 0.002, c.seq(isn + 1).ack(5001).id(2)),
        (t0 + 0.003, c.seq(isn + 1).ack(5001).len(100).id(3)),
        (t0 + 0.004, s.seq(5001).ack(isn + 101).len(20).id(101)),
        (t1, c.seq(isn + 101).ack(5021).len(4).id(4)),
        (t1 + 0.0001, s.seq(5021).rst().win(0).ttl(64).id(0)),
    ]
}

#[test]
fn one_agent_two_outages_is_one_finding() {
    let mut packets = killed(40000, 0.0, 30.0, 1000);
    packets.extend(killed(40001, 31.0, 40.0, 9000));
    // A third connection lives on: its RST (the last packet) is left out.
    packets.extend(killed(40002, 72.0, 1.0, 20000));
    let conns = track_named("agent.pcap", &packets[..packets.len() - 1]);
    let flows = CaptureFlows {
        summary: CaptureSummary {
            path: "agent.pcap".into(),
            format: Format::Pcap,
            gzip: false,
            packets: packets.len() as u64 - 1,
            first_ts: None,
            last_ts: None,
            link_types: vec![],
            not_ip: 0,
            malformed: 0,
            ip_fragments: 0,
            filtered_out: 0,
            warnings: vec![],
        },
        connections: conns,
        error: None,
    };
    let al = align(
        vec![Vantage {
            name: "agent".into(),
            flows,
        }],
        &AlignOptions::default(),
    );
    let d = diagnose(&al);
    let resets: Vec<_> = d
        .findings
        .iter()
        .filter(|f| f.kind.name() == "middlebox_reset")
        .collect();
    assert_eq!(
        resets.len(),
        2,
        "{:#?}",
        d.findings.iter().map(|f| &f.summary).collect::<Vec<_>>()
    );
    let outages: Vec<_> = d
        .findings
        .iter()
        .filter(|f| f.kind.name() == "agent_outage")
        .collect();
    assert_eq!(outages.len(), 1);
    let o = outages[0];
    assert_eq!(o.connections, vec!["L1".to_string(), "L2".to_string()]);
    assert!(o.summary.contains("2 times"), "{}", o.summary);
    // Each window runs from the last good packet to the next connection's first answer
    // (30.0 + 1.0 - 0.004 + 0.004 and 40.0 + ...): the total is the sum, the longest the max.
    let total = o.numbers.outage_s.unwrap();
    assert!((total - (31.0 + 41.0)).abs() < 0.1, "{total}");
    assert_eq!(o.numbers.reconnect_attempts, Some(2));
    // The idle-timeout interval: 40 s and 30 s were fatal, nothing longer than 1 s survived.
    let idle = d
        .findings
        .iter()
        .find(|f| f.kind.name() == "idle_timeout")
        .unwrap();
    assert_eq!(idle.numbers.upper_s, Some(30.0));
}
