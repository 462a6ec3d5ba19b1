//! Live TCP connections silent for minutes, parked encoded (`Codec`) out of the live table
//! until their next packet, or the end of the capture, brings them back (`Parked::take`).
//!
//! An agent whose PC was switched off, unplugged or put to sleep leaves its connection open
//! without a FIN: nothing more comes on it, and the tracker keeps it live to the end of the
//! capture, since a middlebox's RST may still come, or the agent's next packet. On the 2 GB
//! synth 5 700 such connections were live at the end beside ~20 000 busy ones, ~2.4 KB each
//! (the table's slot, the reassemblers, the WebSocket state, the heartbeat log, the SIP
//! records): they made the end of reading the run's peak. Parked, each is an entry here
//! (~100 bytes) and its encoding (~1.2 KB, most of it the heartbeat log) in an unnamed
//! temporary file (`Disk`), or in memory without one.
//!
//! Parking changes nothing a report says: a parked connection comes back, every field as it
//! was, before anything reads it (its next packet, an eviction, the end of tracking), and
//! counts as live for the caps and `peak_live` (`Tracker::live_connections`). A connection holding
//! what the encoding refuses (segments waiting for a hole to fill, a parser that lost the
//! framing, events or counts only `flows` prints, packet samples for the alignment) stays in
//! the table. One whose record the file no longer holds is lost, and the warnings say so
//! (`w-parked-lost`).

use super::kept::{codec_struct, Codec};
use super::{AppState, FlowKey, Live, LiveConn, LiveDir, LiveGap, Profile, SeqState};
use crate::capture::Timestamp;

/// Silent this long, a connection is parked: Zeek's `tcp_inactivity_timeout` (5 min,
/// `init-bare.zeek`), after which Zeek would have forgotten it. Well above the heartbeats these
/// connections carry (the web-phone checks its every 45 s), so a busy connection is not
/// parked; and one parked comes back whole, so the choice costs time (an encoding and a
/// decoding), never an answer.
pub const PARK_AFTER_NS: i64 = 300_000_000_000;

/// How often the live table is looked through for connections to park, in capture time: a
/// visit of every live connection, so not at every sweep (once a second).
const SCAN_EVERY_NS: i64 = 60_000_000_000;

codec_struct!(LiveGap {
    from_ts,
    ns,
    from_frame,
    to_frame
});
codec_struct!(Profile {
    packets,
    ttl_values,
    ttl_counts,
    ttl_min,
    ttl_max,
    ip_ids,
    ip_id_zero,
    ip_id_small_step,
    ip_id_last
});
codec_struct!(SeqState {
    isn,
    saw_syn,
    next,
    seen_end,
    fin_seen,
    profile
});
codec_struct!(LiveDir {
    pkts,
    ip_bytes,
    bytes,
    payload_bytes_sent,
    first_ts,
    last_ts,
    retransmissions,
    keepalives,
    zero_windows,
    gaps,
    samples,
    retransmitted,
    first_data_ts,
    first_data_frame
});
codec_struct!(LiveConn {
    ts,
    last_ts,
    first_frame,
    last_frame,
    orig,
    resp,
    termination,
    app,
    mid_stream,
    reused_port
});
codec_struct!(FlowKey {
    lo,
    hi,
    vlan,
    proto
});
codec_struct!(AppState {
    client,
    server,
    session
});
codec_struct!(Live {
    key,
    seen_last_ts,
    n_silences,
    orig_is_lo,
    broken_by_resp,
    handshake,
    silences,
    max_idle,
    syn_ts,
    rtt_ns,
    orig_seq,
    resp_seq,
    zeek,
    app,
    conn
});

/// One parked connection: what `evict`, `summarise_live` and `stream_rest` order connections
/// by, read without decoding, and where its encoding is.
struct Entry {
    start: (Timestamp, u64),
    seen_last_ts: Timestamp,
    rec: Rec,
}

enum Rec {
    /// In the temporary file (`Disk`): its first byte, its length, and a hash of its bytes
    /// (`sum`): the file is out of this process' hands, and a record changed there must not
    /// come back as a connection.
    Disk { at: u64, len: u32, sum: u32 },
    /// In memory: no temporary file could be made, or a write to it failed.
    Memory(Box<[u8]>),
}

/// Records written to an unnamed temporary file as connections are parked (`spill::Spill`, as
/// the digests and the connections kept whole are: 64 KiB a write), read back (`pread`) as
/// they come back. Those brought back leave their bytes behind: once those are most of the
/// file, and at least `compact_from`, the records still parked are copied to a new file.
struct Disk {
    /// Always with a file (`new`); after a write failed, the block it failed on stays in
    /// memory, readable, and the connections parked after wait in memory (`Rec::Memory`).
    spill: super::spill::Spill,
    /// Bytes of records brought back.
    dead: u64,
}

/// A record's check (`Rec::Disk`): 32 bits of a fixed-seed hash.
fn sum(rec: &[u8]) -> u32 {
    use std::hash::BuildHasher;
    foldhash::quality::FixedState::with_seed(0x7061_726b).hash_one(rec) as u32
}

/// Bytes left behind in the file before it is compacted (and they must be most of it).
const COMPACT_FROM: u64 = 32 * 1024 * 1024;

impl Disk {
    /// `None` if no temporary file can be made.
    fn new() -> Option<Self> {
        let spill = super::spill::Spill::new();
        spill.file.is_some().then_some(Disk { spill, dead: 0 })
    }

    /// Appends `rec`, and says where it is; `None` once a write failed. `flush_each`: every
    /// record written as it comes (tests).
    fn push(&mut self, rec: &[u8], flush_each: bool) -> Option<Rec> {
        if self.spill.failed {
            return None;
        }
        let at = self.spill.pending() as u64;
        let len = u32::try_from(rec.len()).ok()?;
        self.spill.block().extend_from_slice(rec);
        if flush_each {
            self.spill.flush();
        } else {
            self.spill.wrote();
        }
        Some(Rec::Disk {
            at,
            len,
            sum: sum(rec),
        })
    }

    /// The record at `at`, into `out`, if its bytes hash to `want`.
    fn read(&self, at: u64, len: u32, want: u32, out: &mut Vec<u8>) -> std::io::Result<()> {
        out.clear();
        let s = &self.spill;
        match (at.checked_sub(s.written), s.file.as_ref()) {
            // Not written yet, or kept in memory after a write failed: a block holds whole
            // records, one after another from `written`.
            (Some(off), _) => {
                let mut off = usize::try_from(off).unwrap_or(usize::MAX);
                let block = s.blocks.iter().chain([&s.block]).find(|b| {
                    let here = off < b.len();
                    if !here {
                        off -= b.len();
                    }
                    here
                });
                let b = block.and_then(|b| b.get(off..off.checked_add(len as usize)?));
                let b = b.ok_or_else(|| std::io::Error::other("a parked record out of bounds"))?;
                out.extend_from_slice(b);
            }
            (None, Some(f)) => {
                out.resize(len as usize, 0);
                super::spill::read_at(f, out, at)?;
            }
            (None, None) => return Err(std::io::Error::other("no parked file")),
        }
        match sum(out) == want {
            true => Ok(()),
            false => Err(std::io::Error::other(format!(
                "the record at byte {at} changed"
            ))),
        }
    }
}

/// The parked connections, by key: each its key and entry in a list, found through a table of
/// their places in it. The 20 GB synth parks 59 000 connections (agents that vanished and
/// stay live to the end), and a map of keys to entries (97 bytes a bucket, half of its buckets
/// empty after it doubled, and both tables at once while it did) was 15.9 MB of its peak heap
/// of 70.8 (heaptrack): its largest part after the live table. The table's buckets are 5
/// bytes.
pub(super) struct Parked {
    /// Places in `entries`, by their key's hash (`FlowKey::hash_with`).
    index: hashbrown::HashTable<u32>,
    entries: Vec<(FlowKey, Entry)>,
    /// The hash's seed, random as `LiveTable`'s is.
    seed: u64,
    /// Made at the first connection parked; `None` after, if none could be made.
    disk: Option<Disk>,
    tried_disk: bool,
    /// When the live table was last looked through (`due`).
    scanned: Option<Timestamp>,
    scratch: Vec<u8>,
    /// Connections parked, and brought back, since the start (a connection can be both
    /// several times).
    pub parks: u64,
    pub returns: u64,
    pub compactions: u64,
    /// Connections whose record could not be read back, and the first error.
    pub lost: u64,
    pub lost_error: Option<std::io::Error>,
    /// Every record written as it comes, and `COMPACT_FROM` smaller, in tests; after a
    /// compaction failed, twice the bytes left behind then.
    flush_each: bool,
    compact_from: u64,
}

impl Default for Parked {
    fn default() -> Self {
        Parked {
            index: hashbrown::HashTable::new(),
            entries: Vec::new(),
            seed: super::random_seed(),
            disk: None,
            tried_disk: false,
            scanned: None,
            scratch: Vec::new(),
            parks: 0,
            returns: 0,
            compactions: 0,
            lost: 0,
            lost_error: None,
            flush_each: false,
            compact_from: COMPACT_FROM,
        }
    }
}

impl Parked {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn contains(&self, k: &FlowKey) -> bool {
        !self.entries.is_empty() && self.place(k).is_some()
    }

    /// Where the entry of `k` is in `entries`, if there is one.
    fn place(&self, k: &FlowKey) -> Option<usize> {
        let entries = &self.entries;
        self.index
            .find(k.hash_with(self.seed), |&i| entries[i as usize].0 == *k)
            .map(|&i| i as usize)
    }

    /// `e` under `k`, in the place of the entry `k` had, if it had one.
    fn insert(&mut self, k: FlowKey, e: Entry) {
        if let Some(i) = self.place(&k) {
            self.entries[i].1 = e;
            return;
        }
        // Fewer than 2^32 parked connections: each was a live one first, within `max_live`.
        let i = self.entries.len() as u32;
        self.entries.push((k, e));
        let (entries, seed) = (&self.entries, self.seed);
        self.index.insert_unique(k.hash_with(seed), i, |&j| {
            entries[j as usize].0.hash_with(seed)
        });
    }

    /// The entry of `k`, taken out: the last entry takes its place in the list.
    fn remove(&mut self, k: &FlowKey) -> Option<Entry> {
        let entries = &self.entries;
        let found = self
            .index
            .find_entry(k.hash_with(self.seed), |&i| entries[i as usize].0 == *k)
            .ok()?;
        let i = *found.get() as usize;
        found.remove();
        let last = self.entries.len() - 1;
        if i != last {
            let moved = self.entries[last].0.hash_with(self.seed);
            if let Some(at) = self.index.find_mut(moved, |&j| j as usize == last) {
                *at = i as u32;
            }
        }
        Some(self.entries.swap_remove(i).1)
    }

    /// Whether the live table is due a look for connections to park, at `now`, with `after`
    /// the silence that parks one (`TrackerOptions::park_after_ns`): at most every
    /// `SCAN_EVERY_NS` (or every `after`, if shorter).
    pub fn due(&mut self, now: Timestamp, after: i64) -> bool {
        if after == i64::MAX {
            return false;
        }
        let every = SCAN_EVERY_NS.min(after);
        match self.scanned {
            Some(t) if now.0.saturating_sub(t.0) < every => false,
            _ => {
                self.scanned = Some(now);
                true
            }
        }
    }

    /// Whether `l`, silent since its last packet at `now`, is one to park: TCP, not closed
    /// (a closed one is the sweep's, `ended_at`), silent at least `after`, and it carried data.
    /// One that never did (half-open, or a handshake and nothing after) is little more than
    /// its slot in the table, and a flood of them is the cap's (`max_live`): parked, a
    /// million SYNs sent over 83 minutes took twice the CPU (an encoding, a write, a read and
    /// a decoding each) to save 5 % of the memory.
    pub fn wants(l: &Live, now: Timestamp, after: i64) -> bool {
        now.0.saturating_sub(l.seen_last_ts.0) >= after
            && l.zeek.as_ref().is_some_and(|z| !z.either_closed())
            && (l.conn.orig.first_data_frame != 0 || l.conn.resp.first_data_frame != 0)
    }

    /// Parks a copy of `l` if the encoding keeps all of it (the caller then drops `l`);
    /// false, with nothing parked, if it does not.
    pub fn park(&mut self, l: &Live) -> bool {
        self.scratch.clear();
        if !l.put(&mut self.scratch) {
            return false;
        }
        self.parks += 1;
        #[cfg(test)]
        PARKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if !std::mem::replace(&mut self.tried_disk, true) {
            self.disk = Disk::new();
        }
        let flush_each = self.flush_each;
        let rec = self
            .disk
            .as_mut()
            .and_then(|d| d.push(&self.scratch, flush_each))
            .unwrap_or_else(|| Rec::Memory(self.scratch.as_slice().into()));
        let e = Entry {
            start: (l.conn.ts, l.conn.first_frame),
            seen_last_ts: l.seen_last_ts,
            rec,
        };
        self.insert(l.key, e);
        true
    }

    /// The connection parked under `k`, taken back; `None` if none is, or if its record
    /// could not be read back from the file as it was written (counted in `lost`, for the
    /// warnings).
    pub fn take(&mut self, k: &FlowKey) -> Option<Live> {
        if self.entries.is_empty() {
            return None;
        }
        let e = self.remove(k)?;
        self.returns += 1;
        let mut bytes = std::mem::take(&mut self.scratch);
        let read = match (&e.rec, self.disk.as_mut()) {
            (Rec::Memory(b), _) => Ok(&b[..]),
            (&Rec::Disk { at, len, sum }, Some(d)) => {
                d.dead += u64::from(len);
                d.read(at, len, sum, &mut bytes).map(|()| &bytes[..])
            }
            (Rec::Disk { .. }, None) => Err(std::io::Error::other("no parked file")),
        };
        let decoded = read.and_then(|mut r| match Live::get(&mut r) {
            Some(l) if r.is_empty() => Ok(l),
            _ => Err(std::io::Error::other("a parked connection did not decode")),
        });
        let l = match decoded {
            Ok(l) => Some(l),
            Err(e) => {
                self.lost += 1;
                self.lost_error.get_or_insert(e);
                None
            }
        };
        self.scratch = bytes;
        self.compact();
        l
    }

    /// Once most of the file is records brought back, and at least `compact_from` bytes of
    /// it, the records still parked are copied to a new file, which replaces it. If that
    /// fails, the old file stays, and the next try waits for twice as many bytes left behind
    /// (tried again at every return, a full disk made each copy every record).
    fn compact(&mut self) {
        let Some(d) = self.disk.as_ref() else {
            return;
        };
        let total = d.spill.pending() as u64;
        if d.dead < self.compact_from || d.dead * 2 < total || d.spill.failed {
            return;
        }
        let failed = d.dead.saturating_mul(2).max(1);
        let Some(mut new) = Disk::new() else {
            self.compact_from = failed;
            return;
        };
        let mut moved = Vec::new();
        let mut rec = Vec::new();
        for (i, (_, e)) in self.entries.iter().enumerate() {
            if let Rec::Disk { at, len, sum } = e.rec {
                let ok = d.read(at, len, sum, &mut rec).is_ok();
                match new
                    .push(&rec, self.flush_each)
                    .filter(|_| ok && !new.spill.failed)
                {
                    Some(r) => moved.push((i, r)),
                    None => {
                        self.compact_from = failed;
                        return;
                    }
                }
            }
        }
        for (i, r) in moved {
            self.entries[i].1.rec = r;
        }
        self.disk = Some(new);
        self.compactions += 1;
    }

    /// Every parked connection's (start, first frame, key), as `summarise_live` and
    /// `stream_rest` order them.
    pub fn starts(&self) -> impl Iterator<Item = ((Timestamp, u64), FlowKey)> + '_ {
        self.entries.iter().map(|(k, e)| (e.start, *k))
    }

    /// Every parked connection's ((last packet, first frame), key), as `evict` orders them.
    pub fn ages(&self) -> impl Iterator<Item = ((Timestamp, u64), FlowKey)> + '_ {
        self.entries
            .iter()
            .map(|(k, e)| ((e.seen_last_ts, e.start.1), *k))
    }
}

#[cfg(test)]
pub(super) static PARKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[cfg(test)]
mod tests {
    use crate::tcp::TrackerOptions;

    /// What a tracker hands on, as text: every connection kept whole, every digest (where a
    /// kept one's record is aside: the order connections are written in is the store's own)
    /// and the connection it names, read back.
    fn describe(kept: &crate::tcp::Kept, out: &mut Vec<String>) {
        let (connections, digests) = kept;
        out.extend(connections.iter().map(|c| format!("{c:?}")));
        for d in digests.iter() {
            let mut digest = d.to_digest();
            let whole = digest.whole.take().is_some();
            out.push(format!("{digest:?} {whole}"));
            if let Some((file, at)) = digests.whole(&d) {
                out.push(format!("{:?}", file.read(&at).expect("read back")));
            }
        }
    }

    /// `describe` for every fixture tracked with `opts`, each capture's summary too.
    fn everything(opts: TrackerOptions) -> Vec<String> {
        let mut out = Vec::new();
        for p in crate::testing::fixture_captures() {
            let Ok(f) = crate::pipeline::track_capture_with(&p, opts) else {
                continue;
            };
            out.push(format!("{}: {:?}", p.display(), f.summary));
            describe(&(f.connections, f.digests), &mut out);
        }
        out
    }

    fn diagnosis() -> TrackerOptions {
        TrackerOptions {
            keep_samples: false,
            timeline: false,
            http_heads: false,
            app_details: false,
            digest: Some(crate::diagnose::rules::kept_as),
            ..TrackerOptions::default()
        }
    }

    /// Every live TCP connection parked after every packet of every fixture (so brought back
    /// at its next one): a diagnosis' tracker hands on exactly what it does unparked, and its
    /// warnings are the same. Parked in memory, and in the file, each record written as it
    /// comes and the file compacted whenever half of it was left behind.
    #[test]
    fn parked_after_every_packet_changes_nothing() {
        for on_disk in [false, true] {
            parked_after_every_packet(on_disk);
        }
    }

    fn parked_after_every_packet(on_disk: bool) {
        use crate::decode::Decoded;
        let (mut parks, mut returns, mut tcp, mut compacted) = (0, 0, 0, 0);
        for p in crate::testing::fixture_captures() {
            let Ok(mut r) = crate::capture::CaptureReader::open(&p) else {
                continue;
            };
            let name = p.display().to_string();
            let mut plain = crate::tcp::Tracker::with_options(
                name.clone(),
                TrackerOptions {
                    park_after_ns: i64::MAX,
                    ..diagnosis()
                },
            );
            let mut parking = crate::tcp::Tracker::with_options(
                name,
                TrackerOptions {
                    park_after_ns: 0,
                    ..diagnosis()
                },
            );
            // Without a file, as when none can be made.
            parking.parked.tried_disk = !on_disk;
            parking.parked.flush_each = true;
            parking.parked.compact_from = 0;
            while let Ok(Some(frame)) = r.next_frame() {
                if let Decoded::Ip(packet) = crate::decode::decode(&frame) {
                    tcp += u64::from(matches!(packet.transport, crate::decode::Transport::Tcp(_)));
                    plain.packet(&frame, &packet);
                    parking.packet(&frame, &packet);
                    parking.park_silent(frame.ts);
                    assert_eq!(plain.live_connections(), parking.live_connections());
                }
            }
            assert_eq!(
                parking.parked.disk.is_some(),
                on_disk && parking.parked.parks > 0
            );
            assert_eq!(parking.parked.lost, 0);
            parks += parking.parked.parks;
            compacted += parking.parked.compactions;
            returns += parking.parked.returns;
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let (kept, warnings) = plain.finish_kept();
            describe(&kept, &mut a);
            a.extend(warnings.iter().map(|w| w.to_string()));
            let (kept, warnings) = parking.finish_kept();
            describe(&kept, &mut b);
            b.extend(warnings.iter().map(|w| w.to_string()));
            assert_eq!(a.len(), b.len(), "{}", p.display());
            for (a, b) in a.iter().zip(&b) {
                assert_eq!(a, b, "{}", p.display());
            }
        }
        // Not vacuous: most TCP packets came to a connection parked.
        assert!(
            returns > tcp / 2 && parks >= returns,
            "{parks} {returns} {tcp}"
        );
        assert!(!on_disk || compacted > 100, "{compacted}");
    }

    /// A parked file that loses its records (cut to nothing under the tracker) costs the
    /// connections parked in it, and the warnings say how many; nothing panics.
    #[test]
    fn a_parked_file_cut_short_is_a_warning() {
        use crate::decode::Decoded;
        let (mut lost, mut warned) = (0, 0);
        for p in crate::testing::fixture_captures() {
            let Ok(mut r) = crate::capture::CaptureReader::open(&p) else {
                continue;
            };
            let opts = TrackerOptions {
                park_after_ns: 0,
                ..diagnosis()
            };
            let mut t = crate::tcp::Tracker::with_options(p.display().to_string(), opts);
            t.parked.flush_each = true;
            let mut n = 0;
            while let Ok(Some(frame)) = r.next_frame() {
                if let Decoded::Ip(packet) = crate::decode::decode(&frame) {
                    t.packet(&frame, &packet);
                    t.park_silent(frame.ts);
                    n += 1;
                    if n == 20 {
                        if let Some(f) = t.parked.disk.as_ref().and_then(|d| d.spill.file.as_ref())
                        {
                            f.set_len(0).expect("cut");
                        }
                    }
                }
            }
            lost += t.parked.lost;
            let during = t.parked.lost > 0;
            let (_, warnings) = t.finish_kept();
            let says = |w: &crate::capture::Warning| {
                w.to_string()
                    .contains("could not be read back from the temporary file they")
            };
            let said = warnings.iter().any(says);
            assert!(said || !during, "{}", p.display());
            warned += usize::from(said);
        }
        assert!(lost > 10 && warned > 3, "{lost} {warned}");
    }

    /// Parked at every sweep (a connection silent for a second of capture time is parked, and
    /// comes back at its next packet), tracking hands on exactly what it does unparked: on
    /// every fixture, for a diagnosis on one thread and two, for `flows`, and with packet
    /// samples (refused: those stay in the table).
    #[test]
    fn parking_every_connection_changes_nothing() {
        use std::sync::atomic::Ordering::Relaxed;
        let diagnosis = diagnosis();
        let flows = TrackerOptions {
            keep_samples: false,
            ..TrackerOptions::default()
        };
        let two = TrackerOptions {
            shards: 2,
            ..diagnosis
        };
        for opts in [diagnosis, two, flows, TrackerOptions::default()] {
            let never = everything(TrackerOptions {
                park_after_ns: i64::MAX,
                ..opts
            });
            let before = super::PARKS.load(Relaxed);
            let always = everything(TrackerOptions {
                park_after_ns: 0,
                ..opts
            });
            // (Other tests park too: this counts at least this one's.)
            let parks = super::PARKS.load(Relaxed) - before;
            assert!(never.len() > 300, "{}", never.len());
            assert_eq!(never.len(), always.len());
            for (a, b) in never.iter().zip(&always) {
                assert_eq!(a, b);
            }
            // Not vacuous: connections were parked (with packet samples, none is).
            assert!(opts.keep_samples || parks > 10, "{parks}");
        }
    }
}
