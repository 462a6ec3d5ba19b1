//! `vantage extract`: evidence packets from every capture in one pcapng, checked with our own
//! reader always and with tshark where it is installed. Also the completions and the man page.

use vantage::capture::CaptureReader;

mod common;
use common::vantage;

const THREE: [&str; 3] = [
    "agent=fixtures/conntrack-reject/agent.pcapng",
    "softswitch=fixtures/conntrack-reject/softswitch.pcap",
    "gateway=fixtures/conntrack-reject/gateway.pcap",
];

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("vantage-extract-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// Frames, link types and timestamps of a pcapng, through our reader.
fn read(path: &std::path::Path) -> (u64, Vec<String>, bool) {
    let mut r = CaptureReader::open(path).unwrap();
    let mut n = 0;
    let mut last = i64::MIN;
    let mut sorted = true;
    while let Some(f) = r.next_frame().unwrap() {
        n += 1;
        sorted &= f.ts.0 >= last;
        last = f.ts.0;
    }
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    (n, r.link_types.iter().map(|l| l.name()).collect(), sorted)
}

#[test]
fn a_connection_from_every_vantage_on_the_reference_clock() {
    let out = tmp("l1.pcapng");
    vantage()
        .args(["extract", "--conn", "L1", "-o"])
        .arg(&out)
        .args(THREE)
        .assert()
        .success();
    let (n, links, sorted) = read(&out);
    // L1 is the agent's first connection: its leg at the agent (Ethernet) and at the
    // softswitch (-i any, SLL2), each packet once.
    let flows = |f: &str| {
        vantage::pipeline::track_capture(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(f))
            .unwrap()
    };
    let a = flows("fixtures/conntrack-reject/agent.pcapng");
    let s = flows("fixtures/conntrack-reject/softswitch.pcap");
    let pkts = |c: &vantage::tcp::Connection| c.orig.pkts + c.resp.pkts;
    let expected = pkts(&a.connections[0])
        + pkts(
            s.connections
                .iter()
                .find(|c| c.proto == vantage::tcp::Proto::Tcp)
                .unwrap(),
        );
    assert_eq!(n, expected);
    assert_eq!(links, vec!["EN10MB", "LINUX_SLL2"]);
    assert!(sorted, "merged in reference time");
}

#[test]
fn a_findings_evidence_is_commented_and_tshark_opens_it() {
    let out = tmp("f1.pcapng");
    vantage()
        .args(["extract", "--finding", "F1", "-o"])
        .arg(&out)
        .args(THREE)
        .assert()
        .success();
    let (n, _, sorted) = read(&out);
    assert!(n > 10);
    assert!(sorted);
    // The comments are in the file as pcapng opt_comment options.
    let bytes = std::fs::read(&out).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("F1 middlebox_reset: RST from the server side"));
    assert!(text.contains("agent") && text.contains("softswitch"));
    match std::process::Command::new("tshark")
        .args(["-r"])
        .arg(&out)
        .args([
            "-Y",
            "frame.comment",
            "-T",
            "fields",
            "-e",
            "frame.interface_name",
            "-e",
            "frame.comment",
        ])
        .output()
    {
        Ok(o) if o.status.success() => {
            let lines = String::from_utf8_lossy(&o.stdout).to_string();
            assert!(lines.contains("agent\tF1 middlebox_reset"), "{lines}");
            assert!(lines.lines().count() >= 3, "{lines}");
        }
        _ => eprintln!("tshark not installed: checked with our own reader only"),
    }
}

#[test]
fn unknown_ids_are_errors() {
    vantage()
        .args(["extract", "--conn", "L99", "-o", "/dev/null"])
        .args(THREE)
        .assert()
        .code(2)
        .stderr(predicates::str::contains("no lined-up connection L99"));
    vantage()
        .args(["extract", "--finding", "F99", "-o", "/dev/null"])
        .args(THREE)
        .assert()
        .code(2)
        .stderr(predicates::str::contains("no finding F99"));
}

#[test]
fn completions_and_man_page() {
    let out = vantage().args(["completions", "bash"]).output().unwrap();
    assert!(out.status.success());
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(s.contains("_vantage()") && s.contains("diagnose"));
    let out = vantage().args(["completions", "fish"]).output().unwrap();
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .contains("complete -c vantage"));
    let out = vantage().arg("man").output().unwrap();
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(
        s.starts_with(".ie") || s.contains(".TH vantage"),
        "{}",
        &s[..200.min(s.len())]
    );
    assert!(s.contains("diagnose"));
}
