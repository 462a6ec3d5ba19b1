//! The lab's captures (fixtures/<scenario>/, made by fixtures/lab/run.sh with real kernels,
//! nftables, HAProxy and nginx): what each capture must show, how the captures line up, and
//! what the diagnosis concludes. The truth comes from each scenario's manifest (scenario.json):
//! the configured timeout, heartbeat, clock shifts and expected findings.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;
use vantage::align::{align, AlignOptions, Alignment, MatchMethod};
use vantage::diagnose::{diagnose, Diagnosis};
use vantage::pipeline::{read_vantages, track_capture, VantageSpec};
use vantage::tcp::{Proto, Side, TerminationKind};

mod common;
use common::SCENARIOS;

fn dir(s: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(s)
}

fn manifest(s: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir(s).join("scenario.json")).unwrap()).unwrap()
}

/// The vantage names and files of a scenario (the three the incident had, or all five).
fn specs(s: &str, names: &[&str]) -> Vec<VantageSpec> {
    let m = manifest(s);
    names
        .iter()
        .map(|n| VantageSpec {
            name: n.to_string(),
            path: dir(s).join(m["files"][*n].as_str().unwrap()),
        })
        .collect()
}

const THREE: &[&str] = &["agent", "softswitch", "gateway"];
const FIVE: &[&str] = &[
    "agent",
    "slb-agent-side",
    "slb-server-side",
    "softswitch",
    "gateway",
];

fn lined_up(s: &str, names: &[&str]) -> Alignment {
    let (v, errors) = read_vantages(&specs(s, names));
    assert!(errors.is_empty(), "{s}: {errors:?}");
    align(v, &AlignOptions::default())
}

fn kinds(d: &Diagnosis) -> BTreeSet<String> {
    d.findings
        .iter()
        .map(|f| f.kind.name().to_string())
        .collect()
}

// ---------------------------------------------------------------- what the captures show

#[test]
fn every_lab_capture_is_read_cleanly() {
    for s in SCENARIOS {
        let m = manifest(s);
        for (_, file) in m["files"].as_object().unwrap() {
            let f = track_capture(&dir(s).join(file.as_str().unwrap())).unwrap();
            assert!(f.error.is_none(), "{s}/{file}");
            assert!(
                f.summary.warnings.is_empty(),
                "{s}/{file}: {:?}",
                f.summary.warnings
            );
            assert_eq!(f.summary.malformed, 0, "{s}/{file}");
            assert!(f.summary.packets > 0, "{s}/{file}");
        }
    }
}

#[test]
fn conntrack_reject_rst_from_the_vip_never_left_the_softswitch() {
    let m = manifest("conntrack-reject");
    let vip = m["addresses"]["vip"].as_str().unwrap();
    let agent = track_capture(&dir("conntrack-reject").join("agent.pcapng")).unwrap();
    let first = agent
        .connections
        .iter()
        .find(|c| c.proto == Proto::Tcp)
        .unwrap();
    let t = first.termination.as_ref().unwrap();
    assert_eq!((t.kind, t.by), (TerminationKind::Rst, Side::Resp));
    assert_eq!(first.resp_h.to_string(), vip);
    // Built by nftables, not by the softswitch: TTL 64 and IP ID 0 against TTL 63 and a counter.
    assert_eq!(t.ttl_fits, Some(false));
    assert_eq!(t.ip_id, Some(0));
    assert!(!t.ack_flag || t.window == 0);
    // It answered the first packet after a silence longer than the timeout.
    let timeout = m["timeout_s"].as_f64().unwrap();
    assert!(first.max_idle.unwrap().secs > timeout);
    // The softswitch never sent a RST nor a FIN on any connection.
    let sw = track_capture(&dir("conntrack-reject").join("softswitch.pcap")).unwrap();
    assert!(sw
        .connections
        .iter()
        .filter(|c| c.proto == Proto::Tcp)
        .all(|c| c.termination.is_none()));
}

#[test]
fn conntrack_drop_retransmits_into_nothing() {
    let agent = track_capture(&dir("conntrack-drop").join("agent.pcapng")).unwrap();
    let first = agent
        .connections
        .iter()
        .find(|c| c.proto == Proto::Tcp)
        .unwrap();
    assert!(
        first.orig.retransmissions >= 3,
        "{}",
        first.orig.retransmissions
    );
    // No FIN or RST from the far side: the agent ends it itself.
    let t = first.termination.as_ref().unwrap();
    assert_eq!(t.by, Side::Orig);
    let slb = track_capture(&dir("conntrack-drop").join("slb-server-side.pcap")).unwrap();
    assert!(slb
        .connections
        .iter()
        .filter(|c| c.proto == Proto::Tcp)
        .all(|c| c.orig.retransmissions == 0 && c.termination.is_none()));
}

#[test]
fn proxies_close_both_legs_within_milliseconds_after_the_timeout() {
    for s in ["nginx-ws", "haproxy-fin", "haproxy-nolinger"] {
        let m = manifest(s);
        let timeout = m["timeout_s"].as_f64().unwrap();
        let al = lined_up(s, THREE);
        let l = &al.connections.get(0).unwrap();
        assert_eq!(l.legs.len(), 2, "{s}");
        let ends: Vec<_> = l
            .legs
            .iter()
            .map(|leg| {
                let c = al.connection(leg);
                let t = c.termination.as_ref().unwrap();
                (
                    &*leg.vantage,
                    t.by,
                    al.to_reference(leg.at.0, t.ts),
                    t.idle_before_s,
                )
            })
            .collect();
        let agent = ends.iter().find(|e| e.0 == "agent").unwrap();
        let sw = ends.iter().find(|e| e.0 == "softswitch").unwrap();
        // Toward the agent the end comes "from the server"; toward the softswitch, "from the
        // client": the proxy, both times.
        assert_eq!((agent.1, sw.1), (Side::Resp, Side::Orig), "{s}");
        assert!(agent.2.secs_since(sw.2).abs() < 0.005, "{s}: {ends:?}");
        assert!((agent.3 - timeout).abs() < 0.1, "{s}: silence {}", agent.3);
    }
}

// ---------------------------------------------------------------- lining up

#[test]
fn clock_shifts_are_recovered_within_2ms_and_inside_the_bound() {
    for s in SCENARIOS {
        let m = manifest(s);
        let al = lined_up(s, FIVE);
        for name in ["slb-agent-side", "slb-server-side", "softswitch", "gateway"] {
            let truth = m["clock_shift_s"][name].as_f64().unwrap();
            let o = al
                .clock_offsets
                .iter()
                .find(|o| o.vantage == name)
                .unwrap_or_else(|| panic!("{s}: no offset for {name}"));
            assert!(
                (o.offset_s - truth).abs() < 0.002,
                "{s}/{name}: {} vs {truth}",
                o.offset_s
            );
            assert!(
                (o.offset_s - truth).abs() <= o.bound_s + 1e-6,
                "{s}/{name}: {} ± {} does not contain {truth}",
                o.offset_s,
                o.bound_s
            );
            assert!(o.samples > 0);
        }
    }
}

#[test]
fn nat_legs_match_one_to_one() {
    for s in ["conntrack-reject", "conntrack-drop", "control-conntrack"] {
        let al = lined_up(s, FIVE);
        let tcp: Vec<_> = al
            .connections
            .iter()
            .filter(|l| l.legs[0].proto == Proto::Tcp)
            .collect();
        let agent_conns = al.vantages[0]
            .flows
            .connections
            .iter()
            .filter(|c| c.proto == Proto::Tcp)
            .count();
        assert_eq!(tcp.len(), agent_conns, "{s}");
        for l in tcp {
            assert_eq!(l.legs.len(), 4, "{s} {}: {:?}", l.id, l.legs);
            assert_eq!(l.matched.method, MatchMethod::NatIsn, "{s}");
            let names: BTreeSet<&str> = l.legs.iter().map(|g| &*g.vantage).collect();
            assert_eq!(names.len(), 4, "{s}: a vantage twice in one group");
        }
        assert_eq!(al.ambiguous, 0);
    }
}

#[test]
fn nginx_legs_are_proxy_legs() {
    let al = lined_up("nginx-ws", THREE);
    let tcp: Vec<_> = al
        .connections
        .iter()
        .filter(|l| l.legs[0].proto == Proto::Tcp)
        .collect();
    assert_eq!(tcp.len(), 2);
    for l in tcp {
        assert_eq!(l.matched.method, MatchMethod::L7Proxy);
        assert_eq!(l.legs.len(), 2);
    }
}

#[test]
fn unrelated_capture_matches_nothing() {
    // A capture of other traffic beside a lab capture: Zeek's FTP over IPv6 trace.
    let specs = vec![
        VantageSpec {
            name: "agent".into(),
            path: dir("conntrack-reject").join("agent.pcapng"),
        },
        VantageSpec {
            name: "elsewhere".into(),
            path: dir("corpus").join("zeek/testing/btest/Traces/ftp/ipv6.pcap"),
        },
    ];
    let (v, errors) = read_vantages(&specs);
    assert!(errors.is_empty());
    let al = align(v, &AlignOptions::default());
    assert!(al.connections.iter().all(|l| l.legs.len() == 1));
    assert!(al.clock_offsets.is_empty());
}

#[test]
fn weak_network_losses_are_placed_on_the_agent_link() {
    // The lab drops packets with nftables inside the slb, on the agent's link: the packets
    // reach the slb's agent-side capture and never leave the slb.
    let al = lined_up("weak-network", FIVE);
    assert!(!al.losses.is_empty());
    for h in &al.losses {
        // Each the way its packets went: a client's from the slb's agent side (seen there,
        // dropped on the way in), a server's from its server side (dropped on the way out).
        let hop = (h.from.as_str(), h.to.as_str(), h.direction);
        assert!(
            hop == ("slb-agent-side", "slb-server-side", "client_to_server")
                || hop == ("slb-server-side", "slb-agent-side", "server_to_client"),
            "{hop:?}"
        );
    }
    // With only the endpoints' captures, the same losses land between them.
    let al = lined_up("weak-network", THREE);
    assert!(al.losses.iter().all(
        |h| [h.from.as_str(), h.to.as_str()] == ["agent", "softswitch"]
            || [h.from.as_str(), h.to.as_str()] == ["softswitch", "agent"]
    ));
    assert!(!al.losses.is_empty());
}

// ---------------------------------------------------------------- diagnosis

fn expected(s: &str) -> BTreeSet<String> {
    manifest(s)["expected_findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn every_scenario_gives_its_expected_findings() {
    for s in SCENARIOS {
        for names in [THREE, FIVE] {
            let d = diagnose(&lined_up(s, names));
            assert_eq!(kinds(&d), expected(s), "{s} with {names:?}");
        }
    }
}

#[test]
fn idle_timeout_estimates_fit_the_configuration() {
    for s in SCENARIOS {
        let m = manifest(s);
        let d = diagnose(&lined_up(s, THREE));
        let Some(f) = d.findings.iter().find(|f| f.kind.name() == "idle_timeout") else {
            continue;
        };
        let timeout = m["timeout_s"].as_f64().unwrap();
        let n = &f.numbers;
        match m["acts"].as_str().unwrap() {
            "timer" => {
                assert_eq!(n.acts, Some("timer"), "{s}");
                assert!((n.estimate_s.unwrap() - timeout).abs() <= 0.5, "{s}: {n:?}");
            }
            _ => {
                assert_eq!(n.acts, Some("next_packet"), "{s}");
                let (lo, hi) = (n.lower_s.unwrap(), n.upper_s.unwrap());
                assert!(lo < hi, "{s}: an interval, not a point");
                assert!(
                    lo <= timeout && timeout <= hi,
                    "{s}: {timeout} not in [{lo}, {hi}]"
                );
            }
        }
    }
}

#[test]
fn the_middlebox_is_placed_inside_the_slb() {
    for s in [
        "conntrack-reject",
        "conntrack-drop",
        "haproxy-fin",
        "nginx-ws",
    ] {
        let d = diagnose(&lined_up(s, FIVE));
        let f = d
            .findings
            .iter()
            .find(|f| {
                matches!(
                    f.kind.name(),
                    "middlebox_reset" | "middlebox_close" | "silent_drop"
                )
            })
            .unwrap();
        assert_eq!(
            f.numbers.hop.as_deref(),
            Some("between slb-agent-side and slb-server-side"),
            "{s}"
        );
        assert!(!f.single_vantage);
        assert!(d.verdict.confidence >= 0.8);
    }
}

#[test]
fn one_capture_at_a_time_never_blames_wrongly() {
    let middlebox = [
        "middlebox_reset",
        "middlebox_close",
        "silent_drop",
        "idle_timeout",
    ];
    for s in SCENARIOS {
        let exp = expected(s);
        for name in THREE {
            let d = diagnose(&lined_up(s, &[name]));
            for f in &d.findings {
                // Every kind found from one capture is one the scenario really has...
                assert!(
                    exp.contains(f.kind.name()),
                    "{s} from {name} alone: unexpected {}",
                    f.kind.name()
                );
                // ...and says it rests on one capture.
                if middlebox.contains(&f.kind.name()) {
                    assert!(f.single_vantage, "{s}/{name}: {}", f.kind.name());
                }
            }
            if exp.iter().all(|k| !middlebox.contains(&k.as_str())) {
                assert!(kinds(&d).iter().all(|k| !middlebox.contains(&k.as_str())));
            }
        }
    }
}

#[test]
fn controls_and_weak_network_are_not_blamed_on_a_middlebox() {
    for s in [
        "control-conntrack",
        "control-haproxy",
        "control-nginx",
        "weak-network",
    ] {
        let d = diagnose(&lined_up(s, FIVE));
        for k in kinds(&d) {
            assert!(
                ![
                    "middlebox_reset",
                    "middlebox_close",
                    "idle_timeout",
                    "silent_drop"
                ]
                .contains(&k.as_str()),
                "{s}: {k}"
            );
        }
    }
    let d = diagnose(&lined_up("weak-network", THREE));
    assert_eq!(d.verdict.kind, "weak_network");
}

#[test]
fn heartbeat_too_slow_gives_the_numbers_side_by_side() {
    let d = diagnose(&lined_up("conntrack-reject", THREE));
    let f = d
        .findings
        .iter()
        .find(|f| f.kind.name() == "heartbeat_too_slow")
        .unwrap();
    let m = manifest("conntrack-reject");
    let schedule: Vec<f64> = m["heartbeat"]["schedule_s"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let slowest = schedule.iter().copied().fold(0.0, f64::max);
    assert!((f.numbers.heartbeat_max_s.unwrap() - slowest).abs() < 0.1);
    assert!(f.numbers.heartbeat_median_s.unwrap() < m["timeout_s"].as_f64().unwrap());
    assert!(f.numbers.upper_s.is_some());
}

#[test]
fn the_cut_call_names_its_call_id_and_the_gateway_bye() {
    let d = diagnose(&lined_up("conntrack-reject", THREE));
    let f = d
        .findings
        .iter()
        .find(|f| f.kind.name() == "call_cut")
        .unwrap();
    assert!(f.summary.contains('@'), "{}", f.summary);
    assert!(f
        .evidence
        .iter()
        .any(|e| &*e.vantage == "gateway" && e.what.contains("agent transport lost")));
}

#[test]
fn agent_outage_runs_to_the_new_registration() {
    let d = diagnose(&lined_up("conntrack-drop", THREE));
    let f = d
        .findings
        .iter()
        .find(|f| f.kind.name() == "agent_outage")
        .unwrap();
    let m = manifest("conntrack-drop");
    let check = m["heartbeat"]["check_s"].as_f64().unwrap();
    // A silent drop is noticed only when the heartbeat check gives up.
    let detect = f.numbers.detection_delay_s.unwrap();
    assert!((detect - check).abs() < 0.5, "{detect} vs {check}");
    assert_eq!(f.numbers.reconnect_attempts, Some(1));
    assert!(f.numbers.outage_s.unwrap() > check);
}

/// Every evidence item shows the time of the frame it cites (on the reference clock: the
/// frame's own time less its capture's clock offset), in every scenario seen from all five
/// places: an engineer who opens that frame in Wireshark finds it at the time the report gave.
#[test]
fn evidence_times_are_their_frames_times() {
    use std::collections::HashMap;
    use vantage::capture::CaptureReader;
    let mut checked = 0;
    for s in SCENARIOS {
        let d = diagnose(&lined_up(s, FIVE));
        let offset: HashMap<&str, f64> = d
            .clock_offsets
            .iter()
            .map(|o| (o.vantage.as_str(), o.offset_s))
            .collect();
        let mut frames: HashMap<String, Vec<i64>> = HashMap::new();
        for f in &d.findings {
            for e in &f.evidence {
                let times = frames.entry(e.file.to_string()).or_insert_with(|| {
                    let mut r = CaptureReader::open(Path::new(&*e.file)).unwrap();
                    let mut t = Vec::new();
                    while let Some(fr) = r.next_frame().unwrap() {
                        t.push(fr.ts.0);
                    }
                    t
                });
                let local = times[(e.frame - 1) as usize] as f64 / 1e9;
                let on_reference = local - offset.get(&*e.vantage).copied().unwrap_or(0.0);
                // Offsets are given to the microsecond.
                assert!(
                    (on_reference - e.ts.as_secs_f64()).abs() < 2e-6,
                    "{s} {}: {} frame {} is at {on_reference:.6}, the report says {:.6} ({})",
                    f.kind.name(),
                    e.vantage,
                    e.frame,
                    e.ts.as_secs_f64(),
                    e.what
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 50, "{checked} evidence items");
}

/// A scenario's five captures tracked as a diagnosis of several captures tracks them (the
/// file's encoding refuses the details only the HTML report reads), on `shards` threads each.
fn read_lining_up(
    s: &str,
    shards: usize,
    samples_in_memory: usize,
    finished_in_file: bool,
) -> Vec<vantage::align::Vantage> {
    let opts = vantage::tcp::TrackerOptions {
        samples_in_memory,
        finished_in_file,
        shards,
        http_heads: false,
        app_details: false,
        ..vantage::tcp::TrackerOptions::default()
    };
    let (v, errors) = vantage::pipeline::read_vantages_with(&specs(s, FIVE), opts);
    assert!(errors.is_empty(), "{s}: {errors:?}");
    v
}

/// The captures read two ways, lined up: the same lined-up connections (ids, legs, matches),
/// clock offsets and losses.
fn aligned_alike(
    a: Vec<vantage::align::Vantage>,
    b: Vec<vantage::align::Vantage>,
    what: &str,
) -> (Alignment, Alignment) {
    let (a, b) = (
        align(a, &AlignOptions::default()),
        align(b, &AlignOptions::default()),
    );
    let json = |al: &Alignment| serde_json::to_string(&*al.connections).unwrap();
    assert_eq!(json(&a), json(&b), "{what}");
    assert_eq!(
        format!("{:?} {:?}", a.clock_offsets, a.losses),
        format!("{:?} {:?}", b.clock_offsets, b.losses),
        "{what}"
    );
    (a, b)
}

/// Past `TrackerOptions::samples_in_memory` bytes, a finished connection's packet samples wait
/// in a temporary file until the alignment reads them (`Tracker::spill_samples`), and so do a
/// live one's complete heads (`heads_out`); with `finished_in_file`, the connections that end
/// while tracking wait there whole until it ends (`Tracker::read_back_finished`). Forced there
/// for every connection, each scenario's five captures, on one thread and on two, give the same
/// connections (every field, `Debug`), samples, lined-up connections and clock offsets, and the
/// same diagnosis as JSON and as HTML (which reads samples too), as with them in memory.
#[test]
fn samples_kept_in_a_file_change_nothing() {
    let mut in_file = 0;
    for s in SCENARIOS {
        for shards in [1, 2] {
            let (memory, file) = (
                read_lining_up(s, shards, usize::MAX, false),
                read_lining_up(s, shards, 0, true),
            );
            for (vm, vf) in memory.iter().zip(&file) {
                let (cm, cf) = (&vm.flows.connections, &vf.flows.connections);
                assert_eq!(cm.len(), cf.len(), "{s}/{}", vm.name);
                for (m, f) in cm.iter().zip(cf) {
                    // The samples' places aside (in memory, or in the file).
                    let fields = |c: &vantage::tcp::Connection| {
                        let mut c = c.clone();
                        c.orig.samples = Default::default();
                        c.resp.samples = Default::default();
                        format!("{c:?}")
                    };
                    assert_eq!(fields(m), fields(f), "{s}");
                    for (dm, df) in [(&m.orig, &f.orig), (&m.resp, &f.resp)] {
                        assert!(!dm.samples.in_file());
                        let kept: Vec<_> = dm.samples.iter().collect();
                        assert_eq!(kept, df.samples.iter().collect::<Vec<_>>(), "{}", m.uid);
                        if df.samples.in_file() {
                            assert!(!kept.is_empty(), "{}", m.uid);
                            in_file += 1;
                        }
                    }
                }
            }
            let what = format!("{s} ({shards} threads)");
            let (am, af) = aligned_alike(memory, file, &what);
            let (dm, df) = (diagnose(&am), diagnose(&af));
            assert_eq!(
                serde_json::to_string(&dm).unwrap(),
                serde_json::to_string(&df).unwrap(),
                "{what}"
            );
            assert_eq!(
                vantage::report::html::render(&dm, &am),
                vantage::report::html::render(&df, &af),
                "{what}"
            );
        }
    }
    // Not vacuous: every scenario's directions with samples, twice.
    assert!(in_file > 100, "{in_file}");
}

/// Past `align::CONNECTIONS_IN_MEMORY` connections, a diagnosis of several captures keeps each
/// in a temporary file once tracked, and in memory its digest and what lining up reads of it
/// (`CaptureFlows::keep_in_file`); the rules read it whole from the file when they ask for it.
/// Forced for every scenario's five captures, on one thread and on two: the same lined-up
/// connections, clock offsets and losses, and the same diagnosis as JSON, text and Markdown, as
/// with every connection in memory. A rule reading something the file does not give back (the
/// samples, which lining up has) would differ here; one reading a digest's connection as if it
/// were in memory would panic.
#[test]
fn connections_kept_in_a_file_change_no_report() {
    use vantage::report::{diagnose_json, diagnose_markdown, diagnose_text};
    let mut in_file = 0;
    for s in SCENARIOS {
        for shards in [1, 2] {
            let read = || read_lining_up(s, shards, vantage::tcp::SAMPLES_IN_MEMORY, true);
            let (memory, mut file) = (read(), read());
            for v in &mut file {
                let n = v.flows.connections.len();
                assert!(
                    v.flows.keep_in_file(vantage::diagnose::rules::kept_as),
                    "{s}"
                );
                assert!(v.flows.connections.is_empty(), "{s}");
                assert_eq!(v.flows.digests.len(), n, "{s}");
                assert!(v.flows.digests.iter().all(|d| d.whole().is_some()), "{s}");
                in_file += n;
            }
            let what = format!("{s} ({shards} threads)");
            let (am, af) = aligned_alike(memory, file, &what);
            let (dm, df) = (diagnose(&am), diagnose(&af));
            assert_eq!(diagnose_json(&dm), diagnose_json(&df), "{what}");
            assert_eq!(diagnose_text(&dm, &am), diagnose_text(&df, &af), "{what}");
            assert_eq!(
                diagnose_markdown(&dm, &am),
                diagnose_markdown(&df, &af),
                "{what}"
            );
        }
    }
    assert!(in_file > 100, "{in_file}");
}

/// All or nothing: connections that keep what the file's encoding refuses (the WebSocket
/// counts and HTTP heads only `flows` and the HTML report print) stay in memory as they were,
/// their samples given back, and nothing is lined up differently.
#[test]
fn connections_the_file_refuses_stay_as_they_were() {
    let (mut refused, mut compared) = (0, 0);
    for s in SCENARIOS {
        // Tracked with every detail, as `flows` and the HTML report track.
        let (before, errors) = vantage::pipeline::read_vantages(&specs(s, FIVE));
        assert!(errors.is_empty(), "{s}: {errors:?}");
        let (mut after, _) = vantage::pipeline::read_vantages(&specs(s, FIVE));
        for (b, a) in before.iter().zip(&mut after) {
            let refuses = b.flows.connections.iter().any(|c| {
                c.app
                    .as_ref()
                    .is_some_and(|app| app.websocket.is_some() || app.http.is_some())
            });
            let kept = a.flows.keep_in_file(vantage::diagnose::rules::kept_as);
            assert_eq!(kept, !refuses && !b.flows.connections.is_empty(), "{s}");
            if kept {
                continue;
            }
            refused += usize::from(refuses);
            assert!(
                a.flows.digests.is_empty() && a.flows.views.is_empty(),
                "{s}"
            );
            assert_eq!(a.flows.connections.len(), b.flows.connections.len(), "{s}");
            for (x, y) in b.flows.connections.iter().zip(&a.flows.connections) {
                assert_eq!(format!("{x:?}"), format!("{y:?}"), "{s}");
                for (dx, dy) in [(&x.orig, &y.orig), (&x.resp, &y.resp)] {
                    let samples =
                        |d: &vantage::tcp::Direction| d.samples.iter().collect::<Vec<_>>();
                    assert_eq!(samples(dx), samples(dy), "{s} {}", x.uid);
                }
                compared += 1;
            }
        }
        let json = |al: &Alignment| serde_json::to_string(&*al.connections).unwrap();
        let (b, a) = (
            align(before, &AlignOptions::default()),
            align(after, &AlignOptions::default()),
        );
        assert_eq!(json(&b), json(&a), "{s}");
    }
    assert!(refused > 5 && compared > 50, "{refused} {compared}");
}
