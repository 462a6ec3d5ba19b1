//! The Wireshark display filters the reports give, checked by Wireshark itself: on every lab
//! scenario seen from all five places, each filter tshark is given must parse, and together a
//! finding's filters for a capture must show every frame its evidence cites there.
//!
//! Skipped, with a message, only when tshark is not installed; with `VANTAGE_REQUIRE_TSHARK=1`
//! (what `.ci/run` sets, after installing it) it fails instead.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

mod common;
use common::{shown, tshark_here, SCENARIOS};

use vantage::align::{align, AlignOptions};
use vantage::diagnose::diagnose;
use vantage::pipeline::{read_vantages, VantageSpec};

const FIVE: &[(&str, &str)] = &[
    ("agent", "agent.pcapng"),
    ("slb-agent-side", "slb-agent-side.pcap"),
    ("slb-server-side", "slb-server-side.pcap"),
    ("softswitch", "softswitch.pcap"),
    ("gateway", "gateway.pcap"),
];

/// Every capture of every lab scenario: (scenario/file, path).
fn lab_files() -> impl Iterator<Item = (String, std::path::PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    SCENARIOS.iter().flat_map(move |s| {
        let root = root.clone();
        FIVE.iter()
            .map(move |(_, f)| (format!("{s}/{f}"), root.join(s).join(f)))
    })
}

/// A capture's TCP connections, as vantage tracks them.
fn tcp_connections(path: &Path) -> Vec<vantage::tcp::Connection> {
    let flows = vantage::pipeline::track_capture(path).unwrap();
    flows
        .connections
        .into_iter()
        .filter(|c| c.proto == vantage::tcp::Proto::Tcp)
        .map(|c| *c)
        .collect()
}

#[test]
fn every_filter_parses_and_shows_its_evidence() {
    if !tshark_here("every_filter_parses_and_shows_its_evidence") {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let (mut filters, mut frames) = (0, 0);
    for s in SCENARIOS {
        let specs: Vec<VantageSpec> = FIVE
            .iter()
            .map(|(name, file)| VantageSpec {
                name: name.to_string(),
                path: root.join(s).join(file),
            })
            .collect();
        let (v, errors) = read_vantages(&specs);
        assert!(errors.is_empty(), "{s}: {errors:?}");
        let d = diagnose(&align(v, &AlignOptions::default()));
        for f in &d.findings {
            // Per capture: what the finding's filters show, and what its evidence cites.
            let mut seen: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
            for df in &f.display_filters {
                let got = shown(&df.file, &df.filter).unwrap_or_else(|e| {
                    panic!("{s} {}: tshark refuses {:?}: {e}", f.kind.name(), df.filter)
                });
                seen.entry(&*df.file).or_default().extend(got);
                filters += 1;
            }
            for e in &f.evidence {
                let shows = seen.get(&*e.file).is_some_and(|s| s.contains(&e.frame));
                assert!(
                    shows,
                    "{s} {}: no filter shows {} frame {} ({})",
                    f.kind.name(),
                    e.vantage,
                    e.frame,
                    e.what
                );
                frames += 1;
            }
        }
    }
    assert!(
        filters > 30 && frames > 50,
        "{filters} filters, {frames} frames"
    );
}

/// How many frames of `file` each filter shows, in one pass (`-z io,stat,0,F1,F2,...`: a
/// column of counts per filter), or tshark's complaint.
fn counts(file: &str, filters: &[String]) -> Result<Vec<u64>, String> {
    if filters.is_empty() {
        return Ok(Vec::new());
    }
    let stat = format!("io,stat,0,{}", filters.join(","));
    let out = Command::new("tshark")
        .args(["-q", "-n", "-r", file, "-z", &stat])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    // The last row of the table: "|  0.0 <> 23.5 |     43 |  8761 |    107 | 25421 |".
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text
        .lines()
        .rev()
        .find(|l| l.contains("<>"))
        .ok_or_else(|| format!("no counts in {text}"))?;
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    (0..filters.len())
        .map(|k| {
            cells
                .get(2 + 2 * k)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| format!("no count {k} in {row:?}"))
        })
        .collect()
}

/// The conversation filter the reports build (`conversation_filter`) shows in Wireshark exactly
/// the packets vantage counted on that connection: on the corpus's IPv6 capture (`ipv6.addr`)
/// and on every lab capture (IPv4, TCP and UDP; Ethernet and Linux cooked v2).
#[test]
fn conversation_filters_show_the_connections_packets() {
    if !tshark_here("conversation_filters_show_the_connections_packets") {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let ipv6 = "corpus/zeek/testing/btest/Traces/ftp/ipv6.pcap";
    let (mut v6, mut checked) = (0, 0);
    for (file, path) in std::iter::once((ipv6.to_string(), root.join(ipv6))).chain(lab_files()) {
        let flows = vantage::pipeline::track_capture(&path).unwrap();
        let filters: Vec<String> = flows
            .connections
            .iter()
            .map(|c| {
                vantage::diagnose::conversation_filter(
                    c.proto,
                    (c.orig_h, c.orig_p),
                    (c.resp_h, c.resp_p),
                )
            })
            .collect();
        let got = counts(path.to_str().unwrap(), &filters)
            .unwrap_or_else(|e| panic!("{file}: tshark refuses one of {filters:?}: {e}"));
        for ((c, filter), n) in flows.connections.iter().zip(&filters).zip(got) {
            assert_eq!(n, c.orig.pkts + c.resp.pkts, "{file} {}: {filter}", c.uid);
            v6 += usize::from(c.orig_h.is_ipv6());
            checked += 1;
        }
    }
    assert!(
        v6 >= 5 && checked > 100,
        "{v6} IPv6 connections, {checked} in all"
    );
}

/// Each TCP connection's handshake round trip (`rtt_s`) is Wireshark's iRTT
/// (`tcp.analysis.initial_rtt`), on every lab capture: where Wireshark gives one, vantage gives
/// the same, and nowhere else.
#[test]
fn handshake_rtt_is_wiresharks_irtt() {
    if !tshark_here("handshake_rtt_is_wiresharks_irtt") {
        return;
    }
    let mut checked = 0;
    for (file, path) in lab_files() {
        let out = Command::new("tshark")
            .args([
                "-n",
                "-r",
                path.to_str().unwrap(),
                "-Y",
                "tcp.analysis.initial_rtt",
            ])
            .args(["-T", "fields", "-e", "tcp.srcport", "-e", "tcp.dstport"])
            .args(["-e", "tcp.analysis.initial_rtt"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Ports (lower first) -> the iRTT of the first packet that shows one.
        let mut irtt: BTreeMap<(u16, u16), f64> = BTreeMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let v: Vec<&str> = line.split('\t').collect();
            let (Some(a), Some(b), Some(t)) = (v.first(), v.get(1), v.get(2)) else {
                continue;
            };
            let (a, b): (u16, u16) = (a.parse().unwrap(), b.parse().unwrap());
            irtt.entry((a.min(b), a.max(b)))
                .or_insert_with(|| t.parse().unwrap());
        }
        let tcp = tcp_connections(&path);
        for c in &tcp {
            let key = (c.orig_p.min(c.resp_p), c.orig_p.max(c.resp_p));
            match (c.rtt_s, irtt.get(&key)) {
                (Some(ours), Some(&theirs)) => {
                    assert!(
                        (ours - theirs).abs() < 1e-6,
                        "{file} {}: {ours} vs {theirs}",
                        c.uid
                    );
                    checked += 1;
                }
                (None, None) => {}
                (ours, theirs) => {
                    panic!("{file} {}: ours {ours:?}, Wireshark's {theirs:?}", c.uid)
                }
            }
        }
        assert_eq!(
            irtt.len(),
            tcp.iter().filter(|c| c.rtt_s.is_some()).count(),
            "{file}"
        );
    }
    assert!(checked > 50, "{checked} handshakes");
}

/// Per connection and direction, the retransmissions, keep-alives, zero windows and "previous
/// segment not captured" that vantage counts are the frames Wireshark's sequence analysis flags
/// (`tcp.analysis.*`), on every lab capture: the README names Wireshark's rules for them.
#[test]
fn sequence_analysis_counts_are_wiresharks() {
    if !tshark_here("sequence_analysis_counts_are_wiresharks") {
        return;
    }
    let flags = [
        "tcp.analysis.retransmission",
        "tcp.analysis.keep_alive",
        "tcp.analysis.zero_window",
        "tcp.analysis.lost_segment",
    ];
    let mut flagged = 0;
    for (file, path) in lab_files() {
        let tcp = tcp_connections(&path);
        let mut filters = Vec::new();
        for c in &tcp {
            for (from, to) in [
                ((c.orig_h, c.orig_p), (c.resp_h, c.resp_p)),
                ((c.resp_h, c.resp_p), (c.orig_h, c.orig_p)),
            ] {
                let one_way = format!(
                    "ip.src=={} && tcp.srcport=={} && ip.dst=={} && tcp.dstport=={}",
                    from.0, from.1, to.0, to.1
                );
                filters.extend(flags.iter().map(|f| format!("{one_way} && {f}")));
            }
        }
        let got = counts(path.to_str().unwrap(), &filters).unwrap();
        for (c, theirs) in tcp.iter().zip(got.chunks(2 * flags.len())) {
            let ours: Vec<u64> = [&c.orig, &c.resp]
                .iter()
                .flat_map(|d| [d.retransmissions, d.keepalives, d.zero_windows, d.gaps])
                .collect();
            assert_eq!(ours, theirs, "{file} {}: orig then resp, {flags:?}", c.uid);
            flagged += theirs.iter().sum::<u64>();
        }
    }
    assert!(flagged > 20, "{flagged} flagged frames");
}
