//! Zeek's view of a TCP connection: endpoint states, `history`, `conn_state`, sequence-based
//! byte counts and `missed_bytes`, as Zeek computes them.
//!
//! Sources (zeek/zeek): `src/packet_analysis/protocol/tcp/TCPSessionAdapter.cc` (per-packet
//! pipeline, `UpdateStateMachine`, `update_history`), `src/analyzer/protocol/tcp/TCP_Endpoint.cc`
//! (`Size`), `TCP_Reassembler.cc` and `src/Reassem.cc` (content gaps), `src/Conn.cc`
//! (`CheckHistory`, `ScaledHistoryEntry`), and `scripts/base/protocols/conn/main.zeek`
//! (`conn_state`). Everything here is keyed to those files so that our conn_state and history
//! read exactly as engineers know them from conn.log. Bad-checksum handling (`C`) is left out:
//! captures from hosts with checksum offload would show it on every packet.

use crate::decode::TcpFlags;

/// An endpoint's state as Zeek records it (TCP_Endpoint.h): what the capture saw it do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum EndpointState {
    #[default]
    Inactive,
    SynSent,
    SynAckSent,
    Partial,
    Established,
    Closed,
    Reset,
}

/// Sequence difference modulo 2^32 (RFC 9293 §3.4).
fn delta(a: u32, b: u32) -> i64 {
    a.wrapping_sub(b) as i32 as i64
}

/// Relative positions, Zeek's `start`-based offsets; 64-bit with wraps counted.
#[derive(Clone, Debug, Default)]
struct Endpoint {
    state: EndpointState,
    prev_state: EndpointState,
    start: u32,
    last_seq: u32,
    last_wraps: u32,
    ack_seq: u32,
    ack_wraps: u32,
    fin_cnt: u32,
    fin_seq: i64,
    did_close: bool,
    hist_last_syn: i64,
    hist_last_fin: i64,
    hist_last_rst: i64,
    /// (count, threshold) for T, W, G: 32 bits, as Zeek's `rxmt_cnt`/`rxmt_thresh`,
    /// `win0_cnt`/`win0_thresh` and `gap_cnt`/`gap_thresh` (TCP_Endpoint.h). Every live
    /// connection holds two endpoints.
    retrans: (u32, u32),
    zero_win: (u32, u32),
    gaps: (u32, u32),
    /// Content-gap bookkeeping (Reassem.cc), ranges only, no bytes: next relative seq expected,
    /// the highest acked offset already trimmed, and out-of-order ranges seen beyond.
    last_reassem: i64,
    trim: i64,
    blocks: Blocks,
    missed: u64,
}

/// Most out-of-order ranges remembered per endpoint: gaps beyond are still counted when acked.
const MAX_BLOCKS: usize = 64;

/// Out-of-order ranges: boxed, since nearly every endpoint has none (8 bytes in every live
/// connection's two endpoints instead of 24).
#[derive(Clone, Debug, Default)]
#[allow(clippy::box_collection)] // the point: a thin slot, the list behind it
struct Blocks(Option<Box<Vec<(i64, i64)>>>);

impl Blocks {
    fn as_slice(&self) -> &[(i64, i64)] {
        self.0.as_deref().map_or(&[], |v| v.as_slice())
    }

    fn len(&self) -> usize {
        self.as_slice().len()
    }

    fn push(&mut self, b: (i64, i64)) {
        self.0.get_or_insert_with(Box::default).push(b);
    }

    fn sort_unstable(&mut self) {
        if let Some(v) = self.0.as_mut() {
            v.sort_unstable();
        }
    }

    /// Keeps the ranges `keep` says; none left, the box goes.
    fn retain(&mut self, keep: impl FnMut(&(i64, i64)) -> bool) {
        if let Some(v) = self.0.as_mut() {
            v.retain(keep);
            if v.is_empty() {
                self.0 = None;
            }
        }
    }
}

impl Endpoint {
    fn new() -> Self {
        Endpoint {
            retrans: (0, 1),
            zero_win: (0, 1),
            gaps: (0, 1),
            last_reassem: 1,
            trim: 1,
            ..Default::default()
        }
    }

    fn set_state(&mut self, s: EndpointState) {
        if s != self.state {
            self.prev_state = self.state;
            self.state = s;
        }
    }

    fn update_last_seq(&mut self, v: u32) {
        if v < self.last_seq {
            self.last_wraps += 1;
        }
        self.last_seq = v;
    }

    fn update_ack_seq(&mut self, v: u32) {
        if v < self.ack_seq {
            self.ack_wraps += 1;
        }
        self.ack_seq = v;
    }

    fn last64(&self) -> i64 {
        ((self.last_wraps as i64) << 32) + self.last_seq as i64
    }

    fn ack64(&self) -> i64 {
        ((self.ack_wraps as i64) << 32) + self.ack_seq as i64
    }

    fn rel(&self, seq: u32) -> i64 {
        delta(seq, self.start)
    }

    /// "Clean" for gap reporting: established, or closed from established.
    fn clean(&self) -> bool {
        self.state == EndpointState::Established
            || (self.state == EndpointState::Closed
                && self.prev_state == EndpointState::Established)
    }
}

/// Zeek's ScaledHistoryEntry: the letter at counts 1, 10, 100, ...
fn scaled(counter: &mut (u32, u32)) -> bool {
    counter.0 = counter.0.saturating_add(1);
    if counter.0 == counter.1 {
        counter.1 = counter.1.saturating_mul(10);
        true
    } else {
        false
    }
}

/// One segment, as the Zeek model needs it.
pub struct Seg {
    pub from_orig: bool,
    pub flags: TcpFlags,
    pub seq: u32,
    pub ack: u32,
    /// Payload length from the IP header.
    pub len: u32,
    /// Payload bytes actually captured.
    pub captured: u32,
    pub window: u16,
}

/// Every `conn_state` Zeek gives a TCP connection (scripts/base/protocols/conn/main.zeek), and
/// so every one `ZeekTcp::conn_state` returns: what a stored digest keeps the index of
/// (`digest::DigestStore`).
pub const CONN_STATES: [&str; 13] = [
    "S0", "S1", "SF", "REJ", "S2", "S3", "RSTO", "RSTR", "RSTOS0", "RSTRH", "SH", "SHR", "OTH",
];

/// Zeek's per-connection TCP state.
#[derive(Clone, Debug)]
pub struct ZeekTcp {
    orig: Endpoint,
    resp: Endpoint,
    history: String,
    /// Bits of letters already recorded once (CheckHistory); responder bits << 16.
    hist_seen: u32,
    /// The first packet was not a SYN (Zeek's `is_partial`).
    is_partial: bool,
    orig_seen: bool,
    resp_seen: bool,
}

impl Default for ZeekTcp {
    fn default() -> Self {
        ZeekTcp {
            orig: Endpoint::new(),
            resp: Endpoint::new(),
            history: String::new(),
            hist_seen: 0,
            is_partial: false,
            orig_seen: false,
            resp_seen: false,
        }
    }
}

// Here, where the private fields are: a live connection silent for minutes is parked encoded
// (`tcp::park`), and every field comes back as it was.
use crate::tcp::kept::{codec_enum, codec_struct, Codec};
codec_enum!(EndpointState {
    Inactive,
    SynSent,
    SynAckSent,
    Partial,
    Established,
    Closed,
    Reset
});
codec_struct!(Endpoint {
    state,
    prev_state,
    start,
    last_seq,
    last_wraps,
    ack_seq,
    ack_wraps,
    fin_cnt,
    fin_seq,
    did_close,
    hist_last_syn,
    hist_last_fin,
    hist_last_rst,
    retrans,
    zero_win,
    gaps,
    last_reassem,
    trim,
    blocks,
    missed
});
codec_struct!(ZeekTcp {
    orig,
    resp,
    history,
    hist_seen,
    is_partial,
    orig_seen,
    resp_seen
});

impl Codec for Blocks {
    fn put(&self, w: &mut Vec<u8>) -> bool {
        self.0.put(w)
    }
    fn get(r: &mut &[u8]) -> Option<Self> {
        Codec::get(r).map(Blocks)
    }
}

/// Outcome of one segment that the tracker needs.
pub struct SegResult {
    /// Zeek would update the connection's last time (not both sides closed).
    pub counts_for_duration: bool,
}

impl ZeekTcp {
    pub fn history(&self) -> &str {
        &self.history
    }

    pub fn orig_state(&self) -> EndpointState {
        self.orig.state
    }

    pub fn resp_state(&self) -> EndpointState {
        self.resp.state
    }

    pub fn both_closed(&self) -> bool {
        self.orig.did_close && self.resp.did_close
    }

    pub fn either_closed(&self) -> bool {
        self.orig.did_close || self.resp.did_close
    }

    /// `IsReuse` (TCPSessionAdapter / TCP.cc): does this SYN start a new connection on the same
    /// 5-tuple?
    pub fn is_reuse(&self, from_orig: bool, flags: TcpFlags, seq: u32) -> bool {
        if !flags.syn() {
            return false;
        }
        let ep = if flags.ack() {
            // A SYN-ACK counts only while the originator has shown nothing, and is compared
            // with the responder.
            if self.orig.state != EndpointState::Inactive {
                return false;
            }
            &self.resp
        } else if from_orig {
            &self.orig
        } else {
            &self.resp
        };
        if self.orig.did_close || self.resp.did_close {
            return true;
        }
        if ep.state == EndpointState::Inactive {
            return false;
        }
        if seq == ep.start {
            return false;
        }
        // SYN/SYN-ACK reversal.
        if !flags.ack()
            && self.orig.state == EndpointState::SynAckSent
            && self.resp.state == EndpointState::Inactive
        {
            return false;
        }
        true
    }

    fn add_history(&mut self, from_orig: bool, c: char) {
        self.history
            .push(if from_orig { c } else { c.to_ascii_lowercase() });
    }

    /// CheckHistory: true if the letter's bit was not yet set (and sets it).
    fn check_history(&mut self, from_orig: bool, mask: u32, c: char) -> bool {
        let bit = if from_orig { mask } else { mask << 16 };
        if self.hist_seen & bit == 0 {
            self.hist_seen |= bit;
            self.add_history(from_orig, c);
            true
        } else {
            false
        }
    }

    /// Processes one segment (TCPSessionAdapter::Process).
    pub fn segment(&mut self, s: &Seg) -> SegResult {
        let f = s.flags;
        // SetPartialStatus.
        if s.from_orig && !self.orig_seen {
            self.is_partial = !f.syn() || f.ack();
        } else if !s.from_orig && !self.resp_seen && !self.is_partial {
            self.is_partial = !f.syn();
        }
        if s.from_orig {
            self.orig_seen = true;
        } else {
            self.resp_seen = true;
        }

        let mut seg_len = s.len + f.syn() as u32 + f.fin() as u32;
        if f.rst() {
            seg_len -= s.len;
        }
        let end = s.seq.wrapping_add(seg_len);
        self.init_endpoint(s, end);
        let (e, _) = self.ends(s.from_orig);
        let rel_seq = e.rel(s.seq);
        let underflow = rel_seq < 0;
        self.update_history(s, rel_seq);

        // Zero window: the sender is not RESET, the peer not CLOSED.
        {
            let (e, p) = self.ends(s.from_orig);
            let zw = s.window == 0
                && !f.rst()
                && p.state != EndpointState::Closed
                && e.state != EndpointState::Reset;
            if zw {
                let (e, _) = self.ends_mut(s.from_orig);
                if scaled(&mut e.zero_win) {
                    self.add_history(s.from_orig, 'W');
                }
            }
        }
        let counts_for_duration = !(self.orig.did_close && self.resp.did_close);

        {
            let (e, _) = self.ends_mut(s.from_orig);
            if f.fin() {
                e.fin_cnt += 1;
                e.fin_seq = rel_seq + seg_len as i64;
            }
        }
        let mut rel_ack = 0i64;
        if f.ack() {
            let (_, p) = self.ends_mut(s.from_orig);
            if p.state == EndpointState::Inactive {
                p.start = s.ack.wrapping_sub(1);
                p.ack_seq = p.start;
                p.last_seq = p.start;
                rel_ack = 1;
            } else {
                rel_ack = delta(s.ack, p.start).max(0);
                let d = delta(s.ack, p.ack_seq);
                if !f.rst() && d > 0 && !(s.ack == 0 && d > (1 << 20)) {
                    p.update_ack_seq(s.ack);
                }
            }
        }
        // update_last_seq: new data advances last_seq; old data with payload is a retransmission.
        let mut retransmit = false;
        {
            let (e, _) = self.ends_mut(s.from_orig);
            let delta_last = delta(end, e.last_seq);
            if (f.syn() || f.rst()) && delta_last.abs() > 1_048_576 {
            } else if f.fin() && e.last_seq == e.start.wrapping_add(1) {
                e.update_last_seq(end);
            } else if e.state == EndpointState::Reset {
            } else if delta_last > 0 {
                e.update_last_seq(end);
            } else if s.len > 0 {
                retransmit = scaled(&mut e.retrans);
            }
        }
        if retransmit {
            self.add_history(s.from_orig, 'T');
        }
        self.update_state_machine(s);
        if f.ack() {
            self.ack_received(!s.from_orig, rel_ack);
        }
        if s.len > 0 && !f.rst() && !underflow && s.captured >= s.len {
            let off = rel_seq + f.syn() as i64;
            let (e, _) = self.ends_mut(s.from_orig);
            data_sent(e, off, s.len as i64);
        }
        if f.fin() || f.rst() {
            let (e, _) = self.ends_mut(s.from_orig);
            e.did_close = true;
        }
        SegResult {
            counts_for_duration,
        }
    }

    fn ends(&self, from_orig: bool) -> (&Endpoint, &Endpoint) {
        if from_orig {
            (&self.orig, &self.resp)
        } else {
            (&self.resp, &self.orig)
        }
    }

    fn ends_mut(&mut self, from_orig: bool) -> (&mut Endpoint, &mut Endpoint) {
        if from_orig {
            (&mut self.orig, &mut self.resp)
        } else {
            (&mut self.resp, &mut self.orig)
        }
    }

    fn init_endpoint(&mut self, s: &Seg, end: u32) {
        use EndpointState::*;
        let f = s.flags;
        let (e, _) = self.ends_mut(s.from_orig);
        let reset_start = |e: &mut Endpoint| {
            e.start = s.seq;
            e.ack_seq = s.seq;
            e.last_seq = end;
        };
        match e.state {
            Inactive => {
                if f.syn() {
                    reset_start(e);
                } else {
                    e.start = s.seq.wrapping_sub(1);
                    e.ack_seq = e.start;
                    e.last_seq = s.seq;
                }
            }
            SynSent | SynAckSent => {
                if f.syn() && s.seq != e.start {
                    reset_start(e);
                }
            }
            Established | Partial => {
                if f.syn() {
                    reset_start(e);
                }
            }
            Reset => {
                if f.syn() && e.prev_state == Inactive {
                    reset_start(e);
                }
            }
            Closed => {}
        }
    }

    fn update_history(&mut self, s: &Seg, rel_seq: i64) {
        let f = s.flags;
        let o = s.from_orig;
        let bits = f.syn() as u8 + f.fin() as u8 + f.rst() as u8;
        if bits > 1 {
            if f.fin() && f.rst() {
                self.check_history(o, 0x8, 'I');
            } else {
                self.check_history(o, 0x40, 'Q');
            }
        } else if bits == 1 {
            if f.syn() {
                let c = if f.ack() { 'H' } else { 'S' };
                let first = self.check_history(o, 0x1, c);
                let (e, _) = self.ends_mut(o);
                let repeat = !first && rel_seq != e.hist_last_syn;
                e.hist_last_syn = rel_seq;
                if repeat {
                    self.add_history(o, c);
                }
            } else if f.fin() {
                let first = self.check_history(o, 0x2, 'F');
                let (e, _) = self.ends_mut(o);
                let at = rel_seq + s.len as i64;
                let repeat = !first && at != e.hist_last_fin;
                e.hist_last_fin = at;
                if repeat {
                    self.add_history(o, 'F');
                }
            } else {
                let first = self.check_history(o, 0x4, 'R');
                let (e, _) = self.ends_mut(o);
                let repeat = !first && rel_seq != e.hist_last_rst;
                e.hist_last_rst = rel_seq;
                if repeat {
                    self.add_history(o, 'R');
                }
            }
        } else if s.len > 0 {
            self.check_history(o, 0x10, 'D');
        } else if f.ack() {
            self.check_history(o, 0x20, 'A');
        }
    }

    fn update_state_machine(&mut self, s: &Seg) {
        use EndpointState::*;
        let f = s.flags;
        let from_orig = s.from_orig;
        let orig_state = self.orig.state;
        let (e, p) = self.ends_mut(from_orig);
        match e.state {
            Inactive => {
                if f.syn() {
                    if from_orig {
                        e.set_state(if f.ack() { SynAckSent } else { SynSent });
                    } else {
                        if p.state == SynSent || p.state == SynAckSent {
                            p.set_state(Established);
                        }
                        e.set_state(Established);
                    }
                }
                if f.fin() {
                    e.set_state(Closed);
                }
                if f.rst() {
                    e.set_state(Reset);
                }
                if e.state == Inactive {
                    if !from_orig && s.len == 0 && orig_state == SynSent {
                        // An ACK before the SYN-ACK: stays inactive.
                    } else if f.ack() && p.state == Established {
                        e.set_state(Established);
                        self.is_partial = false;
                    } else {
                        e.set_state(Partial);
                    }
                }
            }
            SynSent | SynAckSent => {
                if f.fin() {
                    e.set_state(Closed);
                }
                if f.rst() {
                    e.set_state(Reset);
                }
            }
            Established | Partial => {
                if f.syn() && e.state == Partial && p.state == Inactive && !f.ack() {
                    e.set_state(SynSent);
                }
                if f.fin() && !f.rst() {
                    e.set_state(Closed);
                    if p.state == Reset && p.prev_state == Closed {
                        p.set_state(Closed);
                    }
                }
                if f.rst() {
                    e.set_state(Reset);
                }
            }
            Closed => {
                if f.rst() && p.state != Closed {
                    e.set_state(Reset);
                }
            }
            Reset => {}
        }
    }

    /// AckReceived on the endpoint whose data was acknowledged.
    fn ack_received(&mut self, acked_is_orig: bool, rel_ack: i64) {
        let clean = self.orig.clean() && self.resp.clean();
        let is_partial = self.is_partial;
        let (e, _) = self.ends_mut(acked_is_orig);
        let mut a = rel_ack;
        if e.fin_cnt > 0 && a >= e.fin_seq {
            a = e.fin_seq - 1;
        }
        if a <= e.trim {
            return;
        }
        let mut gaps = Vec::new();
        if a > e.last_reassem && !(a <= 2 && is_partial) {
            // Undelivered: every hole before `a` was received by the peer but not captured.
            let mut last = e.last_reassem;
            e.blocks.sort_unstable();
            for &(b0, b1) in e.blocks.as_slice() {
                if b0 >= a {
                    break;
                }
                if b0 > last {
                    gaps.push(b0 - last);
                }
                last = last.max(b1);
            }
            if last < a {
                gaps.push(a - last);
            }
            e.last_reassem = last.max(a);
        }
        e.blocks.retain(|&(_, b1)| b1 > a);
        e.trim = a;
        if !clean {
            return;
        }
        let mut letters = 0;
        for n in gaps {
            e.missed += n as u64;
            if scaled(&mut e.gaps) {
                letters += 1;
            }
        }
        for _ in 0..letters {
            self.add_history(acked_is_orig, 'G');
        }
    }

    /// Zeek's `Size()`: payload bytes by sequence space.
    pub fn size(&self, orig: bool) -> u64 {
        let (e, p) = self.ends(orig);
        if e.prev_state == EndpointState::SynSent
            && e.state == EndpointState::Reset
            && p.state == EndpointState::Inactive
            && !(e.ack64() == e.start as i64 || e.ack64() == e.start as i64 + 1)
        {
            return 0;
        }
        let top = e.last64().max(e.ack64());
        let mut s = top - e.start as i64;
        if s > 0 {
            s -= 1;
        }
        if e.fin_cnt > 0 && s > 0 {
            s -= 1;
        }
        s.max(0) as u64
    }

    /// Bytes acknowledged by the peer that this capture never saw (Zeek's content gaps).
    pub fn missed_bytes(&self) -> u64 {
        self.orig.missed + self.resp.missed
    }

    /// Zeek's `conn_state` (scripts/base/protocols/conn/main.zeek): one of `CONN_STATES`.
    pub fn conn_state(&self) -> &'static str {
        use EndpointState::*;
        let os = self.orig.state;
        let rs = self.resp.state;
        let o_inactive = matches!(os, Inactive | Partial);
        let r_inactive = matches!(rs, Inactive | Partial);
        if rs == Reset {
            if matches!(os, SynSent | SynAckSent)
                || (os == Reset && self.size(true) == 0 && self.size(false) == 0)
            {
                "REJ"
            } else if o_inactive {
                "RSTRH"
            } else {
                "RSTR"
            }
        } else if os == Reset {
            if r_inactive {
                if rstos0_history(&self.history) {
                    "RSTOS0"
                } else {
                    "OTH"
                }
            } else {
                "RSTO"
            }
        } else if rs == Closed && os == Closed {
            "SF"
        } else if os == Closed {
            if r_inactive {
                "SH"
            } else {
                "S2"
            }
        } else if rs == Closed {
            if o_inactive {
                "SHR"
            } else {
                "S3"
            }
        } else if os == SynSent && rs == Inactive {
            "S0"
        } else if os == Established && rs == Established {
            "S1"
        } else {
            "OTH"
        }
    }
}

/// DataSent: in-order data moves `last_reassem`; data beyond a hole is remembered as a range.
fn data_sent(e: &mut Endpoint, off: i64, len: i64) {
    let end = off + len;
    if end <= e.last_reassem || end <= e.trim {
        return;
    }
    if off <= e.last_reassem {
        e.last_reassem = end;
        // Pull in ranges that are now contiguous.
        loop {
            let before = e.last_reassem;
            for &(b0, b1) in e.blocks.as_slice() {
                if b0 <= e.last_reassem && b1 > e.last_reassem {
                    e.last_reassem = b1;
                }
            }
            if e.last_reassem == before {
                break;
            }
        }
        let lr = e.last_reassem;
        e.blocks.retain(|&(_, b1)| b1 > lr);
    } else if e.blocks.len() < MAX_BLOCKS {
        e.blocks.push((off, end));
    }
}

/// Zeek: `/\^?S[^HAFGIQ]*R.*/ == history` (anchored, case-sensitive).
fn rstos0_history(h: &str) -> bool {
    let h = h.strip_prefix('^').unwrap_or(h);
    let Some(rest) = h.strip_prefix('S') else {
        return false;
    };
    for c in rest.chars() {
        if c == 'R' {
            return true;
        }
        if "HAFGIQ".contains(c) {
            return false;
        }
    }
    false
}
