//! A one-capture diagnosis keeps whole only the connections a rule may end, and a digest of
//! the others (`TrackerOptions::digest`, `rules::kept_as`). On every capture under
//! `fixtures/`, its reports (JSON, text) are the same byte for byte as with every connection
//! kept whole, on one thread and on two, and with `--max-summaries` cutting the list. A rule
//! that read a digest's connection whole would panic here (`Alignment::connection`).

mod common;

use vantage::align::{align, AlignOptions, Alignment};
use vantage::diagnose::{diagnose_with, rules, FindingKind, Lang, MAX_EVIDENCE};
use vantage::pipeline::{read_vantages_with, VantageSpec};
use vantage::report::{diagnose_json, diagnose_text};
use vantage::tcp::TrackerOptions;

/// What `vantage diagnose FILE` keeps, with or without digests.
fn options(digest: bool, shards: usize, max_summaries: usize) -> TrackerOptions {
    TrackerOptions {
        keep_samples: false,
        timeline: false,
        http_heads: false,
        app_details: false,
        shards,
        max_summaries,
        digest: digest.then_some(rules::kept_as as _),
        ..TrackerOptions::default()
    }
}

fn lined_up(path: &std::path::Path, opts: TrackerOptions) -> Alignment {
    let spec = VantageSpec {
        name: "v".into(),
        path: path.to_path_buf(),
    };
    let (vantages, _errors) = read_vantages_with(&[spec], opts);
    align(vantages, &AlignOptions::default())
}

fn reports(al: &Alignment) -> (String, String) {
    let d = diagnose_with(al, MAX_EVIDENCE, Lang::En);
    (diagnose_json(&d), diagnose_text(&d, al))
}

/// A one-capture diagnosis makes its lined-up connections as they are read, from the digests
/// it shares (`align::Lines`): the same list, in the same order, with the same ids, as when
/// they are made once, as several captures' are; the same reports; and each found by its id.
#[test]
fn lined_up_as_read_is_lined_up_as_made() {
    let (mut lined, mut from_digests) = (0, 0);
    for path in common::fixture_captures() {
        for (shards, digest, offset) in [(1, true, None), (2, true, None), (1, false, Some(1.5))] {
            let read = |shards| {
                let spec = VantageSpec {
                    name: "v".into(),
                    path: path.to_path_buf(),
                };
                read_vantages_with(&[spec], options(digest, shards, 1_000_000)).0
            };
            let opts = AlignOptions {
                offsets: offset.map(|o| ("v".to_string(), o)).into_iter().collect(),
                ..AlignOptions::default()
            };
            let as_read = align(read(shards), &opts);
            let made = vantage::align::align_made(read(shards), &opts);
            let what = format!("{} ({shards} threads, digests {digest})", path.display());
            let json = |al: &Alignment| serde_json::to_string(&*al.connections).unwrap();
            assert_eq!(json(&as_read), json(&made), "{what}");
            assert_eq!(reports(&as_read), reports(&made), "{what}");
            for (k, l) in made.connections.iter().enumerate() {
                let got = as_read.connections.by_id(&l.id).expect("found by id");
                assert_eq!(format!("{:?}", *got), format!("{:?}", *l), "{what}");
                assert_eq!(got.id.as_str(), format!("L{}", k + 1), "{what}");
            }
            assert!(as_read.connections.by_id("L0").is_none());
            let past = format!("L{}", made.connections.len() + 1);
            assert!(as_read.connections.by_id(&past).is_none());
            lined += made.connections.len();
            from_digests += as_read.vantages[0].flows.digests.len();
        }
    }
    // Every fixture's connections, most of them made from digests.
    assert!(lined > 600 && from_digests > 300, "{lined} {from_digests}");
}

#[test]
fn digests_change_no_report() {
    let (mut digests, mut deaths_beside_digests, mut kept_on_disk) = (0, 0, 0);
    for path in common::fixture_captures() {
        for (shards, max_summaries) in [(1, 1_000_000), (2, 1_000_000), (1, 7), (2, 7)] {
            let whole = lined_up(&path, options(false, shards, max_summaries));
            let slim = lined_up(&path, options(true, shards, max_summaries));
            let what = format!(
                "{} ({shards} threads, {max_summaries} kept)",
                path.display()
            );
            assert!(whole.vantages[0].flows.digests.is_empty(), "{what}");
            assert_eq!(reports(&whole), reports(&slim), "{what}");
            // The same connections kept, whatever the form.
            let uids = |al: &Alignment| {
                let mut u: Vec<String> = al
                    .connections
                    .iter()
                    .map(|l| l.legs[0].uid.to_string())
                    .collect();
                u.sort();
                u
            };
            assert_eq!(uids(&whole), uids(&slim), "{what}");
            // Those kept whole come back from the temporary file (`tcp::kept`) field for
            // field as they were made.
            let made: std::collections::HashMap<String, String> = whole.vantages[0]
                .flows
                .connections
                .iter()
                .map(|c| (c.uid.to_string(), format!("{c:?}")))
                .collect();
            let flows = &slim.vantages[0].flows;
            for c in &flows.connections {
                assert_eq!(made[c.uid.as_str()], format!("{c:?}"), "{what}");
            }
            for d in flows.digests.iter() {
                if let Some((file, at)) = flows.digests.whole(&d) {
                    let c = file.read(&at).expect("read back");
                    assert_eq!(made[c.uid.as_str()], format!("{c:?}"), "{what}");
                    kept_on_disk += 1;
                }
            }
            digests += flows.digests.len();
            // Every connection a rule ended is kept whole: the rules read it so.
            let d = diagnose_with(&slim, MAX_EVIDENCE, Lang::En);
            let died: Vec<vantage::align::LineId> = d
                .findings
                .iter()
                .filter(|f| {
                    matches!(
                        f.kind,
                        FindingKind::MiddleboxReset | FindingKind::SilentDrop
                    )
                })
                .flat_map(|f| f.connections)
                .collect();
            for id in &died {
                let l = slim
                    .connections
                    .iter()
                    .find(|l| l.id == id.as_str())
                    .unwrap();
                assert!(slim.is_whole(&l.legs[0]), "{what}: {id}");
            }
            if !died.is_empty() && !flows.digests.is_empty() {
                deaths_beside_digests += 1;
            }
        }
    }
    // Not vacuous: digests were made, and beside connections a rule ended.
    assert!(digests > 100, "{digests}");
    assert!(deaths_beside_digests >= 2, "{deaths_beside_digests}");
    assert!(kept_on_disk > 20, "{kept_on_disk}");
}

/// Past `TrackerOptions::digests_in_memory` bytes a capture's digests are kept in a temporary
/// file, in start order (`DigestStore::take_sorted`): on every fixture, forced there, the
/// reports and the lined-up list are the same byte for byte as with them in memory, on one
/// thread and on two; with `--max-summaries` cutting the list they are read back to be cut,
/// and stay in memory.
#[test]
fn digests_kept_in_a_file_change_no_report() {
    let mut in_file = 0;
    for path in common::fixture_captures() {
        for (shards, max_summaries) in [(1, 1_000_000), (2, 1_000_000), (2, 7)] {
            let memory = lined_up(&path, options(true, shards, max_summaries));
            let file = lined_up(
                &path,
                TrackerOptions {
                    digests_in_memory: 0,
                    ..options(true, shards, max_summaries)
                },
            );
            let what = format!(
                "{} ({shards} threads, {max_summaries} kept)",
                path.display()
            );
            let (m, f) = (&memory.vantages[0].flows, &file.vantages[0].flows);
            assert!(!m.digests.in_file(), "{what}");
            let cut = m.connections.len() + m.digests.len() >= max_summaries;
            assert_eq!(f.digests.in_file(), !f.digests.is_empty() && !cut, "{what}");
            assert_eq!(reports(&memory), reports(&file), "{what}");
            let json = |al: &Alignment| serde_json::to_string(&*al.connections).unwrap();
            assert_eq!(json(&memory), json(&file), "{what}");
            // Field for field, and each found whole where it is (stores are numbered in the
            // order the process made them).
            let all = |t: &vantage::tcp::Digests| {
                t.iter()
                    .map(|d| {
                        let whole = t
                            .whole(&d)
                            .map(|(file, at)| format!("{:?}", file.read(&at).expect("read back")));
                        let mut d = d.to_digest();
                        d.whole = None;
                        format!("{d:?} {whole:?}")
                    })
                    .collect::<Vec<_>>()
            };
            assert_eq!(all(&m.digests), all(&f.digests), "{what}");
            if f.digests.in_file() {
                in_file += f.digests.len();
            }
        }
    }
    assert!(in_file > 300, "{in_file}");
}

/// `rules::Reads` reads the same from a connection kept whole as from its digest, encoded and
/// read in place as a diagnosis keeps it, on every connection of every fixture (those a rule
/// ends included: the digest is defined for all).
#[test]
fn a_digest_reads_as_its_connection() {
    use vantage::align::Kept;
    use vantage::diagnose::rules::{digest_of, Reads};
    let mut compared = 0;
    let mut with_retransmissions = 0;
    let mut with_recovery = 0;
    for path in common::fixture_captures() {
        let al = lined_up(&path, options(false, 1, 1_000_000));
        for c in &al.vantages[0].flows.connections {
            let mut table = vantage::tcp::Digests::default();
            assert!(table.push(&digest_of(c)), "{}: encoded", c.uid);
            assert_eq!(table.get(0).to_digest(), digest_of(c));
            let (w, d) = (Reads(Kept::Whole(c)), Reads(Kept::Digest(table.get(0))));
            let what = format!("{}: {}", path.display(), c.uid);
            assert_eq!(w.proto(), d.proto(), "{what}");
            assert_eq!(w.ts(), d.ts(), "{what}");
            assert_eq!(w.ended_by(), d.ended_by(), "{what}");
            assert_eq!(
                w.survived().collect::<Vec<_>>(),
                d.survived().collect::<Vec<_>>(),
                "{what}"
            );
            assert_eq!(w.retransmissions(), d.retransmissions(), "{what}");
            assert_eq!(w.data_segments(), d.data_segments(), "{what}");
            assert_eq!(
                w.retransmitted().collect::<Vec<_>>(),
                d.retransmitted().collect::<Vec<_>>(),
                "{what}"
            );
            assert_eq!(w.recovery(), d.recovery(), "{what}");
            compared += 1;
            with_retransmissions += usize::from(w.retransmissions() > 0);
            with_recovery += usize::from(w.recovery().is_some());
        }
    }
    assert!(
        compared > 200 && with_retransmissions >= 5 && with_recovery > 50,
        "{compared} {with_retransmissions} {with_recovery}"
    );
}

/// `vantage diagnose` on one capture keeps digests, and says what a diagnosis of every
/// connection kept whole says; the HTML report, which draws connections whole, keeps them so
/// (a digest read whole would panic).
#[test]
fn the_cli_diagnoses_one_capture_as_if_whole() {
    for rel in [
        "fixtures/conntrack-reject/agent.pcapng",
        "fixtures/conntrack-drop/agent.pcapng",
    ] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
        let spec = VantageSpec {
            name: "agent".into(),
            path: path.clone(),
        };
        let (vantages, errors) = read_vantages_with(&[spec], options(false, 1, 1_000_000));
        assert!(errors.is_empty(), "{errors:?}");
        let whole = align(vantages, &AlignOptions::default());
        let expected = diagnose_json(&diagnose_with(&whole, MAX_EVIDENCE, Lang::En));
        let cli = common::stdout(common::vantage().args([
            "diagnose",
            "--format",
            "json",
            "--lang",
            "en",
            path.to_str().unwrap(),
        ]));
        assert_eq!(cli.trim_end(), expected.trim_end(), "{rel}");
        assert!(
            expected.contains("\"kind\": \"middlebox_reset\"")
                || expected.contains("\"kind\": \"silent_drop\""),
            "{rel}"
        );
        let html = common::stdout(common::vantage().args([
            "diagnose",
            "--format",
            "html",
            path.to_str().unwrap(),
        ]));
        assert!(html.contains("<html"), "{rel}");
    }
}

/// `Ctx::client_connections_after` (a binary search into the client index) lists what a scan
/// of every path does: the same client (vantage, client address, server address and port)
/// over TCP, started after the given time, in start order. On every fixture capture, for
/// every TCP path, after its own start and after the capture's first packet.
#[test]
fn a_clients_later_connections_are_what_a_scan_finds() {
    use vantage::diagnose::Ctx;
    use vantage::tcp::Proto;
    let mut found = 0;
    for path in common::fixture_captures() {
        let al = lined_up(&path, options(true, 1, 1_000_000));
        let ctx = Ctx::new(&al);
        let key = |p: &vantage::diagnose::Path<'_>| {
            let l = &p.legs()[0];
            (l.at.0, l.src, l.dst, l.dport)
        };
        for p in ctx.paths() {
            let leg = &p.legs()[0];
            if leg.proto != Proto::Tcp {
                continue;
            }
            let start = al.leg_ts(leg);
            for after in [start, vantage::capture::Timestamp(i64::MIN)] {
                let mut scan: Vec<(vantage::capture::Timestamp, vantage::align::LineId)> = ctx
                    .paths()
                    .filter(|q| q.legs()[0].proto == Proto::Tcp && key(q) == key(&p))
                    .map(|q| (al.leg_ts(&q.legs()[0]), q.lined.id))
                    .filter(|(ts, _)| *ts > after)
                    .collect();
                // Start order; paths are in id order already, which breaks ties.
                scan.sort_by_key(|(ts, _)| *ts);
                let got: Vec<(vantage::capture::Timestamp, vantage::align::LineId)> = ctx
                    .client_connections_after(leg, after)
                    .map(|q| (al.leg_ts(&q.legs()[0]), q.lined.id))
                    .collect();
                assert_eq!(got, scan, "{} {}", path.display(), p.lined.id.as_str());
                if after == start {
                    found += got.len();
                }
            }
        }
    }
    // Some client reconnects in the fixtures (the lab's agents do), so the test reads lists.
    assert!(found > 10, "{found}");
}
