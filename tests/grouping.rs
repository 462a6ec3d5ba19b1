//! Findings that tell the same story about the same place are grouped (`rules::Grouper`), on
//! real packets: the agent-side captures of three lab runs, merged in time order into one
//! capture, hold two connections reset by the same conntrack rule (TTL 64, IP ID 0).

mod common;
use common::{succeed, vantage};

use vantage::capture::{CaptureReader, LinkType, Timestamp};
use vantage::pcapng_writer::PcapngWriter;

/// Lab captures, each shifted by its seconds, merged in time order into `dir/name` (pcapng).
fn merge(dir: &std::path::Path, name: &str, parts: &[(&str, i64)]) -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut frames: Vec<(Timestamp, u32, Vec<u8>)> = Vec::new();
    for (file, shift) in parts {
        let mut r = CaptureReader::open(&root.join(file)).unwrap();
        while let Some(f) = r.next_frame().unwrap() {
            assert_eq!(f.link, LinkType(1), "Ethernet");
            let ts = Timestamp(f.ts.0 + shift * 1_000_000_000);
            frames.push((ts, f.orig_len, f.data.to_vec()));
        }
    }
    frames.sort_by_key(|f| f.0);
    let path = dir.join(name);
    let mut w = PcapngWriter::new(std::fs::File::create(&path).unwrap(), "vantage tests").unwrap();
    let i = w.interface(LinkType(1), "eth0", "").unwrap();
    for (ts, len, data) in &frames {
        w.packet(i, *ts, *len, data, None).unwrap();
    }
    w.into_inner().unwrap();
    path
}

/// The three scenarios' agent captures as one pcapng in `dir`.
fn merged(dir: &std::path::Path) -> std::path::PathBuf {
    let parts = [
        ("conntrack-reject/agent.pcapng", 0),
        ("conntrack-reject-serverka/agent.pcapng", 0),
        ("haproxy-nolinger/agent.pcapng", 0),
    ];
    merge(dir, "agents.pcapng", &parts)
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

/// One agent's connection reset five times over five hours (the conntrack-reject agent
/// capture, shifted by an hour each time: real packets, as `editcap -t` would shift them). The
/// group shows its first deaths whole, and its filters show every frame it cites, past the
/// three connections they show whole.
#[test]
fn a_large_group_cites_its_first_deaths_and_its_filters_show_them() {
    let dir = std::env::temp_dir().join(format!("vantage-group5-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let parts: Vec<(&str, i64)> = (0..5)
        .map(|k| ("conntrack-reject/agent.pcapng", k * 3600))
        .collect();
    let path = merge(&dir, "five.pcapng", &parts);
    for cap in [50, 6] {
        let v = diagnose(&path, cap);
        let reset = finding(&v, "middlebox_reset");
        assert_eq!(
            reset["connections"].as_array().unwrap().len(),
            5,
            "{reset:#}"
        );
        let cited = frames(reset);
        // Two items a connection: all five, or the first three in time.
        assert_eq!(cited.len(), if cap == 50 { 10 } else { 6 }, "{reset:#}");
        let times: Vec<f64> = reset["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["ts"].as_f64().unwrap())
            .collect();
        if cap == 6 {
            // The first three copies of the capture, an hour apart: all within 2 h 1 min.
            assert!(
                times.iter().all(|t| t - times[0] < 2.0 * 3600.0 + 60.0),
                "{times:?}"
            );
        }
        // The copies share one 5-tuple, so the filters' conversation part would show them all:
        // the frames are listed by number, every one.
        let listed: std::collections::BTreeSet<u64> = reset["display_filters"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|df| {
                let f = df["filter"].as_str().unwrap();
                f.split("frame.number == ")
                    .skip(1)
                    .filter_map(|n| n.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
                    .collect::<Vec<u64>>()
            })
            .collect();
        assert!(
            cited.iter().all(|f| listed.contains(f)),
            "{cited:?} not all in {listed:?}"
        );
        if common::tshark_here("a_large_group_cites_its_first_deaths_and_its_filters_show_them") {
            let file = path.to_str().unwrap();
            let mut seen = std::collections::BTreeSet::new();
            for df in reset["display_filters"].as_array().unwrap() {
                let filter = df["filter"].as_str().unwrap();
                seen.extend(common::shown(file, filter).unwrap_or_else(|e| panic!("{e}")));
            }
            assert!(
                cited.iter().all(|f| seen.contains(f)),
                "{cited:?} not all in {seen:?}"
            );
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}
