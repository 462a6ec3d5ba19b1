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
use crate::boxed_list::BoxedList;
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
    /// Beats counted (after merging events closer than [`MIN_SPACING_S`]), of those the
    /// connection's log kept: its latest [`MAX_LOG_EVENTS`] / 2 to [`MAX_LOG_EVENTS`].
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
    /// The first [`MAX_INTERVALS`] intervals, in seconds. Only the HTML timeline draws them
    /// (`TrackerOptions::timeline`); the summaries the diagnosis keeps have none, so a
    /// `BoxedList`: 8 bytes, not 24.
    pub intervals: BoxedList<f64>,
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

/// The preferred mechanism of a series: the first `analyse_series` finds (it stops there).
fn first_heartbeat(s: &Series, sc: &mut Scratch) -> Option<Heartbeat> {
    let mut found = None;
    analyse_series(s, sc, |hb| {
        found = Some(hb);
        false
    });
    found
}

/// The connection's heartbeat: the preferred mechanism among [`analyse_all`]'s.
pub fn analyse(events: &[HbEvent], small: &[SmallMsg]) -> Option<Heartbeat> {
    with_scratch(|sc| {
        let s = Series::from_slices(events, small, std::mem::take(&mut sc.recs));
        let found = first_heartbeat(&s, sc);
        sc.recs = s.recs;
        found
    })
}

/// Every mechanism found, most preferred first: the larger of WS ping / CRLF, the other, app
/// (explicit `App` events, else inferred from small messages), TCP keep-alive.
pub fn analyse_all(events: &[HbEvent], small: &[SmallMsg]) -> Vec<Heartbeat> {
    with_scratch(|sc| {
        let s = Series::from_slices(events, small, std::mem::take(&mut sc.recs));
        let mut all = Vec::new();
        analyse_series(&s, sc, |hb| {
            all.push(hb);
            true
        });
        sc.recs = s.recs;
        all
    })
}

/// The lists an analysis works in, kept from one connection's analysis to the next (one per
/// thread): an analysis made ~10 short-lived lists (the grouped records, each series' merged
/// times, intervals and their sorted copies, the size counts), ~25 % of a diagnosis' allocations
/// on the synth capture. Bounded by the log's caps ([`MAX_LOG_EVENTS`], [`MAX_LOG_SMALL`]):
/// at most ~400 records of 16 bytes.
#[derive(Default)]
struct Scratch {
    /// The records grouped by stream ([`Series::recs`]).
    recs: Vec<(Timestamp, u32)>,
    /// A log's records decoded, in the order they came ([`HbLog::series`]).
    decoded: Vec<(usize, Timestamp, u32)>,
    /// Beat times of the mechanism being summarised.
    ts: Vec<Timestamp>,
    /// Intervals, then a sorted copy.
    intervals: Vec<f64>,
    sorted: Vec<f64>,
    sizes: Vec<u32>,
    freq: Vec<(usize, u32)>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch lists (fresh ones if they are in use, which no caller
/// does: the analysis does not nest).
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut sc) => f(&mut sc),
        Err(_) => f(&mut Scratch::default()),
    })
}

/// Heartbeat candidates kept per connection. When the log is full its older half goes, so the
/// analysis reads the latest 128 to 256: 64 to 128 beats of a ping and its pong, 27 to 53
/// minutes of a 25 s CRLF heartbeat before the connection ended. A web-phone's connection lives
/// all day and what killed it is in its last minutes, so the window is the latest events (the
/// first ones, as once, analysed the morning of a connection that died in the evening).
///
/// The cap is what a live connection's log costs at most, under 2 KB with the small messages':
/// memory grows with live connections only if this does not grow with their age. At 2 048
/// (before), 20 000 agents connected for two hours (the synth, `--lifetime 200000`, 2 GB) held
/// 62 MB of logs in a 114 MB diagnosis heap, and a day would have held ~9 KB an agent. Enough
/// remains for the analysis: a median and p95 of 64 or more intervals, and the rhythm before
/// a stretch of up to ~50 beats (`find_stretch` takes its base from the window's first ten).
pub const MAX_LOG_EVENTS: usize = 256;
/// Small messages kept per connection, the same way (a separate budget: chatter must not crowd
/// out beats); an app heartbeat needs [`MIN_APP`] of one size among them.
pub const MAX_LOG_SMALL: usize = 128;

/// Streams of a log: `2 × kind + side` (side: client 0, server 1), kinds in [`kind_index`]
/// order, then the small messages.
const APP: usize = 4;
const SMALL: usize = 6;
const STREAMS: usize = 2 * SMALL + 2;
/// Delta units, by the 2-bit exponent of a record's tag: ns, µs, ms, s. Classic pcap times are
/// whole microseconds, so most deltas shrink by 1000 (10 bits) before encoding.
pub(crate) const UNITS: [i64; 4] = [1, 1_000, 1_000_000, 1_000_000_000];
/// Smallest growth of a log, in bytes (a first record with its absolute time takes ~10). At 32
/// a log reached the ~250 bytes of a 200 MB synth's connection in 8 reallocations (32, 64, 96,
/// ...), 4 % of a diagnosis's time in `realloc` and its callees (perf); at 128, in 2 or 3:
/// one-thread diagnosis 0.625 -> 0.594 s, the 2 GB synth 5.86 -> 5.58 s, for +0.5 MiB resident
/// (+0.9 at 2 GB: up to 96 bytes more slack a live connection). 256 was no faster.
const GROW_MIN: usize = 128;

fn kind_index(kind: HbKind) -> usize {
    match kind {
        HbKind::WsPing => 0,
        HbKind::WsPong => 1,
        HbKind::CrlfPing => 2,
        HbKind::CrlfPong => 3,
        HbKind::App => 4,
        HbKind::TcpKeepalive => 5,
    }
}

fn side_index(from_client: bool) -> usize {
    usize::from(!from_client)
}

/// One connection's heartbeat candidates and small messages while it lives, byte-encoded: the
/// analysis runs once at the end, so a live connection pays ~3-6 bytes an event instead of a
/// 16-byte struct (plus Vec doubling) in each of two lists. 20k live connections with a 25 s
/// heartbeat made those lists the largest per-connection item (issue 8).
///
/// A record is a tag byte (stream in bits 0-3, unit exponent in bits 4-5, predictor in bits
/// 6-7), the zigzag LEB128 varint of its time less a prediction, and for `App` events and
/// small messages the size as a varint. The prediction is the previous record's time (of any
/// stream: captures may go backwards, and the events of a connection are close in time, so
/// deltas stay small), plus, for predictor 1, the interval before it (a lone stream beating:
/// its pings), or, for predictor 2, the interval before that one (two streams alternating: a
/// ping, its pong ~1 ms later, the next ping a beat after, so the record two back is the same
/// stream's). What is left is the beat's jitter: a byte or two where a 25 s delta in µs takes
/// four. Each record takes the shortest of the three. Other kinds drop their size: the
/// analysis does not read it. The decode at [`HbLog::analyse`] is exact, and the analysis does
/// not depend on the order of events, only on their multiset per stream.
#[derive(Debug, Default)]
pub struct HbLog {
    bytes: Vec<u8>,
    /// Time of the last record, the base of the next delta.
    last: i64,
    /// Times of the two records before it, the interval of the second-order prediction.
    before: [i64; 2],
    events: u16,
    small: u16,
}

impl HbLog {
    /// A heartbeat candidate; past [`MAX_LOG_EVENTS`] the older half of them goes first.
    pub fn event(&mut self, ts: Timestamp, kind: HbKind, from_client: bool, size: u32) {
        if usize::from(self.events) >= MAX_LOG_EVENTS {
            self.forget_older_half(false);
        }
        self.events += 1;
        let k = kind_index(kind);
        self.record(
            2 * k + side_index(from_client),
            ts,
            (k == APP).then_some(size),
        );
    }

    /// A small message (the caller keeps to [`MAX_SMALL`] bytes); past [`MAX_LOG_SMALL`] the
    /// older half of them goes first.
    pub fn small(&mut self, ts: Timestamp, from_client: bool, size: u32) {
        if usize::from(self.small) >= MAX_LOG_SMALL {
            self.forget_older_half(true);
        }
        self.small += 1;
        self.record(2 * SMALL + side_index(from_client), ts, Some(size));
    }

    /// Fetches the line the next record goes to.
    pub fn prefetch(&self) {
        if let Some(last) = self.bytes.last() {
            crate::tcp::prefetch_lines(last);
        }
    }

    fn record(&mut self, stream: usize, ts: Timestamp, size: Option<u32>) {
        // Wrapping: exact for any times, undone by the wrapping adds of the decode.
        let delta = ts.0.wrapping_sub(self.last);
        // The smallest of the three (not always the shortest once packed: a whole second is a
        // byte in its unit; packing only the one chosen saved ~100 instructions a record).
        let [i1, i2] = intervals(self.last, self.before);
        let (v, predictor) = [
            (delta, 0u8),
            (delta.wrapping_sub(i1), 1),
            (delta.wrapping_sub(i2), 2),
        ]
        .into_iter()
        .min_by_key(|(v, _)| v.unsigned_abs())
        .unwrap_or((delta, 0));
        let (exp, z) = packed(v);
        self.before = [self.last, self.before[0]];
        self.last = ts.0;
        let len = 1 + crate::varint::len(z) + size.map_or(0, |v| crate::varint::len(u64::from(v)));
        // Grow by a quarter (amortised O(1) still), not by doubling: at most ~25 % slack on a
        // log that lives as long as its connection.
        if self.bytes.capacity() - self.bytes.len() < len {
            self.bytes
                .reserve_exact((self.bytes.len() / 4).max(GROW_MIN).max(len));
        }
        // All fit the tag: stream < 16, exp < 4, predictor < 2.
        self.bytes
            .push((stream as u8) | (exp << 4) | (predictor << 6));
        crate::varint::push(&mut self.bytes, z);
        if let Some(v) = size {
            crate::varint::push(&mut self.bytes, u64::from(v));
        }
    }

    /// Writes the log again without the older half of one budget's records (the small
    /// messages, or the heartbeat candidates), in the order they came: the other budget's stay.
    /// Each budget drops half its cap at a time, so the rewrite costs O(1) a record.
    fn forget_older_half(&mut self, small: bool) {
        let old = std::mem::take(&mut self.bytes);
        let mut drop = usize::from(if small { self.small } else { self.events }) / 2;
        (self.last, self.before, self.events, self.small) = (0, [0, 0], 0, 0);
        // `for_each`: one loop (`Records::fold`).
        Records::new(&old).for_each(|(stream, ts, size)| {
            let is_small = stream / 2 == SMALL;
            if is_small == small && drop > 0 {
                drop -= 1;
                return;
            }
            if is_small {
                self.small += 1;
            } else {
                self.events += 1;
            }
            let sized = is_small || stream / 2 == APP;
            self.record(stream, ts, sized.then_some(size));
        });
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.bytes.capacity()
    }

    /// The records in the order they were added: (stream, time, size; 0 where not kept).
    fn records(&self) -> Records<'_> {
        Records::new(&self.bytes)
    }

    /// The records grouped by stream, in `recs`; the log is decoded once, into `decoded` (the
    /// varints cost more than the copy: decoding twice, to count then to place, was half the
    /// analysis).
    fn series(
        &self,
        recs: Vec<(Timestamp, u32)>,
        decoded: &mut Vec<(usize, Timestamp, u32)>,
    ) -> Series {
        decoded.clear();
        // `for_each`, not `extend`: one loop (`Records::fold`).
        self.records().for_each(|r| decoded.push(r));
        let mut counts = [0usize; STREAMS];
        for &(stream, _, _) in decoded.iter() {
            if let Some(c) = counts.get_mut(stream) {
                *c += 1;
            }
        }
        Series::build(counts, decoded.iter().copied(), recs)
    }

    /// The connection's heartbeat, as [`analyse`] gives it for the events and small messages
    /// kept; the log is freed.
    pub fn analyse(self) -> Option<Heartbeat> {
        with_scratch(|sc| {
            let series = self.series(std::mem::take(&mut sc.recs), &mut sc.decoded);
            drop(self);
            let found = first_heartbeat(&series, sc);
            sc.recs = series.recs;
            found
        })
    }
}

/// Decoder of an [`HbLog`]; stops at a truncated or unknown record (never written).
struct Records<'a> {
    bytes: &'a [u8],
    at: usize,
    /// As `HbLog::last` and `HbLog::before` were when the next record was written.
    last: i64,
    before: [i64; 2],
}

/// The last interval between records, and the one before it (`HbLog`'s predictors 1 and 2).
fn intervals(last: i64, before: [i64; 2]) -> [i64; 2] {
    [
        last.wrapping_sub(before[0]),
        before[0].wrapping_sub(before[1]),
    ]
}

/// `v` as a record holds it: the coarsest unit that divides it exactly (its exponent in
/// `UNITS`), and the zigzag of `v` in that unit.
pub(crate) fn packed(v: i64) -> (u8, u64) {
    let exp: u8 = if v % 1_000 != 0 {
        0
    } else if v % 1_000_000 != 0 {
        1
    } else if v % 1_000_000_000 != 0 {
        2
    } else {
        3
    };
    let unit = UNITS.get(usize::from(exp)).copied().unwrap_or(1);
    (exp, crate::varint::zigzag(v / unit))
}

impl<'a> Records<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Records {
            bytes,
            at: 0,
            last: 0,
            before: [0, 0],
        }
    }

    // Inlined: the decode loop (`Records::fold`) called it out of line, ~1.4 M times on the
    // 200 MB synth.
    #[inline(always)]
    fn varint(&mut self) -> Option<u64> {
        let (v, at) = crate::varint::read(self.bytes, self.at)?;
        self.at = at;
        Some(v)
    }
}

impl Iterator for Records<'_> {
    type Item = (usize, Timestamp, u32);

    fn next(&mut self) -> Option<Self::Item> {
        self.record()
    }

    /// What `next` gives, in one loop: `for_each` comes here, and the analysis decodes
    /// every live connection's log at the end (~950 000 records on the 200 MB synth), where
    /// `Vec::extend` on this iterator paid a call and an `Option` a record.
    fn fold<A, F: FnMut(A, Self::Item) -> A>(mut self, init: A, mut f: F) -> A {
        let mut acc = init;
        while let Some(r) = self.record() {
            acc = f(acc, r);
        }
        acc
    }
}

impl Records<'_> {
    #[inline(always)]
    fn record(&mut self) -> Option<(usize, Timestamp, u32)> {
        let tag = *self.bytes.get(self.at)?;
        self.at += 1;
        let stream = usize::from(tag & 0x0f);
        let unit = UNITS.get(usize::from((tag >> 4) & 3)).copied()?;
        if stream >= STREAMS {
            return None;
        }
        let mut delta = crate::varint::unzigzag(self.varint()?).wrapping_mul(unit);
        match tag >> 6 {
            0 => {}
            p @ (1 | 2) => {
                delta = delta.wrapping_add(intervals(self.last, self.before)[usize::from(p - 1)])
            }
            _ => return None,
        }
        self.before = [self.last, self.before[0]];
        self.last = self.last.wrapping_add(delta);
        let size = if stream / 2 == APP || stream / 2 == SMALL {
            u32::try_from(self.varint()?).ok()?
        } else {
            0
        };
        Some((stream, Timestamp(self.last), size))
    }
}

/// The events grouped the way the analysis reads them: (time, size) per stream, each stream
/// sorted by time, in one buffer (a counting sort by stream, then a sort per stream, which is
/// linear on the usual in-order capture). No mechanism filters the whole list again.
#[derive(Debug, Default)]
struct Series {
    recs: Vec<(Timestamp, u32)>,
    /// Stream `s` is `recs[starts[s]..starts[s + 1]]`.
    starts: [usize; STREAMS + 1],
}

impl Series {
    /// From the records (stream, time, size) and the count of each stream, in `recs` (a
    /// scratch list, cleared here).
    fn build(
        counts: [usize; STREAMS],
        records: impl Iterator<Item = (usize, Timestamp, u32)>,
        mut recs: Vec<(Timestamp, u32)>,
    ) -> Self {
        let mut starts = [0usize; STREAMS + 1];
        for (i, c) in counts.iter().enumerate() {
            let at = starts.get(i).copied().unwrap_or(0);
            if let Some(next) = starts.get_mut(i + 1) {
                *next = at + c;
            }
        }
        let total = starts.last().copied().unwrap_or(0);
        recs.clear();
        recs.resize(total, (Timestamp(0), 0u32));
        let mut fill = starts;
        for (stream, ts, size) in records {
            let Some(at) = fill.get_mut(stream) else {
                continue;
            };
            if let Some(slot) = recs.get_mut(*at) {
                *slot = (ts, size);
                *at += 1;
            }
        }
        let mut s = Series { recs, starts };
        for stream in 0..STREAMS {
            s.stream_mut(stream).sort_unstable_by_key(|r| r.0);
        }
        s
    }

    fn from_slices(events: &[HbEvent], small: &[SmallMsg], recs: Vec<(Timestamp, u32)>) -> Self {
        let records = events
            .iter()
            .map(|e| {
                let k = kind_index(e.kind);
                (2 * k + side_index(e.from_client), e.ts, e.size)
            })
            .chain(
                small
                    .iter()
                    .map(|m| (2 * SMALL + side_index(m.from_client), m.ts, m.size)),
            );
        let mut counts = [0usize; STREAMS];
        for (stream, _, _) in records.clone() {
            if let Some(c) = counts.get_mut(stream) {
                *c += 1;
            }
        }
        Series::build(counts, records, recs)
    }

    fn range(&self, stream: usize) -> std::ops::Range<usize> {
        let a = self.starts.get(stream).copied().unwrap_or(0);
        let b = self.starts.get(stream + 1).copied().unwrap_or(a);
        a..b
    }

    /// One stream's (time, size), sorted by time.
    fn stream(&self, stream: usize) -> &[(Timestamp, u32)] {
        self.recs.get(self.range(stream)).unwrap_or(&[])
    }

    fn stream_mut(&mut self, stream: usize) -> &mut [(Timestamp, u32)] {
        let r = self.range(stream);
        self.recs.get_mut(r).unwrap_or(&mut [])
    }

    /// Number of times [`merge_close`] keeps from one stream.
    fn merged_len(&self, stream: usize) -> usize {
        let min = (MIN_SPACING_S * 1e9) as i64;
        let mut n = 0;
        let mut prev: Option<Timestamp> = None;
        for r in self.stream(stream) {
            if prev.is_none_or(|p| r.0 .0.saturating_sub(p.0) >= min) {
                n += 1;
                prev = Some(r.0);
            }
        }
        n
    }

    /// The stream of `kind` from the side with more merged times (client on a tie), and that
    /// number; `None` below [`MIN_EXPLICIT`]. The times themselves are merged only for the
    /// mechanism summarised ([`Series::merged`]).
    fn side_series(&self, kind: HbKind) -> Option<(Side, usize, usize)> {
        let k = kind_index(kind);
        let c = self.merged_len(2 * k);
        let s = self.merged_len(2 * k + 1);
        let (side, stream, n) = if c >= s {
            (Side::Client, 2 * k, c)
        } else {
            (Side::Server, 2 * k + 1, s)
        };
        (n >= MIN_EXPLICIT).then_some((side, stream, n))
    }

    /// One stream's times, merged ([`merge_close`]), into `out`.
    fn merged(&self, stream: usize, out: &mut Vec<Timestamp>) {
        merge_close(self.stream(stream).iter().map(|r| r.0), out);
    }

    /// Pings of one kind (from the side that sends more), else its pongs (the pinger is then
    /// the other side): (pinger, stream of the beats, beat count).
    fn explicit(&self, ping: HbKind, pong: HbKind) -> Option<(Side, usize, usize)> {
        if let Some(found) = self.side_series(ping) {
            return Some(found);
        }
        let (side, stream, n) = self.side_series(pong)?;
        let pinger = match side {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        };
        Some((pinger, stream, n))
    }

    fn app_events(&self, sc: &mut Scratch) -> Option<Heartbeat> {
        let (side, stream, _) = self.side_series(HbKind::App)?;
        self.merged(stream, &mut sc.ts);
        sc.sizes.clear();
        sc.sizes.extend(
            self.stream(2 * APP + side_index(side == Side::Client))
                .iter()
                .map(|r| r.1),
        );
        let size = median_u32(&mut sc.sizes);
        Some(summarise(
            HeartbeatKind::App,
            side,
            &sc.ts,
            size,
            (&mut sc.intervals, &mut sc.sorted),
        ))
    }

    /// Finds periodic small messages of a repeating size from one side: for each side, the
    /// most frequent sizes (± [`SIZE_TOLERANCE`]) are tried as candidates; a candidate is a
    /// heartbeat when it has ≥ [`MIN_APP`] occurrences, a median interval ≥
    /// [`MIN_APP_INTERVAL_S`] and a robust CV below [`MAX_APP_CV`]. The candidate with most
    /// occurrences wins; on a tie (request and response), the one that starts first.
    fn infer_app(&self, sc: &mut Scratch) -> Option<Heartbeat> {
        let mut best: Option<(usize, Timestamp, Heartbeat)> = None;
        let min = (MIN_SPACING_S * 1e9) as i64;
        for client in [true, false] {
            let msgs = self.stream(2 * SMALL + side_index(client));
            if msgs.len() < MIN_APP {
                continue; // no size can occur often enough
            }
            let side = Side::from_client(client);
            // Occurrences per size (sizes above MAX_SMALL are not candidates), counted by
            // sorting: a side has few small messages, and a 257-entry histogram cost more to
            // clear and scan than the sort.
            sc.sizes.clear();
            sc.sizes
                .extend(msgs.iter().map(|m| m.1).filter(|&s| s <= MAX_SMALL));
            sc.sizes.sort_unstable();
            sc.freq.clear();
            sc.freq.extend(
                sc.sizes
                    .chunk_by(|a, b| a == b)
                    .filter(|run| run.len() >= MIN_APP)
                    .filter_map(|run| Some((run.len(), *run.first()?))),
            );
            if sc.freq.is_empty() {
                continue;
            }
            sc.freq
                .sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            let mut centres = [0u32; 8];
            let mut n_centres = 0;
            for &(_, s) in &sc.freq {
                if n_centres >= centres.len() {
                    break;
                }
                let chosen = centres.get(..n_centres).unwrap_or(&[]);
                if chosen.iter().all(|c| c.abs_diff(s) > SIZE_TOLERANCE) {
                    if let Some(slot) = centres.get_mut(n_centres) {
                        *slot = s;
                    }
                    n_centres += 1;
                }
            }
            // The stream is sorted, so each candidate's times come out sorted and merge as they
            // go (what `merge_close` does).
            for &c in centres.get(..n_centres).unwrap_or(&[]) {
                sc.ts.clear();
                sc.sizes.clear();
                for &(t, size) in msgs.iter() {
                    if size.abs_diff(c) > SIZE_TOLERANCE {
                        continue;
                    }
                    sc.sizes.push(size);
                    if sc.ts.last().is_none_or(|p| t.0.saturating_sub(p.0) >= min) {
                        sc.ts.push(t);
                    }
                }
                let (Some(&first), count) = (sc.ts.first(), sc.ts.len()) else {
                    continue;
                };
                if count < MIN_APP {
                    continue;
                }
                // A candidate that could not replace the best is not worth its statistics.
                if best
                    .as_ref()
                    .is_some_and(|(n, f, _)| !(count > *n || (count == *n && first < *f)))
                {
                    continue;
                }
                let size = median_u32(&mut sc.sizes);
                let hb = summarise(
                    HeartbeatKind::App,
                    side,
                    &sc.ts,
                    size,
                    (&mut sc.intervals, &mut sc.sorted),
                );
                if hb.cv >= MAX_APP_CV || hb.interval_median_s < MIN_APP_INTERVAL_S {
                    continue;
                }
                best = Some((count, first, hb));
            }
        }
        best.map(|(_, _, hb)| hb)
    }
}

/// The mechanisms in order of preference (see [`analyse_all`]), each handed to `found`, which
/// says whether to go on: [`analyse`] stops at the first, and the others are not computed.
fn analyse_series(s: &Series, sc: &mut Scratch, mut found: impl FnMut(Heartbeat) -> bool) {
    let mut explicit = [
        s.explicit(HbKind::WsPing, HbKind::WsPong)
            .map(|(side, stream, n)| (HeartbeatKind::WsPing, side, stream, n)),
        s.explicit(HbKind::CrlfPing, HbKind::CrlfPong)
            .map(|(side, stream, n)| (HeartbeatKind::Crlf, side, stream, n)),
    ];
    // More beats first (a beat count is its number of merged times); WS ping first on a tie.
    if let [Some(a), Some(b)] = &explicit {
        if b.3 > a.3 {
            explicit.swap(0, 1);
        }
    }
    for (kind, side, stream, _) in explicit.into_iter().flatten() {
        s.merged(stream, &mut sc.ts);
        let hb = summarise(
            kind,
            side,
            &sc.ts,
            None,
            (&mut sc.intervals, &mut sc.sorted),
        );
        if !found(hb) {
            return;
        }
    }
    if let Some(app) = s.app_events(sc).or_else(|| s.infer_app(sc)) {
        if !found(app) {
            return;
        }
    }
    if let Some((side, stream, _)) = s.side_series(HbKind::TcpKeepalive) {
        s.merged(stream, &mut sc.ts);
        found(summarise(
            HeartbeatKind::TcpKeepalive,
            side,
            &sc.ts,
            None,
            (&mut sc.intervals, &mut sc.sorted),
        ));
    }
}

/// Drops events closer than [`MIN_SPACING_S`] to the previous kept one, from sorted times, into
/// `out` (cleared first).
fn merge_close(ts: impl Iterator<Item = Timestamp>, out: &mut Vec<Timestamp>) {
    let min = (MIN_SPACING_S * 1e9) as i64;
    out.clear();
    for t in ts {
        if out
            .last()
            .is_none_or(|prev| t.0.saturating_sub(prev.0) >= min)
        {
            out.push(t);
        }
    }
}

/// Interval statistics and stretch detection over sorted beat times (at least 2), in the
/// scratch lists `intervals` and `sorted`.
fn summarise(
    kind: HeartbeatKind,
    side: Side,
    ts: &[Timestamp],
    size: Option<u32>,
    (intervals, sorted): (&mut Vec<f64>, &mut Vec<f64>),
) -> Heartbeat {
    intervals.clear();
    intervals.extend(
        ts.windows(2)
            .map(|w| w[1].0.saturating_sub(w[0].0) as f64 / 1e9),
    );
    // One scratch buffer for every sorted copy (intervals, deviations, a stretched run).
    sorted.clear();
    sorted.extend_from_slice(intervals);
    sorted.sort_unstable_by(f64::total_cmp);
    let median = percentile(sorted, 0.5);
    let p95 = percentile(sorted, 0.95);
    let max = sorted.last().copied().unwrap_or(0.0);
    sorted.clear();
    sorted.extend(intervals.iter().map(|i| (i - median).abs()));
    sorted.sort_unstable_by(f64::total_cmp);
    let mad = percentile(sorted, 0.5);
    let cv = if median > 0.0 {
        1.4826 * mad / median
    } else {
        f64::INFINITY
    };
    let (stretched, stretch_runs) = find_stretch(ts, intervals, median, sorted);
    let intervals_truncated = intervals.len() > MAX_INTERVALS;
    // A list of its own, exactly as long as what is kept.
    let kept = intervals
        .get(..intervals.len().min(MAX_INTERVALS))
        .unwrap_or(&[])
        .to_vec();
    Heartbeat {
        kind,
        started_by: side,
        count: ts.len(),
        first: ts.first().copied().unwrap_or_default(),
        last: ts.last().copied().unwrap_or_default(),
        size,
        interval_median_s: median,
        interval_p95_s: p95,
        interval_max_s: max,
        cv,
        intervals_truncated,
        intervals: kept.into(),
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
fn find_stretch(
    ts: &[Timestamp],
    intervals: &[f64],
    median: f64,
    scratch: &mut Vec<f64>,
) -> (Option<Stretch>, usize) {
    let mut head = [0f64; 10];
    let n = intervals.len().min(head.len());
    head.get_mut(..n)
        .unwrap_or(&mut [])
        .copy_from_slice(intervals.get(..n).unwrap_or(&[]));
    let head = head.get_mut(..n).unwrap_or(&mut []);
    head.sort_unstable_by(f64::total_cmp);
    let base = median.min(percentile(head, 0.5));
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
        scratch.clear();
        scratch.extend_from_slice(intervals.get(start..i).unwrap_or(&[]));
        scratch.sort_unstable_by(f64::total_cmp);
        best = Some(Stretch {
            from: ts.get(start).copied().unwrap_or_default(),
            to: ts.get(i).copied().unwrap_or_default(),
            count,
            interval_median_s: percentile(scratch, 0.5),
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

// A live connection silent for minutes is parked encoded (`tcp::park`): the log as its bytes.
crate::tcp::kept::codec_struct!(HbLog {
    bytes,
    last,
    before,
    events,
    small
});

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

    /// The analysis as it was before the byte log and the single-pass rewrite (commit
    /// 41d502d), kept as the oracle the rewrite must match exactly.
    mod reference {
        use super::super::{
            HbEvent, HbKind, Heartbeat, HeartbeatKind, SmallMsg, Stretch, Timestamp, MAX_APP_CV,
            MAX_INTERVALS, MAX_SMALL, MIN_APP, MIN_APP_INTERVAL_S, MIN_EXPLICIT, MIN_SPACING_S,
            MIN_STRETCH_RUN, SIZE_TOLERANCE, STRETCH_FACTOR, THROTTLE_BASE_MAX_S,
            THROTTLE_WINDOW_S,
        };
        use crate::app::Side;

        pub(super) fn analyse_all(events: &[HbEvent], small: &[SmallMsg]) -> Vec<Heartbeat> {
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
                        Some((n, first, _)) => {
                            hb.count > *n || (hb.count == *n && hb.first < *first)
                        }
                    };
                    if better {
                        best = Some((hb.count, hb.first, hb));
                    }
                }
            }
            best.map(|(_, _, hb)| hb)
        }

        /// Interval statistics and stretch detection over sorted beat times (at least 2).
        fn summarise(
            kind: HeartbeatKind,
            side: Side,
            ts: &[Timestamp],
            size: Option<u32>,
        ) -> Heartbeat {
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
                intervals: intervals
                    .into_iter()
                    .take(MAX_INTERVALS)
                    .collect::<Vec<_>>()
                    .into(),
                stretched,
                stretch_runs,
            }
        }

        /// Whether one interval is stretched against the base rhythm.
        fn is_stretched(interval_s: f64, base_s: f64) -> bool {
            let (lo, hi) = THROTTLE_WINDOW_S;
            (base_s < THROTTLE_BASE_MAX_S && (lo..=hi).contains(&interval_s))
                || interval_s > STRETCH_FACTOR * base_s
        }

        /// Runs of ≥ [`MIN_STRETCH_RUN`] consecutive stretched intervals. The base rhythm is the smaller
        /// of the overall median and the median of the first 10 intervals: throttling starts only after
        /// 5 minutes hidden, so the start of a connection shows the unthrottled rhythm even when the
        /// stretched part is the longer one.
        fn find_stretch(
            ts: &[Timestamp],
            intervals: &[f64],
            median: f64,
        ) -> (Option<Stretch>, usize) {
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
    }

    const KINDS: [HbKind; 6] = [
        HbKind::WsPing,
        HbKind::WsPong,
        HbKind::CrlfPing,
        HbKind::CrlfPong,
        HbKind::App,
        HbKind::TcpKeepalive,
    ];

    /// What the log should give back for an event: sizes only where the analysis reads them.
    fn expected(e: &HbEvent) -> (usize, Timestamp, u32) {
        let k = kind_index(e.kind);
        let size = if k == APP { e.size } else { 0 };
        (2 * k + side_index(e.from_client), e.ts, size)
    }

    #[test]
    fn log_round_trip_zero_negative_and_huge_deltas() {
        let times = [
            0,
            0,                     // zero delta
            1_700_000_000_000_000, // an absolute µs-aligned time
            1_700_000_000_000_001, // +1 ns
            1_699_999_999_999_000, // backwards, µs-aligned
            1_700_000_025_000_000, // +25 s exactly: the `s` unit
            1_700_000_025_050_000, // +50 ms
            1_700_000_025_050_000,
            i64::MAX, // huge gaps both ways: the delta wraps
            i64::MIN,
            i64::MAX,
            -1,
            i64::MIN + 999,
            1_000_000_000_000,
        ];
        let mut log = HbLog::default();
        let mut want = Vec::new();
        for (i, &t) in times.iter().enumerate() {
            let e = HbEvent {
                ts: Timestamp(t),
                kind: KINDS[i % KINDS.len()],
                from_client: i % 3 == 0,
                size: [0, 1, 127, 128, u32::MAX][i % 5],
            };
            log.event(e.ts, e.kind, e.from_client, e.size);
            want.push(expected(&e));
            let size = [0, 256, 128, 5][i % 4];
            log.small(Timestamp(t ^ 0x5555), i % 2 == 0, size);
            want.push((
                2 * SMALL + usize::from(i % 2 != 0),
                Timestamp(t ^ 0x5555),
                size,
            ));
        }
        let got: Vec<_> = log.records().collect();
        assert_eq!(got, want);
        // A zero delta and a whole-second one cost a tag and one byte.
        let mut log = HbLog::default();
        log.event(Timestamp(0), HbKind::WsPing, true, 0);
        log.event(Timestamp(0), HbKind::WsPing, true, 0);
        log.event(Timestamp(25_000_000_000), HbKind::WsPing, true, 0);
        assert_eq!(log.bytes.len(), 6);
    }

    /// Every predictor (the last time; plus the last interval; plus the one before) is chosen
    /// somewhere in a mix of a lone beat, alternating pings and pongs, chatter and jumps, and
    /// every record decodes to the time it was written with.
    #[test]
    fn log_predictors_round_trip() {
        let mut log = HbLog::default();
        let mut want = Vec::new();
        let mut t = 1_700_000_000_000_000i64;
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        for i in 0..MAX_LOG_EVENTS as i64 - 1 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let jitter = (rng % 2_000_001) as i64 - 1_000_000;
            let (kind, from_client) = match i / 60 {
                0 => (HbKind::WsPing, true),
                1 => (
                    [HbKind::CrlfPing, HbKind::CrlfPong][i as usize % 2],
                    i % 2 == 0,
                ),
                2 => (
                    KINDS[(rng % KINDS.len() as u64) as usize],
                    rng.is_multiple_of(3),
                ),
                _ => (HbKind::App, false),
            };
            t = match (i / 60, i % 2) {
                (1, 1) => t + 40_000_000 + jitter,
                (3, _) if i % 7 == 0 => t.wrapping_add(rng as i64),
                _ => t + 25_000_000_000 + jitter * 1_000,
            };
            let size = (rng >> 40) as u32;
            log.event(Timestamp(t), kind, from_client, size);
            want.push(expected(&HbEvent {
                ts: Timestamp(t),
                kind,
                from_client,
                size,
            }));
        }
        assert_eq!(log.records().collect::<Vec<_>>(), want);
        let mut used = [0; 3];
        let mut r = Records::new(&log.bytes);
        while let Some(&tag) = r.bytes.get(r.at) {
            used[usize::from(tag >> 6)] += 1;
            r.next();
        }
        assert!(used.iter().all(|&n| n > 0), "{used:?}");
    }

    #[test]
    fn log_keeps_the_latest_events_of_each_budget() {
        let mut log = HbLog::default();
        let (ne, ns) = (MAX_LOG_EVENTS as i64 + 10, MAX_LOG_SMALL as i64 + 10);
        for i in 0..ne.max(ns) {
            if i < ne {
                log.event(Timestamp(i * 1_000), HbKind::CrlfPing, true, 4);
            }
            if i < ns {
                log.small(Timestamp(-i), false, 40);
            }
        }
        // Past the cap of one budget, the other's records stay.
        log.small(Timestamp(7), true, 1);
        log.event(Timestamp(7), HbKind::App, false, 9);
        let recs: Vec<_> = log.records().collect();
        let events: Vec<_> = recs.iter().filter(|r| r.0 / 2 != SMALL).collect();
        let small: Vec<_> = recs.iter().filter(|r| r.0 / 2 == SMALL).collect();
        // Each cap was reached once: half of it went, the oldest first.
        let kept_e = MAX_LOG_EVENTS - MAX_LOG_EVENTS / 2 + 11;
        let kept_s = MAX_LOG_SMALL - MAX_LOG_SMALL / 2 + 11;
        assert_eq!((events.len(), small.len()), (kept_e, kept_s));
        assert_eq!(
            events.first().map(|r| r.1),
            Some(Timestamp((ne - 10 - (kept_e as i64 - 11)) * 1_000))
        );
        assert_eq!(
            events.get(kept_e - 2).map(|r| r.1),
            Some(Timestamp((ne - 1) * 1_000))
        );
        assert_eq!(
            events.last().map(|r| (r.0, r.1, r.2)),
            Some((2 * APP + 1, Timestamp(7), 9))
        );
        assert_eq!(
            small.first().map(|r| (r.1, r.2)),
            Some((Timestamp(-(ns - kept_s as i64 + 1)), 40))
        );
        assert_eq!(
            small.last().map(|r| (r.0, r.1, r.2)),
            Some((2 * SMALL, Timestamp(7), 1))
        );
        assert_eq!(
            (usize::from(log.events), usize::from(log.small)),
            (kept_e, kept_s)
        );
    }

    /// A connection up all day whose page was throttled in its last 40 minutes: the heartbeat
    /// analysed is the one before the end, stretched to a minute. (The window holds at least
    /// 64 beats of ping and pong, so the rhythm before a stretch of up to ~50 beats is in it
    /// whatever the residue of the halving: `find_stretch` takes its base from the window's
    /// first intervals.)
    #[test]
    fn a_day_long_connection_shows_the_stretch_of_its_last_40_minutes() {
        let mut log = HbLog::default();
        let mut t = 0i64;
        let beat = |log: &mut HbLog, t: i64| {
            log.event(Timestamp(t), HbKind::CrlfPing, true, 4);
            log.event(Timestamp(t + 40_000_000), HbKind::CrlfPong, false, 2);
        };
        // 23 hours of a 25 s heartbeat, then 60 s beats (Chrome's intensive throttling).
        for i in 0..(23 * 3600 / 25) {
            t += 25_000_000_000 + (jitter(i, 0.3) * 1e9) as i64;
            beat(&mut log, t);
        }
        for _ in 0..40 {
            t += 60_000_000_000;
            beat(&mut log, t);
        }
        assert!(
            log.heap_bytes() <= 2 * MAX_LOG_EVENTS * 5,
            "{}",
            log.heap_bytes()
        );
        let hb = log.analyse().unwrap();
        assert_eq!(hb.kind, HeartbeatKind::Crlf);
        assert!(
            (MAX_LOG_EVENTS / 4..=MAX_LOG_EVENTS / 2).contains(&hb.count),
            "{}",
            hb.count
        );
        assert_eq!(hb.interval_max_s, 60.0);
        let s = hb.stretched.expect("the last 40 minutes are stretched");
        assert_eq!((s.count, s.interval_median_s), (40, 60.0));
    }

    #[test]
    fn log_of_a_50_minute_crlf_heartbeat_is_small() {
        // Client CRLF ping every 25 s with µs jitter, the server's pong ~50 ms later, pcap µs
        // times: 120 of each, within the log's cap.
        let mut log = HbLog::default();
        let mut t = 1_700_000_000_000_000i64;
        for i in 0..120 {
            t += 25_000_000_000 + (jitter(i, 0.3) * 1e6) as i64 * 1_000;
            log.event(Timestamp(t), HbKind::CrlfPing, true, 4);
            let rtt = 50_000_000 + (jitter(i + 7, 0.01) * 1e6) as i64 * 1_000;
            log.event(Timestamp(t + rtt), HbKind::CrlfPong, false, 2);
        }
        let (len, cap) = (log.bytes.len(), log.heap_bytes());
        // Before: two Vec<HbEvent> of 120 → 2 × 128 × 16 = 4 KB of capacity.
        // The beat's jitter (±0.3 s in µs) against its predicted time takes 3 bytes where the
        // 25 s delta took 4; the pong's (±10 ms) 2-3 where its 50 ms took 3 (873 bytes, 1 075
        // with deltas alone).
        assert!(len <= 240 * 4, "{len} bytes for 240 events");
        assert!(
            cap <= len + len / 4 + GROW_MIN,
            "{cap} capacity for {len} bytes"
        );
        let hb = log.analyse().unwrap();
        assert_eq!((hb.kind, hb.count), (HeartbeatKind::Crlf, 120));
    }

    #[test]
    fn stretched_runs_and_truncated_intervals_match_the_reference() {
        // 1500 beats: intervals truncated at 1000, several stretched runs of different lengths.
        let mut t = 0.0;
        let mut e = vec![ev(t, HbKind::WsPing, true, 0)];
        for k in 0..1500 {
            t += match k % 97 {
                10..=13 => 60.0,
                40..=41 => 90.0,
                _ => 25.0 + jitter(k, 0.5),
            };
            e.push(ev(t, HbKind::WsPing, true, 0));
        }
        let all = analyse_all(&e, &[]);
        assert_eq!(all, reference::analyse_all(&e, &[]));
        assert!(all[0].intervals_truncated);
        assert_eq!(all[0].intervals.len(), MAX_INTERVALS);
        assert!(all[0].stretch_runs > 1);
    }

    #[test]
    fn boundaries_match_the_reference() {
        // Beats every 30 s, each followed by one exactly MIN_SPACING_S later (kept) and one just
        // under it (merged); two sizes with the same count and the same first time (a tie).
        let mut small = Vec::new();
        let mut events = Vec::new();
        for i in 0..12 {
            let t = 1_700_000_000_000_000_000 + i * 30_000_000_000;
            for (dt, size) in [
                (0, 39),
                (0, 90),
                (1, 90),
                (0, 150),
                (100_000_000, 150),
                (99_999_999, 150),
            ] {
                small.push(SmallMsg {
                    ts: Timestamp(t + dt),
                    from_client: i % 5 != 0,
                    size,
                });
            }
            events.push(HbEvent {
                ts: Timestamp(t + 100_000_000 * (i % 2)),
                kind: HbKind::TcpKeepalive,
                from_client: true,
                size: 0,
            });
        }
        let want = reference::analyse_all(&events, &small);
        assert_eq!(want.len(), 2);
        assert_eq!(analyse_all(&events, &small), want);
        let mut log = HbLog::default();
        for m in &small {
            log.small(m.ts, m.from_client, m.size);
        }
        for e in &events {
            log.event(e.ts, e.kind, e.from_client, e.size);
        }
        assert_eq!(log.analyse(), want.into_iter().next());
    }

    /// Times that look like traffic: mostly regular gaps, some bursts, some steps backwards.
    fn gaps() -> impl Strategy<Value = i64> {
        prop_oneof![
            4 => (24_000_000i64..26_000_000).prop_map(|us| us * 1_000),
            2 => (0i64..200_000).prop_map(|us| us * 1_000),
            1 => Just(60_000_000_000i64),
            1 => -2_000_000_000i64..0,
            1 => any::<i64>().prop_map(|v| v % 100_000_000_000),
        ]
    }

    fn events_strategy(max: usize) -> impl Strategy<Value = (Vec<HbEvent>, Vec<SmallMsg>)> {
        proptest::collection::vec(
            (
                gaps(),
                0u8..8,
                any::<bool>(),
                prop_oneof![0u32..8, 36u32..44, any::<u32>()],
            ),
            0..max,
        )
        .prop_map(|raw| {
            let (mut events, mut small) = (Vec::new(), Vec::new());
            let mut t = 1_700_000_000_000_000_000i64;
            for (gap, k, client, size) in raw {
                t = t.saturating_add(gap);
                match KINDS.get(usize::from(k)) {
                    Some(&kind) => events.push(HbEvent {
                        ts: Timestamp(t),
                        kind,
                        from_client: client,
                        size,
                    }),
                    None => small.push(SmallMsg {
                        ts: Timestamp(t),
                        from_client: client,
                        size: size % (MAX_SMALL + 1),
                    }),
                }
            }
            (events, small)
        })
    }

    /// Small messages with a rhythm: beats of about `centre` bytes every `period` ms with
    /// jitter, mostly from the client, some answered, some chatter between them.
    fn rhythm_strategy() -> impl Strategy<Value = Vec<SmallMsg>> {
        (
            1_000i64..70_000,
            0i64..10_000,
            0u32..=MAX_SMALL,
            proptest::collection::vec((any::<u16>(), 0u32..8, any::<u8>()), 0..120),
        )
            .prop_map(|(period_ms, jitter_ms, centre, raw)| {
                let mut out = Vec::new();
                let mut t = 1_700_000_000_000_000_000i64;
                for (j, dsize, k) in raw {
                    let jit = i64::from(j) % (2 * jitter_ms + 1) - jitter_ms;
                    t += (period_ms + jit) * 1_000_000;
                    let size = (centre + dsize).saturating_sub(3).min(MAX_SMALL);
                    out.push(SmallMsg {
                        ts: Timestamp(t),
                        from_client: k % 7 != 0,
                        size,
                    });
                    if k % 3 == 0 {
                        out.push(SmallMsg {
                            ts: Timestamp(t + 80_000_000),
                            from_client: k % 7 == 0,
                            size: (size + 2) % (MAX_SMALL + 1),
                        });
                    }
                    if k % 5 == 0 {
                        out.push(SmallMsg {
                            ts: Timestamp(t + i64::from(k) * 100_000_000),
                            from_client: k % 2 == 0,
                            size: u32::from(k),
                        });
                    }
                }
                out
            })
    }

    /// The plain model of a log's budget: past `cap` records, the older half goes.
    fn keep_windowed<T>(kept: &mut Vec<T>, cap: usize, x: T) {
        if kept.len() == cap {
            kept.drain(..cap / 2);
        }
        kept.push(x);
    }

    proptest! {
        /// Inferred app heartbeats (candidate sizes, ties, CV and interval limits) as the
        /// reference finds them.
        #[test]
        fn inferred_app_matches_the_reference(small in rhythm_strategy()) {
            let want = reference::analyse_all(&[], &small);
            prop_assert_eq!(analyse_all(&[], &small), want);
            // Through the log: the reference's over the window the log keeps (its cap).
            let mut log = HbLog::default();
            let mut kept: Vec<SmallMsg> = Vec::new();
            for m in &small {
                keep_windowed(&mut kept, MAX_LOG_SMALL, *m);
                log.small(m.ts, m.from_client, m.size);
            }
            prop_assert_eq!(log.analyse(), reference::analyse_all(&[], &kept).into_iter().next());
        }

        /// The rewritten analysis gives exactly what the reference gives, for every mechanism.
        #[test]
        fn analysis_matches_the_reference((events, small) in events_strategy(300)) {
            let want = reference::analyse_all(&events, &small);
            prop_assert_eq!(analyse_all(&events, &small), want.clone());
            prop_assert_eq!(analyse(&events, &small), want.into_iter().next());
        }

        /// Through the log (in arrival order, with the caps), the same heartbeat as the
        /// reference over the events kept.
        #[test]
        fn log_analysis_matches_the_reference((events, small) in events_strategy(300)) {
            let mut log = HbLog::default();
            let mut order: Vec<(Timestamp, Option<HbEvent>, Option<SmallMsg>)> = events
                .iter()
                .map(|e| (e.ts, Some(*e), None))
                .chain(small.iter().map(|m| (m.ts, None, Some(*m))))
                .collect();
            // Interleave the two kinds of record the way a connection would.
            order.sort_by_key(|o| o.0 .0 % 7);
            for (_, e, m) in &order {
                if let Some(e) = e {
                    log.event(e.ts, e.kind, e.from_client, e.size);
                }
                if let Some(m) = m {
                    log.small(m.ts, m.from_client, m.size);
                }
            }
            let want: Vec<(usize, Timestamp, u32)> = order
                .iter()
                .filter_map(|(_, e, m)| match (e, m) {
                    (Some(e), _) => Some(expected(e)),
                    (_, Some(m)) => Some((2 * SMALL + side_index(m.from_client), m.ts, m.size)),
                    _ => None,
                })
                .collect();
            prop_assert_eq!(log.records().collect::<Vec<_>>(), want);
            prop_assert_eq!(log.analyse(), reference::analyse_all(&events, &small).into_iter().next());
        }

        /// Past its caps, the log holds what a plain model of its window holds: per budget, in
        /// arrival order, the oldest half dropped whenever the budget is full; and the analysis
        /// is the reference's over those.
        #[test]
        fn log_window_matches_a_model(
            (events, small) in events_strategy(300),
            repeat in 1usize..12,
        ) {
            // The same records over and over, later each time, to pass the caps.
            let span = 3_600_000_000_000i64;
            let mut log = HbLog::default();
            let (mut kept_e, mut kept_s): (Vec<HbEvent>, Vec<SmallMsg>) = (Vec::new(), Vec::new());
            for r in 0..repeat {
                let shift = span * r as i64;
                for (i, e) in events.iter().enumerate() {
                    let e = HbEvent { ts: Timestamp(e.ts.0 + shift), ..*e };
                    keep_windowed(&mut kept_e, MAX_LOG_EVENTS, e);
                    log.event(e.ts, e.kind, e.from_client, e.size);
                    // Interleave: a small message after every event, while there are some.
                    if let Some(m) = small.get(i) {
                        let m = SmallMsg { ts: Timestamp(m.ts.0 + shift), ..*m };
                        keep_windowed(&mut kept_s, MAX_LOG_SMALL, m);
                        log.small(m.ts, m.from_client, m.size);
                    }
                }
            }
            let got: Vec<_> = log.records().collect();
            let events_got: Vec<_> = got.iter().filter(|r| r.0 / 2 != SMALL).copied().collect();
            let small_got: Vec<_> = got.iter().filter(|r| r.0 / 2 == SMALL).copied().collect();
            prop_assert_eq!(events_got, kept_e.iter().map(expected).collect::<Vec<_>>());
            prop_assert_eq!(
                small_got,
                kept_s
                    .iter()
                    .map(|m| (2 * SMALL + side_index(m.from_client), m.ts, m.size))
                    .collect::<Vec<_>>()
            );
            prop_assert_eq!(
                log.analyse(),
                reference::analyse_all(&kept_e, &kept_s).into_iter().next()
            );
        }

        #[test]
        fn log_round_trips_any_times(
            raw in proptest::collection::vec((any::<i64>(), 0u8..7, any::<bool>(), any::<u32>()), 0..200),
        ) {
            let mut log = HbLog::default();
            let mut want = Vec::new();
            for &(t, k, client, size) in &raw {
                match KINDS.get(usize::from(k)) {
                    Some(&kind) => {
                        let e = HbEvent { ts: Timestamp(t), kind, from_client: client, size };
                        log.event(e.ts, kind, client, size);
                        want.push(expected(&e));
                    }
                    None => {
                        log.small(Timestamp(t), client, size);
                        want.push((2 * SMALL + side_index(client), Timestamp(t), size));
                    }
                }
            }
            prop_assert_eq!(&log.records().collect::<Vec<_>>(), &want);
            // Read in one loop (`Records::fold`, as the analysis reads it), the same.
            let mut folded = Vec::new();
            log.records().for_each(|r| folded.push(r));
            prop_assert_eq!(folded, want);
            prop_assert!(log.heap_bytes() <= log.bytes.len() + log.bytes.len() / 4 + GROW_MIN);
        }

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
