//! Two captures of the same traffic either side of a NAT, written by `examples/synth.rs` with
//! its ground truth (the clock offset, the middlebox's idle timeout, the connections it reset),
//! lined up and diagnosed: alignment at a scale the lab's captures do not reach (a thousand
//! agents whose heartbeats share payloads, half of them joined mid-stream), checked against
//! what the generator did.

use std::path::PathBuf;

use vantage::align::{align, best_candidate_sets, AlignOptions, MatchMethod, Vantage};
use vantage::diagnose::rules::FILTER_CONNECTIONS;
use vantage::diagnose::{diagnose_with, FindingKind, Lang, MAX_EVIDENCE};
use vantage::pipeline::{read_vantages_with, VantageSpec};
use vantage::tcp::{Connection, TrackerOptions};

#[allow(dead_code, clippy::all)]
#[path = "../examples/synth.rs"]
mod synth;

/// A synth NAT pair (`size` bytes a side, `agents`, `seed`) read as vantages "a" and "b",
/// with the samples the alignment reads, and what the generator did; its files removed.
fn read_pair(tag: &str, size: u64, agents: u32, seed: u64) -> (Vec<Vantage>, synth::PairTruth) {
    let dir = std::env::temp_dir().join(format!("vantage-synth-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (a, b): (PathBuf, PathBuf) = (dir.join("a.pcap"), dir.join("b.pcap"));
    let truth = synth::generate_pair(&a, &b, size, agents, seed).unwrap();
    let specs = [
        VantageSpec {
            name: "a".into(),
            path: a,
        },
        VantageSpec {
            name: "b".into(),
            path: b,
        },
    ];
    let opts = TrackerOptions {
        keep_samples: true,
        ..TrackerOptions::default()
    };
    let (vantages, errors) = read_vantages_with(&specs, opts);
    std::fs::remove_dir_all(&dir).ok();
    assert!(errors.is_empty(), "{errors:?}");
    (vantages, truth)
}

/// The small NAT pair two tests compare candidates on (3 MB a side, 800 agents, seed 7),
/// generated and read once for both.
fn small_pair() -> (&'static [Box<Connection>], &'static [Box<Connection>]) {
    static PAIR: std::sync::OnceLock<Vec<Vantage>> = std::sync::OnceLock::new();
    let v = PAIR.get_or_init(|| read_pair("small", 3_000_000, 800, 7).0);
    (&v[0].flows.connections, &v[1].flows.connections)
}

#[test]
fn a_nat_pair_lines_up_and_its_idle_timeout_is_found() {
    let (vantages, truth) = read_pair("nat", 4_000_000, 1000, 3);
    assert!(truth.resets >= 5, "the synth should reset some connections");
    let al = align(
        vantages,
        // Two threads: the comparison's parts and their merge are under test too.
        &AlignOptions {
            threads: 2,
            ..AlignOptions::default()
        },
    );

    // The clock offset, from the packets both saw.
    let off = al
        .clock_offsets
        .iter()
        .find(|o| o.vantage == "b")
        .expect("b's offset");
    assert!(
        (off.offset_s - truth.offset_s).abs() < 0.01,
        "offset {} s, the synth's {} s",
        off.offset_s,
        truth.offset_s
    );

    // Nearly every connection is seen on both sides and lined up as one NAT'd connection
    // (the same ISNs): none as two legs of a proxy, though half were joined mid-stream.
    let both: Vec<_> = al
        .connections
        .iter()
        .filter(|l| l.legs.len() == 2)
        .collect();
    assert!(
        both.len() as f64 >= 0.97 * truth.connections as f64,
        "{} of {} connections lined up",
        both.len(),
        truth.connections
    );
    for l in &both {
        assert_eq!(l.matched.method, MatchMethod::NatIsn, "{}", l.id);
    }
    assert!(al
        .connections
        .iter()
        .all(|l| l.matched.method != MatchMethod::L7Proxy));

    // The middlebox's resets, and its idle timeout bracketed around the synth's.
    let d = diagnose_with(&al, MAX_EVIDENCE, Lang::En);
    let resets: usize = d
        .findings
        .iter()
        .filter(|f| f.kind == FindingKind::MiddleboxReset)
        .map(|f| f.connections.len())
        .sum();
    assert_eq!(resets as u64, truth.resets, "{:#?}", d.verdict);
    let idle = d
        .findings
        .iter()
        .find(|f| f.kind == FindingKind::IdleTimeout)
        .expect("an idle timeout finding");
    let (lo, hi) = (idle.numbers.lower_s.unwrap(), idle.numbers.upper_s.unwrap());
    assert!(
        lo <= truth.idle_timeout_s && truth.idle_timeout_s <= hi,
        "idle timeout between {lo} and {hi} s, the synth's {} s",
        truth.idle_timeout_s
    );
    assert_eq!(d.verdict.kind, "middlebox_reset");

    // Findings that group many connections give filters one can paste into Wireshark: the
    // first few conversations whole, and the frames the evidence cites (the retransmissions
    // of every connection were a filter of 85 KB on the 100 MB pair).
    let weak = d
        .findings
        .iter()
        .find(|f| f.kind == FindingKind::WeakNetwork)
        .expect("the synth's retransmissions are a weak_network finding");
    assert!(weak.connections.len() > FILTER_CONNECTIONS);
    for f in &d.findings {
        for df in &f.display_filters {
            let conversations = df.filter.matches(".port==").count() / 2;
            assert!(
                conversations <= FILTER_CONNECTIONS,
                "{:?}: {conversations} conversations in {}",
                f.kind,
                df.filter
            );
            let frames = df.filter.matches("frame.number == ").count();
            let cited = f
                .evidence
                .iter()
                .filter(|e| e.vantage == df.vantage)
                .count();
            assert!(
                frames <= cited,
                "{:?}: {frames} frames, {cited} cited",
                f.kind
            );
        }
    }
}

/// The alignment does not compare two connections whose match could be neither's best (an
/// ISN match ranks above any content match): the pairs it leaves out must not change what it
/// finds. Held on a NAT pair where half the connections were joined mid-stream (no ISN match:
/// their best is found by content), both ways round, on one thread and on two.
#[test]
fn pruned_comparisons_find_the_same_best_candidates() {
    let (ca, cb) = small_pair();
    assert!(ca.len() > 512, "two threads need two parts: {}", ca.len());
    // Whole, and with the first or last 100 of one side gone: their partners are left with
    // content matches alone, against connections whose ISN match ranks higher (the pairs
    // whose comparison waits for the partner's best).
    let (na, nb) = (ca.len(), cb.len());
    let cases = [
        (ca, cb),
        (cb, ca),
        (&ca[..na - 100], cb),
        (&ca[100..], cb),
        (ca, &cb[..nb - 100]),
        (&cb[100..], ca),
    ];
    for (ci, cj) in cases {
        let (all_i, all_j, none) = best_candidate_sets(ci, cj, 1, false, None);
        assert_eq!(none, 0);
        // Nearly every connection has a best, but those whose partner was cut off: found
        // through the heartbeat alone, they had one until session 30 (`PER_PAYLOAD`).
        assert!(all_i.len() as f64 > 0.85 * ci.len() as f64);
        // As many pairs left waiting as they need, and at most 16: the list full, sifted, and
        // the pairs past it compared at once.
        for (threads, waiting) in [(1, None), (2, None), (1, Some(16)), (2, Some(16))] {
            let (i, j, skipped) = best_candidate_sets(ci, cj, threads, true, waiting);
            assert!(
                skipped > ci.len(),
                "{skipped} pairs left out of {}",
                ci.len()
            );
            assert_eq!(i, all_i, "threads {threads}, waiting {waiting:?}");
            assert_eq!(j, all_j, "threads {threads}, waiting {waiting:?}");
        }
    }
}

/// Which capture comes first changes no candidate: each side's best candidates are the same
/// whichever side looks them up. A payload more connections carried than
/// `PayloadIndex::PER_PAYLOAD` is looked up from neither; when the first 64 of the second
/// capture were kept, a pair sharing only a heartbeat was found from one side and not from the
/// other (2 of the 100 MB NAT pair's 13 311 connections `ambiguous` one way round, `unmatched`
/// the other; thousands when a small capture met a large one). Held on the NAT pair, whole and
/// cut down to a small capture beside the other.
#[test]
fn the_order_of_two_captures_changes_no_candidate() {
    let (ca, cb) = small_pair();
    let cases = [(ca, cb), (&ca[..40], cb), (ca, &cb[300..340])];
    for (n, (ci, cj)) in cases.into_iter().enumerate() {
        let (i, j, _) = best_candidate_sets(ci, cj, 2, true, None);
        let (j_back, i_back, _) = best_candidate_sets(cj, ci, 2, true, None);
        assert!(!i.is_empty(), "case {n}: the small side has matches");
        assert_eq!(i, i_back, "case {n}: the first capture's bests");
        assert_eq!(j, j_back, "case {n}: the second capture's bests");
    }
}
