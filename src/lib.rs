//! vantage: explains why long-lived TCP and WebSocket connections die, from captures taken at
//! several points of their path at once.
//!
//! The pipeline reads top to bottom, one module per stage, each with a plain data type at its
//! boundary:
//!
//! ```text
//! capture   (files -> Frame)                      capture.rs
//! decode    (Frame -> Packet)                     decode.rs
//! tcp       (Packet -> Connection)                tcp/
//! app       (stream bytes -> AppSummary)          app/     (run by tcp, per connection)
//! align     (Connections of each capture -> Alignment)  align.rs
//! diagnose  (Alignment -> Diagnosis: findings, verdict) diagnose/
//! report    (Diagnosis, Connections -> table, JSON, Markdown, HTML)  report/
//! ```
//!
//! `pipeline` drives the first stages over one capture, streaming (`stream_capture`, one thread
//! per file in `merge_streams`) or collecting (`track_capture`); `cli` is the command line.

pub mod align;
pub mod app;
pub mod boxed_list;
pub mod capture;
pub mod cli;
pub mod decode;
pub mod diagnose;
pub mod extract;
#[cfg(feature = "libpcap")]
pub mod filter;
pub mod i18n;
#[cfg(feature = "libpcap")]
pub mod live;
pub mod pcapng_writer;
pub mod pipeline;
pub mod probe;
pub mod progress;
pub mod report;
pub mod short_str;
pub mod stats;
pub mod tcp;
pub mod varint;

/// Helpers for the tests, the unit tests and `tests/` alike (one walker of `fixtures/`, where
/// each had its own). Not part of the API.
#[doc(hidden)]
pub mod testing {
    /// Every capture file under `fixtures/` (the lab's and the public corpus), sorted.
    pub fn fixture_captures() -> Vec<std::path::PathBuf> {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| {
                    ["pcap", "pcapng", "cap", "trace", "gz"].contains(&x.to_str().unwrap_or(""))
                }) {
                    out.push(p);
                }
            }
        }
        let mut files = Vec::new();
        walk(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures"),
            &mut files,
        );
        files.sort();
        files
    }
}
