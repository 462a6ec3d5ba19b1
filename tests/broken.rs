//! Hostile input: broken captures, each with the exact behaviour vantage promises (an error
//! naming the file and where it broke, with exit code 2, or the frames that could be read plus a
//! warning), the replay of every input the fuzzers ever crashed on (`fuzz/regressions/`), and a
//! check that no command writes to its input files.
//!
//! The broken files are built here from real fixtures (cut, patched, gzipped) in a temp dir.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use assert_cmd::Command;

use vantage::capture::CaptureReader;
use vantage::pipeline::{track_capture, CaptureFlows};

mod common;
#[path = "../fuzz/harness.rs"]
mod harness;

use common::pcap_records;

const FAST009: &str = "fixtures/corpus/zeek/testing/btest/Traces/tcp/retransmit-fast009.pcap";
const AGENT_NG: &str = "fixtures/conntrack-reject/agent.pcapng";
const SOFTSWITCH: &str = "fixtures/weak-network/softswitch.pcap";
const ABSURD: &str = "fixtures/corpus/suricata-verify/tests/bug-6875-01/fuzz.pcap";
const BAD_NANO: &str = "fixtures/corpus/tcpdump/tests/timestamp_invalid_nano.pcap";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(rel: &str) -> Vec<u8> {
    fs::read(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// A fresh directory for one test.
fn tmp(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("broken")
        .join(name);
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, bytes).unwrap();
    p
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn vantage(args: &[&str]) -> Run {
    let out = Command::cargo_bin("vantage")
        .unwrap()
        .current_dir(root())
        .args(args)
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `vantage flows --format json FILE`: exit code, one JSON value per connection, stderr.
fn flows_json(path: &Path) -> (i32, Vec<serde_json::Value>, String) {
    let r = vantage(&["flows", "--format", "json", path.to_str().unwrap()]);
    let conns = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (r.code, conns, r.stderr)
}

fn read(path: &Path) -> CaptureFlows {
    track_capture(path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()))
}

/// (offset, type, length) of every block of a little-endian pcapng.
fn ng_blocks(b: &[u8]) -> Vec<(usize, u32, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 12 <= b.len() {
        let ty = u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
        let len = u32::from_le_bytes(b[at + 4..at + 8].try_into().unwrap()) as usize;
        out.push((at, ty, len));
        at += len;
    }
    out
}

/// The offset and length of the `n`th Enhanced Packet Block (type 6) among a pcapng file's
/// blocks (`ng_blocks`): the `n` frames before it are the ones a reader gives before it fails.
fn nth_packet_block(blocks: &[(usize, u32, usize)], n: usize) -> (usize, usize) {
    let (at, _, len) = *blocks.iter().filter(|b| b.1 == 6).nth(n).unwrap();
    (at, len)
}

fn le32(v: u32) -> [u8; 4] {
    v.to_le_bytes()
}

// ---------------------------------------------------------------------------------------------
// Not a capture at all.

#[test]
fn empty_file_is_an_error() {
    let d = tmp("empty");
    let p = write(&d, "empty.pcap", b"");
    let r = vantage(&["flows", p.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains(&format!("{}: empty file: not a capture", p.display())),
        "{}",
        r.stderr
    );
}

#[test]
fn wrong_magic_is_an_error_at_byte_0() {
    let d = tmp("magic");
    let mut b = fixture(FAST009);
    b[..4].copy_from_slice(b"ABCD");
    let p = write(&d, "magic.pcap", &b);
    let r = vantage(&["flows", p.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains(&format!(
            "{}: byte 0: unknown magic 0x41424344: not a pcap or pcapng capture",
            p.display()
        )),
        "{}",
        r.stderr
    );
}

#[test]
fn png_renamed_pcap_is_named_as_png() {
    let d = tmp("png");
    // PNG signature, then an IHDR chunk of a 1x1 greyscale image (length, type, data, CRC).
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(b"IHDR\0\0\0\x01\0\0\0\x01\x08\0\0\0\0");
    png.extend_from_slice(&0x3a7e_9b55u32.to_be_bytes());
    let p = write(&d, "photo.pcap", &png);
    let r = vantage(&["flows", p.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("byte 0: unknown magic 0x89504e47 (this is a PNG image)"),
        "{}",
        r.stderr
    );
}

#[test]
fn three_bytes_are_too_short() {
    let d = tmp("short");
    let p = write(&d, "short.pcap", &fixture(FAST009)[..3]);
    let r = vantage(&["flows", p.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("3 bytes: too short to be a capture"),
        "{}",
        r.stderr
    );
}

// ---------------------------------------------------------------------------------------------
// Headers without packets: a valid, empty capture.

#[test]
fn pcap_header_only_is_an_empty_capture() {
    let d = tmp("pcap-header");
    let p = write(&d, "header.pcap", &fixture(FAST009)[..24]);
    let (code, conns, stderr) = flows_json(&p);
    assert_eq!(code, 0, "{stderr}");
    assert!(conns.is_empty());
    assert_eq!(stderr, "");
    let f = read(&p);
    assert_eq!(f.summary.packets, 0);
    assert!(f.summary.warnings.is_empty() && f.error.is_none());
}

#[test]
fn pcapng_section_header_only_is_an_empty_capture() {
    let d = tmp("ng-shb");
    let b = fixture(AGENT_NG);
    let (_, ty, len) = ng_blocks(&b)[0];
    assert_eq!(ty, 0x0A0D_0D0A);
    let p = write(&d, "shb.pcapng", &b[..len]);
    let (code, conns, stderr) = flows_json(&p);
    assert_eq!(code, 0, "{stderr}");
    assert!(conns.is_empty());
    assert_eq!(stderr, "");
    assert_eq!(read(&p).summary.packets, 0);
}

// ---------------------------------------------------------------------------------------------
// Records that lie about their length.

#[test]
fn truncated_last_record_keeps_the_frames_before_and_warns() {
    let d = tmp("truncated");
    let b = fixture(FAST009);
    let recs = pcap_records(&b);
    let (last_at, _) = *recs.last().unwrap();
    let p = write(&d, "cut.pcap", &b[..b.len() - 10]);
    let (code, conns, stderr) = flows_json(&p);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "vantage: warning: {}: frame {} at byte {last_at}: ",
            p.display(),
            recs.len()
        )) && stderr.contains("the last record is cut short")
            && stderr.contains(&format!("kept the {} frames before it", recs.len() - 1)),
        "{stderr}"
    );
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0]["last_frame"], (recs.len() - 1) as u64);
    assert_eq!(read(&p).summary.packets, recs.len() as u64 - 1);
}

/// A record in the middle claiming more bytes than the rest of the file holds (but a plausible
/// amount) cannot be told from a capture cut short inside that record: the frames before it are
/// kept and a warning names it; the rest of the file is lost.
#[test]
fn record_length_past_the_end_is_a_cut_short_file() {
    let d = tmp("past-end");
    let mut b = fixture(FAST009);
    let recs = pcap_records(&b);
    let (at, _) = recs[19];
    b[at + 8..at + 12].copy_from_slice(&le32(60_000));
    let p = write(&d, "past-end.pcap", &b);
    let (code, conns, stderr) = flows_json(&p);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(&format!("frame 20 at byte {at}: "))
            && stderr.contains("the last record is cut short")
            && stderr.contains("kept the 19 frames before it"),
        "{stderr}"
    );
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0]["last_frame"], 19);
}

#[test]
fn absurd_record_length_is_an_error_after_the_frames_before_it() {
    let p = root().join(ABSURD);
    let r = vantage(&["flows", p.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains(&format!(
            "{}: frame 2 at byte 228: record claims 1409179664 bytes, more than any capture tool writes",
            p.display()
        )),
        "{}",
        r.stderr
    );
    let f = read(&p);
    assert_eq!(
        f.summary.packets, 1,
        "the frame before the broken record is kept"
    );
    assert!(f.error.is_some());
}

/// Frames cut by a snaplen shorter than their headers are counted as undecodable, with a
/// warning naming the first one; nothing is made up from the missing bytes.
#[test]
fn snaplen_smaller_than_the_headers() {
    let d = tmp("snaplen");
    let b = fixture(FAST009);
    for snap in [20u32, 40] {
        let mut out = b[..24].to_vec();
        out[16..20].copy_from_slice(&le32(snap));
        for (at, len) in pcap_records(&b) {
            let keep = (len - 16).min(snap as usize);
            out.extend_from_slice(&b[at..at + 8]);
            out.extend_from_slice(&le32(keep as u32));
            out.extend_from_slice(&b[at + 12..at + 16]);
            out.extend_from_slice(&b[at + 16..at + 16 + keep]);
        }
        let p = write(&d, &format!("snap{snap}.pcap"), &out);
        let (code, conns, stderr) = flows_json(&p);
        assert_eq!(code, 0, "{stderr}");
        assert!(
            conns.is_empty(),
            "snaplen {snap}: no TCP header, no connection"
        );
        let f = read(&p);
        assert_eq!(f.summary.packets, 39);
        assert_eq!(f.summary.malformed, 39, "snaplen {snap}");
        assert!(
            stderr.contains("39 frames could not be decoded; the first is frame 1 at byte 24: "),
            "snaplen {snap}: {stderr}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Odd timestamps.

#[test]
fn timestamps_going_backwards_warn_and_keep_everything() {
    let d = tmp("backwards");
    let mut b = fixture(FAST009);
    let recs = pcap_records(&b);
    // Swap the timestamps of frames 5 and 6.
    let (a, c) = (recs[4].0, recs[5].0);
    let ta: [u8; 8] = b[a..a + 8].try_into().unwrap();
    let tc: [u8; 8] = b[c..c + 8].try_into().unwrap();
    b[a..a + 8].copy_from_slice(&tc);
    b[c..c + 8].copy_from_slice(&ta);
    let p = write(&d, "backwards.pcap", &b);
    let (code, conns, stderr) = flows_json(&p);
    assert_eq!(code, 0);
    assert!(
        stderr.contains("1 frames have a timestamp earlier than a frame before them"),
        "{stderr}"
    );
    assert_eq!(conns.len(), 1);
    assert_eq!(
        conns[0]["orig_pkts"].as_u64().unwrap() + conns[0]["resp_pkts"].as_u64().unwrap(),
        39
    );
}

#[test]
fn invalid_nanoseconds_are_carried_into_seconds_with_a_warning() {
    let p = root().join(BAD_NANO);
    let (code, conns, stderr) = flows_json(&p);
    assert_eq!(code, 0);
    assert!(
        stderr.contains("frame 2 at byte 116: invalid sub-second field 1000000000 (≥ 10^9 ns); carried into seconds")
            && stderr.contains("frame 3 at byte 208: invalid sub-second field 2147483648"),
        "{stderr}"
    );
    assert_eq!(conns.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// The same packet captured twice.

/// Decision: vantage keeps duplicate frames (frame numbers must stay Wireshark's), but never
/// silently: a frame byte-identical to one of the 8 frames before it, within 1 ms, is counted
/// as a duplicate, and one warning says how many there were, where the first is, and that the
/// packet and retransmission counts include them.
#[test]
fn duplicate_records_in_a_pcap_are_warned_about() {
    let d = tmp("dup-pcap");
    let b = fixture(FAST009);
    let mut out = b[..24].to_vec();
    for (at, len) in pcap_records(&b) {
        out.extend_from_slice(&b[at..at + len]);
        out.extend_from_slice(&b[at..at + len]);
    }
    let p = write(&d, "twice.pcap", &out);
    let (code, conns, stderr) = flows_json(&p);
    assert_eq!(code, 0);
    assert!(
        stderr.contains(
            "39 frames are byte-identical copies of a frame just before them (within 1 ms)"
        ) && stderr.contains("the first is frame 2 at byte 102, a copy of frame 1")
            && stderr.contains("retransmission"),
        "{stderr}"
    );
    assert_eq!(conns.len(), 1);
    let mut r = CaptureReader::open(&p).unwrap();
    while r.next_frame().unwrap().is_some() {}
    assert_eq!(r.duplicates, 39);
    // The original file has none.
    let mut r = CaptureReader::open(&root().join(FAST009)).unwrap();
    while r.next_frame().unwrap().is_some() {}
    assert_eq!(r.duplicates, 0);
    assert!(r.warnings.is_empty());
}

/// The same EPB on two interfaces of one pcapng (a capture on `any` plus the bridge port).
#[test]
fn duplicate_packets_on_two_pcapng_interfaces_are_warned_about() {
    let d = tmp("dup-ng");
    let b = fixture(AGENT_NG);
    let mut out = Vec::new();
    let mut epbs = 0;
    for (at, ty, len) in ng_blocks(&b) {
        let block = &b[at..at + len];
        out.extend_from_slice(block);
        match ty {
            // A second interface, the same as the first.
            1 => out.extend_from_slice(block),
            6 => {
                let mut copy = block.to_vec();
                copy[8..12].copy_from_slice(&le32(1));
                out.extend_from_slice(&copy);
                epbs += 1;
            }
            _ => {}
        }
    }
    let p = write(&d, "two-interfaces.pcapng", &out);
    let (code, _, stderr) = flows_json(&p);
    assert_eq!(code, 0);
    assert!(
        stderr.contains(&format!("{epbs} frames are byte-identical copies")),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// Formats we do not understand.

#[test]
fn unknown_link_type_is_an_error() {
    let d = tmp("linktype");
    let mut b = fixture(FAST009);
    b[20..24].copy_from_slice(&le32(147));
    let p = write(&d, "dlt147.pcap", &b);
    let r = vantage(&["flows", p.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains(&format!(
            "{}: frame 1 at byte 0: unsupported link type 147 (LINKTYPE_147)",
            p.display()
        )),
        "{}",
        r.stderr
    );
}

#[test]
fn pcapng_unknown_block_types_are_skipped() {
    let d = tmp("ng-unknown");
    let b = fixture(AGENT_NG);
    let unknown = |ty: u32| {
        let mut u = le32(ty).to_vec();
        u.extend_from_slice(&le32(20));
        u.extend_from_slice(b"\xde\xad\xbe\xef\x01\x02\x03\x04");
        u.extend_from_slice(&le32(20));
        u
    };
    let mut out = Vec::new();
    for (i, (at, _, len)) in ng_blocks(&b).into_iter().enumerate() {
        out.extend_from_slice(&b[at..at + len]);
        if i == 0 || i == 5 {
            // An unassigned type, and one from the local-use range (high bit set).
            out.extend_from_slice(&unknown(0x0000_0BAD));
            out.extend_from_slice(&unknown(0x8000_1234));
        }
    }
    let p = write(&d, "unknown-blocks.pcapng", &out);
    let (code, conns, stderr) = flows_json(&p);
    assert_eq!(code, 0, "{stderr}");
    let (_, orig, _) = flows_json(&root().join(AGENT_NG));
    assert_eq!(conns.len(), orig.len());
    for (a, o) in conns.iter().zip(&orig) {
        for k in [
            "ts",
            "id.orig_p",
            "conn_state",
            "history",
            "orig_bytes",
            "resp_bytes",
            "orig_pkts",
        ] {
            assert_eq!(a[k], o[k], "{k}");
        }
    }
}

/// `flows` on a capture broken at byte `at`, after `frames_before` good frames: exit 2, an
/// error naming the file, the next frame and the byte (then `what`), and the frames before it
/// read.
fn assert_error_after_frames(p: &Path, frames_before: usize, at: usize, what: &str) {
    let r = vantage(&["flows", p.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "{}: frame {} at byte {at}: {what}",
            p.display(),
            frames_before + 1
        )),
        "{}",
        r.stderr
    );
    assert_eq!(read(p).summary.packets, frames_before as u64);
}

#[test]
fn pcapng_block_with_a_bad_length_is_an_error_naming_its_offset() {
    let d = tmp("ng-badlen");
    let b = fixture(AGENT_NG);
    let frames_before = 3;
    let (at, len) = nth_packet_block(&ng_blocks(&b), frames_before);
    // The leading length no longer matches the trailing one.
    let mut bad = b.clone();
    bad[at + 4..at + 8].copy_from_slice(&le32(len as u32 + 4));
    let p = write(&d, "badlen.pcapng", &bad);
    assert_error_after_frames(&p, frames_before, at, "");

    // A section header whose length is too small to be one.
    let mut bad = b.clone();
    bad[4..8].copy_from_slice(&le32(12));
    let p = write(&d, "badshb.pcapng", &bad);
    let r = vantage(&["flows", p.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("{}: byte 0: ", p.display())),
        "{}",
        r.stderr
    );
}

/// A Process Information Block (type 0x80000001) shorter than the 12 bytes of type and lengths
/// every block has: pcap-parser 0.17 subtracts 12 from its length unchecked, which panicked in
/// a build with overflow checks (as `cargo test` builds this binary; the `capture` fuzz target
/// found it) and read as a capture cut short without. It is an error naming its offset, after
/// the frames before it; a well-formed one is skipped like any block we do not use.
#[test]
fn pcapng_process_information_block_shorter_than_its_header_is_an_error() {
    let d = tmp("ng-pib");
    let b = fixture(AGENT_NG);
    let frames_before = 2;
    let (at, _) = nth_packet_block(&ng_blocks(&b), frames_before);
    let pib = |len: u32, body: &[u8]| {
        let mut v = le32(0x8000_0001).to_vec();
        v.extend_from_slice(&le32(len));
        v.extend_from_slice(body);
        v
    };
    for (len, body) in [(7, &b""[..]), (12, &le32(12)[..])] {
        let mut bad = b[..at].to_vec();
        bad.extend_from_slice(&pib(len, body));
        bad.extend_from_slice(&b[at..]);
        let p = write(&d, &format!("pib{len}.pcapng"), &bad);
        let what = format!("block of type 0x80000001 says it is {len} bytes long");
        assert_error_after_frames(&p, frames_before, at, &what);
    }
    // Type, length, process id 42, no options, length again: skipped.
    let mut good = b[..at].to_vec();
    good.extend_from_slice(&pib(16, &[&le32(42)[..], &le32(16)[..]].concat()));
    good.extend_from_slice(&b[at..]);
    let p = write(&d, "pib-ok.pcapng", &good);
    let (code, conns, stderr) = flows_json(&p);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(conns.len(), flows_json(&root().join(AGENT_NG)).1.len());
    assert_eq!(
        read(&p).summary.packets,
        read(&root().join(AGENT_NG)).summary.packets
    );
}

// ---------------------------------------------------------------------------------------------
// Compressed captures.

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn gzip_corrupt_half_way_names_the_file_and_keeps_the_frames_before() {
    let d = tmp("gz");
    let plain = fixture(SOFTSWITCH);
    let all = read(&root().join(SOFTSWITCH)).summary.packets;
    let mut gz = gzip(&plain);
    let half = gz.len() / 2;
    for b in &mut gz[half..] {
        *b = 0;
    }
    let p = write(&d, "corrupt.pcap.gz", &gz);
    let f = read(&p);
    let kept = f.summary.packets;
    assert!(kept > 0 && kept < all, "kept {kept} of {all}");
    let e = format!("{:#}", f.error.expect("an error"));
    assert!(
        e.starts_with(&format!("{}: frame {} at byte ", p.display(), kept + 1))
            && e.contains(
                "of the decompressed data: read error: the gzip data is corrupt or cut short here"
            )
            && e.contains(&format!("the {kept} frames before it were read")),
        "{e}"
    );
    let r = vantage(&["flows", "--format", "json", p.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains(&e), "{}", r.stderr);
    assert!(
        r.stdout.lines().count() > 0,
        "connections read before the damage are printed"
    );

    // Intact, the same file reads to its end.
    let p = write(&d, "good.pcap.gz", &gzip(&plain));
    let f = read(&p);
    assert!(f.error.is_none());
    assert_eq!(f.summary.packets, all);
    assert!(f.summary.gzip);
}

// ---------------------------------------------------------------------------------------------
// Fuzz regressions.

/// Every input a fuzz target ever crashed on, replayed through the same code path
/// (`fuzz/harness.rs`), which must neither panic nor break its invariants.
#[test]
fn fuzz_regressions_replay() {
    let mut replayed = 0;
    for (target, run) in harness::TARGETS {
        let dir = root().join("fuzz/regressions").join(target);
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files {
            let bytes = fs::read(&f).unwrap();
            let r = std::panic::catch_unwind(|| run(&bytes));
            assert!(r.is_ok(), "{target}: {} panics again", f.display());
            replayed += 1;
        }
    }
    eprintln!("replayed {replayed} fuzz regression inputs");
}

/// The fuzz seeds that are committed fixtures also go through every target (a quick smoke test
/// of the harness itself, so that it keeps compiling and running in CI).
#[test]
fn fuzz_harness_runs_on_fixtures() {
    for rel in [FAST009, AGENT_NG, ABSURD, BAD_NANO] {
        let b = fixture(rel);
        for (_, run) in harness::TARGETS {
            run(&b);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Nothing writes to input files.

#[test]
fn no_command_writes_to_its_inputs() {
    let d = tmp("readonly");
    let names = ["agent.pcapng", "softswitch.pcap", "gateway.pcap"];
    let src = root().join("fixtures/conntrack-reject");
    let mut before = Vec::new();
    for n in names {
        let p = d.join(n);
        fs::copy(src.join(n), &p).unwrap();
        // Back-date the copies so that a rewrite within the same second would still show.
        let f = fs::File::options().write(true).open(&p).unwrap();
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
        f.set_modified(old).unwrap();
        drop(f);
        before.push((
            p.clone(),
            fs::read(&p).unwrap(),
            fs::metadata(&p).unwrap().modified().unwrap(),
        ));
    }
    // A gzip copy too, which is read through another path.
    let gz = d.join("agent2.pcapng.gz");
    fs::write(&gz, gzip(&fs::read(d.join("agent.pcapng")).unwrap())).unwrap();
    before.push((
        gz.clone(),
        fs::read(&gz).unwrap(),
        fs::metadata(&gz).unwrap().modified().unwrap(),
    ));

    let spec = |n: &str| format!("{}={}", n.split('.').next().unwrap(), d.join(n).display());
    let specs: Vec<String> = names.iter().map(|n| spec(n)).collect();
    let specs: Vec<&str> = specs.iter().map(|s| s.as_str()).collect();
    let out = d.join("report.json");
    let pcapng = d.join("l1.pcapng");
    let gz_s = gz.to_str().unwrap();
    let mut runs: Vec<Vec<String>> = vec![
        vec!["flows".into(), d.join("agent.pcapng").display().to_string()],
        vec![
            "flows".into(),
            "--format".into(),
            "json".into(),
            gz_s.into(),
        ],
        vec!["align".into()],
        vec!["align".into(), "--format".into(), "json".into()],
        vec!["diagnose".into()],
        vec![
            "diagnose".into(),
            "--format".into(),
            "json".into(),
            "-o".into(),
            out.display().to_string(),
        ],
        vec!["timeline".into(), "--conn".into(), "L1".into()],
        vec![
            "extract".into(),
            "--conn".into(),
            "L1".into(),
            "-o".into(),
            pcapng.display().to_string(),
        ],
    ];
    for r in runs.iter_mut().skip(2) {
        r.extend(specs.iter().map(|s| s.to_string()));
    }
    for args in &runs {
        let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let r = vantage(&args);
        assert!(r.code == 0 || r.code == 1, "{args:?}: {}", r.stderr);
    }
    for (p, bytes, mtime) in before {
        assert_eq!(fs::read(&p).unwrap(), bytes, "{} changed", p.display());
        assert_eq!(
            fs::metadata(&p).unwrap().modified().unwrap(),
            mtime,
            "{} was written to",
            p.display()
        );
    }
    // And nothing else appeared next to them but the outputs asked for.
    let mut files: Vec<String> = fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "agent.pcapng",
            "agent2.pcapng.gz",
            "gateway.pcap",
            "l1.pcapng",
            "report.json",
            "softswitch.pcap"
        ]
    );
}
