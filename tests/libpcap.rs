//! The `libpcap` feature: BPF filters give what tcpdump gives on the same files, and a short live
//! capture on a loopback interface in a network namespace of its own. Run with
//! `cargo test --features libpcap` (.ci/run does, after installing libpcap-dev and tcpdump).
#![cfg(feature = "libpcap")]

use std::path::{Path, PathBuf};
use std::process::Command as Proc;

use assert_cmd::Command;
use vantage::capture::CaptureReader;
use vantage::filter::BpfFilter;

fn corpus(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn ours(path: &Path, expr: &str) -> usize {
    let mut f = BpfFilter::new(expr).unwrap();
    let mut r = CaptureReader::open(path).unwrap();
    let mut n = 0;
    while let Some(frame) = r.next_frame().unwrap() {
        if f.matches(&frame).unwrap() {
            n += 1;
        }
    }
    n
}

fn tcpdump(path: &Path, expr: &str) -> Option<usize> {
    let out = Proc::new("tcpdump")
        .args(["-n", "-r"])
        .arg(path)
        .arg(expr)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).lines().count())
}

#[test]
fn filters_agree_with_tcpdump() {
    let cases = [
        (
            "fixtures/corpus/zeek/testing/btest/Traces/tcp/retransmit-fast009.pcap",
            "tcp[tcpflags] & tcp-rst != 0",
        ),
        (
            "fixtures/corpus/zeek/testing/btest/Traces/ftp/ipv6.pcap",
            "tcp port 21",
        ),
        (
            "fixtures/corpus/zeek/testing/btest/Traces/vlan-collisions.pcap",
            "vlan 42",
        ),
        (
            "fixtures/corpus/zeek/testing/btest/Traces/redis/pubsub.pcap",
            "tcp port 6379",
        ),
        ("fixtures/conntrack-reject/softswitch.pcap", "udp port 5060"),
        (
            "fixtures/conntrack-reject/agent.pcapng",
            "tcp[tcpflags] & tcp-rst != 0",
        ),
    ];
    let mut compared = 0;
    for (file, expr) in cases {
        let path = corpus(file);
        let n = ours(&path, expr);
        match tcpdump(&path, expr) {
            Some(t) => {
                assert_eq!(n, t, "{file} '{expr}'");
                compared += 1;
            }
            None => eprintln!("tcpdump not available: {file} '{expr}' gives {n}"),
        }
        assert!(n > 0, "{file} '{expr}' matches nothing");
    }
    if std::env::var_os("CI").is_some() {
        assert_eq!(
            compared,
            cases.len(),
            "CI installs tcpdump: every case is compared"
        );
    }
}

#[test]
fn flows_with_a_filter_keeps_only_what_it_accepts() {
    let out = Command::cargo_bin("vantage")
        .unwrap()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["flows", "--format", "json", "--filter", "udp"])
        .arg("fixtures/conntrack-reject/softswitch.pcap")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.lines().count() >= 2);
    assert!(
        text.lines().all(|l| l.contains("\"proto\":\"udp\"")),
        "{text}"
    );
    // A bad expression is an error before any file is read.
    Command::cargo_bin("vantage")
        .unwrap()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "flows",
            "--filter",
            "tcp portt 80",
            "fixtures/conntrack-reject/softswitch.pcap",
        ])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("--filter 'tcp portt 80'"));
}

/// A live capture on `lo` inside a namespace of its own, while a connection to a closed port
/// there makes a SYN and a RST. Needs root (namespaces); skipped with a message otherwise.
#[test]
fn live_capture_on_loopback_in_a_namespace() {
    let ns = format!("vantage-test-{}", std::process::id());
    if !Proc::new("ip")
        .args(["netns", "add", &ns])
        .status()
        .is_ok_and(|s| s.success())
    {
        eprintln!("SKIPPED: cannot create a network namespace here (not root?)");
        return;
    }
    let _ = Proc::new("ip")
        .args(["netns", "exec", &ns, "ip", "link", "set", "lo", "up"])
        .status();
    let dir = std::env::temp_dir().join(&ns);
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("lo.pcapng");
    let bin = assert_cmd::cargo::cargo_bin("vantage");
    let mut cap = Proc::new("ip")
        .args(["netns", "exec", &ns])
        .arg(&bin)
        .args([
            "capture",
            "-i",
            "lo",
            "--duration",
            "2s",
            "-f",
            "tcp port 9",
            "-w",
        ])
        .arg(&out)
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    for _ in 0..3 {
        let _ = Proc::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "bash",
                "-c",
                "exec 3<>/dev/tcp/127.0.0.1/9",
            ])
            .output();
    }
    // The capture must end by itself after its duration; never let a stuck one hang the suite.
    let mut status = None;
    for _ in 0..300 {
        if let Some(s) = cap.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let status = status.unwrap_or_else(|| {
        let _ = cap.kill();
        let _ = Proc::new("ip").args(["netns", "delete", &ns]).status();
        panic!("vantage capture did not stop after its 2 s duration");
    });
    let _ = Proc::new("ip").args(["netns", "delete", &ns]).status();
    assert!(status.success());
    let mut r = CaptureReader::open(&out).unwrap();
    let mut n = 0;
    while let Some(f) = r.next_frame().unwrap() {
        assert_eq!(f.link.name(), "EN10MB");
        n += 1;
    }
    // Three SYNs to a closed port, three RSTs back.
    assert_eq!(n, 6, "frames captured");
    std::fs::remove_dir_all(&dir).unwrap();
}
