//! Stage 3: packets -> connections.
//!
//! Tracks every TCP connection (and UDP flow) of one capture: orientation, Zeek's `conn_state`
//! and `history`, per-direction counters, handshake RTT, retransmissions, keep-alives and zero
//! windows as Wireshark counts them, idle gaps, and how the connection ended, with the
//! fingerprint (TTL, IP ID, window) of the packet that ended it next to the usual fingerprint of
//! its supposed sender. That fingerprint is what lets the diagnosis tell a RST built by a
//! middlebox from one built by the endpoint.
//!
//! Memory: one small state per live connection. A connection that has ended (both FINs, or a RST)
//! and stayed quiet, or one that was replaced by port reuse, is turned into its summary.

use std::collections::HashMap;
use std::net::IpAddr;

use serde::Serialize;

use crate::capture::{Frame, Timestamp};
use crate::decode::{Packet, TcpSegment, Transport, UdpDatagram};

/// Zeek's defaults for when a quiet UDP flow is over (`udp_inactivity_timeout`, 1 min,
/// scripts/base/init-bare.zeek).
pub const UDP_INACTIVITY_NS: i64 = 60_000_000_000;
/// A SYN on a 5-tuple that has been silent this long starts a new connection even without a
/// close (Zeek's `tcp_inactivity_timeout` is 5 min). Without a SYN, no silence splits a
/// connection: long silences are exactly what we diagnose.
pub const TCP_REUSE_SILENCE_NS: i64 = 300_000_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

/// Which end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Orig,
    Resp,
}

/// An endpoint's TCP state, with the meanings Zeek gives them (TCP_Endpoint.h): what the
/// capture has seen that endpoint do, not the endpoint's real state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointState {
    /// Nothing seen yet.
    Inactive,
    /// Sent a SYN (no ACK).
    SynSent,
    /// Sent a SYN-ACK.
    SynAckSent,
    /// Seen mid-stream: sending data without a SYN we saw.
    Partial,
    Established,
    /// Sent a FIN.
    Closed,
    /// Sent a RST.
    Reset,
}

/// Connection key: the 5-tuple (addresses and ports ordered so both directions map to one key)
/// plus VLAN ids, as Zeek's `vlan_fivetuple` conn key does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FlowKey {
    lo: (IpAddr, u16),
    hi: (IpAddr, u16),
    vlan: [u16; 2],
    proto: Proto,
}

impl FlowKey {
    fn new(p: &Packet<'_>, sport: u16, dport: u16, proto: Proto) -> Self {
        let a = (p.src, sport);
        let b = (p.dst, dport);
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        FlowKey {
            lo,
            hi,
            vlan: p.vlan,
            proto,
        }
    }
}

/// The sender's usual IP fingerprint, for telling whether one packet "from" it was built by it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Fingerprint {
    /// Packets looked at.
    pub packets: u64,
    /// The most common TTL (hop limit), and how many packets carried it.
    pub ttl_usual: u8,
    pub ttl_usual_count: u64,
    /// Lowest and highest TTL seen.
    pub ttl_min: u8,
    pub ttl_max: u8,
    /// IPv4 ID pattern: `incrementing` (each packet a small step above the last, a per-socket or
    /// global counter), `zero`, `random`, or `none` (IPv6 / too few packets).
    pub ip_id_pattern: IpIdPattern,
    /// The last IP ID seen from this sender.
    pub ip_id_last: Option<u16>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IpIdPattern {
    #[default]
    None,
    Zero,
    Incrementing,
    Random,
}

/// Small running profile behind a `Fingerprint`: at most four distinct TTLs are counted (a
/// path's TTL seldom changes; four covers route flaps without growing).
#[derive(Clone, Debug, Default)]
struct Profile {
    packets: u64,
    ttls: [(u8, u64); 4],
    ttl_min: u8,
    ttl_max: u8,
    ip_ids: u64,
    ip_id_zero: u64,
    ip_id_small_step: u64,
    ip_id_last: Option<u16>,
}

/// An IP ID step this small (mod 2^16) counts as "the next value of the same counter". Linux
/// increments a per-socket counter per packet; a busy host's global counter moves further
/// between two packets of one connection, so allow some slack.
const IP_ID_STEP: u16 = 1024;

impl Profile {
    fn add(&mut self, ttl: u8, ip_id: Option<u16>) {
        if self.packets == 0 {
            self.ttl_min = ttl;
            self.ttl_max = ttl;
        }
        self.packets += 1;
        self.ttl_min = self.ttl_min.min(ttl);
        self.ttl_max = self.ttl_max.max(ttl);
        if let Some(slot) = self.ttls.iter_mut().find(|(t, n)| *n > 0 && *t == ttl) {
            slot.1 += 1;
        } else if let Some(slot) = self.ttls.iter_mut().find(|(_, n)| *n == 0) {
            *slot = (ttl, 1);
        }
        if let Some(id) = ip_id {
            self.ip_ids += 1;
            if id == 0 {
                self.ip_id_zero += 1;
            }
            if let Some(last) = self.ip_id_last {
                let step = id.wrapping_sub(last);
                if step > 0 && step <= IP_ID_STEP {
                    self.ip_id_small_step += 1;
                }
            }
            self.ip_id_last = Some(id);
        }
    }

    fn fingerprint(&self) -> Fingerprint {
        let (ttl_usual, ttl_usual_count) = self
            .ttls
            .iter()
            .copied()
            .max_by_key(|(_, n)| *n)
            .unwrap_or((0, 0));
        let pattern = if self.ip_ids < 2 {
            IpIdPattern::None
        } else if self.ip_id_zero == self.ip_ids {
            IpIdPattern::Zero
        } else if self.ip_id_small_step * 10 >= (self.ip_ids - 1) * 8 {
            IpIdPattern::Incrementing
        } else {
            IpIdPattern::Random
        };
        Fingerprint {
            packets: self.packets,
            ttl_usual,
            ttl_usual_count,
            ttl_min: self.ttl_min,
            ttl_max: self.ttl_max,
            ip_id_pattern: pattern,
            ip_id_last: self.ip_id_last,
        }
    }
}

/// The first FIN or RST of a connection, and whether it looks like its supposed sender built it.
#[derive(Clone, Debug, Serialize)]
pub struct Termination {
    /// `fin` or `rst`.
    pub kind: TerminationKind,
    pub by: Side,
    pub ts: Timestamp,
    pub frame: u64,
    pub ttl: u8,
    pub ip_id: Option<u16>,
    pub window: u16,
    /// The ACK flag: a RST answering an unknown segment carries none (RFC 9293 §3.10.7.1).
    pub ack_flag: bool,
    pub seq: u32,
    /// Bytes of TCP options; a RST built by a middlebox usually has none.
    pub options_len: u8,
    /// Seconds of silence on the connection (both directions) just before this packet.
    pub idle_before_s: f64,
    /// The sender's fingerprint from its other packets before this one.
    pub sender_usual: Fingerprint,
    /// The TTL equals the sender's usual TTL.
    pub ttl_fits: Option<bool>,
    /// The IP ID continues the sender's counter (only judged when the sender's pattern is
    /// incrementing or zero).
    pub ip_id_fits: Option<bool>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TerminationKind {
    Fin,
    Rst,
}

/// A silence on the connection: no packet in either direction between two frames.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct Gap {
    pub secs: f64,
    /// The last packet before the silence, and the first after it.
    pub from_frame: u64,
    pub to_frame: u64,
    pub from_ts: Timestamp,
}

/// What one direction (orig -> resp, or back) carried.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Direction {
    pub pkts: u64,
    /// IP bytes, headers included (Zeek's orig_ip_bytes).
    pub ip_bytes: u64,
    /// Payload bytes counted once per sequence number (Zeek's orig_bytes); for UDP, payload bytes.
    pub bytes: u64,
    /// Payload bytes as sent, retransmissions included.
    pub payload_bytes_sent: u64,
    pub first_ts: Option<Timestamp>,
    pub last_ts: Option<Timestamp>,
    pub retransmissions: u64,
    pub keepalives: u64,
    pub zero_windows: u64,
    /// Holes in the sequence space: data the capture never saw.
    pub gaps: u64,
    pub missed_bytes: u64,
    pub fingerprint: Fingerprint,
}

/// A connection's summary: the boundary type of this stage, and the row `vantage flows` prints.
/// Field names follow Zeek's conn.log where the meaning is the same.
#[derive(Clone, Debug, Serialize)]
pub struct Connection {
    pub uid: String,
    /// The capture file it was seen in.
    pub capture: String,
    pub proto: Proto,
    pub orig_h: IpAddr,
    pub orig_p: u16,
    pub resp_h: IpAddr,
    pub resp_p: u16,
    /// Outer and inner VLAN id, where tagged.
    pub vlan: Option<[u16; 2]>,
    pub ts: Timestamp,
    pub last_ts: Timestamp,
    pub first_frame: u64,
    pub last_frame: u64,
    /// Zeek's conn_state (TCP only).
    pub conn_state: Option<&'static str>,
    /// Zeek's history letters (TCP only).
    pub history: Option<String>,
    /// No SYN was seen: orientation follows Zeek's rule (the lower port is the responder).
    pub mid_stream: bool,
    pub orig: Direction,
    pub resp: Direction,
    /// Handshake round trip as seen at this capture point: SYN to the ACK of the SYN-ACK
    /// (Wireshark's iRTT).
    pub rtt_s: Option<f64>,
    /// The longest silence on the connection.
    pub max_idle: Option<Gap>,
    /// The first FIN or RST.
    pub termination: Option<Termination>,
    /// Why this connection was split from an earlier one on the same 5-tuple, if it was.
    pub reused_port: bool,
}

impl Connection {
    pub fn duration_s(&self) -> f64 {
        self.last_ts.secs_since(self.ts)
    }
}

/// Per-direction sequence tracking.
#[derive(Clone, Debug, Default)]
struct SeqState {
    /// Initial sequence number, from the SYN, or the first segment seen.
    isn: Option<u32>,
    saw_syn: bool,
    /// Next expected sequence number: highest seq + length (+1 for SYN and FIN) seen.
    next: Option<u32>,
    fin_seen: bool,
    profile: Profile,
}

/// RFC 9293 §3.4 sequence comparison, modulo 2^32.
fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

#[derive(Clone, Debug)]
struct Live {
    conn: Connection,
    orig_state: EndpointState,
    resp_state: EndpointState,
    orig_seq: SeqState,
    resp_seq: SeqState,
    /// History letters already recorded once (bit per letter and case).
    history_once: u64,
    /// Threshold counters for letters repeated at 1, 10, 100, ... (Zeek's "logarithmic"
    /// history letters): retransmissions, zero windows, gaps, per side.
    thresholds: [(u64, u64); 6],
    syn_ts: Option<Timestamp>,
    synack_ts: Option<Timestamp>,
    /// Orig / resp addresses, to tell directions apart.
    orig_key: (IpAddr, u16),
    /// True once the connection has closed (both FINs) or reset.
    ended: bool,
}

/// Tracks the connections of one capture.
pub struct Tracker {
    capture: String,
    live: HashMap<FlowKey, Live>,
    done: Vec<Connection>,
    /// Packets that were IP but neither TCP nor UDP, or later fragments.
    pub other_ip: u64,
    pub fragments: u64,
}

impl Tracker {
    pub fn new(capture: impl Into<String>) -> Self {
        Tracker {
            capture: capture.into(),
            live: HashMap::new(),
            done: Vec::new(),
            other_ip: 0,
            fragments: 0,
        }
    }

    /// Feeds one decoded packet.
    pub fn packet(&mut self, frame: &Frame<'_>, p: &Packet<'_>) {
        if p.fragment != crate::decode::Fragment::No {
            self.fragments += 1;
        }
        match &p.transport {
            Transport::Tcp(t) => self.tcp(frame, p, t),
            Transport::Udp(u) => self.udp(frame, p, u),
            Transport::Other { .. } => self.other_ip += 1,
        }
    }

    /// Ends tracking and returns every connection, sorted by start time (then frame).
    pub fn finish(mut self) -> Vec<Connection> {
        let live: Vec<Live> = self.live.drain().map(|(_, l)| l).collect();
        for l in live {
            self.done.push(finish_live(l));
        }
        self.done
            .sort_by(|a, b| a.ts.cmp(&b.ts).then(a.first_frame.cmp(&b.first_frame)));
        self.done
    }

    pub fn live_connections(&self) -> usize {
        self.live.len()
    }

    fn tcp(&mut self, frame: &Frame<'_>, p: &Packet<'_>, t: &TcpSegment<'_>) {
        let key = FlowKey::new(p, t.src_port, t.dst_port, Proto::Tcp);
        let src = (p.src, t.src_port);
        let flags = t.flags;
        let pure_syn = flags.syn() && !flags.ack();
        let mut reused = false;
        if let Some(l) = self.live.get(&key) {
            // Port reuse: a new SYN after a close, a RST, or a long silence, or a SYN whose ISN
            // differs from the one this connection started with.
            let silence = frame.ts.0 - l.conn.last_ts.0;
            let from_orig = src == l.orig_key;
            let same_isn = from_orig && l.orig_seq.saw_syn && l.orig_seq.isn == Some(t.seq);
            let new_conn = pure_syn
                && !same_isn
                && (l.ended
                    || silence > TCP_REUSE_SILENCE_NS
                    || (l.orig_seq.saw_syn && from_orig)
                    || l.resp_seq.fin_seen
                    || l.orig_seq.fin_seen);
            if new_conn {
                let old = self.live.remove(&key).expect("present");
                self.done.push(finish_live(old));
                reused = true;
            }
        }
        let capture = &self.capture;
        let live = self.live.entry(key).or_insert_with(|| {
            // Orientation: the sender of a SYN is the originator, the sender of a SYN-ACK the
            // responder. Mid-stream, Zeek's rule: the lower port is the responder.
            let (orig, resp, mid_stream) = if flags.syn() && !flags.ack() {
                (src, (p.dst, t.dst_port), false)
            } else if flags.syn() && flags.ack() {
                ((p.dst, t.dst_port), src, false)
            } else if t.dst_port <= t.src_port {
                (src, (p.dst, t.dst_port), true)
            } else {
                ((p.dst, t.dst_port), src, true)
            };
            new_live(capture, Proto::Tcp, orig, resp, frame, p.vlan, mid_stream)
        });
        live.conn.reused_port |= reused;
        track_tcp(live, frame, p, t);
    }

    fn udp(&mut self, frame: &Frame<'_>, p: &Packet<'_>, u: &UdpDatagram<'_>) {
        let key = FlowKey::new(p, u.src_port, u.dst_port, Proto::Udp);
        if let Some(l) = self.live.get(&key) {
            if frame.ts.0 - l.conn.last_ts.0 > UDP_INACTIVITY_NS {
                let old = self.live.remove(&key).expect("present");
                self.done.push(finish_live(old));
            }
        }
        let src = (p.src, u.src_port);
        let capture = &self.capture;
        let live = self.live.entry(key).or_insert_with(|| {
            new_live(
                capture,
                Proto::Udp,
                src,
                (p.dst, u.dst_port),
                frame,
                p.vlan,
                false,
            )
        });
        let from_orig = src == live.orig_key;
        touch(live, frame);
        let d = if from_orig {
            &mut live.conn.orig
        } else {
            &mut live.conn.resp
        };
        count(d, frame, p);
        d.bytes += u.payload_len as u64;
        d.payload_bytes_sent += u.payload_len as u64;
        let prof = if from_orig {
            &mut live.orig_seq.profile
        } else {
            &mut live.resp_seq.profile
        };
        prof.add(p.ttl, p.ip_id);
    }
}

fn new_live(
    capture: &str,
    proto: Proto,
    orig: (IpAddr, u16),
    resp: (IpAddr, u16),
    frame: &Frame<'_>,
    vlan: [u16; 2],
    mid_stream: bool,
) -> Live {
    let uid = make_uid(capture, proto, orig, resp, frame.ts);
    Live {
        conn: Connection {
            uid,
            capture: capture.to_string(),
            proto,
            orig_h: orig.0,
            orig_p: orig.1,
            resp_h: resp.0,
            resp_p: resp.1,
            vlan: (vlan != [0, 0]).then_some(vlan),
            ts: frame.ts,
            last_ts: frame.ts,
            first_frame: frame.number,
            last_frame: frame.number,
            conn_state: None,
            history: (proto == Proto::Tcp).then(String::new),
            mid_stream,
            orig: Direction::default(),
            resp: Direction::default(),
            rtt_s: None,
            max_idle: None,
            termination: None,
            reused_port: false,
        },
        orig_state: EndpointState::Inactive,
        resp_state: EndpointState::Inactive,
        orig_seq: SeqState::default(),
        resp_seq: SeqState::default(),
        history_once: 0,
        thresholds: [(0, 1); 6],
        syn_ts: None,
        synack_ts: None,
        orig_key: orig,
        ended: false,
    }
}

/// A stable, Zeek-looking uid ("C" + base62), derived from the capture name, the 5-tuple and the
/// start time, so that the same capture always yields the same uids (snapshots, tickets).
fn make_uid(
    capture: &str,
    proto: Proto,
    orig: (IpAddr, u16),
    resp: (IpAddr, u16),
    ts: Timestamp,
) -> String {
    // FNV-1a, 64 bit: tiny, stable across platforms and versions.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    let name = std::path::Path::new(capture)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    feed(name.as_bytes());
    feed(&[proto as u8]);
    feed(orig.0.to_string().as_bytes());
    feed(&orig.1.to_be_bytes());
    feed(resp.0.to_string().as_bytes());
    feed(&resp.1.to_be_bytes());
    feed(&ts.0.to_be_bytes());
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut s = String::from("C");
    for _ in 0..17 {
        s.push(ALPHABET[(h % 62) as usize] as char);
        h /= 62;
        if h == 0 {
            h = 0x9e37_79b9_7f4a_7c15;
        }
    }
    s
}

/// Connection-level bookkeeping common to TCP and UDP: last seen, longest silence.
fn touch(live: &mut Live, frame: &Frame<'_>) -> f64 {
    let c = &mut live.conn;
    let gap = if frame.ts > c.last_ts {
        frame.ts.secs_since(c.last_ts)
    } else {
        0.0
    };
    if gap > 0.0 && c.max_idle.is_none_or(|g| gap > g.secs) {
        c.max_idle = Some(Gap {
            secs: gap,
            from_frame: c.last_frame,
            to_frame: frame.number,
            from_ts: c.last_ts,
        });
    }
    if frame.ts > c.last_ts {
        c.last_ts = frame.ts;
    }
    c.last_frame = frame.number;
    gap
}

fn count(d: &mut Direction, frame: &Frame<'_>, p: &Packet<'_>) {
    d.pkts += 1;
    d.ip_bytes += p.ip_len as u64;
    if d.first_ts.is_none() {
        d.first_ts = Some(frame.ts);
    }
    d.last_ts = Some(frame.ts);
}

fn track_tcp(live: &mut Live, frame: &Frame<'_>, p: &Packet<'_>, t: &TcpSegment<'_>) {
    let from_orig = (p.src, t.src_port) == live.orig_key;
    let side = if from_orig { Side::Orig } else { Side::Resp };
    let gap = touch(live, frame);
    let flags = t.flags;

    // Handshake timing (Wireshark's iRTT: SYN to the ACK that completes the handshake).
    if flags.syn() && !flags.ack() && from_orig && live.syn_ts.is_none() {
        live.syn_ts = Some(frame.ts);
    } else if flags.syn() && flags.ack() && !from_orig && live.synack_ts.is_none() {
        live.synack_ts = Some(frame.ts);
    } else if !flags.syn() && flags.ack() && from_orig && live.conn.rtt_s.is_none() {
        if let (Some(s), Some(_)) = (live.syn_ts, live.synack_ts) {
            live.conn.rtt_s = Some(frame.ts.secs_since(s));
        }
    }

    // The first FIN or RST: record it, with the sender's fingerprint from before it.
    if (flags.fin() || flags.rst()) && live.conn.termination.is_none() {
        let seq_state = if from_orig {
            &live.orig_seq
        } else {
            &live.resp_seq
        };
        let usual = seq_state.profile.fingerprint();
        let ttl_fits = (usual.packets > 0).then_some(usual.ttl_usual == p.ttl);
        let ip_id_fits = match (usual.ip_id_pattern, p.ip_id, usual.ip_id_last) {
            // A counter only moves forward; a global counter (Windows, older Linux) may move
            // far during a long silence, so any forward step up to half the ID space fits. Zero,
            // or a step backwards, does not: the packet came from somewhere else.
            (IpIdPattern::Incrementing, Some(id), Some(last)) => {
                let step = id.wrapping_sub(last);
                Some(id != 0 && step > 0 && step < 0x8000)
            }
            (IpIdPattern::Zero, Some(id), _) => Some(id == 0),
            _ => None,
        };
        live.conn.termination = Some(Termination {
            kind: if flags.rst() {
                TerminationKind::Rst
            } else {
                TerminationKind::Fin
            },
            by: side,
            ts: frame.ts,
            frame: frame.number,
            ttl: p.ttl,
            ip_id: p.ip_id,
            window: t.window,
            ack_flag: flags.ack(),
            seq: t.seq,
            options_len: t.options.len,
            idle_before_s: gap,
            sender_usual: usual,
            ttl_fits,
            ip_id_fits,
        });
    }

    let (d, seq, my_state, peer_state) = if from_orig {
        (
            &mut live.conn.orig,
            &mut live.orig_seq,
            &mut live.orig_state,
            &mut live.resp_state,
        )
    } else {
        (
            &mut live.conn.resp,
            &mut live.resp_seq,
            &mut live.resp_state,
            &mut live.orig_state,
        )
    };
    count(d, frame, p);
    d.payload_bytes_sent += t.payload_len as u64;
    seq.profile.add(p.ttl, p.ip_id);

    // Sequence analysis, Wireshark's rules (epan/dissectors/packet-tcp.c,
    // tcp_analyze_sequence_number): keep-alive, zero window, retransmission, lost segment.
    let seglen = t.payload_len + flags.syn() as u32 + flags.fin() as u32;
    let mut retransmission = false;
    let mut keepalive = false;
    let mut gap_seen = false;
    if flags.syn() {
        if seq.isn.is_none() || !seq.saw_syn {
            seq.isn = Some(t.seq);
        }
        seq.saw_syn = true;
    } else if seq.isn.is_none() {
        seq.isn = Some(t.seq);
    }
    if let Some(next) = seq.next {
        if t.payload_len <= 1
            && !flags.syn()
            && !flags.fin()
            && !flags.rst()
            && t.seq == next.wrapping_sub(1)
        {
            keepalive = true;
            d.keepalives += 1;
        } else if seglen > 0 && seq_lt(t.seq, next) && !flags.rst() {
            retransmission = true;
            d.retransmissions += 1;
        } else if seglen > 0 && seq_lt(next, t.seq) && !flags.rst() {
            gap_seen = true;
            d.gaps += 1;
            d.missed_bytes += t.seq.wrapping_sub(next) as u64;
        }
    }
    if t.window == 0 && !flags.syn() && !flags.fin() && !flags.rst() {
        d.zero_windows += 1;
    }
    let end = t.seq.wrapping_add(seglen);
    if !flags.rst() && seglen > 0 && seq.next.is_none_or(|n| seq_lt(n, end)) {
        seq.next = Some(end);
    } else if seq.next.is_none() && !flags.rst() {
        seq.next = Some(t.seq);
    }
    if flags.fin() {
        seq.fin_seen = true;
    }
    // Unique payload bytes (Zeek's orig_bytes): the span of sequence space covered.
    if let (Some(isn), Some(next)) = (seq.isn, seq.next) {
        let span = next.wrapping_sub(isn) as u64;
        let ctl = seq.saw_syn as u64 + seq.fin_seen as u64;
        d.bytes = span.saturating_sub(ctl).saturating_sub(d.missed_bytes);
    }

    update_states(flags, t.payload_len, my_state, peer_state);

    // History letters.
    let upper = from_orig;
    let hist = live.conn.history.get_or_insert_with(String::new);
    let mut once = |c: char| {
        let bit = 1u64 << ((c as u8 - b'A') % 64);
        let bit = if upper { bit } else { bit.rotate_left(32) };
        if live.history_once & bit == 0 {
            live.history_once |= bit;
            hist.push(if upper { c } else { c.to_ascii_lowercase() });
        }
    };
    if flags.syn() && flags.rst() {
        once('I');
    } else if flags.syn() && flags.ack() {
        once('H');
    } else if flags.syn() {
        once('S');
    }
    if flags.fin() {
        once('F');
    }
    if flags.rst() {
        once('R');
    }
    if t.payload_len > 0 && !retransmission {
        once('D');
    } else if flags.ack() && !flags.syn() && !flags.fin() && !flags.rst() && t.payload_len == 0 {
        once('A');
    }
    // Letters Zeek repeats at 1, 10, 100, ... occurrences.
    let base = if from_orig { 0 } else { 3 };
    let mut threshold = |slot: usize, c: char| {
        let (n, next) = &mut live.thresholds[base + slot];
        *n += 1;
        if *n == *next {
            *next *= 10;
            hist.push(if upper { c } else { c.to_ascii_lowercase() });
        }
    };
    if retransmission {
        threshold(0, 'T');
    }
    if t.window == 0 && !flags.syn() && !flags.fin() && !flags.rst() {
        threshold(1, 'W');
    }
    if gap_seen {
        threshold(2, 'G');
    }
    let _ = keepalive;

    let closed = matches!(
        live.orig_state,
        EndpointState::Closed | EndpointState::Reset
    ) && matches!(
        live.resp_state,
        EndpointState::Closed | EndpointState::Reset
    );
    if flags.rst() || closed {
        live.ended = true;
    }
}

/// Endpoint state transitions, after Zeek's TCP analyzer (TCP.cc, UpdateStateMachine).
fn update_states(
    flags: crate::decode::TcpFlags,
    payload_len: u32,
    me: &mut EndpointState,
    peer: &mut EndpointState,
) {
    use EndpointState::*;
    if flags.rst() {
        *me = Reset;
        return;
    }
    if flags.syn() {
        if flags.ack() {
            if matches!(*me, Inactive | Partial) {
                *me = SynAckSent;
            }
            if *peer == SynSent {
                *peer = Established;
            }
        } else if matches!(*me, Inactive) {
            *me = SynSent;
        }
    }
    if flags.fin() {
        if *me != Reset {
            *me = Closed;
        }
        return;
    }
    if !flags.syn() {
        match *me {
            Inactive => *me = Partial,
            SynSent if flags.ack() && *peer != Inactive => *me = Established,
            SynAckSent if flags.ack() || payload_len > 0 => *me = Established,
            _ => {}
        }
        if *peer == SynAckSent && flags.ack() {
            *peer = Established;
        }
    }
}

/// Zeek's conn_state (scripts/base/protocols/conn/main.zeek), from the endpoint states.
fn conn_state(c: &Connection, os: EndpointState, rs: EndpointState) -> &'static str {
    use EndpointState::*;
    let o_inactive = matches!(os, Inactive | Partial);
    let r_inactive = matches!(rs, Inactive | Partial);
    let history = c.history.as_deref().unwrap_or("");
    if rs == Reset {
        if matches!(os, SynSent | SynAckSent)
            || (os == Reset && c.orig.bytes == 0 && c.resp.bytes == 0)
        {
            "REJ"
        } else if o_inactive {
            "RSTRH"
        } else {
            "RSTR"
        }
    } else if os == Reset {
        if r_inactive {
            if rstos0_history(history) {
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

/// Zeek: `/\^?S[^HAFGIQ]*R.*/ == history`.
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

fn finish_live(mut l: Live) -> Connection {
    if l.conn.proto == Proto::Tcp {
        l.conn.conn_state = Some(conn_state(&l.conn, l.orig_state, l.resp_state));
    }
    l.conn.orig.fingerprint = l.orig_seq.profile.fingerprint();
    l.conn.resp.fingerprint = l.resp_seq.profile.fingerprint();
    l.conn
}
