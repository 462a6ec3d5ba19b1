//! One capture tracked on several threads (`TrackerOptions::shards`) gives what one thread
//! gives, on every capture in `fixtures/`: the same connections, each the same in every field
//! (application layer and packet samples included), and the same capture summary.

mod common;

use std::path::Path;

use vantage::pipeline::track_capture_with;
use vantage::tcp::TrackerOptions;

fn tracked(path: &Path, shards: usize) -> (String, Vec<String>) {
    let opts = TrackerOptions {
        shards,
        ..TrackerOptions::default()
    };
    let flows = track_capture_with(path, opts).unwrap_or_else(|e| panic!("{e:#}"));
    let summary = serde_json::to_string(&flows.summary).unwrap();
    let conns = flows.connections.iter().map(|c| format!("{c:?}")).collect();
    (summary, conns)
}

#[test]
fn shards_change_nothing_on_any_fixture() {
    let files = common::fixture_captures();
    assert!(files.len() > 50, "fixtures found: {}", files.len());
    let mut connections = 0;
    for path in &files {
        let (s1, c1) = tracked(path, 1);
        for shards in [2, 3] {
            let (s, c) = tracked(path, shards);
            assert_eq!(s1, s, "{}: summary, {shards} shards", path.display());
            assert_eq!(c1.len(), c.len(), "{}: {shards} shards", path.display());
            for (a, b) in c1.iter().zip(&c) {
                assert_eq!(a, b, "{}: {shards} shards", path.display());
            }
        }
        connections += c1.len();
    }
    // The fixtures hold enough connections for the shards to have split them.
    assert!(connections > 150, "{connections} connections");
}

fn streamed(path: &Path, shards: usize) -> (String, Vec<String>) {
    let opts = TrackerOptions {
        shards,
        ..TrackerOptions::default()
    };
    let mut out = Vec::new();
    let run = vantage::pipeline::stream_capture(path, opts, None, |ts, c| {
        out.push(format!("{ts:?} {c:?}"));
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    (serde_json::to_string(&run.summary).unwrap(), out)
}

/// Streamed (`flows --stream`), the shards' connections are merged back into the order one
/// tracker hands them over, each with the same hand-over time: on every fixture.
#[test]
fn shards_stream_in_the_order_of_one_tracker() {
    for path in &common::fixture_captures() {
        let (s1, c1) = streamed(path, 1);
        for shards in [2, 3] {
            let (s, c) = streamed(path, shards);
            assert_eq!(s1, s, "{}: summary, {shards} shards", path.display());
            assert_eq!(c1, c, "{}: {shards} shards", path.display());
        }
    }
}

/// The command line: `--threads` does not change a report, on the three captures of a lab
/// scenario (three threads each, shared among them) or on one.
#[test]
fn threads_flag_changes_no_report() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/nginx-ws");
    let caps: Vec<String> = ["agent.pcapng", "gateway.pcap", "softswitch.pcap"]
        .iter()
        .map(|f| dir.join(f).display().to_string())
        .collect();
    for set in [&caps[..], &caps[2..]] {
        let run = |threads: &str| {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_vantage"))
                .args(["diagnose", "--format", "json", "--threads", threads])
                .args(set)
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            String::from_utf8(out.stdout).unwrap()
        };
        let one = run("1");
        assert!(one.contains("\"findings\""));
        assert_eq!(one, run("9"), "{set:?}");
    }
}

/// No thread is no tracking: `--threads 0` is refused, with the exit code of a usage error.
#[test]
fn zero_threads_is_refused() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vantage"))
        .args(["flows", "--threads", "0"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/nginx-ws/agent.pcapng"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--threads"), "{err}");
}

/// A pipe can be read once: `vantage flows <(zcat capture.pcap.gz)` reads it on one thread,
/// whatever `--threads` says, and prints what the same bytes in a file give.
#[test]
fn a_pipe_is_read_once() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/nginx-ws/agent.pcapng");
    let dir = std::env::temp_dir().join(format!("vantage-fifo-{}", std::process::id()));
    // The same file name in both places: a uid is made from it.
    let (fifo, file) = (dir.join("pipe/agent.pcapng"), dir.join("file/agent.pcapng"));
    for p in [&fifo, &file] {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    }
    std::fs::copy(&fixture, &file).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let bytes = std::fs::read(&fixture).unwrap();
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::write(fifo, bytes))
    };
    let run = |path: &Path| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vantage"))
            .args(["flows", "--format", "json", "--threads", "4"])
            .arg(path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout)
            .unwrap()
            .replace(&path.display().to_string(), "CAPTURE")
    };
    let piped = run(&fifo);
    writer.join().unwrap().unwrap();
    let direct = run(&file);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(direct.contains("\"uid\""));
    assert_eq!(piped, direct);
}
