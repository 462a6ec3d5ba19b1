//! What `diagnose` does not keep of a finished connection (HTTP heads, WebSocket frame counts,
//! TLS hello, every registration but the first accepted, unanswered calls, packet samples of a
//! lone capture) changes no finding: on every lab scenario, with its three captures lined up
//! and with each alone, the JSON report is the same byte for byte as with everything kept.

use std::path::Path;

use vantage::align::{align, AlignOptions};
use vantage::diagnose::{diagnose_with, Lang, MAX_EVIDENCE};
use vantage::pipeline::{read_vantages_with, VantageSpec};
use vantage::report::diagnose_json;
use vantage::tcp::TrackerOptions;

fn report(specs: &[VantageSpec], opts: TrackerOptions) -> String {
    let (vantages, errors) = read_vantages_with(specs, opts);
    assert!(errors.is_empty(), "{errors:?}");
    let al = align(vantages, &AlignOptions::default());
    diagnose_json(&diagnose_with(&al, MAX_EVIDENCE, Lang::En))
}

#[test]
fn what_diagnose_drops_changes_no_report() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut scenarios = 0;
    let mut with_sip = 0;
    for e in std::fs::read_dir(&root).unwrap() {
        let dir = e.unwrap().path();
        if !dir.join("scenario.json").exists() {
            continue;
        }
        scenarios += 1;
        let specs: Vec<VantageSpec> = ["agent.pcapng", "gateway.pcap", "softswitch.pcap"]
            .iter()
            .map(|f| VantageSpec {
                name: f.split('.').next().unwrap().to_string(),
                path: dir.join(f),
            })
            .collect();
        let slim = |keep_samples| TrackerOptions {
            keep_samples,
            timeline: false,
            http_heads: false,
            app_details: false,
            ..TrackerOptions::default()
        };
        let all = report(&specs, TrackerOptions::default());
        assert_eq!(all, report(&specs, slim(true)), "{}", dir.display());
        for one in &specs {
            let one = std::slice::from_ref(one);
            let all = report(one, TrackerOptions::default());
            assert_eq!(all, report(one, slim(false)), "{:?}", one[0].path);
        }
        // The lab's softswitch sees SIP over WebSocket: registrations and calls were dropped.
        let (v, _) = read_vantages_with(&specs[2..], TrackerOptions::default());
        with_sip += v[0]
            .flows
            .connections
            .iter()
            .filter(|c| c.app.as_ref().is_some_and(|a| a.sip.is_some()))
            .count();
    }
    assert!(scenarios >= 8, "{scenarios} lab scenarios");
    assert!(with_sip > 0, "no SIP connection in the lab captures");
}

/// And it is dropped: a summary kept for the diagnosis has no WebSocket counts, and at most one
/// registration, the first the registrar accepted.
#[test]
fn slim_summaries_keep_the_first_accepted_registration() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/nginx-ws/softswitch.pcap");
    let opts = TrackerOptions {
        app_details: false,
        ..TrackerOptions::default()
    };
    let full = vantage::pipeline::track_capture(&path).unwrap();
    let slim = vantage::pipeline::track_capture_with(&path, opts).unwrap();
    let mut checked = 0;
    for (a, b) in full.connections.iter().zip(&slim.connections) {
        let (Some(a), Some(b)) = (a.app.as_deref(), b.app.as_deref()) else {
            continue;
        };
        assert!(b.websocket.is_none() && b.tls.is_none());
        let (Some(sa), Some(sb)) = (&a.sip, &b.sip) else {
            continue;
        };
        let first_ok = sa
            .registrations
            .iter()
            .find(|r| r.response_code.is_some_and(|c| (200..300).contains(&c)));
        assert_eq!(
            sb.registrations
                .first()
                .map(|r| (r.frame_no, r.response_ts)),
            first_ok.map(|r| (r.frame_no, r.response_ts))
        );
        assert!(sb.registrations.len() <= 1);
        assert!(sb.dialogs.iter().all(|d| d.ok_ts.is_some()));
        checked += 1;
    }
    assert!(checked > 0, "no SIP connection in {}", path.display());
}
