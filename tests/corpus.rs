//! The public corpus (fixtures/corpus, copied from ../shared/corpus with its licences): every
//! capture is read without a panic, and what we count agrees with tshark (REFERENCE.tsv) and
//! with Zeek's baselines, or the test says why it differs.

use std::path::{Path, PathBuf};

use vantage::pipeline::{track_capture, CaptureFlows};
use vantage::tcp::{Connection, Proto};

fn corpus(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/corpus")
        .join(rel)
}

fn read(rel: &str) -> CaptureFlows {
    track_capture(&corpus(rel)).unwrap_or_else(|e| panic!("{rel}: {e:#}"))
}

fn tcp(f: &CaptureFlows) -> Vec<&Connection> {
    f.connections
        .iter()
        .map(|c| &**c)
        .filter(|c| c.proto == Proto::Tcp)
        .collect()
}

struct Reference {
    file: String,
    packets: u64,
    tcp_conversations: usize,
    retransmissions: u64,
    keepalives: u64,
}

fn reference() -> Vec<Reference> {
    let text = std::fs::read_to_string(corpus("REFERENCE.tsv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (c_pk, c_tc, c_rx, c_ka) = (
        col("packets"),
        col("tcp_conversations"),
        col("tcp_retransmissions"),
        col("tcp_keepalives"),
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Reference {
                file: f[0].to_string(),
                packets: f[c_pk].parse().unwrap(),
                tcp_conversations: f[c_tc].parse().unwrap(),
                retransmissions: f[c_rx].parse().unwrap(),
                keepalives: f[c_ka].parse().unwrap(),
            }
        })
        .collect()
}

#[test]
fn every_capture_agrees_with_tshark_or_says_why() {
    let refs = reference();
    assert!(refs.len() >= 30, "REFERENCE.tsv has {} rows", refs.len());
    for r in &refs {
        let flows = read(&r.file);
        let conns = tcp(&flows);
        let rexmit: u64 = conns
            .iter()
            .map(|c| c.orig.retransmissions + c.resp.retransmissions)
            .sum();
        let keepalives: u64 = conns
            .iter()
            .map(|c| c.orig.keepalives + c.resp.keepalives)
            .sum();
        match r.file.as_str() {
            // Record 2 claims 1,409,179,648 bytes and the file ends: tshark shows it as a cut-short
            // packet; we stop with an error that names frame 2 and its byte offset, keeping
            // frame 1.
            "suricata-verify/tests/bug-6875-01/fuzz.pcap" => {
                assert_eq!(flows.summary.packets, 1);
                let e = format!("{:#}", flows.error.expect("an error"));
                assert!(e.contains("frame 2 at byte 228"), "{e}");
                assert!(e.contains("1409179664"), "{e}");
                continue;
            }
            // tshark counts pcapng Custom Blocks (1 CB + 2 DCB) as records; they carry no packet.
            "pcapng-test-generator/output_le/difficult/test202.pcapng" => {
                assert_eq!(flows.summary.packets, r.packets - 3);
            }
            // The same 5-tuple under three VLAN tags: tshark's conversation ignores the VLAN and
            // sees one conversation whose copies look like retransmissions and keep-alives. We
            // key on the VLAN, as Zeek's vlan_fivetuple does: three clean connections.
            "zeek/testing/btest/Traces/vlan-collisions.pcap" => {
                assert_eq!(flows.summary.packets, r.packets);
                assert_eq!(conns.len(), 3);
                assert_eq!((rexmit, keepalives), (0, 0));
                continue;
            }
            _ => assert_eq!(flows.summary.packets, r.packets, "{}", r.file),
        }
        assert!(flows.error.is_none(), "{}: {:?}", r.file, flows.error);
        assert_eq!(conns.len(), r.tcp_conversations, "{}", r.file);
        assert_eq!(rexmit, r.retransmissions, "{} retransmissions", r.file);
        assert_eq!(keepalives, r.keepalives, "{} keep-alives", r.file);
    }
}

/// Zeek's `conn_state-RST-behavior` baseline: history and conn_state of four RST traces.
#[test]
fn zeek_rst_behaviour() {
    for (file, history, state) in [
        ("single-rst.pcap", "R", "OTH"),
        ("syn-then-rst.pcap", "SR", "RSTOS0"),
        ("syn-then-ack-then-rst.pcap", "SaR", "RSTOS0"),
        ("syn-then-stuff-then-rst.pcap", "SaFR", "OTH"),
    ] {
        let flows = read(&format!("zeek/testing/btest/Traces/tcp/{file}"));
        let c = tcp(&flows);
        assert_eq!(c.len(), 1, "{file}");
        assert_eq!(c[0].history.as_deref(), Some(history), "{file}");
        assert_eq!(c[0].conn_state, Some(state), "{file}");
    }
}

/// Zeek's `core.tcp.rxmit-history` baseline (conn-1.log).
#[test]
fn zeek_retransmit_history() {
    let flows = read("zeek/testing/btest/Traces/tcp/retransmit-fast009.pcap");
    let c = tcp(&flows);
    assert_eq!(c.len(), 1);
    let c = c[0];
    assert_eq!(c.orig_h.to_string(), "10.0.88.85");
    assert_eq!((c.orig_p, c.resp_p), (50368, 80));
    assert_eq!(c.history.as_deref(), Some("ShADaGdgtR"));
    assert_eq!(c.conn_state, Some("RSTO"));
    assert_eq!((c.orig.bytes, c.resp.bytes), (474, 23783));
    assert_eq!(c.missed_bytes, 24257);
    assert_eq!((c.orig.pkts, c.orig.ip_bytes), (17, 1250));
    assert_eq!((c.resp.pkts, c.resp.ip_bytes), (22, 28961));
    assert!((c.duration_s() - 60.991770).abs() < 1e-6);
    // The 60 s idle gap before the RST is what this trace is about.
    let t = c.termination.as_ref().expect("ended by RST");
    assert!(t.idle_before_s > 59.0, "{}", t.idle_before_s);
}

/// orig_p, resp_p, history, conn_state, orig_bytes, resp_bytes, orig_pkts, orig_ip_bytes,
/// resp_pkts, resp_ip_bytes
type ConnLogRow = (u16, u16, String, &'static str, u64, u64, u64, u64, u64, u64);

/// Zeek's ftp-ipv6 conn.log: six IPv6 connections, all SF.
#[test]
fn zeek_ftp_ipv6_conn_log() {
    let flows = read("zeek/testing/btest/Traces/ftp/ipv6.pcap");
    let mut got: Vec<ConnLogRow> = tcp(&flows)
        .iter()
        .map(|c| {
            (
                c.orig_p,
                c.resp_p,
                c.history.as_deref().unwrap().to_string(),
                c.conn_state.unwrap(),
                c.orig.bytes,
                c.resp.bytes,
                c.orig.pkts,
                c.orig.ip_bytes,
                c.resp.pkts,
                c.resp.ip_bytes,
            )
        })
        .collect();
    got.sort();
    let log = std::fs::read_to_string(corpus(
        "zeek/testing/btest/Baseline/scripts.base.protocols.ftp.ftp-ipv6/conn.log",
    ))
    .unwrap();
    let mut want: Vec<ConnLogRow> = log
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            // ts uid orig_h orig_p resp_h resp_p proto service duration orig_bytes resp_bytes
            // conn_state local_orig local_resp missed_bytes history orig_pkts orig_ip_bytes
            // resp_pkts resp_ip_bytes
            (
                f[3].parse().unwrap(),
                f[5].parse().unwrap(),
                f[15].to_string(),
                match f[11] {
                    "SF" => "SF",
                    other => panic!("unexpected {other}"),
                },
                f[9].parse().unwrap(),
                f[10].parse().unwrap(),
                f[16].parse().unwrap(),
                f[17].parse().unwrap(),
                f[18].parse().unwrap(),
                f[19].parse().unwrap(),
            )
        })
        .collect();
    want.sort();
    assert_eq!(want.len(), 6);
    assert_eq!(got, want);
}

/// Zeek's vlan_fivetuple baselines: one 5-tuple under no tag, 10/20 (QinQ) and 42, seven
/// packets each way in each.
#[test]
fn vlan_is_part_of_the_key() {
    let flows = read("zeek/testing/btest/Traces/vlan-collisions.pcap");
    let mut got: Vec<(Option<[u16; 2]>, u64, u64)> = tcp(&flows)
        .iter()
        .map(|c| (c.vlan, c.orig.pkts, c.resp.pkts))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![(None, 7, 7), (Some([10, 20]), 7, 7), (Some([42, 0]), 7, 7)]
    );
    for c in tcp(&flows) {
        assert_eq!(c.orig_h.to_string(), "141.142.228.5");
        assert_eq!((c.orig_p, c.resp_p), (59856, 80));
    }
}

#[test]
fn link_types() {
    // (file, link type name, packets, tcp connections)
    for (file, link, packets, conns) in [
        ("filesamples/simple_http_sll2.pcap", "LINUX_SLL2", 24, 2),
        (
            "suricata-verify/tests/decode-sll2-02/input.pcap",
            "LINUX_SLL2",
            159,
            1,
        ),
        ("tcpdump/tests/tcp-handshake-nano.pcap", "LINUX_SLL", 3, 1),
        (
            "zeek/testing/btest/Traces/tcp/timeout-with-pings.pcap",
            "IPV4",
            15,
            1,
        ),
        ("zeek/testing/btest/Traces/redis/pubsub.pcap", "NULL", 60, 4),
        ("tcpdump/tests/tcp_rst_diag_payload.pcap", "NULL", 1, 1),
    ] {
        let flows = read(file);
        assert_eq!(flows.summary.link_types, vec![link.to_string()], "{file}");
        assert_eq!(flows.summary.packets, packets, "{file}");
        assert_eq!(tcp(&flows).len(), conns, "{file}");
        assert_eq!(flows.summary.malformed, 0, "{file}");
    }
    // SLL2 with ICMP/ARP only: read, nothing tracked as TCP.
    let flows = read("zeek/testing/btest/Traces/linux_dlt_sll2.pcap");
    assert_eq!(flows.summary.packets, 6);
    assert!(tcp(&flows).is_empty());
}

#[test]
fn nanosecond_pcap_keeps_nanoseconds() {
    // tcpdump's expected output: 17:16:09.924505488, 17:16:10.052027262, 17:16:10.052115157.
    let flows = read("tcpdump/tests/tcp-handshake-nano.pcap");
    let c = tcp(&flows)[0];
    assert_eq!(c.ts.0 % 1_000_000_000, 924_505_488);
    assert_eq!(c.last_ts.0 % 1_000_000_000, 52_115_157);
    assert_eq!(c.history.as_deref(), Some("ShA"));
    // iRTT: SYN to the handshake's ACK.
    let rtt = c.rtt_s.unwrap();
    assert!((rtt - 0.127_609_669).abs() < 1e-9, "{rtt}");
}

#[test]
fn invalid_nanoseconds_warn_and_keep_the_frames() {
    let flows = read("tcpdump/tests/timestamp_invalid_nano.pcap");
    assert_eq!(flows.summary.packets, 3);
    assert_eq!(
        flows.summary.warnings.len(),
        2,
        "{:?}",
        flows.summary.warnings
    );
    assert!(flows.summary.warnings[0].starts_with("frame 2 at byte 116"));
}

#[test]
fn pcapng_multi_interface_and_multi_section() {
    let flows = read("zeek/testing/btest/Traces/pcapng-multi-interface.pcapng");
    assert_eq!(flows.summary.packets, 6);
    // DNS over UDP, the same query seen on two interfaces.
    let udp: Vec<_> = flows
        .connections
        .iter()
        .filter(|c| c.proto == Proto::Udp)
        .collect();
    assert!(!udp.is_empty());
    assert_eq!(
        udp.iter().map(|c| c.orig.pkts + c.resp.pkts).sum::<u64>(),
        6
    );

    // Three sections of different byte order, five interfaces of two link types, EPBs and SPBs.
    let flows = read("pcapng-test-generator/output_le/difficult/test202.pcapng");
    assert_eq!(flows.summary.packets, 8);
    assert_eq!(flows.summary.link_types, vec!["EN10MB", "NULL"]);
    assert!(flows.error.is_none());
}

#[test]
fn snaplen_cut_packets_keep_their_headers() {
    // snaplen 68: TCP options and payload cut off; the connection is still tracked.
    let flows = read("zeek/testing/btest/Traces/tcp/truncated-header.pcap");
    assert_eq!(tcp(&flows).len(), 1);
    // A lone RST+ACK from port 80 whose 58-byte payload (an F5 BIG-IP diagnostic, "TCP RST
    // from remote system") lost its last byte to the snaplen: the responder sent it.
    let flows = read("tcpdump/tests/tcp_rst_data-trunc.pcap");
    let c = tcp(&flows)[0];
    assert_eq!(c.resp_p, 80);
    assert!(c.history.as_deref().unwrap().starts_with('r'));
    let t = c.termination.as_ref().unwrap();
    assert_eq!(t.by, vantage::tcp::Side::Resp);
    assert!(t.ack_flag);
    assert_eq!(t.window, 5785);
}

#[test]
fn keepalives_as_wireshark_counts_them() {
    // docker-http-upgrade: Go's keep-alives every 15 s on an upgraded connection.
    let flows = read("zeek/testing/btest/Traces/http/docker-http-upgrade.pcap");
    let ka: u64 = tcp(&flows)
        .iter()
        .map(|c| c.orig.keepalives + c.resp.keepalives)
        .sum();
    assert_eq!(ka, 6);
    // redis pubsub: a subscriber seen mid-stream (no SYN): orientation by Zeek's port rule.
    let flows = read("zeek/testing/btest/Traces/redis/pubsub.pcap");
    let mid: Vec<_> = tcp(&flows).into_iter().filter(|c| c.mid_stream).collect();
    assert_eq!(mid.len(), 1);
    assert_eq!(mid[0].resp_p, 6379);
}

/// Records of a classic little-endian pcap: (ts_sec, ts_frac, caplen, origlen, data).
fn pcap_records(bytes: &[u8]) -> Vec<(u32, u32, u32, u32, Vec<u8>)> {
    let rd = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
    let mut out = Vec::new();
    let mut o = 24;
    while o + 16 <= bytes.len() {
        let (s, f, cap, orig) = (rd(o), rd(o + 4), rd(o + 8), rd(o + 12));
        out.push((
            s,
            f,
            cap,
            orig,
            bytes[o + 16..o + 16 + cap as usize].to_vec(),
        ));
        o += 16 + cap as usize;
    }
    out
}

/// What must not depend on the file format: packets and history per connection.
fn summary_of(path: &Path) -> Vec<(u64, u64, Option<String>)> {
    let f = track_capture(path).unwrap();
    assert!(
        f.error.is_none() && f.summary.warnings.is_empty(),
        "{:?}",
        f.summary.warnings
    );
    f.connections
        .iter()
        .map(|c| {
            (
                c.orig.pkts,
                c.resp.pkts,
                c.history.as_deref().map(str::to_string),
            )
        })
        .collect()
}

/// A big-endian classic pcap, and a pcapng with nanosecond resolution, an `if_tsoffset` and
/// obsolete Packet Blocks, built from a real capture: same connections, shifted clock.
#[test]
fn big_endian_pcap_and_pcapng_ts_options_and_obsolete_blocks() {
    let src = corpus("zeek/testing/btest/Traces/tcp/retransmit-fast009.pcap");
    let bytes = std::fs::read(&src).unwrap();
    let recs = pcap_records(&bytes);
    let dir = std::env::temp_dir().join(format!("vantage-formats-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    // Big-endian: every header field swapped.
    let mut be = Vec::new();
    be.extend_from_slice(&0xa1b2_c3d4u32.to_be_bytes());
    be.extend_from_slice(&2u16.to_be_bytes());
    be.extend_from_slice(&4u16.to_be_bytes());
    be.extend_from_slice(&[0; 8]);
    be.extend_from_slice(&65535u32.to_be_bytes());
    be.extend_from_slice(&1u32.to_be_bytes());
    for (s, f, cap, orig, data) in &recs {
        for v in [s, f, cap, orig] {
            be.extend_from_slice(&v.to_be_bytes());
        }
        be.extend_from_slice(data);
    }
    let be_path = dir.join("be.pcap");
    std::fs::write(&be_path, &be).unwrap();
    assert_eq!(summary_of(&be_path), summary_of(&src));

    // pcapng: IDB with if_tsresol 9 (ns) and if_tsoffset 100 s; packets as OPBs (type 2).
    let mut ng = Vec::new();
    let block = |ng: &mut Vec<u8>, kind: u32, body: &[u8]| {
        let len = 12 + body.len() as u32;
        ng.extend_from_slice(&kind.to_le_bytes());
        ng.extend_from_slice(&len.to_le_bytes());
        ng.extend_from_slice(body);
        ng.extend_from_slice(&len.to_le_bytes());
    };
    let mut shb = 0x1A2B_3C4Du32.to_le_bytes().to_vec();
    shb.extend_from_slice(&[1, 0, 0, 0]);
    shb.extend_from_slice(&(-1i64).to_le_bytes());
    block(&mut ng, 0x0A0D_0D0A, &shb);
    let mut idb = vec![1, 0, 0, 0, 0, 0, 0, 0];
    idb.extend_from_slice(&[9, 0, 1, 0, 9, 0, 0, 0]); // if_tsresol = 9
    idb.extend_from_slice(&[14, 0, 8, 0]); // if_tsoffset
    idb.extend_from_slice(&100i64.to_le_bytes());
    idb.extend_from_slice(&[0, 0, 0, 0]);
    block(&mut ng, 1, &idb);
    for (s, f, cap, orig, data) in &recs {
        let ns = *s as u64 * 1_000_000_000 + *f as u64 * 1000;
        let mut opb = Vec::new();
        opb.extend_from_slice(&0u16.to_le_bytes()); // interface
        opb.extend_from_slice(&0u16.to_le_bytes()); // drops
        opb.extend_from_slice(&((ns >> 32) as u32).to_le_bytes());
        opb.extend_from_slice(&(ns as u32).to_le_bytes());
        opb.extend_from_slice(&cap.to_le_bytes());
        opb.extend_from_slice(&orig.to_le_bytes());
        opb.extend_from_slice(data);
        while !opb.len().is_multiple_of(4) {
            opb.push(0);
        }
        block(&mut ng, 2, &opb);
    }
    let ng_path = dir.join("opb.pcapng");
    std::fs::write(&ng_path, &ng).unwrap();
    assert_eq!(summary_of(&ng_path), summary_of(&src));
    let a = track_capture(&src).unwrap();
    let b = track_capture(&ng_path).unwrap();
    assert_eq!(
        b.summary.first_ts.unwrap().0 - a.summary.first_ts.unwrap().0,
        100_000_000_000
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
