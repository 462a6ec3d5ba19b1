//! `vantage diagnose --format html`: one self-contained page (no external scripts, fonts or
//! styles) with the verdict, the findings and their evidence, the clock offsets, and at its
//! heart an SVG timeline per lined-up TCP connection: one swim lane per vantage, on the
//! reference clock, with the packets and application events that tell how it died.
//!
//! Written with maud (compile-time templates, every interpolation HTML-escaped). The SVG is
//! also well-formed XML, so tests can parse it.
//!
//! Lanes draw what the connection summaries keep: the head and tail samples (SYN, SYN-ACK,
//! data, FIN, RST), retransmitted segments, the first FIN or RST with its fingerprint, the
//! silences, and the application summary (HTTP upgrade, heartbeat rhythm, SIP registrations
//! and dialogs). Packets sent by the client side sit above a lane's line, those sent by the
//! server side below it. Each marker's `<title>` (what the browser shows on hover) names the
//! frame and a Wireshark display filter for it; a few lines of optional inline script copy the
//! same into a panel under the timeline.

use std::collections::BTreeMap;
use std::net::IpAddr;

use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::align::{Alignment, LinedUp};
use crate::capture::Timestamp;
use crate::diagnose::{Catalog, Ctx, Diagnosis, Finding, Msg, Path, Severity};
use crate::tcp::{Connection, IpIdPattern, Proto, SampleKind, Side, TerminationKind};

/// Timelines drawn at most: every connection with a finding, then the others in order up to
/// this many. The rest are listed by id (`vantage timeline --conn ID` shows any of them).
pub const MAX_TIMELINES: usize = 200;

/// A silence at least this long right before a connection's end is shaded (as the rules'
/// `MIN_IDLE_S`).
const MIN_IDLE_S: f64 = crate::diagnose::rules::MIN_IDLE_S;
/// The silence must end this close to the FIN/RST to be the one "before the end" (as the
/// rules' `PROVOKED_S`: a RST answers the first packet after the silence).
const PROVOKED_S: f64 = crate::diagnose::rules::PROVOKED_S;
/// A reconnect is drawn on the dying connection's timeline when it comes within this long
/// after the end (or within the connection's own duration, if longer).
const RECONNECT_WINDOW_S: f64 = 60.0;

// SVG geometry (user units; the SVG scales to the page width).
const W: f64 = 1200.0;
const PLOT_L: f64 = 250.0;
const PLOT_R: f64 = 1175.0;
const LANE_H: f64 = 88.0;
const TOP: f64 = 6.0;
const AXIS_H: f64 = 34.0;
/// Lane-relative: label rows, the lane's line, the idle label.
const ROW_Y: [f64; 3] = [14.0, 26.0, 38.0];
const LINE_Y: f64 = 57.0;
const SIDE_DY: f64 = 9.0;
const IDLE_LABEL_Y: f64 = 81.0;
const LABEL_CHAR_W: f64 = 6.4;

/// The kinds of marker, each with its CSS class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Data,
    Heartbeat,
    Retrans,
    Syn,
    SynAck,
    Upgrade,
    Sip,
    Last,
    Reconnect,
    Fin,
    Rst,
}

impl Kind {
    fn class(self) -> &'static str {
        match self {
            Kind::Data => "data",
            Kind::Heartbeat => "heartbeat",
            Kind::Retrans => "retrans",
            Kind::Syn => "syn",
            Kind::SynAck => "synack",
            Kind::Upgrade => "upgrade",
            Kind::Sip => "sip",
            Kind::Last => "last",
            Kind::Reconnect => "reconnect",
            Kind::Fin => "fin",
            Kind::Rst => "rst",
        }
    }

    /// Which labels win a place when they collide: the end first.
    fn label_priority(self) -> u8 {
        match self {
            Kind::Rst | Kind::Fin => 0,
            Kind::Reconnect => 1,
            Kind::Last => 2,
            Kind::Upgrade | Kind::Sip => 3,
            Kind::Syn => 2,
            _ => 5,
        }
    }

    fn colour(self) -> &'static str {
        match self {
            Kind::Data => "#9aa5b1",
            Kind::Heartbeat => "#7d8590",
            Kind::Retrans => "#a0522d",
            Kind::Syn | Kind::SynAck => "#1f883d",
            Kind::Upgrade => "#0969da",
            Kind::Sip => "#8250df",
            Kind::Last => "#24292f",
            Kind::Reconnect => "#0a7c86",
            Kind::Fin => "#e8590c",
            Kind::Rst => "#d1242f",
        }
    }
}

/// One thing drawn on a lane.
#[derive(Clone, Debug)]
struct Marker {
    /// Reference time.
    ts: Timestamp,
    kind: Kind,
    /// Who sent it (None: drawn on the line).
    by: Option<Side>,
    frame: Option<u64>,
    /// Short text drawn above the lane, if there is room.
    label: Option<String>,
    /// What it shows (first line of the hover text).
    what: String,
}

/// The silence before a lane's end, shaded.
#[derive(Clone, Debug)]
struct Idle {
    from: Timestamp,
    to: Timestamp,
    secs: f64,
    /// No FIN or RST: the leg is still open when its capture ends.
    open_at_end: bool,
}

struct Lane {
    vantage: String,
    file: String,
    endpoints: String,
    /// Wireshark filter for this leg's packets.
    filter: String,
    life: (Timestamp, Timestamp),
    markers: Vec<Marker>,
    idle: Option<Idle>,
}

struct Timeline<'a> {
    lined: std::borrow::Cow<'a, LinedUp>,
    lanes: Vec<Lane>,
    t0: Timestamp,
    t1: Timestamp,
    findings: Vec<&'a Finding>,
    /// One line about how it ended.
    end: String,
    client: String,
    reconnect: Option<String>,
}

fn endpoint(h: IpAddr, p: u16) -> String {
    match h {
        IpAddr::V4(a) => format!("{a}:{p}"),
        IpAddr::V6(a) => format!("[{a}]:{p}"),
    }
}

/// "client" / "客户端".
fn side_word(cat: &Catalog, s: Side) -> String {
    cat.render(&crate::diagnose::side_msg(s))
}

/// "the client side (10.0.0.1:5060)" / "客户端（10.0.0.1:5060）".
fn who(cat: &Catalog, c: &Connection, s: Side) -> String {
    cat.render(
        &Msg::new("t-who")
            .m("side", crate::diagnose::side_msg(s))
            .s("addr", sender(c, s)),
    )
}

fn sender(c: &Connection, s: Side) -> String {
    match s {
        Side::Orig => endpoint(c.orig_h, c.orig_p),
        Side::Resp => endpoint(c.resp_h, c.resp_p),
    }
}

/// The application layer's client/server, as the connection's originator/responder.
fn tcp_side(s: crate::app::Side) -> Side {
    match s {
        crate::app::Side::Client => Side::Orig,
        crate::app::Side::Server => Side::Resp,
    }
}

fn other(s: Side) -> Side {
    match s {
        Side::Orig => Side::Resp,
        Side::Resp => Side::Orig,
    }
}

fn pattern_word(p: IpIdPattern) -> Msg {
    Msg::new(match p {
        IpIdPattern::None => "t-ipid-none",
        IpIdPattern::Zero => "t-ipid-zero",
        IpIdPattern::Incrementing => "t-ipid-incrementing",
        IpIdPattern::Random => "t-ipid-random",
    })
}

/// "8.0", "0.35", "61": the precision a duration is shown with.
fn dur_num(x: f64) -> String {
    if x < 1.0 {
        format!("{x:.2}")
    } else if x < 100.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.0}")
    }
}

/// "8.0 s", "0.35 s", "61 s" ("8.0 秒").
fn dur(cat: &Catalog, x: f64) -> String {
    cat.render(&Msg::new("secs").s("s", dur_num(x)))
}

/// Width of a label drawn in the SVG: CJK characters take about twice a Latin one.
fn label_width(text: &str) -> f64 {
    text.chars()
        .map(|c| {
            if c as u32 >= 0x2E80 {
                LABEL_CHAR_W * 1.8
            } else {
                LABEL_CHAR_W
            }
        })
        .sum()
}

/// Heartbeat beats drawn on one lane, at most. A lane is 925 px wide: a day-long connection's
/// beats (hundreds, each a marker with its tooltip) overlapped into a smear and made a 24-hour
/// capture's report 116 MB.
const MAX_BEATS_DRAWN: usize = 80;

/// Which beats of a heartbeat to draw, in order (0 is the first beat, `i` the one after
/// `intervals[i - 1]`): all when they fit in `cap`; else the first and the last, the beats that
/// came late (an interval stretched against the median, longest first, up to half the cap:
/// what the timeline is read for), and beats evenly spaced between.
fn beats_drawn(intervals: &[f64], median: f64, cap: usize) -> Vec<usize> {
    let n = intervals.len() + 1;
    if n <= cap {
        return (0..n).collect();
    }
    let mut keep = vec![false; n];
    keep[0] = true;
    keep[n - 1] = true;
    let mut late: Vec<usize> = (1..n)
        .filter(|&i| crate::app::heartbeat::is_stretched(intervals[i - 1], median))
        .collect();
    late.sort_by(|&a, &b| intervals[b - 1].total_cmp(&intervals[a - 1]));
    for &i in late.iter().take(cap / 2) {
        keep[i] = true;
    }
    let room = cap
        .saturating_sub(keep.iter().filter(|k| **k).count())
        .max(1);
    for i in (0..n).step_by(n.div_ceil(room)) {
        keep[i] = true;
    }
    (0..n).filter(|&i| keep[i]).collect()
}

/// Leg filter in the form the findings' display filters use.
fn leg_filter(c: &Connection) -> String {
    crate::diagnose::conversation_filter(c.proto, (c.orig_h, c.orig_p), (c.resp_h, c.resp_p))
}

/// Frame of the sample sent by `side` at exactly `ts` (capture clock), if one was kept.
fn frame_at(c: &Connection, side: Side, ts: Timestamp) -> Option<u64> {
    let dir = match side {
        Side::Orig => &c.orig,
        Side::Resp => &c.resp,
    };
    dir.samples.iter().find(|s| s.ts == ts).map(|s| s.frame)
}

/// Who sent a frame, from the kept samples.
fn side_of_frame(c: &Connection, frame: u64) -> Option<Side> {
    if c.orig.samples.iter().any(|s| s.frame == frame) {
        Some(Side::Orig)
    } else if c.resp.samples.iter().any(|s| s.frame == frame) {
        Some(Side::Resp)
    } else {
        None
    }
}

fn lane(al: &Alignment, leg: &crate::align::Leg, cat: &Catalog) -> Lane {
    let v = leg.at.0;
    let c = &al.connection(leg);
    let r = |ts: Timestamp| al.to_reference(v, ts);
    let mut markers = Vec::new();
    let last_ts = [
        c.last_ts,
        c.orig.last_ts.unwrap_or(c.ts),
        c.resp.last_ts.unwrap_or(c.ts),
    ]
    .into_iter()
    .max()
    .unwrap_or(c.last_ts);
    // Packets kept in the head and tail samples.
    let term = c.termination.as_ref();
    let mut term_drawn = false;
    for (side, dir) in [(Side::Orig, &c.orig), (Side::Resp, &c.resp)] {
        for s in dir.samples.iter() {
            let who = who(cat, c, side);
            let (kind, label, what) = match s.kind {
                SampleKind::Syn => (
                    Kind::Syn,
                    Some("SYN".to_string()),
                    cat.render(&Msg::new("t-syn").s("who", &who)),
                ),
                SampleKind::SynAck => (
                    Kind::SynAck,
                    None,
                    cat.render(&Msg::new("t-synack").s("who", &who)),
                ),
                SampleKind::Data => (
                    Kind::Data,
                    None,
                    cat.render(&Msg::new("t-data").s("len", s.len).s("who", &who)),
                ),
                SampleKind::Fin | SampleKind::Rst => {
                    let k = if s.kind == SampleKind::Fin {
                        Kind::Fin
                    } else {
                        Kind::Rst
                    };
                    let word = if k == Kind::Fin { "FIN" } else { "RST" };
                    let what = match term.filter(|t| t.frame == s.frame) {
                        Some(t) => {
                            term_drawn = true;
                            termination_words(cat, c, t)
                        }
                        None => cat.render(&Msg::new("t-end-from").s("word", word).s("who", &who)),
                    };
                    (k, Some(end_label(cat, word, side)), what)
                }
                SampleKind::Datagram => continue,
            };
            markers.push(Marker {
                ts: r(s.ts),
                kind,
                by: Some(side),
                frame: Some(s.frame),
                label,
                what,
            });
        }
        for s in &dir.retransmitted {
            markers.push(Marker {
                ts: r(s.ts),
                kind: Kind::Retrans,
                by: Some(side),
                frame: Some(s.frame),
                label: None,
                what: cat.render(
                    &Msg::new("t-retrans")
                        .s("side", side_word(cat, side))
                        .s("len", s.len)
                        .s("seq", s.rel_seq),
                ),
            });
        }
    }
    if let (Some(t), false) = (term, term_drawn) {
        let (k, word) = match t.kind {
            TerminationKind::Fin => (Kind::Fin, "FIN"),
            TerminationKind::Rst => (Kind::Rst, "RST"),
        };
        markers.push(Marker {
            ts: r(t.ts),
            kind: k,
            by: Some(t.by),
            frame: Some(t.frame),
            label: Some(end_label(cat, word, t.by)),
            what: termination_words(cat, c, t),
        });
    }
    // The application layer.
    if let Some(app) = &c.app {
        if let Some(h) = &app.http {
            if let Some(ts) = h.upgrade_ts {
                let (label, what) = if h.upgraded {
                    ("101".to_string(), cat.get("t-upgrade-ok"))
                } else {
                    let code = h.failed_status.map_or("-".into(), |c| c.to_string());
                    (
                        code.clone(),
                        cat.render(&Msg::new("t-upgrade-refused").s("code", code)),
                    )
                };
                markers.push(Marker {
                    ts: r(ts),
                    kind: Kind::Upgrade,
                    by: Some(Side::Resp),
                    frame: h.upgrade_frame,
                    label: Some(label),
                    what,
                });
            }
        }
        if let Some(hb) = &app.heartbeat {
            let by = tcp_side(hb.started_by);
            let kind = serde_json::to_value(hb.kind)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            let mut ts = hb.first;
            let n = hb.intervals.len() + 1;
            let drawn = beats_drawn(&hb.intervals, hb.interval_median_s, MAX_BEATS_DRAWN);
            for i in 0..n {
                if i > 0 {
                    ts = Timestamp(ts.0 + (hb.intervals[i - 1] * 1e9).round() as i64);
                }
                if drawn.binary_search(&i).is_err() {
                    continue;
                }
                let interval = if i > 0 {
                    Msg::new("t-heartbeat-interval").s("secs", dur(cat, hb.intervals[i - 1]))
                } else {
                    crate::i18n::empty()
                };
                markers.push(Marker {
                    ts: r(ts),
                    kind: Kind::Heartbeat,
                    by: Some(by),
                    frame: frame_at(c, by, ts),
                    label: None,
                    what: cat.render(
                        &Msg::new("t-heartbeat")
                            .s("kind", &kind)
                            .s("i", i + 1)
                            .s("n", hb.count)
                            .s("side", side_word(cat, by))
                            .m("interval", interval)
                            .s("median", dur(cat, hb.interval_median_s)),
                    ),
                });
            }
        }
        if let Some(sip) = &app.sip {
            for g in &sip.registrations {
                let by = tcp_side(g.by);
                let word = if g.is_unregister {
                    "unREGISTER"
                } else {
                    "REGISTER"
                };
                let answer = match (g.response_code, g.response_ts) {
                    (Some(code), Some(t)) => Msg::new("t-sip-answered")
                        .s("code", code)
                        .s("secs", dur(cat, t.secs_since(g.ts))),
                    _ if g.lost => Msg::new("t-sip-lost"),
                    _ => Msg::new("t-sip-no-answer"),
                };
                markers.push(Marker {
                    ts: r(g.ts),
                    kind: Kind::Sip,
                    by: Some(by),
                    frame: Some(g.frame_no),
                    label: Some(word.to_string()),
                    what: cat.render(
                        &Msg::new("t-sip-register")
                            .s("word", word)
                            .s("side", side_word(cat, by))
                            .s("cseq", g.cseq_num)
                            .m("answer", answer),
                    ),
                });
            }
            for dlg in &sip.dialogs {
                let caller = tcp_side(dlg.caller);
                let cut = if dlg.cut_by_transport_loss {
                    Msg::new("t-sip-cut")
                } else {
                    crate::i18n::empty()
                };
                markers.push(Marker {
                    ts: r(dlg.invite_ts),
                    kind: Kind::Sip,
                    by: Some(caller),
                    frame: Some(dlg.invite_frame),
                    label: Some("INVITE".into()),
                    what: cat.render(
                        &Msg::new("t-sip-invite")
                            .s("side", side_word(cat, caller))
                            .s("call", &dlg.call_id)
                            .m("cut", cut),
                    ),
                });
                if let Some(ok) = dlg.ok_ts {
                    let by = other(caller);
                    markers.push(Marker {
                        ts: r(ok),
                        kind: Kind::Sip,
                        by: Some(by),
                        frame: frame_at(c, by, ok),
                        label: None,
                        what: cat.render(&Msg::new("t-sip-ok").s("call", &dlg.call_id)),
                    });
                }
                if let Some(bye) = dlg.bye_ts {
                    let by = dlg.bye_by.map_or(caller, tcp_side);
                    let reason = dlg
                        .bye_reason
                        .as_deref()
                        .map_or_else(crate::i18n::empty, |r| {
                            Msg::new("t-sip-reason").s("reason", r)
                        });
                    markers.push(Marker {
                        ts: r(bye),
                        kind: Kind::Sip,
                        by: Some(by),
                        frame: dlg.bye_frame,
                        label: Some("BYE".into()),
                        what: cat.render(
                            &Msg::new("t-sip-bye")
                                .s("side", side_word(cat, by))
                                .s("call", &dlg.call_id)
                                .m("reason", reason),
                        ),
                    });
                }
            }
        }
    }
    // The silence before the end, and the last packet before it.
    let mut idle = None;
    match term {
        Some(t) => {
            let mut fatal: Vec<&crate::tcp::Gap> = c
                .silences
                .iter()
                .filter(|g| g.to_frame <= t.frame && g.secs >= MIN_IDLE_S)
                .collect();
            fatal.sort_by_key(|g| g.to_frame);
            // A silence after which the other side was never heard again (what follows is
            // retransmissions into the void, as the silent_drop rule reads it); else the
            // silence that the FIN or RST came right after.
            let unanswered = fatal.iter().find(|g| {
                let theirs = match g.by {
                    Side::Orig => &c.resp,
                    Side::Resp => &c.orig,
                };
                theirs.last_ts.is_none_or(|l| l <= g.from_ts)
            });
            let adjacent = fatal
                .iter()
                .filter(|g| {
                    let end = Timestamp(g.from_ts.0 + (g.secs * 1e9) as i64);
                    t.ts.secs_since(end) <= PROVOKED_S
                })
                .max_by_key(|g| g.to_frame);
            let before = unanswered.or(adjacent).copied();
            if let Some(g) = before {
                let from = r(g.from_ts);
                idle = Some(Idle {
                    from,
                    to: Timestamp(from.0 + (g.secs * 1e9) as i64),
                    secs: g.secs,
                    open_at_end: false,
                });
                markers.push(Marker {
                    ts: from,
                    kind: Kind::Last,
                    by: side_of_frame(c, g.from_frame),
                    frame: Some(g.from_frame),
                    label: Some(cat.get("t-label-last")),
                    what: cat.render(&Msg::new("t-last-before").s("secs", dur(cat, g.secs))),
                });
            }
        }
        None => {
            let end = al.vantages[v].flows.summary.last_ts.map(r);
            if let Some(end) = end {
                let from = r(last_ts);
                let secs = end.secs_since(from);
                if c.proto == Proto::Tcp && secs >= MIN_IDLE_S {
                    idle = Some(Idle {
                        from,
                        to: end,
                        secs,
                        open_at_end: true,
                    });
                    markers.push(Marker {
                        ts: from,
                        kind: Kind::Last,
                        by: side_of_frame(c, c.last_frame),
                        frame: Some(c.last_frame),
                        label: Some(cat.get("t-label-last")),
                        what: cat.render(&Msg::new("t-last-open").s("secs", dur(cat, secs))),
                    });
                }
            }
        }
    }
    // A data dot under a more telling marker says nothing more.
    let told: std::collections::HashSet<u64> = markers
        .iter()
        .filter(|m| m.kind != Kind::Data)
        .filter_map(|m| m.frame)
        .collect();
    markers.retain(|m| m.kind != Kind::Data || m.frame.is_none_or(|f| !told.contains(&f)));
    markers.sort_by(|a, b| a.ts.cmp(&b.ts).then(a.kind.cmp(&b.kind)));
    Lane {
        vantage: leg.vantage.to_string(),
        file: al.vantages[v].flows.summary.path.clone(),
        endpoints: format!(
            "{} → {}",
            endpoint(c.orig_h, c.orig_p),
            endpoint(c.resp_h, c.resp_p)
        ),
        filter: leg_filter(c),
        life: (r(c.ts), r(last_ts)),
        markers,
        idle,
    }
}

/// The label over a FIN or RST: "RST from server".
fn end_label(cat: &Catalog, word: &str, by: Side) -> String {
    cat.render(
        &Msg::new("t-label-end")
            .s("word", word)
            .s("side", side_word(cat, by)),
    )
}

fn termination_words(cat: &Catalog, c: &Connection, t: &crate::tcp::Termination) -> String {
    let word = match t.kind {
        TerminationKind::Fin => "FIN",
        TerminationKind::Rst => "RST",
    };
    let u = &t.sender_usual;
    let mut s = cat.render(
        &Msg::new("t-termination")
            .s("word", word)
            .s("who", who(cat, c, t.by))
            .s("ttl", t.ttl)
            .s("ipid", t.ip_id.map_or("-".into(), |i| i.to_string()))
            .s("window", t.window),
    );
    if u.packets > 0 {
        s.push_str(
            &cat.render(
                &Msg::new("t-term-usual")
                    .s("ttl", u.ttl_usual)
                    .m("pattern", pattern_word(u.ip_id_pattern)),
            ),
        );
    }
    if t.idle_before_s >= MIN_IDLE_S {
        s.push_str(&cat.render(&Msg::new("t-term-after").s("secs", dur(cat, t.idle_before_s))));
    }
    s
}

/// Per vantage: a connection's first packet there (reference time, frame).
type LegStarts = BTreeMap<String, (Timestamp, u64)>;

/// The same client's next connection to the same server, at the client-side vantage, when it
/// comes soon after this one ended: (its id, its legs' first packet per vantage); for each of
/// the `drawn` paths, found in one pass over every path. A pass for each timeline was half
/// the HTML report's time (200 timelines × 26 561 paths on the 200 MB synth: 0.61 s of 1.20).
fn reconnects<'a>(
    ctx: &'a Ctx<'_>,
    drawn: &[&Path<'a>],
) -> Vec<Option<(std::borrow::Cow<'a, LinedUp>, LegStarts)>> {
    // Each drawn TCP path's (start, end, window), by what its next connection shares with it:
    // the vantage of its client-side leg, the client, the server and its port.
    let mut wants: Vec<Option<(Timestamp, Timestamp, f64)>> = Vec::with_capacity(drawn.len());
    let mut by_key: std::collections::HashMap<(usize, IpAddr, IpAddr, u16), Vec<usize>> =
        Default::default();
    for (i, p) in drawn.iter().enumerate() {
        let leg = &p.legs()[0];
        let c = ctx.conn(leg);
        if c.proto != Proto::Tcp {
            wants.push(None);
            continue;
        }
        let end = c.termination.as_ref().map_or(c.last_ts, |t| t.ts);
        let window = RECONNECT_WINDOW_S.max(c.duration_s());
        wants.push(Some((c.ts, end, window)));
        let key = (leg.at.0, c.orig_h, c.resp_h, c.resp_p);
        by_key.entry(key).or_default().push(i);
    }
    // Each one's earliest later connection so far (its index in `paths`' order, its start):
    // of equal starts the first, as `min_by_key` keeps.
    let mut next: Vec<Option<(usize, Timestamp)>> = vec![None; drawn.len()];
    for (n, q) in ctx.paths().enumerate() {
        let leg = &q.legs()[0];
        let k = ctx.conn(leg);
        if k.proto != Proto::Tcp {
            continue;
        }
        let Some(them) = by_key.get(&(leg.at.0, k.orig_h, k.resp_h, k.resp_p)) else {
            continue;
        };
        for &i in them {
            let Some((ts, end, _)) = wants[i] else {
                continue;
            };
            if k.ts > ts && k.ts >= end && next[i].is_none_or(|(_, best)| k.ts < best) {
                next[i] = Some((n, k.ts));
            }
        }
    }
    next.iter()
        .zip(&wants)
        .map(|(next, wants)| {
            let ((n, ts), (_, end, window)) = (next.as_ref()?, wants.as_ref()?);
            if ts.secs_since(*end) > *window {
                return None;
            }
            let q = ctx.path_at(*n);
            let starts = q
                .legs()
                .iter()
                .map(|l| {
                    let k = ctx.conn(l);
                    (
                        l.vantage.to_string(),
                        (ctx.reference_ts(l, k.ts), k.first_frame),
                    )
                })
                .collect();
            Some((q.lined, starts))
        })
        .collect()
}

/// The findings of each connection, looked up once: a finding may group a thousand.
fn findings_by_conn(findings: &[Finding]) -> std::collections::HashMap<&str, Vec<&Finding>> {
    let mut by_conn: std::collections::HashMap<&str, Vec<&Finding>> = Default::default();
    for f in findings {
        for c in &f.connections {
            by_conn.entry(c.as_str()).or_default().push(f);
        }
    }
    by_conn
}

/// Whether a lined-up connection gets a timeline: it carried TCP somewhere.
fn has_timeline(p: &Path<'_>) -> bool {
    p.legs().iter().any(|l| l.proto == Proto::Tcp)
}

/// One connection's timeline: a lane per leg, its markers, its reconnection.
fn timeline<'a>(
    p: &'a Path<'a>,
    reconnect: Option<(std::borrow::Cow<'a, LinedUp>, LegStarts)>,
    by_conn: &std::collections::HashMap<&str, Vec<&'a Finding>>,
    al: &'a Alignment,
    ctx: &'a Ctx<'a>,
    cat: &Catalog,
) -> Timeline<'a> {
    let mut lanes: Vec<Lane> = p.legs().iter().map(|l| lane(al, l, cat)).collect();
    let mut reconnect_words = None;
    if let Some((next, starts)) = reconnect {
        for ln in &mut lanes {
            if let Some(&(ts, frame)) = starts.get(&ln.vantage) {
                ln.markers.push(Marker {
                    ts,
                    kind: Kind::Reconnect,
                    by: Some(Side::Orig),
                    frame: Some(frame),
                    label: Some(cat.render(&Msg::new("t-label-reconnect").s("id", next.id))),
                    what: cat.render(&Msg::new("t-reconnect").s("id", next.id)),
                });
            }
        }
        let first_end = lanes
            .first()
            .and_then(|l| {
                l.markers
                    .iter()
                    .find(|m| matches!(m.kind, Kind::Fin | Kind::Rst))
            })
            .map(|m| m.ts)
            .unwrap_or(lanes[0].life.1);
        reconnect_words = Some(
            cat.render(
                &Msg::new("t-reconnect-after")
                    .s("id", next.id)
                    .s("secs", dur(cat, next.ts.secs_since(first_end).max(0.0))),
            ),
        );
    }
    // The window: every lane's life, markers and idle stretch; an idle stretch to the
    // capture end is clipped when it would squash the rest.
    let t0 = lanes
        .iter()
        .flat_map(|l| std::iter::once(l.life.0).chain(l.markers.iter().map(|m| m.ts)))
        .min()
        .unwrap();
    let busy_end = lanes
        .iter()
        .flat_map(|l| {
            std::iter::once(l.life.1)
                .chain(l.markers.iter().map(|m| m.ts))
                .chain(l.idle.iter().filter(|i| !i.open_at_end).map(|i| i.to))
        })
        .max()
        .unwrap();
    let span = busy_end.secs_since(t0).max(0.001);
    let cap = Timestamp(busy_end.0 + (span.max(20.0) * 1e9) as i64);
    let t1 = lanes
        .iter()
        .filter_map(|l| {
            l.idle
                .as_ref()
                .filter(|i| i.open_at_end)
                .map(|i| i.to.min(cap))
        })
        .fold(busy_end, |a, b| a.max(b));
    let c0 = ctx.conn(&p.legs()[0]);
    let client = format!(
        "{} {} → {}",
        p.legs()[0].vantage,
        endpoint(c0.orig_h, c0.orig_p),
        endpoint(c0.resp_h, c0.resp_p)
    );
    let end = match &c0.termination {
        Some(t) => cat.render(
            &Msg::new("t-end")
                .s(
                    "word",
                    match t.kind {
                        TerminationKind::Fin => "FIN",
                        TerminationKind::Rst => "RST",
                    },
                )
                .s("side", side_word(cat, t.by))
                .s("vantage", &p.legs()[0].vantage),
        ),
        None => cat.render(&Msg::new("t-end-open").s("vantage", &p.legs()[0].vantage)),
    };
    let findings = by_conn
        .get(p.lined.id.as_str())
        .cloned()
        .unwrap_or_default();
    Timeline {
        lined: p.lined.clone(),
        lanes,
        t0,
        t1,
        findings,
        end,
        client,
        reconnect: reconnect_words,
    }
}

/// A round step for about `n` ticks over `span` seconds.
fn tick_step(span: f64, n: f64) -> f64 {
    let raw = (span / n).max(1e-6);
    let p = 10f64.powf(raw.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * p >= raw {
            return m * p;
        }
    }
    10.0 * p
}

fn fmt_tick(cat: &Catalog, x: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    cat.render(&Msg::new("secs").s("s", format!("+{x:.decimals$}")))
}

fn n1(x: f64) -> String {
    format!("{x:.1}")
}

/// Label placement: three rows above the lane's line; a label that fits nowhere is left to the
/// hover text.
struct Rows {
    taken: [Vec<(f64, f64)>; 3],
}

impl Rows {
    fn place(&mut self, x: f64, w: f64) -> Option<(usize, f64)> {
        let x = x.clamp(PLOT_L + w / 2.0, PLOT_R - w / 2.0);
        let (a, b) = (x - w / 2.0 - 3.0, x + w / 2.0 + 3.0);
        for (row, taken) in self.taken.iter_mut().enumerate() {
            if taken.iter().all(|&(c, d)| b <= c || a >= d) {
                taken.push((a, b));
                return Some((row, x));
            }
        }
        None
    }
}

fn marker_shape(kind: Kind, x: f64, y: f64) -> Markup {
    let col = kind.colour();
    match kind {
        Kind::Data => html! {
            circle.s cx=(n1(x)) cy=(n1(y)) r="2.6" fill=(col) {}
        },
        Kind::Heartbeat => {
            let (a, b) = if y < LINE_Y {
                (y - 6.0, y + 5.0)
            } else if y > LINE_Y {
                (y - 5.0, y + 6.0)
            } else {
                (y - 6.0, y + 6.0)
            };
            html! {
                rect x=(n1(x - 3.5)) y=(n1(a)) width="7" height=(n1(b - a)) fill="transparent" {}
                line.s x1=(n1(x)) x2=(n1(x)) y1=(n1(a)) y2=(n1(b)) stroke=(col) stroke-width="2.2" stroke-linecap="round" {}
            }
        }
        Kind::Retrans => html! {
            path.s d=(format!("M{} {}l7 7m0 -7l-7 7", n1(x - 3.5), n1(y - 3.5))) stroke=(col) stroke-width="2.2" fill="none" {}
        },
        Kind::Syn => html! {
            polygon.s points=(format!("{},{} {},{} {},{}", n1(x - 4.0), n1(y - 6.0), n1(x + 6.0), n1(y), n1(x - 4.0), n1(y + 6.0))) fill=(col) stroke=(col) stroke-width="1" {}
        },
        Kind::SynAck => html! {
            polygon.s points=(format!("{},{} {},{} {},{}", n1(x - 4.0), n1(y - 5.0), n1(x + 5.0), n1(y), n1(x - 4.0), n1(y + 5.0))) fill="#ffffff" stroke=(col) stroke-width="1.6" {}
        },
        Kind::Upgrade => html! {
            polygon.s points=(format!("{},{} {},{} {},{} {},{}", n1(x), n1(y - 6.5), n1(x + 6.5), n1(y), n1(x), n1(y + 6.5), n1(x - 6.5), n1(y))) fill=(col) stroke=(col) stroke-width="1" {}
        },
        Kind::Sip => html! {
            rect.s x=(n1(x - 4.5)) y=(n1(y - 4.5)) width="9" height="9" rx="2" fill=(col) stroke=(col) stroke-width="1" {}
        },
        Kind::Last => html! {
            circle.s cx=(n1(x)) cy=(n1(y)) r="5" fill="#ffffff" stroke=(col) stroke-width="2" {}
        },
        Kind::Reconnect => html! {
            line.s x1=(n1(x)) x2=(n1(x)) y1=(n1(LINE_Y - 16.0)) y2=(n1(LINE_Y + 16.0)) stroke=(col) stroke-width="2.5" stroke-dasharray="4 3" {}
            polygon points=(format!("{},{} {},{} {},{}", n1(x), n1(LINE_Y - 21.0), n1(x + 7.0), n1(LINE_Y - 16.0), n1(x), n1(LINE_Y - 11.0))) fill=(col) {}
        },
        Kind::Fin | Kind::Rst => html! {
            rect x=(n1(x - 5.0)) y=(n1(LINE_Y - 18.0)) width="10" height="36" fill="transparent" {}
            line.s x1=(n1(x)) x2=(n1(x)) y1=(n1(LINE_Y - 17.0)) y2=(n1(LINE_Y + 17.0)) stroke=(col) stroke-width="4" stroke-linecap="round" {}
            circle cx=(n1(x)) cy=(n1(y)) r="4.5" fill=(col) {}
        },
    }
}

fn marker_y(m: &Marker) -> f64 {
    // TCP's own events sit on the line (their labels say who sent them); the application's
    // and the packets', above (client) or below (server).
    if matches!(
        m.kind,
        Kind::Syn | Kind::SynAck | Kind::Fin | Kind::Rst | Kind::Last | Kind::Reconnect
    ) {
        return LINE_Y;
    }
    match m.by {
        Some(Side::Orig) => LINE_Y - SIDE_DY,
        Some(Side::Resp) => LINE_Y + SIDE_DY,
        None => LINE_Y,
    }
}

/// Evidence frames: (vantage, frame) -> finding ids.
type EvidenceIndex = BTreeMap<(String, u64), Vec<String>>;

fn lane_svg(
    ln: &Lane,
    y0: f64,
    x: &dyn Fn(Timestamp) -> f64,
    ev: &EvidenceIndex,
    cat: &Catalog,
) -> Markup {
    let mut rows = Rows {
        taken: [Vec::new(), Vec::new(), Vec::new()],
    };
    // Labels: by priority, then time.
    let mut order: Vec<usize> = (0..ln.markers.len())
        .filter(|&i| ln.markers[i].label.is_some())
        .collect();
    order.sort_by_key(|&i| (ln.markers[i].kind.label_priority(), ln.markers[i].ts));
    let mut labels: Vec<(usize, usize, f64)> = Vec::new();
    for i in order {
        let m = &ln.markers[i];
        let text = m.label.as_deref().unwrap_or_default();
        let w = label_width(text);
        if let Some((row, lx)) = rows.place(x(m.ts), w) {
            labels.push((i, row, lx));
        }
    }
    let idle = ln.idle.as_ref().map(|i| {
        let (a, b) = (x(i.from), x(i.to).min(PLOT_R));
        let text = cat.render(
            &Msg::new(if i.open_at_end {
                "t-idle-open"
            } else {
                "t-idle"
            })
            .s("secs", dur(cat, i.secs)),
        );
        (a, b, text, i)
    });
    let (l0, l1) = (x(ln.life.0), x(ln.life.1));
    html! {
        g class="lane" data-vantage=(ln.vantage) transform=(format!("translate(0,{})", n1(y0))) {
            rect.lane-bg x="0" y="2" width=(W) height=(n1(LANE_H - 4.0)) rx="6" {}
            g.lane-label {
                title {
                    (cat.render(&Msg::new("t-lane-file").s("vantage", &ln.vantage).s("file", &ln.file)))
                    "\n" (ln.endpoints) "\n"
                    (cat.render(&Msg::new("t-filter").s("filter", &ln.filter)))
                }
                text.vname x="14" y=(n1(LINE_Y - 4.0)) { (ln.vantage) }
                text.tuple x="14" y=(n1(LINE_Y + 13.0)) { (ln.endpoints) }
            }
            @if let Some((a, b, text, i)) = &idle {
                g class="idle" data-secs=(format!("{:.3}", i.secs)) {
                    title { (cat.render(&Msg::new("t-idle-title").s("text", text))) }
                    rect x=(n1(*a)) y="6" width=(n1((b - a).max(1.5))) height=(n1(LANE_H - 12.0)) rx="3" {}
                    text x=(n1(((a + b) / 2.0).clamp(PLOT_L + 60.0, PLOT_R - 60.0))) y=(n1(IDLE_LABEL_Y)) text-anchor="middle" { (text) }
                }
            }
            line.life x1=(n1(l0)) x2=(n1(l1.max(l0 + 1.0))) y1=(n1(LINE_Y)) y2=(n1(LINE_Y)) {}
            @if let Some((_, b, _, i)) = &idle {
                @if i.open_at_end {
                    line.life.open x1=(n1(l1)) x2=(n1(*b)) y1=(n1(LINE_Y)) y2=(n1(LINE_Y)) {}
                }
            }
            @for m in &ln.markers {
                @let ids = m.frame.and_then(|f| ev.get(&(ln.vantage.clone(), f)));
                @let filter = m.frame.map_or_else(|| ln.filter.clone(), |f| format!("frame.number == {f}"));
                @let class = if ids.is_some() { format!("marker {} ev", m.kind.class()) } else { format!("marker {}", m.kind.class()) };
                g class=(class) data-frame=[m.frame] data-filter=(filter) tabindex="0" {
                    title {
                        (m.what) "\n"
                        @match m.frame {
                            Some(f) => (cat.render(&Msg::new("t-frame").s("vantage", &ln.vantage).s("frame", f).s("ts", m.ts.tcpdump()))),
                            None => (cat.render(&Msg::new("t-frame-not-kept").s("vantage", &ln.vantage).s("ts", m.ts.tcpdump()))),
                        }
                        @if let Some(ids) = ids { "\n" (cat.render(&Msg::new("t-evidence-for").s("ids", ids.join(&cat.get("list-sep"))))) }
                        "\n" (cat.render(&Msg::new("t-filter").s("filter", &filter)))
                    }
                    (marker_shape(m.kind, x(m.ts), marker_y(m)))
                }
            }
            @for (i, row, lx) in &labels {
                @let m = &ln.markers[*i];
                text class=(format!("label {}", m.kind.class())) x=(n1(*lx)) y=(n1(ROW_Y[*row])) text-anchor="middle" {
                    (m.label.as_deref().unwrap_or_default())
                }
            }
        }
    }
}

fn timeline_svg(t: &Timeline<'_>, ev: &EvidenceIndex, cat: &Catalog) -> Markup {
    let span = t.t1.secs_since(t.t0).max(0.001);
    let pad = span * 0.02;
    let (a, b) = (-pad, span + pad);
    let t0 = t.t0;
    let x = move |ts: Timestamp| PLOT_L + (ts.secs_since(t0) - a) / (b - a) * (PLOT_R - PLOT_L);
    let h = TOP + LANE_H * t.lanes.len() as f64 + AXIS_H;
    let step = tick_step(span, 8.0);
    let ticks: Vec<f64> = (0..)
        .map(|i| i as f64 * step)
        .take_while(|v| *v <= b)
        .collect();
    let axis_y = TOP + LANE_H * t.lanes.len() as f64;
    html! {
        svg.timeline xmlns="http://www.w3.org/2000/svg" viewBox=(format!("0 0 {} {}", W, n1(h))) role="img" data-conn=(t.lined.id) {
            title { (cat.render(&Msg::new("t-svg-title").s("id", t.lined.id).s("client", &t.client))) }
            @for v in &ticks {
                @let tx = x(Timestamp(t0.0 + (v * 1e9).round() as i64));
                line.grid x1=(n1(tx)) x2=(n1(tx)) y1=(n1(TOP)) y2=(n1(axis_y + 4.0)) {}
            }
            @for (i, ln) in t.lanes.iter().enumerate() {
                (lane_svg(ln, TOP + LANE_H * i as f64, &x, ev, cat))
            }
            g.axis {
                line x1=(n1(PLOT_L)) x2=(n1(PLOT_R)) y1=(n1(axis_y + 4.0)) y2=(n1(axis_y + 4.0)) {}
                @for v in &ticks {
                    @let tx = x(Timestamp(t0.0 + (v * 1e9).round() as i64));
                    text x=(n1(tx)) y=(n1(axis_y + 20.0)) text-anchor="middle" { (fmt_tick(cat, *v, step)) }
                }
                text.axis-note x="14" y=(n1(axis_y + 20.0)) { (cat.render(&Msg::new("t-axis-from").s("ts", t.t0.tcpdump()))) }
            }
        }
    }
}

fn legend(cat: &Catalog) -> Markup {
    let items = [
        (Kind::Syn, cat.get("h-legend-syn")),
        (Kind::Upgrade, cat.get("h-legend-upgrade")),
        (Kind::Heartbeat, cat.get("h-legend-heartbeat")),
        (Kind::Sip, cat.get("h-legend-sip")),
        (Kind::Data, cat.get("h-legend-data")),
        (Kind::Retrans, cat.get("h-legend-retrans")),
        (Kind::Last, cat.get("h-legend-last")),
        (Kind::Rst, "RST".to_string()),
        (Kind::Fin, "FIN".to_string()),
        (Kind::Reconnect, cat.get("h-legend-reconnect")),
    ];
    html! {
        div.legend {
            @for (k, text) in items {
                span.item {
                    svg xmlns="http://www.w3.org/2000/svg" viewBox=(format!("0 {} 22 24", n1(LINE_Y - 12.0))) width="22" height="24" {
                        g class=(format!("key {}", k.class())) { (marker_shape(k, 11.0, LINE_Y)) }
                    }
                    (text)
                }
            }
            span.item {
                svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 26 16" width="26" height="16" {
                    g.idle { rect x="1" y="1" width="24" height="14" rx="3" {} }
                }
                (cat.get("h-legend-idle"))
            }
            span.item.note { (cat.get("h-legend-note")) }
        }
    }
}

fn severity_word(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

fn method_word(l: &LinedUp) -> String {
    serde_json::to_value(l.matched.method)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

const CSS: &str = r#"
:root{--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--soft:#f6f8fa;--crit:#d1242f;--warn:#e8590c;--info:#0969da;--ok:#1f883d}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Liberation Sans","DejaVu Sans",Arial,sans-serif;color:var(--fg);background:#fff}
main{max-width:1360px;margin:0 auto;padding:20px 28px 48px}
h1{font-size:24px;margin:0 0 2px}
h2{font-size:19px;margin:30px 0 10px;padding-bottom:4px;border-bottom:1px solid var(--line)}
h3{font-size:16px;margin:0;display:inline}
a{color:var(--info);text-decoration:none}a:hover{text-decoration:underline}
.sub{color:var(--muted);font-size:13px;margin:0}
.verdict{border-left:6px solid var(--crit);background:#fff4f4;padding:12px 18px;border-radius:6px;margin:16px 0}
.verdict.warning{border-color:var(--warn);background:#fff7f0}.verdict.info{border-color:var(--info);background:#f1f7ff}.verdict.healthy{border-color:var(--ok);background:#effbf2}
.verdict .main{font-size:18px;font-weight:600;margin:0 0 4px}
.verdict .conf{margin:0;color:var(--muted);font-size:14px}
table{border-collapse:collapse;width:100%;font-size:13.5px;margin:8px 0 12px}
th,td{border:1px solid var(--line);padding:5px 8px;text-align:left;vertical-align:top}
th{background:var(--soft);font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.time{white-space:nowrap;font-variant-numeric:tabular-nums}
code{font:12.5px/1.45 ui-monospace,"SFMono-Regular","DejaVu Sans Mono","Liberation Mono",Menlo,monospace;background:var(--soft);border:1px solid var(--line);border-radius:4px;padding:1px 5px;overflow-wrap:anywhere}
.sev{display:inline-block;padding:0 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff;line-height:19px}
.sev.critical{background:var(--crit)}.sev.warning{background:var(--warn)}.sev.info{background:var(--info)}
details{border:1px solid var(--line);border-radius:8px;margin:10px 0;background:#fff}
details>summary{cursor:pointer;padding:8px 12px;background:var(--soft);border-radius:8px;list-style-position:inside}
details[open]>summary{border-bottom:1px solid var(--line);border-radius:8px 8px 0 0}
.body{padding:6px 14px 12px}
.body p{margin:6px 0}
ul.filters{padding-left:18px;margin:6px 0}ul.filters li{margin:3px 0}
.badge{display:inline-block;font-size:12px;font-weight:600;border-radius:10px;padding:0 7px;margin-left:4px;color:#fff;line-height:19px}
.badge.critical{background:var(--crit)}.badge.warning{background:var(--warn)}.badge.info{background:var(--info)}
.muted{color:var(--muted)}
.legend{display:flex;flex-wrap:wrap;gap:4px 18px;font-size:13px;margin:6px 0 10px;align-items:center}
.legend .item{display:inline-flex;align-items:center;gap:5px}
.legend .note{color:var(--muted)}
svg.timeline{width:100%;height:auto;display:block;margin-top:6px}
svg text{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Liberation Sans","DejaVu Sans",Arial,sans-serif}
.lane-bg{fill:#fafbfc}
.lane:nth-of-type(even) .lane-bg{fill:#f3f5f7}
.vname{font-size:14px;font-weight:700;fill:#1f2328}
.tuple{font-size:11px;fill:#59636e}
.life{stroke:#aab3bd;stroke-width:2}
.life.open{stroke-dasharray:3 4}
.grid{stroke:#e3e7eb;stroke-width:1}
.axis line{stroke:#8c959f}
.axis text{font-size:11.5px;fill:#59636e}
.axis-note{font-size:11px}
.idle rect{fill:#fff3bf;stroke:#f2d062;stroke-width:1}
.idle text{font-size:12px;font-weight:600;fill:#8a6100}
.label{font-size:11px;font-weight:600}
.label.rst{fill:#d1242f}.label.fin{fill:#c4460a}.label.syn{fill:#1f883d}.label.upgrade{fill:#0969da}.label.sip{fill:#8250df}.label.last{fill:#24292f}.label.reconnect{fill:#0a7c86}
.marker{cursor:pointer;outline:none}
.marker:hover .s,.marker:focus .s{stroke:#000;stroke-width:3}
.marker.data:hover .s,.marker.data:focus .s{stroke-width:1.5}
.hoverinfo{font-size:13px;color:var(--muted);min-height:1.7em;padding:4px 2px 0;white-space:pre-wrap}
.hoverinfo b{color:var(--fg)}
footer{margin-top:36px;color:var(--muted);font-size:12px}
"#;

/// Optional: copies a marker's text and filter into the panel under its timeline on hover,
/// focus or tap (the `<title>` tooltips work without it).
const JS: &str = r#"
document.querySelectorAll('svg.timeline').forEach(function (svg) {
  var info = svg.parentNode.querySelector('.hoverinfo');
  if (!info) return;
  svg.querySelectorAll('.marker').forEach(function (m) {
    function show() {
      var t = m.querySelector('title');
      var lines = t ? t.textContent.split('\n') : [];
      info.textContent = '';
      var b = document.createElement('b');
      b.textContent = lines.shift() || '';
      info.appendChild(b);
      var rest = lines.filter(function (l) { return l.indexOf('filter: ') !== 0; });
      info.appendChild(document.createTextNode(' · ' + rest.join(' · ') + ' · '));
      var code = document.createElement('code');
      code.textContent = m.getAttribute('data-filter') || '';
      info.appendChild(code);
    }
    m.addEventListener('mouseenter', show);
    m.addEventListener('focus', show);
    m.addEventListener('click', show);
  });
});
"#;

/// The script, with the filter line's prefix in the page's language ("filter: ").
fn js(cat: &Catalog) -> String {
    let prefix = cat.render(&Msg::new("t-filter").s("filter", ""));
    JS.replace(
        "'filter: '",
        &format!("'{}'", prefix.replace(['\'', '\\', '<'], "")),
    )
}

fn finding_section(f: &Finding, cat: &Catalog) -> Markup {
    html! {
        details.finding id=(f.id) open {
            summary {
                span class=(format!("sev {}", severity_word(f.severity))) { (super::severity_words(cat, f.severity)) }
                " "
                h3 { (f.id) " " code { (f.kind.name()) } }
                " " (f.summary)
            }
            div.body {
                p { (f.explanation) }
                @if f.single_vantage {
                    p.muted { (cat.get("h-single-vantage")) }
                }
                @if !f.evidence.is_empty() {
                    table.evidence {
                        thead { tr { th { (cat.get("r-col-time")) } th { (cat.get("r-col-vantage")) } th { (cat.get("r-col-frame")) } th { (cat.get("r-col-what")) } } }
                        tbody {
                            @for e in &f.evidence {
                                tr {
                                    td.time { (e.ts.tcpdump()) }
                                    td { (e.vantage) }
                                    td.num { (e.frame) }
                                    td { (e.what) }
                                }
                            }
                        }
                    }
                }
                @if !f.display_filters.is_empty() {
                    ul.filters {
                        @for df in &f.display_filters {
                            li { (cat.render(&Msg::new("r-wireshark-label").s("vantage", &df.vantage))) " (" code { (df.file) } "): " code.filter { (df.filter) } }
                        }
                    }
                }
                p { b { (cat.get("r-recommendation")) " " } (f.recommendation) }
            }
        }
    }
}

fn timeline_section(t: &Timeline<'_>, ev: &EvidenceIndex, cat: &Catalog) -> Markup {
    let lived = t.lanes[0].life.1.secs_since(t.lanes[0].life.0);
    html! {
        details.conn id=(format!("conn-{}", t.lined.id)) data-conn=(t.lined.id) open[!t.findings.is_empty()] {
            summary {
                h3 { (t.lined.id) }
                " · " (t.client)
                " · " (cat.render(&Msg::new("t-vantages").n("n", t.lanes.len())))
                " · " (cat.render(&Msg::new("t-lived").s("secs", dur(cat, lived)).s("vantage", &t.lanes[0].vantage)))
                " · " (t.end)
                @if let Some(r) = &t.reconnect { " · " (r) }
                @for f in &t.findings {
                    a class=(format!("badge {}", severity_word(f.severity))) href=(format!("#{}", f.id)) title=(f.kind.name()) { (f.id) }
                }
            }
            div.body {
                p.muted {
                    (cat.get("h-match")) " " code { (method_word(&t.lined)) } " " (format!("{:.2}", t.lined.matched.confidence))
                    (cat.get("h-lanes-note"))
                }
                (timeline_svg(t, ev, cat))
                div.hoverinfo { (cat.get("h-hover")) }
            }
        }
    }
}

/// The whole page.
pub fn render(d: &Diagnosis, al: &Alignment) -> String {
    let cat = super::catalog_of(d);
    let ctx = Ctx::new(al);
    // Read once, whole: the page links findings, connections and evidence both ways, and its
    // timelines are capped, not its findings (`Findings` are read one at a time elsewhere).
    let findings: Vec<Finding> = d.findings.iter().collect();
    let by_conn = findings_by_conn(&findings);
    let eligible: Vec<Path<'_>> = ctx.paths().filter(has_timeline).collect();
    let total_tcp = eligible.len();
    // Connections with findings first in importance, but pages read in id order: keep the
    // order, keep the first connections with findings up to the cap (a grouped finding may name
    // thousands), then quiet ones in the room left. Chosen before any is drawn: drawing all of
    // them (26 561 on the 200 MB synth, each looking for its reconnection among all the others)
    // took 28 s and 500 MB to keep 200.
    let mut quiet_kept = 0;
    let mut found_kept = 0;
    let found = |p: &Path<'_>| by_conn.contains_key(p.lined.id.as_str());
    let with_findings = eligible.iter().filter(|p| found(p)).count();
    let room = MAX_TIMELINES.saturating_sub(with_findings);
    let drawn: Vec<&Path<'_>> = eligible
        .iter()
        .filter(|p| {
            if found(p) {
                found_kept += 1;
                return found_kept <= MAX_TIMELINES;
            }
            quiet_kept += 1;
            quiet_kept <= room
        })
        .collect();
    let all: Vec<Timeline<'_>> = drawn
        .iter()
        .zip(reconnects(&ctx, &drawn))
        .map(|(p, next)| timeline(p, next, &by_conn, al, &ctx, &cat))
        .collect();
    let left_out = total_tcp - all.len();
    let udp = d.connections.len() - total_tcp;
    let mut ev: EvidenceIndex = BTreeMap::new();
    for f in &findings {
        for e in &f.evidence {
            let ids = ev.entry((e.vantage.to_string(), e.frame)).or_default();
            if !ids.contains(&f.id) {
                ids.push(f.id.clone());
            }
        }
    }
    let worst = findings.iter().map(|f| f.severity).max();
    let verdict_class = match worst {
        None => "verdict healthy",
        Some(Severity::Critical) => "verdict critical",
        Some(Severity::Warning) => "verdict warning",
        Some(Severity::Info) => "verdict info",
    };
    let page = html! {
        (DOCTYPE)
        html lang=(d.lang) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (cat.render(&Msg::new("h-title").s("summary", &d.verdict.summary))) }
                style { (PreEscaped(CSS)) }
            }
            body {
                main {
                    header {
                        h1 { (cat.get("r-title")) }
                        p.sub {
                            @for (i, c) in d.captures.iter().enumerate() {
                                @if i > 0 { " · " }
                                b { (c.name) } " " code { (c.summary.path) }
                                @if c.name == d.reference { " " (cat.get("h-reference-clock")) }
                            }
                        }
                    }
                    section class=(verdict_class) id="verdict" {
                        p.main { (d.verdict.summary) }
                        p.conf { (cat.render(&Msg::new("r-confidence-cap").s("pct", format!("{:.0}", d.verdict.confidence * 100.0)))) (cat.get("sentence-sep")) (d.verdict.would_change) }
                    }
                    @if al.vantages.len() == 1 {
                        p.muted { (cat.get("r-one-capture")) }
                    }
                    h2 { (cat.get("r-findings")) }
                    @if findings.is_empty() {
                        p { (cat.get("r-no-findings")) }
                    } @else {
                        table.findings {
                            thead { tr { th { (cat.get("r-col-id")) } th { (cat.get("r-col-severity")) } th { (cat.get("r-col-kind")) } th { (cat.get("r-col-connections")) } th { (cat.get("r-col-summary")) } } }
                            tbody {
                                @for f in &findings {
                                    tr {
                                        td { a href=(format!("#{}", f.id)) { (f.id) } }
                                        td { span class=(format!("sev {}", severity_word(f.severity))) { (super::severity_words(&cat, f.severity)) } }
                                        td { code { (f.kind.name()) } }
                                        td {
                                            @for (i, c) in f.connections.iter().take(super::MAX_IDS).enumerate() {
                                                @if i > 0 { " " }
                                                a href=(format!("#conn-{c}")) { (c) }
                                            }
                                            @if f.connections.len() > super::MAX_IDS {
                                                " " (cat.render(&Msg::new("r-more-ids").n("n", f.connections.len() - super::MAX_IDS)))
                                            }
                                        }
                                        td { (f.summary) }
                                    }
                                }
                            }
                        }
                    }
                    h2 { (cat.get("h-timelines")) }
                    p.muted {
                        (cat.render(&Msg::new("h-timelines-intro").s("reference", &d.reference)))
                        @if udp > 0 {
                            (cat.get("sentence-sep")) (cat.render(&Msg::new("h-udp-listed").n("n", udp)))
                        }
                    }
                    (legend(&cat))
                    @if all.is_empty() {
                        p { (cat.get("h-no-tcp")) }
                    }
                    @for t in &all { (timeline_section(t, &ev, &cat)) }
                    @if left_out > 0 {
                        p.muted {
                            (cat.render(&Msg::new("h-left-out").n("n", left_out).n("max", MAX_TIMELINES)))
                            " " code { "vantage timeline --conn ID" } " " (cat.get("h-left-out-after"))
                        }
                    }
                    @if !findings.is_empty() {
                        h2 { (cat.get("h-evidence")) }
                        @for f in &findings { (finding_section(f, &cat)) }
                    }
                    h2 { (cat.get("r-clock-offsets")) }
                    table.offsets {
                        thead { tr { th { (cat.get("r-col-vantage")) } th { (cat.get("r-col-offset")) } th { (cat.get("r-col-bound")) } th { (cat.get("r-col-method")) } th { (cat.get("r-col-samples")) } } }
                        tbody {
                            tr { td { (cat.render(&Msg::new("r-reference").s("name", &d.reference))) } td.num { "0" } td.num { "0" } td { "-" } td.num { "-" } }
                            @for o in &d.clock_offsets {
                                tr {
                                    td { (o.vantage) }
                                    td.num { (format!("{:+.6}", o.offset_s)) }
                                    td.num { (format!("{:.6}", o.bound_s)) }
                                    td { code { (o.method) } }
                                    td.num { (o.samples) }
                                }
                            }
                        }
                    }
                    h2 { (cat.get("r-lined-up")) }
                    table.connections {
                        thead { tr { th { (cat.get("r-col-id")) } th { (cat.get("r-col-start")) } th { (cat.get("r-col-legs")) } th { (cat.get("r-col-match")) } } }
                        tbody {
                            @for l in d.connections.iter().take(super::MAX_ROWS) {
                                tr {
                                    td {
                                        @if all.iter().any(|t| t.lined.id == l.id) {
                                            a href=(format!("#conn-{}", l.id)) { (l.id) }
                                        } @else { (l.id) }
                                    }
                                    td.time { (l.ts.tcpdump()) }
                                    td {
                                        @for (i, g) in l.legs.iter().enumerate() {
                                            @if i > 0 { br; }
                                            b { (g.vantage) } ": " (endpoint(g.src, g.sport)) " > " (endpoint(g.dst, g.dport))
                                            @if g.proto == Proto::Udp { " udp" }
                                        }
                                    }
                                    td { code { (method_word(&l)) } " " (format!("{:.2}", l.matched.confidence)) }
                                }
                            }
                        }
                    }
                    @if d.connections.len() > super::MAX_ROWS {
                        p.muted { (cat.render(&Msg::new("r-more-rows").n("n", d.connections.len() - super::MAX_ROWS))) }
                    }
                    h2 { (cat.get("r-captures")) }
                    table.captures {
                        thead { tr { th { (cat.get("r-col-vantage")) } th { (cat.get("r-col-file")) } th { (cat.get("r-col-packets")) } th { (cat.get("r-col-first")) } th { (cat.get("r-col-last")) } th { (cat.get("r-col-link-types")) } } }
                        tbody {
                            @for c in &d.captures {
                                tr {
                                    td { (c.name) }
                                    td { code { (c.summary.path) } }
                                    td.num { (c.summary.packets) }
                                    td.time { (c.summary.first_ts.map_or("-".into(), |t| t.tcpdump())) }
                                    td.time { (c.summary.last_ts.map_or("-".into(), |t| t.tcpdump())) }
                                    td { (c.summary.link_types.join(", ")) }
                                }
                            }
                        }
                    }
                    @for c in &d.captures {
                        @for w in &c.summary.warnings {
                            p.muted { (cat.get("r-warning")) " " code { (c.summary.path) } ": " (cat.render(&w.msg)) }
                        }
                    }
                    footer { "vantage " (env!("CARGO_PKG_VERSION")) " · schema " (d.schema_version) }
                }
                script { (PreEscaped(js(&cat))) }
            }
        }
    };
    let mut s = page.into_string();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::beats_drawn;

    #[test]
    fn a_long_heartbeat_draws_its_late_beats_within_the_cap() {
        // 1000 beats 25 s apart, three of them late (60 s: a throttled tab).
        let mut intervals = vec![25.0; 999];
        for i in [100, 500, 998] {
            intervals[i] = 60.0;
        }
        let drawn = beats_drawn(&intervals, 25.0, 150);
        assert!(drawn.len() <= 150, "{}", drawn.len());
        assert!(drawn.len() > 100, "{}", drawn.len());
        for i in [0, 101, 501, 999] {
            assert!(drawn.contains(&i), "beat {i} not drawn");
        }
        assert!(drawn.windows(2).all(|w| w[0] < w[1]));
        // Few beats: every one.
        assert_eq!(
            beats_drawn(&[25.0; 9], 25.0, 150),
            (0..10).collect::<Vec<_>>()
        );
    }
}
