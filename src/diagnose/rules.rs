//! The diagnosis rules, one small function each: evidence in, findings out. Each doc comment
//! says what the rule looks for, why that points where it does, and the source of any default.

use crate::align::{Leg, MatchMethod};
use crate::capture::Timestamp;
use crate::tcp::{Connection, Gap, SampleKind, Side, TerminationKind};

use super::defaults;
use super::{
    display_filters, side_name, Ctx, Evidence, Finding, FindingKind, Numbers, Path, Severity,
    Verdict,
};

/// A silence shorter than this is ordinary traffic, not an idle period a middlebox would act
/// on: the shortest documented default we know is 15 s, the lab scales to 5 s; 1 s keeps
/// RTT-scale pauses out.
pub const MIN_IDLE_S: f64 = 1.0;
/// How close (seconds) a middlebox's packets on two legs must be to count as one decision.
pub const SAME_DECISION_S: f64 = 0.05;
/// A packet that answers another within this time was provoked by it (a RST answering a
/// keep-alive arrives within an RTT; 1 s is generous for any path).
pub const PROVOKED_S: f64 = 1.0;

/// A connection that a middlebox ended: what the idle-timeout rule clusters.
#[derive(Clone, Debug)]
pub struct Death {
    pub conn: String,
    /// The silence that proved fatal.
    pub silence_s: f64,
    /// `timer`: the middlebox acted by itself after the silence (its packet ended the
    /// silence). `next_packet`: the first packet after the silence met a forgotten flow.
    pub at_timer: bool,
    /// Longest silence this connection survived before the fatal one.
    pub survived_s: Option<f64>,
    /// Where on the path.
    pub hop: String,
    /// When the middlebox acted (reference time) and the last good packet before.
    pub at: Timestamp,
    pub last_good: Timestamp,
}

/// Runs every rule.
pub fn run_all(ctx: &Ctx<'_>) -> Vec<Finding> {
    let mut findings = run_rules(ctx);
    for f in &mut findings {
        f.evidence
            .sort_by(|a, b| a.ts.cmp(&b.ts).then(a.vantage.cmp(&b.vantage)));
    }
    findings
}

fn run_rules(ctx: &Ctx<'_>) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut deaths = Vec::new();
    for p in &ctx.paths {
        if let Some((f, d)) = middlebox_end(ctx, p) {
            findings.push(f);
            deaths.push(d);
        } else if let Some((f, d)) = middlebox_reset_single(ctx, p) {
            findings.push(f);
            deaths.push(d);
        } else if let Some((f, d)) = silent_drop(ctx, p) {
            findings.push(f);
            deaths.push(d);
        }
    }
    let idle = idle_timeout(ctx, &deaths);
    if let Some(f) = &idle {
        findings.extend(heartbeat_too_slow(ctx, &deaths, f));
    }
    if let Some(f) = idle {
        findings.push(f);
    }
    findings.extend(call_cut(ctx, &deaths));
    findings.extend(half_open(ctx, &deaths));
    findings.extend(l7_proxy(ctx));
    if let Some(f) = weak_network(ctx, &deaths) {
        findings.push(f);
    }
    findings.extend(agent_outage(ctx, &deaths));
    findings
}

fn other(s: Side) -> Side {
    match s {
        Side::Orig => Side::Resp,
        Side::Resp => Side::Orig,
    }
}

fn kind_word(k: TerminationKind) -> &'static str {
    match k {
        TerminationKind::Fin => "FIN",
        TerminationKind::Rst => "RST",
    }
}

/// The silence just before `ts` (the one that ends at or right before it), if long enough.
fn silence_before(c: &Connection, frame: u64, ts: Timestamp) -> Option<Gap> {
    c.silences
        .iter()
        .filter(|g| g.to_frame <= frame && g.secs >= MIN_IDLE_S)
        .filter(|g| {
            let end = Timestamp(g.from_ts.0 + (g.secs * 1e9) as i64);
            ts.secs_since(end) <= PROVOKED_S
        })
        .max_by(|a, b| a.to_frame.cmp(&b.to_frame))
        .copied()
}

/// The longest silence of `c` that is not `fatal` and ended before it: a silence the
/// connection lived through.
fn survived(c: &Connection, fatal: &Gap) -> Option<f64> {
    c.silences
        .iter()
        .filter(|g| g.to_frame < fatal.to_frame)
        .map(|g| g.secs)
        .fold(None, |m: Option<f64>, s| Some(m.map_or(s, |m| m.max(s))))
}

/// **middlebox_reset / middlebox_close, across vantages.** A RST or FIN that reached one leg
/// "from" an endpoint, while the leg nearest that endpoint shows the endpoint never sent it:
/// there, the connection either goes on, or ends by the other side first. So the packet was
/// made between the last leg that saw it and the first that did not. A FIN made that way is a
/// proxy closing on its own timer (it closes both legs: the other leg's first FIN comes from
/// the proxy's side); a RST is a NAT, firewall or balancer that forgot the flow
/// (RFC 9293 §3.10.7.1: a RST answers a segment of an unknown connection).
fn middlebox_end(ctx: &Ctx<'_>, p: &Path<'_>) -> Option<(Finding, Death)> {
    if p.legs.len() < 2 {
        return None;
    }
    // The end as the client saw it: the first leg (client side) with a termination by resp,
    // or the last leg (server side) with a termination by orig.
    for sender in [Side::Resp, Side::Orig] {
        let order: Vec<&Leg> = match sender {
            Side::Resp => p.legs.clone(),
            Side::Orig => p.legs.iter().rev().copied().collect(),
        };
        // `order[0]` is the far end from the supposed sender, `order.last()` the sender's.
        let t0 = ctx.conn(order[0]).termination.as_ref()?;
        if t0.by != sender {
            continue;
        }
        let t0_ref = ctx.reference_ts(order[0], t0.ts);
        // Walk toward the sender while the legs saw the same end from the sender.
        let mut last_seen = 0;
        for (i, leg) in order.iter().enumerate().skip(1) {
            let c = ctx.conn(leg);
            let saw = c.termination.as_ref().is_some_and(|t| {
                t.by == sender
                    && ctx.reference_ts(leg, t.ts).secs_since(t0_ref).abs()
                        <= SAME_DECISION_S + bound_of(ctx, leg)
            });
            if saw {
                last_seen = i;
            } else {
                break;
            }
        }
        if last_seen == order.len() - 1 {
            continue; // the sender's own capture shows it sending: an endpoint's end
        }
        let next = order[last_seen + 1];
        // The capture nearest the sender must cover the moment, or absence proves nothing.
        if ctx
            .capture_end(next)
            .is_none_or(|end| end < Timestamp(t0_ref.0 + 100_000_000))
        {
            continue;
        }
        let cn = ctx.conn(next);
        let (a, b) = (order[last_seen], next);
        let hop = format!("between {} and {}", a.vantage, b.vantage);
        // FIN or RST: what the middlebox sent toward the endpoint it stood in for. A proxy's
        // first packet toward the sender's side (`next`) tells, since toward the far side it may
        // send a FIN and then a RST (HAProxy `option nolinger`).
        let decisive = match cn.termination.as_ref() {
            Some(t) if t.by != sender => t.kind,
            _ => t0.kind,
        };
        let kind = match decisive {
            TerminationKind::Fin => FindingKind::MiddleboxClose,
            TerminationKind::Rst => FindingKind::MiddleboxReset,
        };
        let c0 = ctx.conn(order[0]);
        let mut evidence = vec![];
        for leg in &order[..=last_seen] {
            let t = ctx.conn(leg).termination.as_ref()?;
            let mut what = format!(
                "{} from the {} side ({}:{}), TTL {}, IP ID {}, window {}",
                kind_word(t.kind),
                side_name(sender),
                if sender == Side::Resp {
                    leg.dst
                } else {
                    leg.src
                },
                if sender == Side::Resp {
                    leg.dport
                } else {
                    leg.sport
                },
                t.ttl,
                t.ip_id.map_or("-".into(), |i| i.to_string()),
                t.window
            );
            if t.ttl_fits == Some(false) || t.ip_id_fits == Some(false) {
                what.push_str(&format!(
                    "; the sender's other packets have TTL {} and IP IDs {}",
                    t.sender_usual.ttl_usual,
                    serde_json::to_value(t.sender_usual.ip_id_pattern)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default()
                ));
            }
            evidence.push(ctx.evidence(leg, t.frame, t.ts, what));
        }
        // What the sender's side shows instead.
        let what_instead = match cn.termination.as_ref() {
            Some(t) if t.by != sender => {
                evidence.push(ctx.evidence(
                    next,
                    t.frame,
                    t.ts,
                    format!(
                        "here the {} never sent it: the first end is a {} toward it, from the {} side",
                        side_name(sender),
                        kind_word(t.kind),
                        side_name(t.by)
                    ),
                ));
                format!(
                    "at {} the {} instead received a {} from the middlebox",
                    next.vantage,
                    side_name(sender),
                    kind_word(t.kind)
                )
            }
            _ => {
                evidence.push(ctx.evidence(
                    next,
                    cn.last_frame,
                    cn.last_ts,
                    format!(
                        "last packet of this connection here; no {} from the {}",
                        kind_word(t0.kind),
                        side_name(sender)
                    ),
                ));
                format!(
                    "{} shows no {} from the {}: the connection simply goes quiet there",
                    next.vantage,
                    kind_word(t0.kind),
                    side_name(sender)
                )
            }
        };
        // The silence that preceded it, and whether the middlebox acted on a timer.
        let fatal = silence_before(c0, t0.frame, t0.ts);
        let at_timer = t0.idle_before_s >= MIN_IDLE_S;
        let silence = fatal.map(|g| g.secs).unwrap_or(t0.idle_before_s);
        let last_good = fatal.map_or(t0_ref, |g| ctx.reference_ts(order[0], g.from_ts));
        if let Some(g) = fatal {
            if !at_timer {
                evidence.push(ctx.evidence(
                    order[0],
                    g.to_frame,
                    Timestamp(g.from_ts.0 + (g.secs * 1e9) as i64),
                    format!(
                        "first packet after {:.3} s of silence, from the {}; the {} answers it",
                        g.secs,
                        side_name(g.by),
                        kind_word(t0.kind)
                    ),
                ));
            }
        }
        let word = match kind {
            FindingKind::MiddleboxClose => "closed",
            _ => "reset",
        };
        let summary = format!(
            "{}: a middlebox {hop} {word} the connection after {:.3} s of silence; the {} never sent that {}",
            p.lined.id,
            silence,
            side_name(sender),
            kind_word(t0.kind)
        );
        let proxy = match p.lined.matched.method {
            MatchMethod::Stream => " A TCP proxy stands there: the legs are two TCP connections carrying the same bytes.",
            MatchMethod::L7Proxy => " An HTTP/WebSocket proxy stands there: the legs are two TCP connections carrying the same messages.",
            _ => "",
        };
        let explanation = format!(
            "The {} at {} arrived as if from the {}, but {}. It was made {hop}.{proxy} {}",
            kind_word(t0.kind),
            order[0].vantage,
            side_name(sender),
            what_instead,
            if at_timer {
                format!("It came by itself after {silence:.3} s of silence: the middlebox acted when its idle timer fired.")
            } else {
                format!("It answered the first packet after {silence:.3} s of silence: the middlebox had already forgotten the flow and rejected the next packet.")
            }
        );
        let legs: Vec<&Leg> = p.legs.clone();
        let display_filters = display_filters(ctx, &evidence, &legs);
        let f = Finding {
            id: String::new(),
            kind,
            severity: Severity::Critical,
            summary,
            explanation,
            connections: vec![p.lined.id.clone()],
            evidence,
            display_filters,
            recommendation: "Keep connections through this middlebox busier than its idle timeout (a heartbeat at well under half of it), or raise the idle timeout of its layer-4 listener.".into(),
            single_vantage: false,
            numbers: Numbers {
                hop: Some(hop.clone()),
                silence_s: Some(round3(silence)),
                acts: Some(if at_timer { "timer" } else { "next_packet" }),
                ..Numbers::default()
            },
        };
        let d = Death {
            conn: p.lined.id.clone(),
            silence_s: silence,
            at_timer,
            survived_s: fatal.and_then(|g| survived(c0, &g)),
            hop,
            at: t0_ref,
            last_good,
        };
        return Some((f, d));
    }
    None
}

fn bound_of(ctx: &Ctx<'_>, leg: &Leg) -> f64 {
    ctx.al
        .clock_offsets
        .iter()
        .find(|o| o.vantage == leg.vantage)
        .map_or(0.0, |o| o.bound_s)
}

/// **middlebox_reset, at one vantage.** Without a capture at the supposed sender, a RST is
/// blamed on a middlebox only when two things agree: its fingerprint does not fit its supposed
/// sender's other packets (another TTL, or an IP ID that breaks the sender's counter: Linux's
/// `reject with tcp reset` sends IP ID 0 and TTL 64), and its timing fits an idle expiry (it
/// answers the first packet after a silence). Either alone is too weak: TTLs change with routes,
/// and endpoints do reset idle connections.
fn middlebox_reset_single(ctx: &Ctx<'_>, p: &Path<'_>) -> Option<(Finding, Death)> {
    if p.legs.len() > 1 {
        return None;
    }
    let leg = p.legs[0];
    let c = ctx.conn(leg);
    let t = c.termination.as_ref()?;
    if t.kind != TerminationKind::Rst {
        return None;
    }
    let misfit = t.ttl_fits == Some(false) || t.ip_id_fits == Some(false);
    let fatal = silence_before(c, t.frame, t.ts)?;
    if !misfit || fatal.by == t.by {
        return None;
    }
    let at = ctx.reference_ts(leg, t.ts);
    let evidence = vec![
        ctx.evidence(
            leg,
            fatal.to_frame,
            Timestamp(fatal.from_ts.0 + (fatal.secs * 1e9) as i64),
            format!(
                "first packet after {:.3} s of silence, from the {}",
                fatal.secs,
                side_name(fatal.by)
            ),
        ),
        ctx.evidence(
            leg,
            t.frame,
            t.ts,
            format!(
                "RST as if from the {}: TTL {} (its other packets: {}), IP ID {} (its other packets: {}), window {}, {} options",
                side_name(t.by),
                t.ttl,
                t.sender_usual.ttl_usual,
                t.ip_id.map_or("-".into(), |i| i.to_string()),
                serde_json::to_value(t.sender_usual.ip_id_pattern)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                t.window,
                t.options_len
            ),
        ),
    ];
    let display_filters = display_filters(ctx, &evidence, &p.legs);
    let hop = format!("between {} and the {}", leg.vantage, side_name(t.by));
    let f = Finding {
        id: String::new(),
        kind: FindingKind::MiddleboxReset,
        severity: Severity::Critical,
        summary: format!(
            "{}: a RST after {:.3} s of silence does not fit the {}'s other packets: likely built by a middlebox",
            p.lined.id, fatal.secs, side_name(t.by)
        ),
        explanation: format!(
            "Only {} saw this connection, so the RST's origin rests on its fingerprint and timing: it answered the first packet after {:.3} s of silence, and its TTL/IP ID do not match what the {} sends. A capture nearer the {} would show whether it ever left there.",
            leg.vantage,
            fatal.secs,
            side_name(t.by),
            side_name(t.by)
        ),
        connections: vec![p.lined.id.clone()],
        evidence,
        display_filters,
        recommendation: "Capture at the other end at the same time to confirm; meanwhile keep the connection busier than the suspected idle timeout.".into(),
        single_vantage: true,
        numbers: Numbers {
            hop: Some(hop.clone()),
            silence_s: Some(round3(fatal.secs)),
            acts: Some("next_packet"),
            ..Numbers::default()
        },
    };
    let d = Death {
        conn: p.lined.id.clone(),
        silence_s: fatal.secs,
        at_timer: false,
        survived_s: survived(c, &fatal),
        hop,
        at,
        last_good: ctx.reference_ts(leg, fatal.from_ts),
    };
    Some((f, d))
}

/// **silent_drop.** After a silence, one end sends, retransmits (Wireshark's rule), and hears
/// nothing back until it gives up or resets: the middlebox forgot the connection without a word
/// (nftables `drop`, many cloud NATs). With a capture downstream, the retransmissions are shown
/// never to arrive there.
fn silent_drop(ctx: &Ctx<'_>, p: &Path<'_>) -> Option<(Finding, Death)> {
    for (idx, leg) in p.legs.iter().enumerate() {
        let c = ctx.conn(leg);
        for sender in [Side::Orig, Side::Resp] {
            let (mine, theirs) = match sender {
                Side::Orig => (&c.orig, &c.resp),
                Side::Resp => (&c.resp, &c.orig),
            };
            // A silence broken by this side, followed by retransmissions of what it sent after
            // it, and by nothing at all from the other side.
            let mut silences: Vec<Gap> = c
                .silences
                .iter()
                .filter(|g| g.by == sender && g.secs >= MIN_IDLE_S)
                .copied()
                .collect();
            silences.sort_by_key(|g| g.to_frame);
            let Some((fatal, after)) = silences.iter().find_map(|g| {
                let after: Vec<_> = mine
                    .retransmitted
                    .iter()
                    .filter(|s| s.frame >= g.to_frame)
                    .collect();
                let unanswered = theirs.last_ts.is_none_or(|t| t <= g.from_ts);
                (after.len() >= 2 && unanswered).then_some((*g, after))
            }) else {
                continue;
            };
            // Downstream (toward the other side), did anything arrive after the silence?
            let downstream: Vec<&Leg> = match sender {
                Side::Orig => p.legs[idx + 1..].to_vec(),
                Side::Resp => p.legs[..idx].iter().rev().copied().collect(),
            };
            let silence_end = Timestamp(fatal.from_ts.0 + (fatal.secs * 1e9) as i64);
            let silence_end_ref = ctx.reference_ts(leg, silence_end);
            let mut evidence = vec![ctx.evidence(
                leg,
                fatal.to_frame,
                silence_end,
                format!(
                    "first packet after {:.3} s of silence, from the {}",
                    fatal.secs,
                    side_name(sender)
                ),
            )];
            for s in &after {
                evidence.push(ctx.evidence(
                    leg,
                    s.frame,
                    s.ts,
                    format!(
                        "retransmission, {} s after the silence, no answer",
                        secs3(s.ts.secs_since(silence_end))
                    ),
                ));
            }
            let mut confirmed = None;
            for d in &downstream {
                let dc = ctx.conn(d);
                let dm = match sender {
                    Side::Orig => &dc.orig,
                    Side::Resp => &dc.resp,
                };
                let arrived = dm
                    .last_ts
                    .is_some_and(|t| ctx.reference_ts(d, t).0 >= silence_end_ref.0 - 1_000_000);
                if !arrived {
                    evidence.push(ctx.evidence(
                        d,
                        dc.last_frame,
                        dc.last_ts,
                        format!(
                            "last packet here; nothing the {} sent after the silence arrived",
                            side_name(sender)
                        ),
                    ));
                    confirmed = Some(*d);
                    break;
                }
            }
            let hop = match confirmed {
                Some(d) => {
                    let prev = if sender == Side::Orig {
                        p.legs[p.legs.iter().position(|l| l.at == d.at)? - 1]
                    } else {
                        p.legs[p.legs.iter().position(|l| l.at == d.at)? + 1]
                    };
                    format!("between {} and {}", prev.vantage, d.vantage)
                }
                None => format!(
                    "beyond {}, toward the {}",
                    leg.vantage,
                    side_name(other(sender))
                ),
            };
            let end = match c.termination.as_ref() {
                Some(t) if t.by == sender => format!(
                    "then the {} gave up and sent its own {}",
                    side_name(sender),
                    kind_word(t.kind)
                ),
                Some(t) => format!("then a {} arrived", kind_word(t.kind)),
                None => "and the capture ends".into(),
            };
            let display_filters = display_filters(ctx, &evidence, &p.legs);
            let f = Finding {
                id: String::new(),
                kind: FindingKind::SilentDrop,
                severity: Severity::Critical,
                summary: format!(
                    "{}: after {:.3} s of silence the {}'s packets vanish {hop}: {} retransmissions, no answer",
                    p.lined.id,
                    fatal.secs,
                    side_name(sender),
                    after.len()
                ),
                explanation: format!(
                    "At {} the {} sent after {:.3} s of silence and retransmitted {} times without any answer, {end}. {}",
                    leg.vantage,
                    side_name(sender),
                    fatal.secs,
                    after.len(),
                    if confirmed.is_some() {
                        "The capture downstream shows that none of it arrived: a middlebox dropped the packets of a flow it had forgotten, without a RST."
                    } else {
                        "No capture downstream confirms where the packets were lost; the lack of any answer, even a RST, points to a middlebox that forgot the flow and drops its packets."
                    }
                ),
                connections: vec![p.lined.id.clone()],
                evidence,
                display_filters,
                recommendation: "A middlebox that drops silently makes the client wait for its own heartbeat check: keep connections busier than its idle timeout, and make the client's dead-connection check short.".into(),
                single_vantage: confirmed.is_none(),
                numbers: Numbers {
                    hop: Some(hop.clone()),
                    silence_s: Some(round3(fatal.secs)),
                    retransmissions: Some(after.len() as u64),
                    acts: Some("next_packet"),
                    ..Numbers::default()
                },
            };
            let d = Death {
                conn: p.lined.id.clone(),
                silence_s: fatal.secs,
                at_timer: false,
                survived_s: survived(c, &fatal),
                hop,
                at: silence_end_ref,
                last_good: ctx.reference_ts(leg, fatal.from_ts),
            };
            return Some((f, d));
        }
    }
    None
}

/// **idle_timeout.** Clusters the fatal silences of the connections a middlebox ended and
/// estimates its idle timeout. A middlebox that acts when its timer fires (a proxy closing both
/// legs) gives a sharp estimate: the silences themselves. One that acts on the next packet (a
/// NAT or firewall that forgot the flow) only bounds it: above by the shortest fatal silence,
/// below by the longest silence a connection survived. That interval is reported as such. The
/// estimate is compared with documented defaults (`defaults.rs`).
fn idle_timeout(ctx: &Ctx<'_>, deaths: &[Death]) -> Option<Finding> {
    if deaths.is_empty() {
        return None;
    }
    let timer: Vec<&Death> = deaths.iter().filter(|d| d.at_timer).collect();
    let next: Vec<&Death> = deaths.iter().filter(|d| !d.at_timer).collect();
    let group = if timer.len() >= next.len() {
        &timer
    } else {
        &next
    };
    let silences: Vec<f64> = group.iter().map(|d| d.silence_s).collect();
    let min = silences.iter().copied().fold(f64::INFINITY, f64::min);
    let max = silences.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let at_timer = group[0].at_timer;
    // Survived silences: within the dead connections before their death, and on every
    // connection that did not die.
    let dead: std::collections::HashSet<&str> = deaths.iter().map(|d| d.conn.as_str()).collect();
    let mut survived: Vec<f64> = group.iter().filter_map(|d| d.survived_s).collect();
    for p in &ctx.paths {
        if dead.contains(p.lined.id.as_str()) {
            continue;
        }
        for leg in &p.legs {
            let c = ctx.conn(leg);
            if c.proto != crate::tcp::Proto::Tcp {
                continue;
            }
            survived.extend(
                c.silences
                    .iter()
                    .filter(|g| g.to_frame < c.last_frame)
                    .map(|g| g.secs),
            );
        }
    }
    let lower_survived = survived
        .iter()
        .copied()
        .filter(|s| *s < min)
        .fold(None, |m: Option<f64>, s| Some(m.map_or(s, |m| m.max(s))));
    let (estimate, lower, upper, spread) = if at_timer {
        let mean = silences.iter().sum::<f64>() / silences.len() as f64;
        (mean, min, max, max - min)
    } else {
        let lower = lower_survived.unwrap_or(0.0);
        ((lower + min) / 2.0, lower, min, max - min)
    };
    let known: Vec<String> = defaults::matching(lower, upper)
        .iter()
        .map(|k| format!("{} ({} s)", k.name, k.secs))
        .collect();
    let hop = group[0].hop.clone();
    let n = group.len();
    let summary = if at_timer {
        format!(
            "A middlebox {hop} ends connections after {estimate:.1} ± {:.1} s of silence ({n} connection{})",
            (spread / 2.0).max(0.05),
            if n == 1 { "" } else { "s" }
        )
    } else {
        format!(
            "A middlebox {hop} forgets connections idle for between {lower:.1} and {upper:.1} s ({n} connection{})",
            if n == 1 { "" } else { "s" }
        )
    };
    let explanation = if at_timer {
        if n == 1 {
            format!(
                "The middlebox acted on its own timer: its FIN/RST came after {min:.3} s of silence, so the timeout is about {estimate:.2} s."
            )
        } else {
            format!(
                "The middlebox acted on its own timer: its FIN/RST came after silences of {min:.3} to {max:.3} s, so the timeout is about {estimate:.2} s."
            )
        }
    } else {
        format!(
            "The middlebox acts only when the next packet arrives, so the timeout is bounded, not measured: a silence of {upper:.3} s proved fatal{}, {}",
            if n > 1 { " (the shortest fatal one)" } else { "" },
            match lower_survived {
                Some(l) => format!("and one of {l:.3} s was survived. The timeout lies in between."),
                None => "and no shorter silence was seen to survive, so the lower bound is unknown.".to_string(),
            }
        )
    };
    let evidence: Vec<Evidence> = Vec::new();
    Some(Finding {
        id: String::new(),
        kind: FindingKind::IdleTimeout,
        severity: Severity::Critical,
        summary,
        explanation,
        connections: group.iter().map(|d| d.conn.clone()).collect(),
        evidence,
        display_filters: vec![],
        recommendation: format!(
            "Send a heartbeat at most every {:.0} s ({}), or raise the middlebox's layer-4 idle timeout above the longest silence the application allows.",
            if at_timer { estimate / 2.0 } else { lower }.max(1.0).floor(),
            if at_timer { "about half the timeout" } else { "below the longest silence that survived" }
        ),
        single_vantage: !ctx.multi_vantage(),
        numbers: Numbers {
            estimate_s: Some(round3(estimate)),
            lower_s: Some(round3(lower)),
            upper_s: Some(round3(upper)),
            spread_s: Some(round3(spread)),
            samples: Some(n),
            acts: Some(if at_timer { "timer" } else { "next_packet" }),
            known_defaults: known,
            hop: Some(hop),
            ..Numbers::default()
        },
    })
}

/// **half_open.** One end never learned the connection died: the client's side ended (a RST
/// from the middlebox, or its own give-up after a silent drop) while the capture nearest the
/// server shows the server holding on, until the capture ends or until its own later packet
/// meets the middlebox. Both durations are given: how long each side believed in it after the
/// middlebox had dropped it.
fn half_open(ctx: &Ctx<'_>, deaths: &[Death]) -> Vec<Finding> {
    let mut out = Vec::new();
    for d in deaths {
        let Some(p) = ctx.paths.iter().find(|p| p.lined.id == d.conn) else {
            continue;
        };
        if p.legs.len() < 2 {
            continue;
        }
        let client_leg = p.legs[0];
        let server_leg = *p.legs.last().expect("two legs");
        let cc = ctx.conn(client_leg);
        let sc = ctx.conn(server_leg);
        let client_end = cc
            .termination
            .as_ref()
            .map_or(ctx.reference_ts(client_leg, cc.last_ts), |t| {
                ctx.reference_ts(client_leg, t.ts)
            });
        let (server_end, how) = match sc.termination.as_ref() {
            Some(t) => (
                ctx.reference_ts(server_leg, t.ts),
                format!("until its own {} at frame {}", kind_word(t.kind), t.frame),
            ),
            None => (
                ctx.capture_end(server_leg).unwrap_or(client_end),
                "until the capture ends, with no FIN or RST".into(),
            ),
        };
        let lag = server_end.secs_since(client_end);
        if lag < MIN_IDLE_S {
            continue;
        }
        let client_believed = client_end.secs_since(d.last_good);
        let server_believed = server_end.secs_since(d.last_good);
        let evidence = vec![
            ctx.evidence(
                client_leg,
                cc.termination.as_ref().map_or(cc.last_frame, |t| t.frame),
                cc.termination.as_ref().map_or(cc.last_ts, |t| t.ts),
                "the client side's end of the connection".into(),
            ),
            ctx.evidence(
                server_leg,
                sc.termination.as_ref().map_or(sc.last_frame, |t| t.frame),
                sc.termination.as_ref().map_or(sc.last_ts, |t| t.ts),
                format!("the server still holds the connection {how}"),
            ),
        ];
        let display_filters = display_filters(ctx, &evidence, &p.legs);
        out.push(Finding {
            id: String::new(),
            kind: FindingKind::HalfOpen,
            severity: Severity::Warning,
            summary: format!(
                "{}: the server kept the connection {:.1} s after the client's side had ended ({how})",
                d.conn, lag
            ),
            explanation: format!(
                "After the last good packet the client believed in the connection for {client_believed:.1} s, the server for {server_believed:.1} s. Meanwhile the server keeps the agent's registration and may send calls into a dead connection."
            ),
            connections: vec![d.conn.clone()],
            evidence,
            display_filters,
            recommendation: "Let the server detect dead clients quickly (WebSocket ping or SIP keep-alive from the server side, or TCP keep-alive shorter than the middlebox timeout), and let a new REGISTER replace the old flow (RFC 5626 outbound).".into(),
            single_vantage: false,
            numbers: Numbers {
                client_believed_s: Some(round3(client_believed)),
                server_believed_s: Some(round3(server_believed)),
                ..Numbers::default()
            },
        });
    }
    out
}

/// **l7_proxy.** The same messages travel on two TCP connections at different stream offsets:
/// an HTTP/WebSocket proxy terminates TCP in the path and rewrote the upgrade (adding
/// X-Forwarded-For, say). For such a path the timeout that matters is the proxy's read/idle
/// timeout (nginx `proxy_read_timeout`, default 60 s), not a TCP or NAT timer. (A TCP proxy that
/// relays the bytes unchanged, such as HAProxy in mode tcp, is not layer 7; the middlebox rules
/// name it where it ends a connection.)
fn l7_proxy(ctx: &Ctx<'_>) -> Option<Finding> {
    let proxied: Vec<&Path<'_>> = ctx
        .paths
        .iter()
        .filter(|p| p.lined.matched.method == MatchMethod::L7Proxy)
        .collect();
    if proxied.is_empty() {
        return None;
    }
    let mut evidence = Vec::new();
    for p in proxied.iter().take(5) {
        for (i, leg) in p.legs.iter().enumerate() {
            let c = ctx.conn(leg);
            evidence.push(ctx.evidence(
                leg,
                c.first_frame,
                c.ts,
                format!(
                    "{} TCP connection {}:{} > {}:{}",
                    if i == 0 { "client-side" } else { "proxied" },
                    leg.src,
                    leg.sport,
                    leg.dst,
                    leg.dport
                ),
            ));
        }
    }
    let legs: Vec<&Leg> = proxied
        .iter()
        .flat_map(|p| p.legs.iter().copied())
        .collect();
    let display_filters = display_filters(ctx, &evidence, &legs);
    Some(Finding {
        id: String::new(),
        kind: FindingKind::L7Proxy,
        severity: Severity::Info,
        summary: format!(
            "A layer-7 (HTTP/WebSocket) proxy stands in the path: {} connection{} run as two TCP connections",
            proxied.len(),
            if proxied.len() == 1 { "" } else { "s" }
        ),
        explanation: "The same messages travel on two TCP connections at different stream offsets: the proxy rewrote the HTTP upgrade and relays the WebSocket frames. Its read timeout, not a TCP timer, decides how long a quiet connection lives.".into(),
        connections: proxied.iter().map(|p| p.lined.id.clone()).collect(),
        evidence,
        display_filters,
        recommendation: "Check the proxy's read/idle timeout for the WebSocket route (nginx proxy_read_timeout, default 60 s) and keep the heartbeat well below it.".into(),
        single_vantage: false,
        numbers: Numbers::default(),
    })
}

/// **weak_network.** Real loss or delay without a middlebox ending: retransmissions on
/// connections no middlebox killed, and losses placed on a hop by the alignment. This is what
/// tells "a bad network" from "a bad balancer". Retransmissions into a black hole after a silence
/// are excluded (they belong to silent_drop).
fn weak_network(ctx: &Ctx<'_>, deaths: &[Death]) -> Option<Finding> {
    let dead: std::collections::HashSet<&str> = deaths.iter().map(|d| d.conn.as_str()).collect();
    let mut retrans = 0u64;
    let mut data_segments = 0u64;
    let mut evidence = Vec::new();
    let mut conns = Vec::new();
    for p in &ctx.paths {
        if dead.contains(p.lined.id.as_str()) {
            continue;
        }
        // The client-side leg is the one the users' experience is measured at.
        let leg = p.legs[0];
        let c = ctx.conn(leg);
        if c.proto != crate::tcp::Proto::Tcp {
            continue;
        }
        let r = c.orig.retransmissions + c.resp.retransmissions;
        data_segments += c.orig.samples.total + c.resp.samples.total;
        if r > 0 {
            retrans += r;
            conns.push(p.lined.id.clone());
            for s in c
                .orig
                .retransmitted
                .iter()
                .chain(c.resp.retransmitted.iter())
                .take(5)
            {
                evidence.push(ctx.evidence(leg, s.frame, s.ts, "retransmission".into()));
            }
        }
    }
    let lost: u64 = ctx
        .al
        .losses
        .iter()
        .filter(|h| h.connections.iter().all(|c| !dead.contains(c.as_str())))
        .map(|h| h.segments)
        .sum();
    // Two retransmissions can be chance; three on live connections, or a loss placed on a hop,
    // is a pattern worth reporting.
    if retrans < 3 && lost == 0 {
        return None;
    }
    let hops: Vec<String> = ctx
        .al
        .losses
        .iter()
        .map(|h| {
            format!(
                "{} lost between {} and {} ({})",
                h.segments,
                h.from,
                h.to,
                h.direction.replace('_', " ")
            )
        })
        .collect();
    let display_filters = {
        let legs: Vec<&Leg> = ctx
            .paths
            .iter()
            .filter(|p| conns.contains(&p.lined.id))
            .flat_map(|p| p.legs.iter().copied())
            .collect();
        display_filters(ctx, &evidence, &legs)
            .into_iter()
            .map(|mut f| {
                f.filter = format!("({}) && tcp.analysis.retransmission", f.filter);
                f
            })
            .collect()
    };
    let rate = if data_segments > 0 {
        retrans as f64 / data_segments as f64
    } else {
        0.0
    };
    Some(Finding {
        id: String::new(),
        kind: FindingKind::WeakNetwork,
        severity: Severity::Warning,
        summary: format!(
            "The network loses packets: {retrans} retransmissions on {} connection{} no middlebox ended{}",
            conns.len(),
            if conns.len() == 1 { "" } else { "s" },
            if hops.is_empty() {
                String::new()
            } else {
                format!("; {}", hops.join("; "))
            }
        ),
        explanation: format!(
            "Retransmissions are about {:.1} % of the segments kept in the sample, and the connections survive them: this is loss (or delay) on the path, not a middlebox ending connections.",
            rate * 100.0
        ),
        connections: conns,
        evidence,
        display_filters,
        recommendation: "Look at the link where the losses are placed (Wi-Fi, VPN, an overloaded uplink); a middlebox timeout change will not help here.".into(),
        single_vantage: !ctx.multi_vantage(),
        numbers: Numbers {
            retransmissions: Some(retrans),
            lost_segments: (lost > 0).then_some(lost),
            ..Numbers::default()
        },
    })
}

/// **agent_outage.** Per client address, the windows in which it had no working signalling
/// connection: from the last good packet of the dead connection to the first answer from the
/// server on the next one (the WebSocket 101, and the REGISTER's 200 once SIP is parsed). With
/// the number of reconnect attempts, failed handshakes, the back-off between attempts, and the
/// detection delay: from the middlebox's act to the client's first reaction (its own FIN/RST, or
/// a new SYN). A silent drop is noticed only when the page's heartbeat check fires (45 s in the
/// incident that started this project).
fn agent_outage(ctx: &Ctx<'_>, deaths: &[Death]) -> Vec<Finding> {
    let mut out = Vec::new();
    for d in deaths {
        let Some(p) = ctx.paths.iter().find(|p| p.lined.id == d.conn) else {
            continue;
        };
        let leg = p.legs[0];
        let c = ctx.conn(leg);
        // The same client's later connections to the same server, at the same vantage.
        let mut later: Vec<(&Leg, &Connection)> = ctx
            .paths
            .iter()
            .map(|q| q.legs[0])
            .filter(|l| l.at.0 == leg.at.0)
            .map(|l| (l, ctx.conn(l)))
            .filter(|(_, k)| {
                k.proto == crate::tcp::Proto::Tcp
                    && k.orig_h == c.orig_h
                    && k.resp_h == c.resp_h
                    && k.resp_p == c.resp_p
                    && k.ts > c.ts
            })
            .collect();
        later.sort_by_key(|(_, k)| k.ts);
        // Detection: the client's first reaction after the middlebox acted.
        let own_end = c
            .termination
            .as_ref()
            .filter(|t| t.by == Side::Orig)
            .map(|t| ctx.reference_ts(leg, t.ts));
        let first_syn = later.first().map(|(l, k)| ctx.reference_ts(l, k.ts));
        let reaction = match (own_end, first_syn) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // Recovery: the first later connection on which the server answered with data.
        let mut attempts = 0;
        let mut failed = 0;
        let mut syns = Vec::new();
        let mut recovered: Option<(Timestamp, &Leg, u64)> = None;
        for (l, k) in &later {
            attempts += 1;
            syns.push(ctx.reference_ts(l, k.ts));
            match recovery(k) {
                Some((ts, frame)) => {
                    recovered = Some((ctx.reference_ts(l, ts), l, frame));
                    break;
                }
                None => failed += 1,
            }
        }
        let end = recovered.map(|r| r.0).or(ctx.capture_end(leg));
        let Some(end) = end else { continue };
        let outage = end.secs_since(d.last_good);
        let detection = reaction.map(|r| r.secs_since(d.at));
        let mut backoff = vec![];
        let mut prev = own_end.unwrap_or(d.at);
        for s in &syns {
            backoff.push(round3(s.secs_since(prev)));
            prev = *s;
        }
        let mut evidence = vec![ctx.evidence(
            leg,
            c.termination.as_ref().map_or(c.last_frame, |t| t.frame),
            c.termination.as_ref().map_or(c.last_ts, |t| t.ts),
            "the signalling connection ends".into(),
        )];
        if let Some((t, l, frame)) = recovered {
            evidence.push(Evidence {
                vantage: l.vantage.clone(),
                file: ctx.file(l),
                frame,
                ts: t,
                what: "first answer from the server on the new connection".into(),
            });
        }
        let display_filters = display_filters(ctx, &evidence, &[leg]);
        out.push(Finding {
            id: String::new(),
            kind: FindingKind::AgentOutage,
            severity: Severity::Critical,
            summary: format!(
                "Agent {} had no working signalling connection for {:.1} s ({} reconnect attempt{}{})",
                c.orig_h,
                outage,
                attempts,
                if attempts == 1 { "" } else { "s" },
                match detection {
                    Some(x) => format!(", noticed after {x:.1} s"),
                    None => String::new(),
                }
            ),
            explanation: format!(
                "From the last good packet on {} to the first answer on the next connection{}. Reconnect attempts: {attempts}, failed: {failed}.",
                d.conn,
                if recovered.is_none() { " (none before the capture ends)" } else { "" }
            ),
            connections: vec![d.conn.clone()],
            evidence,
            display_filters,
            recommendation: "Detect a dead connection quickly (a heartbeat check of a few seconds, not 45 s), tell the agent at once, and reconnect with exponential back-off.".into(),
            single_vantage: !ctx.multi_vantage(),
            numbers: Numbers {
                outage_s: Some(round3(outage)),
                reconnect_attempts: Some(attempts),
                failed_handshakes: Some(failed),
                detection_delay_s: detection.map(round3),
                backoff_s: backoff,
                ..Numbers::default()
            },
        });
    }
    out
}

/// When a new signalling connection works again: its WebSocket 101 and the 200 to its first
/// REGISTER, whichever comes last; without SIP, the 101; without HTTP, the server's first data.
fn recovery(k: &Connection) -> Option<(Timestamp, u64)> {
    let app = k.app.as_ref();
    let upgrade = app
        .and_then(|a| a.http.as_ref())
        .filter(|h| h.upgraded)
        .and_then(|h| Some((h.upgrade_ts?, h.upgrade_frame?)));
    let registered = app.and_then(|a| a.sip.as_ref()).and_then(|s| {
        s.registrations
            .iter()
            .find(|r| r.response_code.is_some_and(|c| (200..300).contains(&c)))
            .and_then(|r| Some((r.response_ts?, r.frame_no)))
    });
    let http_failed = app
        .and_then(|a| a.http.as_ref())
        .is_some_and(|h| h.failed_status.is_some() || (h.requests > 0 && !h.upgraded));
    match (upgrade, registered) {
        (Some(u), Some(r)) => Some(if r.0 > u.0 { r } else { u }),
        (Some(u), None) => Some(u),
        (None, Some(r)) => Some(r),
        (None, None) if http_failed => None,
        (None, None) => k
            .resp
            .samples
            .iter()
            .find(|s| s.kind == SampleKind::Data)
            .map(|s| (s.ts, s.frame)),
    }
}

/// **heartbeat_too_slow.** The connection's heartbeat (found by the application layer: SIP CRLF
/// keep-alives, WebSocket pings, periodic small messages, TCP keep-alives) is slower than the
/// middlebox's idle timeout, or stretches beyond it at times: Chrome throttles the timers of a
/// background tab to once a minute after five minutes hidden ("intensive wake up throttling",
/// Chrome 88, developer.chrome.com/blog/timer-throttling-in-chrome-88), which turns a 25 s
/// heartbeat into a 60 s one. The silence that killed the connection counts as a heartbeat
/// interval that did not come in time.
fn heartbeat_too_slow(ctx: &Ctx<'_>, deaths: &[Death], idle: &Finding) -> Vec<Finding> {
    let n = &idle.numbers;
    let timer = n.acts == Some("timer");
    // The timeout's best guess and the line a heartbeat must stay under.
    let timeout = if timer {
        n.estimate_s.unwrap_or(0.0)
    } else {
        n.upper_s.unwrap_or(0.0)
    };
    let limit = if timer {
        timeout - n.spread_s.unwrap_or(0.0) / 2.0 - 0.05
    } else {
        n.lower_s.unwrap_or(0.0)
    };
    let mut out = Vec::new();
    for d in deaths {
        let Some(p) = ctx.paths.iter().find(|p| p.lined.id == d.conn) else {
            continue;
        };
        // The heartbeat as the client side sent it.
        let Some((leg, hb)) = p.legs.iter().find_map(|leg| {
            let hb = ctx.conn(leg).app.as_ref()?.heartbeat.as_ref()?;
            Some((*leg, hb))
        }) else {
            continue;
        };
        let slowest = hb.interval_max_s.max(d.silence_s);
        if slowest < limit {
            continue;
        }
        let kind = serde_json::to_value(hb.kind)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        let stretch = hb.stretched.as_ref().map(|s| {
            format!(
                " It stretched to a median of {:.1} s for {} beats from {}.",
                s.interval_median_s,
                s.count,
                ctx.reference_ts(leg, s.from).tcpdump()
            )
        });
        let timeout_words = if timer {
            format!("{timeout:.1} s")
        } else {
            format!(
                "between {:.1} and {:.1} s",
                n.lower_s.unwrap_or(0.0),
                n.upper_s.unwrap_or(0.0)
            )
        };
        let evidence = vec![ctx.evidence(
            leg,
            ctx.conn(leg).first_frame,
            hb.first,
            format!(
                "{} heartbeat from the {:?} side: {} beats, median {:.3} s, p95 {:.3} s, max {:.3} s",
                kind,
                hb.started_by,
                hb.count,
                hb.interval_median_s,
                hb.interval_p95_s,
                hb.interval_max_s
            )
            .to_lowercase(),
        )];
        let display_filters = display_filters(ctx, &evidence, &p.legs);
        out.push(Finding {
            id: String::new(),
            kind: FindingKind::HeartbeatTooSlow,
            severity: Severity::Warning,
            summary: format!(
                "{}: the {kind} heartbeat (median {:.1} s) went {:.1} s without a beat; the middlebox's idle timeout is {timeout_words}",
                d.conn, hb.interval_median_s, slowest
            ),
            explanation: format!(
                "Heartbeat median {:.3} s, p95 {:.3} s, longest interval between beats {:.3} s; the silence that ended the connection lasted {:.3} s. The idle timeout is {timeout_words}.{}",
                hb.interval_median_s,
                hb.interval_p95_s,
                hb.interval_max_s,
                d.silence_s,
                stretch.unwrap_or_default()
            ),
            connections: vec![d.conn.clone()],
            evidence,
            display_filters,
            recommendation: format!(
                "Beat at most every {:.0} s (about half the timeout) from a timer that background throttling does not stretch (a Web Worker or the server side), or raise the balancer's layer-4 idle timeout above the slowest heartbeat.",
                (if timer { timeout } else { n.lower_s.unwrap_or(timeout) } / 2.0).max(1.0).floor()
            ),
            single_vantage: !ctx.multi_vantage(),
            numbers: Numbers {
                estimate_s: n.estimate_s,
                lower_s: n.lower_s,
                upper_s: n.upper_s,
                heartbeat_median_s: Some(round3(hb.interval_median_s)),
                heartbeat_p95_s: Some(round3(hb.interval_p95_s)),
                heartbeat_max_s: Some(round3(slowest)),
                ..Numbers::default()
            },
        });
    }
    out
}

/// **call_cut.** SIP dialogs that were up (2xx seen, no BYE) when their signalling connection
/// died: the call is gone for the agent, while the far side may only learn of it later. The
/// voice gateway's leg (SIP over UDP, other Call-ID through a B2BUA) is shown where a capture has
/// it: its BYE, and the Reason header (RFC 3326) the softswitch gave.
fn call_cut(ctx: &Ctx<'_>, deaths: &[Death]) -> Vec<Finding> {
    let mut out = Vec::new();
    for d in deaths {
        let Some(p) = ctx.paths.iter().find(|p| p.lined.id == d.conn) else {
            continue;
        };
        let mut evidence = Vec::new();
        let mut calls = Vec::new();
        for leg in &p.legs {
            let Some(sip) = ctx.conn(leg).app.as_ref().and_then(|a| a.sip.as_ref()) else {
                continue;
            };
            for dl in &sip.dialogs {
                let up = dl.ok_ts.is_some_and(|t| ctx.reference_ts(leg, t) <= d.at);
                let bye_before = dl.bye_ts.is_some_and(|t| ctx.reference_ts(leg, t) <= d.at);
                if up && !bye_before && !calls.contains(&dl.call_id) {
                    calls.push(dl.call_id.clone());
                    evidence.push(ctx.evidence(
                        leg,
                        dl.invite_frame,
                        dl.invite_ts,
                        format!(
                            "INVITE of call {} (answered, no BYE before the connection died)",
                            dl.call_id
                        ),
                    ));
                }
            }
        }
        if calls.is_empty() {
            continue;
        }
        // The gateway's view: UDP SIP dialogs that end by a BYE after the death.
        let mut gateway: Vec<(String, f64)> = Vec::new();
        let mut seen: Vec<(String, String)> = Vec::new();
        let mut udp_legs: Vec<&Leg> = Vec::new();
        for q in &ctx.paths {
            for leg in &q.legs {
                let c = ctx.conn(leg);
                if c.proto != crate::tcp::Proto::Udp {
                    continue;
                }
                let Some(sip) = c.app.as_ref().and_then(|a| a.sip.as_ref()) else {
                    continue;
                };
                for dl in &sip.dialogs {
                    let Some(bye) = dl.bye_ts else { continue };
                    let bye_ref = ctx.reference_ts(leg, bye);
                    let up_before = dl.ok_ts.is_some_and(|t| ctx.reference_ts(leg, t) <= d.at);
                    let key = (leg.vantage.clone(), dl.call_id.clone());
                    if up_before && bye_ref >= d.last_good && !seen.contains(&key) {
                        seen.push(key);
                        udp_legs.push(leg);
                        if !gateway.iter().any(|(id, _)| id == &dl.call_id) {
                            gateway.push((dl.call_id.clone(), bye_ref.secs_since(d.at)));
                        }
                        evidence.push(ctx.evidence(
                            leg,
                            dl.bye_frame.unwrap_or(c.last_frame),
                            bye,
                            format!(
                                "BYE on the gateway leg (call {}){}",
                                dl.call_id,
                                dl.bye_reason
                                    .as_ref()
                                    .map_or(String::new(), |r| format!(", Reason: {r}"))
                            ),
                        ));
                    }
                }
            }
        }
        let mut legs: Vec<&Leg> = p.legs.clone();
        legs.extend(udp_legs);
        let display_filters = display_filters(ctx, &evidence, &legs)
            .into_iter()
            .map(|mut f| {
                f.filter = format!("({}) && sip", f.filter);
                f
            })
            .collect();
        out.push(Finding {
            id: String::new(),
            kind: FindingKind::CallCut,
            severity: Severity::Critical,
            summary: format!(
                "{} call{} up when {} died: {}",
                calls.len(),
                if calls.len() == 1 { " was" } else { "s were" },
                d.conn,
                calls.join(", ")
            ),
            explanation: format!(
                "The call's signalling connection died with the call up and no BYE on it.{}",
                if gateway.is_empty() {
                    String::new()
                } else {
                    format!(
                        " The gateway leg got its BYE {} after the connection died.",
                        gateway
                            .iter()
                            .map(|(_, s)| format!("{s:.1} s"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            ),
            connections: vec![d.conn.clone()],
            evidence,
            display_filters,
            recommendation: "Fix the connection's death first; then let the softswitch keep a call alive across a quick reconnect (RFC 5626 flow recovery) instead of cutting it.".into(),
            single_vantage: !ctx.multi_vantage(),
            numbers: Numbers::default(),
        });
    }
    out
}

/// The verdict: the most likely root cause in one sentence with the decisive numbers, a
/// confidence, and what would change it.
pub fn verdict(ctx: &Ctx<'_>, findings: &[Finding]) -> Verdict {
    let deaths: Vec<&Finding> = findings
        .iter()
        .filter(|f| {
            matches!(
                f.kind,
                FindingKind::MiddleboxReset | FindingKind::MiddleboxClose | FindingKind::SilentDrop
            )
        })
        .collect();
    let disconnects = ctx
        .paths
        .iter()
        .filter(|p| {
            let c = ctx.conn(p.legs[0]);
            c.proto == crate::tcp::Proto::Tcp && c.termination.is_some()
        })
        .count()
        .max(deaths.len());
    if let Some(idle) = findings.iter().find(|f| f.kind == FindingKind::IdleTimeout) {
        let n = &idle.numbers;
        let hop = n.hop.clone().unwrap_or_default();
        let what = match deaths.first().map(|f| f.kind) {
            Some(FindingKind::SilentDrop) => "silently drops",
            Some(FindingKind::MiddleboxClose) => "closes",
            _ => "resets",
        };
        let timing = if n.acts == Some("timer") {
            format!(
                "after {:.1} ± {:.1} s of silence",
                n.estimate_s.unwrap_or(0.0),
                (n.spread_s.unwrap_or(0.0) / 2.0).max(0.05)
            )
        } else {
            format!(
                "idle for between {:.1} and {:.1} s",
                n.lower_s.unwrap_or(0.0),
                n.upper_s.unwrap_or(0.0)
            )
        };
        let single = deaths.iter().all(|f| f.single_vantage);
        // A timer's estimate is sharp: half of it leaves room for jitter and throttled timers.
        // An interval is not: only a silence below its lower bound is known to survive.
        let keep = if n.acts == Some("timer") {
            n.estimate_s.unwrap_or(0.0) / 2.0
        } else {
            n.lower_s.unwrap_or(0.0)
        }
        .max(1.0)
        .floor();
        return Verdict {
            kind: deaths
                .first()
                .map_or("idle_timeout", |f| f.kind.name())
                .to_string(),
            summary: format!(
                "A middlebox {hop} {what} connections {timing} ({} of {} disconnects). Keep the heartbeat under {keep:.0} s or raise the middlebox's layer-4 idle timeout.",
                deaths.len(),
                disconnects
            ),
            confidence: if single { 0.6 } else { 0.9 },
            would_change: if single {
                "A capture at the other end showing the same RST or FIN leaving the endpoint would clear the middlebox.".into()
            } else {
                "A capture inside the middlebox showing the endpoint's packet arriving there would move the blame to that endpoint.".into()
            },
        };
    }
    if let Some(w) = findings.iter().find(|f| f.kind == FindingKind::WeakNetwork) {
        return Verdict {
            kind: "weak_network".into(),
            summary: format!(
                "No middlebox ended a connection; the network loses packets ({} retransmissions{}).",
                w.numbers.retransmissions.unwrap_or(0),
                w.numbers
                    .lost_segments
                    .map_or(String::new(), |l| format!(", {l} segments lost on a hop"))
            ),
            confidence: 0.7,
            would_change: "A RST or FIN that its supposed sender never sent, or retransmissions after a silence that never arrive, would point to a middlebox instead.".into(),
        };
    }
    let n = ctx.paths.len();
    let plural = if n == 1 { "" } else { "s" };
    if !ctx.multi_vantage() {
        // One capture cannot prove who sent a FIN or RST that fits its sender: say so.
        let ended_far = ctx
            .paths
            .iter()
            .filter(|p| {
                let c = ctx.conn(p.legs[0]);
                c.termination.as_ref().is_some_and(|t| t.by == Side::Resp)
            })
            .count();
        return Verdict {
            kind: "healthy".into(),
            summary: format!(
                "Nothing in this one capture proves a middlebox end or loss ({n} connection{plural}; {ended_far} ended by the far side, which only a capture there can attribute)."
            ),
            confidence: 0.4,
            would_change: "A capture at the other end at the same time would show whether the far side's FIN or RST really left it.".into(),
        };
    }
    Verdict {
        kind: "healthy".into(),
        summary: format!(
            "No connection was ended by a middlebox and no loss was seen in these captures ({n} connection{plural})."
        ),
        confidence: 0.7,
        would_change: "Captures that cover a disconnect (the agent's and the softswitch's at the same time) would show its cause.".into(),
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn secs3(x: f64) -> String {
    format!("{x:.3}")
}
