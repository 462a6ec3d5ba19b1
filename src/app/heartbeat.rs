//! Keep-alive rhythm of a connection: which mechanism keeps it alive, who drives it, how regular
//! it is, and whether it stretched (a browser throttling the page's timers).
//!
//! Mechanisms, preferred in this order: WebSocket ping/pong (RFC 6455 §5.5.2/§5.5.3), SIP CRLF
//! keep-alive (RFC 5626 §3.5.1, §4.4.1), an application heartbeat (periodic small messages of a
//! repeating size, which works on TLS records too since only sizes are used), and TCP keep-alive
//! (RFC 1122 §4.2.3.6). Between WS ping and CRLF the one with more events wins.
//!
//! Stretching: Chrome 88+ "intensive wake up throttling" aligns timers of a page hidden for
//! 5 minutes to wake-ups once per minute
//! (<https://developer.chrome.com/blog/timer-throttling-in-chrome-88>), so a 25 s heartbeat from
//! a background tab becomes ~60 s, which can exceed a load balancer's idle timeout.
//!
//! Everything here is a pure function of the event lists.

use super::Side;
use crate::capture::Timestamp;
use serde::Serialize;

/// Candidate event kinds, as found by the protocol parsers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HbKind {
    WsPing,
    WsPong,
    CrlfPing,
    CrlfPong,
    /// An application-level keep-alive recognised by content (e.g. SIP OPTIONS, a JSON "ping").
    App,
    TcpKeepalive,
}

/// One candidate heartbeat event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct HbEvent {
    pub ts: Timestamp,
    pub kind: HbKind,
    pub from_client: bool,
    pub size: u32,
}

/// One small message (the caller passes messages ≤ [`MAX_SMALL`] bytes: WS payloads, SIP
/// messages, or TLS record lengths).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SmallMsg {
    pub ts: Timestamp,
    pub from_client: bool,
    pub size: u32,
}

/// The mechanism found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HeartbeatKind {
    WsPing,
    Crlf,
    App,
    TcpKeepalive,
}

/// A run of stretched intervals.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stretch {
    /// Start of the first stretched interval.
    pub from: Timestamp,
    /// End of the last stretched interval.
    pub to: Timestamp,
    /// Number of consecutive stretched intervals.
    pub count: usize,
    pub interval_median_s: f64,
}

/// The connection's heartbeat.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Heartbeat {
    pub kind: HeartbeatKind,
    /// The side that sends the beats (the pinger; for pongs-only evidence, the other side).
    pub started_by: Side,
    /// Beats counted (after merging events closer than [`MIN_SPACING_S`]).
    pub count: usize,
    pub first: Timestamp,
    pub last: Timestamp,
    /// Typical size for `app` (the median), else `None`.
    pub size: Option<u32>,
    pub interval_median_s: f64,
    pub interval_p95_s: f64,
    pub interval_max_s: f64,
    /// Robust coefficient of variation: 1.4826 × MAD / median.
    pub cv: f64,
    /// The first [`MAX_INTERVALS`] intervals, in seconds.
    pub intervals: Vec<f64>,
    pub intervals_truncated: bool,
    /// The longest stretched run (ties: the latest).
    pub stretched: Option<Stretch>,
    /// Number of stretched runs.
    pub stretch_runs: usize,
}

/// Caller's size limit for [`SmallMsg`].
pub const MAX_SMALL: u32 = 256;
/// Intervals kept in [`Heartbeat::intervals`].
pub const MAX_INTERVALS: usize = 1000;
/// Fewest events for an explicit mechanism (two intervals).
pub const MIN_EXPLICIT: usize = 3;
/// Fewest occurrences for an inferred app heartbeat.
pub const MIN_APP: usize = 4;
/// Largest robust CV for an inferred app heartbeat.
pub const MAX_APP_CV: f64 = 0.25;
/// Sizes within this many bytes count as "the same size".
pub const SIZE_TOLERANCE: u32 = 3;
/// Shortest median interval for an inferred app heartbeat (faster is traffic, not a heartbeat).
pub const MIN_APP_INTERVAL_S: f64 = 2.0;
/// Events of one series closer than this are one beat (retransmissions, bursts).
pub const MIN_SPACING_S: f64 = 0.1;
/// Chrome's intensive throttling aligns wake-ups to one minute; intervals in this window count as
/// stretched when the base rhythm is below [`THROTTLE_BASE_MAX_S`].
pub const THROTTLE_WINDOW_S: (f64, f64) = (50.0, 70.0);
pub const THROTTLE_BASE_MAX_S: f64 = 45.0;
/// Otherwise an interval above this factor × base is stretched.
pub const STRETCH_FACTOR: f64 = 1.5;
/// A stretch is at least this many consecutive stretched intervals.
pub const MIN_STRETCH_RUN: usize = 2;

/// The connection's heartbeat: the preferred mechanism among [`analyse_all`]'s.
pub fn analyse(events: &[HbEvent], small: &[SmallMsg]) -> Option<Heartbeat> {
    analyse_all(events, small).into_iter().next()
}

/// Every mechanism found, most preferred first: the larger of WS ping / CRLF, the other, app
/// (explicit `App` events, else inferred from small messages), TCP keep-alive.
pub fn analyse_all(events: &[HbEvent], small: &[SmallMsg]) -> Vec<Heartbeat> {
    let mut explicit: Vec<Heartbeat> = [
        explicit_series(
            events,
            HbKind::WsPing,
            HbKind::WsPong,
            HeartbeatKind::WsPing,
        ),
        explicit_series(
            events,
            HbKind::CrlfPing,
            HbKind::CrlfPong,
            HeartbeatKind::Crlf,
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    // More beats first; stable sort keeps WS ping first on a tie.
    explicit.sort_by_key(|h| std::cmp::Reverse(h.count));
    let app = app_events(events).or_else(|| infer_app(small));
    let tcp = side_series(events, HbKind::TcpKeepalive)
        .map(|(side, ts)| summarise(HeartbeatKind::TcpKeepalive, side, &ts, None));
    explicit.into_iter().chain(app).chain(tcp).collect()
}

/// Pings of one kind (from the side that sends more), else its pongs (the pinger is then the
/// other side).
fn explicit_series(
    events: &[HbEvent],
    ping: HbKind,
    pong: HbKind,
    kind: HeartbeatKind,
) -> Option<Heartbeat> {
    if let Some((side, ts)) = side_series(events, ping) {
        return Some(summarise(kind, side, &ts, None));
    }
    let (side, ts) = side_series(events, pong)?;
    let pinger = match side {
        Side::Client => Side::Server,
        Side::Server => Side::Client,
    };
    Some(summarise(kind, pinger, &ts, None))
}

fn app_events(events: &[HbEvent]) -> Option<Heartbeat> {
    let (side, ts) = side_series(events, HbKind::App)?;
    let mut sizes: Vec<u32> = events
        .iter()
        .filter(|e| e.kind == HbKind::App && Side::from_client(e.from_client) == side)
        .map(|e| e.size)
        .collect();
    let size = median_u32(&mut sizes);
    Some(summarise(HeartbeatKind::App, side, &ts, size))
}

/// Sorted, merged times of `kind` from the side with more of them; `None` below
/// [`MIN_EXPLICIT`].
fn side_series(events: &[HbEvent], kind: HbKind) -> Option<(Side, Vec<Timestamp>)> {
    let pick = |client: bool| {
        let ts: Vec<Timestamp> = events
            .iter()
            .filter(|e| e.kind == kind && e.from_client == client)
            .map(|e| e.ts)
            .collect();
        merge_close(ts)
    };
    let (c, s) = (pick(true), pick(false));
    let (side, ts) = if c.len() >= s.len() {
        (Side::Client, c)
    } else {
        (Side::Server, s)
    };
    (ts.len() >= MIN_EXPLICIT).then_some((side, ts))
}

/// Sorts and drops events closer than [`MIN_SPACING_S`] to the previous kept one.
fn merge_close(mut ts: Vec<Timestamp>) -> Vec<Timestamp> {
    ts.sort_unstable();
    let min = (MIN_SPACING_S * 1e9) as i64;
    let mut out: Vec<Timestamp> = Vec::with_capacity(ts.len());
    for t in ts {
        match out.last() {
            Some(prev) if t.0.saturating_sub(prev.0) < min => {}
            _ => out.push(t),
        }
    }
    out
}

/// Finds periodic small messages of a repeating size from one side: for each side, the most
/// frequent sizes (± [`SIZE_TOLERANCE`]) are tried as candidates; a candidate is a heartbeat when
/// it has ≥ [`MIN_APP`] occurrences, a median interval ≥ [`MIN_APP_INTERVAL_S`] and a robust CV
/// below [`MAX_APP_CV`]. The candidate with most occurrences wins; on a tie (request and
/// response), the one that starts first.
fn infer_app(small: &[SmallMsg]) -> Option<Heartbeat> {
    let mut best: Option<(usize, Timestamp, Heartbeat)> = None;
    for client in [true, false] {
        let side = Side::from_client(client);
        let mut hist = [0usize; MAX_SMALL as usize + 1];
        for m in small.iter().filter(|m| m.from_client == client) {
            if let Some(h) = hist.get_mut(m.size as usize) {
                *h += 1;
            }
        }
        // Candidate centres: most frequent sizes first, at least a tolerance apart.
        let mut sizes: Vec<(usize, u32)> = hist
            .iter()
            .enumerate()
            .filter(|(_, &n)| n >= MIN_APP)
            .map(|(s, &n)| (n, s as u32))
            .collect();
        sizes.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut centres: Vec<u32> = Vec::new();
        for (_, s) in sizes {
            if centres.len() >= 8 {
                break;
            }
            if centres.iter().all(|c| c.abs_diff(s) > SIZE_TOLERANCE) {
                centres.push(s);
            }
        }
        for c in centres {
            let pick: Vec<&SmallMsg> = small
                .iter()
                .filter(|m| m.from_client == client && m.size.abs_diff(c) <= SIZE_TOLERANCE)
                .collect();
            let ts = merge_close(pick.iter().map(|m| m.ts).collect());
            if ts.len() < MIN_APP {
                continue;
            }
            let mut sizes: Vec<u32> = pick.iter().map(|m| m.size).collect();
            let hb = summarise(HeartbeatKind::App, side, &ts, median_u32(&mut sizes));
            if hb.cv >= MAX_APP_CV || hb.interval_median_s < MIN_APP_INTERVAL_S {
                continue;
            }
            let better = match &best {
                None => true,
                Some((n, first, _)) => hb.count > *n || (hb.count == *n && hb.first < *first),
            };
            if better {
                best = Some((hb.count, hb.first, hb));
            }
        }
    }
    best.map(|(_, _, hb)| hb)
}

/// Interval statistics and stretch detection over sorted beat times (at least 2).
fn summarise(kind: HeartbeatKind, side: Side, ts: &[Timestamp], size: Option<u32>) -> Heartbeat {
    let intervals: Vec<f64> = ts
        .windows(2)
        .map(|w| w[1].0.saturating_sub(w[0].0) as f64 / 1e9)
        .collect();
    let mut sorted = intervals.clone();
    sorted.sort_unstable_by(f64::total_cmp);
    let median = percentile(&sorted, 0.5);
    let mut dev: Vec<f64> = intervals.iter().map(|i| (i - median).abs()).collect();
    dev.sort_unstable_by(f64::total_cmp);
    let mad = percentile(&dev, 0.5);
    let cv = if median > 0.0 {
        1.4826 * mad / median
    } else {
        f64::INFINITY
    };
    let (stretched, stretch_runs) = find_stretch(ts, &intervals, median);
    Heartbeat {
        kind,
        started_by: side,
        count: ts.len(),
        first: ts.first().copied().unwrap_or_default(),
        last: ts.last().copied().unwrap_or_default(),
        size,
        interval_median_s: median,
        interval_p95_s: percentile(&sorted, 0.95),
        interval_max_s: sorted.last().copied().unwrap_or(0.0),
        cv,
        intervals_truncated: intervals.len() > MAX_INTERVALS,
        intervals: intervals.into_iter().take(MAX_INTERVALS).collect(),
        stretched,
        stretch_runs,
    }
}

/// Whether one interval is stretched against the base rhythm.
pub fn is_stretched(interval_s: f64, base_s: f64) -> bool {
    let (lo, hi) = THROTTLE_WINDOW_S;
    (base_s < THROTTLE_BASE_MAX_S && (lo..=hi).contains(&interval_s))
        || interval_s > STRETCH_FACTOR * base_s
}

/// Runs of ≥ [`MIN_STRETCH_RUN`] consecutive stretched intervals. The base rhythm is the smaller
/// of the overall median and the median of the first 10 intervals: throttling starts only after
/// 5 minutes hidden, so the start of a connection shows the unthrottled rhythm even when the
/// stretched part is the longer one.
fn find_stretch(ts: &[Timestamp], intervals: &[f64], median: f64) -> (Option<Stretch>, usize) {
    let mut head: Vec<f64> = intervals.iter().take(10).copied().collect();
    head.sort_unstable_by(f64::total_cmp);
    let base = median.min(percentile(&head, 0.5));
    if base <= 0.0 {
        return (None, 0);
    }
    let mut best: Option<Stretch> = None;
    let mut runs = 0;
    let mut i = 0;
    while i < intervals.len() {
        if !intervals.get(i).is_some_and(|&iv| is_stretched(iv, base)) {
            i += 1;
            continue;
        }
        let start = i;
        while intervals.get(i).is_some_and(|&iv| is_stretched(iv, base)) {
            i += 1;
        }
        let count = i - start;
        if count < MIN_STRETCH_RUN {
            continue;
        }
        runs += 1;
        if best.as_ref().is_some_and(|b| b.count > count) {
            continue;
        }
        let mut run: Vec<f64> = intervals.get(start..i).unwrap_or(&[]).to_vec();
        run.sort_unstable_by(f64::total_cmp);
        best = Some(Stretch {
            from: ts.get(start).copied().unwrap_or_default(),
            to: ts.get(i).copied().unwrap_or_default(),
            count,
            interval_median_s: percentile(&run, 0.5),
        });
    }
    (best, runs)
}

/// Nearest-rank percentile of sorted values (0 for none); the median of an even count is the
/// mean of the two middle values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return 0.0;
    }
    if p == 0.5 && n.is_multiple_of(2) {
        let a = sorted.get(n / 2 - 1).copied().unwrap_or(0.0);
        let b = sorted.get(n / 2).copied().unwrap_or(0.0);
        return (a + b) / 2.0;
    }
    let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
    sorted.get(rank - 1).copied().unwrap_or(0.0)
}

fn median_u32(v: &mut [u32]) -> Option<u32> {
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secs(s: f64) -> Timestamp {
        Timestamp((s * 1e9) as i64)
    }

    fn ev(t: f64, kind: HbKind, from_client: bool, size: u32) -> HbEvent {
        HbEvent {
            ts: secs(t),
            kind,
            from_client,
            size,
        }
    }

    /// Deterministic jitter in [-amp, amp].
    fn jitter(i: usize, amp: f64) -> f64 {
        let x = ((i as u64).wrapping_mul(2_654_435_761) % 1000) as f64 / 1000.0;
        (x * 2.0 - 1.0) * amp
    }

    #[test]
    fn regular_crlf_every_25s() {
        let mut e = Vec::new();
        for i in 0..40 {
            let t = 1000.0 + 25.0 * i as f64;
            e.push(ev(t, HbKind::CrlfPing, true, 4));
            e.push(ev(t + 0.05, HbKind::CrlfPong, false, 2));
        }
        e.push(ev(5.0, HbKind::TcpKeepalive, true, 0));
        let hb = analyse(&e, &[]).unwrap();
        assert_eq!(hb.kind, HeartbeatKind::Crlf);
        assert_eq!(hb.started_by, Side::Client);
        assert_eq!(hb.count, 40);
        assert!((hb.interval_median_s - 25.0).abs() < 1e-6);
        assert!((hb.interval_max_s - 25.0).abs() < 1e-6);
        assert!(hb.cv < 0.01);
        assert_eq!(hb.stretched, None);
        let json = serde_json::to_value(&hb).unwrap();
        assert_eq!(json["kind"], "crlf");
        assert_eq!(json["started_by"], "client");
    }

    #[test]
    fn ws_pings_from_server_and_pong_only_evidence() {
        let e: Vec<HbEvent> = (0..10)
            .flat_map(|i| {
                let t = 30.0 * i as f64;
                [
                    ev(t, HbKind::WsPing, false, 0),
                    ev(t + 0.02, HbKind::WsPong, true, 0),
                ]
            })
            .collect();
        let hb = analyse(&e, &[]).unwrap();
        assert_eq!(
            (hb.kind, hb.started_by, hb.count),
            (HeartbeatKind::WsPing, Side::Server, 10)
        );
        assert_eq!(serde_json::to_value(hb.kind).unwrap(), "ws_ping");
        // Only the client's pongs captured: the server still drives.
        let pongs: Vec<HbEvent> = e.into_iter().filter(|x| x.kind == HbKind::WsPong).collect();
        let hb = analyse(&pongs, &[]).unwrap();
        assert_eq!(
            (hb.kind, hb.started_by),
            (HeartbeatKind::WsPing, Side::Server)
        );
    }

    #[test]
    fn app_messages_39_bytes_every_30s_with_jitter() {
        let mut small = Vec::new();
        for i in 0..30 {
            let t = 100.0 + 30.0 * i as f64 + jitter(i, 2.0);
            let size = 39 + (i % 3) as u32 - 1; // 38..40: "within a few bytes"
            small.push(SmallMsg {
                ts: secs(t),
                from_client: true,
                size,
            });
            small.push(SmallMsg {
                ts: secs(t + 0.08),
                from_client: false,
                size: 41,
            });
            // Unrelated chatter: irregular sizes and times.
            small.push(SmallMsg {
                ts: secs(t + 7.0 + jitter(i + 99, 5.0)),
                from_client: i % 2 == 0,
                size: 100 + (i as u32 * 37) % 150,
            });
        }
        let hb = analyse(&[], &small).unwrap();
        assert_eq!(hb.kind, HeartbeatKind::App);
        assert_eq!(
            hb.started_by,
            Side::Client,
            "the request starts before its response"
        );
        assert_eq!(hb.count, 30);
        assert_eq!(hb.size, Some(39));
        assert!(
            (hb.interval_median_s - 30.0).abs() < 3.0,
            "{}",
            hb.interval_median_s
        );
        assert!(hb.cv < MAX_APP_CV);
        assert_eq!(serde_json::to_value(hb.kind).unwrap(), "app");
    }

    #[test]
    fn irregular_small_messages_are_not_a_heartbeat() {
        let small: Vec<SmallMsg> = (0..30)
            .map(|i| SmallMsg {
                ts: secs((i * i) as f64 * 1.7),
                from_client: true,
                size: 50,
            })
            .collect();
        assert_eq!(analyse(&[], &small), None);
    }

    #[test]
    fn stretch_to_60s_when_throttled() {
        // 25 s for 10 minutes, then Chrome's 1-minute wake-ups for 6 beats, then back.
        let mut t = 0.0;
        let mut e = vec![ev(t, HbKind::WsPing, true, 0)];
        for k in 0..40 {
            t += if (24..30).contains(&k) { 60.0 } else { 25.0 };
            e.push(ev(t, HbKind::WsPing, true, 0));
        }
        let hb = analyse(&e, &[]).unwrap();
        assert!((hb.interval_median_s - 25.0).abs() < 1e-6);
        assert!((hb.interval_max_s - 60.0).abs() < 1e-6);
        let s = hb.stretched.unwrap();
        assert_eq!(s.count, 6);
        assert_eq!(s.from, secs(24.0 * 25.0));
        assert_eq!(s.to, secs(24.0 * 25.0 + 6.0 * 60.0));
        assert!((s.interval_median_s - 60.0).abs() < 1e-6);
        assert_eq!(hb.stretch_runs, 1);
    }

    #[test]
    fn stretch_found_even_when_it_dominates() {
        // 10 beats at 20 s, then 30 at 60 s: the overall median is 60, the start shows 20.
        let mut t = 0.0;
        let mut e = vec![ev(t, HbKind::CrlfPing, true, 4)];
        for k in 0..40 {
            t += if k < 10 { 20.0 } else { 60.0 };
            e.push(ev(t, HbKind::CrlfPing, true, 4));
        }
        let hb = analyse(&e, &[]).unwrap();
        assert_eq!(hb.stretched.map(|s| s.count), Some(30));
    }

    #[test]
    fn single_long_gap_is_not_a_stretch() {
        let mut t = 0.0;
        let mut e = vec![ev(t, HbKind::CrlfPing, true, 4)];
        for k in 0..20 {
            t += if k == 10 { 60.0 } else { 25.0 };
            e.push(ev(t, HbKind::CrlfPing, true, 4));
        }
        assert_eq!(analyse(&e, &[]).unwrap().stretched, None);
    }

    #[test]
    fn too_few_events() {
        let e = vec![
            ev(0.0, HbKind::WsPing, true, 0),
            ev(25.0, HbKind::WsPing, true, 0),
        ];
        assert_eq!(analyse(&e, &[]), None);
        let small: Vec<SmallMsg> = (0..3)
            .map(|i| SmallMsg {
                ts: secs(30.0 * i as f64),
                from_client: true,
                size: 39,
            })
            .collect();
        assert_eq!(analyse(&[], &small), None);
        assert_eq!(analyse(&[], &[]), None);
    }

    #[test]
    fn tcp_keepalive_is_last_resort() {
        let ka: Vec<HbEvent> = (0..5)
            .map(|i| ev(75.0 * i as f64, HbKind::TcpKeepalive, false, 0))
            .collect();
        let hb = analyse(&ka, &[]).unwrap();
        assert_eq!(
            (hb.kind, hb.started_by),
            (HeartbeatKind::TcpKeepalive, Side::Server)
        );
        let mut both = ka.clone();
        both.extend((0..4).map(|i| ev(20.0 * i as f64, HbKind::WsPing, true, 0)));
        assert_eq!(analyse(&both, &[]).unwrap().kind, HeartbeatKind::WsPing);
        assert_eq!(analyse_all(&both, &[]).len(), 2);
    }

    #[test]
    fn retransmissions_merge() {
        let mut e: Vec<HbEvent> = (0..5)
            .map(|i| ev(25.0 * i as f64, HbKind::CrlfPing, true, 4))
            .collect();
        e.push(ev(25.01, HbKind::CrlfPing, true, 4));
        let hb = analyse(&e, &[]).unwrap();
        assert_eq!(hb.count, 5);
    }

    proptest! {
        #[test]
        fn never_panics(
            raw in proptest::collection::vec((any::<i64>(), 0u8..6, any::<bool>(), any::<u32>()), 0..60),
        ) {
            let kinds = [HbKind::WsPing, HbKind::WsPong, HbKind::CrlfPing, HbKind::CrlfPong, HbKind::App, HbKind::TcpKeepalive];
            let events: Vec<HbEvent> = raw.iter().map(|&(t, k, c, s)| HbEvent {
                ts: Timestamp(t), kind: kinds[k as usize], from_client: c, size: s,
            }).collect();
            let small: Vec<SmallMsg> = raw.iter().map(|&(t, _, c, s)| SmallMsg {
                ts: Timestamp(t), from_client: c, size: s % 300,
            }).collect();
            let _ = analyse_all(&events, &small);
        }
    }
}
