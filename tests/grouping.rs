//! Findings that tell the same story about the same place are grouped (`rules::Grouper`), on
//! real packets: the agent-side captures of three lab runs, merged in time order into one
//! capture, hold two connections reset by the same conntrack rule (TTL 64, IP ID 0).

mod common;
use common::{succeed, vantage};

use vantage::capture::{CaptureReader, LinkType, Timestamp};
use vantage::pcapng_writer::PcapngWriter;

/// The three scenarios' agent captures as one pcapng in `dir`.
fn merged(dir: &std::path::Path) -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut frames: Vec<(Timestamp, u32, Vec<u8>)> = Vec::new();
    for s in [
        "conntrack-reject",
        "conntrack-reject-serverka",
        "haproxy-nolinger",
    ] {
        let mut r = CaptureReader::open(&root.join(s).join("agent.pcapng")).unwrap();
        while let Some(f) = r.next_frame().unwrap() {
            assert_eq!(f.link, LinkType(1), "Ethernet");
            frames.push((f.ts, f.orig_len, f.data.to_vec()));
        }
    }
    frames.sort_by_key(|f| f.0);
    let path = dir.join("agents.pcapng");
    let mut w = PcapngWriter::new(std::fs::File::create(&path).unwrap(), "vantage tests").unwrap();
    let i = w.interface(LinkType(1), "eth0", "").unwrap();
    for (ts, len, data) in &frames {
        w.packet(i, *ts, *len, data, None).unwrap();
    }
    w.into_inner().unwrap();
    path
}

fn diagnose(path: &std::path::Path, max_evidence: usize) -> serde_json::Value {
    let out = succeed(
        vantage()
            .args(["diagnose", "--format", "json", "--max-evidence"])
            .arg(max_evidence.to_string())
            .arg(format!("agents={}", path.display())),
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn finding<'a>(v: &'a serde_json::Value, kind: &str) -> &'a serde_json::Value {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {v:#}"))
}

fn frames(f: &serde_json::Value) -> Vec<u64> {
    f["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["frame"].as_u64().unwrap())
        .collect()
}

#[test]
fn resets_by_one_rule_are_one_finding_showing_the_first_deaths() {
    let dir = std::env::temp_dir().join(format!("vantage-grouping-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = merged(&dir);

    let all = diagnose(&path, 50);
    let reset = finding(&all, "middlebox_reset");
    let conns: Vec<&str> = reset["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(conns.len(), 2, "{reset:#}");
    // Each connection shows the packet that broke the silence and the RST that answered it.
    let every = frames(reset);
    assert_eq!(every.len(), 4, "{reset:#}");
    // One filter shows every RST of the group: they share the conntrack rule's TTL and IP ID.
    assert!(
        reset["display_filters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["filter"] == "tcp.flags.reset == 1 && ip.ttl == 64 && ip.id == 0"),
        "{reset:#}"
    );
    assert!(reset["summary"]
        .as_str()
        .unwrap()
        .starts_with("2 connections"));

    // Room for 2 or 3 items: the first connection to die, whole; the group still lists both.
    for cap in [2, 3] {
        let v = diagnose(&path, cap);
        let f = finding(&v, "middlebox_reset");
        assert_eq!(frames(f), every[..2].to_vec(), "--max-evidence {cap}");
        assert_eq!(f["connections"].as_array().unwrap().len(), 2);
        assert!(
            f["explanation"]
                .as_str()
                .unwrap()
                .contains("Evidence for the first connection in time of these 2"),
            "{}",
            f["explanation"]
        );
    }
    // Wireshark shows every cited frame with the finding's filters, the shared RST one alone
    // showing both RSTs.
    if common::tshark_here("resets_by_one_rule_are_one_finding_showing_the_first_deaths") {
        let file = path.to_str().unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for df in reset["display_filters"].as_array().unwrap() {
            let filter = df["filter"].as_str().unwrap();
            let got = common::shown(file, filter).unwrap_or_else(|e| panic!("{filter}: {e}"));
            if filter.starts_with("tcp.flags.reset == 1") {
                assert_eq!(got.len(), 2, "{filter}: {got:?}");
                assert!(every.iter().any(|f| got.contains(f)), "{filter}: {got:?}");
            }
            seen.extend(got);
        }
        assert!(
            every.iter().all(|f| seen.contains(f)),
            "{every:?} not all in {seen:?}"
        );
    }
    // The same story about heartbeats is one finding too.
    let slow = finding(&all, "heartbeat_too_slow");
    assert_eq!(slow["connections"].as_array().unwrap().len(), 2, "{slow:#}");
    std::fs::remove_dir_all(dir).unwrap();
}
