//! The real binary, run as an engineer or a CI job would: output formats, exit codes, errors.

use predicates::prelude::*;

mod common;
use common::vantage;

const FAST009: &str = "fixtures/corpus/zeek/testing/btest/Traces/tcp/retransmit-fast009.pcap";
const FTP6: &str = "fixtures/corpus/zeek/testing/btest/Traces/ftp/ipv6.pcap";

#[test]
fn help_shows_examples() {
    vantage()
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("Examples:"));
    vantage()
        .args(["flows", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("vantage flows agent.pcapng"));
}

#[test]
fn flows_table_snapshot() {
    let out = vantage().args(["flows", FAST009, FTP6]).output().unwrap();
    assert!(out.status.success());
    insta::assert_snapshot!(String::from_utf8(out.stdout).unwrap());
}

/// Every fixture capture, and one of them again under two other names (in `dir`), so that
/// connections of different captures tie on (start, first frame) and only the capture tells
/// them apart; whether one of them fails to read; the connections `flows` kept of them with
/// `opts`, sorted as it sorted them (a stable sort by start time, then first frame, of every
/// capture's list, one capture after the other).
fn every_fixture_kept(
    dir: &std::path::Path,
    opts: vantage::tcp::TrackerOptions,
) -> (
    Vec<std::path::PathBuf>,
    bool,
    Vec<vantage::pipeline::CaptureFlows>,
) {
    std::fs::create_dir_all(dir).unwrap();
    let mut files = common::fixture_captures();
    assert!(files.len() > 50, "fixtures found: {}", files.len());
    let lab = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/conntrack-reject/softswitch.pcap");
    for name in ["z-copy.pcap", "a-copy.pcap"] {
        std::fs::copy(&lab, dir.join(name)).unwrap();
        files.push(dir.join(name));
    }
    let mut failed = false;
    let mut kept = Vec::new();
    for f in &files {
        match vantage::pipeline::track_capture_with(f, opts) {
            Ok(flows) => {
                failed |= flows.error.is_some();
                kept.push(flows);
            }
            Err(_) => failed = true,
        }
    }
    (files, failed, kept)
}

fn sorted(kept: &[vantage::pipeline::CaptureFlows]) -> Vec<&vantage::tcp::Connection> {
    let mut conns: Vec<&vantage::tcp::Connection> = kept
        .iter()
        .flat_map(|f| f.connections.iter().map(|c| &**c))
        .collect();
    conns.sort_by(|a, b| a.ts.cmp(&b.ts).then(a.first_frame.cmp(&b.first_frame)));
    let key = |c: &vantage::tcp::Connection| (c.ts, c.first_frame);
    let ties = conns.windows(2).filter(|w| key(w[0]) == key(w[1])).count();
    assert!(ties >= 6, "{ties} ties");
    assert!(conns.len() > 150, "{} connections", conns.len());
    conns
}

/// The table keeps a row per connection, made as the connection is handed over
/// (`report::FlowRows`), and sorts the rows at the end. It must be the table of the kept
/// connections (`every_fixture_kept`), written by `report::write_flows_table`, with one thread
/// and several.
#[test]
fn flows_table_rows_sort_as_the_kept_connections() {
    use vantage::tcp::TrackerOptions;
    let dir = std::env::temp_dir().join(format!("vantage-rows-{}", std::process::id()));
    let opts = TrackerOptions {
        app: false,
        keep_samples: false,
        timeline: false,
        ..TrackerOptions::default()
    };
    let (files, failed, kept) = every_fixture_kept(&dir, opts);
    let mut expected = Vec::new();
    vantage::report::write_flows_table(&mut expected, &sorted(&kept), true).unwrap();
    let expected = String::from_utf8(expected).unwrap();
    for threads in ["1", "2", "5"] {
        let out = vantage()
            .args(["flows", "--threads", threads])
            .args(&files)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(if failed { 2 } else { 0 }));
        let table = String::from_utf8(out.stdout).unwrap();
        assert!(
            table == expected,
            "--threads {threads}:\n{table}\n{expected}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// `flows --format json` writes each connection's line to a temporary file as it is handed
/// over (`report::sorted_lines`) and prints them sorted at the end: the lines of the kept
/// connections, in their order, with one thread and several.
#[test]
fn flows_json_lines_sort_as_the_kept_connections() {
    use vantage::tcp::TrackerOptions;
    let dir = std::env::temp_dir().join(format!("vantage-lines-{}", std::process::id()));
    let opts = TrackerOptions {
        keep_samples: false,
        timeline: false,
        ..TrackerOptions::default()
    };
    let (files, failed, kept) = every_fixture_kept(&dir, opts);
    let mut expected = String::new();
    for c in sorted(&kept) {
        expected.push_str(&vantage::report::flow_json_line(c));
        expected.push('\n');
    }
    for threads in ["1", "2", "5"] {
        let out = vantage()
            .args(["flows", "--format", "json", "--threads", threads])
            .args(&files)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(if failed { 2 } else { 0 }));
        let lines = String::from_utf8(out.stdout).unwrap();
        assert!(lines == expected, "--threads {threads}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// With one capture, `flows --format json` writes the lines of the connections still live at
/// its end as they come, after the lines before them (`SortedLines::push_at_end`), not through
/// the temporary file: on every fixture alone, one thread and two, the output is the kept
/// connections' lines in start order. Not vacuous: in some captures a connection of the end
/// starts before one handed over earlier, so the two kinds of line interleave.
#[test]
fn one_captures_lines_of_the_end_go_out_in_start_order() {
    use vantage::tcp::TrackerOptions;
    let opts = TrackerOptions {
        keep_samples: false,
        timeline: false,
        ..TrackerOptions::default()
    };
    let (mut interleaved, mut both) = (0, 0);
    for path in common::fixture_captures() {
        let Ok(flows) = vantage::pipeline::track_capture_with(&path, opts) else {
            continue;
        };
        let mut conns: Vec<_> = flows.connections.iter().collect();
        conns.sort_by_key(|c| (c.ts, c.first_frame));
        let expected: String = conns
            .iter()
            .map(|c| vantage::report::flow_json_line(c) + "\n")
            .collect();
        for threads in ["1", "2"] {
            let out = vantage()
                .args(["flows", "--format", "json", "--threads", threads])
                .arg(&path)
                .output()
                .unwrap();
            let text = String::from_utf8(out.stdout).unwrap();
            assert!(text == expected, "{} --threads {threads}", path.display());
        }
        // Which were handed over at the end: a connection of the end starting before another.
        let mut handed = Vec::new();
        vantage::pipeline::stream_capture_mapped(
            &path,
            opts,
            None,
            &|c| (c.ts, c.first_frame),
            &mut |_, at_end, key| handed.push((at_end, key)),
        )
        .unwrap();
        let last_ended = handed.iter().filter(|h| !h.0).map(|h| h.1).max();
        interleaved += usize::from(
            handed
                .iter()
                .any(|&(at_end, key)| at_end && last_ended.is_some_and(|l| key < l)),
        );
        both += usize::from(last_ended.is_some() && handed.iter().any(|h| h.0));
    }
    // Zeek's FTP and Redis traces interleave; many more have lines of both kinds.
    assert!(interleaved >= 2, "{interleaved} captures interleave");
    assert!(both >= 10, "{both} captures with lines of both kinds");
}

#[test]
fn flows_json_snapshot() {
    let out = vantage()
        .args(["flows", "--format", "json", FAST009])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    insta::assert_json_snapshot!(lines);
}

#[test]
fn json_lines_carry_zeek_names_and_frames() {
    let out = vantage()
        .args(["flows", "--format", "json", FTP6])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 6);
    for l in text.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        for k in [
            "ts",
            "uid",
            "id.orig_h",
            "id.orig_p",
            "id.resp_h",
            "id.resp_p",
            "proto",
            "duration",
            "orig_bytes",
            "resp_bytes",
            "conn_state",
            "history",
            "orig_pkts",
            "resp_pkts",
            "capture",
            "first_frame",
            "last_frame",
        ] {
            assert!(v.get(k).is_some(), "missing {k} in {l}");
        }
        assert!(v["first_frame"].as_u64() <= v["last_frame"].as_u64());
    }
}

#[test]
fn not_a_capture_is_exit_2_with_the_file_named() {
    vantage()
        .args(["flows", "Cargo.toml"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "Cargo.toml: byte 0: unknown magic",
        ));
    vantage()
        .args(["flows", "no/such/file.pcap"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no/such/file.pcap: cannot open"));
}

#[test]
fn absurd_record_length_is_an_error_naming_frame_and_offset() {
    vantage()
        .args([
            "flows",
            "fixtures/corpus/suricata-verify/tests/bug-6875-01/fuzz.pcap",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "fuzz.pcap: frame 2 at byte 228: record claims 1409179664 bytes",
        ));
}

#[test]
fn truncated_capture_keeps_what_was_read_and_warns() {
    let dir = std::env::temp_dir().join(format!("vantage-cli-trunc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let full =
        std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(FAST009)).unwrap();
    let cut = dir.join("cut.pcap");
    std::fs::write(&cut, &full[..full.len() - 30]).unwrap();
    let out = vantage()
        .args(["flows", "--format", "json"])
        .arg(&cut)
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("warning"), "{err}");
    assert!(err.contains("frame 39"), "{err}");
    assert!(err.contains("kept the 38 frames"), "{err}");
    let v: serde_json::Value = serde_json::from_str(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(v["last_frame"], 38);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn gzip_is_read_transparently() {
    use std::io::Write;
    let dir = std::env::temp_dir().join(format!("vantage-cli-gz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let full =
        std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(FAST009)).unwrap();
    let gz = dir.join("fast009.pcap.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::default(),
    );
    enc.write_all(&full).unwrap();
    enc.finish().unwrap();
    let plain = vantage()
        .args(["flows", "--format", "json", FAST009])
        .output()
        .unwrap();
    let zipped = vantage()
        .args(["flows", "--format", "json"])
        .arg(&gz)
        .output()
        .unwrap();
    assert!(zipped.status.success());
    let strip = |o: &[u8]| {
        let mut v: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(o).lines().next().unwrap()).unwrap();
        v.as_object_mut().unwrap().remove("capture");
        v.as_object_mut().unwrap().remove("uid");
        v
    };
    assert_eq!(strip(&plain.stdout), strip(&zipped.stdout));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `flows --stream` writes every connection the sorted output has, each as soon as it is over:
/// in the FTP trace the control connection, opened first and closed last, comes after the data
/// connections it opened. Without `--format json` it is refused.
#[test]
fn stream_writes_each_connection_when_it_ends() {
    let sorted = lines(&["flows", "--format", "json", FTP6]);
    let streamed = lines(&["flows", "--format", "json", "--stream", FTP6]);
    assert_eq!(
        streamed,
        lines(&["flows", "--format", "json", "--stream", FTP6]),
        "the same order every run"
    );
    assert_eq!(sorted.len(), 6);
    let mut a = sorted.clone();
    let mut b = streamed.clone();
    a.sort();
    b.sort();
    assert_eq!(a, b, "the same connections, field for field");
    let control = &sorted[0];
    let at = streamed.iter().position(|l| l == control).unwrap();
    assert!(
        at >= 4,
        "the control connection ends after the data connections: {at}"
    );
    vantage()
        .args(["flows", "--stream", FTP6])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--format json"));
}

/// `flows --stream` with several captures reads them in parallel and merges by the time each
/// connection was handed over: every capture's lines, each capture's own order kept, the same
/// order every run, and the gateway capture (which ends first) before the agent's although it
/// is named last.
#[test]
fn stream_merges_captures_by_time() {
    let dir = "fixtures/conntrack-reject";
    let (agent, softswitch, gateway) = (
        format!("{dir}/agent.pcapng"),
        format!("{dir}/softswitch.pcap"),
        format!("{dir}/gateway.pcap"),
    );
    let lines = |files: &[&str]| -> Vec<String> {
        let mut args = vec!["flows", "--format", "json", "--stream"];
        args.extend_from_slice(files);
        lines(&args)
    };
    let merged = lines(&[&agent, &softswitch, &gateway]);
    assert_eq!(merged, lines(&[&agent, &softswitch, &gateway]));
    let mut total = 0;
    for f in [&agent, &softswitch, &gateway] {
        let alone = lines(&[f]);
        assert!(!alone.is_empty());
        total += alone.len();
        let mine: Vec<&String> = merged.iter().filter(|l| alone.contains(l)).collect();
        assert_eq!(mine, alone.iter().collect::<Vec<_>>(), "{f}: its own order");
    }
    assert_eq!(merged.len(), total);
    let first_of = |f: &str| {
        let name = std::path::Path::new(f)
            .file_name()
            .unwrap()
            .to_str()
            .unwrap();
        merged.iter().position(|l| l.contains(name)).unwrap()
    };
    assert!(first_of(&gateway) < first_of(&agent));
}

/// The lines a successful run prints.
fn lines(args: &[&str]) -> Vec<String> {
    let out = vantage().args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// `flows --detail UID` prints one connection and its application events in frame order, as a
/// table and as JSON; an unknown uid is exit 2.
#[test]
fn detail_prints_one_connections_events() {
    const AGENT: &str = "fixtures/conntrack-reject/agent.pcapng";
    let first = lines(&["flows", "--format", "json", AGENT]).remove(0);
    let uid = serde_json::from_str::<serde_json::Value>(&first).unwrap()["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let table = common::stdout(vantage().args(["flows", "--detail", &uid, AGENT]));
    let at = |s: &str| {
        table
            .find(s)
            .unwrap_or_else(|| panic!("no {s:?} in\n{table}"))
    };
    assert!(at("HTTP GET /ws") < at("HTTP 101"));
    assert!(at("HTTP 101") < at("SIP REGISTER"));
    assert!(at("SIP REGISTER") < at("SIP INVITE"));
    assert!(table.contains("CRLF keep-alive answer"));

    let json: serde_json::Value = serde_json::from_str(&common::stdout(
        vantage().args(["flows", "--detail", &uid, "--format", "json", AGENT]),
    ))
    .unwrap();
    assert_eq!(json["connection"]["uid"], uid.as_str());
    let frames: Vec<u64> = json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["frame"].as_u64().unwrap())
        .collect();
    assert!(frames.len() >= 20, "{frames:?}");
    assert!(frames.windows(2).all(|w| w[0] <= w[1]), "{frames:?}");

    vantage()
        .args(["flows", "--detail", "Cnosuchconnection", AGENT])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "no connection with uid Cnosuchconnection",
        ));
}

/// `--stats` prints each stage's end to stderr, in the order the stages ran, and changes nothing
/// on stdout: a report with it is the report without it. Linux: elsewhere the memory columns
/// say `-`.
#[cfg(target_os = "linux")]
#[test]
fn stats_print_each_stage_and_leave_the_report_alone() {
    let dir = "fixtures/conntrack-reject";
    let args = [
        "diagnose",
        "--format",
        "json",
        "--threads",
        "1",
        "agent=fixtures/conntrack-reject/agent.pcapng",
        "softswitch=fixtures/conntrack-reject/softswitch.pcap",
    ];
    let plain = vantage().args(args).output().unwrap();
    let with = vantage().arg("--stats").args(args).output().unwrap();
    assert!(plain.status.success() && with.status.success(), "{dir}");
    assert_eq!(plain.stdout, with.stdout, "--stats changed the report");
    assert!(!String::from_utf8_lossy(&plain.stderr).contains("vantage: stats"));
    let err = String::from_utf8(with.stderr).unwrap();
    let table: Vec<&str> = err
        .lines()
        .skip_while(|l| *l != "vantage: stats")
        .skip(1)
        .collect();
    assert!(
        table[0].starts_with("stage") && table[0].ends_with("peak_mib"),
        "{err}"
    );
    let rows: Vec<(String, f64, f64, f64)> = table[1..]
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let n = f.len();
            let num = |s: &str| s.parse::<f64>().unwrap_or_else(|_| panic!("{l}"));
            (
                f[..n - 3].join(" "),
                num(f[n - 3]),
                num(f[n - 2]),
                num(f[n - 1]),
            )
        })
        .collect();
    let stages: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    let read = |name: &str| format!("read fixtures/conntrack-reject/{name}");
    // The two captures are read on threads of their own, in either order; each is read, then
    // tracked, before the alignment.
    for name in ["agent.pcapng", "softswitch.pcap"] {
        // "read FILE (N live (P parked), peak M)": the connections live when the last frame
        // was read, and of those the ones parked, silent for minutes.
        let r = stages
            .iter()
            .position(|s| {
                s.starts_with(&format!("{} (", read(name))) && s.contains(" parked), peak ")
            })
            .expect("read");
        let t = stages
            .iter()
            .position(|s| *s == format!("tracked fixtures/conntrack-reject/{name}"))
            .expect("tracked");
        assert!(r < t, "{stages:?}");
    }
    assert_eq!(
        &stages[4..],
        ["lined up", "rules", "rendered", "done"],
        "{stages:?}"
    );
    // Time goes forward; a peak is at least what is resident (within the kernel's per-CPU
    // counting, which reads a few pages off).
    for w in rows.windows(2) {
        assert!(w[1].1 >= w[0].1, "{rows:?}");
    }
    for (stage, _, rss, peak) in &rows {
        assert!(*rss > 0.0 && *peak >= *rss - 1.0, "{stage}: {rss} {peak}");
    }
}
