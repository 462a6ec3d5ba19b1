//! Shared input for the benches: a capture made by `examples/synth.rs` (included here as a
//! module), cached under `target/bench-data/`, and its frames loaded into memory.
//!
//! `VANTAGE_BENCH_PCAP=FILE` benches another capture instead (any pcap or pcapng vantage reads).

#![allow(dead_code)]

use std::path::PathBuf;

use vantage::capture::{CaptureReader, Frame, LinkType, Timestamp};

#[allow(dead_code, clippy::all)]
#[path = "../../examples/synth.rs"]
mod synth;

#[allow(unused_imports)]
pub use synth::ws_frame;

/// Size and connections of the generated capture: big enough that the connection table does
/// not fit in L2, small enough that one iteration stays well under a second.
pub const BENCH_BYTES: u64 = 16_000_000;
pub const BENCH_CONNECTIONS: u32 = 4_000;

/// The capture to bench: `VANTAGE_BENCH_PCAP`, or a synth capture made once.
pub fn capture() -> PathBuf {
    if let Some(p) = std::env::var_os("VANTAGE_BENCH_PCAP") {
        return PathBuf::from(p);
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    std::fs::create_dir_all(&dir).expect("create target/bench-data");
    let path = dir.join(format!(
        "synth-{}B-{}c-seed1.pcap",
        BENCH_BYTES, BENCH_CONNECTIONS
    ));
    if !path.exists() {
        let tmp = path.with_extension("tmp");
        synth::generate(&tmp, BENCH_BYTES, BENCH_CONNECTIONS, 1).expect("synth capture");
        std::fs::rename(&tmp, &path).expect("rename synth capture");
    }
    path
}

/// Two captures of the same traffic either side of a NAT (`synth --vantages 2`), made once.
pub fn capture_pair() -> (PathBuf, PathBuf) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    std::fs::create_dir_all(&dir).expect("create target/bench-data");
    let name = |side: &str| {
        dir.join(format!(
            "synth-{}B-{}c-seed1-{side}.pcap",
            BENCH_BYTES, BENCH_CONNECTIONS
        ))
    };
    let (a, b) = (name("a"), name("b"));
    if !a.exists() || !b.exists() {
        let (ta, tb) = (a.with_extension("tmp"), b.with_extension("tmp"));
        synth::generate_pair(&ta, &tb, BENCH_BYTES, BENCH_CONNECTIONS, 1).expect("synth pair");
        std::fs::rename(&tb, &b).expect("rename synth capture");
        std::fs::rename(&ta, &a).expect("rename synth capture");
    }
    (a, b)
}

/// A frame copied out of the reader's window.
pub struct OwnedFrame {
    pub number: u64,
    pub ts: Timestamp,
    pub link: LinkType,
    pub orig_len: u32,
    pub offset: u64,
    pub data: Vec<u8>,
}

impl OwnedFrame {
    pub fn frame(&self) -> Frame<'_> {
        Frame {
            number: self.number,
            ts: self.ts,
            link: self.link,
            interface: 0,
            orig_len: self.orig_len,
            offset: self.offset,
            data: &self.data,
        }
    }
}

/// Every frame of `capture()`, in memory, and the file's size.
pub fn frames() -> (Vec<OwnedFrame>, u64) {
    let path = capture();
    let size = std::fs::metadata(&path).expect("capture size").len();
    let mut r = CaptureReader::open(&path).expect("open capture");
    let mut out = Vec::new();
    while let Some(f) = r.next_frame().expect("read capture") {
        out.push(OwnedFrame {
            number: f.number,
            ts: f.ts,
            link: f.link,
            orig_len: f.orig_len,
            offset: f.offset,
            data: f.data.to_vec(),
        });
    }
    (out, size)
}
