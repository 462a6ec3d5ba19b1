//! A diagnosis's findings, in report order, each written as the rules make it.
//!
//! A finding is rendered in the report's language as soon as a rule has made it, encoded
//! (`tcp::kept::Codec`) and written to a temporary file (`tcp::spill`, the store a one-capture
//! diagnosis keeps its finished connections in); the report reads them back one at a time.
//! Held as `Finding`s until the report, they were what set the peak of a long capture's
//! diagnosis: an agent that loses its connection is one finding with every window's
//! connections, evidence, sentences and Wireshark filter, ~6 KB for the 20 GB synth's agents
//! (~7 windows each), ~120 MB of that run's 258 MiB. What stays in memory is 24 bytes a
//! finding: where its record is, its kind and severity (which the reports count without
//! reading it).

use std::sync::Arc;

use serde::ser::SerializeSeq as _;

use super::{
    cut_evidence, render_finding, sort_evidence, Catalog, DisplayFilter, Evidence, Finding,
    FindingKind, FindingText, Msg, Numbers, Severity,
};
use crate::tcp::kept::{codec_enum, codec_refused, codec_struct, get_bytes, put_bytes, Codec};
use crate::tcp::spill::{Sealed, Spill};

codec_enum!(Severity {
    Info,
    Warning,
    Critical
});
codec_enum!(FindingKind {
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
});
// A finding is rendered before it is written: a message left in it refuses the encoding, and
// the finding stays in memory (`Place::Held`).
codec_refused!(Msg);
codec_struct!(FindingText {
    summary,
    explanation,
    recommendation,
    hop
});
codec_struct!(Evidence {
    vantage,
    file,
    frame,
    ts,
    what,
    what_msg
});
codec_struct!(DisplayFilter {
    vantage,
    file,
    filter
});
codec_struct!(Numbers {
    estimate_s,
    lower_s,
    upper_s,
    spread_s,
    samples,
    acts,
    known_defaults,
    hop,
    silence_s,
    silence_max_s,
    client_believed_s,
    server_believed_s,
    retransmissions,
    lost_segments,
    outage_s,
    reconnect_attempts,
    failed_handshakes,
    detection_delay_s,
    backoff_s,
    heartbeat_median_s,
    heartbeat_p95_s,
    heartbeat_max_s,
});
codec_struct!(Finding {
    id,
    kind,
    severity,
    summary,
    explanation,
    connections,
    evidence,
    display_filters,
    recommendation,
    single_vantage,
    numbers,
    text
});

/// As a `String` is written (`tcp::kept`). The names a vantage and a file are shared by
/// (`Ctx::files`); each read back is its own.
impl Codec for Arc<str> {
    fn put(&self, w: &mut Vec<u8>) -> bool {
        put_bytes(self.as_bytes(), w)
    }
    fn get(r: &mut &[u8]) -> Option<Self> {
        std::str::from_utf8(get_bytes(r)?).ok().map(Arc::from)
    }
}

/// As a `String` is written.
impl Codec for crate::align::LineId {
    fn put(&self, w: &mut Vec<u8>) -> bool {
        put_bytes(self.as_str().as_bytes(), w)
    }
    fn get(r: &mut &[u8]) -> Option<Self> {
        std::str::from_utf8(get_bytes(r)?).ok().map(Self::new)
    }
}

/// `Numbers::acts`, one of the words the rules write; any other refuses the encoding.
impl Codec for &'static str {
    fn put(&self, w: &mut Vec<u8>) -> bool {
        ACTS.iter()
            .position(|a| a == self)
            .is_some_and(|i| (i as u8).put(w))
    }
    fn get(r: &mut &[u8]) -> Option<Self> {
        ACTS.get(usize::from(u8::get(r)?)).copied()
    }
}

const ACTS: [&str; 2] = ["timer", "next_packet"];

/// Where a finding is: a record in the store, or in memory (one the encoding refused).
#[derive(Clone, Copy, Debug)]
enum Place {
    Record { at: u64, len: u32 },
    Held(u32),
}

/// A finding's place, and what the reports count without reading it.
#[derive(Clone, Copy, Debug)]
struct Entry {
    place: Place,
    kind: FindingKind,
    severity: Severity,
}

/// The findings of a diagnosis, in report order (most severe first, then in the rules' order);
/// F1, F2, ... follow it. Read one at a time (`iter`, `get`), each decoded anew.
#[derive(Clone, Default)]
pub struct Findings {
    entries: Vec<Entry>,
    records: Arc<Sealed>,
    held: Arc<[Finding]>,
}

impl std::fmt::Debug for Findings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Findings {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The findings in report order, each read and decoded as the iterator reaches it.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            findings: self,
            range: 0..self.len(),
        }
    }

    /// Each finding's kind and severity, in report order, without reading it.
    pub fn kinds(&self) -> impl ExactSizeIterator<Item = (FindingKind, Severity)> + '_ {
        self.entries.iter().map(|e| (e.kind, e.severity))
    }

    /// The `i`-th finding in report order (its id is F{i + 1}). Panics if `i` is out of range,
    /// or if the temporary file, read back whole once already when the rules were done
    /// (`FindingSink::finish`), cannot be read again: the disk failing under us, as
    /// `align::Alignment::connection` says of its own.
    pub fn get(&self, i: usize) -> Finding {
        let e = self.entries[i];
        let mut f = match e.place {
            Place::Held(k) => self.held[k as usize].clone(),
            Place::Record { at, len } => {
                let read = self.records.record(at, len).and_then(|rec| {
                    let mut r = &rec[..];
                    match Finding::get(&mut r) {
                        Some(f) if r.is_empty() => Ok(f),
                        _ => Err(crate::tcp::spill::invalid(&format!(
                            "the finding at byte {at}"
                        ))),
                    }
                });
                read.unwrap_or_else(|e| {
                    panic!("the temporary file of findings could not be read again: {e}")
                })
            }
        };
        f.id = format!("F{}", i + 1);
        f
    }

    /// The finding whose id is `id` (F1, F2, ...).
    pub fn by_id(&self, id: &str) -> Option<Finding> {
        let i: usize = id.strip_prefix('F')?.parse().ok()?;
        (1..=self.len()).contains(&i).then(|| self.get(i - 1))
    }
}

/// The findings in report order, each read as it is reached (`Findings::get`).
pub struct Iter<'a> {
    findings: &'a Findings,
    range: std::ops::Range<usize>,
}

impl Iterator for Iter<'_> {
    type Item = Finding;

    fn next(&mut self) -> Option<Finding> {
        self.range.next().map(|i| self.findings.get(i))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.range.size_hint()
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a Findings {
    type Item = Finding;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// Findings already rendered, ordered as a diagnosis's are: most severe first, and among equals
/// in the order given (what a test builds a report from).
impl FromIterator<Finding> for Findings {
    fn from_iter<I: IntoIterator<Item = Finding>>(items: I) -> Self {
        let mut store = Store::in_memory();
        for f in items {
            store.push(f, 0);
        }
        store.finish()
    }
}

/// Written as a list, each finding as it is read.
impl serde::Serialize for Findings {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.len()))?;
        for f in self.iter() {
            seq.serialize_element(&f)?;
        }
        seq.end()
    }
}

/// Encoded findings as they come, each with the key of its place in the report.
struct Store {
    spill: Spill,
    scratch: Vec<u8>,
    /// (key, entry), in the order pushed.
    entries: Vec<(u64, Entry)>,
    held: Vec<Finding>,
}

impl Store {
    /// One that writes to a temporary file if one can be made.
    fn new() -> Self {
        Self::with(Spill::new())
    }

    /// One that keeps its records in memory.
    fn in_memory() -> Self {
        Self::with(Spill::default())
    }

    fn with(spill: Spill) -> Self {
        Store {
            spill,
            scratch: Vec::new(),
            entries: Vec::new(),
            held: Vec::new(),
        }
    }

    fn push(&mut self, f: Finding, key: u64) {
        self.scratch.clear();
        let (kind, severity) = (f.kind, f.severity);
        let len = f
            .put(&mut self.scratch)
            .then(|| u32::try_from(self.scratch.len()).ok());
        let place = match len.flatten() {
            Some(len) => Place::Record {
                at: self.spill.write_record(&self.scratch),
                len,
            },
            None => {
                self.held.push(f);
                Place::Held(self.held.len() as u32 - 1)
            }
        };
        self.entries.push((
            key,
            Entry {
                place,
                kind,
                severity,
            },
        ));
    }

    /// The findings in report order: most severe first, then by key (a stable sort: the
    /// order pushed among equal keys).
    fn finish(mut self) -> Findings {
        let mut check = |mut rec: &[u8]| Finding::get(&mut rec).is_some() && rec.is_empty();
        let (records, error) = self.spill.seal(&mut check);
        if let Some(e) = error {
            // Written by this process a moment ago: only the disk failing under us ends here.
            panic!("the temporary file of findings could not be read back: {e}");
        }
        let mut entries = self.entries;
        entries.sort_by_key(|(key, e)| report_order(e.severity, *key));
        let entries: Vec<Entry> = entries.into_iter().map(|(_, e)| e).collect();
        Findings {
            entries,
            records: Arc::new(records),
            held: self.held.into(),
        }
    }
}

/// Where the rules put their findings, as they make them: each finding's evidence sorted and
/// cut to the cap, its sentences rendered in the report's language, then written (`Store`).
/// The findings the verdict reads (the deaths', the idle timeout's and a weak network's: a few,
/// grouped) are kept whole, unrendered, beside it (`verdict_reads`).
pub struct FindingSink<'c> {
    store: Store,
    cat: &'c Catalog,
    max_evidence: usize,
    /// The key of the next finding: the rules' order.
    next: u64,
    /// (key, finding) of the kinds `rules::verdict` reads.
    verdict_reads: Vec<(u64, Finding)>,
}

impl<'c> FindingSink<'c> {
    pub fn new(cat: &'c Catalog, max_evidence: usize) -> Self {
        FindingSink {
            store: Store::new(),
            cat,
            max_evidence,
            next: 0,
            verdict_reads: Vec::new(),
        }
    }

    /// A finding, after those pushed before it.
    pub fn push(&mut self, f: Finding) {
        let key = self.reserve(1);
        self.push_at(f, key);
    }

    /// Keys for `n` findings that come after those pushed so far, pushed in any order
    /// (`push_at`): the first is returned.
    pub fn reserve(&mut self, n: usize) -> u64 {
        let first = self.next;
        self.next += n as u64;
        first
    }

    /// A finding at `key` of the report's order (from `reserve`).
    pub fn push_at(&mut self, mut f: Finding, key: u64) {
        sort_evidence(&mut f.evidence);
        cut_evidence(&mut f.evidence, &mut f.text.explanation, self.max_evidence);
        if verdict_reads(f.kind) {
            self.verdict_reads.push((key, f.clone()));
        }
        render_finding(self.cat, &mut f);
        self.store.push(f, key);
    }

    /// The findings the verdict reads, in report order, and every finding.
    pub fn finish(mut self) -> (Vec<Finding>, Findings) {
        // As `Store::finish` orders them: the verdict reads the first death in report order.
        self.verdict_reads
            .sort_by_key(|(key, f)| report_order(f.severity, *key));
        let reads = self.verdict_reads.into_iter().map(|(_, f)| f).collect();
        (reads, self.store.finish())
    }
}

/// A finding's place in the report: most severe first, then by its key (the rules' order).
fn report_order(severity: Severity, key: u64) -> (std::cmp::Reverse<Severity>, u64) {
    (std::cmp::Reverse(severity), key)
}

/// The kinds `rules::verdict` reads.
fn verdict_reads(k: FindingKind) -> bool {
    matches!(
        k,
        FindingKind::MiddleboxReset
            | FindingKind::MiddleboxClose
            | FindingKind::SilentDrop
            | FindingKind::IdleTimeout
            | FindingKind::WeakNetwork
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{read_vantages, VantageSpec};

    /// The findings of four of the lab's scenarios, each diagnosed from all its captures, as a
    /// report reads them; checked on the way: ids by place, kinds without reading, by id, and
    /// written as a list as the findings they hold would be.
    fn real_findings() -> Vec<Finding> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        let mut all = Vec::new();
        for s in [
            "conntrack-reject",
            "conntrack-drop",
            "haproxy-fin",
            "weak-network",
        ] {
            let specs: Vec<VantageSpec> = std::fs::read_dir(root.join(s))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "pcap" || x == "pcapng"))
                .filter(|p| {
                    let name = p.file_name().unwrap().to_string_lossy();
                    !name.contains("unshifted") && !name.starts_with("slb-")
                })
                .map(|path| VantageSpec {
                    name: path.file_stem().unwrap().to_string_lossy().into_owned(),
                    path,
                })
                .collect();
            let (v, errors) = read_vantages(&specs);
            assert!(errors.is_empty(), "{s}: {errors:?}");
            let al = crate::align::align(v, &crate::align::AlignOptions::default());
            let d = super::super::diagnose(&al);
            assert!(!d.findings.is_empty(), "{s}");
            let read: Vec<Finding> = d.findings.iter().collect();
            assert_eq!(read.len(), d.findings.len());
            for (i, f) in read.iter().enumerate() {
                assert_eq!(f.id, format!("F{}", i + 1));
                assert_eq!(d.findings.kinds().nth(i), Some((f.kind, f.severity)), "{s}");
                assert_eq!(
                    format!("{:?}", d.findings.by_id(&f.id)),
                    format!("{:?}", Some(f))
                );
            }
            assert!(read.windows(2).all(|w| w[0].severity >= w[1].severity));
            for id in ["F0", "F", "X1", &format!("F{}", read.len() + 1)] {
                assert!(d.findings.by_id(id).is_none(), "{id}");
            }
            assert_eq!(
                serde_json::to_string(&d.findings).unwrap(),
                serde_json::to_string(&read).unwrap()
            );
            all.extend(read);
        }
        all
    }

    fn without_id(f: &Finding) -> String {
        format!(
            "{:?}",
            Finding {
                id: String::new(),
                ..f.clone()
            }
        )
    }

    /// Every real finding, written many times over (so that blocks go to the temporary file and
    /// the last stays in memory), comes back as it was made, in report order: most severe first,
    /// then by key, whatever order the keys were pushed in.
    #[test]
    fn every_finding_reads_back_as_made_in_report_order() {
        let made = real_findings();
        let kinds: std::collections::BTreeSet<_> = made.iter().map(|f| f.kind.name()).collect();
        for k in [
            "middlebox_reset",
            "idle_timeout",
            "agent_outage",
            "weak_network",
        ] {
            assert!(kinds.contains(k), "{k}: {kinds:?}");
        }
        let copies = 200;
        let n = made.len() * copies;
        let mut store = Store::new();
        assert_eq!(store.spill.on_disk(), Some(0), "a temporary file");
        // Keys from the last to the first: the order read is the keys', not the pushes'.
        for k in (0..n).rev() {
            store.push(made[k % made.len()].clone(), k as u64);
        }
        assert!(store.spill.on_disk() > Some(0), "a block went to the file");
        assert!(store.held.is_empty(), "every rendered finding encodes");
        let findings = store.finish();
        assert_eq!(findings.len(), n);
        let mut expected: Vec<(usize, &Finding)> =
            (0..n).map(|k| (k, &made[k % made.len()])).collect();
        expected.sort_by_key(|(k, f)| (std::cmp::Reverse(f.severity), *k));
        for (i, (f, (_, want))) in findings.iter().zip(&expected).enumerate() {
            assert_eq!(f.id, format!("F{}", i + 1));
            assert_eq!(without_id(&f), without_id(want), "F{}", i + 1);
        }
    }

    /// A finding the encoding refuses (a message not rendered yet; an `acts` word the rules do
    /// not write) stays in memory, in its place among the others.
    #[test]
    fn a_finding_the_encoding_refuses_is_held_in_its_place() {
        let made = real_findings();
        let mut unrendered = made[0].clone();
        unrendered.text.summary = Some(Msg::new("ao-rec"));
        let mut odd = made[0].clone();
        odd.numbers.acts = Some("sometimes");
        let mut store = Store::in_memory();
        store.push(made[1].clone(), 0);
        store.push(unrendered.clone(), 1);
        store.push(odd.clone(), 2);
        assert_eq!(store.held.len(), 2);
        let findings = store.finish();
        let read: Vec<Finding> = findings.iter().collect();
        assert_eq!(read.len(), 3);
        let mut want = [made[1].clone(), unrendered, odd];
        want.sort_by_key(|f| std::cmp::Reverse(f.severity));
        for (f, w) in read.iter().zip(&want) {
            assert_eq!(without_id(f), without_id(w));
        }
    }
}
