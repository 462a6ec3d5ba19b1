//! The application layer on real captures: WebSocket frames against tshark (REFERENCE.tsv) and
//! Zeek's baselines, Suricata's WebSocket tests, the handshake checks, and the lab's captures
//! (heartbeat rhythm, SIP registration and call, the proxy's X-Forwarded-For).
//!
//! Where we differ from tshark or Zeek on purpose, the test asserts our number and says why.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use vantage::app::heartbeat::HeartbeatKind;
use vantage::app::session::{AppSummary, HttpSummary, Service};
use vantage::app::sip::{DialogEnd, SipDialogs};
use vantage::app::websocket::{AnomalyKind, DirStats, WsStats};
use vantage::app::Side;
use vantage::pipeline::{track_capture, CaptureFlows};
use vantage::tcp::{Connection, Proto};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn corpus(rel: &str) -> PathBuf {
    root().join("fixtures/corpus").join(rel)
}

fn read_path(path: &Path) -> CaptureFlows {
    let flows = track_capture(path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
    assert!(
        flows.error.is_none(),
        "{}: {:?}",
        path.display(),
        flows.error
    );
    flows
}

fn read(rel: &str) -> CaptureFlows {
    read_path(&corpus(rel))
}

/// `read` with the application events kept (`flows --detail`), and the WebSocket control frame
/// times with them.
fn read_detail(rel: &str) -> CaptureFlows {
    let opts = vantage::tcp::TrackerOptions {
        detail: true,
        ..Default::default()
    };
    let flows = vantage::pipeline::track_capture_with(&corpus(rel), opts)
        .unwrap_or_else(|e| panic!("{rel}: {e:#}"));
    assert!(flows.error.is_none(), "{rel}: {:?}", flows.error);
    // Without events, the same frames are counted but their times are not kept.
    let plain = read(rel);
    for (a, b) in ws_conns(&flows).iter().zip(ws_conns(&plain)) {
        let (a, b) = (app(a).websocket.as_ref(), app(b).websocket.as_ref());
        let (a, b) = (a.expect("stats"), b.expect("stats"));
        assert_eq!((&a.client, &a.server), (&b.client, &b.server), "{rel}");
        assert!(b.control_times.is_empty(), "{rel}");
    }
    assert_eq!(ws_conns(&flows).len(), ws_conns(&plain).len(), "{rel}");
    flows
}

const ZEEK_TRACES: &str = "zeek/testing/btest/Traces";
const ZEEK_BASELINE: &str = "zeek/testing/btest/Baseline";

fn zeek_trace(rel: &str) -> String {
    format!("{ZEEK_TRACES}/{rel}")
}

fn app(c: &Connection) -> &AppSummary {
    c.app
        .as_ref()
        .unwrap_or_else(|| panic!("{}:{} has no app summary", c.orig_p, c.resp_p))
}

/// The TCP connections that carried a WebSocket.
fn ws_conns(f: &CaptureFlows) -> Vec<&Connection> {
    f.connections
        .iter()
        .map(|c| &**c)
        .filter(|c| c.proto == Proto::Tcp)
        .filter(|c| c.app.as_ref().is_some_and(|a| a.websocket.is_some()))
        .collect()
}

/// The one WebSocket connection of a capture.
fn one_ws<'a>(f: &'a CaptureFlows, what: &str) -> (&'a Connection, &'a HttpSummary, &'a WsStats) {
    let ws = ws_conns(f);
    assert_eq!(ws.len(), 1, "{what}: WebSocket connections");
    let c = ws[0];
    let a = app(c);
    assert_eq!(a.service, Some(Service::Websocket), "{what}");
    let h = a.http.as_ref().expect("an HTTP upgrade");
    (c, h, a.websocket.as_ref().expect("WebSocket stats"))
}

/// Frames, pings, pongs and closes over both directions of every connection.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct WsCounts {
    frames: u64,
    ping: u64,
    pong: u64,
    close: u64,
}

fn ws_counts(f: &CaptureFlows) -> WsCounts {
    let mut n = WsCounts {
        frames: 0,
        ping: 0,
        pong: 0,
        close: 0,
    };
    for c in ws_conns(f) {
        let s = app(c).websocket.as_ref().unwrap();
        for d in [&s.client, &s.server] {
            n.frames += u64::from(d.frames);
            n.ping += u64::from(d.ping);
            n.pong += u64::from(d.pong);
            n.close += u64::from(d.close);
        }
    }
    n
}

// ---------------------------------------------------------------------------------------------
// 1. tshark: WebSocket frames by opcode (REFERENCE.tsv)
// ---------------------------------------------------------------------------------------------

#[test]
fn websocket_frames_agree_with_tshark() {
    let text = std::fs::read_to_string(corpus("REFERENCE.tsv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("REFERENCE.tsv has no column {name}"))
    };
    let (c_f, c_pi, c_po, c_cl) = (
        col("ws_frames"),
        col("ws_ping"),
        col("ws_pong"),
        col("ws_close"),
    );
    let mut checked = Vec::new();
    for l in lines {
        let f: Vec<&str> = l.split('\t').collect();
        let num = |i: usize| -> u64 { f[i].parse().unwrap() };
        let tshark = WsCounts {
            frames: num(c_f),
            ping: num(c_pi),
            pong: num(c_po),
            close: num(c_cl),
        };
        if tshark.frames == 0 {
            continue;
        }
        let ours = ws_counts(&read(f[0]));
        // No differences on purpose: every frame tshark dissects, we count, by opcode. (The
        // oversized close frame of oversized-close-frame.pcapng is counted as a close by both;
        // we add anomalies for it, see `oversized_close_frame_is_an_anomaly`.)
        assert_eq!(ours, tshark, "{}", f[0]);
        checked.push(f[0].to_string());
    }
    assert!(checked.len() >= 11, "{checked:?}");
}

/// Control frames (ping 9, pong 10, close 8) by the frame number that completes them, as
/// `tshark -Y websocket -T fields -e frame.number -e websocket.opcode` (4.0) lists them.
#[test]
fn control_frames_are_where_tshark_puts_them() {
    let cases: [(&str, &[(u64, u8)]); 10] = [
        (
            "suricata-verify/tests/websocket-control-frag/input.pcap",
            &[(10, 9), (14, 10)],
        ),
        (
            "suricata-verify/tests/websocket-ping/input.pcap",
            &[(8, 9), (11, 10)],
        ),
        (
            "zeek/testing/btest/Traces/http/websocket.pcap",
            &[(21, 8), (22, 8)],
        ),
        (
            "zeek/testing/btest/Traces/websocket/fragmented-http-reply.pcap",
            &[(8, 9), (10, 10), (14, 8), (15, 8)],
        ),
        (
            "zeek/testing/btest/Traces/websocket/jupyter-websocket.pcap",
            &[(16, 8), (17, 8)],
        ),
        (
            "zeek/testing/btest/Traces/websocket/message-too-big-status.pcap",
            &[(8, 9), (10, 8), (11, 8)],
        ),
        (
            "zeek/testing/btest/Traces/websocket/oversized-close-frame.pcapng",
            &[(6, 8)],
        ),
        (
            "zeek/testing/btest/Traces/websocket/reply-ping-coalesced.pcap",
            &[(6, 9), (8, 10), (12, 8), (13, 8)],
        ),
        (
            "zeek/testing/btest/Traces/websocket/wrong-accept-header.pcap",
            &[(8, 9)],
        ),
        (
            "zeek/testing/btest/Traces/websocket/wstunnel-http.pcap",
            &[(10, 8), (12, 8)],
        ),
    ];
    for (file, tshark) in cases {
        let flows = read_detail(file);
        let mut ours: Vec<(u64, u8)> = ws_conns(&flows)
            .iter()
            .flat_map(|c| app(c).websocket.as_ref().unwrap().control_times.iter())
            .map(|c| (c.frame_no, c.opcode.as_u8()))
            .collect();
        ours.sort_unstable();
        assert_eq!(ours, tshark, "{file}");
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Zeek: websocket.log and the websocket events baselines
// ---------------------------------------------------------------------------------------------

/// Rows of a Zeek log baseline, by field name. Handles both the full ASCII log (`#fields`) and
/// the `zeek-cut`-style baselines whose first non-comment line is the header.
fn zeek_log(rel: &str) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(corpus(&format!("{ZEEK_BASELINE}/{rel}")))
        .unwrap_or_else(|e| panic!("{rel}: {e}"));
    let mut fields: Option<Vec<String>> = None;
    let mut rows = Vec::new();
    for line in text.lines() {
        if let Some(f) = line.strip_prefix("#fields\t") {
            fields = Some(f.split('\t').map(String::from).collect());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let values: Vec<&str> = line.split('\t').collect();
        match &fields {
            None => fields = Some(values.iter().map(|s| s.to_string()).collect()),
            Some(names) => {
                assert_eq!(names.len(), values.len(), "{rel}: {line}");
                rows.push(
                    names
                        .iter()
                        .cloned()
                        .zip(values.iter().map(|s| s.to_string()))
                        .collect(),
                );
            }
        }
    }
    rows
}

/// Zeek's unset field `-` as `None`.
fn zeek_opt(row: &BTreeMap<String, String>, field: &str) -> Option<String> {
    let v = row
        .get(field)
        .unwrap_or_else(|| panic!("no field {field} in {row:?}"));
    (v != "-").then(|| v.clone())
}

/// A comma-separated header value as Zeek's vector[string] (set separator `,`).
fn as_list(v: Option<&str>) -> Option<String> {
    v.map(|v| {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(",")
    })
}

/// Without heads (what `diagnose` asks for) the summary keeps the upgrade's outcome, time and
/// frame, and none of the header strings, on every WebSocket trace of Zeek's.
#[test]
fn upgrade_outcome_without_heads() {
    for trace in [
        "websocket/jupyter-websocket.pcap",
        "websocket/wrong-accept-header.pcap",
        "websocket/wstunnel-http.pcap",
        "http/websocket.pcap",
    ] {
        let path = corpus(&zeek_trace(trace));
        let with = read_path(&path);
        let opts = vantage::tcp::TrackerOptions {
            http_heads: false,
            ..Default::default()
        };
        let without = vantage::pipeline::track_capture_with(&path, opts).unwrap();
        let (c1, h1, _) = one_ws(&with, trace);
        let (c2, h2, _) = one_ws(&without, trace);
        assert_eq!(c1.uid, c2.uid, "{trace}");
        assert!(h1.request.is_some() && h1.response.is_some(), "{trace}");
        assert!(h2.request.is_none() && h2.response.is_none(), "{trace}");
        assert_eq!(
            (h1.upgraded, h1.accept_ok, h1.failed_status, h1.requests),
            (h2.upgraded, h2.accept_ok, h2.failed_status, h2.requests),
            "{trace}"
        );
        assert_eq!(
            (h1.upgrade_ts, h1.upgrade_frame),
            (h2.upgrade_ts, h2.upgrade_frame),
            "{trace}"
        );
        assert!(h2.upgraded && h2.upgrade_frame.is_some(), "{trace}");
    }
}

#[test]
fn websocket_log_agrees_with_zeek() {
    // Baseline folder (btest name) -> trace. The btest files themselves are not in the corpus;
    // the mapping follows the names (and the hosts/ports in the baselines confirm it).
    let cases = [
        (
            "scripts.base.protocols.websocket.jupyter-websocket",
            "websocket/jupyter-websocket.pcap",
        ),
        (
            "scripts.base.protocols.websocket.key-accept-wrong",
            "websocket/wrong-accept-header.pcap",
        ),
        (
            "scripts.base.protocols.websocket.wstunnel-http",
            "websocket/wstunnel-http.pcap",
        ),
        (
            "scripts.base.protocols.http.101-switching-protocols",
            "http/websocket.pcap",
        ),
    ];
    for (baseline, trace) in cases {
        let rows = zeek_log(&format!("{baseline}/websocket.log"));
        assert_eq!(rows.len(), 1, "{baseline}");
        let z = &rows[0];
        let flows = read(&zeek_trace(trace));
        let (c, h, _) = one_ws(&flows, trace);
        assert_eq!(z["id.orig_p"], c.orig_p.to_string(), "{trace}");
        assert_eq!(z["id.resp_p"], c.resp_p.to_string(), "{trace}");
        assert_eq!(z["id.orig_h"], c.orig_h.to_string(), "{trace}");
        assert_eq!(z["id.resp_h"], c.resp_h.to_string(), "{trace}");
        let req = h.request().expect("request head");
        let resp = h.response().expect("a 101");
        assert_eq!(resp.status, 101, "{trace}");
        assert!(h.upgraded, "{trace}");
        assert_eq!(zeek_opt(z, "host"), req.host, "{trace} host");
        assert_eq!(zeek_opt(z, "uri"), Some(req.path.clone()), "{trace} uri");
        assert_eq!(zeek_opt(z, "user_agent"), req.user_agent, "{trace} ua");
        // Zeek's subprotocol is the one the server chose (Sec-WebSocket-Protocol of the 101).
        assert_eq!(
            zeek_opt(z, "subprotocol"),
            resp.sec_websocket_protocol,
            "{trace} subprotocol"
        );
        assert_eq!(
            zeek_opt(z, "client_protocols"),
            as_list(req.sec_websocket_protocol.as_deref()),
            "{trace} client_protocols"
        );
        assert_eq!(
            zeek_opt(z, "server_extensions"),
            as_list(resp.sec_websocket_extensions.as_deref()),
            "{trace} server_extensions"
        );
        assert_eq!(
            zeek_opt(z, "client_extensions"),
            as_list(req.sec_websocket_extensions.as_deref()),
            "{trace} client_extensions"
        );
        // The same value reaches `vantage flows --format json` as `subprotocol`.
        if let Some(sp) = zeek_opt(z, "subprotocol") {
            assert_eq!(resp.sec_websocket_protocol.as_deref(), Some(sp.as_str()));
        }
    }
}

/// One connection of Zeek's `websocket_*` event dumps: the handshake, and the frames per
/// direction (T = originator).
#[derive(Default, Debug)]
struct ZeekWsEvents {
    client_key: Option<String>,
    server_accept: Option<String>,
    /// (is_orig, opcode name) -> (frames, payload bytes)
    frames: BTreeMap<(bool, String), (u64, u64)>,
    /// (is_orig, status, reason), in order.
    closes: Vec<(bool, u16, String)>,
}

/// Splits an events dump into sections, one per trace (the line naming the .pcap starts one;
/// a dump of a single trace has no such line and is returned under "").
fn zeek_events(rel: &str) -> BTreeMap<String, ZeekWsEvents> {
    let text = std::fs::read_to_string(corpus(&format!("{ZEEK_BASELINE}/{rel}"))).unwrap();
    let mut out: BTreeMap<String, ZeekWsEvents> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if line.ends_with(".pcap") && !line.contains(',') {
            current = line.to_string();
            continue;
        }
        let e = out.entry(current.clone()).or_default();
        let parts: Vec<&str> = line.splitn(12, ", ").collect();
        match parts[0] {
            "websocket_established" => {
                let field = |name: &str| {
                    line.split(&format!("{name}="))
                        .nth(1)
                        .map(|v| v.split([',', ']']).next().unwrap().to_string())
                };
                e.client_key = field("client_key");
                e.server_accept = field("server_accept");
            }
            "websocket_frame" => {
                // websocket_frame, uid, is_orig, fin, T, rsv, 0, opcode, NAME, payload_len, N
                let is_orig = parts[2] == "T";
                let opcode = parts[8].to_string();
                let len: u64 = parts[10].parse().unwrap();
                let slot = e.frames.entry((is_orig, opcode)).or_default();
                slot.0 += 1;
                slot.1 += len;
            }
            "websocket_close" => {
                // websocket_close, uid, is_orig, status, N, reason, TEXT
                let is_orig = parts[2] == "T";
                let status: u16 = parts[4].parse().unwrap();
                let reason = line.split(", reason, ").nth(1).unwrap_or("").to_string();
                e.closes.push((is_orig, status, reason));
            }
            _ => {}
        }
    }
    out
}

/// Our frame counts of one direction by Zeek's opcode names, zeros left out.
fn dir_by_opcode(d: &DirStats) -> BTreeMap<String, u64> {
    [
        ("continuation", d.continuation),
        ("text", d.text),
        ("binary", d.binary),
        ("close", d.close),
        ("ping", d.ping),
        ("pong", d.pong),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(k, n)| (k.to_string(), u64::from(n)))
    .collect()
}

#[test]
fn websocket_events_agree_with_zeek() {
    let mut sections = zeek_events("scripts.base.protocols.websocket.events/out");
    let coalesced =
        zeek_events("scripts.base.protocols.websocket.coalesced-reply-ping/out-coalesced")
            .remove("")
            .expect("one trace");
    sections.insert("reply-ping-coalesced.pcap".into(), coalesced);
    let mut checked = 0;
    for (trace, z) in &sections {
        let path = corpus(&zeek_trace(&format!("websocket/{trace}")));
        if !path.exists() {
            // broker-websocket.pcap and two-binary-fragments.pcap are not in the corpus.
            assert!(
                ["broker-websocket.pcap", "two-binary-fragments.pcap"].contains(&trace.as_str()),
                "{trace} missing from the corpus"
            );
            continue;
        }
        let flows = read_path(&path);
        let (_, h, s) = one_ws(&flows, trace);
        if let Some(key) = &z.client_key {
            assert_eq!(
                h.request().unwrap().sec_websocket_key.as_ref(),
                Some(key),
                "{trace}"
            );
        }
        if let Some(accept) = &z.server_accept {
            let resp = h.response().unwrap();
            assert_eq!(resp.sec_websocket_accept.as_ref(), Some(accept), "{trace}");
            assert_eq!(h.accept_ok, Some(true), "{trace}");
        }
        // Frames per direction and opcode; payload bytes per direction.
        for (is_orig, d) in [(true, &s.client), (false, &s.server)] {
            let ours = dir_by_opcode(d);
            let theirs: BTreeMap<String, u64> = z
                .frames
                .iter()
                .filter(|((o, _), _)| *o == is_orig)
                .map(|((_, op), (n, _))| (op.clone(), *n))
                .collect();
            assert_eq!(ours, theirs, "{trace} is_orig={is_orig}");
            let bytes: u64 = z
                .frames
                .iter()
                .filter(|((o, _), _)| *o == is_orig)
                .map(|(_, (_, b))| b)
                .sum();
            assert_eq!(d.payload_bytes, bytes, "{trace} is_orig={is_orig} bytes");
        }
        // Close frames: who closed first, code and reason. Zeek says status 0 for a close
        // without a body; we say no code.
        let first = z.closes.first();
        match (first, &s.first_close) {
            (None, None) => {}
            (Some((is_orig, status, reason)), Some(ours)) => {
                assert_eq!(ours.by == Side::Client, *is_orig, "{trace}");
                assert_eq!(ours.code.unwrap_or(0), *status, "{trace}");
                assert_eq!(&ours.reason, reason, "{trace}");
            }
            other => panic!("{trace}: {other:?}"),
        }
        assert_eq!(s.both_sent_close(), z.closes.len() == 2, "{trace}");
        checked += 1;
    }
    assert_eq!(checked, 4, "{:?}", sections.keys().collect::<Vec<_>>());
}

/// Zeek's weird `protocol_data_with_HTTP_upgrade_reply`: the server's ping (6 bytes) came in the
/// same segment as the 101. We parse it as the first server frame, from the 101's packet.
#[test]
fn ping_coalesced_with_the_101_is_parsed() {
    let flows = read_detail(&zeek_trace("websocket/reply-ping-coalesced.pcap"));
    let (_, h, s) = one_ws(&flows, "reply-ping-coalesced");
    let ping = s
        .control_times
        .iter()
        .find(|c| c.opcode.name() == "ping")
        .expect("a ping");
    assert_eq!(ping.by, Side::Server);
    assert_eq!(
        Some(ping.frame_no),
        h.upgrade_frame,
        "ping in the 101's packet"
    );
    assert_eq!((s.server.ping, s.client.pong), (1, 1));
}

// ---------------------------------------------------------------------------------------------
// 3. Suricata's WebSocket tests
// ---------------------------------------------------------------------------------------------

#[test]
fn suricata_websocket_ping() {
    // test.yaml: one websocket event with opcode ping (pcap_cnt 8), one with pong (pcap_cnt 11).
    let flows = read_detail("suricata-verify/tests/websocket-ping/input.pcap");
    let (_, h, s) = one_ws(&flows, "websocket-ping");
    assert_eq!(h.accept_ok, Some(true));
    let ctl: Vec<(&str, Side, u64)> = s
        .control_times
        .iter()
        .map(|c| (c.opcode.name(), c.by, c.frame_no))
        .collect();
    assert_eq!(
        ctl,
        vec![("ping", Side::Client, 8), ("pong", Side::Server, 11)]
    );
    // The client's ping is not masked (tshark: websocket.mask 0): RFC 6455 §5.1 says it must be.
    let a = app(ws_conns(&flows)[0]);
    assert_eq!(
        a.ws_anomalies,
        vec![(8, AnomalyKind::UnmaskedClientFrame)],
        "{:?}",
        a.ws_anomalies
    );
    assert_eq!((s.client.unmasked, s.server.unmasked), (1, 2));
}

#[test]
fn suricata_websocket_control_frame_between_fragments() {
    // A text message in two fragments (frames 8 and 12) with a ping (frame 10) between them
    // (RFC 6455 §5.4 allows it); Suricata's rule matches the reassembled payload.
    let flows = read("suricata-verify/tests/websocket-control-frag/input.pcap");
    let (_, _, s) = one_ws(&flows, "websocket-control-frag");
    let a = app(ws_conns(&flows)[0]);
    assert!(a.ws_anomalies.is_empty(), "{:?}", a.ws_anomalies);
    assert_eq!(
        (s.client.text, s.client.ping, s.client.continuation),
        (1, 1, 1)
    );
    assert_eq!((s.server.pong, s.server.frames), (1, 1));
    assert_eq!(s.client.payload_bytes, 20 + 4 + 28);
}

#[test]
fn suricata_basic_websockets() {
    // test.yaml: 14 text frames to the client (sid 3), 3 masked frames to the server (sid 4),
    // all 3 with FIN (sid 5).
    let flows = read("suricata-verify/tests/websocket/basic_websockets.pcap");
    let (_, h, s) = one_ws(&flows, "basic_websockets");
    assert_eq!(h.accept_ok, Some(true));
    assert_eq!(
        (s.server.text, s.server.frames, s.server.unmasked),
        (14, 14, 14)
    );
    assert_eq!(
        (s.client.masked, s.client.frames, s.client.unmasked),
        (3, 3, 0)
    );
    assert!(app(ws_conns(&flows)[0]).ws_anomalies.is_empty());
}

// ---------------------------------------------------------------------------------------------
// 4. Handshake and framing violations
// ---------------------------------------------------------------------------------------------

#[test]
fn wrong_accept_header_is_flagged() {
    // Zeek's weird: expected=N8ntNYkX6Qerw4tK3s/CYzpSZNc=, found=...-wrong.
    let flows = read(&zeek_trace("websocket/wrong-accept-header.pcap"));
    let (_, h, _) = one_ws(&flows, "wrong-accept-header");
    assert_eq!(h.accept_ok, Some(false));
    assert_eq!(
        h.response().unwrap().sec_websocket_accept.as_deref(),
        Some("N8ntNYkX6Qerw4tK3s/CYzpSZNc=-wrong")
    );
    assert_eq!(
        vantage::app::http::expected_accept(
            h.request().unwrap().sec_websocket_key.as_deref().unwrap()
        ),
        "N8ntNYkX6Qerw4tK3s/CYzpSZNc="
    );
    // Every other upgrade in the corpus has a correct accept.
    for t in [
        "websocket/jupyter-websocket.pcap",
        "websocket/wstunnel-http.pcap",
        "websocket/reply-ping-coalesced.pcap",
        "websocket/fragmented-http-reply.pcap",
        "websocket/message-too-big-status.pcap",
        "websocket/oversized-close-frame.pcapng",
        "http/websocket.pcap",
    ] {
        let flows = read(&zeek_trace(t));
        assert_eq!(one_ws(&flows, t).1.accept_ok, Some(true), "{t}");
    }
}

#[test]
fn oversized_close_frame_is_an_anomaly() {
    // Zeek's weird: websocket_control_frame_size_exceeded "258 > 125". The frame's length is
    // also written in the 64-bit form (0x7f, then 258) where the 16-bit form was due: we report
    // that too (§5.2), where Zeek does not.
    let flows = read(&zeek_trace("websocket/oversized-close-frame.pcapng"));
    let (_, _, s) = one_ws(&flows, "oversized-close-frame");
    let a = app(ws_conns(&flows)[0]);
    assert_eq!(
        a.ws_anomalies,
        vec![
            (6, AnomalyKind::NonMinimalLength),
            (6, AnomalyKind::ControlFrameTooLong { len: 258 }),
        ]
    );
    assert_eq!((s.server.close, s.server.payload_bytes), (1, 258));
    let close = s.first_close.as_ref().unwrap();
    assert_eq!((close.by, close.code), (Side::Server, Some(1000)));
    // Zeek keeps 123 bytes of the reason when capped; we keep our prefix (128 bytes) minus the
    // code: 126 'C's.
    assert_eq!(close.reason, "C".repeat(126));
}

#[test]
fn unmasked_client_frames_of_wstunnel() {
    // wstunnel's client does not mask (tshark: websocket.mask 0 on frames 8 and 10): counted
    // normally, and flagged (§5.1).
    let flows = read(&zeek_trace("websocket/wstunnel-http.pcap"));
    let (_, h, s) = one_ws(&flows, "wstunnel-http");
    assert_eq!((s.client.frames, s.client.unmasked), (2, 2));
    assert_eq!(
        app(ws_conns(&flows)[0]).ws_anomalies,
        vec![
            (8, AnomalyKind::UnmaskedClientFrame),
            (10, AnomalyKind::UnmaskedClientFrame)
        ]
    );
    // Zeek's http.log puts the 301 of the tunnelled `GET /` (inside the binary frame the server
    // sends, frame 9) on the outer request; for us the outer exchange is the upgrade and its 101.
    assert_eq!(h.requests, 1);
    assert_eq!(h.failed_status, None);
    assert_eq!(h.response().unwrap().status, 101);
}

// ---------------------------------------------------------------------------------------------
// 5. The lab's captures
// ---------------------------------------------------------------------------------------------

fn scenario(name: &str) -> (PathBuf, serde_json::Value) {
    let dir = root().join("fixtures").join(name);
    let text = std::fs::read_to_string(dir.join("scenario.json")).unwrap();
    (dir, serde_json::from_str(&text).unwrap())
}

fn lab(name: &str, file: &str) -> CaptureFlows {
    read_path(&root().join("fixtures").join(name).join(file))
}

/// TCP connections of a lab capture that carried the WebSocket, in time order.
fn lab_ws(f: &CaptureFlows) -> Vec<&Connection> {
    let mut v = ws_conns(f);
    v.sort_by_key(|c| c.ts);
    v
}

#[test]
fn heartbeat_interval_matches_the_configured_one() {
    for name in [
        "control-conntrack",
        "control-haproxy",
        "control-nginx",
        "weak-network",
    ] {
        let (_, m) = scenario(name);
        let hb = &m["heartbeat"];
        assert_eq!(hb["kind"], "crlf", "{name}");
        assert_eq!(hb["schedule_s"].as_array().map(Vec::len), Some(0), "{name}");
        let h_s = hb["then_interval_s"].as_f64().unwrap();
        for file in ["agent.pcapng", "slb-agent-side.pcap", "softswitch.pcap"] {
            let flows = lab(name, file);
            let ws = lab_ws(&flows);
            assert_eq!(ws.len(), 1, "{name}/{file}");
            let beat = app(ws[0]).heartbeat.as_ref().expect("a heartbeat");
            assert_eq!(beat.kind, HeartbeatKind::Crlf, "{name}/{file}");
            assert_eq!(beat.started_by, Side::Client, "{name}/{file}");
            let err = (beat.interval_median_s - h_s).abs() / h_s;
            assert!(
                err < 0.05,
                "{name}/{file}: median {} vs {h_s}",
                beat.interval_median_s
            );
        }
        // The beats we count on the agent's side are the keep-alives tshark saw.
        let flows = lab(name, "agent.pcapng");
        let beat = app(lab_ws(&flows)[0]).heartbeat.clone().unwrap();
        let seen = m["observed"]["captures"]["agent"]["crlf_keepalives_t"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(beat.count, seen, "{name}");
    }
}

#[test]
fn heartbeat_stretch_of_conntrack_reject() {
    // Schedule 3,3,3,8: the agent's first connection shows beats 3 s apart, then one after 8 s
    // (which draws the middlebox's RST).
    let (_, m) = scenario("conntrack-reject");
    let schedule: Vec<f64> = m["heartbeat"]["schedule_s"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let longest = schedule.iter().cloned().fold(0.0, f64::max);
    let usual = schedule[0];
    let flows = lab("conntrack-reject", "agent.pcapng");
    let ws = lab_ws(&flows);
    assert_eq!(ws.len(), 2, "the agent reconnects");
    let beat = app(ws[0]).heartbeat.as_ref().expect("a heartbeat");
    assert_eq!(beat.kind, HeartbeatKind::Crlf);
    assert_eq!(beat.started_by, Side::Client);
    assert!(
        (beat.interval_max_s - longest).abs() / longest < 0.05,
        "max {} vs {longest}",
        beat.interval_max_s
    );
    assert!(
        (beat.interval_median_s - usual).abs() / usual < 0.05,
        "median {} vs {usual}",
        beat.interval_median_s
    );
    // The first keep-alive comes `schedule[0]` s after the connection opens, so the first
    // connection sees schedule.len() keep-alives (the 8 s one included) and len - 1 intervals.
    let seen: Vec<f64> = m["observed"]["captures"]["agent"]["crlf_keepalives_t"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let on_first = seen.iter().filter(|t| **t < 17.1).count();
    assert_eq!(beat.count, on_first);
    // The softswitch never sees the 8 s keep-alive (the RST answered it): no stretch there.
    let flows = lab("conntrack-reject", "softswitch.pcap");
    let beat = app(lab_ws(&flows)[0]).heartbeat.clone().unwrap();
    assert!((beat.interval_max_s - usual).abs() / usual < 0.05);
}

/// The SIP on a connection.
fn sip(c: &Connection) -> &SipDialogs {
    app(c).sip.as_ref().expect("SIP")
}

#[test]
fn sip_register_and_call_are_found() {
    for name in [
        "control-conntrack",
        "control-haproxy",
        "control-nginx",
        "weak-network",
        "conntrack-reject",
        "nginx-ws",
    ] {
        for file in ["agent.pcapng", "softswitch.pcap"] {
            let flows = lab(name, file);
            let ws = lab_ws(&flows);
            let first = sip(ws[0]);
            // REGISTER from the agent, 200 from the softswitch (RFC 3261 §10.2).
            let reg = first.registrations.first().expect("a REGISTER");
            assert_eq!(reg.by, Side::Client, "{name}/{file}");
            assert_eq!(reg.response_code, Some(200), "{name}/{file}");
            assert!(reg.response_ts.is_some_and(|t| t >= reg.ts));
            // The call: the softswitch INVITEs the agent, 180, 200, ACK.
            assert_eq!(first.dialogs.len(), 1, "{name}/{file}");
            let d = &first.dialogs[0];
            assert_eq!(d.caller, Side::Server, "{name}/{file}");
            assert!(d.ringing_ts.is_some(), "{name}/{file}: 180");
            assert_eq!(d.final_code, Some(200), "{name}/{file}");
            assert!(d.ack_ts.is_some(), "{name}/{file}: ACK");
            assert!(d.ringing_ts <= d.ok_ts && d.ok_ts <= d.ack_ts);
            let bye_on_agent_leg =
                m_bool(name, &["observed", "summary", "call", "bye_on_agent_leg"]);
            if bye_on_agent_leg {
                // A normal end: BYE from the softswitch, 200 from the agent.
                assert_eq!(d.bye_by, Some(Side::Server), "{name}/{file}");
                assert_eq!(d.bye_response_code, Some(200), "{name}/{file}");
                assert_eq!(d.end, Some(DialogEnd::Bye), "{name}/{file}");
            } else {
                assert_eq!(d.bye_ts, None, "{name}/{file}: no BYE on the agent's leg");
            }
            // After a reconnect, the agent REGISTERs again on the new connection.
            if let Some(second) = ws.get(1) {
                let reg = sip(second).registrations.first().expect("a new REGISTER");
                assert_eq!(reg.response_code, Some(200), "{name}/{file}");
            }
        }
    }
}

fn m_bool(name: &str, path: &[&str]) -> bool {
    let (_, m) = scenario(name);
    let mut v = &m;
    for p in path {
        v = &v[*p];
    }
    v.as_bool()
        .unwrap_or_else(|| panic!("{name}: {path:?} = {v}"))
}

#[test]
fn sip_over_udp_to_the_gateway() {
    for name in ["control-conntrack", "conntrack-reject", "nginx-ws"] {
        let (_, m) = scenario(name);
        let gw = m["addresses"]["gateway"].as_str().unwrap();
        let flows = lab(name, "gateway.pcap");
        let legs: Vec<&Connection> = flows
            .connections
            .iter()
            .map(|c| &**c)
            .filter(|c| c.proto == Proto::Udp && c.app.as_ref().is_some_and(|a| a.sip.is_some()))
            .collect();
        assert_eq!(legs.len(), 1, "{name}");
        let c = legs[0];
        assert_eq!(app(c).service, Some(Service::Sip));
        let s = sip(c);
        assert_eq!(s.dialogs.len(), 1, "{name}");
        let d = &s.dialogs[0];
        // The softswitch calls the gateway: the side that sent the first datagram is the client.
        assert_eq!(c.resp_h.to_string(), gw, "{name}");
        assert_eq!(d.caller, Side::Client, "{name}");
        assert!(d.first_1xx_ts.is_some() && d.ringing_ts.is_some(), "{name}");
        assert_eq!(d.final_code, Some(200), "{name}");
        assert!(d.ack_ts.is_some(), "{name}");
        assert_eq!(d.bye_response_code, Some(200), "{name}");
        let reason = m["observed"]["summary"]["call"]["gateway_bye_reason"].as_str();
        assert_eq!(d.bye_reason.as_deref(), reason, "{name}");
    }
}

#[test]
fn nginx_inside_leg_carries_x_forwarded_for() {
    let (_, m) = scenario("nginx-ws");
    let agent_ip = m["addresses"]["agent"].as_str().unwrap();
    let agent = lab("nginx-ws", "agent.pcapng");
    let inside = lab("nginx-ws", "softswitch.pcap");
    let (a, s) = (lab_ws(&agent), lab_ws(&inside));
    assert_eq!((a.len(), s.len()), (2, 2));
    for (ac, sc) in a.iter().zip(&s) {
        let ah = app(ac).http.as_ref().unwrap();
        let sh = app(sc).http.as_ref().unwrap();
        assert_eq!(
            ah.request().unwrap().x_forwarded_for,
            None,
            "the agent sends none"
        );
        let xff = sh.request().unwrap().x_forwarded_for.unwrap_or_default();
        assert!(xff.split(',').any(|p| p.trim() == agent_ip), "{xff}");
        // nginx passes the key through: the two legs are one WebSocket (RFC 6455 §4.1).
        assert!(ah.request().unwrap().sec_websocket_key.is_some());
        assert_eq!(
            ah.request().unwrap().sec_websocket_key,
            sh.request().unwrap().sec_websocket_key
        );
        assert_eq!(
            sh.request().unwrap().sec_websocket_protocol.as_deref(),
            Some("sip")
        );
        assert_eq!((ah.accept_ok, sh.accept_ok), (Some(true), Some(true)));
    }
    // Conntrack and HAProxy in TCP mode add nothing.
    let flows = lab("conntrack-reject", "softswitch.pcap");
    for c in lab_ws(&flows) {
        assert_eq!(
            app(c)
                .http
                .as_ref()
                .unwrap()
                .request()
                .unwrap()
                .x_forwarded_for,
            None
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 6. The CLI
// ---------------------------------------------------------------------------------------------

#[test]
fn flows_json_carries_the_websocket() {
    let trace = corpus(&zeek_trace("websocket/jupyter-websocket.pcap"));
    let out = Command::cargo_bin("vantage")
        .unwrap()
        .args(["flows", "--format", "json"])
        .arg(&trace)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(r#""service":"websocket""#), "{text}");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    let l = &lines[0];
    assert_eq!(l["service"], "websocket");
    assert_eq!(l["subprotocol"], "v1.kernel.websocket.jupyter.org");
    assert_eq!(l["ws_frames"]["binary"], 12);
    assert_eq!(l["ws_frames"]["close"], 2);
    assert_eq!(l["http"]["accept_ok"], true);
}

/// Zeek's `fragmented-http-reply` baseline (`http_header, T, HOST, localhost`,
/// `http_header, F, SERVER, dont ask`) is the HTTP exchange *inside* the tunnel: the server's
/// reply comes as one binary frame and four continuation frames (frame 13: `02 01 'H'`,
/// `00 07 'TTP/1.1'`, ...), which Zeek reassembles and parses as HTTP. We do not parse HTTP inside
/// WebSocket messages: we count the fragments, and the outer 101 (which has no Server header).
#[test]
fn fragmented_http_reply_inside_the_tunnel() {
    let flows = read(&zeek_trace("websocket/fragmented-http-reply.pcap"));
    let (_, h, s) = one_ws(&flows, "fragmented-http-reply");
    assert_eq!(h.request().unwrap().host.as_deref(), Some("localhost:8080"));
    let resp = h.response().unwrap();
    assert_eq!((resp.status, resp.server.as_deref()), (101, None));
    assert_eq!(h.accept_ok, Some(true));
    assert_eq!((s.client.binary, s.client.continuation), (1, 0));
    assert_eq!((s.server.binary, s.server.continuation), (1, 4));
    assert!(app(ws_conns(&flows)[0]).ws_anomalies.is_empty());
}

/// `flows --format json` prints how many registrations a connection carried, not each, and
/// counts them without keeping their records (`TrackerOptions::sip_registrations` off): on
/// every capture of every lab scenario, each connection's count is the one with every record
/// kept, and no record is kept.
#[test]
fn registrations_counted_without_records_match_the_records() {
    let fixtures = root().join("fixtures");
    let mut counted = 0;
    for e in std::fs::read_dir(&fixtures).unwrap() {
        let dir = e.unwrap().path();
        if !dir.join("scenario.json").exists() {
            continue;
        }
        for f in ["agent.pcapng", "gateway.pcap", "softswitch.pcap"] {
            let path = dir.join(f);
            let kept = read_path(&path);
            let opts = vantage::tcp::TrackerOptions {
                sip_registrations: false,
                ..Default::default()
            };
            let bare = vantage::pipeline::track_capture_with(&path, opts).unwrap();
            assert_eq!(kept.connections.len(), bare.connections.len());
            for (k, b) in kept.connections.iter().zip(&bare.connections) {
                let sip = |c: &Connection| c.app.as_ref().and_then(|a| a.sip.clone());
                let (Some(k), Some(b)) = (sip(k), sip(b)) else {
                    assert_eq!(sip(k).is_some(), sip(b).is_some());
                    continue;
                };
                assert_eq!(k.registrations_seen() as usize, k.registrations.len());
                assert_eq!(b.registrations_seen(), k.registrations_seen(), "{path:?}");
                assert_eq!(b.registrations_overflow, k.registrations_overflow);
                assert!(b.registrations.is_empty());
                assert_eq!(b.dialogs.len(), k.dialogs.len());
                counted += k.registrations.len();
            }
        }
    }
    assert!(counted > 20, "the lab's agents register: {counted}");
}

/// The SIP messages of a lab capture: each UDP datagram, and each whole WebSocket text
/// message in a TCP segment that starts with its frame, as the WebSocket parser unmasks it
/// (RFC 6455 §5.3: masked from the client).
fn lab_sip_messages(path: &Path) -> Vec<Vec<u8>> {
    use vantage::app::websocket::{Opcode, WsEvent, WsParser, MAX_PREFIX_CAP};
    use vantage::capture::Timestamp;
    use vantage::decode::{decode, Decoded, Transport};
    let mut r = vantage::capture::CaptureReader::open(path).unwrap();
    let mut out = Vec::new();
    while let Some(f) = r.next_frame().unwrap() {
        let Decoded::Ip(p) = decode(&f) else { continue };
        match p.transport {
            Transport::Udp(u) => out.push(u.payload.to_vec()),
            Transport::Tcp(t) => {
                let from_client = t.payload.get(1).is_some_and(|b| b & 0x80 != 0);
                let mut ws = WsParser::new(from_client);
                ws.set_prefix_cap(MAX_PREFIX_CAP);
                let mut events = Vec::new();
                ws.push(t.payload, Timestamp(0), 1, &mut events);
                out.extend(events.into_iter().filter_map(|e| match e {
                    WsEvent::Frame(w)
                        if w.fin
                            && w.opcode == Opcode::Text
                            && w.payload_prefix.len() as u64 == w.payload_len =>
                    {
                        Some(w.payload_prefix)
                    }
                    _ => None,
                }));
            }
            Transport::Other { .. } => {}
        }
    }
    out
}

/// A diagnosis parses SIP for its call and registration tracking only (`sip::Fields::Tracked`:
/// no From, To, Via, User-Agent, Server, Content-Type): on every SIP message of the lab's
/// captures, over UDP (the gateway's trunk) and in WebSocket frames (the agent's and the
/// softswitch's side), what it keeps is what the whole parse has.
#[test]
fn a_diagnosis_parses_of_sip_what_it_reads() {
    use vantage::app::sip::{parse_datagram, parse_datagram_with, Fields};
    use vantage::app::Parse;
    let (mut udp, mut ws) = (0, 0);
    for name in ["nginx-ws", "conntrack-drop", "haproxy-fin"] {
        for file in ["gateway.pcap", "softswitch.pcap", "agent.pcapng"] {
            let path = root().join("fixtures").join(name).join(file);
            for m in lab_sip_messages(&path) {
                let Parse::Complete { value: all, .. } = parse_datagram(&m) else {
                    continue;
                };
                let Parse::Complete { value, .. } = parse_datagram_with(&m, Fields::Tracked) else {
                    panic!("{}: {}", path.display(), String::from_utf8_lossy(&m));
                };
                assert!(all.call_id.is_some() && all.from_uri.is_some(), "{all:?}");
                let mut expect = all.clone();
                (expect.from_tag, expect.to_tag) = (None, None);
                (expect.from_uri, expect.to_uri) = (None, None);
                (expect.via_branch, expect.via_transport) = (None, None);
                (expect.user_agent, expect.server, expect.content_type) = (None, None, None);
                assert_eq!(value, expect, "{}", path.display());
                if file == "gateway.pcap" {
                    udp += 1;
                } else {
                    ws += 1;
                }
            }
        }
    }
    assert!(
        udp >= 10 && ws >= 30,
        "SIP messages: {udp} over UDP, {ws} over WebSocket"
    );
}
