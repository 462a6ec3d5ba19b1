//! In-order delivery of one direction's byte stream, for the application parsers.
//!
//! Segments are delivered in sequence order; bytes already delivered (retransmissions, overlaps)
//! are dropped; segments that arrive early wait, up to a byte cap. A hole is declared when the
//! peer acknowledges bytes this capture never saw (the receiver got them, we did not), when the
//! waiting bytes exceed the cap, or when the stream is flushed at its end; the consumer is then
//! told that it lost sync, and delivery resumes after the hole.

use std::collections::BTreeMap;

use crate::capture::Timestamp;

/// Default cap on bytes held out of order per direction (configurable per tracker).
pub const DEFAULT_CAP: usize = 64 * 1024;

/// What the reassembler hands on.
pub trait StreamSink {
    /// In-order bytes, with the time and frame number of the packet that carried them.
    fn data(&mut self, bytes: &[u8], ts: Timestamp, frame: u64);
    /// `missing` bytes were never seen (`missing` is 0 when unknown).
    fn gap(&mut self, missing: u64);
}

/// 64 bytes: two sit in every live connection's application state, and a packet reads both
/// (its own direction's segment, the other's ACK).
#[derive(Debug, Default)]
pub struct Reassembler {
    /// Next sequence number to deliver; `None` until the first segment (or SYN) fixes it.
    next: Option<u32>,
    /// Early segments: seq -> (bytes, ts, frame). Boxed, and only while some wait: in order
    /// streams never have any, and the empty map was 24 bytes of every reassembler.
    pending: Option<Box<Pending>>,
    /// 32 bits (the cap is clamped to them): two reassemblers sit in every live connection.
    pending_bytes: u32,
    cap: u32,
    /// Bytes skipped over holes, and holes declared.
    pub missed_bytes: u64,
    pub holes: u64,
    /// Bytes delivered.
    pub delivered: u64,
    /// Set once the stream stopped for good (`stop`).
    stopped: bool,
    /// Sequence number of the FIN, which takes one number but carries no byte.
    fin: Option<u32>,
}

type Pending = BTreeMap<u32, (Vec<u8>, Timestamp, u64)>;

/// RFC 9293 §3.4: sequence arithmetic modulo 2^32.
fn diff(a: u32, b: u32) -> i64 {
    a.wrapping_sub(b) as i32 as i64
}

impl Reassembler {
    pub fn new(cap: usize) -> Self {
        Reassembler {
            cap: u32::try_from(cap).unwrap_or(u32::MAX),
            ..Default::default()
        }
    }

    /// The SYN fixes the first data byte at ISN + 1.
    pub fn syn(&mut self, isn: u32) {
        if self.next.is_none() {
            self.next = Some(isn.wrapping_add(1));
        }
    }

    /// The FIN sits at `seq` (after the segment's payload): an ACK of it acknowledges no data.
    pub fn fin(&mut self, seq: u32) {
        self.fin.get_or_insert(seq);
    }

    /// Stops delivery for good (the consumer gave up on this direction).
    pub fn stop(&mut self) {
        self.stopped = true;
        self.pending = None;
        self.pending_bytes = 0;
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// A segment with payload. `payload` may be shorter than the segment (snaplen): the missing
    /// tail is a hole.
    pub fn segment(
        &mut self,
        seq: u32,
        payload: &[u8],
        seg_len: u32,
        ts: Timestamp,
        frame: u64,
        sink: &mut impl StreamSink,
    ) {
        if self.stopped || seg_len == 0 {
            return;
        }
        let next = *self.next.get_or_insert(seq);
        let d = diff(seq, next);
        let end = seq.wrapping_add(seg_len);
        if diff(end, next) <= 0 {
            return; // all already delivered: a retransmission
        }
        if d <= 0 {
            // Starts at or before `next`: deliver the new part now.
            let skip = (-d) as usize;
            self.deliver(payload, skip, seg_len, next, ts, frame, sink);
            self.drain(sink);
        } else if self.pending_bytes as usize + payload.len() > self.cap as usize {
            // Too much waiting: give up on the hole before it.
            self.hole_to(seq, sink);
            self.deliver(payload, 0, seg_len, seq, ts, frame, sink);
            self.drain(sink);
        } else if !self.pending.as_ref().is_some_and(|p| p.contains_key(&seq)) {
            // At most the cap (just checked), so within 32 bits.
            self.pending_bytes += payload.len() as u32;
            // A short capture of a long segment: remember the true length through a hole later.
            let mut v = payload.to_vec();
            v.truncate(seg_len as usize);
            self.pending
                .get_or_insert_with(Box::default)
                .insert(seq, (v, ts, frame));
        }
    }

    /// The peer acknowledged up to `ack`: whatever lies before it was received, so a hole there
    /// will never be filled from this capture.
    pub fn acked(&mut self, ack: u32, sink: &mut impl StreamSink) {
        if self.stopped {
            return;
        }
        // RFC 9293 §3.4: the FIN occupies a sequence number; acking it acks no byte.
        let ack = match self.fin {
            Some(f) if diff(ack, f) > 0 => f,
            _ => ack,
        };
        let Some(next) = self.next else { return };
        if diff(ack, next) > 0 && self.pending.is_some() {
            let first = self.first_waiting(next).expect("non-empty");
            let target = if diff(first, ack) <= 0 { first } else { ack };
            self.hole_to(target, sink);
            self.drain(sink);
        } else if diff(ack, next) > 0 && self.pending.is_none() {
            // Acked data we never saw and nothing waiting: a hole up to the ACK.
            self.hole_to(ack, sink);
        }
    }

    /// End of the stream: deliver what waits, across its holes.
    pub fn flush(&mut self, sink: &mut impl StreamSink) {
        while let Some(first) = self.first_waiting(self.next.unwrap_or(0)) {
            if self.stopped {
                break;
            }
            self.hole_to(first, sink);
            self.drain(sink);
        }
    }

    /// The waiting segment that comes first after `next` in sequence order (modulo 2^32, so
    /// across the wrap: the map's own order is by raw value).
    fn first_waiting(&self, next: u32) -> Option<u32> {
        self.pending
            .as_deref()?
            .keys()
            .copied()
            .min_by_key(|k| k.wrapping_sub(next).wrapping_add(1 << 31))
    }

    fn hole_to(&mut self, seq: u32, sink: &mut impl StreamSink) {
        let next = self.next.unwrap_or(seq);
        let missing = diff(seq, next);
        if missing > 0 {
            self.missed_bytes += missing as u64;
            self.holes += 1;
            sink.gap(missing as u64);
            self.next = Some(seq);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn deliver(
        &mut self,
        payload: &[u8],
        skip: usize,
        seg_len: u32,
        seq_at_skip: u32,
        ts: Timestamp,
        frame: u64,
        sink: &mut impl StreamSink,
    ) {
        let have = payload.len().min(seg_len as usize);
        if skip < have {
            let bytes = &payload[skip..have];
            sink.data(bytes, ts, frame);
            self.delivered += bytes.len() as u64;
        }
        let new_next = seq_at_skip.wrapping_add((seg_len as usize).saturating_sub(skip) as u32);
        // Bytes of the segment the capture did not keep (snaplen) are a hole.
        let lost = (seg_len as usize).saturating_sub(skip.max(have));
        if lost > 0 {
            self.missed_bytes += lost as u64;
            self.holes += 1;
            sink.gap(lost as u64);
        }
        self.next = Some(new_next);
    }

    /// Delivers waiting segments that now fit. Nearly every segment comes in order with none
    /// waiting: that check inlined, the delivery out of line (it was a call and a search of
    /// no map, ~45 instructions, a data segment).
    #[inline]
    fn drain(&mut self, sink: &mut impl StreamSink) {
        if self.pending.is_some() {
            self.drain_waiting(sink);
        }
    }

    fn drain_waiting(&mut self, sink: &mut impl StreamSink) {
        while let Some(next) = self.next {
            let Some(seq) = self.first_waiting(next) else {
                break;
            };
            if diff(seq, next) > 0 {
                break;
            }
            let Some(pending) = self.pending.as_deref_mut() else {
                break;
            };
            let (bytes, ts, frame) = pending.remove(&seq).expect("present");
            if pending.is_empty() {
                self.pending = None;
            }
            self.pending_bytes -= bytes.len() as u32;
            let seg_len = bytes.len() as u32;
            let d = diff(seq, next);
            let skip = (-d) as usize;
            if skip < bytes.len() {
                self.deliver(&bytes, skip, seg_len, next, ts, frame, sink);
            }
        }
    }
}

// A live connection silent for minutes is parked encoded (`tcp::park`); one with segments
// waiting for a hole to fill stays in memory.
crate::tcp::kept::codec_refused!(Pending);
crate::tcp::kept::codec_struct!(Reassembler {
    next,
    pending,
    pending_bytes,
    cap,
    missed_bytes,
    holes,
    delivered,
    stopped,
    fin
});

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect {
        bytes: Vec<u8>,
        gaps: Vec<u64>,
        frames: Vec<u64>,
    }
    impl StreamSink for Collect {
        fn data(&mut self, b: &[u8], _ts: Timestamp, frame: u64) {
            self.bytes.extend_from_slice(b);
            self.frames.push(frame);
        }
        fn gap(&mut self, missing: u64) {
            self.gaps.push(missing);
        }
    }

    fn seg(r: &mut Reassembler, c: &mut Collect, seq: u32, data: &[u8], frame: u64) {
        r.segment(seq, data, data.len() as u32, Timestamp(0), frame, c);
    }

    #[test]
    fn in_order_retransmit_overlap_and_reorder() {
        let mut r = Reassembler::new(1024);
        let mut c = Collect::default();
        r.syn(999);
        seg(&mut r, &mut c, 1000, b"hello ", 1);
        seg(&mut r, &mut c, 1000, b"hello ", 2); // retransmission: dropped
        seg(&mut r, &mut c, 1003, b"lo wor", 3); // overlap: "wor" is new
        seg(&mut r, &mut c, 1013, b"!", 5); // early: waits
        seg(&mut r, &mut c, 1009, b"ld, ", 4); // fills the hole; "!" follows
        assert_eq!(c.bytes, b"hello world, !");
        assert_eq!(c.frames, vec![1, 3, 4, 5]);
        assert!(c.gaps.is_empty());
    }

    #[test]
    fn ack_past_a_hole_declares_it() {
        let mut r = Reassembler::new(1024);
        let mut c = Collect::default();
        seg(&mut r, &mut c, 0, b"abc", 1);
        seg(&mut r, &mut c, 10, b"xyz", 3); // 7 bytes never captured
        r.acked(13, &mut c);
        assert_eq!(c.bytes, b"abcxyz");
        assert_eq!(c.gaps, vec![7]);
        assert_eq!(r.missed_bytes, 7);
    }

    #[test]
    fn cap_bounds_waiting_bytes() {
        let mut r = Reassembler::new(8);
        let mut c = Collect::default();
        seg(&mut r, &mut c, 0, b"a", 1);
        seg(&mut r, &mut c, 100, b"12345", 2); // waits (5 bytes)
        seg(&mut r, &mut c, 200, b"67890", 3); // over the cap: jump
        assert_eq!(c.gaps.len(), 1);
        assert!(c.bytes.ends_with(b"67890"));
    }

    #[test]
    fn snaplen_cut_is_a_hole() {
        let mut r = Reassembler::new(64);
        let mut c = Collect::default();
        r.segment(0, b"ab", 10, Timestamp(0), 1, &mut c);
        seg(&mut r, &mut c, 10, b"cd", 2);
        assert_eq!(c.bytes, b"abcd");
        assert_eq!(c.gaps, vec![8]);
    }

    #[test]
    fn ack_of_a_fin_is_not_a_hole() {
        let mut r = Reassembler::new(64);
        let mut c = Collect::default();
        seg(&mut r, &mut c, 0, b"bye", 1);
        r.fin(3);
        r.acked(4, &mut c);
        assert!(c.gaps.is_empty());
        assert_eq!(r.missed_bytes, 0);
    }

    #[test]
    fn sequence_wraps() {
        let mut r = Reassembler::new(64);
        let mut c = Collect::default();
        seg(&mut r, &mut c, u32::MAX - 1, b"ab", 1);
        seg(&mut r, &mut c, 0, b"cd", 2);
        assert_eq!(c.bytes, b"abcd");
    }
}
