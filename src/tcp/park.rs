//! Live TCP connections silent for minutes, parked encoded (`Codec`) out of the live table
//! until their next packet, or the end of the capture, brings them back (`Parked::take`).
//!
//! An agent whose PC was switched off, unplugged or put to sleep leaves its connection open
//! without a FIN: nothing more comes on it, and the tracker keeps it live to the end of the
//! capture, since a middlebox's RST may still come, or the agent's next packet. On the 2 GB
//! synth 5 700 such connections were live at the end beside ~20 000 busy ones, ~2.6 KB each
//! (the table's slot, the reassemblers, the WebSocket state, the heartbeat log, the SIP
//! records): they made the end of reading the run's peak. Parked, each is its encoding
//! (~0.5-1 KB) and an entry here.
//!
//! Parking changes nothing a report says: a parked connection comes back, every field as it
//! was, before anything reads it (its next packet, an eviction, the end of tracking), and
//! counts as live for the caps and `peak_live` (`Tracker::live_count`). A connection holding
//! what the encoding refuses (segments waiting for a hole to fill, a parser that lost the
//! framing, events or counts only `flows` prints, packet samples for the alignment) stays in
//! the table.

use super::kept::{codec_struct, Codec};
use super::{AppState, FlowKey, Live, LiveConn, LiveDir, LiveGap, Profile, SeqState};
use crate::capture::Timestamp;
use std::collections::HashMap;

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
/// by, read without decoding, and its encoding.
struct Entry {
    start: (Timestamp, u64),
    seen_last_ts: Timestamp,
    bytes: Box<[u8]>,
}

/// The parked connections, by key.
#[derive(Default)]
pub(super) struct Parked {
    map: HashMap<FlowKey, Entry, foldhash::fast::RandomState>,
    /// When the live table was last looked through (`due`).
    scanned: Option<Timestamp>,
    scratch: Vec<u8>,
    /// Connections parked, and brought back, since the start (a connection can be both
    /// several times).
    pub parks: u64,
    pub returns: u64,
}

impl Parked {
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn contains(&self, k: &FlowKey) -> bool {
        !self.map.is_empty() && self.map.contains_key(k)
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
    /// (a closed one is the sweep's, `ended_at`), silent at least `after`.
    pub fn wants(l: &Live, now: Timestamp, after: i64) -> bool {
        now.0.saturating_sub(l.seen_last_ts.0) >= after
            && l.zeek.as_ref().is_some_and(|z| !z.either_closed())
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
        let e = Entry {
            start: (l.conn.ts, l.conn.first_frame),
            seen_last_ts: l.seen_last_ts,
            bytes: self.scratch.as_slice().into(),
        };
        self.map.insert(l.key, e);
        true
    }

    /// The connection parked under `k`, taken back. Its bytes were written by this process
    /// from a value of the same type, so they decode; `None` only if not parked.
    pub fn take(&mut self, k: &FlowKey) -> Option<Live> {
        if self.map.is_empty() {
            return None;
        }
        let e = self.map.remove(k)?;
        self.returns += 1;
        let mut r = &e.bytes[..];
        let l = Live::get(&mut r);
        debug_assert!(l.is_some() && r.is_empty(), "a parked connection decodes");
        l
    }

    /// Every parked connection's (start, first frame, key), as `summarise_live` and
    /// `stream_rest` order them.
    pub fn starts(&self) -> impl Iterator<Item = ((Timestamp, u64), FlowKey)> + '_ {
        self.map.iter().map(|(k, e)| (e.start, *k))
    }

    /// Every parked connection's ((last packet, first frame), key), as `evict` orders them.
    pub fn ages(&self) -> impl Iterator<Item = ((Timestamp, u64), FlowKey)> + '_ {
        self.map
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
    /// warnings are the same.
    #[test]
    fn parked_after_every_packet_changes_nothing() {
        use crate::decode::Decoded;
        let (mut parks, mut returns, mut tcp) = (0, 0, 0);
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
            while let Ok(Some(frame)) = r.next_frame() {
                if let Decoded::Ip(packet) = crate::decode::decode(&frame) {
                    tcp += u64::from(matches!(packet.transport, crate::decode::Transport::Tcp(_)));
                    plain.packet(&frame, &packet);
                    parking.packet(&frame, &packet);
                    parking.park_silent(frame.ts);
                    assert_eq!(plain.live_connections(), parking.live_connections());
                }
            }
            parks += parking.parked.parks;
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
