//! The diagnosis rules, one small function each: evidence in, findings out. Each doc comment
//! says what the rule looks for, why that points where it does, and the source of any default.

use crate::align::{Kept, Leg, LineId, MatchMethod};
use crate::capture::Timestamp;
use crate::tcp::{Connection, Digest, Gap, Proto, Sample, Side, Termination, TerminationKind};

use super::defaults;
use super::{
    display_filters, side_msg, side_name, Ctx, Evidence, Finding, FindingKind, FindingSink,
    FindingText, FirstEvidence, Numbers, Path, Severity, Verdict,
};
use crate::i18n::{empty, fixed, Msg};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

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
    /// The lined-up connection's id, inline as `LinedUp` keeps it.
    pub conn: crate::align::LineId,
    /// The silence that proved fatal.
    pub silence_s: f64,
    /// `timer`: the middlebox acted by itself after the silence (its packet ended the
    /// silence). `next_packet`: the first packet after the silence met a forgotten flow.
    pub at_timer: bool,
    /// Longest silence this connection survived before the fatal one.
    pub survived_s: Option<f64>,
    /// Where on the path (English, for `numbers.hop`). Shared by the deaths at one hop
    /// (`Hops`): a string and a message each were ~170 bytes a death, ~150 000 deaths in the
    /// 20 GB synth.
    pub hop: Arc<str>,
    /// Where on the path, in words of the report's language.
    pub hop_msg: Arc<Msg>,
    /// When the middlebox acted (reference time) and the last good packet before.
    pub at: Timestamp,
    pub last_good: Timestamp,
}

/// Wireshark filters of a finding that groups connections show this many of them whole (the
/// first in time): enough to open the story in Wireshark, short enough to paste. Every frame
/// the finding cites is in its filters all the same, by number.
pub const FILTER_CONNECTIONS: usize = 3;

/// Runs every rule, each finding put in `out` as it is made; `max_evidence` is the cap on
/// evidence items per finding, which a finding that groups connections fills with whole
/// connections.
pub fn run_all(ctx: &Ctx<'_>, max_evidence: usize, out: &mut FindingSink<'_>) {
    let mut ends = Grouper::new(max_evidence);
    let mut deaths = Vec::new();
    let mut hops = Hops::default();
    // A digest's path: no per-path rule ends it (`kept_as`).
    for p in ctx.whole_paths() {
        let p = &p;
        let end = middlebox_end(ctx, p)
            .or_else(|| middlebox_reset_single(ctx, p))
            .or_else(|| silent_drop(ctx, p));
        if let Some((m, d)) = end {
            ends.push(ctx, m);
            deaths.push(hops.share(d));
        }
    }
    // The deaths stay one per connection (the rules below reason on each); only the findings
    // that describe them are grouped.
    ends.finish(ctx).into_iter().for_each(|f| out.push(f));
    let idle = idle_timeout(ctx, &deaths);
    if let Some(f) = &idle {
        let mut slow = Grouper::new(max_evidence);
        heartbeat_too_slow(ctx, &deaths, f, &mut slow);
        slow.finish(ctx).into_iter().for_each(|f| out.push(f));
    }
    if let Some(f) = idle {
        out.push(f);
    }
    // A finding a call cut, and one a half-open connection: each written as made.
    call_cut(ctx, &deaths, out);
    half_open(ctx, &deaths, out);
    if let Some(f) = l7_proxy(ctx) {
        out.push(f);
    }
    if let Some(f) = weak_network(ctx, &deaths, max_evidence) {
        out.push(f);
    }
    // The last rule reads three fields of a death: the rest goes before it makes its findings
    // (~250 bytes a death with its strings, 18 800 deaths in the 2 GB synth).
    let starts: Vec<OutageStart> = deaths.iter().map(OutageStart::of).collect();
    drop(deaths);
    agent_outage(ctx, &starts, out);
}

/// The hops deaths happened at, each once: a death's hop shared with the deaths before it at
/// the same hop.
#[derive(Default)]
struct Hops(Vec<(Arc<str>, Arc<Msg>)>);

impl Hops {
    fn share(&mut self, mut d: Death) -> Death {
        match self
            .0
            .iter()
            .find(|(hop, msg)| *hop == d.hop && *msg == d.hop_msg)
        {
            Some((hop, msg)) => (d.hop, d.hop_msg) = (hop.clone(), msg.clone()),
            None => self.0.push((d.hop.clone(), d.hop_msg.clone())),
        }
        d
    }
}

/// What `agent_outage` reads of a `Death`: its connection, when the middlebox acted, and the
/// last good packet before.
struct OutageStart {
    conn: crate::align::LineId,
    at: Timestamp,
    last_good: Timestamp,
}

impl OutageStart {
    fn of(d: &Death) -> Self {
        OutageStart {
            conn: d.conn,
            at: d.at,
            last_good: d.last_good,
        }
    }
}

/// What a one-capture diagnosis keeps of a finished connection: its digest (what `Reads`
/// reads), and whether the connection is kept whole too: when its per-path rules may end it
/// (`middlebox_reset_single`, `silent_drop`: they read only the path's own connection, so the
/// tracker can ask as each connection is summarised), and for the UDP flows that carry SIP
/// (`call_cut` reads their calls). Every other connection is read only through `Reads`: on
/// the 2 GB synth, ~1.4 KB a connection became ~100 bytes, encoded. `run_rules` skips the
/// paths of connections not kept whole: by this test, none of the per-path rules would end
/// them.
pub fn kept_as(c: &Connection) -> (Digest, bool) {
    let ended = reset_after_silence(c).is_some()
        || [Side::Orig, Side::Resp]
            .into_iter()
            .any(|sender| unanswered_after_silence(c, sender).is_some());
    let sip_udp = c.proto == Proto::Udp && c.app.as_ref().is_some_and(|a| a.sip.is_some());
    (digest_of(c), ended || sip_udp)
}

/// A connection's `Digest`: what `Reads` reads from it whole.
pub fn digest_of(c: &Connection) -> Digest {
    let whole = Reads(Kept::Whole(c));
    let (survived, n) = Digest::survived_from(whole.survived());
    Digest {
        uid: c.uid,
        proto: c.proto,
        orig_h: c.orig_h,
        orig_p: c.orig_p,
        resp_h: c.resp_h,
        resp_p: c.resp_p,
        ts: c.ts,
        first_frame: c.first_frame,
        last_frame: c.last_frame,
        conn_state: c.conn_state,
        ended_by: whole.ended_by(),
        survived,
        survived_n: n,
        retransmissions: whole.retransmissions(),
        data_segments: whole.data_segments(),
        retransmitted: whole.retransmitted().collect::<Vec<_>>().into(),
        recovery: whole.recovery(),
        whole: None,
    }
}

/// What the rules read from a connection whatever its fate (`idle_timeout`, `weak_network`,
/// `agent_outage`'s reconnects, the verdict): the same from the connection kept whole as from
/// its digest, which `digest_of` fills from these.
#[derive(Clone)]
pub struct Reads<'a>(pub Kept<'a>);

impl<'a> Reads<'a> {
    pub fn proto(&self) -> Proto {
        match &self.0 {
            Kept::Whole(c) => c.proto,
            Kept::Digest(d) => d.proto(),
        }
    }

    pub fn ts(&self) -> Timestamp {
        match &self.0 {
            Kept::Whole(c) => c.ts,
            Kept::Digest(d) => d.ts(),
        }
    }

    /// Who sent the FIN or RST that ended it.
    pub fn ended_by(&self) -> Option<Side> {
        match &self.0 {
            Kept::Whole(c) => c.termination.as_ref().map(|t| t.by),
            Kept::Digest(d) => d.ended_by(),
        }
    }

    /// The silences it lived through: those that ended before its last packet.
    pub fn survived(&self) -> impl Iterator<Item = f64> + 'a {
        let (whole, digest) = match &self.0 {
            Kept::Whole(c) => (Some(*c), None),
            Kept::Digest(d) => (None, Some(d.clone())),
        };
        let whole = whole.into_iter().flat_map(|c| {
            c.silences
                .iter()
                .filter(|g| g.to_frame < c.last_frame)
                .map(|g| g.secs)
        });
        whole.chain(digest.into_iter().flat_map(|d| d.survived()))
    }

    /// Retransmissions, both directions.
    pub fn retransmissions(&self) -> u64 {
        match &self.0 {
            Kept::Whole(c) => c.orig.retransmissions + c.resp.retransmissions,
            Kept::Digest(d) => d.retransmissions(),
        }
    }

    /// Data segments, both directions.
    pub fn data_segments(&self) -> u64 {
        match &self.0 {
            Kept::Whole(c) => c.orig.samples.total + c.resp.samples.total,
            Kept::Digest(d) => d.data_segments(),
        }
    }

    /// The first five retransmissions (time, frame): the originator's, then the responder's.
    pub fn retransmitted(&self) -> impl Iterator<Item = (Timestamp, u64)> + 'a {
        let (whole, digest) = match &self.0 {
            Kept::Whole(c) => (Some(*c), None),
            Kept::Digest(d) => (None, Some(d.clone())),
        };
        let whole = whole.into_iter().flat_map(|c| {
            c.orig
                .retransmitted
                .iter()
                .chain(c.resp.retransmitted.iter())
                .map(|s| (s.ts, s.frame))
        });
        whole
            .chain(digest.into_iter().flat_map(|d| d.retransmitted()))
            .take(5)
    }

    /// When it worked again for its client (`recovery`).
    pub fn recovery(&self) -> Option<(Timestamp, u64)> {
        match &self.0 {
            Kept::Whole(c) => recovery(c),
            Kept::Digest(d) => d.recovery(),
        }
    }
}

/// A finding about one connection, before grouping: the finding as it reads for that connection
/// alone, and what a group of such connections says.
struct Member {
    /// The finding for this connection alone (a group of one is this, unchanged).
    finding: Finding,
    /// When the connection died (reference clock): a group shows the first ones in time.
    at: Timestamp,
    /// The silence that ended it.
    silence_s: f64,
    /// heartbeat_too_slow: the median a stretched heartbeat reached (a throttled tab).
    stretch_s: Option<f64>,
    /// The group's sentences without the group's numbers: connections whose texts are equal
    /// (same kind of end, same place, same side...) are one story and one finding. `Group::merge` adds
    /// `n`, `silence`, `retrans`, `median`, `slowest` and `max` to every message.
    many: FindingText,
}

/// Groups per-connection findings that tell the same story about the same place into one
/// finding each, as the rules make them: on a busy capture a thousand connections reset by one
/// NAT are one finding for an incident ticket, not a thousand copies of the same sentence.
/// Groups come in the order of their first connection, so the first finding is still the first
/// connection's.
///
/// A group keeps whole only the members a report can show (the first in time, as many as
/// `max_evidence` allows) and sums up the rest as they come: with every member kept until the
/// merge, the 2 GB synth's deaths held ~80 MB of sentences and evidence (heaptrack) that the
/// merge then dropped.
struct Grouper {
    max_evidence: usize,
    groups: Vec<Group>,
}

/// One group so far.
struct Group {
    /// What the first member said: the story every member shares.
    kind: FindingKind,
    single_vantage: bool,
    numbers: Numbers,
    severity: Severity,
    many: FindingText,
    /// Members so far.
    n: usize,
    /// The members whose evidence is shown, by time (ties in the order they came): those
    /// that fit in `max_evidence` (at least one). `cutoff` is the first one that did not fit:
    /// a member after it in time can never be shown, since members that come later only add
    /// evidence before it.
    shown: Vec<(MemberKey, Member)>,
    cutoff: Option<MemberKey>,
    /// Every member's connections, in the order they came.
    connections: Vec<crate::align::LineId>,
    silence: (f64, f64),
    retransmissions: u64,
    medians: Vec<f64>,
    p95: Option<f64>,
    slowest: Option<f64>,
    /// heartbeat_too_slow: how many heartbeats were stretched, and their medians' range.
    stretched: (usize, f64, f64),
    /// middlebox_reset: per capture (vantage, file), what the cited RSTs share.
    rst_marks: BTreeMap<CaptureName, RstAgreement>,
}

/// When a member's connection died, and the order it came in.
type MemberKey = (Timestamp, usize);

/// A capture as evidence names it: (vantage, file).
type CaptureName = (Arc<str>, Arc<str>);

/// A RST's TTL and IP ID: what the middlebox's resets share.
type RstMark = (u8, Option<u16>);

/// The first RST's TTL and IP ID in a capture, and whether every other RST there had the same.
struct RstAgreement {
    first: RstMark,
    same_ttl: bool,
    same_id: bool,
}

impl Grouper {
    fn new(max_evidence: usize) -> Self {
        Grouper {
            max_evidence,
            groups: Vec::new(),
        }
    }

    fn push(&mut self, ctx: &Ctx<'_>, m: Member) {
        let f = &m.finding;
        let at = self.groups.iter().position(|g| {
            g.kind == f.kind
                && g.single_vantage == f.single_vantage
                && g.numbers.hop == f.numbers.hop
                && g.numbers.acts == f.numbers.acts
                && g.many == m.many
        });
        let g = match at {
            Some(i) => &mut self.groups[i],
            None => {
                self.groups.push(Group::new(&m));
                self.groups.last_mut().expect("just pushed")
            }
        };
        let rsts = if m.finding.kind == FindingKind::MiddleboxReset {
            cited_rsts(ctx, &m)
        } else {
            Vec::new()
        };
        g.add(m, rsts, self.max_evidence);
    }

    fn finish(self, ctx: &Ctx<'_>) -> Vec<Finding> {
        self.groups.into_iter().map(|g| g.merge(ctx)).collect()
    }
}

impl Group {
    /// An empty group for the story `m` tells.
    fn new(m: &Member) -> Self {
        let f = &m.finding;
        Group {
            kind: f.kind,
            single_vantage: f.single_vantage,
            numbers: (*f.numbers).clone(),
            severity: f.severity,
            many: m.many.clone(),
            n: 0,
            shown: Vec::new(),
            cutoff: None,
            connections: Vec::new(),
            silence: (f64::INFINITY, f64::NEG_INFINITY),
            retransmissions: 0,
            medians: Vec::new(),
            p95: None,
            slowest: None,
            stretched: (0, f64::INFINITY, f64::NEG_INFINITY),
            rst_marks: BTreeMap::new(),
        }
    }

    /// Adds a member, and the RSTs its evidence cites (`cited_rsts`).
    fn add(&mut self, m: Member, rsts: Vec<(CaptureName, RstMark)>, max_evidence: usize) {
        let key = (m.at, self.n);
        self.n += 1;
        let f = &m.finding;
        self.connections.extend(f.connections.iter().cloned());
        self.silence = (
            self.silence.0.min(m.silence_s),
            self.silence.1.max(m.silence_s),
        );
        self.retransmissions += f.numbers.retransmissions.unwrap_or(0);
        self.medians.extend(f.numbers.heartbeat_median_s);
        self.p95 = max_of(self.p95, f.numbers.heartbeat_p95_s);
        self.slowest = max_of(self.slowest, f.numbers.heartbeat_max_s);
        if let Some(s) = m.stretch_s {
            let (k, lo, hi) = self.stretched;
            self.stretched = (k + 1, lo.min(s), hi.max(s));
        }
        for (place, mark) in rsts {
            self.rst_marks
                .entry(place)
                .and_modify(|a| {
                    a.same_ttl &= a.first.0 == mark.0;
                    a.same_id &= a.first.1 == mark.1;
                })
                .or_insert(RstAgreement {
                    first: mark,
                    same_ttl: true,
                    same_id: true,
                });
        }
        if self.cutoff.is_some_and(|c| key > c) {
            return;
        }
        let i = self.shown.partition_point(|(k, _)| *k < key);
        self.shown.insert(i, (key, m));
        // Whole connections, so that each one shown tells its story (the first packet after
        // the silence and the RST answering it); at least one, which diagnose_with cuts if it
        // must.
        let mut items = 0;
        let fits = self.shown.iter().position(|(_, m)| {
            items += m.finding.evidence.len();
            items > max_evidence
        });
        if let Some(cut) = fits.map(|i| i.max(1)).filter(|&i| i < self.shown.len()) {
            let first_out = self.shown[cut].0;
            self.cutoff = Some(self.cutoff.map_or(first_out, |c| c.min(first_out)));
            self.shown.truncate(cut);
        }
    }

    /// One finding for the group: every connection listed, evidence from whole connections,
    /// the first in time, up to `max_evidence` items, Wireshark filters that show the first few
    /// connections whole and every cited frame, and the numbers that were per connection as
    /// ranges.
    fn merge(mut self, ctx: &Ctx<'_>) -> Finding {
        if self.n == 1 {
            return self.shown.pop().expect("a group has a member").1.finding;
        }
        let n = self.n;
        let shown = self.shown.len();
        let evidence: Vec<Evidence> = self
            .shown
            .iter()
            .flat_map(|(_, m)| m.finding.evidence.iter().cloned())
            .collect();
        let first = &self.shown[..shown.min(FILTER_CONNECTIONS)];
        let legs: Vec<Leg> = first
            .iter()
            .filter_map(|(_, m)| ctx.path(m.finding.connections.first()?))
            .flat_map(|p| p.legs().to_vec())
            .collect();
        let mut display_filters = display_filters(&evidence, &legs);
        display_filters.extend(rst_filters(std::mem::take(&mut self.rst_marks)));

        let (smin, smax) = self.silence;
        let retrans = self.retransmissions;
        let mut medians = self.medians;
        medians.sort_by(f64::total_cmp);
        let (med_lo, med_hi) = min_max(medians.iter().copied());
        let slowest = self.slowest;
        let with_numbers = |msg: &Msg| {
            msg.clone()
                .n("n", n)
                .m("silence", range(smin, smax, 3))
                .n("retrans", retrans)
                .m("median", range(med_lo, med_hi, 1))
                .s("slowest", fixed(slowest.unwrap_or(0.0), 1))
        };
        let many = &self.many;
        let mut explanation: Vec<Msg> = many.explanation.iter().map(with_numbers).collect();
        let (stretched, lo, hi) = self.stretched;
        if stretched > 0 {
            explanation.push(
                Msg::new("hb-stretch-many")
                    .n("stretched", stretched)
                    .m("median", range(lo, hi, 1)),
            );
        }
        if shown < n {
            explanation.push(Msg::new("group-evidence-first").n("shown", shown).n("n", n));
        }
        let head = &self.numbers;
        let numbers = Numbers {
            silence_s: head.silence_s.map(|_| round3(smin)),
            silence_max_s: head.silence_s.map(|_| round3(smax)),
            retransmissions: head.retransmissions.map(|_| retrans),
            heartbeat_median_s: (!medians.is_empty()).then(|| medians[medians.len() / 2]),
            heartbeat_p95_s: self.p95,
            heartbeat_max_s: slowest,
            ..head.clone()
        };
        Finding {
            id: String::new(),
            kind: self.kind,
            severity: self.severity,
            summary: String::new(),
            explanation: String::new(),
            connections: self.connections,
            evidence,
            display_filters,
            recommendation: String::new(),
            single_vantage: self.single_vantage,
            numbers: Box::new(numbers),
            text: FindingText {
                summary: many.summary.as_ref().map(with_numbers),
                explanation,
                recommendation: many.recommendation.clone(),
                hop: many.hop.clone(),
            },
        }
    }
}

fn max_of(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    }
}

/// A member's RSTs that its evidence cites, by capture.
fn cited_rsts(ctx: &Ctx<'_>, m: &Member) -> Vec<(CaptureName, RstMark)> {
    let Some(p) = m.finding.connections.first().and_then(|c| ctx.path(c)) else {
        return Vec::new();
    };
    p.legs()
        .iter()
        .filter_map(|leg| {
            let c = ctx.conn(leg);
            let t = c.termination.as_ref()?;
            let cited = m
                .finding
                .evidence
                .iter()
                .any(|e| *e.vantage == *leg.vantage && e.frame == t.frame);
            (t.kind == TerminationKind::Rst && cited)
                .then(|| ((leg.vantage.clone(), ctx.file(leg)), (t.ttl, t.ip_id)))
        })
        .collect()
}

/// For a group of resets, per capture, a filter on what the middlebox's RSTs share, which shows
/// every one of them at once where a filter per connection could not: the RST flag, and their
/// TTL and IP ID when all of the group's agree (nftables' `reject with tcp reset`: TTL 64,
/// IP ID 0). No filter for a capture where they differ.
fn rst_filters(
    marks: BTreeMap<CaptureName, RstAgreement>,
) -> impl Iterator<Item = super::DisplayFilter> {
    marks.into_iter().filter_map(|((vantage, file), a)| {
        if !a.same_ttl {
            return None;
        }
        let (ttl, id) = a.first;
        let mut filter = format!("tcp.flags.reset == 1 && ip.ttl == {ttl}");
        if let Some(id) = id.filter(|_| a.same_id) {
            filter.push_str(&format!(" && ip.id == {id}"));
        }
        Some(super::DisplayFilter {
            vantage,
            file,
            filter,
        })
    })
}

/// "8.006" or "8.006 to 133.407": a number that was one connection's, as a group's range.
fn range(min: f64, max: f64, digits: usize) -> Msg {
    let (a, b) = (fixed(min, digits), fixed(max, digits));
    if a == b {
        Msg::new("raw").s("v", a)
    } else {
        Msg::new("range").s("min", a).s("max", b)
    }
}

fn min_max(xs: impl Iterator<Item = f64>) -> (f64, f64) {
    xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    })
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

/// The IP ID pattern in words (English: its JSON name).
fn pattern_msg(p: crate::tcp::IpIdPattern) -> Msg {
    use crate::tcp::IpIdPattern;
    Msg::new(match p {
        IpIdPattern::None => "ipid-none",
        IpIdPattern::Zero => "ipid-zero",
        IpIdPattern::Incrementing => "ipid-incrementing",
        IpIdPattern::Random => "ipid-random",
    })
}

/// "between agent and softswitch", in English for the JSON and as a message for the words.
fn hop_between(a: &str, b: &str) -> (String, Msg) {
    (
        format!("between {a} and {b}"),
        Msg::new("hop-between").s("a", a).s("b", b),
    )
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
fn middlebox_end(ctx: &Ctx<'_>, p: &Path<'_>) -> Option<(Member, Death)> {
    if p.legs().len() < 2 {
        return None;
    }
    // The end as the client saw it: the first leg (client side) with a termination by resp,
    // or the last leg (server side) with a termination by orig.
    for sender in [Side::Resp, Side::Orig] {
        let order: Vec<&Leg> = match sender {
            Side::Resp => p.legs().iter().collect(),
            Side::Orig => p.legs().iter().rev().collect(),
        };
        // `order[0]` is the far end from the supposed sender, `order.last()` the sender's.
        let c0 = &ctx.conn(order[0]);
        let t0 = c0.termination.as_ref()?;
        if t0.by != sender {
            continue;
        }
        let t0_ref = ctx.reference_ts(order[0], t0.ts);
        // Walk toward the sender while the legs saw the same end from the sender. Nearer the
        // sender it passed earlier, by the hops' transit: a WAN hop takes tens of milliseconds
        // each way (55 ms on a synth behind a NAT, where `SAME_DECISION_S` alone took the
        // server's own FIN for a middlebox's); `PROVOKED_S` bounds any path's.
        let mut last_seen = 0;
        for (i, leg) in order.iter().enumerate().skip(1) {
            let c = &ctx.conn(leg);
            let saw = c.termination.as_ref().is_some_and(|t| {
                let slack = SAME_DECISION_S + bound_of(ctx, leg);
                let dt = ctx.reference_ts(leg, t.ts).secs_since(t0_ref);
                t.by == sender && dt <= slack && dt >= -(PROVOKED_S + slack)
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
        let cn = &ctx.conn(next);
        let (a, b) = (order[last_seen], next);
        let (hop, hop_msg) = hop_between(&a.vantage, &b.vantage);
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
        let mut evidence = vec![];
        for leg in &order[..=last_seen] {
            let c = ctx.conn(leg);
            let t = c.termination.as_ref()?;
            let misfit = if t.ttl_fits == Some(false) || t.ip_id_fits == Some(false) {
                Msg::new("ev-sender-usual")
                    .s("ttl", t.sender_usual.ttl_usual)
                    .m("pattern", pattern_msg(t.sender_usual.ip_id_pattern))
            } else {
                empty()
            };
            let what = Msg::new("ev-end-from-side")
                .s("kind", kind_word(t.kind))
                .m("side", side_msg(sender))
                .s(
                    "addr",
                    if sender == Side::Resp {
                        leg.dst
                    } else {
                        leg.src
                    },
                )
                .s(
                    "port",
                    if sender == Side::Resp {
                        leg.dport
                    } else {
                        leg.sport
                    },
                )
                .s("ttl", t.ttl)
                .s("ipid", t.ip_id.map_or("-".into(), |i| i.to_string()))
                .s("window", t.window)
                .m("misfit", misfit);
            evidence.push(ctx.evidence(leg, t.frame, t.ts, what));
        }
        // What the sender's side shows instead.
        let what_instead = match cn.termination.as_ref() {
            Some(t) if t.by != sender => {
                evidence.push(
                    ctx.evidence(
                        next,
                        t.frame,
                        t.ts,
                        Msg::new("ev-never-sent")
                            .m("side", side_msg(sender))
                            .s("kind", kind_word(t.kind))
                            .m("by", side_msg(t.by)),
                    ),
                );
                Msg::new("mb-instead-received")
                    .s("vantage", &next.vantage)
                    .m("side", side_msg(sender))
                    .s("kind", kind_word(t.kind))
            }
            _ => {
                evidence.push(
                    ctx.evidence(
                        next,
                        cn.last_frame,
                        cn.last_ts,
                        Msg::new("ev-last-here-no-end")
                            .s("kind", kind_word(t0.kind))
                            .m("side", side_msg(sender)),
                    ),
                );
                Msg::new("mb-instead-quiet")
                    .s("vantage", &next.vantage)
                    .s("kind", kind_word(t0.kind))
                    .m("side", side_msg(sender))
            }
        };
        // The silence that preceded it, and whether the middlebox acted on a timer.
        let fatal = silence_before(c0, t0.frame, t0.ts);
        let at_timer = t0.idle_before_s >= MIN_IDLE_S;
        let silence = fatal.map(|g| g.secs).unwrap_or(t0.idle_before_s);
        let last_good = fatal.map_or(t0_ref, |g| ctx.reference_ts(order[0], g.from_ts));
        if let Some(g) = fatal {
            if !at_timer {
                evidence.push(
                    ctx.evidence(
                        order[0],
                        g.to_frame,
                        Timestamp(g.from_ts.0 + (g.secs * 1e9) as i64),
                        Msg::new("ev-first-after-silence-answered")
                            .s("secs", fixed(g.secs, 3))
                            .m("side", side_msg(g.by))
                            .s("kind", kind_word(t0.kind)),
                    ),
                );
            }
        }
        let word = match kind {
            FindingKind::MiddleboxClose => "mb-word-closed",
            _ => "mb-word-reset",
        };
        let summary = Msg::new("mb-summary")
            .s("conn", p.lined.id)
            .m("hop", hop_msg.clone())
            .m("word", Msg::new(word))
            .s("silence", fixed(silence, 3))
            .m("side", side_msg(sender))
            .s("kind", kind_word(t0.kind));
        let summary_many = Msg::new("mb-summary-many")
            .m("hop", hop_msg.clone())
            .m("word", Msg::new(word))
            .m("side", side_msg(sender))
            .s("kind", kind_word(t0.kind));
        let mut explanation = vec![Msg::new("mb-explain")
            .s("kind", kind_word(t0.kind))
            .s("vantage", &order[0].vantage)
            .m("side", side_msg(sender))
            .m("instead", what_instead)
            .m("hop", hop_msg.clone())];
        match p.lined.matched.method {
            MatchMethod::Stream => explanation.push(Msg::new("mb-proxy-tcp")),
            MatchMethod::L7Proxy => explanation.push(Msg::new("mb-proxy-l7")),
            _ => {}
        }
        let how = Msg::new(if at_timer {
            "mb-at-timer"
        } else {
            "mb-next-packet"
        });
        // A group says the same, with its range of silences.
        let mut explanation_many = explanation.clone();
        explanation_many.push(how.clone());
        explanation.push(how.s("silence", fixed(silence, 3)));
        let display_filters = display_filters(&evidence, p.legs());
        let f = Finding {
            id: String::new(),
            kind,
            severity: Severity::Critical,
            summary: String::new(),
            explanation: String::new(),
            connections: vec![p.lined.id],
            evidence,
            display_filters,
            recommendation: String::new(),
            single_vantage: false,
            numbers: Box::new(Numbers {
                hop: Some(hop.clone()),
                silence_s: Some(round3(silence)),
                acts: Some(if at_timer { "timer" } else { "next_packet" }),
                ..Numbers::default()
            }),
            text: FindingText {
                summary: Some(summary),
                explanation,
                recommendation: Some(Msg::new("mb-rec")),
                hop: Some(hop_msg.clone()),
            },
        };
        let m = Member {
            finding: f,
            at: t0_ref,
            silence_s: silence,
            stretch_s: None,
            many: FindingText {
                summary: Some(summary_many),
                explanation: explanation_many,
                recommendation: Some(Msg::new("mb-rec")),
                hop: Some(hop_msg.clone()),
            },
        };
        let d = Death {
            conn: p.lined.id,
            silence_s: silence,
            at_timer,
            survived_s: fatal.and_then(|g| survived(c0, &g)),
            hop: hop.into(),
            hop_msg: Arc::new(hop_msg),
            at: t0_ref,
            last_good,
        };
        return Some((m, d));
    }
    None
}

fn bound_of(ctx: &Ctx<'_>, leg: &Leg) -> f64 {
    ctx.al
        .clock_offsets
        .iter()
        .find(|o| *o.vantage == *leg.vantage)
        .map_or(0.0, |o| o.bound_s)
}

/// **middlebox_reset, at one vantage.** Without a capture at the supposed sender, a RST is
/// blamed on a middlebox only when two things agree: its fingerprint does not fit its supposed
/// sender's other packets (another TTL, or an IP ID that breaks the sender's counter: Linux's
/// `reject with tcp reset` sends IP ID 0 and TTL 64), and its timing fits an idle expiry (it
/// answers the first packet after a silence). Either alone is too weak: TTLs change with routes,
/// and endpoints do reset idle connections.
fn middlebox_reset_single(ctx: &Ctx<'_>, p: &Path<'_>) -> Option<(Member, Death)> {
    if p.legs().len() > 1 {
        return None;
    }
    let leg = &p.legs()[0];
    let c = &ctx.conn(leg);
    let (t, fatal) = reset_after_silence(c)?;
    let at = ctx.reference_ts(leg, t.ts);
    let evidence = vec![
        ctx.evidence(
            leg,
            fatal.to_frame,
            Timestamp(fatal.from_ts.0 + (fatal.secs * 1e9) as i64),
            Msg::new("ev-first-after-silence")
                .s("secs", fixed(fatal.secs, 3))
                .m("side", side_msg(fatal.by)),
        ),
        ctx.evidence(
            leg,
            t.frame,
            t.ts,
            Msg::new("ev-rst-misfit")
                .m("side", side_msg(t.by))
                .s("ttl", t.ttl)
                .s("ttl_usual", t.sender_usual.ttl_usual)
                .s("ipid", t.ip_id.map_or("-".into(), |i| i.to_string()))
                .m("pattern", pattern_msg(t.sender_usual.ip_id_pattern))
                .s("window", t.window)
                .s("options", t.options_len),
        ),
    ];
    let display_filters = display_filters(&evidence, p.legs());
    let hop = format!("between {} and the {}", leg.vantage, side_name(t.by));
    let hop_msg = Msg::new("hop-between-side")
        .s("vantage", &leg.vantage)
        .m("side", side_msg(t.by));
    let f = Finding {
        id: String::new(),
        kind: FindingKind::MiddleboxReset,
        severity: Severity::Critical,
        summary: String::new(),
        explanation: String::new(),
        connections: vec![p.lined.id],
        evidence,
        display_filters,
        recommendation: String::new(),
        single_vantage: true,
        numbers: Box::new(Numbers {
            hop: Some(hop.clone()),
            silence_s: Some(round3(fatal.secs)),
            acts: Some("next_packet"),
            ..Numbers::default()
        }),
        text: FindingText {
            summary: Some(
                Msg::new("single-summary")
                    .s("conn", p.lined.id)
                    .s("silence", fixed(fatal.secs, 3))
                    .m("side", side_msg(t.by)),
            ),
            explanation: vec![Msg::new("single-explain")
                .s("vantage", &leg.vantage)
                .s("silence", fixed(fatal.secs, 3))
                .m("side", side_msg(t.by))],
            recommendation: Some(Msg::new("single-rec")),
            hop: Some(hop_msg.clone()),
        },
    };
    let m = Member {
        finding: f,
        at,
        silence_s: fatal.secs,
        stretch_s: None,
        many: FindingText {
            summary: Some(Msg::new("single-summary-many").m("side", side_msg(t.by))),
            explanation: vec![Msg::new("single-explain-many")
                .s("vantage", &leg.vantage)
                .m("side", side_msg(t.by))],
            recommendation: Some(Msg::new("single-rec")),
            hop: Some(hop_msg.clone()),
        },
    };
    let d = Death {
        conn: p.lined.id,
        silence_s: fatal.secs,
        at_timer: false,
        survived_s: survived(c, &fatal),
        hop: hop.into(),
        hop_msg: Arc::new(hop_msg),
        at,
        last_good: ctx.reference_ts(leg, fatal.from_ts),
    };
    Some((m, d))
}

/// The RST `middlebox_reset_single` blames on a middlebox, and the silence it answered: a
/// fingerprint that does not fit its sender, after a silence the other side broke.
fn reset_after_silence(c: &Connection) -> Option<(&Termination, Gap)> {
    let t = c.termination.as_ref()?;
    if t.kind != TerminationKind::Rst {
        return None;
    }
    let misfit = t.ttl_fits == Some(false) || t.ip_id_fits == Some(false);
    let fatal = silence_before(c, t.frame, t.ts)?;
    if !misfit || fatal.by == t.by {
        return None;
    }
    Some((t, fatal))
}

/// **silent_drop.** After a silence, one end sends, retransmits (Wireshark's rule), and hears
/// nothing back until it gives up or resets: the middlebox forgot the connection without a word
/// (nftables `drop`, many cloud NATs). With a capture downstream, the retransmissions are shown
/// never to arrive there.
fn silent_drop(ctx: &Ctx<'_>, p: &Path<'_>) -> Option<(Member, Death)> {
    for (idx, leg) in p.legs().iter().enumerate() {
        let c = &ctx.conn(leg);
        for sender in [Side::Orig, Side::Resp] {
            let Some((fatal, after)) = unanswered_after_silence(c, sender) else {
                continue;
            };
            // Downstream (toward the other side), did anything arrive after the silence?
            let downstream: Vec<&Leg> = match sender {
                Side::Orig => p.legs()[idx + 1..].iter().collect(),
                Side::Resp => p.legs()[..idx].iter().rev().collect(),
            };
            let silence_end = Timestamp(fatal.from_ts.0 + (fatal.secs * 1e9) as i64);
            let silence_end_ref = ctx.reference_ts(leg, silence_end);
            let mut evidence = vec![ctx.evidence(
                leg,
                fatal.to_frame,
                silence_end,
                Msg::new("ev-first-after-silence")
                    .s("secs", fixed(fatal.secs, 3))
                    .m("side", side_msg(sender)),
            )];
            for s in &after {
                evidence.push(ctx.evidence(
                    leg,
                    s.frame,
                    s.ts,
                    Msg::new("ev-retrans-no-answer").s("secs", secs3(s.ts.secs_since(silence_end))),
                ));
            }
            let mut confirmed = None;
            for d in &downstream {
                let dc = &ctx.conn(d);
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
                        Msg::new("ev-last-nothing-arrived").m("side", side_msg(sender)),
                    ));
                    confirmed = Some(*d);
                    break;
                }
            }
            let (hop, hop_msg) = match confirmed {
                Some(d) => {
                    let prev = if sender == Side::Orig {
                        &p.legs()[p.legs().iter().position(|l| l.at == d.at)? - 1]
                    } else {
                        &p.legs()[p.legs().iter().position(|l| l.at == d.at)? + 1]
                    };
                    hop_between(&prev.vantage, &d.vantage)
                }
                None => (
                    format!(
                        "beyond {}, toward the {}",
                        leg.vantage,
                        side_name(other(sender))
                    ),
                    Msg::new("hop-beyond")
                        .s("vantage", &leg.vantage)
                        .m("side", side_msg(other(sender))),
                ),
            };
            let end = match c.termination.as_ref() {
                Some(t) if t.by == sender => Msg::new("sd-end-gave-up")
                    .m("side", side_msg(sender))
                    .s("kind", kind_word(t.kind)),
                Some(t) => Msg::new("sd-end-arrived").s("kind", kind_word(t.kind)),
                None => Msg::new("sd-end-capture"),
            };
            let display_filters = display_filters(&evidence, p.legs());
            let confirmed_msg = Msg::new(if confirmed.is_some() {
                "sd-confirmed"
            } else {
                "sd-unconfirmed"
            });
            let many = FindingText {
                summary: Some(
                    Msg::new("sd-summary-many")
                        .m("side", side_msg(sender))
                        .m("hop", hop_msg.clone()),
                ),
                explanation: vec![
                    Msg::new("sd-explain-many")
                        .s("vantage", &leg.vantage)
                        .m("side", side_msg(sender))
                        .m("end", end.clone()),
                    confirmed_msg.clone(),
                ],
                recommendation: Some(Msg::new("sd-rec")),
                hop: Some(hop_msg.clone()),
            };
            let f = Finding {
                id: String::new(),
                kind: FindingKind::SilentDrop,
                severity: Severity::Critical,
                summary: String::new(),
                explanation: String::new(),
                connections: vec![p.lined.id],
                evidence,
                display_filters,
                recommendation: String::new(),
                single_vantage: confirmed.is_none(),
                numbers: Box::new(Numbers {
                    hop: Some(hop.clone()),
                    silence_s: Some(round3(fatal.secs)),
                    retransmissions: Some(after.len() as u64),
                    acts: Some("next_packet"),
                    ..Numbers::default()
                }),
                text: FindingText {
                    summary: Some(
                        Msg::new("sd-summary")
                            .s("conn", p.lined.id)
                            .s("silence", fixed(fatal.secs, 3))
                            .m("side", side_msg(sender))
                            .m("hop", hop_msg.clone())
                            .n("n", after.len()),
                    ),
                    explanation: vec![
                        Msg::new("sd-explain")
                            .s("vantage", &leg.vantage)
                            .m("side", side_msg(sender))
                            .s("silence", fixed(fatal.secs, 3))
                            .n("n", after.len())
                            .m("end", end),
                        confirmed_msg,
                    ],
                    recommendation: Some(Msg::new("sd-rec")),
                    hop: Some(hop_msg.clone()),
                },
            };
            let d = Death {
                conn: p.lined.id,
                silence_s: fatal.secs,
                at_timer: false,
                survived_s: survived(c, &fatal),
                hop: hop.into(),
                hop_msg: Arc::new(hop_msg),
                at: silence_end_ref,
                last_good: ctx.reference_ts(leg, fatal.from_ts),
            };
            let m = Member {
                finding: f,
                at: silence_end_ref,
                silence_s: fatal.secs,
                stretch_s: None,
                many,
            };
            return Some((m, d));
        }
    }
    None
}

/// `silent_drop`'s pattern at one leg: a silence broken by `sender`, followed by
/// retransmissions of what it sent after it, and by nothing at all from the other side. The
/// silence, and those retransmissions.
fn unanswered_after_silence(c: &Connection, sender: Side) -> Option<(Gap, Vec<&Sample>)> {
    let (mine, theirs) = match sender {
        Side::Orig => (&c.orig, &c.resp),
        Side::Resp => (&c.resp, &c.orig),
    };
    let mut silences: Vec<Gap> = c
        .silences
        .iter()
        .filter(|g| g.by == sender && g.secs >= MIN_IDLE_S)
        .copied()
        .collect();
    silences.sort_by_key(|g| g.to_frame);
    silences.iter().find_map(|g| {
        let unanswered = theirs.last_ts.is_none_or(|t| t <= g.from_ts);
        let after = || mine.retransmitted.iter().filter(|s| s.frame >= g.to_frame);
        // Counted before collected: the tracker asks this of every connection it summarises
        // (`kept_as`), and a list built to be thrown away was 0.7 % of a diagnosis.
        (unanswered && after().nth(1).is_some()).then(|| (*g, after().collect()))
    })
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
    // The longest below the shortest fatal one, folded as they are read: a list of them all
    // was up to six a connection, 4.5 M at 20 GB.
    let mut lower_survived: Option<f64> = None;
    let mut survived = |s: f64| {
        if s < min {
            lower_survived = Some(lower_survived.map_or(s, |m| m.max(s)));
        }
    };
    group
        .iter()
        .filter_map(|d| d.survived_s)
        .for_each(&mut survived);
    for p in ctx.paths() {
        let p = &p;
        if dead.contains(p.lined.id.as_str()) {
            continue;
        }
        for leg in p.legs() {
            let c = ctx.reads(leg);
            if c.proto() != Proto::Tcp {
                continue;
            }
            c.survived().for_each(&mut survived);
        }
    }
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
    let hop = group[0].hop.to_string();
    let hop_msg = Msg::clone(&group[0].hop_msg);
    let n = group.len();
    let summary = if at_timer {
        Msg::new("it-timer-summary")
            .m("hop", hop_msg.clone())
            .s("estimate", fixed(estimate, 1))
            .s("pm", fixed((spread / 2.0).max(0.05), 1))
            .n("n", n)
    } else {
        Msg::new("it-next-summary")
            .m("hop", hop_msg.clone())
            .s("lower", fixed(lower, 1))
            .s("upper", fixed(upper, 1))
            .n("n", n)
    };
    let explanation = if at_timer {
        if n == 1 {
            Msg::new("it-timer-one")
                .s("min", fixed(min, 3))
                .s("estimate", fixed(estimate, 2))
        } else {
            Msg::new("it-timer-many")
                .s("min", fixed(min, 3))
                .s("max", fixed(max, 3))
                .s("estimate", fixed(estimate, 2))
        }
    } else {
        Msg::new("it-next")
            .s("upper", fixed(upper, 3))
            .m(
                "shortest",
                if n > 1 {
                    Msg::new("it-shortest")
                } else {
                    empty()
                },
            )
            .m(
                "rest",
                match lower_survived {
                    Some(l) => Msg::new("it-survived").s("l", fixed(l, 3)),
                    None => Msg::new("it-no-lower"),
                },
            )
    };
    let recommendation = Msg::new("it-rec")
        .s(
            "secs",
            fixed(
                if at_timer { estimate / 2.0 } else { lower }
                    .max(1.0)
                    .floor(),
                0,
            ),
        )
        .m(
            "how",
            Msg::new(if at_timer {
                "it-how-half"
            } else {
                "it-how-survived"
            }),
        );
    let evidence: Vec<Evidence> = Vec::new();
    Some(Finding {
        id: String::new(),
        kind: FindingKind::IdleTimeout,
        severity: Severity::Critical,
        summary: String::new(),
        explanation: String::new(),
        connections: group.iter().map(|d| d.conn).collect(),
        evidence,
        display_filters: vec![],
        recommendation: String::new(),
        text: FindingText {
            summary: Some(summary),
            explanation: vec![explanation],
            recommendation: Some(recommendation),
            hop: Some(hop_msg),
        },
        single_vantage: !ctx.multi_vantage(),
        numbers: Box::new(Numbers {
            estimate_s: Some(round3(estimate)),
            lower_s: Some(round3(lower)),
            upper_s: Some(round3(upper)),
            spread_s: Some(round3(spread)),
            samples: Some(n),
            acts: Some(if at_timer { "timer" } else { "next_packet" }),
            known_defaults: known,
            hop: Some(hop),
            ..Numbers::default()
        }),
    })
}

/// **half_open.** One end never learned the connection died: the client's side ended (a RST
/// from the middlebox, or its own give-up after a silent drop) while the capture nearest the
/// server shows the server holding on, until the capture ends or until its own later packet
/// meets the middlebox. Both durations are given: how long each side believed in it after the
/// middlebox had dropped it.
fn half_open(ctx: &Ctx<'_>, deaths: &[Death], out: &mut FindingSink<'_>) {
    for d in deaths {
        let Some(p) = ctx.path(&d.conn) else {
            continue;
        };
        if p.legs().len() < 2 {
            continue;
        }
        let client_leg = &p.legs()[0];
        let server_leg = p.legs().last().expect("two legs");
        let cc = &ctx.conn(client_leg);
        let sc = &ctx.conn(server_leg);
        let client_end = cc
            .termination
            .as_ref()
            .map_or(ctx.reference_ts(client_leg, cc.last_ts), |t| {
                ctx.reference_ts(client_leg, t.ts)
            });
        let (server_end, how) = match sc.termination.as_ref() {
            Some(t) => (
                ctx.reference_ts(server_leg, t.ts),
                Msg::new("ho-until-own")
                    .s("kind", kind_word(t.kind))
                    .s("frame", t.frame),
            ),
            None => (
                ctx.capture_end(server_leg).unwrap_or(client_end),
                Msg::new("ho-until-capture-end"),
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
                Msg::new("ev-client-end"),
            ),
            ctx.evidence(
                server_leg,
                sc.termination.as_ref().map_or(sc.last_frame, |t| t.frame),
                sc.termination.as_ref().map_or(sc.last_ts, |t| t.ts),
                Msg::new("ev-server-holds").m("how", how.clone()),
            ),
        ];
        let display_filters = display_filters(&evidence, p.legs());
        out.push(Finding {
            id: String::new(),
            kind: FindingKind::HalfOpen,
            severity: Severity::Warning,
            summary: String::new(),
            explanation: String::new(),
            text: FindingText {
                summary: Some(
                    Msg::new("ho-summary")
                        .s("conn", d.conn)
                        .s("lag", fixed(lag, 1))
                        .m("how", how),
                ),
                explanation: vec![Msg::new("ho-explain")
                    .s("client", fixed(client_believed, 1))
                    .s("server", fixed(server_believed, 1))],
                recommendation: Some(Msg::new("ho-rec")),
                hop: None,
            },
            connections: vec![d.conn],
            evidence,
            display_filters,
            recommendation: String::new(),
            single_vantage: false,
            numbers: Box::new(Numbers {
                client_believed_s: Some(round3(client_believed)),
                server_believed_s: Some(round3(server_believed)),
                ..Numbers::default()
            }),
        });
    }
}

/// **l7_proxy.** The same messages travel on two TCP connections at different stream offsets:
/// an HTTP/WebSocket proxy terminates TCP in the path and rewrote the upgrade (adding
/// X-Forwarded-For, say). For such a path the timeout that matters is the proxy's read/idle
/// timeout (nginx `proxy_read_timeout`, default 60 s), not a TCP or NAT timer. (A TCP proxy that
/// relays the bytes unchanged, such as HAProxy in mode tcp, is not layer 7; the middlebox rules
/// name it where it ends a connection.)
fn l7_proxy(ctx: &Ctx<'_>) -> Option<Finding> {
    if !ctx.multi_vantage() {
        // One capture's connections are each alone, never `L7Proxy` (`align::Lines`).
        return None;
    }
    let proxied: Vec<Path<'_>> = ctx
        .paths()
        .filter(|p| p.lined.matched.method == MatchMethod::L7Proxy)
        .collect();
    if proxied.is_empty() {
        return None;
    }
    let mut evidence = Vec::new();
    for p in proxied.iter().take(5) {
        for (i, leg) in p.legs().iter().enumerate() {
            let c = &ctx.conn(leg);
            evidence.push(
                ctx.evidence(
                    leg,
                    c.first_frame,
                    c.ts,
                    Msg::new("ev-l7-conn")
                        .m(
                            "which",
                            Msg::new(if i == 0 {
                                "l7-client-side"
                            } else {
                                "l7-proxied"
                            }),
                        )
                        .s("src", leg.src)
                        .s("sport", leg.sport)
                        .s("dst", leg.dst)
                        .s("dport", leg.dport),
                ),
            );
        }
    }
    // As a group's (`Grouper`): the first few connections whole, and every cited frame (every
    // proxied connection's conversation would be a filter as long as the capture is busy).
    let legs: Vec<&Leg> = proxied
        .iter()
        .take(FILTER_CONNECTIONS)
        .flat_map(|p| p.legs().iter())
        .collect();
    let display_filters = display_filters(&evidence, &legs);
    Some(Finding {
        id: String::new(),
        kind: FindingKind::L7Proxy,
        severity: Severity::Info,
        summary: String::new(),
        explanation: String::new(),
        text: FindingText {
            summary: Some(Msg::new("l7-summary").n("n", proxied.len())),
            explanation: vec![Msg::new("l7-explain")],
            recommendation: Some(Msg::new("l7-rec")),
            hop: None,
        },
        connections: proxied.iter().map(|p| p.lined.id).collect(),
        evidence,
        display_filters,
        recommendation: String::new(),
        single_vantage: false,
        numbers: Box::default(),
    })
}

/// **weak_network.** Real loss or delay without a middlebox ending: retransmissions on
/// connections no middlebox killed, and losses placed on a hop by the alignment. This is what
/// tells "a bad network" from "a bad balancer". Retransmissions into a black hole after a silence
/// are excluded (they belong to silent_drop).
fn weak_network(ctx: &Ctx<'_>, deaths: &[Death], max_evidence: usize) -> Option<Finding> {
    let dead: std::collections::HashSet<&str> = deaths.iter().map(|d| d.conn.as_str()).collect();
    let mut retrans = 0u64;
    let mut data_segments = 0u64;
    // Cut to what the report shows as it comes: the filters below cite its frames, and on the
    // 200 MB synth, citing every retransmission of all 1 519 connections made a 175 KB filter
    // no one could paste into Wireshark.
    let mut evidence = FirstEvidence::new(max_evidence);
    let mut conns = Vec::new();
    for p in ctx.paths() {
        let p = &p;
        if dead.contains(p.lined.id.as_str()) {
            continue;
        }
        // The client-side leg is the one the users' experience is measured at.
        let leg = &p.legs()[0];
        let c = ctx.reads(leg);
        if c.proto() != Proto::Tcp {
            continue;
        }
        let r = c.retransmissions();
        data_segments += c.data_segments();
        if r > 0 {
            retrans += r;
            conns.push(p.lined.id);
            for (ts, frame) in c.retransmitted() {
                evidence.push(ctx.evidence(leg, frame, ts, Msg::new("ev-retransmission")));
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
    let hops: Vec<Msg> = ctx
        .al
        .losses
        .iter()
        .map(|h| {
            Msg::new("wn-hop-lost")
                .n("n", h.segments)
                .s("from", &h.from)
                .s("to", &h.to)
                .m(
                    "direction",
                    Msg::new(if h.direction == "server_to_client" {
                        "dir-server-to-client"
                    } else {
                        "dir-client-to-server"
                    }),
                )
        })
        .collect();
    let rate = if data_segments > 0 {
        retrans as f64 / data_segments as f64
    } else {
        0.0
    };
    let mut explanation = vec![Msg::new("wn-explain").s("rate", fixed(rate * 100.0, 1))];
    let evidence = evidence.finish(&mut explanation);
    // As a group's (`Grouper`): the first few connections (by start) whole, and every cited
    // frame.
    let display_filters = {
        let legs: Vec<Leg> = conns
            .iter()
            .take(FILTER_CONNECTIONS)
            .filter_map(|c| ctx.path(c))
            .flat_map(|p| p.legs().to_vec())
            .collect();
        display_filters(&evidence, &legs)
            .into_iter()
            .map(|mut f| {
                f.filter = format!("({}) && tcp.analysis.retransmission", f.filter);
                f
            })
            .collect()
    };
    Some(Finding {
        id: String::new(),
        kind: FindingKind::WeakNetwork,
        severity: Severity::Warning,
        summary: String::new(),
        explanation: String::new(),
        text: FindingText {
            summary: Some(
                Msg::new("wn-summary")
                    .n("retrans", retrans)
                    .n("n", conns.len())
                    .m(
                        "hops",
                        if hops.is_empty() {
                            empty()
                        } else {
                            Msg::new("wn-hops").list_with("list", crate::i18n::Sep::Clause, hops)
                        },
                    ),
            ),
            explanation,
            recommendation: Some(Msg::new("wn-rec")),
            hop: None,
        },
        connections: conns,
        evidence,
        display_filters,
        recommendation: String::new(),
        single_vantage: !ctx.multi_vantage(),
        numbers: Box::new(Numbers {
            retransmissions: Some(retrans),
            lost_segments: (lost > 0).then_some(lost),
            ..Numbers::default()
        }),
    })
}

/// **agent_outage.** Per client address, the windows in which it had no working signalling
/// connection: from the last good packet of the dead connection to the first answer from the
/// server on the next one (the WebSocket 101, and the REGISTER's 200 once SIP is parsed). With
/// the number of reconnect attempts, failed handshakes, the back-off between attempts, and the
/// detection delay: from the middlebox's act to the client's first reaction (its own FIN/RST, or
/// a new SYN). A silent drop is noticed only when the page's heartbeat check fires (45 s in the
/// incident that started this project).
fn agent_outage(ctx: &Ctx<'_>, deaths: &[OutageStart], out: &mut FindingSink<'_>) {
    // One window per death, keyed by agent (vantage and client address), then one finding per
    // agent: an agent that lost its connection five times is one story, not five. Agents in
    // order of their first window, each agent's windows in order. The deaths are grouped by
    // agent first (a counting sort of their indices: a scan of every window for each agent was
    // quadratic, 10 000 agents in the 2 GB synth), then each agent's windows made in turn and
    // merged into its finding, which goes out before the next agent's is begun: one agent's
    // windows are in memory at a time. Made in the deaths' order and merged at the end, every
    // agent's finding waited for the last death: ~120 MB of the 20 GB synth's rules peak.
    let agent = |d: &OutageStart| {
        let p = ctx.path(&d.conn)?;
        let leg = &p.legs()[0];
        // A leg's `src` is its connection's originator (`align::Leg`): no read of it whole.
        Some((leg.at.0, leg.src))
    };
    // Each death's agent, by the order of the agent's first death; none: no path.
    let mut ranks: HashMap<(usize, std::net::IpAddr), u32> = HashMap::new();
    let rank_of: Vec<Option<u32>> = deaths
        .iter()
        .map(|d| {
            let next = ranks.len() as u32;
            agent(d).map(|a| *ranks.entry(a).or_insert(next))
        })
        .collect();
    let agents = ranks.len();
    drop(ranks);
    // Agent r's deaths are `by_agent[start[r]..start[r + 1]]`, in their order.
    let mut start = vec![0usize; agents + 1];
    for r in rank_of.iter().flatten() {
        start[*r as usize + 1] += 1;
    }
    for r in 0..agents {
        start[r + 1] += start[r];
    }
    let mut fill = start.clone();
    let mut by_agent = vec![0u32; start[agents]];
    for (i, r) in rank_of.iter().enumerate() {
        if let Some(r) = r {
            by_agent[fill[*r as usize]] = i as u32;
            fill[*r as usize] += 1;
        }
    }
    drop((rank_of, fill));
    // An agent's finding goes where its first window (the first of its deaths whose outage has
    // an end: `window`) puts it among the rules' findings, as when the windows were made in the
    // deaths' order.
    let key = out.reserve(deaths.len());
    for r in 0..agents {
        let group = &by_agent[start[r]..start[r + 1]];
        let mut outages: Option<AgentOutages> = None;
        for &i in group {
            let d = &deaths[i as usize];
            let Some(finding) = window(ctx, d) else {
                continue;
            };
            match &mut outages {
                Some(a) => a.add(finding, d.conn),
                None => {
                    let mut finding = finding;
                    // Room for all its windows, made once (grown as they came, its lists had up
                    // to twice the room they needed: ~15 MB of the 20 GB synth's rules peak,
                    // whose agents lost their connection ~7 times). At most: a window is left
                    // out when its end is unknown.
                    let more = group.len() - 1;
                    if more > 0 {
                        finding.connections.reserve_exact(more);
                        // Two items a window at most: the end, and the first answer after it.
                        finding.evidence.reserve_exact(2 * more);
                        finding.text.explanation.reserve_exact(more);
                    }
                    outages = Some(AgentOutages {
                        key: key + u64::from(i),
                        line: d.conn,
                        later: Vec::with_capacity(more),
                        first: finding,
                    });
                }
            }
        }
        if let Some(a) = outages {
            let key = a.key;
            out.push_at(a.merge(ctx), key);
        }
    }
}

/// One death's outage window, as a finding of its own; none when its end is unknown (no
/// recovery, and no end of the capture).
fn window(ctx: &Ctx<'_>, d: &OutageStart) -> Option<Finding> {
    let p = ctx.path(&d.conn)?;
    let leg = &p.legs()[0];
    let c = &ctx.conn(leg);
    // The same client's later connections to the same server, at the same vantage, read
    // only as far as the first that recovered.
    let mut later = ctx
        .client_connections_after(leg, c.ts)
        .map(|q| {
            let leg = q.legs()[0].clone();
            let reads = ctx.reads(&leg);
            (leg, reads)
        })
        .peekable();
    // Detection: the client's first reaction after the middlebox acted.
    let own_end = c
        .termination
        .as_ref()
        .filter(|t| t.by == Side::Orig)
        .map(|t| ctx.reference_ts(leg, t.ts));
    let first_syn = later.peek().map(|(l, k)| ctx.reference_ts(l, k.ts()));
    let reaction = match (own_end, first_syn) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    // Recovery: the first later connection on which the server answered with data.
    let mut attempts = 0;
    let mut failed = 0;
    let mut syns = Vec::new();
    let mut recovered: Option<(Timestamp, Leg, u64)> = None;
    for (l, k) in later {
        attempts += 1;
        syns.push(ctx.reference_ts(&l, k.ts()));
        match k.recovery() {
            Some((ts, frame)) => {
                recovered = Some((ctx.reference_ts(&l, ts), l, frame));
                break;
            }
            None => failed += 1,
        }
    }
    let end = recovered.as_ref().map(|r| r.0).or(ctx.capture_end(leg));
    let end = end?;
    let outage = end.secs_since(d.last_good);
    let detection = reaction.map(|r| r.secs_since(d.at));
    let mut backoff = vec![];
    let mut prev = own_end.unwrap_or(d.at);
    for s in &syns {
        backoff.push(round3(s.secs_since(prev)));
        prev = *s;
    }
    // Room for the two items it can have: `vec![..]` and a push made room for four, ~2 MB
    // of the 2 GB synth's ten thousand agent outages.
    let mut evidence = Vec::with_capacity(2);
    evidence.push(ctx.evidence(
        leg,
        c.termination.as_ref().map_or(c.last_frame, |t| t.frame),
        c.termination.as_ref().map_or(c.last_ts, |t| t.ts),
        Msg::new("ev-signalling-ends"),
    ));
    if let Some((t, l, frame)) = &recovered {
        evidence.push(Evidence {
            vantage: l.vantage.clone(),
            file: ctx.file(l),
            frame: *frame,
            ts: *t,
            what: String::new(),
            what_msg: Some(Msg::new("ev-first-answer")),
        });
    }
    let display_filters = display_filters(&evidence, &[leg]);
    let finding = Finding {
        id: String::new(),
        kind: FindingKind::AgentOutage,
        severity: Severity::Critical,
        summary: String::new(),
        explanation: String::new(),
        text: FindingText {
            summary: Some(
                Msg::new("ao-summary")
                    .s("agent", c.orig_h)
                    .s("outage", fixed(outage, 1))
                    .n("n", attempts)
                    .m(
                        "noticed",
                        match detection {
                            Some(x) => Msg::new("ao-noticed").s("secs", fixed(x, 1)),
                            None => empty(),
                        },
                    ),
            ),
            explanation: vec![Msg::new("ao-explain")
                .s("conn", d.conn)
                .m(
                    "none",
                    if recovered.is_none() {
                        Msg::new("ao-none-before-end")
                    } else {
                        empty()
                    },
                )
                .n("attempts", attempts)
                .n("failed", failed)],
            recommendation: Some(Msg::new("ao-rec")),
            hop: None,
        },
        connections: vec![d.conn],
        evidence,
        display_filters,
        recommendation: String::new(),
        single_vantage: !ctx.multi_vantage(),
        numbers: Box::new(Numbers {
            outage_s: Some(round3(outage)),
            reconnect_attempts: Some(attempts),
            failed_handshakes: Some(failed),
            detection_delay_s: detection.map(round3),
            backoff_s: backoff,
            ..Numbers::default()
        }),
    };
    Some(finding)
}

/// One agent's outage windows so far: its first window's finding, into which every later
/// window's connections, evidence and explanations are moved, and the later windows' lined-up
/// connections and numbers (none for most agents: no allocation).
/// The connections by id: a one-capture diagnosis's legs are made as they are read, and a leg
/// kept for each agent was 112 bytes (`Path`).
struct AgentOutages {
    /// Its place among the rules' findings (`FindingSink::push_at`).
    key: u64,
    first: Finding,
    line: LineId,
    later: Vec<(LineId, WindowNumbers)>,
}

/// A window's `Numbers` that a merge reads.
struct WindowNumbers {
    outage_s: Option<f64>,
    reconnect_attempts: Option<usize>,
    failed_handshakes: Option<usize>,
    detection_delay_s: Option<f64>,
}

impl AgentOutages {
    fn numbers(f: &Finding) -> WindowNumbers {
        let n = &f.numbers;
        WindowNumbers {
            outage_s: n.outage_s,
            reconnect_attempts: n.reconnect_attempts,
            failed_handshakes: n.failed_handshakes,
            detection_delay_s: n.detection_delay_s,
        }
    }

    fn add(&mut self, f: Finding, line: LineId) {
        self.later.push((line, Self::numbers(&f)));
        let first = &mut self.first;
        first.connections.extend(f.connections);
        first.evidence.extend(f.evidence);
        first.text.explanation.extend(f.text.explanation);
    }

    /// One window: its finding as it is. More: one finding for all, with the total time
    /// without a connection, the longest window, and the windows' counts summed.
    fn merge(self, ctx: &Ctx<'_>) -> Finding {
        let mut merged = self.first;
        if self.later.is_empty() {
            return merged;
        }
        let leg = |line: &LineId| ctx.path(line).map(|p| p.legs()[0].clone());
        let mut group = vec![Self::numbers(&merged)];
        let mut legs: Vec<Leg> = leg(&self.line).into_iter().collect();
        for (line, numbers) in self.later {
            legs.extend(leg(&line));
            group.push(numbers);
        }
        // The agent: the client address of its windows' connections (`agent` made a window's
        // rank of it, so the first's leg is there).
        let Some(agent) = legs.first().map(|l| l.src) else {
            return merged;
        };
        let outages: Vec<f64> = group.iter().filter_map(|w| w.outage_s).collect();
        let total: f64 = outages.iter().sum();
        let longest = outages.iter().copied().fold(0.0, f64::max);
        merged.text.summary = Some(
            Msg::new("ao-summary-many")
                .s("agent", agent)
                .n("n", group.len())
                .s("outage", fixed(total, 1))
                .s("longest", fixed(longest, 1)),
        );
        merged.display_filters = display_filters(&merged.evidence, &legs);
        let backoff_s = std::mem::take(&mut merged.numbers.backoff_s);
        *merged.numbers = Numbers {
            outage_s: Some(round3(total)),
            reconnect_attempts: Some(group.iter().filter_map(|w| w.reconnect_attempts).sum()),
            failed_handshakes: Some(group.iter().filter_map(|w| w.failed_handshakes).sum()),
            detection_delay_s: group
                .iter()
                .filter_map(|w| w.detection_delay_s)
                .reduce(f64::max),
            backoff_s,
            ..Numbers::default()
        };
        merged
    }
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
            .and_then(|r| Some((r.response_ts?, r.response_frame?)))
    });
    let http_failed = app
        .and_then(|a| a.http.as_ref())
        .is_some_and(|h| h.failed_status.is_some() || (h.requests > 0 && !h.upgraded));
    match (upgrade, registered) {
        (Some(u), Some(r)) => Some(if r.0 > u.0 { r } else { u }),
        (Some(u), None) => Some(u),
        (None, Some(r)) => Some(r),
        (None, None) if http_failed => None,
        (None, None) => k.resp.first_data(),
    }
}

/// A connection's heartbeat, if its application summary found one.
fn heartbeat(c: &Connection) -> Option<&crate::app::heartbeat::Heartbeat> {
    c.app.as_ref()?.heartbeat.as_ref()
}

/// **heartbeat_too_slow.** The connection's heartbeat (found by the application layer: SIP CRLF
/// keep-alives, WebSocket pings, periodic small messages, TCP keep-alives) is slower than the
/// middlebox's idle timeout, or stretches beyond it at times: Chrome throttles the timers of a
/// background tab to once a minute after five minutes hidden ("intensive wake up throttling",
/// Chrome 88, developer.chrome.com/blog/timer-throttling-in-chrome-88), which turns a 25 s
/// heartbeat into a 60 s one. The silence that killed the connection counts as a heartbeat
/// interval that did not come in time.
fn heartbeat_too_slow(ctx: &Ctx<'_>, deaths: &[Death], idle: &Finding, out: &mut Grouper) {
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
    for d in deaths {
        let Some(p) = ctx.path(&d.conn) else {
            continue;
        };
        // The heartbeat as the client side sent it.
        let Some((leg, conn)) = p
            .legs()
            .iter()
            .map(|leg| (leg, ctx.conn(leg)))
            .find(|(_, c)| heartbeat(c).is_some())
        else {
            continue;
        };
        let Some(hb) = heartbeat(&conn) else {
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
            Msg::new("hb-stretch")
                .s("median", fixed(s.interval_median_s, 1))
                .n("count", s.count)
                .s("from", ctx.reference_ts(leg, s.from).tcpdump())
        });
        let timeout_words = if timer {
            Msg::new("hb-timeout-sharp").s("t", fixed(timeout, 1))
        } else {
            Msg::new("hb-timeout-between")
                .s("lower", fixed(n.lower_s.unwrap_or(0.0), 1))
                .s("upper", fixed(n.upper_s.unwrap_or(0.0), 1))
        };
        // The connection's first packet, at its own time: the log keeps no frame numbers, and
        // the first beat's time beside the first frame's number sent a reader to a packet
        // that was not at the time shown (hours apart once the log keeps only its latest beats).
        let evidence = vec![ctx.evidence(
            leg,
            conn.first_frame,
            conn.ts,
            Msg::new("ev-heartbeat")
                .s("kind", kind.to_lowercase())
                .m(
                    "side",
                    side_msg(match hb.started_by {
                        crate::app::Side::Client => Side::Orig,
                        crate::app::Side::Server => Side::Resp,
                    }),
                )
                .n("count", hb.count)
                .s("median", fixed(hb.interval_median_s, 3))
                .s("p95", fixed(hb.interval_p95_s, 3))
                .s("max", fixed(hb.interval_max_s, 3)),
        )];
        let display_filters = display_filters(&evidence, p.legs());
        let recommendation = Msg::new("hb-rec").s(
            "secs",
            fixed(
                (if timer {
                    timeout
                } else {
                    n.lower_s.unwrap_or(timeout)
                } / 2.0)
                    .max(1.0)
                    .floor(),
                0,
            ),
        );
        let many = FindingText {
            summary: Some(
                Msg::new("hb-summary-many")
                    .s("kind", &kind)
                    .m("timeout", timeout_words.clone()),
            ),
            explanation: vec![Msg::new("hb-explain-many").m("timeout", timeout_words.clone())],
            recommendation: Some(recommendation.clone()),
            hop: None,
        };
        let finding = Finding {
            id: String::new(),
            kind: FindingKind::HeartbeatTooSlow,
            severity: Severity::Warning,
            summary: String::new(),
            explanation: String::new(),
            text: FindingText {
                summary: Some(
                    Msg::new("hb-summary")
                        .s("conn", d.conn)
                        .s("kind", &kind)
                        .s("median", fixed(hb.interval_median_s, 1))
                        .s("slowest", fixed(slowest, 1))
                        .m("timeout", timeout_words.clone()),
                ),
                explanation: std::iter::once(
                    Msg::new("hb-explain")
                        .s("median", fixed(hb.interval_median_s, 3))
                        .s("p95", fixed(hb.interval_p95_s, 3))
                        .s("max", fixed(hb.interval_max_s, 3))
                        .s("silence", fixed(d.silence_s, 3))
                        .m("timeout", timeout_words),
                )
                .chain(stretch)
                .collect(),
                recommendation: Some(recommendation),
                hop: None,
            },
            connections: vec![d.conn],
            evidence,
            display_filters,
            recommendation: String::new(),
            single_vantage: !ctx.multi_vantage(),
            numbers: Box::new(Numbers {
                estimate_s: n.estimate_s,
                lower_s: n.lower_s,
                upper_s: n.upper_s,
                heartbeat_median_s: Some(round3(hb.interval_median_s)),
                heartbeat_p95_s: Some(round3(hb.interval_p95_s)),
                heartbeat_max_s: Some(round3(slowest)),
                ..Numbers::default()
            }),
        };
        out.push(
            ctx,
            Member {
                finding,
                at: d.at,
                silence_s: d.silence_s,
                stretch_s: hb.stretched.as_ref().map(|s| s.interval_median_s),
                many,
            },
        );
    }
}

/// **call_cut.** SIP dialogs that were up (2xx seen, no BYE) when their signalling connection
/// died: the call is gone for the agent, while the far side may only learn of it later. The
/// voice gateway's leg (SIP over UDP, other Call-ID through a B2BUA) is shown where a capture has
/// it: its BYE, and the Reason header (RFC 3326) the softswitch gave.
fn call_cut(ctx: &Ctx<'_>, deaths: &[Death], out: &mut FindingSink<'_>) {
    for d in deaths {
        let Some(p) = ctx.path(&d.conn) else {
            continue;
        };
        let mut evidence = Vec::new();
        let mut calls = Vec::new();
        for leg in p.legs() {
            let c = ctx.conn(leg);
            let Some(sip) = c.app.as_ref().and_then(|a| a.sip.as_ref()) else {
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
                        Msg::new("ev-invite").s("call", &dl.call_id),
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
        {
            for leg in &ctx.sip_udp_legs {
                let c = &ctx.conn(leg);
                let Some(sip) = c.app.as_ref().and_then(|a| a.sip.as_ref()) else {
                    continue;
                };
                for dl in &sip.dialogs {
                    let Some(bye) = dl.bye_ts else { continue };
                    let bye_ref = ctx.reference_ts(leg, bye);
                    let up_before = dl.ok_ts.is_some_and(|t| ctx.reference_ts(leg, t) <= d.at);
                    let key = (leg.vantage.to_string(), dl.call_id.clone());
                    if up_before && bye_ref >= d.last_good && !seen.contains(&key) {
                        seen.push(key);
                        udp_legs.push(leg);
                        if !gateway.iter().any(|(id, _)| id == &dl.call_id) {
                            gateway.push((dl.call_id.clone(), bye_ref.secs_since(d.at)));
                        }
                        evidence.push(
                            ctx.evidence(
                                leg,
                                dl.bye_frame.unwrap_or(c.last_frame),
                                bye,
                                Msg::new("ev-gateway-bye").s("call", &dl.call_id).m(
                                    "reason",
                                    dl.bye_reason
                                        .as_ref()
                                        .map_or(empty(), |r| Msg::new("cc-reason").s("r", r)),
                                ),
                            ),
                        );
                    }
                }
            }
        }
        let mut legs: Vec<&Leg> = p.legs().iter().collect();
        legs.extend(udp_legs);
        let display_filters = display_filters(&evidence, &legs)
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
            summary: String::new(),
            explanation: String::new(),
            text: FindingText {
                summary: Some(
                    Msg::new("cc-summary")
                        .n("n", calls.len())
                        .s("conn", d.conn)
                        .s("calls", calls.join(", ")),
                ),
                explanation: std::iter::once(Msg::new("cc-explain"))
                    .chain((!gateway.is_empty()).then(|| {
                        Msg::new("cc-gateway").list(
                            "delays",
                            gateway
                                .iter()
                                .map(|(_, s)| Msg::new("secs").s("s", fixed(*s, 1)))
                                .collect(),
                        )
                    }))
                    .collect(),
                recommendation: Some(Msg::new("cc-rec")),
                hop: None,
            },
            connections: vec![d.conn],
            evidence,
            display_filters,
            recommendation: String::new(),
            single_vantage: !ctx.multi_vantage(),
            numbers: Box::default(),
        });
    }
}

/// The verdict: the most likely root cause in one sentence with the decisive numbers, a
/// confidence, and what would change it. `findings` in report order, before they are rendered:
/// it reads those of the deaths, the idle timeout and a weak network, and only those
/// (`FindingSink` keeps them for it; the others are written as they are made).
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
    // Findings group connections: the count is of connections, as it was before grouping.
    let died: usize = deaths.iter().map(|f| f.connections.len()).sum();
    let disconnects = ctx
        .paths()
        .filter(|p| {
            let c = ctx.reads(&p.legs()[0]);
            c.proto() == Proto::Tcp && c.ended_by().is_some()
        })
        .count()
        .max(died);
    if let Some(idle) = findings.iter().find(|f| f.kind == FindingKind::IdleTimeout) {
        let n = &idle.numbers;
        let hop = idle
            .text
            .hop
            .clone()
            .unwrap_or_else(|| Msg::new("raw").s("v", n.hop.clone().unwrap_or_default()));
        let what = Msg::new(match deaths.first().map(|f| f.kind) {
            Some(FindingKind::SilentDrop) => "v-what-drops",
            Some(FindingKind::MiddleboxClose) => "v-what-closes",
            _ => "v-what-resets",
        });
        let summary = if n.acts == Some("timer") {
            Msg::new("v-summary-timer")
                .s("estimate", fixed(n.estimate_s.unwrap_or(0.0), 1))
                .s("pm", fixed((n.spread_s.unwrap_or(0.0) / 2.0).max(0.05), 1))
        } else {
            Msg::new("v-summary-idle")
                .s("lower", fixed(n.lower_s.unwrap_or(0.0), 1))
                .s("upper", fixed(n.upper_s.unwrap_or(0.0), 1))
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
            summary: String::new(),
            summary_msg: Some(
                summary
                    .m("hop", hop)
                    .m("what", what)
                    .n("deaths", died)
                    .n("disconnects", disconnects)
                    .s("keep", fixed(keep, 0)),
            ),
            confidence: if single { 0.6 } else { 0.9 },
            would_change: String::new(),
            would_change_msg: Some(Msg::new(if single {
                "v-change-single-end"
            } else {
                "v-change-inside"
            })),
        };
    }
    if let Some(w) = findings.iter().find(|f| f.kind == FindingKind::WeakNetwork) {
        return Verdict {
            kind: "weak_network".into(),
            summary: String::new(),
            summary_msg: Some(
                Msg::new("v-weak")
                    .n("retrans", w.numbers.retransmissions.unwrap_or(0))
                    .m(
                        "lost",
                        w.numbers
                            .lost_segments
                            .map_or(empty(), |l| Msg::new("v-weak-lost").n("l", l)),
                    ),
            ),
            confidence: 0.7,
            would_change: String::new(),
            would_change_msg: Some(Msg::new("v-weak-change")),
        };
    }
    let n = ctx.paths().len();
    if !ctx.multi_vantage() {
        // One capture cannot prove who sent a FIN or RST that fits its sender: say so.
        let ended_far = ctx
            .paths()
            .filter(|p| ctx.reads(&p.legs()[0]).ended_by() == Some(Side::Resp))
            .count();
        return Verdict {
            kind: "healthy".into(),
            summary: String::new(),
            summary_msg: Some(Msg::new("v-single").n("n", n).n("far", ended_far)),
            confidence: 0.4,
            would_change: String::new(),
            would_change_msg: Some(Msg::new("v-single-change")),
        };
    }
    Verdict {
        kind: "healthy".into(),
        summary: String::new(),
        summary_msg: Some(Msg::new("v-healthy").n("n", n)),
        confidence: 0.7,
        would_change: String::new(),
        would_change_msg: Some(Msg::new("v-healthy-change")),
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn secs3(x: f64) -> String {
    format!("{x:.3}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A member whose connection `L{id}` died at `at` with `items` evidence items.
    fn member(id: usize, at: i64, items: usize) -> Member {
        let evidence = (0..items)
            .map(|k| Evidence {
                vantage: "a".into(),
                file: "a.pcap".into(),
                frame: (id * 10 + k) as u64,
                ts: Timestamp(at),
                what: String::new(),
                what_msg: None,
            })
            .collect();
        Member {
            finding: Finding {
                id: String::new(),
                kind: FindingKind::HeartbeatTooSlow,
                severity: Severity::Warning,
                summary: String::new(),
                explanation: String::new(),
                connections: vec![crate::align::LineId::new(&format!("L{id}"))],
                evidence,
                display_filters: Vec::new(),
                recommendation: String::new(),
                single_vantage: true,
                numbers: Box::default(),
                text: FindingText::default(),
            },
            at: Timestamp(at),
            silence_s: at as f64,
            stretch_s: None,
            many: FindingText::default(),
        }
    }

    /// The members a group shows, chosen with all of them at hand: sorted by death (ties in the
    /// order they came), whole members while their evidence fits, at least one.
    fn shown_from_all(members: &[(i64, usize)], max_evidence: usize) -> Vec<String> {
        let mut order: Vec<usize> = (0..members.len()).collect();
        order.sort_by_key(|&i| members[i].0);
        let (mut shown, mut items) = (Vec::new(), 0);
        for i in order {
            if !shown.is_empty() && items + members[i].1 > max_evidence {
                break;
            }
            items += members[i].1;
            shown.push(format!("L{i}"));
        }
        shown
    }

    proptest::proptest! {
        /// A group that keeps only what it can show, as members come, shows what it would have
        /// shown with every member kept; and it still lists and counts every member.
        #[test]
        fn group_keeps_what_all_members_would_show(
            members in proptest::collection::vec((0i64..12, 1usize..5), 1..40),
            max_evidence in 1usize..14,
        ) {
            let ms: Vec<Member> = members
                .iter()
                .enumerate()
                .map(|(i, &(at, items))| member(i, at, items))
                .collect();
            let mut g = Group::new(&ms[0]);
            for m in ms {
                g.add(m, Vec::new(), max_evidence);
            }
            let shown: Vec<String> = g
                .shown
                .iter()
                .map(|(_, m)| m.finding.connections[0].to_string())
                .collect();
            proptest::prop_assert_eq!(shown, shown_from_all(&members, max_evidence));
            proptest::prop_assert_eq!(g.n, members.len());
            let all: Vec<crate::align::LineId> = (0..members.len())
                .map(|i| crate::align::LineId::new(&format!("L{i}")))
                .collect();
            proptest::prop_assert_eq!(&g.connections, &all);
            let lo = members.iter().map(|m| m.0).min().unwrap_or(0) as f64;
            let hi = members.iter().map(|m| m.0).max().unwrap_or(0) as f64;
            proptest::prop_assert_eq!(g.silence, (lo, hi));
        }
    }
}
