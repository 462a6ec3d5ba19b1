//! Once connections are many, the reader holds a few frames back while the CPU fetches their
//! connections' state into the cache (`pipeline::Lookahead`, from
//! `TrackerOptions::prefetch_from` live connections). Held back or not, every capture under
//! `fixtures/` gives the same connections, summary and warnings, kept or streamed, on one
//! thread and on two. The fixtures are small, so the threshold is forced to 0 (every frame
//! held back) against `usize::MAX` (none).

mod common;

use vantage::pipeline::{stream_capture, track_capture_with};
use vantage::report::flow_json_line;
use vantage::tcp::TrackerOptions;

fn options(prefetch_from: usize, shards: usize) -> TrackerOptions {
    TrackerOptions {
        prefetch_from,
        shards,
        ..TrackerOptions::default()
    }
}

/// Every connection as `flows --format json` prints it, the capture's summary and its error.
fn kept(path: &std::path::Path, opts: TrackerOptions) -> (Vec<String>, String, Option<String>) {
    let flows = track_capture_with(path, opts).expect("opens");
    (
        flows
            .connections
            .iter()
            .map(|c| flow_json_line(c))
            .collect(),
        serde_json::to_string(&flows.summary).expect("serializable"),
        flows.error.map(|e| format!("{e:#}")),
    )
}

/// Every connection in the order it was handed over, with the capture time it was.
fn streamed(path: &std::path::Path, opts: TrackerOptions) -> (Vec<String>, String) {
    let mut out = Vec::new();
    let run = stream_capture(path, opts, None, |ts, c| {
        out.push(format!("{} {}", ts.0, flow_json_line(&c)))
    })
    .expect("opens");
    (
        out,
        serde_json::to_string(&run.summary).expect("serializable"),
    )
}

#[test]
fn holding_frames_back_changes_nothing() {
    let mut connections = 0;
    for path in common::fixture_captures() {
        for shards in [1, 2] {
            let what = format!("{} ({shards} threads)", path.display());
            let direct = kept(&path, options(usize::MAX, shards));
            let held = kept(&path, options(0, shards));
            assert_eq!(direct, held, "{what}");
            connections += held.0.len();
            assert_eq!(
                streamed(&path, options(usize::MAX, shards)),
                streamed(&path, options(0, shards)),
                "{what}, streamed"
            );
        }
    }
    // The comparison had something to compare.
    assert!(connections > 400, "{connections}");
}
