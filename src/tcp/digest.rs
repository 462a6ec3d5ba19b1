//! A finished connection that no rule of a one-capture diagnosis ends: what the alignment and
//! the rules that read across connections read from it, in ~90 bytes encoded (200 as a
//! `Digest`) where its summary (`Connection` and what it points to) is ~1.4 KB.
//!
//! On a busy capture most connections end normally, and each was kept whole until the rules ran
//! after the last packet: 93 000 summaries, 134 MB of the 2 GB synth's 207 MB heap peak
//! (heaptrack, `benches/RESULTS.md`). The tracker keeps a connection whole only when a rule may
//! end it (`TrackerOptions::digest` says which, from `diagnose::rules`), and this digest
//! otherwise. Which fields the rules read, and why, is in `diagnose::rules::digest_of`, the one
//! function that fills it.
//!
//! A digest is encoded as it is made (`DigestStore`) and stays encoded until the report: the
//! rules read it in place (`Digests`, `DigestRef`). Counts, frames and silences are varints
//! (the start time alone is fixed, for sorting and searching by it): 88 bytes a digest on the
//! 2 GB synth, where fixed widths took ~150, and what the rules hold for every connection a
//! capture saw (session 15, `benches/RESULTS.md`: 93 MB at 20 GB then). Past
//! `TrackerOptions::digests_in_memory` bytes the table is not read back into memory at all: it
//! is written in start order to a temporary file and read from there a block at a time
//! (`Paged`), so that what the rules hold a connection is 8 bytes, where it is.

use std::net::IpAddr;

use crate::boxed_list::BoxedList;
use crate::capture::Timestamp;
use crate::varint;

use super::kept::KeptAt;
use super::spill::Spill;
use super::zeek::CONN_STATES;
use super::{Proto, Side, Uid, TOP_GAPS};

#[derive(Clone, Debug, PartialEq)]
pub struct Digest {
    /// What a lined-up connection's leg names (`align::Leg`), as the summary has it.
    pub uid: Uid,
    pub proto: Proto,
    pub orig_h: IpAddr,
    pub orig_p: u16,
    pub resp_h: IpAddr,
    pub resp_p: u16,
    pub ts: Timestamp,
    pub first_frame: u64,
    pub last_frame: u64,
    /// Zeek's conn_state (the text report's table of lined-up connections).
    pub conn_state: Option<&'static str>,
    /// Who sent the FIN or RST that ended it, if one did (the verdict counts disconnects).
    pub ended_by: Option<Side>,
    /// The silences it lived through (those that ended before its last packet), seconds:
    /// `idle_timeout`'s lower bound. At most `TOP_GAPS`, the first `survived_n`.
    pub survived: [f64; TOP_GAPS],
    pub survived_n: u8,
    /// Retransmissions and data segments, both directions (`weak_network`).
    pub retransmissions: u64,
    pub data_segments: u64,
    /// The first retransmissions the evidence cites (time, frame): the originator's, then the
    /// responder's.
    pub retransmitted: BoxedList<(Timestamp, u64)>,
    /// When the server first answered usefully, and the frame (`agent_outage`'s recovery).
    pub recovery: Option<(Timestamp, u64)>,
    /// Where the connection is kept whole, when a rule may end it (`kept::KeptStore`): the
    /// rules read it whole from there, and through this digest otherwise.
    pub whole: Option<KeptAt>,
}

impl Digest {
    /// The silences it lived through, seconds.
    pub fn survived(&self) -> &[f64] {
        &self.survived[..usize::from(self.survived_n)]
    }

    /// `survived` and `survived_n` from a connection's survived silences: the first
    /// `TOP_GAPS` (the tracker keeps no more a connection).
    pub fn survived_from(silences: impl Iterator<Item = f64>) -> ([f64; TOP_GAPS], u8) {
        let mut survived = [0.0; TOP_GAPS];
        let mut n = 0;
        for (slot, s) in survived.iter_mut().zip(silences) {
            *slot = s;
            n += 1;
        }
        (survived, n)
    }
}

/// The tracker's digests while it tracks: each written as it comes, in ~90 bytes instead of
/// a `Digest`'s 200, to a temporary file (`Spill`), and read back, still encoded, when
/// tracking ends (`all`, `take_sorted`). On the 2 GB synth 74 000 digests were 15 MB of the
/// tracking's peak, beside the live connections; read back, they take the room those left. A
/// digest that cannot be encoded (a `conn_state` this module does not know) is refused
/// (`push`), and its connection kept whole.
#[derive(Default)]
pub struct DigestStore {
    spill: Spill,
    /// Other shards' spills, joined to this store (`join`), read as its own.
    joined: Vec<Spill>,
    /// What was read back (`all`); digests pushed after wait in `spill` for the next `all`.
    read: Digests,
    /// Digests encoded (in the files or the blocks), not read back yet.
    encoded: usize,
    error: Option<std::io::Error>,
}

impl DigestStore {
    /// A store that writes to a temporary file if one can be made.
    pub fn new() -> Self {
        DigestStore {
            spill: Spill::new(),
            ..Self::default()
        }
    }

    /// A store that keeps its blocks in memory.
    pub fn in_memory() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.encoded + self.read.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps `d`; false (nothing kept) if it cannot be encoded: its `conn_state` is not one
    /// of `CONN_STATES`, which every tracked TCP connection's is.
    pub fn push(&mut self, d: &Digest) -> bool {
        if !encode(d, self.spill.block()) {
            return false;
        }
        self.encoded += 1;
        self.spill.wrote();
        true
    }

    /// Every digest so far, read back (in no particular order) into a table that stays: the
    /// store holds nothing in its files or blocks after this.
    pub fn all(&mut self) -> &mut Digests {
        let mut read = std::mem::take(&mut self.read);
        self.read_into(&mut read);
        self.read = read;
        &mut self.read
    }

    /// Another shard's store joined to this one: its digests read back, in its files and
    /// blocks, and the stores its connections kept whole are in. A capture tracked on several
    /// threads joins its shards' so, and reads them back once (`all` or `take_sorted`): read
    /// back shard by shard and copied into one table, the 20 GB synth's were held twice for a
    /// moment (125.8 -> 161.2 MiB, the run's peak after reading).
    pub fn join(&mut self, mut other: DigestStore) {
        self.read.append(std::mem::take(&mut other.read));
        self.encoded += other.encoded;
        self.joined.push(other.spill);
        self.joined.append(&mut other.joined);
        if let Some(e) = other.error {
            self.error.get_or_insert(e);
        }
    }

    /// The store the digests' connections kept whole are in (`Digests::attach`), without
    /// reading the digests back.
    pub fn attach(&mut self, kept: super::kept::KeptFile) {
        self.read.attach(kept);
    }

    /// Bytes waiting in the files and blocks.
    fn pending(&self) -> usize {
        std::iter::once(&self.spill)
            .chain(&self.joined)
            .map(Spill::pending)
            .sum()
    }

    /// What waits in the files or the blocks, read into `t` after what it holds, with room
    /// made once for all of it.
    fn read_into(&mut self, t: &mut Digests) {
        use std::io::Read as _;
        let pending = self.pending();
        if pending == 0 {
            return;
        }
        t.reserve(self.encoded, pending);
        self.encoded = 0;
        for spill in std::iter::once(&mut self.spill).chain(&mut self.joined) {
            if let Some((f, written)) = spill.take_file() {
                // Straight into the table (a list in between was the file's size twice over).
                let start = t.bytes.len();
                let bytes = std::sync::Arc::make_mut(&mut t.bytes);
                let read = f.and_then(|f| f.take(written).read_to_end(bytes));
                // What was read, up to its last whole record (`read_to_end` keeps what came
                // before an error).
                let whole = t.index_from(start);
                let short = (whole < written as usize).then(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("{whole} of {written} bytes read back"),
                    )
                });
                if let Some(e) = read.err().or(short) {
                    self.error.get_or_insert(e);
                }
            }
            for b in spill.take_blocks() {
                // Encoded here, so whole.
                let start = t.bytes.len();
                std::sync::Arc::make_mut(&mut t.bytes).extend_from_slice(&b);
                t.index_from(start);
            }
        }
        self.joined.clear();
    }

    /// Every digest, in start order (`Digests::sort_by_start`). Past `in_memory` bytes of
    /// them, not yet read back, and given a temporary file, the table is kept in it
    /// (`Paged`): each record read from the spills one at a time and written in start order,
    /// so that only their order (24 bytes a digest, while it is made) and where each is (8)
    /// are in memory. The 20 GB synth's 757 816 digests are 75 MB, read back whole at the
    /// end of tracking and held through the rules: the run's peak (137 MiB, session 22). The
    /// store keeps its error (`error`).
    pub fn take_sorted(&mut self, in_memory: usize) -> Digests {
        if self.read.is_empty() && self.pending() > in_memory {
            if let Some(t) = self.page() {
                return t;
            }
        }
        self.all();
        let mut t = std::mem::take(&mut self.read);
        t.sort_by_start();
        t.shrink_to_fit();
        t
    }

    /// For tests: every digest (`all`), in no particular order.
    #[cfg(test)]
    pub(crate) fn into_table(mut self) -> Digests {
        self.all();
        let mut t = std::mem::take(&mut self.read);
        t.shrink_to_fit();
        t
    }

    /// Why digests were lost, if the temporary file could not be read back (`all`).
    pub fn error(&self) -> Option<&std::io::Error> {
        self.error.as_ref()
    }

    /// That error, taken.
    pub fn take_error(&mut self) -> Option<std::io::Error> {
        self.error.take()
    }

    /// The spills' records, in start order, written to a temporary file (`take_sorted`);
    /// `None`, with the spills as they were, if no file can be made or the spills are too
    /// many or too large for a record's place to fit in 64 bits (`Place`).
    fn page(&mut self) -> Option<Digests> {
        let spills = 1 + self.joined.len();
        if spills > Place::SPILLS || self.pending() as u64 >= Place::BYTES {
            return None;
        }
        let out = tempfile::tempfile().ok()?;
        let sources: Vec<super::spill::Sealed> = std::iter::once(&mut self.spill)
            .chain(&mut self.joined)
            .map(Spill::seal_unread)
            .collect();
        self.joined.clear();
        self.encoded = 0;
        // Each record's start order and place: what is read first, sorted, then read again.
        let mut order: Vec<(Timestamp, u64, Place)> = Vec::new();
        for (k, source) in sources.iter().enumerate() {
            let mut too_long = 0;
            let end = |b: &[u8]| Layout::of(b).map(|l| l.end);
            let e = source.scan(&end, &mut |at, rec| {
                if rec.len() >= Place::LEN {
                    // Not one `encode` wrote: a file changed under us.
                    too_long += 1;
                    return;
                }
                let (ts, first) = DigestRef(Rec::In(rec)).start_order();
                order.push((ts, first, Place::new(k, at, rec.len())));
            });
            let e = e.or_else(|| {
                (too_long > 0).then(|| {
                    super::spill::invalid(&format!("{too_long} records of the digests' file"))
                })
            });
            if let Some(e) = e {
                self.error.get_or_insert(e);
            }
        }
        // Unique keys: a capture's frame begins one connection.
        order.sort_unstable();
        let mut pages = PagesWriter::new(out);
        let mut at = Vec::with_capacity(order.len());
        let mut rec = Vec::new();
        for &(_, _, place) in &order {
            let (k, off, len) = place.get();
            rec.resize(len, 0);
            match sources[k].read(off, &mut rec) {
                Ok(()) => at.push(pages.push(&rec)),
                // Read once already (`scan`): only the disk failing under us ends here.
                Err(e) => {
                    self.error.get_or_insert(e);
                }
            }
        }
        drop(order);
        let mut t = Digests {
            paged: Some(std::sync::Arc::new(pages.finish())),
            at: std::sync::Arc::new(at),
            ..std::mem::take(&mut self.read)
        };
        t.shrink_to_fit();
        Some(t)
    }
}

/// Where a record waits in a store's spills (`DigestStore::page`), in 64 bits: the spill, the
/// offset in it (a file's, then its blocks', as `Spill::pending` counts), and the length.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Place(u64);

impl Place {
    const SPILLS: usize = 1 << 8;
    const BYTES: u64 = 1 << 40;
    const LEN: usize = 1 << 16;

    fn new(spill: usize, at: u64, len: usize) -> Place {
        // Records are a few hundred bytes at most (`encode`: a uid, five silences, five cited
        // retransmissions and a recovery).
        debug_assert!(spill < Self::SPILLS && at < Self::BYTES && len < Self::LEN);
        Place(((spill as u64) << 56) | (at << 16) | (len as u64 & 0xffff))
    }

    fn get(self) -> (usize, u64, usize) {
        (
            (self.0 >> 56) as usize,
            (self.0 >> 16) & (Self::BYTES - 1),
            (self.0 & 0xffff) as usize,
        )
    }
}

/// Bytes a block of a table kept in a temporary file (`Paged`) holds, about: records are
/// not cut across blocks, so one that does not fit starts the next.
const PAGE: usize = 4 * 1024;

/// Blocks a table kept in a file holds in memory (`Paged::block`): 1 MiB. The rules pass over
/// the table in its order, each pass a block read once, and look a client's later
/// connections up here and there (`diagnose::Ctx::client_connections_after`).
const CACHED: usize = 256;

/// A table's records in a temporary file, in blocks of about `PAGE` bytes, written in the
/// table's order and read back a block at a time, through a cache of the latest `CACHED`
/// (one slot a block number modulo `CACHED`). A block whose write failed, or did not read
/// back as written, stays in memory.
struct Paged {
    file: std::fs::File,
    blocks: Vec<Block>,
    cache: std::sync::Mutex<Vec<Option<Cached>>>,
}

/// A block read back, and its number.
type Cached = (usize, std::sync::Arc<[u8]>);

enum Block {
    File { at: u64, len: usize },
    Memory(std::sync::Arc<[u8]>),
}

impl std::fmt::Debug for Paged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let in_memory = self
            .blocks
            .iter()
            .filter(|b| matches!(b, Block::Memory(_)))
            .count();
        f.debug_struct("Paged")
            .field("blocks", &self.blocks.len())
            .field("in_memory", &in_memory)
            .finish()
    }
}

impl Paged {
    /// Where a record is, as the table lists it: its block, and its offset in it.
    fn place(block: usize, at: usize) -> usize {
        (block << 32) | at
    }

    fn record(&self, place: usize) -> DigestRef<'_> {
        DigestRef(Rec::Block(self.block(place >> 32), place & 0xffff_ffff))
    }

    fn block(&self, k: usize) -> std::sync::Arc<[u8]> {
        let (at, len) = match &self.blocks[k] {
            Block::Memory(b) => return b.clone(),
            Block::File { at, len } => (*at, *len),
        };
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let slot = &mut cache[k % CACHED];
        if let Some((held, b)) = slot.as_ref() {
            if *held == k {
                return b.clone();
            }
        }
        // Made whole where it stays (a `Vec` turned into an `Arc` is copied).
        let mut b: std::sync::Arc<[u8]> = std::iter::repeat_n(0u8, len).collect();
        let b_mut = std::sync::Arc::get_mut(&mut b).expect("not shared yet");
        // Read back once already, as written (`PagesWriter::flush`): only the disk failing
        // under us ends here, as for the connections kept whole (`align::Alignment::connection`).
        if let Err(e) = super::spill::read_at(&self.file, b_mut, at) {
            panic!("the temporary file of connection digests could not be read again: {e}");
        }
        *slot = Some((k, b.clone()));
        b
    }
}

/// Writes a table's records to its file, block by block (`Paged`).
struct PagesWriter {
    file: std::fs::File,
    written: u64,
    block: Vec<u8>,
    blocks: Vec<Block>,
    /// A write failed, or did not read back as written: every block from then on stays in
    /// memory.
    failed: bool,
}

impl PagesWriter {
    fn new(file: std::fs::File) -> Self {
        PagesWriter {
            file,
            written: 0,
            block: Vec::with_capacity(PAGE),
            blocks: Vec::new(),
            failed: false,
        }
    }

    /// Writes `rec` after the ones before it; where it is (`Paged::place`).
    fn push(&mut self, rec: &[u8]) -> usize {
        if !self.block.is_empty() && self.block.len() + rec.len() > PAGE {
            self.flush();
        }
        let place = Paged::place(self.blocks.len(), self.block.len());
        self.block.extend_from_slice(rec);
        place
    }

    fn flush(&mut self) {
        use std::io::Write as _;
        let block = std::mem::replace(&mut self.block, Vec::with_capacity(PAGE));
        if !self.failed {
            let mut back = vec![0u8; block.len()];
            let ok = self.file.write_all(&block).is_ok()
                && super::spill::read_at(&self.file, &mut back, self.written).is_ok()
                && back == block;
            if ok {
                self.blocks.push(Block::File {
                    at: self.written,
                    len: block.len(),
                });
                self.written += block.len() as u64;
                return;
            }
            // Part of the block may be in the file, after `written`: never read.
            self.failed = true;
        }
        self.blocks.push(Block::Memory(block.into()));
    }

    fn finish(mut self) -> Paged {
        if !self.block.is_empty() {
            self.flush();
        }
        Paged {
            file: self.file,
            blocks: self.blocks,
            cache: std::sync::Mutex::new(vec![None; CACHED]),
        }
    }
}

/// Digests once tracking has ended: their records one after another, as `encode` wrote them,
/// and where each starts, in the order they are listed (`sort_by_start`). Decoded, each was a
/// `Digest` of 200 bytes and a list: on the 2 GB churn synth, 74 000 of them were 15.7 MB of the
/// rules' peak (heaptrack), where their records are ~8.
///
/// A clone shares the records and their index (a one-capture diagnosis's lined-up connections
/// are made from them as they are read: `align::Lines`); a table changed after is copied first.
#[derive(Clone, Debug, Default)]
pub struct Digests {
    bytes: std::sync::Arc<Vec<u8>>,
    /// Where each record starts in `bytes`, or, in a table kept in a file, its place there
    /// (`Paged::place`).
    at: std::sync::Arc<Vec<usize>>,
    /// The records, when kept in a temporary file (`DigestStore::take_sorted`); `bytes` is
    /// empty then, and the table is not changed again.
    paged: Option<std::sync::Arc<Paged>>,
    /// Where the connections a rule may end are kept whole (`Digest::whole` names one of
    /// these): one store a shard.
    kept: Vec<std::sync::Arc<super::kept::KeptFile>>,
}

impl Digests {
    pub fn len(&self) -> usize {
        self.at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    /// The `i`th digest; panics past the end, as indexing a list does.
    pub fn get(&self, i: usize) -> DigestRef<'_> {
        self.record(self.at[i])
    }

    pub fn iter(&self) -> impl Iterator<Item = DigestRef<'_>> + '_ {
        self.at.iter().map(|&a| self.record(a))
    }

    #[inline]
    fn record(&self, at: usize) -> DigestRef<'_> {
        match &self.paged {
            None => DigestRef(Rec::In(&self.bytes[at..])),
            Some(p) => p.record(at),
        }
    }

    /// Whether the records are kept in a temporary file (`DigestStore::take_sorted`).
    pub fn in_file(&self) -> bool {
        self.paged.is_some()
    }

    /// Adds `d` at the end; false (nothing added) if it cannot be encoded (`DigestStore::push`).
    /// Panics on a table kept in a file, which is made whole and not changed after.
    pub fn push(&mut self, d: &Digest) -> bool {
        assert!(
            self.paged.is_none(),
            "a table kept in a file is not changed"
        );
        let start = self.bytes.len();
        if !encode(d, std::sync::Arc::make_mut(&mut self.bytes)) {
            return false;
        }
        std::sync::Arc::make_mut(&mut self.at).push(start);
        true
    }

    /// Room for `records` more records of `bytes` in all.
    pub fn reserve(&mut self, records: usize, bytes: usize) {
        std::sync::Arc::make_mut(&mut self.bytes).reserve_exact(bytes);
        std::sync::Arc::make_mut(&mut self.at).reserve_exact(records);
    }

    /// Lists the records written to `bytes` from `start` on (one after another, as the store
    /// wrote them), and how many bytes they take. A record cut short (a file read back only in
    /// part) is dropped, with what follows it.
    fn index_from(&mut self, start: usize) -> usize {
        let mut at = start;
        let index = std::sync::Arc::make_mut(&mut self.at);
        while let Some(l) = Layout::of(&self.bytes[at..]) {
            index.push(at);
            at += l.end;
        }
        std::sync::Arc::make_mut(&mut self.bytes).truncate(at);
        at - start
    }

    /// Another table's digests added at the end, in its order. Panics on a table kept in a
    /// file, either one.
    pub fn append(&mut self, other: Digests) {
        assert!(
            self.paged.is_none() && other.paged.is_none(),
            "a table kept in a file is not changed"
        );
        self.kept.extend(other.kept);
        if other.at.is_empty() {
            return;
        }
        // Taken whole unless this table has made room for it (`reserve`).
        if self.bytes.is_empty() && self.bytes.capacity() < other.bytes.len() {
            (self.bytes, self.at) = (other.bytes, other.at);
            return;
        }
        let base = self.bytes.len();
        std::sync::Arc::make_mut(&mut self.bytes).extend_from_slice(&other.bytes);
        std::sync::Arc::make_mut(&mut self.at).extend(other.at.iter().map(|a| a + base));
    }

    /// The store the digests' connections kept whole are in (`Digest::whole`).
    pub fn attach(&mut self, kept: super::kept::KeptFile) {
        self.kept.push(std::sync::Arc::new(kept));
    }

    /// Where `d`'s connection is kept whole, if it is and its store read it back whole when
    /// tracking ended (else the digest is all there is: `kept::KeptStore::seal`).
    pub fn whole(&self, d: &DigestRef<'_>) -> Option<(&super::kept::KeptFile, KeptAt)> {
        let at = d.whole()?;
        let file = self.kept.iter().find(|f| f.holds(&at))?;
        Some((&**file, at))
    }

    /// In start order (start, then first frame), as the connections kept whole are. A table
    /// kept in a file was written in that order.
    pub fn sort_by_start(&mut self) {
        if self.paged.is_some() {
            return;
        }
        let bytes = &*self.bytes;
        // Each key decoded once (the first frame is a varint): decoded at every comparison,
        // they were ~35 M instructions of the 200 MB synth's diagnosis.
        std::sync::Arc::make_mut(&mut self.at)
            .sort_by_cached_key(|&a| DigestRef(Rec::In(&bytes[a..])).start_order());
    }

    /// The first `n` only (their records stay where they are).
    pub fn truncate(&mut self, n: usize) {
        std::sync::Arc::make_mut(&mut self.at).truncate(n);
    }

    pub fn shrink_to_fit(&mut self) {
        std::sync::Arc::make_mut(&mut self.bytes).shrink_to_fit();
        std::sync::Arc::make_mut(&mut self.at).shrink_to_fit();
    }
}

/// One digest, read in place from its record: each field decoded as it is asked for. Its
/// bytes are the table's, or, for a table kept in a temporary file (`Paged`), the block that
/// holds it, read back once and shared with the table's cache (a clone is a count, not a copy).
#[derive(Clone)]
pub struct DigestRef<'a>(Rec<'a>);

#[derive(Clone)]
enum Rec<'a> {
    In(&'a [u8]),
    /// A block and where the record starts in it.
    Block(std::sync::Arc<[u8]>, usize),
}

impl std::fmt::Debug for DigestRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("DigestRef").field(&self.uid()).finish()
    }
}

/// Where a record's parts start (`DigestRef::layout`).
struct Layout {
    /// The six one-byte fields after the uid.
    head: usize,
    /// (Then the two ends, address kind, address and port, and the start: `Layout::ends`.)
    /// (Before the silences: the start, an i64, then the first frame and the last one's
    /// distance from it as varints; `Layout::ends` finds them.)
    survived: usize,
    /// Retransmissions and data segments: two varints.
    counts: usize,
    /// (time, frame) pairs: the retransmissions cited, then the recovery.
    pairs: usize,
    /// Where the connection is kept whole (`KeptAt`: three varints), if it is.
    whole: Option<usize>,
    end: usize,
}

impl Layout {
    /// Where the parts of the record at the start of `b` begin, as `encode` wrote them; `None`
    /// if `b` is too short to hold it whole. The one reading of the layout: the table lists a
    /// record only if it is whole (`Digests::index_from`), and its fields are read from here.
    fn of(b: &[u8]) -> Option<Layout> {
        let head = 1 + usize::from(*b.first()?);
        let h = b.get(head..head + 6)?;
        let (_, _, fixed) = Self::ends(b)?;
        let survived = skip(b, fixed + 8, 2)?;
        let mut counts = survived;
        for _ in 0..h[3] {
            counts = Secs::skip(b, counts)?;
        }
        let pairs = skip(b, counts, 2)?;
        let after = skip(
            b,
            pairs,
            2 * (usize::from(h[4]) + usize::from(h[5] & RECOVERY)),
        )?;
        let (whole, end) = if h[5] & WHOLE != 0 {
            (Some(after), skip(b, after, 3)?)
        } else {
            (None, after)
        };
        Some(Layout {
            head,
            survived,
            counts,
            pairs,
            whole,
            end,
        })
    }

    /// Where the two ends and the start time are: after the uid and the head, at places the
    /// record's first bytes give, so that reading them (the addresses a leg names, the start
    /// that sorts and searches) does not walk the varints after them.
    fn ends(b: &[u8]) -> Option<(usize, usize, usize)> {
        let orig = 1 + usize::from(*b.first()?) + 6;
        let resp = orig + end_len(b, orig)?;
        let fixed = resp + end_len(b, resp)?;
        b.get(fixed..fixed + 8).map(|_| (orig, resp, fixed))
    }
}

/// The last of the head's six bytes: which of the record's optional parts follow.
const RECOVERY: u8 = 1;
const WHOLE: u8 = 2;

/// Where the `n` varints from `at` end; `None` if one runs past `b` (each read as
/// `varint::read` reads it).
fn skip(b: &[u8], at: usize, n: usize) -> Option<usize> {
    (0..n).try_fold(at, |at, _| Some(varint::read(b, at)?.1))
}

/// Bytes of the end (address kind, address, port) at `at`.
fn end_len(b: &[u8], at: usize) -> Option<usize> {
    Some(1 + if *b.get(at)? == 4 { 4 } else { 16 } + 2)
}

/// A silence's seconds as written: a varint whose low two bits say how. A tracked silence is
/// nanoseconds over 1e9 (`LiveGap::secs`), so its nanoseconds give the same `f64` back: 0 and
/// the nanoseconds, or 1 and the microseconds when they are whole (classic pcap's times are),
/// 4 bytes for a 25 s heartbeat's gap where its bits took 8. Anything else: 2 and the bits.
struct Secs;

impl Secs {
    fn write(out: &mut Vec<u8>, s: f64) {
        let ns = (s * 1e9).round();
        if (0.0..(1u64 << 52) as f64).contains(&ns) {
            let n = ns as u64;
            if (n as f64 / 1e9).to_bits() == s.to_bits() {
                varint::push(
                    out,
                    if n.is_multiple_of(1_000) {
                        ((n / 1_000) << 2) | 1
                    } else {
                        n << 2
                    },
                );
                return;
            }
        }
        varint::push(out, 2);
        out.extend_from_slice(&s.to_bits().to_le_bytes());
    }

    /// Where the seconds at `at` end: the varint, and the bits if its low two bits say so.
    fn skip(b: &[u8], at: usize) -> Option<usize> {
        let next = skip(b, at, 1)?;
        match *b.get(at)? & 3 {
            0 | 1 => Some(next),
            _ => b.get(next..next + 8).map(|_| next + 8),
        }
    }

    /// The seconds at `at`, and where the next field starts.
    fn read(b: &[u8], at: usize) -> Option<(f64, usize)> {
        let (v, at) = varint::read(b, at)?;
        match v & 3 {
            0 => Some(((v >> 2) as f64 / 1e9, at)),
            1 => Some((((v >> 2).wrapping_mul(1_000)) as f64 / 1e9, at)),
            _ => {
                let bits: [u8; 8] = b.get(at..at + 8)?.try_into().ok()?;
                Some((f64::from_bits(u64::from_le_bytes(bits)), at + 8))
            }
        }
    }
}

impl<'a> DigestRef<'a> {
    /// The record's bytes, and those after it in its table or block.
    #[inline]
    fn b(&self) -> &[u8] {
        match &self.0 {
            Rec::In(b) => b,
            Rec::Block(b, at) => &b[*at..],
        }
    }

    fn layout(&self) -> Layout {
        Layout::of(self.b()).expect("the table lists whole records only (`Digests::index_from`)")
    }

    #[inline]
    fn u64_at(&self, at: usize) -> u64 {
        let mut v = [0u8; 8];
        v.copy_from_slice(&self.b()[at..at + 8]);
        u64::from_le_bytes(v)
    }

    /// The varint at `at` and where the next field starts; a listed record is whole.
    #[inline]
    fn varint_at(&self, at: usize) -> (u64, usize) {
        varint::read(self.b(), at).expect("the table lists whole records only")
    }

    fn end_at(&self, at: usize) -> (IpAddr, u16) {
        let b = self.b();
        let (ip, port) = if b[at] == 4 {
            let a: [u8; 4] = b[at + 1..at + 5].try_into().expect("4 bytes");
            (IpAddr::from(a), at + 5)
        } else {
            let a: [u8; 16] = b[at + 1..at + 17].try_into().expect("16 bytes");
            (IpAddr::from(a), at + 17)
        };
        (ip, u16::from_le_bytes([b[port], b[port + 1]]))
    }

    /// The `k`th of the six one-byte fields after the uid.
    fn head(&self, k: usize) -> u8 {
        let b = self.b();
        b[1 + usize::from(b[0]) + k]
    }

    pub fn uid(&self) -> Uid {
        let b = self.b();
        let uid = &b[1..1 + usize::from(b[0])];
        // Written from a uid, so ASCII (`tcp::make_uid`), unless the disk changed it.
        Uid::from_ascii(uid)
            .unwrap_or_else(|| Uid::new(std::str::from_utf8(uid).unwrap_or_default()))
    }

    pub fn proto(&self) -> Proto {
        if self.head(0) == 1 {
            Proto::Udp
        } else {
            Proto::Tcp
        }
    }

    pub fn conn_state(&self) -> Option<&'static str> {
        CONN_STATES.get(usize::from(self.head(1))).copied()
    }

    pub fn ended_by(&self) -> Option<Side> {
        match self.head(2) {
            1 => Some(Side::Orig),
            2 => Some(Side::Resp),
            _ => None,
        }
    }

    pub fn orig(&self) -> (IpAddr, u16) {
        self.end_at(self.ends().0)
    }

    pub fn resp(&self) -> (IpAddr, u16) {
        self.end_at(self.ends().1)
    }

    #[inline]
    fn ends(&self) -> (usize, usize, usize) {
        Layout::ends(self.b()).expect("the table lists whole records only")
    }

    #[inline]
    fn fixed(&self) -> usize {
        self.ends().2
    }

    #[inline]
    pub fn ts(&self) -> Timestamp {
        Timestamp(self.u64_at(self.fixed()) as i64)
    }

    pub fn first_frame(&self) -> u64 {
        self.varint_at(self.fixed() + 8).0
    }

    /// Start, then first frame: the order connections are listed in (one reading of the
    /// layout for both).
    pub fn start_order(&self) -> (Timestamp, u64) {
        let at = self.fixed();
        (Timestamp(self.u64_at(at) as i64), self.varint_at(at + 8).0)
    }

    pub fn last_frame(&self) -> u64 {
        let (first, at) = self.varint_at(self.fixed() + 8);
        first.wrapping_add(self.varint_at(at).0)
    }

    /// The silences it lived through, seconds (`Digest::survived`).
    pub fn survived(self) -> impl Iterator<Item = f64> + 'a {
        let l = self.layout();
        let n = usize::from(self.b()[l.head + 3]);
        let mut at = l.survived;
        (0..n).map(move |_| {
            let (s, next) = Secs::read(self.b(), at).expect("the table lists whole records only");
            at = next;
            s
        })
    }

    pub fn retransmissions(&self) -> u64 {
        self.varint_at(self.layout().counts).0
    }

    pub fn data_segments(&self) -> u64 {
        let (_, at) = self.varint_at(self.layout().counts);
        self.varint_at(at).0
    }

    /// The (time, frame) pairs: each the zigzag of its time's distance from the start, and
    /// its frame's from the first frame.
    fn pairs(self, l: &Layout) -> impl Iterator<Item = (Timestamp, u64)> + 'a {
        let (ts, first) = self.start_order();
        let mut at = l.pairs;
        std::iter::from_fn(move || {
            let (dt, next) = self.varint_at(at);
            let (df, next) = self.varint_at(next);
            at = next;
            Some((
                Timestamp(ts.0.wrapping_add(varint::unzigzag(dt))),
                first.wrapping_add(df),
            ))
        })
    }

    /// The first retransmissions the evidence cites (`Digest::retransmitted`).
    pub fn retransmitted(self) -> impl Iterator<Item = (Timestamp, u64)> + 'a {
        let l = self.layout();
        let n = usize::from(self.b()[l.head + 4]);
        self.pairs(&l).take(n)
    }

    pub fn recovery(&self) -> Option<(Timestamp, u64)> {
        let l = self.layout();
        let n = usize::from(self.b()[l.head + 4]);
        if self.b()[l.head + 5] & RECOVERY == 0 {
            return None;
        }
        self.clone().pairs(&l).nth(n)
    }

    /// Where the connection is kept whole, if a rule may end it (`Digest::whole`).
    pub fn whole(&self) -> Option<KeptAt> {
        // The flag first: every path of a diagnosis asks (`Lines::is_whole_at`), most of them digests
        // only, and the layout walks the record's varints.
        if self.head(5) & WHOLE == 0 {
            return None;
        }
        let at = self.layout().whole?;
        let (store, at) = self.varint_at(at);
        let (offset, at) = self.varint_at(at);
        let (len, _) = self.varint_at(at);
        Some(KeptAt {
            store: u32::try_from(store).ok()?,
            at: offset,
            len: u32::try_from(len).ok()?,
        })
    }

    /// The digest, decoded whole.
    pub fn to_digest(&self) -> Digest {
        let ((orig_h, orig_p), (resp_h, resp_p)) = (self.orig(), self.resp());
        let (survived, n) = Digest::survived_from(self.clone().survived());
        Digest {
            uid: self.uid(),
            proto: self.proto(),
            orig_h,
            orig_p,
            resp_h,
            resp_p,
            ts: self.ts(),
            first_frame: self.first_frame(),
            last_frame: self.last_frame(),
            conn_state: self.conn_state(),
            ended_by: self.ended_by(),
            survived,
            survived_n: n,
            retransmissions: self.retransmissions(),
            data_segments: self.data_segments(),
            retransmitted: self.clone().retransmitted().collect::<Vec<_>>().into(),
            recovery: self.recovery(),
            whole: self.whole(),
        }
    }
}

/// Appends `d`'s record to `out` (its `conn_state` as its index in `CONN_STATES`); false
/// (nothing written) if its `conn_state` is not one of them. Little-endian; counts, frames and
/// silences as varints (`Secs`), times and frames within the record as distances from its
/// start and first frame: what is written here is read back by this
/// program only.
fn encode(d: &Digest, out: &mut Vec<u8>) -> bool {
    let state = match d.conn_state {
        None => u8::MAX,
        Some(s) => match CONN_STATES.iter().position(|k| *k == s) {
            Some(i) => i as u8,
            None => return false,
        },
    };
    let uid = d.uid.as_bytes();
    out.push(uid.len() as u8);
    out.extend_from_slice(uid);
    let side = |s: Option<Side>| match s {
        None => 0,
        Some(Side::Orig) => 1,
        Some(Side::Resp) => 2,
    };
    out.extend_from_slice(&[
        match d.proto {
            Proto::Tcp => 0,
            Proto::Udp => 1,
        },
        state,
        side(d.ended_by),
        d.survived_n,
        d.retransmitted.len().min(255) as u8,
        (if d.recovery.is_some() { RECOVERY } else { 0 })
            | (if d.whole.is_some() { WHOLE } else { 0 }),
    ]);
    for (ip, port) in [(d.orig_h, d.orig_p), (d.resp_h, d.resp_p)] {
        // 4 or 6, then the octets, as the connections kept whole write theirs.
        super::kept::Codec::put(&ip, out);
        out.extend_from_slice(&port.to_le_bytes());
    }
    out.extend_from_slice(&(d.ts.0 as u64).to_le_bytes());
    varint::push(out, d.first_frame);
    varint::push(out, d.last_frame.wrapping_sub(d.first_frame));
    for &s in d.survived() {
        Secs::write(out, s);
    }
    for v in [d.retransmissions, d.data_segments] {
        varint::push(out, v);
    }
    for (ts, frame) in d.retransmitted.iter().take(255).chain(d.recovery.as_ref()) {
        varint::push(out, varint::zigzag(ts.0.wrapping_sub(d.ts.0)));
        varint::push(out, frame.wrapping_sub(d.first_frame));
    }
    if let Some(w) = d.whole {
        for v in [u64::from(w.store), w.at, u64::from(w.len)] {
            varint::push(out, v);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(i: u64) -> Digest {
        let v6 = i.is_multiple_of(3);
        let ip = |n: u8| -> IpAddr {
            if v6 {
                IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(n)])
            } else {
                IpAddr::from([10, 0, 0, n])
            }
        };
        let n = (i % 7) as u8;
        let mut survived = [0.0; TOP_GAPS];
        for (k, s) in survived.iter_mut().enumerate().take(usize::from(n.min(6))) {
            *s = 0.1 + k as f64 * 1.000_000_001 + i as f64;
        }
        Digest {
            uid: Uid::new(&format!("C{i:017}")),
            proto: if i.is_multiple_of(2) {
                Proto::Tcp
            } else {
                Proto::Udp
            },
            orig_h: ip(1),
            orig_p: 40_000u16.wrapping_add(i as u16),
            resp_h: ip(2),
            resp_p: 443,
            ts: Timestamp(1_700_000_000_000_000_000 + i as i64 * 7 - 3),
            first_frame: i,
            last_frame: i * 1_000_003,
            conn_state: match i % 4 {
                0 => None,
                k => Some(CONN_STATES[(i as usize + k as usize) % CONN_STATES.len()]),
            },
            ended_by: match i % 3 {
                0 => None,
                1 => Some(Side::Orig),
                _ => Some(Side::Resp),
            },
            survived,
            survived_n: n.min(6),
            retransmissions: i * 3,
            data_segments: u64::MAX - i,
            retransmitted: (0..i % 6)
                .map(|k| (Timestamp(-(k as i64)), k))
                .collect::<Vec<_>>()
                .into(),
            recovery: (!i.is_multiple_of(5)).then_some((Timestamp(i as i64), u64::MAX / (i + 1))),
            whole: i.is_multiple_of(4).then_some(KeptAt {
                store: i as u32,
                at: i * 1_000_003,
                len: (i % 700) as u32,
            }),
        }
    }

    fn sorted(mut v: Vec<Digest>) -> Vec<Digest> {
        v.sort_by_key(|d| d.first_frame);
        v
    }

    /// A table's digests, decoded, in its order.
    fn decoded(t: &Digests) -> Vec<Digest> {
        t.iter().map(|d| d.to_digest()).collect()
    }

    /// What goes in comes out, field for field: from the temporary file, from memory, across
    /// blocks; a `conn_state` the encoding does not know is refused.
    #[test]
    fn digests_come_back_as_they_went_in() {
        let want: Vec<Digest> = (0..3_000).map(digest).collect();
        for mut store in [DigestStore::new(), DigestStore::in_memory()] {
            assert!(store.is_empty());
            for d in &want {
                assert!(store.push(d));
            }
            let mut odd = digest(7);
            odd.conn_state = Some("NEW");
            assert!(!store.push(&odd));
            assert_eq!(store.len(), want.len());
            let mut all = want.clone();
            assert_eq!(sorted(decoded(store.all())), all);
            assert!(store.take_error().is_none());
            // Read back once: the table stays, and more can come.
            assert!(store.push(&digest(6_000)));
            all.push(digest(6_000));
            assert_eq!(store.len(), all.len());
            assert_eq!(sorted(decoded(&store.into_table())), all);
        }
        // Enough to fill blocks: the file path was taken.
        let mut store = DigestStore::new();
        assert!(store.spill.file.is_some(), "a temporary file");
        for d in &want {
            store.push(d);
        }
        assert!(store.spill.written > 0);
        assert_eq!(sorted(decoded(&store.into_table())), want);
    }

    /// Silences come back bit for bit, however they were written: a tracked one (nanoseconds
    /// over 1e9) in a few bytes, anything else as its bits.
    #[test]
    fn silences_come_back_exact_and_tracked_ones_small() {
        let tracked: Vec<(f64, usize)> = [
            (0i64, 1),
            (1, 1),
            (499_999_999, 5),
            (25_000_123_000, 4),
            (25_000_123_456, 6),
            (3_600_000_000_001, 7),
            (86_400_000_000_000 * 50, 7),
        ]
        .iter()
        .map(|&(ns, most)| (ns as f64 / 1e9, most))
        .collect();
        let odd = [
            f64::NAN,
            -0.0,
            -1.5,
            f64::INFINITY,
            1e300,
            0.1 + 1e-17,
            1.000_000_001 * 3.0,
            f64::MIN_POSITIVE,
        ];
        let mut b = Vec::new();
        for (s, most) in tracked.iter().copied().chain(odd.iter().map(|&s| (s, 9))) {
            b.clear();
            Secs::write(&mut b, s);
            assert!(b.len() <= most, "{s}: {} bytes", b.len());
            let (back, end) = Secs::read(&b, 0).expect("whole");
            assert_eq!(back.to_bits(), s.to_bits(), "{s}");
            assert_eq!(end, b.len(), "{s}");
            assert!(Secs::read(&b[..b.len() - 1], 0).is_none(), "{s} cut short");
        }
    }

    /// A digest of a long-lived connection (six silences, a recovery, frames in the millions)
    /// takes under 100 bytes: it took 150 with fixed widths.
    #[test]
    fn a_typical_digest_is_small() {
        let d = Digest {
            uid: Uid::new("CHhAvVGS1DHFjwGM9"),
            proto: Proto::Tcp,
            orig_h: IpAddr::from([10, 16, 69, 224]),
            orig_p: 60_000,
            resp_h: IpAddr::from([203, 0, 113, 10]),
            resp_p: 8080,
            ts: Timestamp(1_772_438_400_000_059_000),
            first_frame: 1_234_567,
            last_frame: 9_876_543,
            conn_state: Some("SF"),
            ended_by: Some(Side::Resp),
            survived: [26.22745, 25.9, 25.1, 24.99, 24.5, 24.0],
            survived_n: 6,
            retransmissions: 2,
            data_segments: 120,
            retransmitted: Vec::new().into(),
            recovery: Some((Timestamp(1_772_438_400_190_786_000), 1_234_600)),
            whole: None,
        };
        let mut b = Vec::new();
        assert!(encode(&d, &mut b));
        assert!(b.len() < 100, "{} bytes", b.len());
        let mut t = Digests::default();
        assert!(t.push(&d));
        assert_eq!(t.get(0).to_digest(), d);
    }

    /// Shards' stores join in one table with room made once: every digest, each store's in
    /// its order (those read back first), and no more room than they held.
    #[test]
    fn stores_join_into_one_table_made_once() {
        let want: Vec<Digest> = (0..2_000).map(digest).collect();
        let (a, b) = want.split_at(1_200);
        let mut stores = [DigestStore::new(), DigestStore::in_memory()];
        for (store, part) in stores.iter_mut().zip([a, b]) {
            let (early, late) = part.split_at(part.len() / 3);
            for d in early {
                assert!(store.push(d));
            }
            // Some read back already, some still in the file or blocks.
            assert_eq!(store.all().len(), early.len());
            for d in late {
                assert!(store.push(d));
            }
        }
        let [mut one, two] = stores;
        one.join(two);
        assert_eq!(one.len(), want.len());
        let bytes = one.pending() + one.read.bytes.len();
        let t = one.all();
        assert_eq!(sorted(decoded(t)), want);
        assert_eq!(t.bytes.len(), bytes);
        assert_eq!(t.bytes.capacity(), bytes, "grown, so copied");
        assert!(one.pending() == 0 && one.error().is_none());
    }

    /// Every digest of `parts`, each part a store (with a temporary file or in memory), joined
    /// into one and taken sorted with `in_memory`.
    fn joined(parts: &[&[Digest]], in_memory: usize) -> (Digests, DigestStore) {
        let mut all = DigestStore::default();
        for (k, part) in parts.iter().enumerate() {
            let mut store = if k % 2 == 0 {
                DigestStore::new()
            } else {
                DigestStore::in_memory()
            };
            for d in part.iter().rev() {
                assert!(store.push(d));
            }
            all.join(store);
        }
        let t = all.take_sorted(in_memory);
        (t, all)
    }

    /// Past its bytes in memory, a table is kept in a file, in blocks read back through a
    /// cache smaller than the table: it lists what the table in memory lists, in the same
    /// order, read in order, backwards, at random and through clones; and a table with records
    /// read back already stays in memory.
    #[test]
    fn a_table_kept_in_a_file_reads_as_one_in_memory() {
        let want: Vec<Digest> = (0..30_000).map(digest).collect();
        let parts: Vec<&[Digest]> = want.chunks(7_000).collect();
        let (memory, _) = joined(&parts, usize::MAX);
        let (file, store) = joined(&parts, 0);
        assert!(!memory.in_file() && file.in_file());
        assert!(store.error().is_none() && store.is_empty());
        let paged = file.paged.as_ref().expect("paged");
        assert!(paged.blocks.len() > 2 * CACHED, "{:?}", paged);
        assert!(paged.blocks.iter().all(|b| matches!(b, Block::File { .. })));
        assert!(file.bytes.is_empty());
        let mut sorted_want = want.clone();
        sorted_want.sort_by_key(|d| (d.ts, d.first_frame));
        assert_eq!(decoded(&memory), sorted_want);
        assert_eq!(decoded(&file), sorted_want);
        let copy = file.clone();
        for i in (0..want.len()).rev().step_by(7) {
            assert_eq!(copy.get(i).to_digest(), sorted_want[i]);
        }
        let mut rng = 12_345u64;
        for _ in 0..2_000 {
            rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let i = (rng >> 33) as usize % want.len();
            let d = file.get(i);
            assert_eq!(d.clone().to_digest(), sorted_want[i]);
            assert_eq!(
                d.start_order(),
                (sorted_want[i].ts, sorted_want[i].first_frame)
            );
        }
        // Cut and sorted again: as in memory.
        let mut cut = file.clone();
        cut.truncate(100);
        cut.sort_by_start();
        assert_eq!(decoded(&cut), sorted_want[..100]);
        // Read back already: in memory, however large.
        let mut store = DigestStore::new();
        for d in &want {
            store.push(d);
        }
        store.all();
        store.push(&digest(40_000));
        let t = store.take_sorted(0);
        assert!(!t.in_file());
        assert_eq!(t.len(), want.len() + 1);
    }

    /// A disk that fills up as the table is written: its blocks stay in memory and read the
    /// same; a spill's file that cannot be read loses what it held, says so, and the rest is
    /// kept in the file in order.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_table_kept_in_a_file_survives_a_full_disk_and_a_lost_spill() {
        let want: Vec<Digest> = (0..3_000).map(digest).collect();
        let mut pages = PagesWriter::new(
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .expect("/dev/full"),
        );
        let mut at = Vec::new();
        let mut rec = Vec::new();
        for d in &want {
            rec.clear();
            encode(d, &mut rec);
            at.push(pages.push(&rec));
        }
        let t = Digests {
            paged: Some(std::sync::Arc::new(pages.finish())),
            at: std::sync::Arc::new(at),
            ..Digests::default()
        };
        let paged = t.paged.as_ref().expect("paged");
        assert!(paged.blocks.iter().all(|b| matches!(b, Block::Memory(_))));
        assert_eq!(decoded(&t), want);

        let (dir, mut lost) = write_only_store("paged");
        for d in &want {
            lost.push(d);
        }
        assert!(lost.spill.written > 0);
        let mut kept = DigestStore::new();
        let more: Vec<Digest> = (5_000..8_000).map(digest).collect();
        for d in &more {
            kept.push(d);
        }
        kept.join(lost);
        let t = kept.take_sorted(0);
        assert!(t.in_file());
        assert!(kept.take_error().is_some());
        let back = decoded(&t);
        assert!(back.len() > more.len() && back.len() < more.len() + want.len());
        assert!(more.iter().all(|d| back.contains(d)));
        assert!(back
            .windows(2)
            .all(|w| (w[0].ts, w[0].first_frame) < (w[1].ts, w[1].first_frame)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The table sorts, cuts and joins as a list of the decoded digests does.
    #[test]
    fn a_table_sorts_cuts_and_joins_as_a_list() {
        let (a, b): (Vec<Digest>, Vec<Digest>) =
            (0..500).map(digest).partition(|d| d.ts.0 % 3 == 0);
        let mut t = Digests::default();
        for d in &a {
            assert!(t.push(d));
        }
        let mut u = DigestStore::in_memory();
        for d in &b {
            u.push(d);
        }
        t.append(u.into_table());
        let mut want: Vec<Digest> = a.iter().chain(&b).cloned().collect();
        assert_eq!(decoded(&t), want);
        t.sort_by_start();
        want.sort_by(|x, y| x.ts.cmp(&y.ts).then(x.first_frame.cmp(&y.first_frame)));
        assert_eq!(decoded(&t), want);
        t.truncate(123);
        want.truncate(123);
        assert_eq!(decoded(&t), want);
        assert_eq!(t.get(122).to_digest(), want[122]);
    }

    proptest::proptest! {
        /// Whatever bytes come back from the file (a disk that corrupts them), the table lists
        /// only records that fit, and reading any field of any of them stays within its bytes.
        /// Real records, cut or with bytes changed, and plain noise.
        #[test]
        fn any_bytes_read_back_give_records_that_read_in_bounds(
            n in 0usize..40,
            flips in proptest::collection::vec((proptest::num::usize::ANY, proptest::num::u8::ANY), 0..8),
            cut in proptest::num::usize::ANY,
            noise in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
        ) {
            let mut bytes = Vec::new();
            for i in 0..n as u64 {
                encode(&digest(i), &mut bytes);
            }
            if !bytes.is_empty() {
                for (at, v) in &flips {
                    let k = at % bytes.len();
                    bytes[k] = *v;
                }
                bytes.truncate(cut % (bytes.len() + 1));
            }
            bytes.extend_from_slice(&noise);
            let mut t = Digests {
                bytes: bytes.into(),
                ..Digests::default()
            };
            let whole = t.index_from(0);
            proptest::prop_assert!(whole <= t.bytes.len());
            for d in t.iter() {
                let _ = d.to_digest();
                let _ = (d.clone().survived().count(), d.retransmitted().count());
            }
            t.sort_by_start();
        }
    }

    /// A disk that fills up: the first write fails, and every digest stays in memory.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_full_disk_keeps_the_digests_in_memory() {
        let full = std::fs::OpenOptions::new().write(true).open("/dev/full");
        let mut store = DigestStore {
            spill: Spill {
                file: Some(full.expect("/dev/full")),
                ..Spill::default()
            },
            ..DigestStore::default()
        };
        let want: Vec<Digest> = (0..3_000).map(digest).collect();
        for d in &want {
            store.push(d);
        }
        assert!(store.spill.failed, "given up after the failed write");
        assert_eq!(store.spill.written, 0);
        assert_eq!(sorted(decoded(store.all())), want);
        assert!(store.take_error().is_none());
    }

    /// A store whose temporary file can be written but not read back, in a directory of its
    /// own (removed by the caller).
    fn write_only_store(name: &str) -> (std::path::PathBuf, DigestStore) {
        let dir = std::env::temp_dir().join(format!("vantage-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write_only = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join("write-only"))
            .unwrap();
        let store = DigestStore {
            spill: Spill {
                file: Some(write_only),
                ..Spill::default()
            },
            ..DigestStore::default()
        };
        (dir, store)
    }

    /// A file that cannot be read back: what it held is lost and said so (`take_error`); the
    /// digests still in memory come back.
    #[test]
    fn an_unreadable_file_loses_what_it_held_and_says_so() {
        let (dir, mut store) = write_only_store("digests");
        let want: Vec<Digest> = (0..3_000).map(digest).collect();
        for d in &want {
            store.push(d);
        }
        assert!(store.spill.written > 0);
        let total = store.len();
        let back = decoded(store.all());
        assert!(back.len() < total, "{} of {total}", back.len());
        // What was still in the block being filled.
        assert!(!back.is_empty() && back.iter().all(|d| want.contains(d)));
        assert!(store.take_error().is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
