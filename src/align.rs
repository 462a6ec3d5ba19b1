//! Stage 5: the same connection at every vantage point, and the clocks lined up.
//!
//! Matching runs in tiers, each match carrying its method and a confidence:
//! - `tuple_isn`: the same 5-tuple and the same initial sequence numbers (no NAT in between);
//! - `nat_isn`: other addresses or ports, the same ISNs (a NAT or L4 balancer that keeps
//!   sequence numbers, as Linux conntrack does);
//! - `stream`: other ISNs, but the same bytes at the same stream offsets (a TCP proxy such as
//!   HAProxy `mode tcp`, or a firewall that randomises sequence numbers);
//! - `l7_proxy`: the same messages at other offsets (an HTTP/WebSocket proxy such as nginx,
//!   which rewrites the upgrade request and keeps the frames);
//! - `udp_payload`: the same UDP 5-tuple and identical payloads (SIP trunks, RTP).
//!
//! Two candidates that match equally well are reported as ambiguous, never guessed.
//!
//! Clock offsets come from packets seen at both points, NTP-style (RFC 5905 §8, the on-wire
//! protocol's offset and delay): with `d_ab` the smallest apparent one-way delay from A to B and
//! `d_ba` the one back, `offset = (d_ab - d_ba) / 2` and the true offset lies within
//! `± (d_ab + d_ba) / 2`. `offset_s` is the capture's clock minus the reference clock.

use std::net::IpAddr;

use serde::Serialize;

use crate::capture::Timestamp;
use crate::pipeline::CaptureFlows;
use crate::tcp::{Connection, Proto, Sample, SampleKind};

/// The alignment's maps and sets, keyed by connection indexes, ISNs, tuples and payload hashes:
/// foldhash rather than std's SipHash, which was ~3 % of a two-capture diagnosis's
/// instructions (issue 8). Seeded per process as std's are; nothing here is read in the maps'
/// order without sorting after.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// One capture, named after the point where it was taken.
pub struct Vantage {
    pub name: String,
    pub flows: CaptureFlows,
}

/// How two legs were matched.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum MatchMethod {
    TupleIsn,
    NatIsn,
    Stream,
    L7Proxy,
    UdpPayload,
    /// Seen at one vantage only.
    Unmatched,
    /// Several candidates matched equally well: left apart.
    Ambiguous,
}

#[derive(Clone, Copy, Debug, Serialize, schemars::JsonSchema)]
pub struct Match {
    pub method: MatchMethod,
    /// 0..1: how sure the weakest link of the group is.
    pub confidence: f64,
}

/// A connection's leg at one vantage.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Leg {
    // Shared by every leg of the vantage (a copy of the name each was an allocation per
    // connection).
    #[schemars(with = "String")]
    pub vantage: std::sync::Arc<str>,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
    pub proto: Proto,
    #[schemars(with = "String")]
    pub uid: crate::tcp::Uid,
    pub first_frame: u64,
    pub last_frame: u64,
    /// Index of the vantage and of the connection in its capture's list: `connections`, then
    /// `digests` (an index past the connections is a digest's).
    #[serde(skip)]
    pub at: (usize, usize),
}

/// A lined-up connection's id: "L" and at most 14 digits.
pub type LineId = crate::short_str::ShortStr<15>;

/// One connection, lined up across the captures that saw it.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct LinedUp {
    // L1, L2, ... in start order; inline (an allocation each as a `String`).
    #[schemars(with = "String")]
    pub id: LineId,
    #[schemars(with = "Vec<Leg>")]
    pub legs: LegList,
    #[serde(rename = "match")]
    pub matched: Match,
    /// Start in reference time.
    pub ts: Timestamp,
}

/// A lined-up connection's legs, one a vantage that saw it: a lone capture's one inline, several
/// in a list. Every connection of a one-capture diagnosis has one leg, and a list each was an
/// allocation and ~40 bytes more a connection (3.7 MB of the rules' peak on the 2 GB synth).
/// Reads as a slice; serde writes it as the list.
#[derive(Clone, Debug)]
pub enum LegList {
    One(Leg),
    Many(Vec<Leg>),
}

// Inline, a leg takes the room a list and its tag took beside it, no more.
const _: () = assert!(std::mem::size_of::<LegList>() <= std::mem::size_of::<Leg>() + 8);

impl From<Vec<Leg>> for LegList {
    fn from(legs: Vec<Leg>) -> Self {
        match <[Leg; 1]>::try_from(legs) {
            Ok([leg]) => LegList::One(leg),
            Err(legs) => LegList::Many(legs),
        }
    }
}

impl std::ops::Deref for LegList {
    type Target = [Leg];
    fn deref(&self) -> &[Leg] {
        match self {
            LegList::One(leg) => std::slice::from_ref(leg),
            LegList::Many(legs) => legs,
        }
    }
}

impl<'a> IntoIterator for &'a LegList {
    type Item = &'a Leg;
    type IntoIter = std::slice::Iter<'a, Leg>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl Serialize for LegList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(s)
    }
}

/// The lined-up connections, L1, L2, ... in start order on the reference clock: what
/// `Alignment::connections` and the JSON report's `connections` list.
///
/// Several captures: each made when the captures are lined up. One capture: each is its
/// connection alone, `unmatched`, and is made as it is read, from the capture's digest of it
/// (which this list shares) or its summary: a made list was 152 bytes a connection, 14 MB of
/// the rules' peak on the 2 GB synth and ~140 MB on the 20 GB one, for what the digests
/// already hold.
#[derive(Clone, Debug, Default)]
pub struct Lines(LinesOf);

#[derive(Clone, Debug)]
enum LinesOf {
    Made(Vec<LinedUp>),
    Lone(Lone),
}

impl Default for LinesOf {
    fn default() -> Self {
        LinesOf::Made(Vec::new())
    }
}

/// One capture's connections, lined up alone.
#[derive(Clone, Debug)]
struct Lone {
    /// The leg of each connection kept as a summary (`CaptureFlows::connections`, few in a
    /// one-capture diagnosis: those a digest cannot hold), and its start.
    whole: Vec<(Leg, Timestamp)>,
    /// The capture's digests, shared with it (`CaptureFlows::digests`).
    digests: crate::tcp::Digests,
    vantage: std::sync::Arc<str>,
    /// The capture's clock minus the reference clock (`Alignment::offset_ns`).
    offset_ns: i64,
    /// The connection of L1, L2, ...: an index into `whole`, then `digests` (as `Leg::at`).
    order: Vec<u32>,
}

impl Lines {
    pub fn len(&self) -> usize {
        match &self.0 {
            LinesOf::Made(v) => v.len(),
            LinesOf::Lone(l) => l.order.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every connection has one leg: one capture's, lined up alone.
    pub fn one_leg_each(&self) -> bool {
        matches!(self.0, LinesOf::Lone(_))
    }

    /// Whether every leg of the `k`th lined-up connection is kept whole
    /// (`Alignment::is_whole`), `None` past the end. One capture's is read from its digest's
    /// flag, its leg not made (a rule's pass over the whole connections alone, `Ctx::paths`
    /// otherwise, made every digest's leg to skip it).
    pub fn is_whole_at(&self, al: &Alignment, k: usize) -> Option<bool> {
        match &self.0 {
            LinesOf::Made(v) => Some(v.get(k)?.legs.iter().all(|leg| al.is_whole(leg))),
            LinesOf::Lone(l) => {
                let i = *l.order.get(k)? as usize;
                Some(match i.checked_sub(l.whole.len()) {
                    None => true,
                    Some(d) => l.digests.whole(&l.digests.get(d)).is_some(),
                })
            }
        }
    }

    /// The `k`th lined-up connection (`L{k + 1}`).
    pub fn get(&self, k: usize) -> Option<std::borrow::Cow<'_, LinedUp>> {
        use std::borrow::Cow;
        match &self.0 {
            LinesOf::Made(v) => v.get(k).map(Cow::Borrowed),
            LinesOf::Lone(l) => {
                let i = *l.order.get(k)? as usize;
                let (leg, ts) = match l.whole.get(i) {
                    Some((leg, ts)) => (leg.clone(), *ts),
                    None => {
                        let d = l.digests.get(i - l.whole.len());
                        let ts = d.ts();
                        (Kept::Digest(d).leg(l.vantage.clone(), (0, i)), ts)
                    }
                };
                Some(Cow::Owned(LinedUp {
                    id: line_id(k),
                    legs: LegList::One(leg),
                    matched: Match {
                        method: MatchMethod::Unmatched,
                        confidence: 0.0,
                    },
                    ts: Timestamp(ts.0 - l.offset_ns),
                }))
            }
        }
    }

    /// The lined-up connection named `id`: `L{k + 1}` is the `k`th (a map from id to index
    /// cost ~40 bytes a connection).
    pub fn by_id(&self, id: &str) -> Option<std::borrow::Cow<'_, LinedUp>> {
        self.get(line_index(id)?).filter(|l| l.id == id)
    }

    /// Every lined-up connection, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = std::borrow::Cow<'_, LinedUp>> + '_ {
        (0..self.len()).map(|k| self.get(k).expect("within the list"))
    }
}

/// Where a lined-up connection's id puts it: `k` for `L{k + 1}` (`line_id`); the caller checks
/// the id there is `id` (`L01` is not `L1`).
pub fn line_index(id: &str) -> Option<usize> {
    id.strip_prefix('L')?.parse::<usize>().ok()?.checked_sub(1)
}

/// `L{k + 1}`, without a `String` (the rules make a one-capture diagnosis's lined-up
/// connections as they read them, several times each).
fn line_id(k: usize) -> LineId {
    let mut digits = [0u8; 21];
    let mut at = digits.len();
    let mut n = k + 1;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    at -= 1;
    digits[at] = b'L';
    let id = &digits[at..];
    // Past 14 digits, cut as `new` cuts.
    LineId::from_ascii(id)
        .unwrap_or_else(|| LineId::new(std::str::from_utf8(id).unwrap_or_default()))
}

impl Serialize for Lines {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct ClockOffset {
    pub vantage: String,
    pub reference: String,
    pub offset_s: f64,
    pub bound_s: f64,
    pub method: String,
    pub samples: usize,
}

/// Segments lost between two vantage points.
#[derive(Clone, Debug, Serialize)]
pub struct HopLoss {
    /// The upstream and downstream vantage for this direction.
    pub from: String,
    pub to: String,
    /// `client_to_server` or `server_to_client` (originator to responder, or back).
    pub direction: &'static str,
    pub segments: u64,
    /// Lined-up connections where it happened.
    pub connections: Vec<String>,
}

/// The lined-up view of several captures.
pub struct Alignment {
    pub vantages: Vec<Vantage>,
    pub reference: usize,
    pub clock_offsets: Vec<ClockOffset>,
    /// Shared with the diagnosis that lists them (`Diagnosis::connections`), not copied.
    pub connections: std::sync::Arc<Lines>,
    pub losses: Vec<HopLoss>,
    /// Pairs left apart because two candidates matched equally well.
    pub ambiguous: usize,
}

impl Alignment {
    /// Clock offset of a vantage (capture clock minus reference clock), 0 where unknown.
    pub fn offset_ns(&self, vantage: usize) -> i64 {
        let name = &self.vantages[vantage].name;
        self.clock_offsets
            .iter()
            .find(|o| &o.vantage == name)
            .map_or(0, |o| (o.offset_s * 1e9).round() as i64)
    }

    /// A capture's timestamp on the reference clock.
    pub fn to_reference(&self, vantage: usize, ts: Timestamp) -> Timestamp {
        Timestamp(ts.0 - self.offset_ns(vantage))
    }

    /// A leg's connection, kept whole: in memory, or read from where a one-capture diagnosis
    /// keeps the connections its rules may end (`tcp::kept`). Panics on a digest's leg: a
    /// one-capture diagnosis keeps whole the connections its rules read whole
    /// (`TrackerOptions::digest`), and reads the others through `kept`.
    pub fn connection(&self, leg: &Leg) -> ConnRef<'_> {
        match self.kept(leg) {
            Kept::Whole(c) => ConnRef::Held(c),
            Kept::Digest(d) => {
                let digests = &self.vantages[leg.at.0].flows.digests;
                let Some((file, at)) = digests.whole(&d) else {
                    panic!("{}: a digest, not a whole connection", leg.uid)
                };
                // Read whole once already, when tracking ended (`KeptStore::seal`): only the
                // disk failing under us between the two reads ends here.
                match file.read(&at) {
                    Ok(c) => ConnRef::Read(c),
                    Err(e) => panic!(
                        "{}: the temporary file of connections kept whole could not be read again: {e}",
                        leg.uid
                    ),
                }
            }
        }
    }

    /// Whether a leg's connection is kept whole (`connection` reads it), in memory or on disk.
    pub fn is_whole(&self, leg: &Leg) -> bool {
        match self.kept(leg) {
            Kept::Whole(_) => true,
            Kept::Digest(d) => self.vantages[leg.at.0].flows.digests.whole(&d).is_some(),
        }
    }

    /// A leg's connection, whole or as its digest.
    pub fn kept(&self, leg: &Leg) -> Kept<'_> {
        self.vantages[leg.at.0].flows.kept(leg.at.1)
    }

    /// When a leg's originator's first packet was seen (its connection's start if none was),
    /// on its capture's clock.
    pub fn first_ts(&self, leg: &Leg) -> Timestamp {
        let flows = &self.vantages[leg.at.0].flows;
        match flows.views.get(leg.at.1) {
            Some(v) => v.first_ts,
            None => {
                let c = self.connection(leg);
                c.orig.first_ts.unwrap_or(c.ts)
            }
        }
    }

    /// When a leg's connection started, on its capture's clock.
    pub fn leg_ts(&self, leg: &Leg) -> Timestamp {
        match self.kept(leg) {
            Kept::Whole(c) => c.ts,
            Kept::Digest(d) => d.ts(),
        }
    }

    /// A leg's Zeek conn_state (TCP only).
    pub fn conn_state(&self, leg: &Leg) -> Option<&'static str> {
        match self.kept(leg) {
            Kept::Whole(c) => c.conn_state,
            Kept::Digest(d) => d.conn_state(),
        }
    }
}

/// A connection kept whole, as `Alignment::connection` gives it: the capture's own, or one
/// read back for the caller from where a one-capture diagnosis keeps it (`tcp::kept`).
pub enum ConnRef<'a> {
    Held(&'a Connection),
    Read(std::sync::Arc<Connection>),
}

impl std::ops::Deref for ConnRef<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        match self {
            ConnRef::Held(c) => c,
            ConnRef::Read(c) => c,
        }
    }
}

/// A finished connection as its capture kept it (`CaptureFlows`).
#[derive(Clone, Debug)]
pub enum Kept<'a> {
    Whole(&'a Connection),
    Digest(crate::tcp::DigestRef<'a>),
}

/// Connections of the captures lined up together past which a diagnosis keeps them in a file
/// (`CaptureFlows::keep_in_file`): ~60 MB of them whole (~1.5 KB each on issue 8's NAT synth).
/// Below it they stay in memory, where the rules read them for nothing: in the file, the 100 MB
/// NAT pair (26 500 connections) took 12 % more instructions (each written, checked, and read
/// whole again by the rules) for no less memory, its peak being the end of reading. The 500 MB
/// pair (55 600) peaked at 137 MiB lining them up, 114 with them in the file (benches/RESULTS.md,
/// session 29). Nothing a report says depends on it.
pub const CONNECTIONS_IN_MEMORY: usize = 40_000;

impl CaptureFlows {
    /// The `i`th connection: `connections`, then `digests`.
    pub fn kept(&self, i: usize) -> Kept<'_> {
        match self.connections.get(i) {
            Some(c) => Kept::Whole(c),
            None => Kept::Digest(self.digests.get(i - self.connections.len())),
        }
    }

    /// Every connection written to a temporary file (`tcp::kept`), and in memory its digest
    /// (`digest`: the one-capture diagnosis's, `diagnose::rules::kept_as`), which says where
    /// it is, and what lining up reads of it (`views`, which take its packet samples): a rule
    /// reads a connection whole from the file when it asks for it (`Alignment::connection`),
    /// as a one-capture diagnosis reads those a rule may end. For a two-capture diagnosis,
    /// which kept every connection whole in memory from the end of tracking to its report
    /// (~1.5 KB each: the 500 MB NAT pair's alignment and rules peaked there). All or nothing:
    /// unless every connection is written, read back whole when the file is sealed, and
    /// digested, they stay as they were (false). Not for the HTML report, which draws the
    /// samples, nor for connections the encoding refuses (details only `flows` keeps).
    pub fn keep_in_file(&mut self, digest: crate::tcp::KeptAs) -> bool {
        let Some(capture) = self.connections.first().map(|c| c.capture.clone()) else {
            return false;
        };
        if !self.digests.is_empty() || !self.views.is_empty() {
            return false;
        }
        let mut store = crate::tcp::kept::KeptStore::new();
        let mut digests = crate::tcp::Digests::default();
        let mut views = Vec::with_capacity(self.connections.len());
        // The samples each connection is written without (the views have copies), given back
        // if they stay.
        let mut taken = Vec::new();
        let mut every = true;
        for c in &mut self.connections {
            // Copies, not the connection's own: made while every connection is still here,
            // they are not scattered among the pages the connections leave, which then go
            // back to the system whole (`pipeline::release_freed`; moved, the samples kept
            // ~45 MB of those pages resident on the 500 MB NAT pair).
            views.push(View::of(c));
            // A digest reads no sample, only their count, which stays.
            let (mut d, _) = digest(c);
            taken.push([c.orig.samples.take_kept(), c.resp.samples.take_kept()]);
            d.whole = store.push(c);
            if d.whole.is_none() || !digests.push(&d) {
                every = false;
                break;
            }
        }
        if every {
            let (file, error) = store.seal(&capture);
            every = error.is_none();
            digests.attach(file);
        }
        if !every {
            for (c, [o, r]) in self.connections.iter_mut().zip(taken) {
                c.orig.samples.give_back(o);
                c.resp.samples.give_back(r);
            }
            return false;
        }
        self.connections = Vec::new();
        self.digests = digests;
        self.views = views;
        true
    }
}

impl Kept<'_> {
    /// Its leg at vantage `vantage`, where it is connection `at`.
    fn leg(self, vantage: std::sync::Arc<str>, at: (usize, usize)) -> Leg {
        let (src, sport, dst, dport, proto, uid, first_frame, last_frame) = match self {
            Kept::Whole(c) => (
                c.orig_h,
                c.orig_p,
                c.resp_h,
                c.resp_p,
                c.proto,
                c.uid,
                c.first_frame,
                c.last_frame,
            ),
            Kept::Digest(d) => {
                let ((orig_h, orig_p), (resp_h, resp_p)) = (d.orig(), d.resp());
                (
                    orig_h,
                    orig_p,
                    resp_h,
                    resp_p,
                    d.proto(),
                    d.uid(),
                    d.first_frame(),
                    d.last_frame(),
                )
            }
        };
        Leg {
            vantage,
            src,
            sport,
            dst,
            dport,
            proto,
            uid,
            first_frame,
            last_frame,
            at,
        }
    }
}

/// Options for `align`.
#[derive(Clone, Debug, Default)]
pub struct AlignOptions {
    /// Vantage index of the reference clock.
    pub reference: usize,
    /// Manual offsets (vantage name, seconds): they win, and are reported as given.
    pub offsets: Vec<(String, f64)>,
    /// Threads that compare candidate pairs (0 and 1: the calling thread). The alignment does
    /// not depend on it.
    pub threads: usize,
}

/// Candidate match between two connections.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    method: MatchMethod,
    score: f64,
}

fn tier_rank(m: MatchMethod) -> u8 {
    match m {
        MatchMethod::TupleIsn => 5,
        MatchMethod::NatIsn => 4,
        MatchMethod::UdpPayload => 4,
        MatchMethod::Stream => 3,
        MatchMethod::L7Proxy => 2,
        MatchMethod::Unmatched | MatchMethod::Ambiguous => 0,
    }
}

/// What the comparison reads of a data-carrying sample: its payload's (hash, len) and where
/// it sits in the stream. 16 bytes, where a `Sample` is 40.
#[derive(Clone, Copy)]
struct Item {
    hash: u64,
    len: u32,
    rel_seq: u32,
}

/// The distinct payloads of each direction of one capture's connections: the first
/// data-carrying sample of each (hash, len), sorted by (hash, len) so that two connections'
/// meet in one merge pass, all in one allocation. Built once a connection, not once a
/// comparison: a heartbeat's payload is shared by thousands of connections, so each is
/// compared with up to 64 others (`candidates`), and hashing every sample into a map for each
/// comparison was most of a two-capture alignment.
#[derive(Default)]
struct Contents {
    items: Vec<Item>,
    /// Per connection: where its originator's items start, how many, then the responder's.
    spans: Vec<(u32, u16, u16)>,
}

impl Contents {
    /// The contents of `conns`, and the payloads of theirs that `Contents` leaves out: a
    /// datagram whose length field says 0 but that carried bytes has a hash and no length, and
    /// `PayloadIndex` lists it (hash, connection).
    fn of(views: &[View]) -> (Self, Vec<(u64, u32)>) {
        let mut k = Contents::default();
        let mut unsized_payloads = Vec::new();
        for (n, v) in views.iter().enumerate() {
            if let Some(next) = views.get(n + VIEWS_AHEAD) {
                next.prefetch();
            }
            k.push(v, |s| {
                if s.hash != 0 && s.len == 0 {
                    unsized_payloads.push((s.hash, n as u32));
                }
            });
        }
        // Grown by doubling as it was listed: up to half of it room to grow, held through
        // the comparison.
        k.items.shrink_to_fit();
        k.spans.shrink_to_fit();
        (k, unsized_payloads)
    }

    /// `c`'s items; `each` sees every sample of `c` on the way (the samples are packed: one
    /// pass decodes them for both).
    fn push(&mut self, v: &View, mut each: impl FnMut(&crate::tcp::Sample)) {
        let start = self.items.len();
        let o = self.push_side(&v.samples[0], &mut each);
        let r = self.push_side(&v.samples[1], &mut each);
        self.spans.push((start as u32, o, r));
    }

    fn push_side(
        &mut self,
        samples: &crate::tcp::Samples,
        each: &mut impl FnMut(&crate::tcp::Sample),
    ) -> u16 {
        let start = self.items.len();
        // `for_each`, not `extend`: the samples are decoded in one loop (`Unpack::fold`).
        samples.iter().for_each(|s| {
            each(&s);
            if s.hash != 0 && s.len > 0 {
                self.items.push(Item {
                    hash: s.hash,
                    len: s.len,
                    rel_seq: s.rel_seq,
                });
            }
        });
        let side = &mut self.items[start..];
        // Stable: of equal keys the first in capture order stays first, and dedup keeps it.
        side.sort_by_key(|s| (s.hash, s.len));
        let mut n = 0;
        for i in 0..side.len() {
            if n == 0 || (side[n - 1].hash, side[n - 1].len) != (side[i].hash, side[i].len) {
                side[n] = side[i];
                n += 1;
            }
        }
        self.items.truncate(start + n);
        n as u16
    }

    /// Connection `k`'s (originator, responder) items.
    fn get(&self, k: usize) -> (&[Item], &[Item]) {
        let (start, o, r) = self.spans[k];
        let (start, o, r) = (start as usize, o as usize, r as usize);
        (
            &self.items[start..start + o],
            &self.items[start + o..start + o + r],
        )
    }
}

/// The items of `a` and `b` with the same payload, in (hash, len) order.
fn shared_items(a: &[Item], b: &[Item], each: impl FnMut(&Item, &Item)) {
    meet(a, b, |s| (s.hash, s.len), each);
}

/// The pairs of `a` and `b` (each sorted by `key`, keys distinct) with the same key, in key
/// order: one merge pass.
#[inline]
fn meet<T, K: Ord>(a: &[T], b: &[T], key: impl Fn(&T) -> K, mut each: impl FnMut(&T, &T)) {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match key(&a[i]).cmp(&key(&b[j])) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                each(&a[i], &b[j]);
                i += 1;
                j += 1;
            }
        }
    }
}

/// Every key of `a` and `b` (each sorted by `key`, keys distinct) once, in key order: one
/// merge pass.
#[inline]
fn union_keys<T, K: Ord + Copy>(a: &[T], b: &[T], key: impl Fn(&T) -> K, mut each: impl FnMut(K)) {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let (x, y) = (key(&a[i]), key(&b[j]));
        match x.cmp(&y) {
            std::cmp::Ordering::Less => {
                each(x);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                each(y);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                each(x);
                i += 1;
                j += 1;
            }
        }
    }
    a[i..].iter().chain(&b[j..]).for_each(|t| each(key(t)));
}

fn overlap(a: &[Item], b: &[Item]) -> usize {
    let mut n = 0;
    shared_items(a, b, |_, _| n += 1);
    n
}

/// What lining up reads of a connection besides its samples: its ends, its protocol and its
/// handshake. Every candidate pair's `ceiling`, and every comparison, read these of both.
#[derive(Clone, Copy, Debug)]
struct Ends {
    orig_h: IpAddr,
    orig_p: u16,
    resp_h: IpAddr,
    resp_p: u16,
    proto: Proto,
    /// The originator's SYN was seen.
    saw_syn: bool,
    orig_isn: Option<u32>,
    resp_isn: Option<u32>,
}

impl Ends {
    fn of(c: &Connection) -> Self {
        Ends {
            orig_h: c.orig_h,
            orig_p: c.orig_p,
            resp_h: c.resp_h,
            resp_p: c.resp_p,
            proto: c.proto,
            saw_syn: c.orig.saw_syn,
            orig_isn: c.orig.isn,
            resp_isn: c.resp.isn,
        }
    }
}

/// What lining captures up reads of one connection: its ends and handshake, its two sides'
/// packet samples and retransmissions, and when its originator's first packet was seen. A
/// two-capture diagnosis keeps these in memory and the connections in a file
/// (`CaptureFlows::keep_in_file`): lined up whole, every connection was ~1.5 KB of the 500 MB
/// NAT pair's peak (benches/RESULTS.md, session 29). Otherwise `align` makes them from the
/// connections.
#[derive(Clone, Debug)]
pub struct View {
    ends: Ends,
    /// The originator's first packet, or the connection's start if none was seen: where a
    /// path's legs are put in order (`diagnose::Ctx::new`).
    first_ts: Timestamp,
    /// The originator's, then the responder's.
    samples: [crate::tcp::Samples; 2],
    retransmitted: [crate::boxed_list::BoxedList<Sample>; 2],
}

impl View {
    fn of(c: &Connection) -> Self {
        View {
            samples: [c.orig.samples.clone(), c.resp.samples.clone()],
            ..View::of_ends(c)
        }
    }

    /// All but the samples.
    fn of_ends(c: &Connection) -> Self {
        View {
            ends: Ends::of(c),
            first_ts: c.orig.first_ts.unwrap_or(c.ts),
            samples: Default::default(),
            retransmitted: [c.orig.retransmitted.clone(), c.resp.retransmitted.clone()],
        }
    }

    /// `of`, the samples taken from `c` (their counts stay; `give_back` returns them): what
    /// lining up reads, where `c` stays whole in memory (a copy was 3 MiB more of the 100 MB
    /// NAT pair's peak).
    fn take(c: &mut Connection) -> Self {
        View {
            samples: [c.orig.samples.take_kept(), c.resp.samples.take_kept()],
            ..View::of_ends(c)
        }
    }

    /// What `take` took, given back to `c`.
    fn give_back(self, c: &mut Connection) {
        let [o, r] = self.samples;
        c.orig.samples.give_back(o);
        c.resp.samples.give_back(r);
    }

    /// The samples of the originator's side (`orig`) or the responder's.
    fn side(&self, orig: bool) -> (&crate::tcp::Samples, &[Sample]) {
        let i = usize::from(!orig);
        (&self.samples[i], &self.retransmitted[i])
    }

    /// Fetches both sides' sample boxes into the cache, for a loop that reads this view's
    /// samples `VIEWS_AHEAD` views later. Each box is an allocation of its own, in no order
    /// the loops read them in: its first read was a miss on nearly every view (16 % of lining
    /// the 100 MB NAT pair up on one instruction of `Samples::iter`, `perf`).
    fn prefetch(&self) {
        self.samples.iter().for_each(|s| s.prefetch_box());
    }
}

/// How many views ahead the loops over them fetch the samples' boxes (`View::prefetch`).
const VIEWS_AHEAD: usize = 4;

fn same_tuple(a: &Ends, b: &Ends) -> bool {
    (a.orig_h, a.orig_p, a.resp_h, a.resp_p) == (b.orig_h, b.orig_p, b.resp_h, b.resp_p)
        || (a.orig_h, a.orig_p, a.resp_h, a.resp_p) == (b.resp_h, b.resp_p, b.orig_h, b.orig_p)
}

/// Two TCP connections with the same ISNs in both directions (where both were seen): the
/// strongest match there is, found without reading a sample.
fn isn_candidate(a: &Ends, b: &Ends) -> Option<Candidate> {
    let isn_match = a.proto == Proto::Tcp
        && b.proto == Proto::Tcp
        && a.saw_syn
        && b.saw_syn
        && a.orig_isn == b.orig_isn
        && (a.resp_isn.is_none() || b.resp_isn.is_none() || a.resp_isn == b.resp_isn);
    isn_match.then(|| Candidate {
        method: if same_tuple(a, b) {
            MatchMethod::TupleIsn
        } else {
            MatchMethod::NatIsn
        },
        score: 1.0,
    })
}

/// A candidate's rank in `Best::keep`: its tier, then its score to a thousandth (a score is at
/// most 1, so the thousandths never reach the next tier's).
fn rank(c: &Candidate) -> u32 {
    u32::from(tier_rank(c.method)) * 10_000 + (c.score * 1000.0).round() as u32
}

/// The highest rank `compare` could give `a` and `b`, read from their handshakes alone:
/// an ISN match's own; else a tuple match (both seen from the middle, the same tuple), a NAT
/// match (both from the middle, the same raw ISNs) or a stream match (both from their SYN) at
/// 0.9 at most; else a proxy's legs, 0.9 at most. `u32::MAX` for UDP, matched by payloads.
fn ceiling(a: &Ends, b: &Ends) -> u32 {
    if a.proto == Proto::Udp || b.proto == Proto::Udp {
        return u32::MAX;
    }
    if let Some(c) = isn_candidate(a, b) {
        return rank(&c);
    }
    let (from_syn, mid_stream) = (a.saw_syn && b.saw_syn, !a.saw_syn && !b.saw_syn);
    let same_raw = a.orig_isn.is_some()
        && a.orig_isn == b.orig_isn
        && a.resp_isn.is_some()
        && a.resp_isn == b.resp_isn;
    let method = if mid_stream && same_tuple(a, b) {
        MatchMethod::TupleIsn
    } else if mid_stream && same_raw {
        MatchMethod::NatIsn
    } else if from_syn {
        MatchMethod::Stream
    } else {
        MatchMethod::L7Proxy
    };
    rank(&Candidate { method, score: 0.9 })
}

/// How well two connections at two vantages look like the same one (`ka`, `kb`: their
/// originator's and responder's `Contents`).
fn compare(
    a: &Ends,
    ka: (&[Item], &[Item]),
    b: &Ends,
    kb: (&[Item], &[Item]),
) -> Option<Candidate> {
    if a.proto != b.proto {
        return None;
    }
    if a.proto == Proto::Udp {
        if !same_tuple(a, b) {
            return None;
        }
        let ((ca, ra), (cb, rb)) = (ka, kb);
        let flip = a.orig_h != b.orig_h || a.orig_p != b.orig_p;
        let shared = if flip {
            overlap(ca, rb) + overlap(ra, cb)
        } else {
            overlap(ca, cb) + overlap(ra, rb)
        };
        let total = (ca.len() + ra.len()).min(cb.len() + rb.len()).max(1);
        return (shared > 0).then(|| Candidate {
            method: MatchMethod::UdpPayload,
            score: shared as f64 / total as f64,
        });
    }
    if let Some(c) = isn_candidate(a, b) {
        return Some(c);
    }
    if same_tuple(a, b) && !a.saw_syn && !b.saw_syn {
        // Both mid-stream: the tuple and the data must agree.
        let shared = overlap(ka.0, kb.0) + overlap(ka.1, kb.1);
        if shared > 0 {
            return Some(Candidate {
                method: MatchMethod::TupleIsn,
                score: 0.9,
            });
        }
    }
    // Content: the same payloads in the same direction.
    let ((ao, ar), (bo, br)) = (ka, kb);
    let (mut shared, mut long, mut same_offsets) = (0, false, true);
    let mut tally = |s: &Item, t: &Item| {
        shared += 1;
        long |= s.len >= 100;
        // Same stream offsets: the byte stream is the same from its start (a TCP proxy or a
        // sequence-randomising NAT). Other offsets: the stream was rewritten (an L7 proxy).
        same_offsets &= s.rel_seq == t.rel_seq;
    };
    shared_items(ao, bo, &mut tally);
    shared_items(ar, br, &mut tally);
    if shared < 2 && !(shared == 1 && long) {
        return None;
    }
    let total = (ao.len() + ar.len()).min(bo.len() + br.len()).max(1);
    let score = (shared as f64 / total as f64).min(1.0);
    // Both seen from the middle of the stream, at the same offsets from the same raw sequence
    // numbers in both directions: one TCP connection whose sequence numbers a NAT kept, not two
    // legs of a proxy (a proxy's legs are two connections, with their own ISNs). Called a proxy,
    // a NAT'd connection captured after it opened had its server's FIN read as the proxy's.
    let same_raw = same_offsets
        && !a.saw_syn
        && !b.saw_syn
        && a.orig_isn.is_some()
        && a.orig_isn == b.orig_isn
        && a.resp_isn.is_some()
        && a.resp_isn == b.resp_isn;
    let method = if same_raw {
        if same_tuple(a, b) {
            MatchMethod::TupleIsn
        } else {
            MatchMethod::NatIsn
        }
    } else if same_offsets && a.saw_syn && b.saw_syn {
        MatchMethod::Stream
    } else {
        MatchMethod::L7Proxy
    };
    Some(Candidate {
        method,
        score: score * 0.9,
    })
}

/// Union-find over (vantage, connection) nodes.
struct Groups {
    parent: Vec<usize>,
}

impl Groups {
    fn find(&mut self, x: usize) -> usize {
        let mut r = x;
        while self.parent[r] != r {
            r = self.parent[r];
        }
        let mut y = x;
        while self.parent[y] != r {
            let n = self.parent[y];
            self.parent[y] = r;
            y = n;
        }
        r
    }
    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.parent[rb] = ra;
        }
    }
}

/// Lines up the connections of several captures and estimates their clock offsets.
pub fn align(vantages: Vec<Vantage>, opts: &AlignOptions) -> Alignment {
    align_as(vantages, opts, true)
}

/// `align`, with one capture's connections made when lined up, as several captures' are:
/// what the one-capture form of `Lines` (made as read) is tested against.
#[doc(hidden)]
pub fn align_made(vantages: Vec<Vantage>, opts: &AlignOptions) -> Alignment {
    align_as(vantages, opts, false)
}

fn align_as(mut vantages: Vec<Vantage>, opts: &AlignOptions, as_read: bool) -> Alignment {
    let n = vantages.len();
    // What the comparisons read of each connection, by its index (one capture compares
    // nothing); those a capture kept (`CaptureFlows::keep_in_file`) go back to it after, for
    // `Alignment::first_ts`.
    let kept_views: Vec<bool> = vantages.iter().map(|v| !v.flows.views.is_empty()).collect();
    let views: Vec<Vec<View>> = vantages
        .iter_mut()
        .map(|v| match (n > 1, v.flows.views.is_empty()) {
            (false, _) => Vec::new(),
            (true, false) => std::mem::take(&mut v.flows.views),
            (true, true) => v
                .flows
                .connections
                .iter_mut()
                .map(|c| View::take(c))
                .collect(),
        })
        .collect();
    // A view for every connection lined up across captures: several captures keep digests
    // only with views (`CaptureFlows::keep_in_file`; one capture's are compared with nothing).
    debug_assert!(vantages
        .iter()
        .zip(&views)
        .all(|(v, w)| n < 2 || w.len() == v.flows.connections.len() + v.flows.digests.len()));
    let reference = opts.reference.min(n.saturating_sub(1));
    // Node numbering: offset per vantage.
    let mut base = Vec::with_capacity(n);
    let mut total = 0;
    for v in &vantages {
        base.push(total);
        total += v.flows.connections.len() + v.flows.digests.len();
    }
    let mut groups = Groups {
        parent: (0..total).collect(),
    };
    // Links kept: (node a, node b, candidate).
    let mut links: Vec<(usize, usize, Candidate)> = Vec::new();
    let mut ambiguous_nodes = vec![false; total];
    let mut ambiguous = 0;
    for i in 0..n {
        for j in (i + 1)..n {
            let (ci, cj) = (&views[i], &views[j]);
            // Best candidate of each side; a link needs mutual best, and no tie.
            let Found { best_i, best_j, .. } =
                best_candidates(ci, cj, opts.threads, true, MAX_DEFERRED);
            for (a, bests) in best_i.iter().enumerate() {
                if bests.len() > 1 {
                    ambiguous += 1;
                    ambiguous_nodes[base[i] + a] = true;
                    for (b, _) in bests.iter() {
                        ambiguous_nodes[base[j] + b] = true;
                    }
                    continue;
                }
                let Some((b, c)) = bests.iter().next() else {
                    continue;
                };
                let back = &best_j[b];
                if back.len() > 1 {
                    ambiguous_nodes[base[j] + b] = true;
                    for (a2, _) in back.iter() {
                        ambiguous_nodes[base[i] + a2] = true;
                    }
                    continue;
                }
                if back.iter().next().is_some_and(|(a2, _)| a2 == a) {
                    links.push((base[i] + a, base[j] + b, c));
                }
            }
        }
    }
    for &(a, b, _) in &links {
        groups.union(a, b);
    }

    // Collect groups.
    let node_at = |node: usize| -> (usize, usize) {
        let v = base.partition_point(|&b| b <= node) - 1;
        (v, node - base[v])
    };
    // Nodes by group, each group's in order: one sorted list (a map with a list per group was
    // ~100 bytes a connection, for groups that are mostly of one).
    let mut by_root: Vec<(usize, usize)> = (0..total).map(|n| (groups.find(n), n)).collect();
    by_root.sort_unstable();
    let grouped: Vec<usize> = by_root.iter().map(|&(_, n)| n).collect();
    let raw_groups = by_root.chunk_by(|a, b| a.0 == b.0).scan(0, |at, g| {
        let span = *at..*at + g.len();
        *at = span.end;
        Some(&grouped[span])
    });

    // Clock offsets from the links.
    let mut pair_deltas: HashMap<(usize, usize), PairDeltas> = HashMap::default();
    let mut scratch = Default::default();
    for (n, &(a, b, c)) in links.iter().enumerate() {
        if let Some(&(a, b, _)) = links.get(n + VIEWS_AHEAD) {
            let view_at = |node| {
                let (v, i) = node_at(node);
                &views[v][i]
            };
            view_at(a).prefetch();
            view_at(b).prefetch();
        }
        let (va, ia) = node_at(a);
        let (vb, ib) = node_at(b);
        let d = pair_deltas.entry((va, vb)).or_default();
        d.add(&views[va][ia], &views[vb][ib], c.method, &mut scratch);
    }
    let clock_offsets = solve_offsets(&vantages, reference, &pair_deltas, &opts.offsets);

    let mut al = Alignment {
        vantages,
        reference,
        clock_offsets,
        connections: Default::default(),
        losses: Vec::new(),
        ambiguous,
    };

    if let (true, [v]) = (as_read, &al.vantages[..]) {
        al.connections = std::sync::Arc::new(Lines(LinesOf::Lone(lone(v, al.offset_ns(0)))));
        // No hop losses: each connection is one leg (`localise_losses` needs two), and making
        // every lined-up connection to find that out was ~1 % of a diagnosis's rules.
        return al;
    }

    // Lined-up connections, in reference time.
    let names: Vec<std::sync::Arc<str>> = al
        .vantages
        .iter()
        .map(|v| std::sync::Arc::from(v.name.as_str()))
        .collect();
    let link_of: HashMap<(usize, usize), Candidate> =
        links.iter().map(|&(a, b, c)| ((a, b), c)).collect();
    // Sized up front: grown by doubling, the list was up to twice its size.
    let mut lined: Vec<LinedUp> = Vec::with_capacity(by_root.chunk_by(|a, b| a.0 == b.0).count());
    lined.extend(raw_groups.map(|g| {
        let legs: Vec<Leg> = g
            .iter()
            .map(|&node| {
                let (v, i) = node_at(node);
                al.vantages[v].flows.kept(i).leg(names[v].clone(), (v, i))
            })
            .collect();
        let mut weakest: Option<Candidate> = None;
        for (x, &a) in g.iter().enumerate() {
            for &b in &g[x + 1..] {
                if let Some(c) = link_of.get(&(a, b)).or_else(|| link_of.get(&(b, a))) {
                    if weakest.is_none_or(|w| {
                        (tier_rank(c.method), c.score) < (tier_rank(w.method), w.score)
                    }) {
                        weakest = Some(*c);
                    }
                }
            }
        }
        let matched = match weakest {
            Some(c) => Match {
                method: c.method,
                confidence: (c.score * 100.0).round() / 100.0,
            },
            None if g.iter().any(|&n| ambiguous_nodes[n]) => Match {
                method: MatchMethod::Ambiguous,
                confidence: 0.0,
            },
            None => Match {
                method: MatchMethod::Unmatched,
                confidence: 0.0,
            },
        };
        let ts = legs
            .iter()
            .map(|l| al.to_reference(l.at.0, al.leg_ts(l)))
            .min()
            .unwrap_or_default();
        LinedUp {
            id: LineId::new(""),
            legs: legs.into(),
            matched,
            ts,
        }
    }));
    // Ties by the first leg's place in its capture's start order: its index, where a capture's
    // list is sorted by (start, first frame) as the tracker leaves it; a digest's index comes
    // after every whole connection's, so the place is (vantage, start, first frame).
    let place = |l: &LinedUp| {
        let leg = &l.legs[0];
        (l.ts, leg.at.0, al.leg_ts(leg), leg.first_frame, leg.at.1)
    };
    lined.sort_by_key(place);
    for (k, l) in lined.iter_mut().enumerate() {
        l.id = line_id(k);
    }
    al.connections = std::sync::Arc::new(Lines(LinesOf::Made(lined)));
    al.losses = localise_losses(&al, &views);
    // What is read of a view from here on is its first packet's time (the samples were ~17
    // bytes each).
    for ((v, mut views), kept) in al.vantages.iter_mut().zip(views).zip(kept_views) {
        if kept {
            for view in &mut views {
                view.samples = Default::default();
                view.retransmitted = Default::default();
            }
            v.flows.views = views;
        } else {
            for (c, view) in v.flows.connections.iter_mut().zip(views) {
                view.give_back(c);
            }
        }
    }
    al
}

/// One capture's connections lined up alone (`Lines`), in the order `align` gives several
/// captures' (start, then first frame, then index): both of the capture's lists are in start
/// order already (`CaptureFlows`), so the stable sort below merges two runs.
fn lone(v: &Vantage, offset_ns: i64) -> Lone {
    let vantage: std::sync::Arc<str> = std::sync::Arc::from(v.name.as_str());
    let flows = &v.flows;
    let whole: Vec<(Leg, Timestamp)> = flows
        .connections
        .iter()
        .enumerate()
        .map(|(i, c)| (Kept::Whole(c).leg(vantage.clone(), (0, i)), c.ts))
        .collect();
    let total = whole.len() + flows.digests.len();
    let order_of = |i: u32| -> (Timestamp, u64) {
        let i = i as usize;
        match whole.get(i) {
            Some((leg, ts)) => (*ts, leg.first_frame),
            None => flows.digests.get(i - whole.len()).start_order(),
        }
    };
    // 4 bytes a connection: a capture's summaries are capped far below 2^32
    // (`--max-summaries`), and the memory for that many would run out first.
    let mut order: Vec<u32> = (0..u32::try_from(total).unwrap_or(u32::MAX)).collect();
    order.sort_by_key(|&i| order_of(i));
    Lone {
        whole,
        digests: flows.digests.clone(),
        vantage,
        offset_ns,
        order,
    }
}

/// Each connection's best candidates (ties included) among the other capture's: of `ci`'s
/// connections by index, and of `cj`'s. Candidates are found through indexes rather than by
/// comparing every pair (by originator ISN, by 5-tuple, and by payload hash) and kept as they
/// are found: a heartbeat's payload makes each connection a weak candidate of 64 others, and
/// the list of them all was 68 MB of the NAT synth's peak.
///
/// `threads` share `ci` in contiguous parts. Each keeps its own best; `cj`'s are then merged
/// part by part, which keeps what one pass keeps: the best of the parts' best. Ties may come in
/// another order than one pass in `ci`'s order would give (the pairs are compared highest
/// `ceiling` first, and some wait): `align_as` reads a tie as ambiguous whatever its order.
/// `prune` (the alignment's, always) leaves out the pairs that cannot be a best, with at most
/// `max_deferred` a part waiting (below).
fn best_candidates(
    ci: &[View],
    cj: &[View],
    threads: usize,
    prune: bool,
    max_deferred: usize,
) -> Found {
    let by_isn = ByKey::of(cj.iter().enumerate().filter_map(|(k, v)| {
        let (true, Some(isn)) = (v.ends.saw_syn, v.ends.orig_isn) else {
            return None;
        };
        Some((isn, k))
    }));
    let by_tuple = ByKey::of(cj.iter().enumerate().map(|(k, v)| (tuple_key(&v.ends), k)));
    // A pair whose `ceiling` is below the best either connection will have cannot enter
    // either's best (`Best::keep` drops what ranks below the best), so its payloads need not be
    // compared. `a`'s pairs are compared highest ceiling first, so its best is known before
    // the rest; a pair below it and below `b`'s floor (its best ISN match, found from the
    // handshakes before any sample is read) is left out, one below it alone waits until `b`'s
    // best is known (`Found::deferred`). In a NAT capture a connection shares payloads with up
    // to 64 others (`PayloadIndex::PER_PAYLOAD`; its heartbeat, with every one, until session
    // 30), and merging their payload lists was most of the alignment (issue 8). Without
    // `prune` every pair is compared.
    let mut floor_j = vec![0u32; cj.len()];
    for v in ci.iter().filter(|_| prune) {
        if let (true, Some(isn)) = (v.ends.saw_syn, v.ends.orig_isn) {
            for b in by_isn.get(isn) {
                if let Some(cand) = isn_candidate(&v.ends, &cj[b].ends) {
                    floor_j[b] = floor_j[b].max(rank(&cand));
                }
            }
        }
    }
    // Each side's payloads: `ci`'s listed here once for all its comparisons (each connection's
    // were listed again for its own, its samples read from their file again), and which of
    // them are too common among its connections to look up (`PayloadIndex::PER_PAYLOAD`).
    let (ki, unsized_i) = Contents::of(ci);
    let common_i = PayloadIndex::common(&ki, &unsized_i);
    let (kj, unsized_payloads) = Contents::of(cj);
    let by_hash = PayloadIndex::of(&kj, &unsized_payloads);
    drop(unsized_payloads);
    // The best candidates of `conns`, the part of `ci` that starts at index `first`.
    let part = |first: usize, conns: &[View]| -> Found {
        let mut found = Found {
            best_i: vec![Best::None; conns.len()],
            best_j: vec![Best::None; cj.len()],
            ..Found::default()
        };
        // Pairs that could have waited since the list was last sifted.
        let mut tries = 0;
        let mut seen: Vec<usize> = Vec::new();
        // Which connection of this part last put each of `cj` in `seen` (its index `k`): a
        // candidate met again, through another payload, the ISN or the tuple, is not listed
        // twice. A sort and dedup of the list did it, ~5 % of lining the NAT pair up.
        let mut listed_by: Vec<u32> = vec![u32::MAX; cj.len()];
        // (rank's ceiling, highest first; then the candidate's index) as one integer: the
        // rank's complement above the index (fewer than 2^32 connections a capture), sorted
        // as the pair would be for half the instructions of comparing pairs.
        let mut order: Vec<u64> = Vec::new();
        let mut payloads: Vec<(u64, u32)> = Vec::new();
        for (k, c) in conns.iter().enumerate() {
            let a = first + k;
            seen.clear();
            payloads.clear();
            // Each payload looked up once: a connection's heartbeats are one payload, and
            // looked up for each copy they filled `seen` with the same 64 connections again
            // and again (sorting it was most of the comparison's time, issue 8). Those with a
            // length are the two sides' items, each side's sorted and distinct already
            // (`Contents::push_side`): merged, not sorted again (a sort of up to 96 was ~1.5 %
            // of lining the 100 MB NAT pair up). Those without are rare (`Contents::of` lists
            // them in connection order).
            let from = unsized_i.partition_point(|&(_, n)| (n as usize) < a);
            payloads.extend(
                unsized_i[from..]
                    .iter()
                    .take_while(|&&(_, n)| n as usize == a)
                    .map(|&(hash, _)| (hash, 0)),
            );
            payloads.sort_unstable();
            payloads.dedup();
            let (o, r) = ki.get(a);
            union_keys(o, r, |s| (s.hash, s.len), |k| payloads.push(k));
            // Fewer than 2^32 connections in a part (`k` is never the mark of none).
            let mark = k as u32;
            let mut list = |b: usize| {
                if let Some(by) = listed_by.get_mut(b).filter(|by| **by != mark) {
                    *by = mark;
                    seen.push(b);
                }
            };
            for &(hash, len) in &payloads {
                if common_i.binary_search(&(hash, len)).is_err() {
                    by_hash.get(hash, len).for_each(&mut list);
                }
            }
            if let (true, Some(isn)) = (c.ends.saw_syn, c.ends.orig_isn) {
                by_isn.get(isn).for_each(&mut list);
            }
            by_tuple.get(tuple_key(&c.ends)).for_each(&mut list);
            // In the order below, which ties on the index: the same whatever order `seen` has.
            order.clear();
            order.extend(
                seen.iter()
                    .map(|&b| u64::from(!ceiling(&c.ends, &cj[b].ends)) << 32 | b as u64),
            );
            order.sort_unstable();
            // The rank of `a`'s best so far: every pair of `a` is in this part.
            let mut best_a = 0;
            for (top, b) in order
                .iter()
                .map(|&k| (!((k >> 32) as u32), (k & 0xffff_ffff) as usize))
            {
                if prune && top < best_a {
                    // `b`'s best so far in this part is a floor too: the pairs of the first
                    // connections, which carry the heartbeat every other shares, are not kept
                    // waiting once their own match is found (tens of MB of pairs on the 500 MB
                    // NAT pair).
                    if top < floor_j[b].max(best_rank(&found.best_j, b)) {
                        found.skipped += 1;
                        continue;
                    }
                    tries += 1;
                    if found.deferred.len() == max_deferred && tries >= max_deferred / 4 {
                        tries = 0;
                        // The waiting pairs sifted against the best found since (once in a
                        // quarter of the list's pairs, so that a list that stays full is not
                        // sifted for every pair); what is left waits, and past that the pair
                        // is compared now (in a part whose connections' matches are all in
                        // other parts, nearly all wait: 1.6 M pairs, 13 MB, on the 500 MB NAT
                        // pair).
                        let before = found.deferred.len();
                        found.deferred.retain(|&(a, b)| {
                            let (a, b) = (a as usize, b as usize);
                            ceiling(&ci[a].ends, &cj[b].ends) >= best_rank(&found.best_j, b)
                        });
                        found.skipped += before - found.deferred.len();
                    }
                    if found.deferred.len() < max_deferred {
                        found.deferred.push((a as u32, b as u32));
                        continue;
                    }
                }
                if let Some(cand) = compare(&c.ends, ki.get(a), &cj[b].ends, kj.get(b)) {
                    found.best_i[k].keep(b, cand);
                    found.best_j[b].keep(a, cand);
                    best_a = best_a.max(rank(&cand));
                }
            }
        }
        found
    };
    // Parts of at least 512 connections: fewer are not worth a thread.
    let size = ci.len().div_ceil(threads.max(1)).max(512);
    let parts: Vec<Found> = if ci.len() <= size {
        vec![part(0, ci)]
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = ci
                .chunks(size)
                .enumerate()
                .map(|(n, p)| {
                    let part = &part;
                    scope.spawn(move || part(n * size, p))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        })
    };
    let mut all = Found {
        best_i: Vec::with_capacity(ci.len()),
        ..Found::default()
    };
    let mut waiting = Vec::with_capacity(parts.len());
    for p in parts {
        all.best_i.extend(p.best_i);
        if all.best_j.is_empty() {
            all.best_j = p.best_j;
        } else {
            for (best, theirs) in all.best_j.iter_mut().zip(&p.best_j) {
                theirs.iter().for_each(|(a, c)| best.keep(a, c));
            }
        }
        waiting.push(p.deferred);
        all.skipped += p.skipped;
    }
    // The deferred pairs, against each `cj` connection's best so far: one that cannot reach it
    // is not compared (the best only rises).
    for run in waiting.iter().flat_map(|w| w.chunk_by(|x, y| x.0 == y.0)) {
        let a = run[0].0 as usize;
        let c = &ci[a];
        for &(_, b) in run {
            let b = b as usize;
            if ceiling(&c.ends, &cj[b].ends) < best_rank(&all.best_j, b) {
                all.skipped += 1;
                continue;
            }
            if let Some(cand) = compare(&c.ends, ki.get(a), &cj[b].ends, kj.get(b)) {
                all.best_j[b].keep(a, cand);
            }
        }
    }
    all
}

/// Each of `ci`'s and `cj`'s connections' best candidates in the other (sorted: index, method,
/// rank), and how many pairs were not compared, with the comparisons pruned or not, and as
/// many pairs left waiting as `max_deferred` (`None`: `MAX_DEFERRED`): what the tests hold the
/// pruning to.
#[doc(hidden)]
pub fn best_candidate_sets(
    ci: &[Box<Connection>],
    cj: &[Box<Connection>],
    threads: usize,
    prune: bool,
    max_deferred: Option<usize>,
) -> (CandidateSets, CandidateSets, usize) {
    let sets = |bests: Bests| -> CandidateSets {
        bests
            .iter()
            .enumerate()
            .filter(|(_, b)| b.len() > 0)
            .map(|(k, cands)| {
                let mut c: Vec<(usize, MatchMethod, u32)> =
                    cands.iter().map(|(o, c)| (o, c.method, rank(&c))).collect();
                c.sort_by_key(|&(o, _, r)| (o, r));
                (k, c)
            })
            .collect()
    };
    let views =
        |conns: &[Box<Connection>]| -> Vec<View> { conns.iter().map(|c| View::of(c)).collect() };
    let (ci, cj) = (views(ci), views(cj));
    let f = best_candidates(
        &ci,
        &cj,
        threads,
        prune,
        max_deferred.unwrap_or(MAX_DEFERRED),
    );
    (sets(f.best_i), sets(f.best_j), f.skipped)
}

/// A connection's best candidates, by connection: see `best_candidate_sets`.
#[doc(hidden)]
pub type CandidateSets = Vec<(usize, Vec<(usize, MatchMethod, u32)>)>;

/// What `best_candidates` found: each connection's best candidates, and how many pairs it did
/// not compare (for the tests that hold it to comparing them all).
#[derive(Default)]
struct Found {
    best_i: Bests,
    best_j: Bests,
    /// Pairs `(a, b)` that cannot be `a`'s best but might be `b`'s, compared once every part
    /// has given `b` its best.
    deferred: Vec<(u32, u32)>,
    skipped: usize,
}

/// Pairs a part keeps waiting for their second connection's best (8 bytes each, 2 MB): past
/// it they are compared at once. On the 100 MB NAT pair 1 << 16 cost 5 % more instructions
/// (8.74 G against 8.33 with no limit), this 1 %; with no limit the 500 MB pair's peak rose
/// 243.9 → 252.5 MiB, with this 245.3.
const MAX_DEFERRED: usize = 1 << 18;

/// The rank of `k`'s best candidate in `bests` so far (0: none yet).
fn best_rank(bests: &Bests, k: usize) -> u32 {
    bests[k].rank()
}

/// Each connection's best candidates in the other capture (ties included), by its index (in a
/// part, its index less the part's first).
type Bests = Vec<Best>;

/// A connection's best candidates in the other capture: the other's index and how it matched.
/// Nearly every connection has one or none, inline; ties, which are rare (an ambiguous pair),
/// in a list of their own. As a map of lists (a list of room for four allocated for one) they
/// were ~14 MB of the 500 MB NAT pair's alignment peak (heaptrack, session 29).
#[derive(Clone, Debug, Default)]
enum Best {
    #[default]
    None,
    One(u32, Candidate),
    Ties(thin_vec::ThinVec<(u32, Candidate)>),
}

// A connection's slot in each list, 20 000 to 100 000 of them a capture.
const _: () = assert!(std::mem::size_of::<Best>() <= 24);

impl Best {
    /// The rank of the best (0: none yet).
    fn rank(&self) -> u32 {
        self.iter().next().map_or(0, |(_, c)| rank(&c))
    }

    fn len(&self) -> usize {
        match self {
            Best::None => 0,
            Best::One(..) => 1,
            Best::Ties(v) => v.len(),
        }
    }

    /// The candidates, in the order they were kept.
    fn iter(&self) -> impl Iterator<Item = (usize, Candidate)> + '_ {
        let (one, ties) = match self {
            Best::None => (None, &[][..]),
            Best::One(o, c) => (Some((*o, *c)), &[][..]),
            Best::Ties(v) => (None, &v[..]),
        };
        one.into_iter()
            .chain(ties.iter().copied())
            .map(|(o, c)| (o as usize, c))
    }

    /// Keeps `c` (with `other`) if it ranks with the best or above it: above, alone.
    fn keep(&mut self, other: usize, c: Candidate) {
        // Fewer than 2^32 connections a capture (`Found::deferred` holds them in 32 bits).
        let other = other as u32;
        let best = self.rank();
        match self {
            Best::None => *self = Best::One(other, c),
            _ if rank(&c) > best => *self = Best::One(other, c),
            Best::One(o, b) if rank(&c) == best => {
                *self = Best::Ties(thin_vec::thin_vec![(*o, *b), (other, c)]);
            }
            Best::Ties(v) if rank(&c) == best => v.push((other, c)),
            _ => {}
        }
    }
}

/// The connections of one capture by the payloads they carried: (hash, len, connection) for
/// every payload-carrying sample, sorted, so that the connections sharing a payload are one
/// run; a payload more than `PER_PAYLOAD` of them carried is left out. A flat list of 16-byte
/// entries: as a map of lists it was 108 MB of the two-capture NAT synth's 157 MB peak
/// (heaptrack), a map entry and a list for nearly every SIP message.
struct PayloadIndex {
    entries: Vec<(u64, u32, u32)>,
    /// Where the entries of each bucket begin, a bucket being the hashes with the same
    /// leading `64 - shift` bits, and one more: the list's end. A payload's run is searched
    /// in its bucket, ~8 entries, where a search of the whole list read ~20 lines of it one
    /// after the other, each a cache miss once the list is larger than the cache (80 % of
    /// `best_candidates`' own time on the 500 MB NAT pair, in `perf`). The hashes are
    /// foldhash's (`tcp::payload_hash`), their leading bits as even as the rest.
    starts: Vec<u32>,
    shift: u32,
}

impl PayloadIndex {
    /// More connections than this carrying one payload, in either capture, say nothing about
    /// which is the match (a heartbeat everyone sends): the payload is looked up in neither
    /// (`common` for the capture whose connections look theirs up, `of` for the other), and
    /// the ISN and the tuple still find the match. Until session 30 the first 64 of the other
    /// capture were kept: which capture came first on the command line then decided some
    /// candidates (2 of the 100 MB NAT pair's 13 311 connections were `ambiguous` one way
    /// round and `unmatched` the other), and a large capture listed first compared each of its
    /// connections with every connection of a small one (0.5 s against 0.14 lining a 2 MB
    /// capture up with a 500 MB one).
    const PER_PAYLOAD: usize = 64;

    /// Every (hash, len, connection) of the connections' `Contents` (each side's distinct
    /// payloads with a length) and of the payloads without one (`Contents::of`), sorted and
    /// distinct: the samples are not read again, and a heartbeat sent a hundred times is one
    /// entry before the sort, not a hundred.
    fn entries(contents: &Contents, unsized_payloads: &[(u64, u32)]) -> Vec<(u64, u32, u32)> {
        // Sized first: the list is allocated once.
        let mut v = Vec::with_capacity(contents.items.len() + unsized_payloads.len());
        for k in 0..contents.spans.len() {
            let (o, r) = contents.get(k);
            v.extend(o.iter().chain(r).map(|s| (s.hash, s.len, k as u32)));
        }
        v.extend(unsized_payloads.iter().map(|&(hash, k)| (hash, 0, k)));
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The payloads (hash, len) more than `PER_PAYLOAD` of the connections carried, sorted.
    fn common(contents: &Contents, unsized_payloads: &[(u64, u32)]) -> Vec<(u64, u32)> {
        Self::common_of(&Self::entries(contents, unsized_payloads))
    }

    /// `common`, from the `entries`.
    fn common_of(entries: &[(u64, u32, u32)]) -> Vec<(u64, u32)> {
        entries
            .chunk_by(|x, y| (x.0, x.1) == (y.0, y.1))
            .filter(|run| run.len() > Self::PER_PAYLOAD)
            .map(|run| (run[0].0, run[0].1))
            .collect()
    }

    fn of(contents: &Contents, unsized_payloads: &[(u64, u32)]) -> Self {
        let mut v = Self::entries(contents, unsized_payloads);
        let common = Self::common_of(&v);
        v.retain(|e| common.binary_search(&(e.0, e.1)).is_err());
        v.shrink_to_fit();
        // ~8 entries a bucket: the buckets' starts are 4 bytes for 128 of entries.
        let bits = (v.len() / 8).max(1).ilog2().min(24);
        let shift = 64 - bits;
        let mut starts = vec![0u32; (1 << bits) + 1];
        // Each bucket's count one place on, summed: where each begins.
        for e in &v {
            starts[Self::bucket(e.0, shift) + 1] += 1;
        }
        for b in 1..starts.len() {
            starts[b] += starts[b - 1];
        }
        PayloadIndex {
            entries: v,
            starts,
            shift,
        }
    }

    /// The bucket of `hash`: its leading bits (none when `shift` is 64).
    fn bucket(hash: u64, shift: u32) -> usize {
        hash.checked_shr(shift).unwrap_or(0) as usize
    }

    /// The connections that carried this payload.
    fn get(&self, hash: u64, len: u32) -> impl Iterator<Item = usize> + '_ {
        let b = Self::bucket(hash, self.shift);
        let run = &self.entries[self.starts[b] as usize..self.starts[b + 1] as usize];
        let from = run.partition_point(|e| (e.0, e.1) < (hash, len));
        run[from..]
            .iter()
            .take_while(move |e| (e.0, e.1) == (hash, len))
            .map(|e| e.2 as usize)
    }
}

/// One capture's connections by a key (the originator's ISN, the tuple): (key, index), sorted,
/// so that a key's connections are one run, in index order. As maps of lists (a list
/// allocated for nearly every key) they were ~5 MB of the 500 MB NAT pair's alignment peak
/// (heaptrack, session 29).
struct ByKey<K>(Vec<(K, u32)>);

impl<K: Ord + Copy> ByKey<K> {
    fn of(keyed: impl Iterator<Item = (K, usize)>) -> Self {
        // Fewer than 2^32 connections a capture (as `Found::deferred`).
        let mut v: Vec<(K, u32)> = keyed.map(|(k, i)| (k, i as u32)).collect();
        v.sort_unstable();
        ByKey(v)
    }

    /// The connections with this key, in index order.
    fn get(&self, key: K) -> impl Iterator<Item = usize> + '_ {
        let from = self.0.partition_point(|e| e.0 < key);
        self.0[from..]
            .iter()
            .take_while(move |e| e.0 == key)
            .map(|e| e.1 as usize)
    }
}

fn tuple_key(c: &Ends) -> crate::tcp::Conversation {
    crate::tcp::conversation((c.orig_h, c.orig_p), (c.resp_h, c.resp_p))
}

/// Apparent one-way delays between two vantages, in each physical direction: what the NTP
/// estimate reads of them, their smallest (and, to choose a direction, largest) and how many.
#[derive(Default)]
struct PairDeltas {
    /// ts_b - ts_a for packets that went from a's side to b's side, and ts_a - ts_b back.
    a_to_b: Spread,
    b_to_a: Spread,
    l7_only: bool,
    any_l4: bool,
}

/// The smallest and largest of some delays (s), and how many: the lists of them all were
/// kept until the offsets were solved, which read only these.
#[derive(Clone, Copy)]
struct Spread {
    min: f64,
    max: f64,
    n: usize,
}

impl Default for Spread {
    fn default() -> Self {
        Spread {
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            n: 0,
        }
    }
}

impl Spread {
    fn add(&mut self, d: f64) {
        self.min = self.min.min(d);
        self.max = self.max.max(d);
        self.n += 1;
    }

    fn join(&mut self, o: Spread) {
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.n += o.n;
    }

    /// The same delays, each negated.
    fn negated(self) -> Spread {
        Spread {
            min: -self.max,
            max: -self.min,
            n: self.n,
        }
    }

    fn is_empty(&self) -> bool {
        self.n == 0
    }
}

/// A sample's key in `deltas` (kind, stream position or 0, length, hash), and its time.
type Keyed = ((SampleKind, u32, u32, u64), Timestamp);

impl PairDeltas {
    fn add(
        &mut self,
        a: &View,
        b: &View,
        method: MatchMethod,
        scratch: &mut (Vec<Keyed>, Vec<Keyed>),
    ) {
        // Where the legs are one TCP connection (no NAT, or a NAT), every packet is the same
        // packet at both points: SYNs and FINs too, keyed by stream position. Through a TCP
        // proxy only the data crosses; its handshakes and FINs are its own.
        let same_packets = matches!(method, MatchMethod::TupleIsn | MatchMethod::NatIsn);
        let by_pos = same_packets || method == MatchMethod::Stream;
        if method == MatchMethod::L7Proxy {
            self.l7_only = !self.any_l4;
        } else {
            self.any_l4 = true;
            self.l7_only = false;
        }
        let (ea, eb) = (&a.ends, &b.ends);
        let flip = ea.proto == Proto::Udp && (ea.orig_h != eb.orig_h || ea.orig_p != eb.orig_p);
        let (b_fwd, b_back) = if flip {
            (&b.samples[1], &b.samples[0])
        } else {
            (&b.samples[0], &b.samples[1])
        };
        // Deltas ts_b - ts_a per direction of the connection.
        let fwd = deltas(&a.samples[0], b_fwd, by_pos, same_packets, scratch);
        let back = deltas(&a.samples[1], b_back, by_pos, same_packets, scratch);
        if fwd.is_empty() && back.is_empty() {
            return;
        }
        // Which vantage is nearer the originator? Hypothesis H1 (a): originator->responder
        // packets reach a first, so ts_b - ts_a >= 0 for them and <= 0 back. The hypothesis
        // whose NTP bound is not negative is the true one.
        let h1 = if !fwd.is_empty() && !back.is_empty() {
            (fwd.min - back.max) >= (back.min - fwd.max)
        } else {
            // One direction only: the earlier capture is upstream.
            let v = if fwd.is_empty() { &back } else { &fwd };
            let upstream_a = v.min >= 0.0;
            if fwd.is_empty() {
                !upstream_a
            } else {
                upstream_a
            }
        };
        if h1 {
            self.a_to_b.join(fwd);
            self.b_to_a.join(back.negated());
        } else {
            self.a_to_b.join(back);
            self.b_to_a.join(fwd.negated());
        }
    }

    /// (offset of b relative to a, bound, samples), NTP-style.
    fn solve(&self) -> Option<(f64, f64, usize)> {
        if self.a_to_b.is_empty() || self.b_to_a.is_empty() {
            return None;
        }
        let d_ab = self.a_to_b.min;
        let d_ba = self.b_to_a.min;
        let offset = (d_ab - d_ba) / 2.0;
        let bound = ((d_ab + d_ba) / 2.0).max(0.0);
        Some((offset, bound, self.a_to_b.n + self.b_to_a.n))
    }
}

/// ts_b - ts_a for samples seen in both, keyed by position and content (or content only), the
/// first copy of each in either capture (retransmissions would skew the delays). Each side's
/// keys sorted and met in one pass (`scratch` holds them), where two maps were made a link.
fn deltas(
    a: &crate::tcp::Samples,
    b: &crate::tcp::Samples,
    by_pos: bool,
    control_too: bool,
    scratch: &mut (Vec<Keyed>, Vec<Keyed>),
) -> Spread {
    let keyed = |list: &mut Vec<Keyed>, samples: &crate::tcp::Samples| {
        list.clear();
        // `for_each`, not `extend`: the samples are decoded in one loop (`Unpack::fold`).
        samples.iter().for_each(|s| {
            if s.kind == SampleKind::Data || s.kind == SampleKind::Datagram || control_too {
                let pos = if by_pos { s.rel_seq } else { 0 };
                list.push(((s.kind, pos, s.len, s.hash), s.ts));
            }
        });
        // Stable: of equal keys the first in capture order stays first, and dedup keeps it.
        list.sort_by_key(|e| e.0);
        list.dedup_by_key(|e| e.0);
    };
    let (ka, kb) = scratch;
    keyed(ka, a);
    keyed(kb, b);
    let mut out = Spread::default();
    meet(ka, kb, |e| e.0, |x, y| out.add(y.1.secs_since(x.1)));
    out
}

/// Offsets of every vantage to the reference: direct pairs where they exist, chains elsewhere
/// (bounds add up along the chain, the tightest chain wins), manual overrides first.
fn solve_offsets(
    vantages: &[Vantage],
    reference: usize,
    pairs: &HashMap<(usize, usize), PairDeltas>,
    manual: &[(String, f64)],
) -> Vec<ClockOffset> {
    let n = vantages.len();
    // Edges: (from, to, offset of `to` relative to `from`, bound, samples, l7).
    let mut edges: Vec<(usize, usize, f64, f64, usize, bool)> = Vec::new();
    for (&(a, b), d) in pairs {
        if let Some((off, bound, k)) = d.solve() {
            edges.push((a, b, off, bound, k, d.l7_only));
            edges.push((b, a, -off, bound, k, d.l7_only));
        }
    }
    // In vantage order, not the map's: of two chains with the same bound the first found wins.
    edges.sort_by_key(|e| (e.0, e.1));
    // Dijkstra on the sum of bounds (n is small). Per vantage: (offset, bound, samples of the
    // last edge, path, an edge used L7 pairs only).
    type Best = Option<(f64, f64, usize, Vec<usize>, bool)>;
    let mut best: Vec<Best> = vec![None; n];
    best[reference] = Some((0.0, 0.0, 0, vec![reference], false));
    let mut done = vec![false; n];
    for _ in 0..n {
        let Some(u) = (0..n)
            .filter(|&v| !done[v] && best[v].is_some())
            .min_by(|&x, &y| {
                best[x]
                    .as_ref()
                    .unwrap()
                    .1
                    .total_cmp(&best[y].as_ref().unwrap().1)
            })
        else {
            break;
        };
        done[u] = true;
        let (off_u, bound_u, _, path_u, l7_u) = best[u].clone().unwrap();
        for &(from, to, off, bound, k, l7) in &edges {
            if from != u || done[to] {
                continue;
            }
            let cand = bound_u + bound;
            if best[to].as_ref().is_none_or(|b| cand < b.1) {
                let mut path = path_u.clone();
                path.push(to);
                best[to] = Some((off_u + off, cand, k, path, l7_u || l7));
            }
        }
    }
    let mut out = Vec::new();
    for (v, vant) in vantages.iter().enumerate() {
        if v == reference {
            continue;
        }
        if let Some((_, secs)) = manual.iter().find(|(name, _)| name == &vant.name) {
            out.push(ClockOffset {
                vantage: vant.name.clone(),
                reference: vantages[reference].name.clone(),
                offset_s: *secs,
                bound_s: 0.0,
                method: "manual".into(),
                samples: 0,
            });
            continue;
        }
        if let Some((off, bound, k, path, l7)) = &best[v] {
            let mut method = if path.len() > 2 {
                let names: Vec<&str> = path.iter().map(|&p| vantages[p].name.as_str()).collect();
                format!("ntp_chain:{}", names.join(">"))
            } else {
                "ntp_min_delay".to_string()
            };
            if *l7 {
                method.push_str("+l7_proxy_pairs");
            }
            out.push(ClockOffset {
                vantage: vant.name.clone(),
                reference: vantages[reference].name.clone(),
                offset_s: round_us(*off),
                bound_s: round_us(*bound),
                method,
                samples: *k,
            });
        }
    }
    out
}

fn round_us(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// Segments retransmitted upstream whose first copy never reached the next vantage downstream.
///
/// For a direction of a lined-up TCP connection whose legs keep stream offsets (tuple, NAT,
/// stream matches), legs are ordered along the path by when they saw the first packet of that
/// direction (reference time). A segment sent `u` times at the upstream leg and seen `d` times
/// downstream lost `u - d` copies on that hop.
fn localise_losses(al: &Alignment, views: &[Vec<View>]) -> Vec<HopLoss> {
    // A leg's samples and retransmissions in one direction.
    let of = |leg: &Leg, dir: &str| views[leg.at.0][leg.at.1].side(dir == "client_to_server");
    let mut acc: HashMap<(String, String, &'static str), (u64, Vec<String>)> = HashMap::default();
    // One capture's lines are made as asked (`Lines::get`) and have one leg: none is read.
    let ahead = !al.connections.one_leg_each();
    for (n, l) in al.connections.iter().enumerate() {
        // Only where the loop reads: a lone leg may be one no view was made for.
        let next = ahead.then(|| al.connections.get(n + VIEWS_AHEAD)).flatten();
        if let Some(next) = next.filter(|l| l.legs.len() >= 2) {
            next.legs
                .iter()
                .filter_map(|leg| views.get(leg.at.0)?.get(leg.at.1))
                .for_each(View::prefetch);
        }
        if l.legs.len() < 2
            || !matches!(
                l.matched.method,
                MatchMethod::TupleIsn | MatchMethod::NatIsn | MatchMethod::Stream
            )
        {
            continue;
        }
        for dir in ["client_to_server", "server_to_client"] {
            // Order legs by their first sample of this direction, in reference time (only
            // that sample read: the samples are packed, and this read them all three times).
            let mut order: Vec<(Timestamp, &Leg)> = l
                .legs
                .iter()
                .filter_map(|leg| {
                    let first = of(leg, dir).0.iter().next();
                    first.map(|f| (al.to_reference(leg.at.0, f.ts), leg))
                })
                .collect();
            order.sort_by_key(|(t, _)| *t);
            for w in order.windows(2) {
                let (up, down) = (w[0].1, w[1].1);
                let up_re = of(up, dir).1.to_vec();
                if up_re.iter().all(|r| r.len == 0) {
                    // Nothing retransmitted upstream, nothing lost: the downstream leg's samples
                    // (packed) not decoded for it.
                    continue;
                }
                let (down_samples, down_re) = of(down, dir);
                let down_s: Vec<Sample> = down_samples.iter().collect();
                let down_re = down_re.to_vec();
                let down_max = down_s
                    .iter()
                    .map(|s| s.rel_seq.wrapping_add(s.len))
                    .max()
                    .unwrap_or(0);
                let mut lost = 0u64;
                let mut counted = HashSet::default();
                for r in &up_re {
                    if r.len == 0 || !counted.insert(r.rel_seq) {
                        continue;
                    }
                    let up_copies = 1 + up_re.iter().filter(|x| x.rel_seq == r.rel_seq).count();
                    let seen_down = down_s.iter().any(|x| x.rel_seq == r.rel_seq)
                        || down_re.iter().any(|x| x.rel_seq == r.rel_seq)
                        || r.rel_seq < down_max;
                    let down_copies = if seen_down {
                        1 + down_re.iter().filter(|x| x.rel_seq == r.rel_seq).count()
                    } else {
                        0
                    };
                    lost += up_copies.saturating_sub(down_copies) as u64;
                }
                if lost > 0 {
                    let e = acc
                        .entry((up.vantage.to_string(), down.vantage.to_string(), dir))
                        .or_default();
                    e.0 += lost;
                    e.1.push(l.id.to_string());
                }
            }
        }
    }
    let mut out: Vec<HopLoss> = acc
        .into_iter()
        .map(|((from, to, direction), (segments, connections))| HopLoss {
            from,
            to,
            direction,
            segments,
            connections,
        })
        .collect();
    // Every key in the order, not the map's: two hops may lose as many segments.
    out.sort_by(|a, b| {
        (b.segments, &a.from, &a.to, a.direction).cmp(&(a.segments, &b.from, &b.to, b.direction))
    });
    out
}

/// One packet of a lined-up connection, at one vantage, on the reference clock.
#[derive(Clone, Debug, Serialize)]
pub struct TimelineEvent {
    /// Reference time.
    pub ts: Timestamp,
    pub vantage: String,
    pub frame: u64,
    /// Capture time, as written in the file.
    pub capture_ts: Timestamp,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
    /// `>` from the leg's originator, `<` from its responder.
    pub dir: &'static str,
    /// tcpdump's flag notation (`S`, `S.`, `P.`, `R`, `F.`), or `udp`.
    pub flags: String,
    /// Sequence and acknowledgment numbers relative to the leg's ISNs (TCP).
    pub seq: Option<u32>,
    pub ack: Option<u32>,
    pub len: u32,
    pub ttl: u8,
    pub ip_id: Option<u16>,
    pub window: Option<u16>,
}

/// Every packet of lined-up connection `id`, from every vantage, in reference time. Reads each
/// capture again (streaming), keeping only the leg's frames.
pub fn timeline(
    al: &Alignment,
    id: &str,
    paths: &[std::path::PathBuf],
) -> anyhow::Result<Vec<TimelineEvent>> {
    use crate::capture::CaptureReader;
    use crate::decode::{decode, Decoded, Transport};
    let Some(l) = al.connections.by_id(id) else {
        anyhow::bail!(
            "no lined-up connection {id} (there are {}: L1..L{})",
            al.connections.len(),
            al.connections.len()
        );
    };
    let mut out = Vec::new();
    for leg in &l.legs {
        let c = al.connection(leg);
        let path = &paths[leg.at.0];
        let mut r = CaptureReader::open(path)?;
        let orig = (c.orig_h, c.orig_p);
        let resp = (c.resp_h, c.resp_p);
        while let Some(f) = r.next_frame()? {
            if f.number < c.first_frame {
                continue;
            }
            if f.number > c.last_frame {
                break;
            }
            let Decoded::Ip(p) = decode(&f) else { continue };
            if c.vlan.unwrap_or([0, 0]) != p.vlan {
                continue;
            }
            let (sport, dport, flags, seq, ack, len, window) = match p.transport {
                Transport::Tcp(t) if c.proto == Proto::Tcp => (
                    t.src_port,
                    t.dst_port,
                    t.flags.tcpdump(),
                    Some(t.seq),
                    t.flags.ack().then_some(t.ack),
                    t.payload_len,
                    Some(t.window),
                ),
                Transport::Udp(u) if c.proto == Proto::Udp => (
                    u.src_port,
                    u.dst_port,
                    "udp".to_string(),
                    None,
                    None,
                    u.payload_len,
                    None,
                ),
                _ => continue,
            };
            let from = (p.src, sport);
            let to = (p.dst, dport);
            let dir = if from == orig && to == resp {
                ">"
            } else if from == resp && to == orig {
                "<"
            } else {
                continue;
            };
            let (my_isn, peer_isn) = if dir == ">" {
                (c.orig.isn, c.resp.isn)
            } else {
                (c.resp.isn, c.orig.isn)
            };
            out.push(TimelineEvent {
                ts: al.to_reference(leg.at.0, f.ts),
                vantage: leg.vantage.to_string(),
                frame: f.number,
                capture_ts: f.ts,
                src: p.src,
                sport,
                dst: p.dst,
                dport,
                dir,
                flags,
                seq: seq.map(|s| s.wrapping_sub(my_isn.unwrap_or(s))),
                ack: ack.map(|a| a.wrapping_sub(peer_isn.unwrap_or(a))),
                len,
                ttl: p.ttl,
                ip_id: p.ip_id,
                window,
            });
        }
    }
    out.sort_by(|a, b| a.ts.cmp(&b.ts).then(a.vantage.cmp(&b.vantage)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    proptest::proptest! {
        /// The union of two sorted lists of distinct keys is every key once, in order, as a
        /// sort of both would give (the payloads a connection is looked up by).
        #[test]
        fn union_keys_is_each_key_once_in_order(
            a in proptest::collection::btree_set(0u8..40, 0..30),
            b in proptest::collection::btree_set(0u8..40, 0..30),
        ) {
            let (a, b): (Vec<u8>, Vec<u8>) = (a.into_iter().collect(), b.into_iter().collect());
            let mut want: Vec<u8> = a.iter().chain(&b).copied().collect();
            want.sort_unstable();
            want.dedup();
            let mut got = Vec::new();
            super::union_keys(&a, &b, |&k| k, |k| got.push(k));
            proptest::prop_assert_eq!(got, want);
        }

        /// A key's connections are every one with that key, in index order, and no other.
        #[test]
        fn by_key_gives_each_keys_connections_in_order(
            keys in proptest::collection::vec(0u8..12, 0..60),
            asked in 0u8..14,
        ) {
            let by = super::ByKey::of(keys.iter().copied().enumerate().map(|(i, k)| (k, i)));
            let want: Vec<usize> = (0..keys.len()).filter(|&i| keys[i] == asked).collect();
            proptest::prop_assert_eq!(by.get(asked).collect::<Vec<_>>(), want);
        }

        /// A payload's connections are every one that carried it, in index order, whichever
        /// bucket its hash falls in (hashes from the top bits' ends, up to hundreds of entries:
        /// buckets of 0 to 5 bits); none if more than `PER_PAYLOAD` did, and then the payload
        /// is one of the `common` ones.
        #[test]
        fn payload_index_gives_each_payloads_connections_in_order(
            // Up to 200 connections sharing few payloads: a payload is carried by ~3 in 4 of
            // them, as often more than `PER_PAYLOAD` as fewer.
            conns in proptest::collection::vec(
                (
                    proptest::collection::btree_set((0usize..3, 1u32..2), 0..4),
                    proptest::collection::btree_set((0usize..3, 1u32..2), 0..4),
                ),
                0..200,
            ),
            unsized_payloads in proptest::collection::vec((0usize..12, 0u32..200), 0..10),
            asked in (0usize..3, 0u32..2),
        ) {
            use super::{Contents, Item, PayloadIndex};
            // The first three, which the connections carry, at both ends of the range and in
            // its middle.
            const HASHES: [u64; 12] = [
                1,
                (1 << 63) | 1,
                u64::MAX,
                2,
                1 << 40,
                0x8000_0000,
                0x0000_0000_dead_beef,
                0x0123_4567_89ab_cdef,
                0x7fff_ffff_ffff_ffff,
                1 << 63,
                0xdead_beef_0000_0000,
                0xfedc_ba98_7654_3210,
            ];
            let mut contents = Contents::default();
            for (o, r) in &conns {
                let start = contents.items.len() as u32;
                for side in [o, r] {
                    // Each side sorted by (hash, len), distinct, as `Contents::push_side` leaves it.
                    let mut items: Vec<Item> = side
                        .iter()
                        .map(|&(h, len)| Item { hash: HASHES[h], len, rel_seq: 0 })
                        .collect();
                    items.sort_by_key(|i| (i.hash, i.len));
                    contents.items.extend(items);
                }
                contents.spans.push((start, o.len() as u16, r.len() as u16));
            }
            let unsized_payloads: Vec<(u64, u32)> = unsized_payloads
                .into_iter()
                .filter(|&(_, k)| (k as usize) < conns.len())
                .map(|(h, k)| (HASHES[h], k))
                .collect();
            let index = PayloadIndex::of(&contents, &unsized_payloads);
            let (hash, len) = (HASHES[asked.0], asked.1);
            let carried: Vec<usize> = (0..conns.len())
                .filter(|&k| {
                    let (o, r) = &conns[k];
                    o.contains(&asked)
                        || r.contains(&asked)
                        || (len == 0 && unsized_payloads.contains(&(hash, k as u32)))
                })
                .collect();
            let common = carried.len() > PayloadIndex::PER_PAYLOAD;
            let want = if common { Vec::new() } else { carried };
            proptest::prop_assert_eq!(index.get(hash, len).collect::<Vec<_>>(), want);
            let commons = PayloadIndex::common(&contents, &unsized_payloads);
            proptest::prop_assert_eq!(commons.contains(&(hash, len)), common);
            proptest::prop_assert!(commons.windows(2).all(|w| w[0] < w[1]));
        }

        /// A connection's best candidates are those of the highest rank it was offered, every
        /// one of them (a tie is read as ambiguous), in the order offered; none when none was.
        #[test]
        fn best_keeps_every_candidate_of_the_highest_rank(
            offered in proptest::collection::vec((0usize..1000, 0usize..3, 0u32..4), 0..12),
        ) {
            use super::{Best, Candidate, MatchMethod};
            let methods = [MatchMethod::TupleIsn, MatchMethod::Stream, MatchMethod::L7Proxy];
            let offered: Vec<(usize, Candidate)> = offered
                .into_iter()
                .map(|(other, m, s)| {
                    let score = f64::from(s) / 4.0;
                    (other, Candidate { method: methods[m], score })
                })
                .collect();
            let mut best = Best::None;
            for &(other, c) in &offered {
                best.keep(other, c);
            }
            let top = offered.iter().map(|(_, c)| super::rank(c)).max();
            let want: Vec<(usize, u32)> = offered
                .iter()
                .filter(|(_, c)| Some(super::rank(c)) == top)
                .map(|(o, c)| (*o, super::rank(c)))
                .collect();
            let got: Vec<(usize, u32)> = best.iter().map(|(o, c)| (o, super::rank(&c))).collect();
            proptest::prop_assert_eq!(best.len(), want.len());
            proptest::prop_assert_eq!(best.rank(), top.unwrap_or(0));
            proptest::prop_assert_eq!(got, want);
        }
    }
}
