//! A finished connection that no rule of a one-capture diagnosis ends: what the alignment and
//! the rules that read across connections read from it, in ~200 bytes where its summary
//! (`Connection` and what it points to) is ~1.4 KB.
//!
//! On a busy capture most connections end normally, and each was kept whole until the rules ran
//! after the last packet: 93 000 summaries, 134 MB of the 2 GB synth's 207 MB heap peak
//! (heaptrack, `benches/RESULTS.md`). The tracker keeps a connection whole only when a rule may
//! end it (`TrackerOptions::digest` says which, from `diagnose::rules`), and this digest
//! otherwise. Which fields the rules read, and why, is in `diagnose::rules::digest_of`, the one
//! function that fills it.

use std::net::IpAddr;

use crate::boxed_list::BoxedList;
use crate::capture::Timestamp;

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
}

impl Digest {
    /// The silences it lived through, seconds.
    pub fn survived(&self) -> &[f64] {
        &self.survived[..usize::from(self.survived_n)]
    }
}

/// The tracker's digests while it tracks: each written as it comes, in ~100 bytes instead of
/// a `Digest`'s 200, to an unnamed temporary file in blocks of `BLOCK` bytes, and read back
/// when tracking ends (`into_vec`). On the 2 GB synth 74 000 digests were 15 MB of the
/// tracking's peak, beside the live connections; read back, they take the room those left.
/// Without a temporary file (no writable `TMPDIR`), or once a write fails, the blocks stay in
/// memory, still encoded. What cannot be encoded (a `conn_state` this module does not know)
/// stays a `Digest`.
#[derive(Default)]
pub struct DigestStore {
    file: Option<std::fs::File>,
    /// Bytes the file holds, every one a whole record.
    written: u64,
    /// The block being filled, then the blocks kept in memory.
    block: Vec<u8>,
    blocks: Vec<Vec<u8>>,
    other: Vec<Digest>,
    /// Digests encoded (in the file or the blocks), not read back yet.
    encoded: usize,
    error: Option<std::io::Error>,
}

const BLOCK: usize = 64 * 1024;

impl DigestStore {
    /// A store that writes to a temporary file if one can be made.
    pub fn new() -> Self {
        DigestStore {
            file: tempfile::tempfile().ok(),
            ..Self::default()
        }
    }

    /// A store that keeps its blocks in memory.
    pub fn in_memory() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.encoded + self.other.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn push(&mut self, d: Digest) {
        if !encode(&d, &mut self.block) {
            self.other.push(d);
            return;
        }
        self.encoded += 1;
        if self.block.len() >= BLOCK {
            self.flush();
        }
    }

    /// The block to the file, or, if that fails, to memory for good (the file keeps what it
    /// had: `written` bytes).
    fn flush(&mut self) {
        use std::io::Write as _;
        let block = std::mem::take(&mut self.block);
        if let Some(f) = self.file.as_mut() {
            if f.write_all(&block).is_ok() {
                self.written += block.len() as u64;
                self.block = block;
                self.block.clear();
                return;
            }
            self.file = None;
        }
        self.blocks.push(block);
        self.block = Vec::with_capacity(BLOCK + 256);
    }

    /// Every digest so far, read back (in no particular order) into a list that stays: the
    /// store holds nothing encoded after this.
    pub fn all(&mut self) -> &mut Vec<Digest> {
        use std::io::{Read as _, Seek as _};
        let mut out = Vec::with_capacity(self.len());
        if let Some(mut f) = self.file.take().filter(|_| self.written > 0) {
            let written = self.written;
            let read = f.seek(std::io::SeekFrom::Start(0)).and_then(|_| {
                let mut r = std::io::BufReader::with_capacity(BLOCK, f).take(written);
                while let Some(d) = decode(&mut r)? {
                    out.push(d);
                }
                Ok(())
            });
            self.error = self.error.take().or(read.err());
        }
        self.written = 0;
        self.encoded = 0;
        for b in self
            .blocks
            .drain(..)
            .chain([std::mem::take(&mut self.block)])
        {
            let mut r = &b[..];
            // Encoded here, so whole: no error can come.
            while let Ok(Some(d)) = decode(&mut r) {
                out.push(d);
            }
        }
        out.append(&mut self.other);
        self.other = out;
        &mut self.other
    }

    /// Every digest (`all`).
    pub fn into_vec(mut self) -> Vec<Digest> {
        self.all();
        std::mem::take(&mut self.other)
    }

    /// Why digests were lost, if the temporary file could not be read back (`all`).
    pub fn error(&self) -> Option<&std::io::Error> {
        self.error.as_ref()
    }

    /// That error, taken (shards' stores, merged into one: `lost`).
    pub fn take_error(&mut self) -> Option<std::io::Error> {
        self.error.take()
    }

    /// Digests were lost elsewhere (another shard's store): said as this store's error, if it
    /// has none of its own.
    pub fn lost(&mut self, e: std::io::Error) {
        self.error.get_or_insert(e);
    }
}

/// Appends `d`'s record to `out` (its `conn_state` as its index in `CONN_STATES`); false
/// (nothing written) if its `conn_state` is not one of them. Little-endian, fixed widths: what is written here is read back by this
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
        u8::from(d.recovery.is_some()),
    ]);
    for (ip, port) in [(d.orig_h, d.orig_p), (d.resp_h, d.resp_p)] {
        match ip {
            IpAddr::V4(a) => {
                out.push(4);
                out.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                out.push(6);
                out.extend_from_slice(&a.octets());
            }
        }
        out.extend_from_slice(&port.to_le_bytes());
    }
    for v in [d.ts.0 as u64, d.first_frame, d.last_frame] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for s in d.survived() {
        out.extend_from_slice(&s.to_bits().to_le_bytes());
    }
    for v in [d.retransmissions, d.data_segments] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for (ts, frame) in d.retransmitted.iter().take(255).chain(d.recovery.as_ref()) {
        out.extend_from_slice(&(ts.0 as u64).to_le_bytes());
        out.extend_from_slice(&frame.to_le_bytes());
    }
    true
}

/// The next record of `r`, `None` at its end.
fn decode(r: &mut impl std::io::Read) -> std::io::Result<Option<Digest>> {
    let mut len = [0u8; 1];
    if r.read(&mut len)? == 0 {
        return Ok(None);
    }
    let mut uid = [0u8; 255];
    let uid = &mut uid[..usize::from(len[0])];
    r.read_exact(uid)?;
    let uid = Uid::new(std::str::from_utf8(uid).unwrap_or_default());
    let mut head = [0u8; 6];
    r.read_exact(&mut head)?;
    let [proto, state, ended_by, survived_n, retransmitted, recovery] = head;
    let mut u8s = |n: usize| -> std::io::Result<[u8; 16]> {
        let mut b = [0u8; 16];
        r.read_exact(&mut b[..n])?;
        Ok(b)
    };
    let mut ends = Vec::with_capacity(2);
    for _ in 0..2 {
        let ip = match u8s(1)?[0] {
            4 => {
                let b = u8s(4)?;
                IpAddr::from([b[0], b[1], b[2], b[3]])
            }
            _ => IpAddr::from(u8s(16)?),
        };
        let p = u8s(2)?;
        ends.push((ip, u16::from_le_bytes([p[0], p[1]])));
    }
    let mut u64s = |n: usize| -> std::io::Result<Vec<u64>> {
        (0..n)
            .map(|_| {
                let mut b = [0u8; 8];
                r.read_exact(&mut b)?;
                Ok(u64::from_le_bytes(b))
            })
            .collect()
    };
    let fixed = u64s(3)?;
    let mut survived = [0.0; TOP_GAPS];
    let n = usize::from(survived_n).min(TOP_GAPS);
    for (slot, bits) in survived.iter_mut().zip(u64s(usize::from(survived_n))?) {
        *slot = f64::from_bits(bits);
    }
    let counts = u64s(2)?;
    let pairs = u64s(2 * (usize::from(retransmitted) + usize::from(recovery)))?;
    let mut pairs = pairs
        .chunks_exact(2)
        .map(|p| (Timestamp(p[0] as i64), p[1]))
        .collect::<Vec<_>>();
    let recovery = if recovery == 1 { pairs.pop() } else { None };
    Ok(Some(Digest {
        uid,
        proto: if proto == 1 { Proto::Udp } else { Proto::Tcp },
        orig_h: ends[0].0,
        orig_p: ends[0].1,
        resp_h: ends[1].0,
        resp_p: ends[1].1,
        ts: Timestamp(fixed[0] as i64),
        first_frame: fixed[1],
        last_frame: fixed[2],
        conn_state: CONN_STATES.get(usize::from(state)).copied(),
        ended_by: match ended_by {
            1 => Some(Side::Orig),
            2 => Some(Side::Resp),
            _ => None,
        },
        survived,
        survived_n: n as u8,
        retransmissions: counts[0],
        data_segments: counts[1],
        retransmitted: pairs.into(),
        recovery,
    }))
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
            orig_p: 40_000 + i as u16,
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
        }
    }

    fn sorted(mut v: Vec<Digest>) -> Vec<Digest> {
        v.sort_by_key(|d| d.first_frame);
        v
    }

    /// What goes in comes out, field for field: from the temporary file, from memory, across
    /// blocks, and a `conn_state` the encoding does not know kept as it is.
    #[test]
    fn digests_come_back_as_they_went_in() {
        let want: Vec<Digest> = (0..3_000).map(digest).collect();
        for mut store in [DigestStore::new(), DigestStore::in_memory()] {
            assert!(store.is_empty());
            for d in &want {
                store.push(d.clone());
            }
            let mut odd = digest(7);
            odd.conn_state = Some("NEW");
            odd.first_frame = 5_000;
            store.push(odd.clone());
            assert_eq!(store.len(), want.len() + 1);
            let mut all = want.clone();
            all.push(odd);
            assert_eq!(sorted(store.all().clone()), all);
            assert!(store.take_error().is_none());
            // Read back once: the list stays, and more can come.
            store.push(digest(6_000));
            all.push(digest(6_000));
            assert_eq!(store.len(), all.len());
            assert_eq!(sorted(store.into_vec()), all);
        }
        // Enough to fill blocks: the file path was taken.
        let mut store = DigestStore::new();
        assert!(store.file.is_some(), "a temporary file");
        for d in &want {
            store.push(d.clone());
        }
        assert!(store.written > 0);
        assert_eq!(sorted(store.into_vec()), want);
    }

    /// A disk that fills up: the first write fails, and every digest stays in memory.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_full_disk_keeps_the_digests_in_memory() {
        let full = std::fs::OpenOptions::new().write(true).open("/dev/full");
        let mut store = DigestStore {
            file: Some(full.expect("/dev/full")),
            ..DigestStore::default()
        };
        let want: Vec<Digest> = (0..3_000).map(digest).collect();
        for d in &want {
            store.push(d.clone());
        }
        assert!(store.file.is_none(), "given up after the failed write");
        assert_eq!(store.written, 0);
        assert_eq!(sorted(store.all().clone()), want);
        assert!(store.take_error().is_none());
    }

    /// A file that cannot be read back: what it held is lost and said so (`take_error`); the
    /// digests still in memory come back.
    #[test]
    fn an_unreadable_file_loses_what_it_held_and_says_so() {
        let dir = std::env::temp_dir().join(format!("vantage-digests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("write-only");
        let write_only = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let mut store = DigestStore {
            file: Some(write_only),
            ..DigestStore::default()
        };
        let want: Vec<Digest> = (0..3_000).map(digest).collect();
        for d in &want {
            store.push(d.clone());
        }
        assert!(store.written > 0);
        let total = store.len();
        let back = store.all().clone();
        assert!(back.len() < total, "{} of {total}", back.len());
        // What was still in the block being filled.
        assert!(!back.is_empty() && back.iter().all(|d| want.contains(d)));
        assert!(store.take_error().is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
