//! Stage 6: findings with evidence, and a verdict.
//!
//! Every rule lives in `rules.rs`, one small function each, with its reasoning and the source of
//! any default in its doc comment. This module holds the types every report follows (`Diagnosis`
//! and what it contains), the view of a lined-up connection the rules share (`Path`), and the
//! verdict.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::align::{Alignment, ClockOffset, ConnRef, Leg, LinedUp};
use crate::capture::Timestamp;
use crate::pipeline::CaptureSummary;
use crate::tcp::Side;

pub mod defaults;
pub mod findings;
pub mod rules;

pub use findings::{FindingSink, Findings};

/// The message catalogs, re-exported for the rules and the reports (the module is `crate::i18n`).
pub use crate::i18n;
pub use crate::i18n::{Catalog, Lang, Msg};

/// Version of the JSON document; bumped when a field changes meaning or goes away.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    MiddleboxReset,
    MiddleboxClose,
    IdleTimeout,
    SilentDrop,
    HeartbeatTooSlow,
    HalfOpen,
    L7Proxy,
    WeakNetwork,
    AgentOutage,
    CallCut,
}

impl FindingKind {
    pub fn name(self) -> &'static str {
        match self {
            FindingKind::MiddleboxReset => "middlebox_reset",
            FindingKind::MiddleboxClose => "middlebox_close",
            FindingKind::IdleTimeout => "idle_timeout",
            FindingKind::SilentDrop => "silent_drop",
            FindingKind::HeartbeatTooSlow => "heartbeat_too_slow",
            FindingKind::HalfOpen => "half_open",
            FindingKind::L7Proxy => "l7_proxy",
            FindingKind::WeakNetwork => "weak_network",
            FindingKind::AgentOutage => "agent_outage",
            FindingKind::CallCut => "call_cut",
        }
    }
}

/// One packet that shows something.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Evidence {
    // Both shared with the capture's other evidence (`Ctx::files`): two allocations per item,
    // and an agent outage has two items, ten thousand outages in the 2 GB synth.
    #[schemars(with = "String")]
    pub vantage: Arc<str>,
    #[schemars(with = "String")]
    pub file: Arc<str>,
    /// Frame number in that file (1-based, as Wireshark counts).
    pub frame: u64,
    /// On the reference clock.
    pub ts: Timestamp,
    /// What it shows (in the report's language).
    pub what: String,
    /// `what` before a language was chosen; `None` once rendered (`render_finding`).
    #[serde(skip)]
    pub what_msg: Option<Msg>,
}

/// A Wireshark display filter that shows a finding's evidence in one capture.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct DisplayFilter {
    // Shared, as `Evidence`'s.
    #[schemars(with = "String")]
    pub vantage: Arc<str>,
    #[schemars(with = "String")]
    pub file: Arc<str>,
    pub filter: String,
}

/// Numbers specific to a finding's kind; absent ones are left out of the JSON.
#[derive(Clone, Debug, Default, Serialize, schemars::JsonSchema)]
pub struct Numbers {
    /// idle_timeout: the estimate, its interval, spread and sample count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lower_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upper_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spread_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub samples: Option<usize>,
    /// `timer` (acts when its timer fires) or `next_packet` (acts on the first packet after).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acts: Option<&'static str>,
    /// Documented defaults the estimate matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub known_defaults: Vec<String>,
    /// Where on the path: "between agent and softswitch".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hop: Option<String>,
    /// Silence before the end, seconds. A finding that groups several connections gives the
    /// shortest of their silences here and the longest in `silence_max_s`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub silence_s: Option<f64>,
    /// Grouped findings only (more than one connection): the longest silence before the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub silence_max_s: Option<f64>,
    /// half_open: how long each side believed in the connection after it died.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_believed_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_believed_s: Option<f64>,
    /// silent_drop / weak_network: retransmissions and lost segments (a silent_drop finding that
    /// groups several connections: their retransmissions in all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retransmissions: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost_segments: Option<u64>,
    /// agent_outage: total time without a working connection, attempts, failed handshakes,
    /// detection delay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outage_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconnect_attempts: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_handshakes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detection_delay_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backoff_s: Vec<f64>,
    /// heartbeat_too_slow: the heartbeat's rhythm next to the timeout. A finding that groups
    /// several connections gives the median of their medians, the largest p95 and the largest
    /// interval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_median_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_p95_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_max_s: Option<f64>,
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Finding {
    /// F1, F2, ... in report order.
    pub id: String,
    pub kind: FindingKind,
    pub severity: Severity,
    pub summary: String,
    pub explanation: String,
    // Inline (`LineId`): a finding of a middlebox's resets lists every connection it ended,
    // and an agent's outage every window's, ~350 000 at the 20 GB synth, where a `String`
    // each was an allocation and 40 more bytes.
    /// Lined-up connection ids.
    #[schemars(with = "Vec<String>")]
    pub connections: Vec<crate::align::LineId>,
    pub evidence: Vec<Evidence>,
    pub display_filters: Vec<DisplayFilter>,
    pub recommendation: String,
    /// Evidence from one capture only: weaker, and said so.
    pub single_vantage: bool,
    // Boxed: most of its fields are for other kinds than the finding's, and the list of
    // findings (an agent outage each) was allocated whole after tracking.
    #[serde(flatten)]
    pub numbers: Box<Numbers>,
    /// The sentences before a language was chosen; empty once rendered (`render_finding`).
    #[serde(skip)]
    pub text: FindingText,
}

/// A finding's sentences as catalog messages: `diagnose_with` renders them into `summary`,
/// `explanation` and `recommendation` in the chosen language. Equal texts, before a group's
/// numbers are added, are what groups per-connection findings (`rules::Grouper`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FindingText {
    pub summary: Option<Msg>,
    /// Sentences, joined by the language's sentence separator.
    pub explanation: Vec<Msg>,
    pub recommendation: Option<Msg>,
    /// Where on the path, in words (the English `numbers.hop` stays for machines).
    pub hop: Option<Msg>,
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Verdict {
    /// The finding kind behind the root cause, or `healthy`.
    pub kind: String,
    pub summary: String,
    /// 0..1.
    pub confidence: f64,
    /// What evidence would change this verdict.
    pub would_change: String,
    /// `summary` and `would_change` before a language was chosen.
    #[serde(skip)]
    pub summary_msg: Option<Msg>,
    #[serde(skip)]
    pub would_change_msg: Option<Msg>,
}

/// A capture in the report: its summary and its vantage name.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct CaptureReport {
    pub name: String,
    #[serde(flatten)]
    pub summary: CaptureSummary,
}

/// The whole diagnosis: what every report format renders.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Diagnosis {
    pub schema_version: u32,
    /// Language of the human-readable strings (summary, explanation, recommendation, what,
    /// would_change): `en` or `zh-CN`. Field names and `kind` values are English whatever it is.
    pub lang: String,
    pub verdict: Verdict,
    pub reference: String,
    pub captures: Vec<CaptureReport>,
    pub clock_offsets: Vec<ClockOffset>,
    #[schemars(with = "Vec<LinedUp>")]
    pub connections: std::sync::Arc<crate::align::Lines>,
    // Read one at a time (`Findings::iter`): written as the rules made them. (A comment, not a
    // doc comment: the committed schema has no description here.)
    #[schemars(with = "Vec<Finding>")]
    pub findings: Findings,
}

/// A lined-up connection with its legs in path order, client side first: the shared view the
/// rules reason on. A one-capture diagnosis's is made as it is read (`align::Lines`), so it
/// holds its lined-up connection; hold a leg longer than the path, and clone it.
pub struct Path<'a> {
    pub lined: Cow<'a, LinedUp>,
    /// Several legs, ordered from the originator's side to the responder's (`Ctx::ordered`);
    /// otherwise the lined-up connection's one.
    ordered: Option<&'a [Leg]>,
}

impl Path<'_> {
    /// Legs ordered from the originator's side to the responder's.
    pub fn legs(&self) -> &[Leg] {
        self.ordered.unwrap_or(&self.lined.legs)
    }
}

/// What the rules see.
pub struct Ctx<'a> {
    pub al: &'a Alignment,
    /// The legs of each lined-up connection seen at several vantages, ordered along its path,
    /// by the connection's index (`paths`), sorted. A one-leg path is made as it is read: a
    /// `Path` kept for each connection was 40 bytes of the rules' peak a connection (3.7 MB
    /// on the 2 GB synth, ~37 MB at 20 GB), and a one-capture diagnosis has only those.
    ordered: Vec<(usize, Vec<Leg>)>,
    /// TCP paths by a hash of their client-side leg's (vantage, client address, server
    /// address, server port), then start and index: a client's connections to one service,
    /// for reconnects. One sorted list: a map with a list per client was ~120 bytes a
    /// connection. (hash, start, path index), 16 bytes: with a 64-bit hash and index, 24, 22
    /// MB of the 20 GB synth's rules peak (two clients that share a 32-bit hash are told
    /// apart by their key, `client_connections_after`).
    by_client: Vec<(u32, Timestamp, u32)>,
    /// UDP legs that carry SIP (the voice gateway's leg of calls).
    pub sip_udp_legs: Vec<Leg>,
    /// Each vantage's capture file, shared by the evidence that cites it.
    files: Vec<Arc<str>>,
}

type ClientKey = (usize, std::net::IpAddr, std::net::IpAddr, u16);

fn client_hash(k: &ClientKey) -> u32 {
    use std::hash::BuildHasher as _;
    // The high half: foldhash mixes into it last.
    (foldhash::quality::FixedState::with_seed(0).hash_one(k) >> 32) as u32
}

// A leg's addresses are its connection's: the originator's, then the responder's.
fn client_key(leg: &Leg) -> ClientKey {
    (leg.at.0, leg.src, leg.dst, leg.dport)
}

impl<'a> Ctx<'a> {
    pub fn new(al: &'a Alignment) -> Self {
        // (One capture's: none has two legs, and the pass would read every digest.)
        let several = (!al.connections.one_leg_each()).then(|| al.connections.iter());
        let ordered = several
            .into_iter()
            .flatten()
            .enumerate()
            .filter(|(_, l)| l.legs.len() > 1)
            .map(|(i, l)| {
                let mut legs: Vec<Leg> = l.legs.to_vec();
                // Order along the path by when each leg saw the originator's first packet (on
                // the reference clock): the originator's side sees it first. (Only paths of
                // several legs: read from what lining up kept of them, `Alignment::first_ts`,
                // where the connections wait in a file.)
                legs.sort_by_key(|leg| (al.to_reference(leg.at.0, al.first_ts(leg)), leg.at.0));
                (i, legs)
            })
            .collect::<Vec<_>>();
        let mut ctx = Ctx {
            al,
            ordered,
            by_client: Vec::new(),
            sip_udp_legs: Vec::new(),
            files: al
                .vantages
                .iter()
                .map(|v| Arc::from(v.flows.summary.path.as_str()))
                .collect(),
        };
        let mut by_client = Vec::new();
        let mut sip_udp_legs = Vec::new();
        for (i, p) in ctx.paths().enumerate() {
            let leg = &p.legs()[0];
            if leg.proto == crate::tcp::Proto::Tcp {
                // Fewer than 2^32 lined-up connections: `align::Lines` numbers them in 32 bits.
                by_client.push((client_hash(&client_key(leg)), al.leg_ts(leg), i as u32));
            }
            for leg in p.legs() {
                // A UDP flow that carries SIP is kept whole (`rules::kept_as`).
                if leg.proto == crate::tcp::Proto::Udp && al.is_whole(leg) {
                    let c = al.connection(leg);
                    if c.app.as_ref().is_some_and(|a| a.sip.is_some()) {
                        sip_udp_legs.push(leg.clone());
                    }
                }
            }
        }
        by_client.sort_unstable();
        ctx.by_client = by_client;
        ctx.sip_udp_legs = sip_udp_legs;
        ctx
    }

    /// Every lined-up connection's path, in the alignment's order (L1, L2, ...).
    pub fn paths(&self) -> impl ExactSizeIterator<Item = Path<'_>> + '_ {
        (0..self.al.connections.len()).map(|i| self.path_at(i))
    }

    /// The paths whose legs are all kept whole (`whole`), in `paths`' order.
    pub fn whole_paths(&self) -> impl Iterator<Item = Path<'_>> + '_ {
        (0..self.al.connections.len())
            .filter(|&i| self.al.connections.is_whole_at(self.al, i) == Some(true))
            .map(|i| self.path_at(i))
    }

    /// The path of the lined-up connection at `i` (`paths`' order).
    pub(crate) fn path_at(&self, i: usize) -> Path<'_> {
        let lined = self
            .al
            .connections
            .get(i)
            .expect("a lined-up connection's index");
        let ordered = self
            .ordered
            .binary_search_by_key(&i, |(j, _)| *j)
            .ok()
            .map(|at| &self.ordered[at].1[..]);
        Path { lined, ordered }
    }

    /// The path of a lined-up connection.
    pub fn path(&self, id: &str) -> Option<Path<'_>> {
        // `align` numbers lined-up connections L1, L2, ... in the order `paths` has them: the
        // number is the index (a map from id to index cost ~40 bytes a connection).
        let at = crate::align::line_index(id)?;
        (at < self.al.connections.len())
            .then(|| self.path_at(at))
            .filter(|p| p.lined.id == id)
    }

    /// The same client's connections to the same service at the same vantage, in start order.
    /// Those that started after `after` (the leg's capture clock), found by a binary search:
    /// a scan from the client's first connection, for each of its deaths, was quadratic in the
    /// connections an agent makes (20 GB synth, ~38 an agent and ~10 deaths: a third of the
    /// rules' time).
    pub fn client_connections_after(
        &self,
        leg: &Leg,
        after: Timestamp,
    ) -> impl Iterator<Item = Path<'_>> + '_ {
        let key = client_key(leg);
        let h = client_hash(&key);
        // `by_client` is sorted by (hash, start, index), and its start is the one `leg_ts`
        // and `Reads::ts` give.
        let from = self
            .by_client
            .partition_point(|&(x, t, _)| x < h || (x == h && t <= after));
        // Another client with the same hash would be mixed in, in time order: left out.
        self.by_client[from..]
            .iter()
            .take_while(move |&&(x, _, _)| x == h)
            .map(|&(_, _, i)| self.path_at(i as usize))
            .filter(move |p| client_key(&p.legs()[0]) == key)
    }

    /// A leg's connection kept whole: a path `whole` says is, or a dead one's (the tracker
    /// keeps whole every connection a rule may end, `rules::kept_as`). Read from disk in a
    /// one-capture diagnosis (`Alignment::connection`): hold it while it is read, not longer.
    pub fn conn(&self, leg: &Leg) -> ConnRef<'a> {
        self.al.connection(leg)
    }

    /// What the rules read from a leg's connection whatever its fate, kept whole or not.
    pub fn reads(&self, leg: &Leg) -> rules::Reads<'a> {
        rules::Reads(self.al.kept(leg))
    }

    pub fn reference_ts(&self, leg: &Leg, ts: Timestamp) -> Timestamp {
        self.al.to_reference(leg.at.0, ts)
    }

    pub fn file(&self, leg: &Leg) -> Arc<str> {
        self.files[leg.at.0].clone()
    }

    pub fn evidence(&self, leg: &Leg, frame: u64, ts: Timestamp, what: Msg) -> Evidence {
        Evidence {
            vantage: leg.vantage.clone(),
            file: self.file(leg),
            frame,
            ts: self.reference_ts(leg, ts),
            what: String::new(),
            what_msg: Some(what),
        }
    }

    /// Capture end of a leg's vantage, on the reference clock.
    pub fn capture_end(&self, leg: &Leg) -> Option<Timestamp> {
        self.al.vantages[leg.at.0]
            .flows
            .summary
            .last_ts
            .map(|t| self.al.to_reference(leg.at.0, t))
    }

    /// More than one capture was given and lined up.
    pub fn multi_vantage(&self) -> bool {
        self.al.vantages.len() > 1
    }
}

/// The side a leg's address plays, for words: the originator is the client.
pub fn side_name(s: Side) -> &'static str {
    match s {
        Side::Orig => "client",
        Side::Resp => "server",
    }
}

/// `side_name` as a message: "client" / "客户端".
pub fn side_msg(s: Side) -> Msg {
    Msg::new(match s {
        Side::Orig => "side-client",
        Side::Resp => "side-server",
    })
}

/// Wireshark display filters for a finding: one per capture, the connection's packets and the
/// evidence frames.
pub fn display_filters<L: std::borrow::Borrow<Leg>>(
    evidence: &[Evidence],
    legs: &[L],
) -> Vec<DisplayFilter> {
    let mut by_file: BTreeMap<(Arc<str>, Arc<str>), Vec<u64>> = BTreeMap::new();
    for e in evidence {
        by_file
            .entry((e.vantage.clone(), e.file.clone()))
            .or_default()
            .push(e.frame);
    }
    // Collected from the map, so sized exactly: a finding has one or two (pushed one at a time
    // they had room for four), and each agent outage keeps its own.
    by_file
        .into_iter()
        .map(|((vantage, file), mut frames)| {
            frames.sort_unstable();
            frames.dedup();
            let conn = legs
                .iter()
                .map(|l| l.borrow())
                .filter(|l| *l.vantage == *vantage)
                .map(|l| {
                    format!(
                        "({})",
                        conversation_filter(l.proto, (l.src, l.sport), (l.dst, l.dport))
                    )
                })
                .collect::<Vec<_>>();
            let frames = frames_filter(&frames);
            let mut filter = if conn.is_empty() {
                frames
            } else {
                format!("{} || {frames}", conn.join(" || "))
            };
            // `format!` grows its string by doubling.
            filter.shrink_to_fit();
            DisplayFilter {
                vantage,
                file,
                filter,
            }
        })
        .collect()
}

/// A Wireshark display filter for one conversation, both directions: `ip.addr` for IPv4,
/// `ipv6.addr` for IPv6 (`ip.addr` takes only IPv4 addresses).
pub fn conversation_filter(
    proto: crate::tcp::Proto,
    (a, a_port): (std::net::IpAddr, u16),
    (b, b_port): (std::net::IpAddr, u16),
) -> String {
    let proto = match proto {
        crate::tcp::Proto::Tcp => "tcp",
        crate::tcp::Proto::Udp => "udp",
    };
    let addr = |ip: std::net::IpAddr| match ip {
        std::net::IpAddr::V4(_) => format!("ip.addr=={ip}"),
        std::net::IpAddr::V6(_) => format!("ipv6.addr=={ip}"),
    };
    format!(
        "{} && {} && {proto}.port=={a_port} && {proto}.port=={b_port}",
        addr(a),
        addr(b)
    )
}

/// Frames by number, in a form every Wireshark parses: a set (`frame.number in {30 31}`) takes
/// spaces between its members up to 3.4 and commas from 3.6 on (4.0 refuses the spaces), so a
/// chain of `==`.
fn frames_filter(frames: &[u64]) -> String {
    let each: Vec<String> = frames
        .iter()
        .map(|f| format!("frame.number == {f}"))
        .collect();
    each.join(" || ")
}

/// Default cap on evidence items per finding: enough for a ticket, bounded on hostile captures.
pub const MAX_EVIDENCE: usize = 50;

/// Runs every rule and writes the verdict, in English.
pub fn diagnose(al: &Alignment) -> Diagnosis {
    diagnose_with(al, MAX_EVIDENCE, Lang::En)
}

/// `diagnose` with a cap on evidence items per finding (a finding cut short says how many
/// items it left out in its explanation), its sentences in `lang`.
pub fn diagnose_with(al: &Alignment, max_evidence: usize, lang: Lang) -> Diagnosis {
    let ctx = Ctx::new(al);
    let cat = Catalog::new(lang);
    // Each finding rendered and written as it is made; most severe first, then in rule order,
    // and ids follow (`Findings`).
    let mut sink = FindingSink::new(&cat, max_evidence);
    rules::run_all(&ctx, max_evidence, &mut sink);
    let (verdict_reads, findings) = sink.finish();
    crate::stats::mark(|| "rules".into());
    let mut verdict = rules::verdict(&ctx, &verdict_reads);
    drop(verdict_reads);
    if let Some(m) = &verdict.summary_msg {
        verdict.summary = cat.render(m);
    }
    if let Some(m) = &verdict.would_change_msg {
        verdict.would_change = cat.render(m);
    }
    crate::stats::mark(|| "rendered".into());
    Diagnosis {
        schema_version: SCHEMA_VERSION,
        lang: lang.tag().to_string(),
        verdict,
        reference: al.vantages[al.reference].name.clone(),
        captures: al
            .vantages
            .iter()
            .map(|v| CaptureReport {
                name: v.name.clone(),
                summary: v.flows.summary.clone(),
            })
            .collect(),
        clock_offsets: al.clock_offsets.clone(),
        connections: al.connections.clone(),
        findings,
    }
}

/// A finding's evidence in report order: by time on the reference clock, then vantage (a stable
/// sort: a rule's own order stays among equals).
pub fn sort_evidence(evidence: &mut [Evidence]) {
    evidence.sort_by(|a, b| a.ts.cmp(&b.ts).then(a.vantage.cmp(&b.vantage)));
}

/// Keeps a finding's first `max` evidence items (sorted: `sort_evidence`), and says at the end
/// of its explanation how many it left out.
pub fn cut_evidence(evidence: &mut Vec<Evidence>, explanation: &mut Vec<Msg>, max: usize) {
    if evidence.len() > max {
        let left = evidence.len() - max;
        evidence.truncate(max);
        evidence.shrink_to_fit();
        explanation.push(Msg::new("evidence-left-out").n("left", left));
    }
}

/// A finding's evidence gathered from more items than it keeps: the first `max` in report
/// order (`sort_evidence`), sorted and cut as they come, and how many came. Exact: an item that
/// has `max` items before it among those seen so far has them before it among all (the order
/// is by time, vantage, then arrival). Gathered whole and cut at the end, `weak_network`'s
/// list held every retransmission of the capture: ~42 MB of the 20 GB synth's rules peak.
pub struct FirstEvidence {
    items: Vec<Evidence>,
    seen: usize,
    max: usize,
}

impl FirstEvidence {
    pub fn new(max: usize) -> Self {
        FirstEvidence {
            items: Vec::new(),
            seen: 0,
            max,
        }
    }

    pub fn push(&mut self, e: Evidence) {
        self.seen += 1;
        self.items.push(e);
        // Twice the room it keeps, and some: a sort every `max` items or more.
        if self.items.len() >= 2 * self.max + 64 {
            sort_evidence(&mut self.items);
            self.items.truncate(self.max);
        }
    }

    /// The items kept, in report order; with `cut_evidence`'s sentence when some were left out.
    pub fn finish(mut self, explanation: &mut Vec<Msg>) -> Vec<Evidence> {
        sort_evidence(&mut self.items);
        self.items.truncate(self.max);
        self.items.shrink_to_fit();
        let left = self.seen - self.items.len();
        if left > 0 {
            explanation.push(Msg::new("evidence-left-out").n("left", left));
        }
        self.items
    }
}

/// Fills a finding's sentences from its messages, in the catalog's language, and lets the
/// messages go: nothing reads them after (a diagnosis is rendered once, in one language), and
/// rendered beside them, the 2 GB churn synth's ten thousand agent outages made the rendering
/// the diagnosis' peak (heaptrack: the messages' arguments 5.3 MB, the sentences 6.3).
pub fn render_finding(cat: &Catalog, f: &mut Finding) {
    let text = std::mem::take(&mut f.text);
    if let Some(m) = &text.summary {
        f.summary = cat.render(m);
    }
    if !text.explanation.is_empty() {
        f.explanation = cat.sentences(&text.explanation);
    }
    if let Some(m) = &text.recommendation {
        f.recommendation = cat.render(m);
    }
    drop(text);
    for e in &mut f.evidence {
        if let Some(m) = e.what_msg.take() {
            e.what = cat.render(&m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gathered a few at a time, the evidence kept is what sorting and cutting the whole list
    /// keeps (`cut_evidence`), ties in time and vantage in arrival order, with the same
    /// sentence on what was left out; whatever the cap.
    #[test]
    fn first_evidence_keeps_what_a_sort_and_cut_of_all_keeps() {
        // Many ties: 1 000 items over 37 instants and two vantages, out of order.
        let item = |k: u64| Evidence {
            vantage: if k.is_multiple_of(3) { "b" } else { "a" }.into(),
            file: "f.pcap".into(),
            frame: k,
            ts: Timestamp(((k * 7919) % 37) as i64),
            what: String::new(),
            what_msg: None,
        };
        let key = |e: &Evidence| (e.frame, e.ts, e.vantage.to_string());
        for max in [0, 1, 3, 50, 999, 1000, 2000] {
            let mut all: Vec<Evidence> = (0..1000).map(item).collect();
            let mut said = Vec::new();
            sort_evidence(&mut all);
            cut_evidence(&mut all, &mut said, max);
            let mut first = FirstEvidence::new(max);
            (0..1000).map(item).for_each(|e| first.push(e));
            let mut told = Vec::new();
            let kept = first.finish(&mut told);
            assert_eq!(
                kept.iter().map(key).collect::<Vec<_>>(),
                all.iter().map(key).collect::<Vec<_>>(),
                "max {max}"
            );
            assert_eq!(told, said, "max {max}");
        }
    }
}
