//! Diagnosis rules on packets built with etherparse, where the lab has no case: one agent that
//! loses its connection twice is one agent_outage finding with both windows.

mod common;

use common::{track_named, AGENT, P, VIP};
use vantage::align::Alignment;
use vantage::align::{align, AlignOptions, Vantage};
use vantage::diagnose::{diagnose, diagnose_with, rules::FILTER_CONNECTIONS, Lang};

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
    let al = one_capture(&packets[..packets.len() - 1]);
    let d = diagnose(&al);
    let resets: Vec<_> = d
        .findings
        .iter()
        .filter(|f| f.kind.name() == "middlebox_reset")
        .collect();
    // Both resets tell the same story at the same place: one finding naming both connections,
    // with the range of their silences.
    assert_eq!(
        resets.len(),
        1,
        "{:#?}",
        d.findings.iter().map(|f| f.summary).collect::<Vec<_>>()
    );
    assert_eq!(
        resets[0].connections,
        vec!["L1".to_string(), "L2".to_string()]
    );
    assert_eq!(resets[0].evidence.len(), 4, "two items per connection");
    assert!(
        resets[0].summary.starts_with("2 connections"),
        "{}",
        resets[0].summary
    );
    assert_eq!(resets[0].numbers.silence_s, Some(30.0));
    assert_eq!(resets[0].numbers.silence_max_s, Some(40.0));
    let outages: Vec<_> = d
        .findings
        .iter()
        .filter(|f| f.kind.name() == "agent_outage")
        .collect();
    assert_eq!(outages.len(), 1);
    let o = &outages[0];
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

/// The packets as the agent's capture, lined up on their own.
fn one_capture(packets: &[(f64, P)]) -> Alignment {
    align(
        vec![vantage_of("agent", packets, None)],
        &AlignOptions::default(),
    )
}

/// Sixty connections reset the same way by the same NAT, as on a busy capture: one
/// middlebox_reset finding that names every connection, with evidence from the first ones in
/// time up to the cap, Wireshark filters for the first few, and the silences as a range. The
/// deaths behind the other rules stay one per connection.
#[test]
fn connections_reset_alike_are_one_finding() {
    let n: u16 = 60;
    let mut packets = Vec::new();
    let mut t0 = 0.0;
    for i in 0..n {
        // Silences of 30 to 89 s: every one fatal, none survived.
        let silence = 30.0 + f64::from(i);
        packets.extend(killed(41000 + i, t0, silence, 1000 + u32::from(i) * 5000));
        t0 += silence + 1.0;
    }
    let al = one_capture(&packets);
    let ids: Vec<String> = (1..=n).map(|i| format!("L{i}")).collect();
    // A cap of 10 evidence items: whole connections of two items each, the first five.
    let d = diagnose_with(&al, 10, Lang::En);
    let resets: Vec<_> = d
        .findings
        .iter()
        .filter(|f| f.kind.name() == "middlebox_reset")
        .collect();
    assert_eq!(resets.len(), 1, "{:#?}", resets);
    let f = &resets[0];
    assert_eq!(f.connections, ids);
    assert!(f.single_vantage);
    assert_eq!(f.evidence.len(), 10);
    // Each connection is seven frames in a row: the first five connections are frames 1..=35.
    assert!(f.evidence.iter().all(|e| e.frame <= 35), "{:?}", f.evidence);
    assert!(f.summary.starts_with("60 connections"), "{}", f.summary);
    assert!(f.summary.contains("30.000 to 89.000 s"), "{}", f.summary);
    assert!(
        f.explanation.contains("first 5 connections"),
        "{}",
        f.explanation
    );
    assert_eq!(f.numbers.silence_s, Some(30.0));
    assert_eq!(f.numbers.silence_max_s, Some(89.0));
    // For the one capture: a filter naming only the first few connections, and one on what the
    // middlebox's RSTs share (nftables' TTL 64 and IP ID 0), which shows them all.
    assert_eq!(f.display_filters.len(), 2, "{:?}", f.display_filters);
    assert_eq!(
        f.display_filters[1].filter,
        "tcp.flags.reset == 1 && ip.ttl == 64 && ip.id == 0"
    );
    let filter = &f.display_filters[0].filter;
    assert_eq!(
        filter.matches("tcp.port==8080").count(),
        FILTER_CONNECTIONS,
        "{filter}"
    );
    assert!(filter.contains("tcp.port==41000") && !filter.contains("tcp.port==41003"));
    // The verdict still counts disconnects, not findings.
    assert_eq!(d.verdict.kind, "middlebox_reset");
    assert!(
        d.verdict.summary.contains("60 of 60 disconnects"),
        "{}",
        d.verdict.summary
    );
    // The idle timeout and the agent's outage still see every death.
    let idle = d
        .findings
        .iter()
        .find(|f| f.kind.name() == "idle_timeout")
        .unwrap();
    assert_eq!(idle.connections, ids);
    assert_eq!(idle.numbers.upper_s, Some(30.0));
    let outage = d
        .findings
        .iter()
        .find(|f| f.kind.name() == "agent_outage")
        .unwrap();
    // Every death but the last: nothing follows it, and this built capture has no end time to
    // close its window.
    assert_eq!(outage.connections, ids[..ids.len() - 1]);
    // The same finding in Chinese counts the connections too.
    let zh = diagnose_with(&al, 10, Lang::ZhCn);
    let f = zh
        .findings
        .iter()
        .find(|f| f.kind.name() == "middlebox_reset")
        .unwrap();
    assert!(f.summary.starts_with("60 条连接"), "{}", f.summary);
    assert!(f.summary.contains("30.000 至 89.000 秒"), "{}", f.summary);
    // The reports stay bounded: the findings table names the first ten connections, the
    // lined-up connections table shows the first fifty rows, and both say how many more.
    for text in [
        vantage::report::diagnose_text(&d, &al),
        vantage::report::diagnose_markdown(&d, &al),
    ] {
        let row = text
            .lines()
            .find(|l| l.contains("middlebox_reset") && l.contains("60 connections"))
            .unwrap_or_else(|| panic!("no findings row in {text}"));
        assert!(
            row.contains("L1 L2 L3 L4 L5 L6 L7 L8 L9 L10 … and 50 more"),
            "{row}"
        );
        assert!(!row.contains("L11"), "{row}");
        // Rows of the lined-up table start with the id: "│ L50 ┆" or "| L50 |".
        let rows = |id: &str| {
            text.lines()
                .filter(|l| l.split(['│', '┆', '|']).nth(1).map(str::trim) == Some(id))
                .count()
        };
        assert_eq!(rows("L50"), 1, "{text}");
        assert_eq!(rows("L51"), 0, "{text}");
        assert!(text.contains("… and 10 more (see --format json)"), "{text}");
    }
    let text = vantage::report::diagnose_text(&zh, &al);
    assert!(text.contains("… 另有 10 条（见 --format json）"), "{text}");

    // Findings of one kind past MAX_PER_KIND (one agent_outage per agent on a busy capture)
    // are counted in one line, not printed; the JSON keeps them all.
    // (A report gives ids by place: each copy is told apart by its summary.)
    let mut many = d.clone();
    let copies = (0..25).map(|i| {
        let mut f = outage.clone();
        f.summary = format!("copy X{i}");
        f
    });
    many.findings = d.findings.iter().chain(copies).collect();
    let cap = vantage::report::MAX_PER_KIND;
    for text in [
        vantage::report::diagnose_text(&many, &al),
        vantage::report::diagnose_markdown(&many, &al),
    ] {
        assert!(
            text.contains(&format!("… and {} more agent_outage findings", 26 - cap)),
            "{text}"
        );
        assert!(text.contains(&format!("X{}", cap - 2)), "{text}");
        assert!(!text.contains(&format!("X{}", cap - 1)), "{text}");
    }
    assert!(vantage::report::diagnose_json(&many).contains("\"copy X24\""));
}

/// A capture named `name` of `packets`; with `covered`, its summary says it went on that many
/// seconds after the last of them, else it gives no times.
fn vantage_of(name: &str, packets: &[(f64, P)], covered: Option<f64>) -> Vantage {
    let conns = track_named(&format!("{name}.pcap"), packets);
    // On the clock `track_named` gives the packets.
    let at = |t: f64| vantage::capture::Timestamp((t * 1e9) as i64 + 1_700_000_000_000_000_000);
    let span = covered.map(|secs| {
        let first = packets.first().map_or(0.0, |p| p.0);
        let last = packets.last().map_or(0.0, |p| p.0);
        (at(first), at(last + secs))
    });
    common::built_vantage(
        name,
        packets.len() as u64,
        span,
        conns.into_iter().map(Box::new),
    )
}

/// The server's own FIN, seen at the softswitch and 60 ms later at the agent (a WAN hop that
/// takes 4 ms at best, the FIN queued behind other traffic), is the server's end, not a
/// middlebox's: nearer the server the same FIN passes earlier, by the hop's transit, which may
/// well exceed the 50 ms that make two packets one decision.
#[test]
fn a_fin_that_crossed_a_slow_hop_is_the_servers() {
    let (hop, fin_hop) = (0.004, 0.060);
    let c = P::new(AGENT, 40000, VIP, 8080);
    let s = P::new(VIP, 8080, AGENT, 40000).ttl(63);
    // (time at the agent, packet, sent by the client)
    let conv = [
        (0.0, c.seq(1000).syn().id(1), true),
        (0.121, s.seq(5000).syn().ack(1001).id(100), false),
        (0.122, c.seq(1001).ack(5001).id(2), true),
        (0.123, c.seq(1001).ack(5001).len(100).id(3), true),
        (0.244, s.seq(5001).ack(1101).len(20).id(101), false),
        (5.0, s.seq(5021).ack(1101).fin().id(102), false),
        (5.001, c.seq(1101).ack(5022).fin().id(4), true),
        (5.122, s.seq(5022).ack(1102).id(103), false),
    ];
    let agent: Vec<(f64, P)> = conv.iter().map(|&(t, p, _)| (t, p)).collect();
    // At the softswitch: the client's packets a hop later, the server's a hop earlier.
    let switch: Vec<(f64, P)> = conv
        .iter()
        .map(|&(t, p, from_client)| {
            let transit = if p.is_fin() && !from_client {
                fin_hop
            } else {
                hop
            };
            (
                if from_client {
                    t + transit
                } else {
                    t - transit
                },
                p,
            )
        })
        .collect();
    let al = align(
        vec![
            vantage_of("agent", &agent, Some(60.0)),
            vantage_of("softswitch", &switch, Some(60.0)),
        ],
        &AlignOptions::default(),
    );
    assert_eq!(al.connections.len(), 1);
    assert_eq!(al.connections.get(0).unwrap().legs.len(), 2);
    let d = diagnose(&al);
    let kinds: Vec<&str> = d.findings.iter().map(|f| f.kind.name()).collect();
    assert!(
        !kinds.contains(&"middlebox_close") && !kinds.contains(&"middlebox_reset"),
        "{kinds:?}"
    );
}
