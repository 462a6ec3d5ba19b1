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

use std::net::IpAddr;

use serde::Serialize;

use crate::capture::{Frame, Timestamp};
use crate::decode::{Packet, TcpSegment, Transport, UdpDatagram};

pub mod digest;
pub mod kept;
mod park;
pub mod reassembly;
pub mod spill;
pub mod zeek;

pub use digest::{Digest, DigestRef, Digests};

use zeek::{Seg, ZeekTcp};

use crate::app::heartbeat::HbLog;
use crate::app::session::{AppSummary, Session};
use reassembly::{Reassembler, StreamSink};

/// Zeek's defaults for when a quiet UDP flow is over (`udp_inactivity_timeout`, 1 min,
/// scripts/base/init-bare.zeek).
pub const UDP_INACTIVITY_NS: i64 = 60_000_000_000;
/// A SYN on a 5-tuple that has been silent this long starts a new connection even without a
/// close (Zeek's `tcp_inactivity_timeout` is 5 min). Without a SYN, no silence splits a
/// connection: long silences are exactly what we diagnose.
pub const TCP_REUSE_SILENCE_NS: i64 = 300_000_000_000;

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, schemars::JsonSchema,
)]
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

pub use zeek::EndpointState;

/// Two endpoints (address, port) of a conversation, the lower first: the same for both
/// directions.
pub type Conversation = ((IpAddr, u16), (IpAddr, u16));

/// The conversation between `a` and `b`, whichever sent.
pub fn conversation(a: (IpAddr, u16), b: (IpAddr, u16)) -> Conversation {
    if endpoint_le(a, b) {
        (a, b)
    } else {
        (b, a)
    }
}

/// `a <= b` in the tuples' own order (`IpAddr`'s, then the port's), for two IPv4 ends as one
/// integer comparison: the address's octets big-endian above the port, which orders them as
/// the tuple does. Every packet orders its ends twice (the prefetch and the lookup), and the
/// derived comparison, not inlined, was ~1 % of a diagnosis (`perf`).
#[inline]
fn endpoint_le(a: (IpAddr, u16), b: (IpAddr, u16)) -> bool {
    match (a.0, b.0) {
        (IpAddr::V4(x), IpAddr::V4(y)) => {
            let key =
                |ip: std::net::Ipv4Addr, port| u64::from(ip.to_bits()) << 16 | u64::from(port);
            key(x, a.1) <= key(y, b.1)
        }
        _ => a <= b,
    }
}

/// Connection key: the 5-tuple (addresses and ports ordered so both directions map to one key)
/// plus VLAN ids, as Zeek's `vlan_fivetuple` conn key does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct FlowKey {
    lo: (IpAddr, u16),
    hi: (IpAddr, u16),
    vlan: [u16; 2],
    proto: Proto,
}

impl FlowKey {
    fn new(p: &Packet<'_>, sport: u16, dport: u16, proto: Proto) -> Self {
        Self::of((p.src, sport), (p.dst, dport), p.vlan, proto)
    }

    /// The key of a TCP or UDP packet's connection; none for other IP packets.
    fn of_packet(p: &Packet<'_>) -> Option<Self> {
        match &p.transport {
            Transport::Tcp(t) => Some(FlowKey::new(p, t.src_port, t.dst_port, Proto::Tcp)),
            Transport::Udp(u) => Some(FlowKey::new(p, u.src_port, u.dst_port, Proto::Udp)),
            Transport::Other { .. } => None,
        }
    }

    fn of(a: (IpAddr, u16), b: (IpAddr, u16), vlan: [u16; 2], proto: Proto) -> Self {
        let (lo, hi) = conversation(a, b);
        FlowKey {
            lo,
            hi,
            vlan,
            proto,
        }
    }

    /// The key's hash under `seed`: the words of the key folded by multiplication
    /// (foldhash's mix, `folded_multiply`). The derived `Hash` fed `IpAddr`'s discriminant and
    /// bytes piece by piece through a `Hasher`, ~75 instructions a key, and every packet hashes
    /// its key at least twice (the prefetch and the lookup; a shard's choice too); an IPv4 key
    /// is three words here, a handful of instructions.
    fn hash_with(&self, seed: u64) -> u64 {
        fn v6(a: IpAddr) -> u128 {
            match a {
                IpAddr::V4(a) => u128::from(a.to_ipv6_mapped()),
                IpAddr::V6(a) => u128::from(a),
            }
        }
        let ports = u64::from(self.lo.1) << 48
            | u64::from(self.hi.1) << 32
            | u64::from(self.vlan[0]) << 16
            | u64::from(self.vlan[1]);
        let addrs = match (self.lo.0, self.hi.0) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                u64::from(u32::from(a)) << 32 | u64::from(u32::from(b))
            }
            (a, b) => {
                let (a, b) = (v6(a), v6(b));
                mix((a as u64) ^ HASH_K[2], (a >> 64) as u64 ^ seed)
                    ^ mix((b as u64) ^ HASH_K[3], (b >> 64) as u64 ^ seed)
            }
        };
        fold(addrs, ports, self.proto, seed)
    }

    /// `hash_with(seed)` of the key of a TCP segment with these IPv4 ends and no VLAN, without
    /// making the key: each as one integer, ordered as `endpoint_le` orders them.
    fn hash_v4_tcp(a: (std::net::Ipv4Addr, u16), b: (std::net::Ipv4Addr, u16), seed: u64) -> u64 {
        let key =
            |(ip, port): (std::net::Ipv4Addr, u16)| u64::from(ip.to_bits()) << 16 | u64::from(port);
        let (lo, hi) = if key(a) <= key(b) {
            (key(a), key(b))
        } else {
            (key(b), key(a))
        };
        let addrs = (lo >> 16) << 32 | hi >> 16;
        let ports = (lo & 0xffff) << 48 | (hi & 0xffff) << 32;
        fold(addrs, ports, Proto::Tcp, seed)
    }
}

/// The last step of `FlowKey::hash_with`: the addresses' word and the ports' (and VLANs') folded
/// by multiplication with the protocol.
fn fold(addrs: u64, ports: u64, proto: Proto, seed: u64) -> u64 {
    mix(
        addrs ^ seed ^ HASH_K[0],
        ports ^ HASH_K[1] ^ (proto as u64) << 1,
    )
}

/// Two words folded by multiplication (foldhash's `folded_multiply`).
fn mix(a: u64, b: u64) -> u64 {
    let full = u128::from(a) * u128::from(b);
    (full as u64) ^ ((full >> 64) as u64)
}

/// The digits of pi, as foldhash's seeds are (`FlowKey::hash_with`).
const HASH_K: [u64; 4] = [
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7344,
    0xa409_3822_299f_31d0,
    0x082e_fa98_ec4e_6c89,
];

/// The live connections by key. A table of slot numbers, each found by its hash and checked
/// against the key the connection holds in its first cache line: a bucket is 4 bytes instead of
/// the key's 48 plus a pointer, so the table stays in the cache, and the key is compared where
/// the packet is about to read anyway (the profile had the probe of a key-and-pointer table as
/// 7.5 % of the run, most of it a cache miss).
///
/// The connections themselves sit in chunks of `SLOTS` slots, ~256 KiB each, which glibc maps
/// on their own (`pipeline::tune_malloc` fixes its threshold at 128 KiB). When tracking ends
/// and the chunks go, their pages go back to the system whole. Allocated one by one, each
/// freed state left a ~1.2 KB hole between the summaries kept, which the alignment's and the
/// rules' lists could not use: they grew the heap by ~6 MB past the tracking's own peak on the
/// 200 MB synth.
struct LiveTable {
    table: hashbrown::HashTable<u32>,
    chunks: Vec<Box<[Option<Live>]>>,
    /// Empty slots, the last freed on top.
    free: Vec<u32>,
    /// The seed of `FlowKey::hash_with`, random per table as foldhash's `RandomState` is, so
    /// that a capture cannot be made to collide. SipHash's stronger guarantee bought nothing
    /// for a capture's own flows, and its cost showed in the profile (benches/RESULTS.md).
    seed: u64,
}

/// A seed for `FlowKey::hash_with`, random per table as foldhash's `RandomState` is, so that a
/// capture cannot be made to collide (`LiveTable`, `park::Parked`).
fn random_seed() -> u64 {
    use std::hash::BuildHasher as _;
    foldhash::fast::RandomState::default().hash_one(0x0076_616e_7461_6765_u64)
}

/// Slots in a chunk of `LiveTable`: enough for 128 KiB, glibc's mmap threshold
/// (`pipeline::tune_malloc`), with room to spare whatever size `Live` has (256 slots at its
/// 1 024 bytes).
const SLOTS: usize = 256 * 1024 / std::mem::size_of::<Option<Live>>() + 1;
const _: () = assert!(SLOTS * std::mem::size_of::<Option<Live>>() > 128 * 1024);

fn slot(chunks: &[Box<[Option<Live>]>], i: u32) -> &Live {
    chunks[i as usize / SLOTS][i as usize % SLOTS]
        .as_ref()
        .expect("the table names occupied slots only")
}

fn slot_mut(chunks: &mut [Box<[Option<Live>]>], i: u32) -> &mut Live {
    chunks[i as usize / SLOTS][i as usize % SLOTS]
        .as_mut()
        .expect("the table names occupied slots only")
}

impl LiveTable {
    fn new() -> Self {
        LiveTable {
            table: hashbrown::HashTable::new(),
            chunks: Vec::new(),
            free: Vec::new(),
            seed: random_seed(),
        }
    }

    fn hash(&self, k: &FlowKey) -> u64 {
        k.hash_with(self.seed)
    }

    fn len(&self) -> usize {
        self.table.len()
    }

    fn get(&self, k: &FlowKey) -> Option<&Live> {
        let chunks = &self.chunks;
        self.table
            .find(self.hash(k), |&i| slot(chunks, i).key == *k)
            .map(|&i| slot(chunks, i))
    }

    fn get_mut(&mut self, k: &FlowKey) -> Option<&mut Live> {
        let hash = self.hash(k);
        let chunks = &mut self.chunks;
        let i = *self.table.find(hash, |&i| slot(chunks, i).key == *k)?;
        Some(slot_mut(chunks, i))
    }

    /// Asks the CPU to fetch the connection with this key into the cache, if there is one,
    /// and returns its slot: the table (small, in the cache) is probed, the connection itself
    /// not read.
    fn prefetch(&self, k: &FlowKey) -> Option<u32> {
        let chunks = &self.chunks;
        self.table
            .find(self.hash(k), |&i| {
                prefetch_lines(&chunks[i as usize / SLOTS][i as usize % SLOTS]);
                true
            })
            .copied()
    }

    /// The connection in a slot, if there is one still.
    fn at(&self, i: u32) -> Option<&Live> {
        self.chunks
            .get(i as usize / SLOTS)
            .and_then(|c| c.get(i as usize % SLOTS))
            .and_then(|l| l.as_ref())
    }

    fn contains_key(&self, k: &FlowKey) -> bool {
        self.get(k).is_some()
    }

    fn remove(&mut self, k: &FlowKey) -> Option<Live> {
        let h = self.hash(k);
        let chunks = &self.chunks;
        let i = self
            .table
            .find_entry(h, |&i| slot(chunks, i).key == *k)
            .ok()?
            .remove()
            .0;
        self.free.push(i);
        self.chunks[i as usize / SLOTS][i as usize % SLOTS].take()
    }

    /// The connection with this key, or `new()` put in its place; and whether it was there.
    /// A lookup first, then an insert for a new connection: nearly every packet finds its
    /// connection, and hashbrown's `entry`, which does both, was left out of line by the
    /// compiler once the tracker's code grew elsewhere (cachegrind, 200 MB synth: +3 %
    /// instructions), where the lookup alone stays inlined.
    fn get_or_insert_with(&mut self, k: FlowKey, new: impl FnOnce() -> Live) -> (&mut Live, bool) {
        let h = self.hash(&k);
        let LiveTable {
            table,
            chunks,
            free,
            seed,
        } = self;
        if let Some(&i) = table.find(h, |&i| slot(chunks, i).key == k) {
            return (slot_mut(chunks, i), true);
        }
        let i = match free.pop() {
            Some(i) => i,
            None => {
                let base = chunks.len() * SLOTS;
                chunks.push((0..SLOTS).map(|_| None).collect());
                // Handed out from the chunk's first slot up.
                free.extend((base + 1..base + SLOTS).rev().map(|i| i as u32));
                base as u32
            }
        };
        // The hasher reads only the slots already in the table (a rehash moves those).
        table.insert_unique(h, i, |&j| slot(chunks, j).key.hash_with(*seed));
        let at = &mut chunks[i as usize / SLOTS][i as usize % SLOTS];
        (at.insert(new()), false)
    }

    /// `get_or_insert_with`, where `prefetch` found the key in slot `hint` a few packets
    /// before: a slot still holding the key holds its connection (a slot is occupied exactly
    /// while the table names it, and the table names one slot a key), so the table is not
    /// probed again, nor the key hashed. A slot emptied or reused since falls back to the
    /// lookup.
    #[inline]
    fn get_or_insert_at(
        &mut self,
        k: FlowKey,
        hint: Option<u32>,
        new: impl FnOnce() -> Live,
    ) -> (&mut Live, bool) {
        if let Some(i) = hint {
            if self.at(i).is_some_and(|l| l.key == k) {
                return (slot_mut(&mut self.chunks, i), true);
            }
        }
        self.get_or_insert_with(k, new)
    }

    fn iter(&self) -> impl Iterator<Item = &Live> {
        self.table.iter().map(|&i| slot(&self.chunks, i))
    }

    /// Every live connection, chunk by chunk; each chunk is freed once its connections are
    /// handed out.
    fn drain(&mut self) -> impl Iterator<Item = Live> {
        self.table.clear();
        self.free.clear();
        std::mem::take(&mut self.chunks)
            .into_iter()
            .flat_map(|c| c.into_vec().into_iter().flatten())
    }
}

/// Asks the CPU to fetch the cache line of `at` (a hint: no fault whatever the address).
#[inline]
fn prefetch_ptr(at: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it reads nothing the program sees, and does not fault.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(at.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

/// Asks the CPU to fetch every cache line of `v` (a hint: no fault whatever the address).
pub(crate) fn prefetch_lines<T>(v: &T) {
    let at = (v as *const T).cast::<u8>();
    let mut off = 0;
    while off < std::mem::size_of::<T>() {
        prefetch_ptr(at.wrapping_add(off));
        off += 64;
    }
}

/// `prefetch_lines`, and the line of `v`'s last byte, which that leaves out when `v` does not
/// start on a line and ends past the last line it stepped to.
pub(crate) fn prefetch_all_lines<T>(v: &T) {
    prefetch_lines(v);
    let at = (v as *const T).cast::<u8>();
    prefetch_ptr(at.wrapping_add(std::mem::size_of::<T>().saturating_sub(1)));
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
/// Counters are u32 (saturating): two profiles sit in every live connection, and no connection
/// of a capture carries 4 billion packets one way.
struct Profile {
    packets: u32,
    /// Up to four TTLs seen and how many packets carried each (two arrays: as pairs, padding
    /// made them 32 bytes instead of 20, twice a live connection).
    ttl_values: [u8; 4],
    ttl_counts: [u32; 4],
    ttl_min: u8,
    ttl_max: u8,
    ip_ids: u32,
    ip_id_zero: u32,
    ip_id_small_step: u32,
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
        self.packets = self.packets.saturating_add(1);
        self.ttl_min = self.ttl_min.min(ttl);
        self.ttl_max = self.ttl_max.max(ttl);
        let slots = || 0..self.ttl_values.len();
        if let Some(i) = slots().find(|&i| self.ttl_counts[i] > 0 && self.ttl_values[i] == ttl) {
            self.ttl_counts[i] = self.ttl_counts[i].saturating_add(1);
        } else if let Some(i) = slots().find(|&i| self.ttl_counts[i] == 0) {
            (self.ttl_values[i], self.ttl_counts[i]) = (ttl, 1);
        }
        if let Some(id) = ip_id {
            self.ip_ids = self.ip_ids.saturating_add(1);
            if id == 0 {
                self.ip_id_zero = self.ip_id_zero.saturating_add(1);
            }
            if let Some(last) = self.ip_id_last {
                let step = id.wrapping_sub(last);
                if step > 0 && step <= IP_ID_STEP {
                    self.ip_id_small_step = self.ip_id_small_step.saturating_add(1);
                }
            }
            self.ip_id_last = Some(id);
        }
    }

    fn fingerprint(&self) -> Fingerprint {
        let (ttl_usual, ttl_usual_count) = self
            .ttl_values
            .iter()
            .copied()
            .zip(self.ttl_counts)
            .max_by_key(|(_, n)| *n)
            .unwrap_or((0, 0));
        let pattern = if self.ip_ids < 2 {
            IpIdPattern::None
        } else if self.ip_id_zero == self.ip_ids {
            IpIdPattern::Zero
        } else if u64::from(self.ip_id_small_step) * 10 >= (u64::from(self.ip_ids) - 1) * 8 {
            IpIdPattern::Incrementing
        } else {
            IpIdPattern::Random
        };
        Fingerprint {
            packets: u64::from(self.packets),
            ttl_usual,
            ttl_usual_count: u64::from(ttl_usual_count),
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

/// A `Gap` as a live connection keeps it: 32 bytes, not 40. Its length stays the nanoseconds
/// `Timestamp::secs_since` divides, so `secs` is the same number; its side is a bit in
/// `Live::broken_by_resp`.
#[derive(Clone, Copy, Debug, Default)]
struct LiveGap {
    from_ts: Timestamp,
    ns: i64,
    from_frame: u64,
    to_frame: u64,
}

impl LiveGap {
    fn secs(&self) -> f64 {
        self.ns as f64 / 1e9
    }

    /// The `Gap`, broken by the responder if `resp` is 1.
    fn gap(&self, resp: u8) -> Gap {
        Gap {
            secs: self.secs(),
            by: if resp & 1 == 1 {
                Side::Resp
            } else {
                Side::Orig
            },
            from_frame: self.from_frame,
            to_frame: self.to_frame,
            from_ts: self.from_ts,
        }
    }
}

/// `Live::handshake`: the SYN was seen, a SYN-ACK was seen, the iRTT is known.
const HS_SYN: u8 = 1;
const HS_SYNACK: u8 = 2;
const HS_RTT: u8 = 4;

/// Bits of `Live::broken_by_resp` that belong to `silences`.
const SILENCE_BITS: u8 = (1 << TOP_GAPS) - 1;
const _: () = assert!(TOP_GAPS < 8);

/// A silence on the connection: no packet in either direction between two frames.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct Gap {
    pub secs: f64,
    /// Who broke the silence.
    pub by: Side,
    /// The last packet before the silence, and the first after it.
    pub from_frame: u64,
    pub to_frame: u64,
    pub from_ts: Timestamp,
}

/// One direction while the connection lives: the `Direction` it will be, less what the end
/// writes from the tracking state (fingerprint, ISN, Zeek's byte count for TCP), and with its
/// first and last times valid once `pkts` > 0 rather than optional, its Wireshark counters and
/// first-data frame narrower: 120 bytes instead of 200, twice in every live connection.
#[derive(Debug, Default)]
struct LiveDir {
    pkts: u64,
    ip_bytes: u64,
    /// UDP payload bytes (TCP's come from Zeek's state at the end).
    bytes: u64,
    payload_bytes_sent: u64,
    first_ts: Timestamp,
    last_ts: Timestamp,
    /// Counted in 32 bits (saturating) while live: 4 billion retransmissions on one
    /// connection would take a capture of hundreds of GB.
    retransmissions: u32,
    keepalives: u32,
    zero_windows: u32,
    gaps: u32,
    samples: Samples,
    /// Boxed while live too, as `Direction::retransmitted` is: most connections have none,
    /// and the slot is 8 bytes instead of 24 in each direction of every live connection.
    #[allow(clippy::box_collection)]
    retransmitted: Option<Box<Vec<Sample>>>,
    /// Time and frame of the first data segment; frame 0 (frames count from 1) for none.
    first_data_ts: Timestamp,
    first_data_frame: u64,
}

impl LiveDir {
    fn finish(self, seq: &SeqState) -> Direction {
        let seen = self.pkts > 0;
        Direction {
            pkts: self.pkts,
            ip_bytes: self.ip_bytes,
            bytes: self.bytes,
            payload_bytes_sent: self.payload_bytes_sent,
            first_ts: seen.then_some(self.first_ts),
            last_ts: seen.then_some(self.last_ts),
            retransmissions: self.retransmissions.into(),
            keepalives: self.keepalives.into(),
            zero_windows: self.zero_windows.into(),
            gaps: self.gaps.into(),
            fingerprint: seq.profile.fingerprint(),
            isn: seq.isn,
            saw_syn: seq.saw_syn,
            samples: {
                let mut s = self.samples;
                s.pack();
                s
            },
            retransmitted: self.retransmitted.into(),
            first_data: std::num::NonZeroU64::new(self.first_data_frame)
                .map(|frame| (self.first_data_ts, frame)),
        }
    }
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
    /// Segments that start above the next expected sequence number (Wireshark's "previous
    /// segment not captured").
    pub gaps: u64,
    pub fingerprint: Fingerprint,
    /// Initial sequence number (from the SYN, or the first segment seen).
    pub isn: Option<u32>,
    /// The SYN was seen, so `isn` is the real one.
    pub saw_syn: bool,
    /// Packets kept to line this connection up with other captures: see `Sample`.
    #[serde(skip)]
    pub samples: Samples,
    /// Segments this capture saw twice: retransmissions of bytes it had seen (first
    /// `MAX_RETRANS` of them), for placing losses on a hop. A retransmission whose first copy
    /// never reached this capture (Wireshark counts it, after a pure ACK beyond the last data
    /// moved its `nextseq`) is counted in `retransmissions` but is not one of these. A
    /// `BoxedList`: most connections have none.
    #[serde(skip)]
    pub retransmitted: crate::boxed_list::BoxedList<Sample>,
    /// Time and frame of the first data segment (TCP), kept even when the samples are not
    /// (`first_data`). The frame is never 0 (frames count from 1), so it is 16 bytes, not
    /// 24: twice in every kept summary, and nearly all have one.
    #[serde(skip)]
    first_data: Option<(Timestamp, std::num::NonZeroU64)>,
}

impl Direction {
    /// Time and frame of the first data segment (TCP): the rules' `data_started`.
    pub fn first_data(&self) -> Option<(Timestamp, u64)> {
        self.first_data.map(|(ts, frame)| (ts, frame.get()))
    }
}

/// A packet that can be recognised in another capture of the same traffic: by its position in
/// the stream (sequence number relative to the ISN, which NAT keeps and proxies do not), its
/// length, and a hash of its first payload bytes (which NAT and most proxies keep).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub ts: Timestamp,
    pub frame: u64,
    pub kind: SampleKind,
    /// seq - ISN (TCP); datagram index in this direction (UDP).
    pub rel_seq: u32,
    pub len: u32,
    /// Hash of the first `SAMPLE_HASH_BYTES` captured payload bytes (0 without payload).
    pub hash: u64,
    pub ip_id: Option<u16>,
    pub ttl: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SampleKind {
    Syn,
    SynAck,
    Data,
    Fin,
    Rst,
    Datagram,
}

/// Silences kept per connection, and the shortest worth keeping.
pub const TOP_GAPS: usize = 6;
pub const MIN_SILENCE_S: f64 = 0.5;

/// Payload bytes hashed per sample: enough to tell messages apart, cheap per packet.
pub const SAMPLE_HASH_BYTES: usize = 64;
/// Samples kept per direction at the start and at the end of a connection. Memory per connection
/// stays fixed (about 2 KiB), whatever its length.
pub const SAMPLES_HEAD: usize = 24;
pub const SAMPLES_TAIL: usize = 24;
/// The most bytes a packed sample takes: a tag, four varints (at most 10, 10, 5 and 5 bytes),
/// its hash, IP ID and TTL.
const SAMPLE_PACKED_MAX: usize = 1 + 10 + 10 + 5 + 5 + 8 + 2 + 1;
/// A packed head's first room: a few samples (most of a connection's take ~17 bytes).
const HEAD_FIRST_ROOM: usize = 128;
pub const MAX_RETRANS: usize = 64;

/// The first `SAMPLES_HEAD` samples and the last `SAMPLES_TAIL`. Without `keep_samples`
/// nothing is stored but the count: 16 bytes a direction, which 20k live connections notice.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    kept: Option<Box<KeptSamples>>,
    /// Samples seen in all.
    pub total: u64,
}

#[derive(Clone, Debug)]
enum KeptSamples {
    /// The first samples, packed as they come (`packed_samples`), until there are
    /// `SAMPLES_HEAD`: `n` of them, the last one `prev` (the base of the next). As a list of
    /// `Sample`s (24 of 40 bytes, made at the first) a direction took 960 bytes from its first
    /// packet on: on the 100 MB NAT pair, 27 MB of the 103 MB peak heap, which is the end of
    /// reading, with ~27 000 of the 40 000 live directions still in their first 24 packets.
    Head {
        packed: Vec<u8>,
        prev: packed_samples::Prev,
        n: u8,
    },
    /// A `Head` complete, past `TrackerOptions::samples_in_memory` bytes of them: its `len`
    /// packed bytes wait at `at` in the tracker's file of heads (`heads_out`), not read back
    /// before the connection ends (`Tracker::join_heads`). `last` is the head's
    /// last sample, the base of the next. On the 100 MB NAT pair of issue 8's synth, the heads
    /// of the live connections (~410 bytes a direction, in a list of 1 KB with the tail's) were
    /// most of the packet samples that were 41 % of the heap at the end of reading.
    HeadInFile {
        at: u64,
        len: u32,
        last: packed_samples::Prev,
    },
    /// Then, in one list (`tail_layout`): those packed (they do not change again), the base
    /// and the last of the latest `SAMPLES_TAIL` samples, and those packed as they come, each
    /// after the one before it, the oldest after the base. Dropping the oldest makes it the
    /// base: the next was written after it, so nothing is written again. A two-capture
    /// diagnosis keeps samples for every live connection (26 000 at once on the 500 MB NAT
    /// pair of issue 8's synth); packed, a full head takes ~410 bytes, not 960, and so does
    /// the tail (a ring of 24 `Sample`s took 960 bytes a direction: ~50 MB of the 206 MB of
    /// heap that pair held at the end of reading).
    Tail {
        bytes: Vec<u8>,
        /// The head's last sample, the base of the first packed after it (`Samples::pack`).
        /// Kept here, where it costs nothing (`Head` holds one too, and sets the enum's
        /// size), rather than read back by decoding the whole head when the connection ends:
        /// ~1 700 instructions a direction, 1.7 % of lining the 100 MB NAT pair up.
        head_last: packed_samples::Prev,
        /// Where the base starts (the head's length).
        head: u16,
        /// Where the oldest of the tail starts.
        start: u16,
        /// Samples in the tail.
        n: u8,
    },
    /// A `Tail` after a `HeadInFile` (at `at`, `len` bytes): in `bytes`, laid out as a
    /// `Tail`'s with the head's last sample (`PREV_BYTES`) where the head's samples were.
    TailAfterFile {
        at: u64,
        len: u32,
        bytes: Vec<u8>,
        start: u16,
        n: u8,
    },
    /// Once the connection is summarised (`Samples::pack`): all of them, in the same order,
    /// packed.
    Packed(Box<[u8]>),
    /// `Packed` for a head in the file (`HeadInFile`): the tail packed after the head's last
    /// sample, so that the head's bytes and these are all of them, packed (`Tracker::join_heads`
    /// reads the head back and makes them one).
    PackedAfterFile { at: u64, len: u32, tail: Box<[u8]> },
    /// Those packed bytes, out of memory: the `len` bytes at `at` of a store of samples
    /// (`Tracker::spill_samples`), read back when asked (`Samples::iter`).
    OnDisk {
        store: std::sync::Arc<SampleStore>,
        at: u64,
        len: u32,
    },
}

/// `KeptSamples::Tail`'s list: the head's packed samples, then at `head` the tail's base and
/// last sample (`packed_samples::Prev`, `PREV_BYTES` each), then from `TAIL_FROM` past the
/// head its packed samples, the oldest at `start`.
mod tail_layout {
    pub(super) const PREV_BYTES: usize = 23;
    pub(super) const TAIL_FROM: usize = 2 * PREV_BYTES;
    /// The tail's room past the head once it is full: 24 samples (~410 bytes, ~17 each) and
    /// ~9 more, so that the dropped ones' bytes are taken out (the tail moved) every 9 samples
    /// or so.
    pub(super) const FULL_ROOM: usize = TAIL_FROM + 560;
    /// Its first room: two samples. Most tails stay short (a two-capture diagnosis keeps them
    /// for every live connection, and on the 100 MB NAT pair of issue 8's synth the typical
    /// direction had a few samples past its head at the end of reading, 125 bytes of the 629
    /// it had been given, 16 MB of the 76 MB heap); it grows by doubling, up to `FULL_ROOM`.
    pub(super) const FIRST_ROOM: usize = TAIL_FROM + 2 * super::SAMPLE_PACKED_MAX;

    /// The samples of a `Tail`'s `bytes` (its `head`, whose last sample is `head_last`, and
    /// `start`), packed one after another from the head's first (`with_head`) or after its last
    /// (not: the head waits in a file, `KeptSamples::TailAfterFile`).
    pub(super) fn packed(
        bytes: &[u8],
        head_last: super::packed_samples::Prev,
        head: u16,
        start: u16,
        with_head: bool,
    ) -> Box<[u8]> {
        use super::packed_samples::{pack_one, with_scratch};
        with_scratch(|packed| {
            // The base of the next packed sample: the head's last.
            let mut last = head_last;
            if with_head {
                packed.extend_from_slice(&bytes[..usize::from(head)]);
            }
            // The tail's oldest was packed after another base (the sample dropped last):
            // written again after the head's last; the others follow it as packed.
            if let Some((oldest, len)) = samples(bytes, head, start).one() {
                pack_one(packed, &mut last, &oldest);
                packed.extend_from_slice(&bytes[usize::from(start) + len..]);
            }
            Box::from(&packed[..])
        })
    }

    /// A tail begun with `s` after the head in `bytes` (`head` bytes: its packed samples, or
    /// its last sample's `PREV_BYTES`), whose last sample is `prev`: the list, `head`, and where
    /// the tail's oldest starts.
    pub(super) fn begin(
        mut bytes: Vec<u8>,
        prev: super::packed_samples::Prev,
        s: &super::Sample,
    ) -> (Vec<u8>, u16, u16) {
        let head = bytes.len();
        bytes.reserve_exact(FIRST_ROOM);
        bytes.resize(head + TAIL_FROM, 0);
        let (base, mut last) = (prev, prev);
        super::packed_samples::pack_one(&mut bytes, &mut last, s);
        let from = head + PREV_BYTES;
        base.put(&mut bytes[head..from]);
        last.put(&mut bytes[from..head + TAIL_FROM]);
        // A head is at most `SAMPLES_HEAD` (24) packed samples, under 1 100 bytes.
        let head = u16::try_from(head).unwrap_or(u16::MAX);
        (bytes, head, head + TAIL_FROM as u16)
    }

    /// `s` packed after the tail in `bytes` (its `head`, `start` and `n`), the oldest leaving
    /// when `SAMPLES_TAIL` are there.
    pub(super) fn push(
        bytes: &mut Vec<u8>,
        head: u16,
        start: &mut u16,
        n: &mut u8,
        s: &super::Sample,
    ) {
        use super::packed_samples::{pack_one, Prev};
        use super::{SAMPLES_TAIL, SAMPLE_PACKED_MAX};
        let h = usize::from(head);
        let (base_at, last_at) = (h, h + PREV_BYTES);
        let from = h + TAIL_FROM;
        if usize::from(*n) == SAMPLES_TAIL {
            // The oldest leaves and becomes the base.
            if let Some((oldest, len)) = samples(bytes, head, *start).one() {
                Prev::of(&oldest).put(&mut bytes[base_at..last_at]);
                *start += len as u16;
                *n -= 1;
            }
        }
        if bytes.capacity() - bytes.len() < SAMPLE_PACKED_MAX {
            // The dropped samples' bytes out first; more room only for a tail that still
            // lacks it: twice its room, up to a full tail's, and two samples more at least
            // (samples longer than most).
            bytes.drain(from..usize::from(*start));
            *start = from as u16;
            if bytes.capacity() - bytes.len() < SAMPLE_PACKED_MAX {
                let used = bytes.len() - h;
                let room = (2 * (bytes.capacity() - h))
                    .min(FULL_ROOM)
                    .max(used + 2 * SAMPLE_PACKED_MAX);
                bytes.reserve_exact(room - used);
            }
        }
        let mut last = Prev::get(&bytes[last_at..]);
        pack_one(bytes, &mut last, s);
        last.put(&mut bytes[last_at..from]);
        *n += 1;
    }

    /// The tail's samples in `bytes` (a `Tail`'s, with its `head` and `start`), decoded after
    /// their base.
    pub(super) fn samples(
        bytes: &[u8],
        head: u16,
        start: u16,
    ) -> super::packed_samples::Unpack<&[u8]> {
        let base = super::packed_samples::Prev::get(&bytes[usize::from(head)..]);
        super::packed_samples::Unpack::after(&bytes[usize::from(start)..], base)
    }
}

/// Where the samples of finished connections wait out of memory (`KeptSamples::OnDisk`):
/// written while tracking, sealed (checked once, and readable) when it ends
/// (`Tracker::summarise_live`). Shared by the connections it holds samples of.
type SampleStore = std::sync::OnceLock<spill::Sealed>;

// Every direction with samples has one (two captures: every connection, live or not); as big
// as the list heads it had before packing.
const _: () = assert!(std::mem::size_of::<KeptSamples>() <= 56);

/// A finished connection's samples, packed: a two-capture diagnosis keeps every connection
/// whole until the captures are lined up, and its samples (up to 96 of 40 bytes, ~3.9 KB a
/// connection) were most of the heap: 186 of 314 MB for the synth's 500 MB NAT pair. Each
/// sample is a tag byte (kind in bits 0-2, an IP ID in bit 3, the time's unit in bits 4-5:
/// `heartbeat::UNITS`, the TTL the previous sample's in bit 6, the IP ID a byte after the
/// previous one's in bit 7), then the zigzag varints of its time, frame and `rel_seq` less the
/// previous sample's (wrapping: exact for any values), its length as a varint, its hash (8
/// bytes), IP ID (if any: 1 byte, its distance from the previous sample's, when under 256,
/// else 2) and TTL (1, unless bit 6): ~17 bytes. A sender's TTL seldom changes within a
/// connection and its IP IDs mostly count up (RFC 6864 §4.1: a counter, per connection or
/// for the host), so the last two took 3 bytes of ~20 for 1. Exact: `iter` gives back what
/// was pushed.
mod packed_samples {
    use super::{Sample, SampleKind};
    use crate::app::heartbeat::{packed, UNITS};
    use crate::capture::Timestamp;
    use crate::varint::{push, read, unzigzag, zigzag};

    pub(super) const KINDS: [SampleKind; 6] = [
        SampleKind::Syn,
        SampleKind::SynAck,
        SampleKind::Data,
        SampleKind::Fin,
        SampleKind::Rst,
        SampleKind::Datagram,
    ];

    fn kind_index(k: SampleKind) -> u8 {
        match k {
            SampleKind::Syn => 0,
            SampleKind::SynAck => 1,
            SampleKind::Data => 2,
            SampleKind::Fin => 3,
            SampleKind::Rst => 4,
            SampleKind::Datagram => 5,
        }
    }

    /// The previous sample's time, frame and `rel_seq`, the base of the next one's.
    #[derive(Clone, Copy, Debug, Default)]
    pub(super) struct Prev {
        ts: i64,
        frame: u64,
        rel_seq: u32,
        /// 0 for a sample without one.
        ip_id: u16,
        ttl: u8,
    }

    /// Tag bits past the kind, the IP ID's presence and the time's unit.
    const SAME_TTL: u8 = 1 << 6;
    const IP_ID_STEP: u8 = 1 << 7;

    /// `f` given an empty buffer kept for the thread: a packing is copied out at its size, in
    /// one allocation (a `Vec` grown as it was written took five, and the reallocations'
    /// copies).
    pub(super) fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        thread_local! {
            static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            s.clear();
            f(&mut s)
        })
    }

    impl Prev {
        pub(super) fn of(s: &Sample) -> Self {
            Prev {
                ts: s.ts.0,
                frame: s.frame,
                rel_seq: s.rel_seq,
                ip_id: s.ip_id.unwrap_or(0),
                ttl: s.ttl,
            }
        }

        /// Its `PREV_BYTES` bytes (`tail_layout`).
        pub(super) fn put(&self, out: &mut [u8]) {
            out[..8].copy_from_slice(&self.ts.to_le_bytes());
            out[8..16].copy_from_slice(&self.frame.to_le_bytes());
            out[16..20].copy_from_slice(&self.rel_seq.to_le_bytes());
            out[20..22].copy_from_slice(&self.ip_id.to_le_bytes());
            out[22] = self.ttl;
        }

        /// From `put`'s bytes (zero where `bytes` is short: never, as written).
        pub(super) fn get(bytes: &[u8]) -> Self {
            let mut b = [0u8; super::tail_layout::PREV_BYTES];
            let n = bytes.len().min(b.len());
            b[..n].copy_from_slice(&bytes[..n]);
            Prev {
                ts: i64::from_le_bytes(b[..8].try_into().unwrap_or_default()),
                frame: u64::from_le_bytes(b[8..16].try_into().unwrap_or_default()),
                rel_seq: u32::from_le_bytes(b[16..20].try_into().unwrap_or_default()),
                ip_id: u16::from_le_bytes(b[20..22].try_into().unwrap_or_default()),
                ttl: b[22],
            }
        }
    }

    /// `s` packed after `out`'s, whose last sample is `prev` (the default for none), which
    /// becomes `s`.
    pub(super) fn pack_one(out: &mut Vec<u8>, prev: &mut Prev, s: &Sample) {
        let (exp, ts) = packed(s.ts.0.wrapping_sub(prev.ts));
        let step = s.ip_id.map(|id| id.wrapping_sub(prev.ip_id));
        let small_step = step.is_some_and(|d| d < 256);
        let tag = kind_index(s.kind)
            | u8::from(s.ip_id.is_some()) << 3
            | exp << 4
            | if s.ttl == prev.ttl { SAME_TTL } else { 0 }
            | if small_step { IP_ID_STEP } else { 0 };
        out.push(tag);
        push(out, ts);
        push(out, zigzag(s.frame.wrapping_sub(prev.frame) as i64));
        push(
            out,
            zigzag(i64::from(s.rel_seq.wrapping_sub(prev.rel_seq) as i32)),
        );
        push(out, u64::from(s.len));
        out.extend_from_slice(&s.hash.to_le_bytes());
        match (step, s.ip_id) {
            (Some(d), _) if small_step => out.push(d as u8),
            (_, Some(id)) => out.extend_from_slice(&id.to_le_bytes()),
            _ => {}
        }
        if s.ttl != prev.ttl {
            out.push(s.ttl);
        }
        *prev = Prev::of(s);
    }

    /// Decoder of `pack`'s bytes; stops at bytes that do not decode (never written). Reads
    /// them in place (`&[u8]`), or owns them (`Vec<u8>`: read back from a store).
    #[derive(Default)]
    pub struct Unpack<B> {
        bytes: B,
        at: usize,
        prev: Prev,
    }

    impl<B: AsRef<[u8]>> Unpack<B> {
        pub(super) fn new(bytes: B) -> Self {
            Self::after(bytes, Prev::default())
        }

        /// Samples packed after `prev`.
        pub(super) fn after(bytes: B, prev: Prev) -> Self {
            Unpack { bytes, at: 0, prev }
        }

        /// The next sample and how many bytes it took (`None` at the end, or for bytes that do
        /// not decode).
        pub(super) fn one(&mut self) -> Option<(Sample, usize)> {
            let at = self.at;
            let s = self.sample()?;
            Some((s, self.at - at))
        }

        // Inlined: the alignment reads every sample several times (~5 on the NAT synth), and
        // out of line (the compiler merged it with the heartbeat log's identical reader) the
        // calls cost more than the decoding.
        #[inline(always)]
        fn varint(&mut self) -> Option<u64> {
            // Most are a byte: deltas between a connection's packets.
            let b = *self.bytes.as_ref().get(self.at)?;
            if b < 0x80 {
                self.at += 1;
                return Some(u64::from(b));
            }
            let (v, at) = read(self.bytes.as_ref(), self.at)?;
            self.at = at;
            Some(v)
        }

        fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
            let b = self
                .bytes
                .as_ref()
                .get(self.at..self.at + N)?
                .try_into()
                .ok()?;
            self.at += N;
            Some(b)
        }

        #[inline(always)]
        fn sample(&mut self) -> Option<Sample> {
            let [tag] = self.take::<1>()?;
            let kind = *KINDS.get(usize::from(tag & 7))?;
            let unit = UNITS[usize::from(tag >> 4 & 3)];
            let ts = self
                .prev
                .ts
                .wrapping_add(unzigzag(self.varint()?).wrapping_mul(unit));
            let frame = self
                .prev
                .frame
                .wrapping_add(unzigzag(self.varint()?) as u64);
            let rel_seq = self
                .prev
                .rel_seq
                .wrapping_add(unzigzag(self.varint()?) as i32 as u32);
            let len = u32::try_from(self.varint()?).ok()?;
            let hash = u64::from_le_bytes(self.take::<8>()?);
            let ip_id = match (tag & 8 != 0, tag & IP_ID_STEP != 0) {
                (true, true) => {
                    let [d] = self.take::<1>()?;
                    Some(self.prev.ip_id.wrapping_add(u16::from(d)))
                }
                (true, false) => Some(u16::from_le_bytes(self.take::<2>()?)),
                (false, _) => None,
            };
            let ttl = if tag & SAME_TTL != 0 {
                self.prev.ttl
            } else {
                self.take::<1>()?[0]
            };
            self.prev = Prev {
                ts,
                frame,
                rel_seq,
                ip_id: ip_id.unwrap_or(0),
                ttl,
            };
            Some(Sample {
                ts: Timestamp(ts),
                frame,
                kind,
                rel_seq,
                len,
                hash,
                ip_id,
                ttl,
            })
        }
    }

    /// Whether `bytes` are samples packed whole (what `pack` writes): every byte read, no
    /// sample cut short.
    pub(super) fn decodes(bytes: &[u8]) -> bool {
        let mut u = Unpack::new(bytes);
        while u.at < bytes.len() {
            if u.sample().is_none() {
                return false;
            }
        }
        true
    }

    impl<B: AsRef<[u8]>> Iterator for Unpack<B> {
        type Item = Sample;
        #[inline]
        fn next(&mut self) -> Option<Sample> {
            let len = self.bytes.as_ref().len();
            if self.at >= len {
                return None;
            }
            let s = self.sample();
            if s.is_none() {
                self.at = len;
            }
            s
        }

        /// What `next` gives, in one loop: `for_each` comes here (`Vec::extend` on a filtered
        /// iterator does not: it calls `next`), and the alignment reads every connection's
        /// samples this way, ~2.4 M of them on the 100 MB NAT pair (through `next`, each paid
        /// the call and a 40-byte `Option<Sample>`).
        #[inline]
        fn fold<A, F: FnMut(A, Sample) -> A>(mut self, init: A, mut f: F) -> A {
            let len = self.bytes.as_ref().len();
            let mut acc = init;
            while self.at < len {
                match self.sample() {
                    Some(s) => acc = f(acc, s),
                    None => break,
                }
            }
            acc
        }
    }
}

impl Samples {
    /// The kept samples, taken, with the count; the count stays here too (the rules read it:
    /// `rules::Reads::data_segments`). What lining captures up reads of a connection kept in
    /// memory (`align::View::take`), and what one is written to a file without
    /// (`align::CaptureFlows::keep_in_file`, whose views have copies).
    pub fn take_kept(&mut self) -> Samples {
        Samples {
            kept: self.kept.take(),
            total: self.total,
        }
    }

    /// The kept samples `take_kept` took, given back.
    pub fn give_back(&mut self, taken: Samples) {
        self.kept = taken.kept;
    }

    /// Fetches the kept samples' box (`KeptSamples`) into the cache, for a packet soon after
    /// (or, lining captures up, for a connection read soon after: `align::View::prefetch`).
    #[inline]
    pub(crate) fn prefetch_box(&self) {
        if let Some(k) = self.kept.as_deref() {
            prefetch_lines(k);
            // 56 bytes at a 16-byte boundary may end on the next line.
            prefetch_ptr((k as *const KeptSamples).cast::<u8>().wrapping_add(55));
        }
    }

    /// Fetches where `push` reads and writes the packed bytes (the box fetched a packet
    /// before: `prefetch_box`).
    #[inline]
    fn prefetch_bytes(&self) {
        // The tail's base and last sample (`head`), its oldest (`start`: read when it leaves),
        // and its end.
        let (bytes, tail) = match self.kept.as_deref() {
            Some(KeptSamples::Head { packed, .. }) => (packed, None),
            Some(KeptSamples::Tail {
                bytes, head, start, ..
            }) => (bytes, Some((usize::from(*head), usize::from(*start)))),
            Some(KeptSamples::TailAfterFile { bytes, start, .. }) => {
                (bytes, Some((0, usize::from(*start))))
            }
            _ => return,
        };
        let at = bytes.as_ptr();
        if let Some((head, start)) = tail {
            prefetch_ptr(at.wrapping_add(head));
            prefetch_ptr(at.wrapping_add(head + tail_layout::TAIL_FROM - 1));
            prefetch_ptr(at.wrapping_add(start));
        }
        prefetch_ptr(at.wrapping_add(bytes.len()));
    }

    /// Counts a sample that is not kept (`keep_samples` off).
    fn count(&mut self) {
        self.total += 1;
    }

    /// Drops the kept samples, keeping the count.
    fn drop_kept(&mut self) {
        self.kept = None;
    }

    /// Keeps `s`. True when it completed the head (`SAMPLES_HEAD` kept): the tracker may move
    /// the head to its file then (`heads_out`, through `Tracker::head_complete`).
    fn push(&mut self, s: Sample) -> bool {
        self.total += 1;
        let k = self.kept.get_or_insert_with(|| {
            Box::new(KeptSamples::Head {
                packed: Vec::new(),
                prev: packed_samples::Prev::default(),
                n: 0,
            })
        });
        match &mut **k {
            KeptSamples::Head { packed, prev, n } if usize::from(*n) < SAMPLES_HEAD => {
                // A sample is ~17 bytes packed, at most `SAMPLE_PACKED_MAX`: room for a few at
                // first, then doubled, so a full head (~410 bytes) is in 512, which the tail's
                // list then grows from (below).
                if packed.capacity() - packed.len() < SAMPLE_PACKED_MAX {
                    let room = (2 * packed.capacity()).max(HEAD_FIRST_ROOM);
                    packed.reserve_exact(room - packed.len());
                }
                packed_samples::pack_one(packed, prev, &s);
                *n += 1;
                return usize::from(*n) == SAMPLES_HEAD;
            }
            KeptSamples::Head { packed, prev, .. } => {
                // The head's list goes on as the tail's: its last sample is the tail's base.
                let (bytes, head, start) = tail_layout::begin(std::mem::take(packed), *prev, &s);
                **k = KeptSamples::Tail {
                    bytes,
                    head_last: *prev,
                    head,
                    start,
                    n: 1,
                };
            }
            &mut KeptSamples::HeadInFile { at, len, last } => {
                // The head's last sample where its samples would be (`TailAfterFile`).
                let mut bytes =
                    Vec::with_capacity(tail_layout::PREV_BYTES + tail_layout::FIRST_ROOM);
                bytes.resize(tail_layout::PREV_BYTES, 0);
                last.put(&mut bytes);
                let (bytes, _, start) = tail_layout::begin(bytes, last, &s);
                **k = KeptSamples::TailAfterFile {
                    at,
                    len,
                    bytes,
                    start,
                    n: 1,
                };
            }
            KeptSamples::Tail {
                bytes,
                head,
                start,
                n,
                ..
            } => tail_layout::push(bytes, *head, start, n, &s),
            KeptSamples::TailAfterFile {
                bytes, start, n, ..
            } => tail_layout::push(bytes, tail_layout::PREV_BYTES as u16, start, n, &s),
            // A summary gets no more packets.
            KeptSamples::Packed(_)
            | KeptSamples::PackedAfterFile { .. }
            | KeptSamples::OnDisk { .. } => {}
        }
        false
    }

    /// The kept samples packed (`packed_samples`), for a connection that has ended.
    fn pack(&mut self) {
        let Some(k) = self.kept.as_deref_mut() else {
            return;
        };
        let packed = match k {
            // Packed already: copied at its size.
            KeptSamples::Head { packed, .. } => Box::from(&packed[..]),
            KeptSamples::Tail {
                bytes,
                head_last,
                head,
                start,
                ..
            } => tail_layout::packed(bytes, *head_last, *head, *start, true),
            KeptSamples::TailAfterFile {
                at,
                len,
                bytes,
                start,
                ..
            } => {
                let head_last = packed_samples::Prev::get(bytes);
                let head = tail_layout::PREV_BYTES as u16;
                let tail = tail_layout::packed(bytes, head_last, head, *start, false);
                *k = KeptSamples::PackedAfterFile {
                    at: *at,
                    len: *len,
                    tail,
                };
                return;
            }
            // A head in the file is packed as it is (`Tracker::join_heads`).
            KeptSamples::HeadInFile { .. }
            | KeptSamples::Packed(_)
            | KeptSamples::PackedAfterFile { .. }
            | KeptSamples::OnDisk { .. } => return,
        };
        *k = KeptSamples::Packed(packed);
    }

    /// Samples read back from the file of finished connections (`kept`'s `Codec`), which
    /// names no store: `store` is where they wait, if they do.
    fn in_store(&mut self, store: &std::sync::Arc<SampleStore>) {
        if let Some(KeptSamples::OnDisk { store: s, .. }) = self.kept.as_deref_mut() {
            *s = store.clone();
        }
    }

    /// Whether the samples wait in a temporary file (`TrackerOptions::samples_in_memory`),
    /// read back by `iter`.
    pub fn in_file(&self) -> bool {
        matches!(self.kept.as_deref(), Some(KeptSamples::OnDisk { .. }))
    }

    /// Bytes of packed samples held in memory (`pack` first).
    fn packed_len(&self) -> usize {
        match self.kept.as_deref() {
            Some(KeptSamples::Packed(b)) => b.len(),
            _ => 0,
        }
    }

    /// The packed samples written to `spill`, to be read back from `store` once it is sealed
    /// (`pack` first; anything else stays as it is).
    fn spill(&mut self, spill: &mut spill::Spill, store: &std::sync::Arc<SampleStore>) {
        let Some(k) = self.kept.as_deref_mut() else {
            return;
        };
        let KeptSamples::Packed(b) = k else {
            return;
        };
        let Ok(len) = u32::try_from(b.len()) else {
            return;
        };
        let at = spill.write_record(b);
        *k = KeptSamples::OnDisk {
            store: store.clone(),
            at,
            len,
        };
    }

    /// The head's bytes, if it is complete (`SAMPLES_HEAD`) and in memory with no tail yet.
    fn full_head_len(&self) -> Option<usize> {
        match self.kept.as_deref() {
            Some(KeptSamples::Head { packed, n, .. }) if usize::from(*n) == SAMPLES_HEAD => {
                Some(packed.len())
            }
            _ => None,
        }
    }

    /// A complete head (`full_head_len` says it is) written to `spill`, out of memory
    /// (`HeadInFile`).
    fn head_out(&mut self, spill: &mut spill::Spill) {
        let Some(k) = self.kept.as_deref_mut() else {
            return;
        };
        let KeptSamples::Head { packed, prev, n } = k else {
            return;
        };
        debug_assert_eq!(usize::from(*n), SAMPLES_HEAD);
        // At most `SAMPLES_HEAD` samples of at most `SAMPLE_PACKED_MAX` bytes.
        let len = packed.len() as u32;
        let at = spill.write_record(packed);
        *k = KeptSamples::HeadInFile {
            at,
            len,
            last: *prev,
        };
    }

    /// Samples whose head waits in `spill` (`HeadInFile`, `PackedAfterFile`: `pack` first)
    /// made one packed list again, in memory, the head read back. On a failed read the samples
    /// are dropped (their count stays) and the error returned.
    fn join_head(&mut self, spill: &spill::Spill) -> std::io::Result<()> {
        // Packed when their connection was summarised (`LiveDir::finish`); a tail left open
        // would never be read.
        self.pack();
        let Some(k) = self.kept.as_deref_mut() else {
            return Ok(());
        };
        let (at, len, tail): (u64, u32, &[u8]) = match k {
            KeptSamples::HeadInFile { at, len, .. } => (*at, *len, &[]),
            KeptSamples::PackedAfterFile { at, len, tail } => (*at, *len, tail),
            _ => return Ok(()),
        };
        match spill.read_back(at, len) {
            Ok(mut all) => {
                all.extend_from_slice(tail);
                *k = KeptSamples::Packed(all.into_boxed_slice());
                Ok(())
            }
            Err(e) => {
                self.kept = None;
                Err(e)
            }
        }
    }

    /// Whether part of the samples waits in the tracker's file, not sealed yet (`join_head`).
    fn head_in_file(&self) -> bool {
        matches!(
            self.kept.as_deref(),
            Some(
                KeptSamples::HeadInFile { .. }
                    | KeptSamples::TailAfterFile { .. }
                    | KeptSamples::PackedAfterFile { .. }
            )
        )
    }

    /// Every kept sample, in capture order.
    pub fn iter(&self) -> SamplesIter<'_> {
        let mut it = SamplesIter::default();
        match self.kept.as_deref() {
            None => {}
            Some(KeptSamples::Head { packed, .. }) => {
                it.packed = packed_samples::Unpack::new(&packed[..])
            }
            Some(KeptSamples::Tail {
                bytes, head, start, ..
            }) => {
                it.packed = packed_samples::Unpack::new(&bytes[..usize::from(*head)]);
                it.tail = tail_layout::samples(bytes, *head, *start);
            }
            Some(KeptSamples::Packed(b)) => it.packed = packed_samples::Unpack::new(&b[..]),
            // A head in the tracker's file is read once its connection is kept
            // (`Tracker::join_heads`), before anything reads a connection's samples: none
            // until then.
            Some(
                KeptSamples::HeadInFile { .. }
                | KeptSamples::TailAfterFile { .. }
                | KeptSamples::PackedAfterFile { .. },
            ) => {}
            // Read back, and decoded as asked. None from a store not sealed yet (nothing reads
            // a connection's samples before tracking ends) or one whose file lost them (the
            // tracker's warnings say so).
            Some(KeptSamples::OnDisk { store, at, len }) => {
                if let Some(Ok(bytes)) = store.get().map(|s| s.record(*at, *len)) {
                    it.read = packed_samples::Unpack::new(bytes);
                }
            }
        }
        it
    }
}

/// `Samples::iter`: the packed ones, then the latest. One iterator where chained ones
/// (`Option`s flattened) cost a third of the reading.
#[derive(Default)]
pub struct SamplesIter<'a> {
    packed: packed_samples::Unpack<&'a [u8]>,
    /// Those read back from a store (`KeptSamples::OnDisk`).
    read: packed_samples::Unpack<Vec<u8>>,
    /// The latest (`KeptSamples::Tail`).
    tail: packed_samples::Unpack<&'a [u8]>,
}

impl Iterator for SamplesIter<'_> {
    type Item = Sample;
    #[inline]
    fn next(&mut self) -> Option<Sample> {
        if let Some(s) = self.packed.next() {
            return Some(s);
        }
        if let Some(s) = self.read.next() {
            return Some(s);
        }
        self.tail.next()
    }

    /// Each part in its own loop (`Unpack::fold`), in `next`'s order.
    #[inline]
    fn fold<A, F: FnMut(A, Sample) -> A>(self, init: A, mut f: F) -> A {
        let acc = self.packed.fold(init, &mut f);
        let acc = self.read.fold(acc, &mut f);
        self.tail.fold(acc, f)
    }
}

/// The payload hash of a sample (stable within a run; only compared within one run).
pub fn payload_hash(payload: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    let n = payload.len().min(SAMPLE_HASH_BYTES);
    foldhash::quality::FixedState::with_seed(0x0076_616e_7461_6765).hash_one(&payload[..n])
}

/// A connection's summary: the boundary type of this stage, and the row `vantage flows` prints.
/// Field names follow Zeek's conn.log where the meaning is the same.
#[derive(Clone, Debug, Serialize)]
pub struct Connection {
    pub uid: Uid,
    /// The capture file it was seen in (shared by all of a capture's connections).
    pub capture: std::sync::Arc<str>,
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
    /// Zeek's history letters (TCP only). Shared: a capture's summaries have a few dozen
    /// different ones ("ShADadFf", "DdAfFa"), and a `String` each was 24 bytes and an
    /// allocation (~32 bytes) in every kept summary (`Histories`). Read with `as_deref`.
    pub history: Option<std::sync::Arc<str>>,
    /// No SYN was seen: orientation follows Zeek's rule (the lower port is the responder).
    pub mid_stream: bool,
    pub orig: Direction,
    pub resp: Direction,
    /// Handshake round trip as seen at this capture point: SYN to the ACK of the SYN-ACK
    /// (Wireshark's iRTT).
    pub rtt_s: Option<f64>,
    /// The longest silence on the connection.
    pub max_idle: Option<Gap>,
    /// The longest silences (at most `TOP_GAPS`, longest first): which one was fatal and which
    /// were survived bounds a middlebox's idle timeout.
    pub silences: Vec<Gap>,
    /// The first FIN or RST.
    pub termination: Option<Termination>,
    /// Bytes the peer acknowledged that the capture never saw (Zeek's missed_bytes).
    pub missed_bytes: u64,
    /// What the application layer found (service, upgrade, WebSocket, SIP, TLS, heartbeat).
    /// Boxed: it is over a kilobyte, and connections without an application layer (UDP noise,
    /// scans, a SYN flood) should not pay for it.
    #[serde(skip)]
    pub app: Option<Box<AppSummary>>,
    /// A new SYN on this 5-tuple split this connection from an earlier one.
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
    /// Next expected sequence number as Wireshark keeps it: the highest seq + length (+1 for
    /// SYN and FIN) of any segment, a pure ACK's too.
    next: Option<u32>,
    /// The end of the highest data (or SYN/FIN) this capture saw: below it, a segment is a copy
    /// of bytes seen here before.
    seen_end: Option<u32>,
    fin_seen: bool,
    profile: Profile,
}

/// RFC 9293 §3.4 sequence comparison, modulo 2^32.
fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// A live connection, in a slot of `LiveTable`'s chunks. Every packet reads it first thing, and
/// with 20k of them it is not in the cache: the profile showed the first read of each part as
/// most of the tracker's own time. So what every TCP packet touches is here, and `repr(C)`
/// keeps the fields read first together at the start; the application state (reassemblers,
/// session), which only some packets reach, is behind `app`. Every byte is paid 20 000 times
/// over on a busy capture: what the summary needs only at the end is written by `finish_live`.
#[derive(Debug)]
#[repr(C)]
struct Live {
    /// The table's key, compared on lookup (`LiveTable`).
    key: FlowKey,
    /// Last packet seen (Zeek's `last_time` stops at the close; silences need every packet).
    seen_last_ts: Timestamp,
    /// How many of `silences` are set.
    n_silences: u8,
    /// Whether the originator is the key's `lo` end (the key holds both ends; this tells
    /// directions apart).
    orig_is_lo: bool,
    /// Which side broke each silence: bit `i` for `silences[i]`, bit 7 for `max_idle`; set
    /// for the responder (`LiveGap` has no room for it).
    broken_by_resp: u8,
    /// The handshake so far (`HS_*` bits).
    handshake: u8,
    /// The longest silences so far, longest first (`touch`), moved into `conn.silences` when
    /// the connection is summarised. Inline beside `seen_last_ts`: the first packet after a
    /// silence reads them, and in a list of their own that read was a cache miss on about
    /// half the packets (half of `touch`, 9 % of a diagnosis, in the profile).
    silences: [LiveGap; TOP_GAPS],
    /// The longest silence of any length (`Connection::max_idle`); `from_frame` 0 for none.
    max_idle: LiveGap,
    /// For the iRTT: the SYN's time, and the handshake's last ACK's nanoseconds after it
    /// once `handshake` has `HS_RTT`.
    syn_ts: Timestamp,
    rtt_ns: i64,
    orig_seq: SeqState,
    resp_seq: SeqState,
    /// Zeek's endpoint states, history and byte counts.
    zeek: Option<ZeekTcp>,
    /// Stream reassembly and the application parsers (TCP), or SIP over UDP.
    app: Option<Box<AppState>>,
    conn: LiveConn,
}

// Every byte of a live connection is paid per connection tracked (20 000 at once in issue 8's
// synth), and of a summary per connection kept whole for the rules: a change that grows one
// fails here, so that it is made knowingly (benches/RESULTS.md has the figures behind these
// sizes). A digest is kept encoded (`digest::Digests`, ~100 bytes), not as a `Digest`.
const _: () = assert!(std::mem::size_of::<Live>() <= 992);
const _: () = assert!(std::mem::size_of::<Connection>() <= 672);

impl Live {
    /// Whether a packet from `src` goes orig -> resp.
    fn sent_by_orig(&self, src: (IpAddr, u16)) -> bool {
        (src == self.key.lo) == self.orig_is_lo
    }

    /// (originator, responder).
    fn endpoints(&self) -> ((IpAddr, u16), (IpAddr, u16)) {
        if self.orig_is_lo {
            (self.key.lo, self.key.hi)
        } else {
            (self.key.hi, self.key.lo)
        }
    }
}

/// The part of a `Connection` that packets change. The rest (uid, capture, addresses, Zeek's
/// state and history, silences, fingerprints) is known from the key and the tracking state, so
/// `finish_live` writes it once, at the end: kept in every live connection, it cost ~260 bytes
/// and an allocation (the uid) each, 20 000 times over on a busy capture.
#[derive(Debug)]
struct LiveConn {
    ts: Timestamp,
    last_ts: Timestamp,
    first_frame: u64,
    last_frame: u64,
    orig: LiveDir,
    resp: LiveDir,
    /// Boxed: set once, by the first FIN or RST, and most live connections have none yet.
    termination: Option<Box<Termination>>,
    /// SIP over UDP (TCP's application summary comes from `Live::app` at the end).
    app: Option<Box<AppSummary>>,
    mid_stream: bool,
    reused_port: bool,
}

/// Per-connection application state: one reassembler per direction feeding the session. In
/// this order (`repr(C)`): a packet reads its direction's reassembler (64 bytes, a cache line
/// each), then the session's per-packet fields, which come first in `Session`. Left to the
/// compiler, the fields were laid out so that a packet touched one more line (cachegrind on
/// the 200 MB synth: last-level misses 6.85 M -> 6.06 M with this order).
#[derive(Debug)]
#[repr(C)]
struct AppState {
    client: Reassembler,
    server: Reassembler,
    session: Session,
}

/// Hands reassembled bytes of one direction to the session.
struct Sink<'a> {
    session: &'a mut Session,
    from_client: bool,
}

impl StreamSink for Sink<'_> {
    fn data(&mut self, bytes: &[u8], ts: Timestamp, frame: u64) {
        self.session.data(self.from_client, bytes, ts, frame);
    }
    fn gap(&mut self, missing: u64) {
        self.session.gap(self.from_client, missing);
    }
}

/// What a one-capture diagnosis keeps of a finished connection: its digest, and whether the
/// connection is kept whole too (`TrackerOptions::digest`, `diagnose::rules::kept_as`).
pub type KeptAs = fn(&Connection) -> (Digest, bool);

/// What the tracker does beyond TCP/UDP bookkeeping.
#[derive(Clone, Copy, Debug)]
pub struct TrackerOptions {
    /// Reassemble streams and run the application parsers.
    pub app: bool,
    /// Keep each connection's application events (`vantage flows --detail`).
    pub detail: bool,
    /// With `detail`: only the connection whose uid this is (`uid_key`), the one `--detail`
    /// prints. Every connection's events (up to 2 000 each) made `flows --detail` on the
    /// 200 MB synth hold 199 MB to print one connection.
    pub detail_uid: Option<u64>,
    /// Bytes held out of order per direction.
    pub reassembly_cap: usize,
    /// Connections tracked at once. Past it, the least recently active eighth is summarised
    /// early (a SYN flood of a million half-open connections must not exhaust memory).
    pub max_live: usize,
    /// Connection summaries kept for the report. Past it, connections are counted, not kept.
    pub max_summaries: usize,
    /// Keep each connection's packet samples (alignment and timelines need them; `flows` does
    /// not).
    pub keep_samples: bool,
    /// Keep what only the HTML timeline draws: every heartbeat interval (up to 1000 a
    /// connection, 8 bytes each, where the report uses the median, p95 and maximum).
    pub timeline: bool,
    /// Keep the HTTP request and response heads (every header `flows` prints). The diagnosis
    /// reads only the outcome (upgraded, failed status, when), not the header strings.
    pub http_heads: bool,
    /// Keep the application details that only `flows` and the HTML report print: WebSocket
    /// frame counts and anomalies, the TLS ClientHello, every registration, calls never
    /// answered. Without them a finished connection keeps what the rules read: the upgrade's
    /// outcome, the first accepted registration (`recovery`), the answered calls
    /// (`call_cut`), the heartbeat.
    pub app_details: bool,
    /// Keep a record of each SIP registration, which the HTML report draws and the
    /// diagnosis reads (the first accepted one, `recovery`). `flows --format json` prints only
    /// how many there were: without records they are counted
    /// (`app::sip::SipDialogs::keep_registrations`).
    pub sip_registrations: bool,
    /// Threads that track one capture between them (`pipeline::read_capture`), each the
    /// connections `shard_of` gives it; 1 tracks on one thread. The tracker itself does not
    /// read it.
    pub shards: usize,
    /// A one-capture diagnosis: keeps a finished connection's `Digest`, and the connection
    /// whole too, on disk (`kept`), when this says a rule may end it (`Tracker::keep`). The
    /// rules decide (`diagnose::rules::kept_as`); the tracker only stores.
    pub digest: Option<KeptAs>,
    /// From how many live connections the reader holds frames back while it fetches their
    /// state into the cache (`pipeline::Lookahead`); `usize::MAX` never, 0 always. The tracker
    /// itself does not read it.
    pub prefetch_from: usize,
    /// A live TCP connection silent this long (capture time, ns) is parked encoded until its
    /// next packet (`park`); `i64::MAX` never. Nothing a report says depends on it.
    pub park_after_ns: i64,
    /// Past this many bytes of digests (`digest`), they are kept in start order in a temporary
    /// file when tracking ends, not in memory (`DigestStore::take_sorted`). Nothing a report
    /// says depends on it.
    pub digests_in_memory: usize,
    /// Past this many bytes of finished connections' packed samples (`keep_samples`), the
    /// samples of the next ones are kept in a temporary file until they are read
    /// (`Tracker::spill_samples`); `usize::MAX` never. The same for the complete heads of live
    /// connections' samples, counted with their tails' lists (`heads_out`). Shared by the
    /// captures read together
    /// (`pipeline::read_vantages_with`) and by a capture's shards. Nothing a report says
    /// depends on it.
    pub samples_in_memory: usize,
    /// Connections that end while tracking wait whole in a temporary file (`kept::KeptStore`)
    /// until it ends, and are read back into memory then, when the live ones have left it
    /// (`Tracker::read_back_finished`): a two-capture diagnosis keeps every connection whole
    /// for the alignment. One the encoding refuses (details a diagnosis does not keep: HTTP
    /// heads, WebSocket counts, a TLS hello, events) stays in memory. Nothing a report says
    /// depends on it.
    pub finished_in_file: bool,
}

/// `TrackerOptions::samples_in_memory`'s default: 4 MiB for a run, the samples of ~2 300
/// finished WebSocket connections (~1.8 KB each, both directions packed). Lining captures up
/// keeps every connection until the end, and the samples of those that ended were the largest
/// part of what grew with the captures: on issue 8's 500 MB NAT pair the peak went from 214
/// MiB with 16 MiB of them in memory (243 with all of them) to 189 with 4 (benches/RESULTS.md,
/// session 25); reading them back from the file's pages cost no time there. Small captures
/// (every fixture) keep theirs in memory and make no file.
pub const SAMPLES_IN_MEMORY: usize = 4 << 20;

/// `TrackerOptions::digests_in_memory`'s default: 16 MiB, ~170 000 connections' digests. The 2
/// GB synth's (74 000, 7.4 MB) stay in memory, where the rules read them fastest; the 20 GB
/// synth's (757 816, 75 MB) were the run's peak (benches/RESULTS.md, session 23).
pub const DIGESTS_IN_MEMORY: usize = 16 << 20;

/// `TrackerOptions::prefetch_from`'s default. Below it the connections' state (~2 KB each) is
/// mostly in the cache, and holding frames back only costs: a copy, a second decode and a
/// probe, ~250 instructions a packet. On the 2-vCPU EPYC VM (1 MiB of L2 a core, 32 MiB of
/// L3), the 200 MB synth's diagnosis, one thread, held back from the start: 1 000 agents ~5 %
/// slower, 3 000 ~12 % faster, 20 000 24 % faster (benches/RESULTS.md).
pub const PREFETCH_FROM: usize = 2048;

/// Defaults: 100 000 live connections (about 5x the busiest softswitch we have seen) cost a few
/// hundred MB at most; a million summaries about 1 GB, after their packet samples are dropped.
impl Default for TrackerOptions {
    fn default() -> Self {
        TrackerOptions {
            app: true,
            detail: false,
            detail_uid: None,
            reassembly_cap: reassembly::DEFAULT_CAP,
            max_live: 100_000,
            max_summaries: 1_000_000,
            keep_samples: true,
            timeline: true,
            http_heads: true,
            app_details: true,
            sip_registrations: true,
            shards: 1,
            digest: None,
            prefetch_from: PREFETCH_FROM,
            park_after_ns: park::PARK_AFTER_NS,
            digests_in_memory: DIGESTS_IN_MEMORY,
            samples_in_memory: SAMPLES_IN_MEMORY,
            finished_in_file: false,
        }
    }
}

/// The warning that `dropped` connections were counted but not kept, past `max_summaries`
/// (the tracker's, and the flows table's, which keeps rows instead of summaries).
pub fn summaries_dropped(dropped: u64, max_summaries: usize) -> crate::capture::Warning {
    crate::capture::Warning::new(
        format!(
            "{dropped} connections were counted but not kept: the report keeps at most {max_summaries} connections per capture"
        ),
        crate::i18n::Msg::new("w-summaries-dropped")
            .s("n", dropped)
            .s("max", max_summaries),
    )
}

/// Tracks the connections of one capture.
pub struct Tracker {
    capture: CaptureName,
    opts: TrackerOptions,
    /// Each `Live` is boxed: it is over a kilobyte, and an inline table wastes its free buckets'
    /// share of that and copies it on every resize (massif showed the table at half the heap).
    live: LiveTable,
    /// Live TCP connections silent for minutes, out of `live`, encoded (`park`). They count
    /// as live (`live_connections`).
    parked: park::Parked,
    /// When each connection that may be over should be looked at again: (capture time in ns
    /// after which it has been quiet long enough, key). A TCP connection enters when it closes,
    /// a UDP flow when it starts; one that has since seen packets goes back in with its new last
    /// packet. The sweep pops only what is due, instead of visiting every live connection each
    /// second (that visit was an eighth of the run time on 20k live connections).
    due: std::collections::BinaryHeap<std::cmp::Reverse<(i64, FlowKey)>>,
    /// Each boxed: a summary is made as its live state is freed, and fills the hole that left
    /// (a list of summaries inline grew by fresh pages instead: 19 MB on the 200 MB synth).
    /// Sorting and merging move pointers.
    #[allow(clippy::vec_box)] // boxed on purpose, see above
    done: Vec<Box<Connection>>,
    /// With `TrackerOptions::digest`: the finished connections kept as digests, beside `done`.
    /// `max_summaries` counts both.
    digests: digest::DigestStore,
    /// With `TrackerOptions::digest` (a one-capture diagnosis): the connections a rule may
    /// end, whole, out of memory (`kept::KeptStore`); each has its digest in `digests`, which
    /// names where it is. Sealed when tracking ends (`summarise_live`), and read from there
    /// by the rules, one at a time (`align::Alignment::connection`).
    kept: Option<kept::KeptStore>,
    /// Why some of `kept` could not be read back, for the warnings: those are read through
    /// their digests only.
    kept_lost: Option<std::io::Error>,
    /// With `TrackerOptions::finished_in_file`: the connections that ended while tracking,
    /// whole, out of memory until it ends (`read_back_finished`), and how many.
    finished: Option<kept::KeptStore>,
    finished_n: usize,
    /// Those that could not be read back, and why, for the warnings.
    finished_lost: Option<(usize, std::io::Error)>,
    /// Tracking has ended (`summarise_live`): a connection kept now stays in memory.
    at_end: bool,
    /// Finished connections' samples past `TrackerOptions::samples_in_memory`: written here
    /// while tracking (made at the first), sealed into `samples_store` when it ends.
    samples_spill: Option<spill::Spill>,
    samples_store: std::sync::Arc<SampleStore>,
    /// Bytes of packed samples kept in memory by the connections in `done`, so far.
    samples_held: usize,
    /// Complete heads of live connections' samples past `TrackerOptions::samples_in_memory`
    /// (`heads_out`), read back when their connection is kept (`join_heads`): a file of its
    /// own, never sealed (read only while tracking, by the tracker that wrote it) and dropped
    /// once every connection is kept. In `samples_spill`, the heads read back already were
    /// checked again when it was sealed, ~40 M instructions on the 100 MB NAT pair.
    heads_spill: Option<spill::Spill>,
    /// Bytes of complete heads of live connections' samples kept in memory so far, with their
    /// tails' lists: past `TrackerOptions::samples_in_memory`, later ones go to
    /// `heads_spill` (`heads_out`).
    heads_held: usize,
    /// Why some samples in the store could not be read back, for the warnings.
    samples_lost: Option<std::io::Error>,
    /// Packets that were IP but neither TCP nor UDP, or later fragments.
    pub other_ip: u64,
    pub fragments: u64,
    /// When the last sweep of ended connections ran.
    clock: SweepClock,
    /// The most connections live at once.
    pub peak_live: usize,
    /// Connections summarised early because the live table was full.
    pub evicted: u64,
    /// Connections counted but not kept because `max_summaries` was reached.
    pub dropped: u64,
    /// The history strings the summaries share.
    histories: Histories,
    /// With `tag_stream`: each summary's place in the order (`StreamTag`), beside `done`.
    tags: Option<Vec<StreamTag>>,
    /// The place the next summary takes.
    tag: StreamTag,
}

/// The connections a tracker kept: whole, and as digests (`TrackerOptions::digest`).
pub type Kept = (Vec<Box<Connection>>, Digests);

/// Moves `from`'s items to `to` (in reverse order), giving `from`'s room back as it empties, so
/// that no item is held twice: appended whole, two copies at once were the run's peak (massif,
/// flows on the 200 MB synth).
fn move_shrinking<T>(from: &mut Vec<T>, to: &mut Vec<T>) {
    while let Some(x) = from.pop() {
        to.push(x);
        // Every 1024 moved: a shrink is a cheap realloc (mremap for a large block).
        if from.capacity() - from.len() >= 1024 {
            from.shrink_to_fit();
        }
    }
}

/// Zeek's history strings, one of each, shared by the summaries that have it (a `String` each
/// was an allocation in every kept summary). Bounded, in case a capture has many different
/// ones: past `MAX_HISTORIES` a new one is not shared.
#[derive(Default)]
struct Histories(std::collections::HashSet<std::sync::Arc<str>>);

const MAX_HISTORIES: usize = 4096;

impl Histories {
    fn get(&mut self, h: &str) -> std::sync::Arc<str> {
        if let Some(a) = self.0.get(h) {
            return a.clone();
        }
        let a: std::sync::Arc<str> = h.into();
        if self.0.len() < MAX_HISTORIES {
            self.0.insert(a.clone());
        }
        a
    }
}

/// When a tracker looks for connections that have ended: once a second of capture time, at the
/// first packet a second or more after the last look.
#[derive(Clone, Copy, Debug)]
struct SweepClock {
    last: Timestamp,
}

impl Default for SweepClock {
    fn default() -> Self {
        Self::new()
    }
}

impl SweepClock {
    pub fn new() -> Self {
        SweepClock {
            last: Timestamp(i64::MIN),
        }
    }

    /// Whether to sweep at a packet of time `now` (and, if so, the sweep counts as done).
    pub fn tick(&mut self, now: Timestamp) -> bool {
        if self.last.0 == i64::MIN {
            self.last = now;
            return false;
        }
        if now.0 - self.last.0 < SWEEP_EVERY_NS {
            return false;
        }
        self.last = now;
        true
    }

    /// Whether `tick(now)` could be true, or set the clock, now or after any ticks before it:
    /// `last` only moves forward, so a packet within a second of it now is within a second
    /// of it then (`Tracker::sweep_may_be_due`).
    fn may_tick(&self, now: Timestamp) -> bool {
        self.last.0 == i64::MIN || now.0.saturating_sub(self.last.0) >= SWEEP_EVERY_NS
    }
}

/// Where in one tracker's order a connection was summarised, so that the streams of shards
/// (`shard_of`) can be merged back into exactly that order (`pipeline::stream_capture`). A
/// tracker summarises at a packet: first what the sweep before it found over, in (due time,
/// key) order; then what the packet itself ended (port reuse, a full table), in order; at the
/// end of the capture, what is left, by start time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct StreamTag {
    /// The packet's frame number; `u64::MAX` at the end.
    frame: u64,
    /// 0: the sweep, 1: the packet, 2: the end.
    phase: u8,
    /// Sweep: the due time; end: the start time.
    at: i64,
    /// End: the first frame.
    first_frame: u64,
    key: Option<FlowKey>,
    /// Order within one shard's summaries at one packet.
    seq: u64,
}

impl StreamTag {
    /// A connection still live at the end of the capture (`Tracker::stream_rest`): these come
    /// after every other, in start order (start time, then first frame), which `flows` prints
    /// them in.
    pub fn at_end(&self) -> bool {
        self.phase == 2
    }

    const START: StreamTag = StreamTag {
        frame: 0,
        phase: 0,
        at: 0,
        first_frame: 0,
        key: None,
        seq: 0,
    };
}

/// Which of `n` shards tracks a packet's connection: both directions of a connection, and
/// every later connection on its 5-tuple, land on the same one. Packets that are neither TCP
/// nor UDP (counted only) go to the first.
pub fn shard_of(p: &Packet<'_>, n: usize) -> usize {
    ConnKey::of_packet(p).map_or(0, |k| k.shard(n))
}

/// A packet's connection, as the tracker looks it up: from a decoded packet, or from a frame's
/// ends read before it is decoded (`decode::peek_ends`), the same key for both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnKey(FlowKey);

/// What the lookahead learnt of a TCP segment's connection before its turn
/// (`Tracker::packet_seen`): its key, and the slot `Tracker::prefetch_key` found it in.
#[derive(Clone, Copy, Debug)]
pub struct Seen {
    pub key: ConnKey,
    pub slot: Option<u32>,
}

impl ConnKey {
    /// A TCP or UDP packet's; none for other IP packets.
    pub fn of_packet(p: &Packet<'_>) -> Option<Self> {
        FlowKey::of_packet(p).map(ConnKey)
    }

    /// A TCP segment's over IPv4, outside any VLAN (the frames `peek_ends` reads).
    pub fn of_ends(e: crate::decode::Ends) -> Self {
        let end = |(a, port): (std::net::Ipv4Addr, u16)| (IpAddr::V4(a), port);
        ConnKey(FlowKey::of(end(e.src), end(e.dst), [0, 0], Proto::Tcp))
    }

    /// Which of `n` shards tracks it (`shard_of`).
    pub fn shard(&self, n: usize) -> usize {
        // A fixed seed: every shard must reach the same answer.
        (self.0.hash_with(0) % n as u64) as usize
    }

    /// `ConnKey::of_ends(e).shard(n)`, without the key: a shard asks it of every frame, and
    /// makes the key only of its own (~1 % of a two-thread diagnosis ordered the other
    /// shards' ends into keys).
    pub fn shard_of_ends(e: crate::decode::Ends, n: usize) -> usize {
        (FlowKey::hash_v4_tcp(e.src, e.dst, 0) % n as u64) as usize
    }
}

/// Zeek keeps a closed connection for `tcp_close_delay` (5 s, init-bare.zeek) so that late
/// packets still land on it; after that it is summarised and forgotten.
pub const TCP_CLOSE_DELAY_NS: i64 = 5_000_000_000;
/// How often (in capture time) ended connections are swept out of the live table.
const SWEEP_EVERY_NS: i64 = 1_000_000_000;

impl Tracker {
    pub fn new(capture: impl Into<String>) -> Self {
        Self::with_options(capture, TrackerOptions::default())
    }

    pub fn with_options(capture: impl Into<String>, opts: TrackerOptions) -> Self {
        Tracker {
            capture: CaptureName::new(capture.into()),
            opts,
            live: LiveTable::new(),
            parked: park::Parked::default(),
            due: std::collections::BinaryHeap::new(),
            done: Vec::new(),
            // Only a diagnosis keeps digests, and only it needs the temporary file.
            digests: if opts.digest.is_some() {
                digest::DigestStore::new()
            } else {
                digest::DigestStore::in_memory()
            },
            kept: opts.digest.is_some().then(kept::KeptStore::new),
            kept_lost: None,
            finished: None,
            finished_n: 0,
            finished_lost: None,
            at_end: false,
            samples_spill: None,
            samples_store: Default::default(),
            samples_held: 0,
            heads_spill: None,
            heads_held: 0,
            samples_lost: None,
            other_ip: 0,
            fragments: 0,
            clock: SweepClock::new(),
            peak_live: 0,
            evicted: 0,
            dropped: 0,
            histories: Histories::default(),
            tags: None,
            tag: StreamTag::START,
        }
    }

    /// Tags each summary with its place in the order summaries are made (`StreamTag`), for
    /// `drain_finished_tagged` and `stream_rest`.
    pub fn tag_stream(&mut self) {
        self.tags = Some(Vec::new());
    }

    /// Keeps a finished connection's summary, within `max_summaries`.
    fn keep(&mut self, mut c: Connection, mut hb: Option<HbLog>) {
        self.join_heads(&mut c);
        if let Some(app) = c.app.as_deref_mut() {
            if !self.opts.app_details {
                app.websocket = None;
                app.ws_anomalies = Default::default();
                app.tls = None;
                if let Some(sip) = app.sip.as_mut() {
                    // A REGISTER refresh every ~10 min is ~170 bytes each on a long connection;
                    // the rules read the first one the registrar accepted.
                    let first_ok = sip
                        .registrations
                        .iter()
                        .position(|r| r.response_code.is_some_and(|c| (200..300).contains(&c)));
                    match first_ok {
                        Some(i) => {
                            sip.registrations.swap(0, i);
                            sip.registrations.truncate(1);
                        }
                        None => sip.registrations.clear(),
                    }
                    sip.dialogs.retain(|d| d.ok_ts.is_some());
                    sip.forget_ended_calls_at_end(c.last_ts);
                }
            }
            // Kept until the report: no growth slack (a Vec that doubled is up to half empty).
            if let Some(sip) = app.sip.as_mut() {
                sip.dialogs.shrink_to_fit();
                sip.registrations.shrink_to_fit();
            }
        }
        if !self.opts.keep_samples {
            // Only alignment and the HTML timeline use the packet samples (2 x 48 of them,
            // about 4.6 KiB a connection). Nothing was stored; this is for evicted ones.
            c.orig.samples.drop_kept();
            c.resp.samples.drop_kept();
        }
        if self.summaries() < self.opts.max_summaries {
            // Taken after the trimming above: the digest holds what the rules would have read
            // from the summary kept.
            // A digest that cannot be encoded (`DigestStore::push`) leaves its connection kept
            // whole, which the rules read as they would have read the digest.
            if let Some(digest) = self.opts.digest {
                // The digest holds no heartbeat, nor reads one (`rules::kept_as`): the log of
                // a connection kept as a digest goes unanalysed.
                let (mut d, whole) = digest(&c);
                // A connection a rule may end waits on disk (`kept`), found through its
                // digest, which keeps its place in the lists; one the encoding refuses stays
                // here, whole.
                if whole {
                    self.analyse_heartbeat(&mut c, hb.take());
                    d.whole = match (self.tags.is_none(), self.kept.as_mut()) {
                        (true, Some(k)) => k.push(&c),
                        _ => None,
                    };
                }
                if (!whole || d.whole.is_some()) && self.digests.push(&d) {
                    return;
                }
            }
            self.analyse_heartbeat(&mut c, hb);
            if self.tags.is_none() {
                self.spill_samples(&mut c);
                if self.finished_out(&c) {
                    return;
                }
            }
            self.done.push(Box::new(c));
            if let Some(tags) = self.tags.as_mut() {
                tags.push(self.tag);
                self.tag.seq += 1;
            }
        } else {
            self.dropped += 1;
        }
    }

    /// `l` summarised and kept (its heartbeat analysed only if kept whole).
    fn finish_and_keep(&mut self, l: Live) {
        let (c, hb) = finish_live_but_heartbeat(l, &self.capture, &mut self.histories);
        self.keep(c, hb);
    }

    /// `c`'s heartbeat from its log (`finish_live_but_heartbeat`), its intervals kept only for
    /// the HTML timeline.
    fn analyse_heartbeat(&self, c: &mut Connection, hb: Option<HbLog>) {
        with_heartbeat(c, hb);
        if !self.opts.timeline {
            if let Some(hb) = c.app.as_deref_mut().and_then(|a| a.heartbeat.as_mut()) {
                hb.intervals = Default::default();
            }
        }
    }

    /// `c`'s samples whose head waits in the heads' file (`heads_out`) made one list again
    /// (`Samples::join_head`), as any kept connection's are, before anything reads them.
    fn join_heads(&mut self, c: &mut Connection) {
        for s in [&mut c.orig.samples, &mut c.resp.samples] {
            if !s.head_in_file() {
                continue;
            }
            // Made with the head written there, and dropped only once every connection is kept.
            let Some(spill) = self.heads_spill.as_ref() else {
                s.drop_kept();
                continue;
            };
            if let Err(e) = s.join_head(spill) {
                self.samples_lost.get_or_insert(e);
            }
        }
    }

    /// With `TrackerOptions::finished_in_file`, while tracking: `c` written to the file of
    /// finished connections, out of memory (true), unless the encoding refuses it.
    fn finished_out(&mut self, c: &Connection) -> bool {
        if !self.opts.finished_in_file || self.at_end {
            return false;
        }
        let store = self.finished.get_or_insert_with(kept::KeptStore::new);
        let out = store.push(c).is_some();
        self.finished_n += usize::from(out);
        out
    }

    /// The connections that waited in the file of finished connections (`finished_out`), back
    /// in memory once the live ones have left it: each decoded once, its samples in this
    /// tracker's store (which the encoding does not name).
    fn read_back_finished(&mut self) {
        let Some(mut store) = self.finished.take() else {
            return;
        };
        let (capture, samples) = (self.capture.path.clone(), self.samples_store.clone());
        let (done, histories) = (&mut self.done, &mut self.histories);
        let mut back = 0;
        let error = store.drain(&capture, histories, &mut |mut c| {
            c.orig.samples.in_store(&samples);
            c.resp.samples.in_store(&samples);
            done.push(Box::new(c));
            back += 1;
        });
        // Saturating: a file changed under us could, at worst, decode as more records.
        let lost = std::mem::take(&mut self.finished_n).saturating_sub(back);
        if lost > 0 {
            let e = error.unwrap_or_else(|| spill::invalid("the file of finished connections"));
            self.finished_lost = Some((lost, e));
        }
    }

    /// Past `TrackerOptions::samples_in_memory` bytes of samples held by the connections kept,
    /// `c`'s go to the temporary file. Not for connections handed over as they end
    /// (`tag_stream`): the store is readable only once tracking ends.
    fn spill_samples(&mut self, c: &mut Connection) {
        let n = c.orig.samples.packed_len() + c.resp.samples.packed_len();
        if n == 0 {
            return;
        }
        if self.samples_held.saturating_add(n) <= self.opts.samples_in_memory {
            self.samples_held += n;
            return;
        }
        let spill = self.samples_spill.get_or_insert_with(spill::Spill::new);
        c.orig.samples.spill(spill, &self.samples_store);
        c.resp.samples.spill(spill, &self.samples_store);
    }

    /// The samples written to the temporary file, checked once and readable from now on
    /// (`Samples::iter`); a store from here on is a new one.
    fn seal_samples(&mut self) {
        // Every head in it was read back when its connection was kept.
        self.heads_spill = None;
        let Some(mut spill) = self.samples_spill.take() else {
            return;
        };
        let (sealed, e) = spill.seal(&mut |rec| packed_samples::decodes(rec));
        let store = std::mem::take(&mut self.samples_store);
        // Set once: a store is sealed here only, after it was taken.
        let _ = store.set(sealed);
        if let Some(e) = e {
            self.samples_lost.get_or_insert(e);
        }
    }

    /// The live table is full: summarise the least recently active eighth. Their packet samples
    /// are dropped (they cannot be lined up), which keeps a flood's summaries small.
    fn evict(&mut self) {
        let n = (self.live_connections() / 8).max(1);
        // Ties on the last packet's time broken by the first frame, and the eighth summarised
        // oldest first: the table's order follows its random seed, and the order connections
        // are kept in decides which a full `max_summaries` drops, and which slots the next
        // ones fill (`summarise_live`). The report must not depend on the run.
        let mut by_age: Vec<((Timestamp, u64), FlowKey)> = self
            .live
            .iter()
            .map(|l| ((l.seen_last_ts, l.conn.first_frame), l.key))
            .chain(self.parked.ages())
            .collect();
        by_age.select_nth_unstable_by_key(n - 1, |(t, _)| *t);
        by_age.truncate(n);
        by_age.sort_unstable_by_key(|(t, _)| *t);
        for (_, k) in by_age {
            if let Some(l) = self.live.remove(&k).or_else(|| self.parked.take(&k)) {
                let (mut c, hb) = finish_live_but_heartbeat(l, &self.capture, &mut self.histories);
                c.orig.samples.drop_kept();
                c.resp.samples.drop_kept();
                c.orig.retransmitted = Default::default();
                c.resp.retransmitted = Default::default();
                self.evicted += 1;
                self.keep(c, hb);
            }
        }
    }

    /// Warnings about what the caps cost, for the capture summary.
    pub fn warnings(&self) -> Vec<crate::capture::Warning> {
        use crate::capture::Warning;
        use crate::i18n::Msg;
        let mut w = Vec::new();
        if self.evicted > 0 {
            w.push(Warning::new(
                format!(
                    "the connection table was full ({} live): {} least recently active connections were summarised early, without their packet samples (a SYN flood or a very busy capture; raise the cap to keep them whole)",
                    self.opts.max_live, self.evicted
                ),
                Msg::new("w-table-full")
                    .s("max", self.opts.max_live)
                    .s("n", self.evicted),
            ));
        }
        if self.dropped > 0 {
            w.push(summaries_dropped(self.dropped, self.opts.max_summaries));
        }
        if let Some(e) = self.digests.error() {
            w.push(Warning::new(
                format!(
                    "the summaries of connections that ended normally could not be read back from the temporary file ({e}): the diagnosis is missing some of them"
                ),
                Msg::new("w-digests-lost").s("error", e),
            ));
        }
        if let Some(e) = &self.kept_lost {
            w.push(Warning::new(
                format!(
                    "the summaries of connections a rule reads whole could not be read back from the temporary file ({e}): the diagnosis reads those through their digests only, and cannot tell how they ended"
                ),
                Msg::new("w-kept-lost").s("error", e),
            ));
        }
        if let Some(e) = &self.samples_lost {
            w.push(Warning::new(
                format!(
                    "the packet samples of some connections could not be read back from the temporary file they waited in ({e}): those connections cannot be lined up with another capture's by their packets"
                ),
                Msg::new("w-samples-lost").s("error", e),
            ));
        }
        if let Some((n, e)) = &self.finished_lost {
            w.push(Warning::new(
                format!(
                    "{n} connections that ended could not be read back from the temporary file they waited in ({e}): they are missing from the report"
                ),
                Msg::new("w-finished-lost").s("n", n).s("error", e),
            ));
        }
        if let Some(e) = &self.parked.lost_error {
            let n = self.parked.lost;
            w.push(Warning::new(
                format!(
                    "{n} connections silent for minutes could not be read back from the temporary file they waited in ({e}): they are missing from the report, or appear as connections seen from mid-stream"
                ),
                Msg::new("w-parked-lost").s("n", n).s("error", e),
            ));
        }
        w
    }

    /// Moves connections that have ended and stayed quiet out of the live table, so that memory
    /// follows the connections alive at a time, not the length of the capture. Runs once a
    /// second of capture time; a connection leaves at the first sweep after it has been quiet
    /// for `TCP_CLOSE_DELAY_NS` since closing (TCP) or `UDP_INACTIVITY_NS` (UDP).
    /// Sweeps if a second of capture time has passed since the last sweep (`packet` does it
    /// first thing; a shard calls it for every packet, its own or not). Inlined: the check
    /// is a compare a packet, and was a call (`sweep_now` stays out of line).
    #[inline]
    pub fn sweep(&mut self, frame: &Frame<'_>) {
        if self.clock.tick(frame.ts) {
            self.tag.frame = frame.number;
            self.sweep_now(frame.ts);
        }
    }

    /// Whether `sweep` at a packet of time `ts` might do anything, whatever packets are
    /// tracked or swept at before it. A shard's read loop holds another shard's packet only
    /// if so: at the others `sweep` is a compare that is false, and on two shards they were
    /// half the frames the read loop held back, each copied in and out for nothing (diagnose
    /// 0.415 -> 0.384 s on issue 8's 200 MB synth).
    #[inline]
    pub fn sweep_may_be_due(&self, ts: Timestamp) -> bool {
        self.clock.may_tick(ts)
    }

    /// The sweep itself, at `now`. A shard (`shard_of`) calls `sweep` at every packet of the
    /// capture, its own or not, so its clock ticks where a single tracker's would: it sweeps at
    /// the same points and summarises its connections with the same packets.
    fn sweep_now(&mut self, now: Timestamp) {
        self.peak_live = self.peak_live.max(self.live_connections());
        while let Some(&std::cmp::Reverse((at, key))) = self.due.peek() {
            if at >= now.0 {
                break;
            }
            self.due.pop();
            let Some(l) = self.live.get(&key) else {
                continue; // already summarised (port reuse, eviction)
            };
            match ended_at(l) {
                Some(due) if due < now.0 => {
                    let l = self.live.remove(&key).expect("present");
                    self.tag = StreamTag {
                        phase: 0,
                        at,
                        key: Some(key),
                        ..self.tag
                    };
                    self.finish_and_keep(l);
                }
                // Packets came since: look again when it has been quiet long enough.
                Some(at) => self.due.push(std::cmp::Reverse((at, key))),
                // Not closed (a stale entry of an earlier connection on this 5-tuple).
                None => {}
            }
        }
        if self.parked.due(now, self.opts.park_after_ns) {
            self.park_silent(now);
        }
    }

    /// Parks the live TCP connections silent for `park_after_ns` (`park`). One the encoding
    /// refuses stays in its slot.
    fn park_silent(&mut self, now: Timestamp) {
        let after = self.opts.park_after_ns;
        let quiet: Vec<FlowKey> = self
            .live
            .iter()
            .filter(|l| park::Parked::wants(l, now, after))
            .map(|l| l.key)
            .collect();
        for k in quiet {
            if self.live.get(&k).is_some_and(|l| self.parked.park(l)) {
                self.live.remove(&k);
            }
        }
    }

    /// Feeds one decoded packet.
    pub fn packet(&mut self, frame: &Frame<'_>, p: &Packet<'_>) {
        self.sweep(frame);
        self.packet_seen(frame, p, None);
    }

    /// Fetches the connection with this key into the cache, for a packet tracked soon after;
    /// its slot is for `prefetch_deeper` and `packet_seen`.
    pub fn prefetch_key(&self, k: &ConnKey) -> Option<u32> {
        self.live.prefetch(&k.0)
    }

    /// What the connection in `slot` points to, a level at a time: 1 its application state,
    /// 2 the session's WebSocket state and heartbeat log, 3 the WebSocket frame counts. Each
    /// level reads what the one before fetched, a packet earlier.
    pub fn prefetch_deeper(&self, slot: u32, level: u8) {
        let Some(l) = self.live.at(slot) else {
            return;
        };
        // The packet samples too, where they are kept (several captures, the HTML timeline):
        // two lists a connection, each packet writes one, and their box and bytes were the
        // misses of `Samples::push` (~8 % of a two-capture diagnosis's time, in `perf`).
        let dirs = [&l.conn.orig.samples, &l.conn.resp.samples];
        match level {
            1 => {
                dirs.iter().for_each(|s| s.prefetch_box());
                if let Some(app) = l.app.as_deref() {
                    prefetch_lines(app);
                }
            }
            2 => {
                dirs.iter().for_each(|s| s.prefetch_bytes());
                if let Some(app) = l.app.as_deref() {
                    app.session.prefetch();
                }
            }
            _ => {
                if let Some(app) = l.app.as_deref() {
                    app.session.prefetch_stats();
                }
            }
        }
    }

    /// `packet` without the sweep (the read loop sweeps at every packet, a shard's at others'
    /// too). `seen`: for a TCP segment whose connection the lookahead looked up before its
    /// turn, its key and where it was; the key is not made again, and the table is probed
    /// only if the connection has left that slot since.
    #[inline]
    pub fn packet_seen(&mut self, frame: &Frame<'_>, p: &Packet<'_>, seen: Option<Seen>) {
        if self.tags.is_some() {
            self.tag = StreamTag {
                frame: frame.number,
                phase: 1,
                ..StreamTag::START
            };
        }
        if p.fragment != crate::decode::Fragment::No {
            self.fragments += 1;
        }
        match &p.transport {
            Transport::Tcp(t) => self.tcp(frame, p, t, seen),
            Transport::Udp(u) => self.udp(frame, p, u),
            Transport::Other { .. } => self.other_ip += 1,
        }
    }

    /// The options a shard runs with when `n` shards share a capture: the caps divided, so
    /// that together they hold what one tracker would.
    pub fn shard_options(opts: TrackerOptions, n: usize) -> TrackerOptions {
        TrackerOptions {
            max_live: opts.max_live.div_ceil(n),
            max_summaries: opts.max_summaries.div_ceil(n),
            // A budget for the capture: each shard keeps its share.
            samples_in_memory: opts.samples_in_memory / n.max(1),
            ..opts
        }
    }

    /// One tracker holding what shards of a capture tracked (`shard_of`), their live
    /// connections summarised, under the capture's own options (`opts`, for the caps the
    /// warnings name). Without a cap reached, `finish_with_warnings` on it gives exactly what
    /// one tracker fed every packet gives: a connection's packets all went to one shard, and
    /// the shards swept when it would have. With a cap reached, each shard held its share of
    /// it, so which connections were evicted or dropped can differ.
    pub fn merge_shards(shards: Vec<Tracker>, opts: TrackerOptions) -> Tracker {
        let mut shards = shards;
        // Done on the shards' threads already (`summarise_live`); here for any that was not.
        shards.iter_mut().for_each(|s| s.summarise_live());
        // A list with room for every connection, filled from the shards' lists, which shrink as
        // they empty. Room not yet written to is not resident, so no connection is held twice:
        // appended to the largest list, two copies at once were the run's peak (massif, flows
        // on the 200 MB synth).
        let mut done = Vec::with_capacity(shards.iter().map(|s| s.done.len()).sum());
        // And one store of every shard's digests, still in their files: read back once, into
        // one table or in start order into one file (`DigestStore::take_sorted`).
        let mut digests = digest::DigestStore::default();
        for s in &mut shards {
            move_shrinking(&mut s.done, &mut done);
            digests.join(std::mem::take(&mut s.digests));
        }
        let mut shards = shards.into_iter();
        let Some(mut all) = shards.next() else {
            return Tracker::with_options(String::new(), opts);
        };
        all.done = done;
        all.digests = digests;
        for s in shards {
            all.other_ip += s.other_ip;
            all.fragments += s.fragments;
            // An upper bound: the shards' peaks need not fall on the same second.
            all.peak_live += s.peak_live;
            all.evicted += s.evicted;
            all.dropped += s.dropped;
            all.kept_lost = all.kept_lost.or(s.kept_lost);
            all.finished_lost = all.finished_lost.or(s.finished_lost);
            all.samples_lost = all.samples_lost.or(s.samples_lost);
            all.parked.lost += s.parked.lost;
            all.parked.lost_error = all.parked.lost_error.or(s.parked.lost_error);
        }
        all.opts = opts;
        all.cap_kept();
        all
    }

    /// Keeps the first `max_summaries` connections in start order, whole or digests; counts
    /// the rest as dropped.
    fn cap_kept(&mut self) {
        let max = self.opts.max_summaries;
        let total = self.done.len() + self.digests.len();
        if total <= max {
            return;
        }
        self.sort_done();
        self.digests.all().sort_by_start();
        // The first `max` of the two sorted lists, as one list in start order would have them.
        let (mut whole, mut digests) = (0, 0);
        while whole + digests < max {
            let next_whole = self.done.get(whole).map(|c| (c.ts, c.first_frame));
            let all = self.digests.all();
            let next_digest = (digests < all.len()).then(|| all.get(digests).start_order());
            match (next_whole, next_digest) {
                (Some(w), Some(d)) if d < w => digests += 1,
                (Some(_), _) => whole += 1,
                (None, _) => digests += 1,
            }
        }
        self.dropped += (total - max) as u64;
        self.done.truncate(whole);
        self.digests.all().truncate(digests);
    }

    /// Summarises every live connection into `done` (a shard, on its own thread, before
    /// `merge_shards`).
    pub fn summarise_live(&mut self) {
        self.at_end = true;
        self.peak_live = self.peak_live.max(self.live_connections());
        // Past `max_summaries`, the connections that started first are kept, as `cap_kept`
        // keeps them: the table's slots are in the order evictions and sweeps freed them,
        // which its random seed decides, so kept in that order the report changed from run to
        // run. The first to drop, in (start, first frame) order, which is unique.
        let room = self.opts.max_summaries.saturating_sub(self.summaries());
        let drop_from = (self.live_connections() > room).then(|| {
            let mut starts: Vec<(Timestamp, u64)> = self
                .live
                .iter()
                .map(|l| (l.conn.ts, l.conn.first_frame))
                .chain(self.parked.starts().map(|(s, _)| s))
                .collect();
            *starts.select_nth_unstable(room).1
        });
        // One chunk at a time, each freed once summarised: a list of them all would sit beside
        // every live state at once (massif: the run's peak, when there was one).
        let mut live = std::mem::replace(&mut self.live, LiveTable::new());
        for l in live.drain() {
            self.summarise(l, drop_from);
        }
        drop(live);
        // Then the parked ones, one at a time, in start order (the table's is its seed's).
        let mut parked: Vec<_> = self.parked.starts().collect();
        parked.sort_unstable();
        for (_, k) in parked {
            if let Some(l) = self.parked.take(&k) {
                self.summarise(l, drop_from);
            }
        }
        // The connections kept on disk, checked and readable from now on; the digests that
        // name them find them there (`Digests::whole`).
        if let Some(kept) = self.kept.as_mut().filter(|k| !k.is_empty()) {
            let (file, e) = kept.seal(&self.capture.path);
            // Not read back here: a shard's wait in their file until the shards join.
            self.digests.attach(file);
            if let Some(e) = e {
                self.kept_lost.get_or_insert(e);
            }
        }
        // Before the samples' store is sealed: the connections read back share it.
        self.read_back_finished();
        self.seal_samples();
    }

    /// `l` summarised and kept, or dropped if it started at or after `drop_from`.
    fn summarise(&mut self, l: Live, drop_from: Option<(Timestamp, u64)>) {
        let (c, hb) = finish_live_but_heartbeat(l, &self.capture, &mut self.histories);
        if drop_from.is_some_and(|d| (c.ts, c.first_frame) >= d) {
            self.dropped += 1;
        } else {
            self.keep(c, hb);
        }
    }

    /// Summaries kept so far: whole, or as digests (those on disk, `kept`, have one too).
    fn summaries(&self) -> usize {
        self.done.len() + self.digests.len() + self.finished_n
    }

    fn sort_done(&mut self) {
        self.done
            .sort_unstable_by(|a, b| a.ts.cmp(&b.ts).then(a.first_frame.cmp(&b.first_frame)));
    }

    /// Ends tracking: every connection, and the warnings about what the caps cost. Without
    /// `TrackerOptions::digest` (else `finish_kept`).
    pub fn finish_with_warnings(self) -> (Vec<Box<Connection>>, Vec<crate::capture::Warning>) {
        let ((done, digests), warnings) = self.finish_kept();
        debug_assert!(digests.is_empty(), "digests need finish_kept");
        (done, warnings)
    }

    /// Ends tracking: the connections kept whole and the digests, each sorted by start time
    /// (then frame), and the warnings about what the caps cost.
    pub fn finish_kept(mut self) -> (Kept, Vec<crate::capture::Warning>) {
        self.summarise_live();
        self.sort_done();
        let digests = self.digests.take_sorted(self.opts.digests_in_memory);
        let warnings = self.warnings();
        ((self.done, digests), warnings)
    }

    /// Ends tracking, handing each connection still live to `emit` as it is summarised (not
    /// all at once: at the end of a long capture that is every long-lived connection, and
    /// holding their summaries together was the streaming run's peak). Returns the warnings.
    pub fn finish_streaming(
        mut self,
        emit: &mut dyn FnMut(bool, Connection),
    ) -> Vec<crate::capture::Warning> {
        self.stream_rest(&mut |tag, c| emit(tag.at_end(), c));
        self.warnings()
    }

    /// `finish_streaming` with each connection's place (`StreamTag`), leaving the tracker empty
    /// (for `merge_shards` and its warnings).
    pub fn stream_rest(&mut self, emit: &mut dyn FnMut(StreamTag, Connection)) {
        self.peak_live = self.peak_live.max(self.live_connections());
        let done: Vec<(StreamTag, Box<Connection>)> = self.drain_finished_tagged().collect();
        done.into_iter().for_each(|(t, c)| emit(t, *c));
        // In start order, as the sorted output would have them: the table's own order changes
        // from run to run (its hasher is seeded at random).
        let mut keys: Vec<(Timestamp, u64, FlowKey)> = self
            .live
            .iter()
            .map(|l| (l.conn.ts, l.conn.first_frame, l.key))
            .chain(self.parked.starts().map(|((t, f), k)| (t, f, k)))
            .collect();
        keys.sort_unstable();
        for (ts, first_frame, k) in keys {
            if let Some(l) = self.live.remove(&k).or_else(|| self.parked.take(&k)) {
                let tag = StreamTag {
                    frame: u64::MAX,
                    phase: 2,
                    at: ts.0,
                    first_frame,
                    key: Some(k),
                    seq: 0,
                };
                emit(tag, finish_live(l, &self.capture, &mut self.histories));
            }
        }
    }

    /// Ends tracking and returns every connection, sorted by start time (then frame).
    pub fn finish(self) -> Vec<Box<Connection>> {
        self.finish_with_warnings().0
    }

    /// Whether connections were summarised since the last `drain_finished`.
    pub fn has_finished(&self) -> bool {
        !self.done.is_empty()
    }

    /// The connections summarised so far, in the order they ended, handed over instead of kept
    /// (`pipeline::stream_capture`). `max_summaries` counts only what stays.
    pub fn drain_finished(&mut self) -> std::vec::Drain<'_, Box<Connection>> {
        if let Some(tags) = self.tags.as_mut() {
            tags.clear();
        }
        self.done.drain(..)
    }

    /// `drain_finished` with each summary's place (`StreamTag`; `tag_stream` first, else
    /// every tag is the same).
    pub fn drain_finished_tagged(
        &mut self,
    ) -> impl Iterator<Item = (StreamTag, Box<Connection>)> + '_ {
        let tags = self.tags.get_or_insert_with(Vec::new);
        tags.resize(self.done.len(), StreamTag::START);
        tags.drain(..).zip(self.done.drain(..))
    }

    /// Connections live: in the table, and parked (`park`).
    pub fn live_connections(&self) -> usize {
        self.live.len() + self.parked.len()
    }

    /// Of the live connections, those parked.
    pub fn parked_connections(&self) -> usize {
        self.parked.len()
    }

    /// Of the live connections, those in the table (not parked).
    pub fn connections_in_table(&self) -> usize {
        self.live.len()
    }

    fn tcp(&mut self, frame: &Frame<'_>, p: &Packet<'_>, t: &TcpSegment<'_>, seen: Option<Seen>) {
        let key = match seen {
            Some(s) => s.key.0,
            None => FlowKey::new(p, t.src_port, t.dst_port, Proto::Tcp),
        };
        debug_assert_eq!(key, FlowKey::new(p, t.src_port, t.dst_port, Proto::Tcp));
        let src = (p.src, t.src_port);
        let flags = t.flags;
        if self.live_connections() >= self.opts.max_live
            && !self.live.contains_key(&key)
            && !self.parked.contains(&key)
        {
            self.evict();
        }
        let new = |capture: &CaptureName, opts: &TrackerOptions| {
            let dst = (p.dst, t.dst_port);
            let (orig, resp, mid_stream) = orient(flags, src, dst);
            new_live(
                capture,
                Proto::Tcp,
                (orig, resp),
                frame,
                p.vlan,
                mid_stream,
                opts,
            )
        };
        // One hash lookup per packet: the entry is either the connection or where it goes.
        let mut replaced = None;
        // Not in the table: a new connection, or one parked (which had existed).
        let mut unparked = false;
        let hint = seen.and_then(|s| s.slot);
        let (live, existed) =
            self.live
                .get_or_insert_at(key, hint, || match self.parked.take(&key) {
                    Some(l) => {
                        unparked = true;
                        l
                    }
                    None => new(&self.capture, &self.opts),
                });
        let live = if !existed && !unparked {
            live
        } else {
            {
                let l = live;
                // Port reuse: Zeek's IsReuse (a SYN after a close or RST, or with a new ISN),
                // or a SYN after a silence longer than Zeek's inactivity timeout.
                let from_orig = l.sent_by_orig(src);
                let zeek_reuse = l
                    .zeek
                    .as_ref()
                    .is_some_and(|z| z.is_reuse(from_orig, flags, t.seq));
                let silent = flags.syn() && frame.ts.0 - l.seen_last_ts.0 > TCP_REUSE_SILENCE_NS;
                if zeek_reuse || silent {
                    let mut fresh = new(&self.capture, &self.opts);
                    fresh.conn.reused_port = true;
                    replaced = Some(std::mem::replace(l, fresh));
                }
                l
            }
        };
        let was_closed = ended_at(live).is_some();
        let head_done = track_tcp(live, frame, p, t, self.opts.keep_samples);
        if !was_closed {
            if let Some(at) = ended_at(live) {
                self.due.push(std::cmp::Reverse((at, key)));
            }
        }
        if head_done {
            self.head_complete(&key, src);
        }
        if let Some(old) = replaced {
            self.finish_and_keep(old);
        }
    }

    /// The sender's head of packet samples on connection `key` just completed (`track_tcp`,
    /// or a datagram in `udp`): to the heads' file past the budget (`heads_out`). Looked up again, out
    /// of the packet's inlined path: once a direction, where the lines that handed the
    /// connection over cost every packet ~35 instructions (the tracking was no longer inlined
    /// into the read loop).
    #[cold]
    #[inline(never)]
    fn head_complete(&mut self, key: &FlowKey, src: (IpAddr, u16)) {
        let budget = self.tags.is_none().then_some(self.opts.samples_in_memory);
        let Some(live) = self.live.get_mut(key) else {
            return;
        };
        let d = match live.sent_by_orig(src) {
            true => &mut live.conn.orig,
            false => &mut live.conn.resp,
        };
        heads_out(
            &mut d.samples,
            &mut self.heads_spill,
            &mut self.heads_held,
            budget,
        );
    }

    fn udp(&mut self, frame: &Frame<'_>, p: &Packet<'_>, u: &UdpDatagram<'_>) {
        let key = FlowKey::new(p, u.src_port, u.dst_port, Proto::Udp);
        if let Some(l) = self.live.get(&key) {
            if frame.ts.0 - l.seen_last_ts.0 > UDP_INACTIVITY_NS {
                let old = self.live.remove(&key).expect("present");
                self.finish_and_keep(old);
            }
        }
        let src = (p.src, u.src_port);
        if self.live_connections() >= self.opts.max_live && !self.live.contains_key(&key) {
            self.evict();
        }
        let capture = &self.capture;
        let opts = self.opts;
        let due = &mut self.due;
        let (live, _) = self.live.get_or_insert_with(key, || {
            let l = new_live(
                capture,
                Proto::Udp,
                (src, (p.dst, u.dst_port)),
                frame,
                p.vlan,
                false,
                &opts,
            );
            due.push(std::cmp::Reverse((
                frame.ts.0.saturating_add(UDP_INACTIVITY_NS),
                key,
            )));
            l
        });
        let from_orig = live.sent_by_orig(src);
        touch(live, frame, if from_orig { Side::Orig } else { Side::Resp });
        live.conn.last_ts = live.seen_last_ts;
        let d = if from_orig {
            &mut live.conn.orig
        } else {
            &mut live.conn.resp
        };
        count(d, frame, p);
        d.bytes += u.payload_len as u64;
        d.payload_bytes_sent += u.payload_len as u64;
        let mut head_done = false;
        if opts.keep_samples {
            head_done = d.samples.push(Sample {
                ts: frame.ts,
                frame: frame.number,
                kind: SampleKind::Datagram,
                rel_seq: (d.pkts - 1) as u32,
                len: u.payload_len,
                hash: payload_hash(u.payload),
                ip_id: p.ip_id,
                ttl: p.ttl,
            });
        } else {
            d.samples.count();
        }
        let prof = if from_orig {
            &mut live.orig_seq.profile
        } else {
            &mut live.resp_seq.profile
        };
        prof.add(p.ttl, p.ip_id);
        // SIP over UDP (RFC 3261 §18.2): one message per datagram.
        if opts.app && crate::app::session::looks_like_sip(u.payload) {
            if let crate::app::Parse::Complete { value, .. } =
                crate::app::sip::parse_datagram(u.payload)
            {
                let app = live.conn.app.get_or_insert_with(|| {
                    Box::new(AppSummary {
                        service: Some(crate::app::session::Service::Sip),
                        ..AppSummary::default()
                    })
                });
                // Every call kept, whatever the report: a voice gateway's trunk carries the
                // BYEs that follow another connection's death (`call_cut`).
                app.sip
                    .get_or_insert_with(crate::app::sip::SipDialogs::new)
                    .add(frame.ts, frame.number, from_orig, &value);
            }
        }
        if head_done {
            self.head_complete(&key, src);
        }
    }
}

fn new_live(
    capture: &CaptureName,
    proto: Proto,
    (orig, resp): ((IpAddr, u16), (IpAddr, u16)),
    frame: &Frame<'_>,
    vlan: [u16; 2],
    mid_stream: bool,
    opts: &TrackerOptions,
) -> Live {
    // The uid is made at the end (`finish_live`), unless `--detail` must know it now.
    let detailed = opts.detail
        && opts
            .detail_uid
            .is_none_or(|k| uid_key(&make_uid(capture.uid_seed, proto, orig, resp, frame.ts)) == k);
    let app = (opts.app && proto == Proto::Tcp).then(|| {
        Box::new(AppState {
            client: Reassembler::new(opts.reassembly_cap),
            server: Reassembler::new(opts.reassembly_cap),
            session: Session::new(detailed)
                .keep_heads(opts.http_heads)
                .keep_details(opts.app_details)
                .keep_registrations(opts.sip_registrations),
        })
    });
    Live {
        app,
        conn: LiveConn {
            ts: frame.ts,
            last_ts: frame.ts,
            first_frame: frame.number,
            last_frame: frame.number,
            orig: LiveDir::default(),
            resp: LiveDir::default(),
            termination: None,
            app: None,
            mid_stream,
            reused_port: false,
        },
        zeek: (proto == Proto::Tcp).then(ZeekTcp::default),
        orig_seq: SeqState::default(),
        resp_seq: SeqState::default(),
        handshake: 0,
        syn_ts: Timestamp(0),
        rtt_ns: 0,
        seen_last_ts: frame.ts,
        n_silences: 0,
        broken_by_resp: 0,
        silences: [LiveGap::default(); TOP_GAPS],
        max_idle: LiveGap::default(),
        key: FlowKey::of(orig, resp, vlan, proto),
        orig_is_lo: conversation(orig, resp).0 == orig,
    }
}

/// FNV-1a, 64 bit: tiny, stable across platforms and versions. Fed byte by byte, so a value
/// can be hashed as it is formatted (`write!`), with no string made for it.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn feed(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= *b as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

impl std::fmt::Write for Fnv {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.feed(s.as_bytes());
        Ok(())
    }
}

impl Fnv {
    /// The address as `Display` writes it ("192.0.2.1", "2001:db8::1"). IPv4's dotted
    /// decimal is written here without the formatting machinery, which cost ~1 000
    /// instructions an address (cachegrind; every connection hashes two for its uid).
    fn addr(&mut self, a: IpAddr) {
        match a {
            IpAddr::V4(v4) => {
                for (i, o) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        self.feed(b".");
                    }
                    let digits = [b'0' + o / 100, b'0' + o / 10 % 10, b'0' + o % 10];
                    // No leading zeros: one digit skipped under 100, two under 10.
                    let skip = usize::from(o < 100) + usize::from(o < 10);
                    self.feed(&digits[skip..]);
                }
            }
            IpAddr::V6(_) => {
                use std::fmt::Write as _;
                // Writing into `Fnv` cannot fail.
                let _ = write!(self, "{a}");
            }
        }
    }
}

/// The capture a tracker reads: its path, shared by the summaries of its connections, and the
/// FNV state after its file name, the first thing every uid of the capture hashes
/// (`make_uid`), worked out once (`Path::file_name` and its lossy text, for every connection,
/// were a third of a uid's cost).
struct CaptureName {
    path: std::sync::Arc<str>,
    uid_seed: u64,
}

impl CaptureName {
    fn new(path: String) -> Self {
        let mut fnv = Fnv::new();
        let name = std::path::Path::new(&path)
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        fnv.feed(name.as_bytes());
        CaptureName {
            uid_seed: fnv.0,
            path: path.into(),
        }
    }
}

/// A uid as `TrackerOptions::detail_uid` names it (a hash: the options stay `Copy`).
pub fn uid_key(uid: &str) -> u64 {
    let mut fnv = Fnv::new();
    fnv.feed(uid.as_bytes());
    fnv.0
}

/// A stable, Zeek-looking uid ("C" + base62), derived from the capture's file name (hashed
/// once: `CaptureName::uid_seed`), the 5-tuple and the start time, so that the same capture
/// always yields the same uids (snapshots, tickets). Made once a connection: the addresses are
/// hashed as they are formatted, where they were made into strings first (eight allocations a
/// connection, benches/RESULTS.md).
fn make_uid(
    uid_seed: u64,
    proto: Proto,
    orig: (IpAddr, u16),
    resp: (IpAddr, u16),
    ts: Timestamp,
) -> Uid {
    let mut fnv = Fnv(uid_seed);
    fnv.feed(&[proto as u8]);
    fnv.addr(orig.0);
    fnv.feed(&orig.1.to_be_bytes());
    fnv.addr(resp.0);
    fnv.feed(&resp.1.to_be_bytes());
    fnv.feed(&ts.0.to_be_bytes());
    let mut h = fnv.0;
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut s = [b'C'; UID_LEN];
    for c in &mut s[1..] {
        *c = ALPHABET[(h % 62) as usize];
        h /= 62;
        if h == 0 {
            h = 0x9e37_79b9_7f4a_7c15;
        }
    }
    // ASCII only: the alphabet above.
    Uid::new(std::str::from_utf8(&s).unwrap_or_default())
}

const UID_LEN: usize = 18;

/// A connection's uid: "C" and 17 base-62 digits (`make_uid`), kept inline. As a `String` it
/// was an allocation of its own in every summary and in every leg of the alignment.
pub type Uid = crate::short_str::ShortStr<UID_LEN>;

/// Connection-level bookkeeping common to TCP and UDP: last seen, longest silence. Returns the
/// silence just before this packet.
fn touch(live: &mut Live, frame: &Frame<'_>, by: Side) -> f64 {
    let last = live.seen_last_ts;
    let prev_frame = std::mem::replace(&mut live.conn.last_frame, frame.number);
    if frame.ts <= last {
        return 0.0;
    }
    let gap = frame.ts.secs_since(last);
    live.seen_last_ts = frame.ts;
    let resp_bit = u8::from(by == Side::Resp);
    let here = LiveGap {
        from_ts: last,
        ns: frame.ts.0.wrapping_sub(last.0),
        from_frame: prev_frame,
        to_frame: frame.number,
    };
    // Later than the last packet, so longer than 0: a silence, however short.
    if live.max_idle.from_frame == 0 || gap > live.max_idle.secs() {
        live.max_idle = here;
        live.broken_by_resp = (live.broken_by_resp & 0x7f) | (resp_bit << 7);
    }
    let n = live.n_silences as usize;
    if gap >= MIN_SILENCE_S && (n < TOP_GAPS || gap > live.silences[n - 1].secs()) {
        // Full, and this gap is longer than the shortest kept: that one goes.
        let n = n.min(TOP_GAPS - 1);
        let at = live.silences[..n].partition_point(|x| x.secs() >= gap);
        live.silences.copy_within(at..n, at + 1);
        live.silences[at] = here;
        // The side bits move with their silences.
        let bits = live.broken_by_resp;
        let below = bits & ((1u8 << at) - 1);
        let above = ((bits & SILENCE_BITS) >> at << (at + 1)) & SILENCE_BITS;
        live.broken_by_resp = (bits & !SILENCE_BITS) | above | (resp_bit << at) | below;
        live.n_silences = (n + 1) as u8;
    }
    gap
}

fn count(d: &mut LiveDir, frame: &Frame<'_>, p: &Packet<'_>) {
    if d.pkts == 0 {
        d.first_ts = frame.ts;
    }
    d.pkts += 1;
    d.ip_bytes += p.ip_len as u64;
    d.last_ts = frame.ts;
}

/// Mid-stream orientation: Zeek's `WantConnection` flips a connection whose first packet comes
/// from a likely server port; where neither or both ports are likely, the lower port is the
/// responder (the rule the diagnosis documents). A SYN's sender is the originator, a SYN-ACK's
/// the responder.
fn orient(
    flags: crate::decode::TcpFlags,
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
) -> ((IpAddr, u16), (IpAddr, u16), bool) {
    if flags.syn() && !flags.ack() {
        return (src, dst, false);
    }
    if flags.syn() && flags.ack() {
        return (dst, src, false);
    }
    let (ls, ld) = (likely_server_port(src.1), likely_server_port(dst.1));
    let src_is_server = match (ls, ld) {
        (true, false) => true,
        (false, true) => false,
        _ => src.1 < dst.1,
    };
    if src_is_server {
        (dst, src, true)
    } else {
        (src, dst, true)
    }
}

/// Ports Zeek's default scripts register in `likely_server_ports` (HTTP, TLS, FTP, SSH, SMTP,
/// DNS, IRC, Redis, SIP, RDP, databases, ...), plus the WebSocket ports of SIP over WebSocket
/// deployments (RFC 7118 gives no port; 5066 and 7443 are common, 8443 for WSS).
fn likely_server_port(p: u16) -> bool {
    matches!(
        p,
        21 | 22
            | 23
            | 25
            | 53
            | 80
            | 81
            | 88
            | 110
            | 135
            | 139
            | 143
            | 389
            | 443
            | 445
            | 502
            | 563
            | 587
            | 631
            | 636
            | 993
            | 995
            | 1080
            | 1433
            | 1883
            | 3128
            | 3306
            | 3389
            | 5060
            | 5061
            | 5066
            | 5222
            | 5269
            | 5432
            | 6379
            | 6666..=6669 | 7443 | 8000 | 8080 | 8443 | 8888
    )
}

/// When a live connection will have been quiet long enough to be summarised, if it is over:
/// a closed TCP connection after `TCP_CLOSE_DELAY_NS`, a UDP flow after `UDP_INACTIVITY_NS`.
fn ended_at(l: &Live) -> Option<i64> {
    match &l.zeek {
        Some(z) => z
            .either_closed()
            .then(|| l.seen_last_ts.0.saturating_add(TCP_CLOSE_DELAY_NS)),
        None => Some(l.seen_last_ts.0.saturating_add(UDP_INACTIVITY_NS)),
    }
}

/// A direction's head just completed (`Samples::push`): kept in memory within `budget` bytes of
/// heads and their tails' lists (`held` so far), written to `spill` past it, made at the first
/// (`KeptSamples::HeadInFile`).
/// No budget for connections handed over as they end (`Tracker::tag_stream`): the file is read
/// only once tracking ends.
fn heads_out(
    samples: &mut Samples,
    spill: &mut Option<spill::Spill>,
    held: &mut usize,
    budget: Option<usize>,
) {
    let (Some(len), Some(budget)) = (samples.full_head_len(), budget) else {
        return;
    };
    // Counted as the list it goes on in (`tail_layout::begin`) once its tail is full: ~1 KB.
    let len = len + tail_layout::FULL_ROOM;
    if held.saturating_add(len) <= budget {
        *held += len;
        return;
    }
    samples.head_out(spill.get_or_insert_with(spill::Spill::new));
}

/// Tracks a TCP segment on its live connection. True when it completed its sender's head of
/// packet samples (`heads_out`).
fn track_tcp(
    live: &mut Live,
    frame: &Frame<'_>,
    p: &Packet<'_>,
    t: &TcpSegment<'_>,
    keep_samples: bool,
) -> bool {
    let from_orig = live.sent_by_orig((p.src, t.src_port));
    let side = if from_orig { Side::Orig } else { Side::Resp };
    let gap = touch(live, frame, side);
    let flags = t.flags;

    // Handshake timing (Wireshark's iRTT: SYN to the ACK that completes the handshake).
    if flags.syn() && !flags.ack() && from_orig && live.handshake & HS_SYN == 0 {
        live.handshake |= HS_SYN;
        live.syn_ts = frame.ts;
    } else if flags.syn() && flags.ack() && !from_orig {
        live.handshake |= HS_SYNACK;
    } else if !flags.syn()
        && flags.ack()
        && from_orig
        && live.handshake & (HS_SYN | HS_SYNACK | HS_RTT) == HS_SYN | HS_SYNACK
    {
        live.handshake |= HS_RTT;
        // What `Timestamp::secs_since` divides.
        live.rtt_ns = frame.ts.0.wrapping_sub(live.syn_ts.0);
    }

    // The first FIN or RST: record it, with the sender's fingerprint from before it.
    if (flags.fin() || flags.rst()) && live.conn.termination.is_none() {
        let seq_state = if from_orig {
            &live.orig_seq
        } else {
            &live.resp_seq
        };
        live.conn.termination = Some(Box::new(termination(
            &seq_state.profile.fingerprint(),
            side,
            frame,
            p,
            t,
            gap,
        )));
    }

    let (d, seq) = if from_orig {
        (&mut live.conn.orig, &mut live.orig_seq)
    } else {
        (&mut live.conn.resp, &mut live.resp_seq)
    };
    count(d, frame, p);
    d.payload_bytes_sent += t.payload_len as u64;
    seq.profile.add(p.ttl, p.ip_id);
    let Analysis {
        keepalive,
        seen_before,
    } = wireshark_analysis(d, seq, t);
    let kind = if flags.syn() && flags.ack() {
        Some(SampleKind::SynAck)
    } else if flags.syn() {
        Some(SampleKind::Syn)
    } else if flags.rst() {
        Some(SampleKind::Rst)
    } else if t.payload_len > 0 {
        Some(SampleKind::Data)
    } else if flags.fin() {
        Some(SampleKind::Fin)
    } else {
        None
    };
    if kind == Some(SampleKind::Data) && d.first_data_frame == 0 {
        d.first_data_ts = frame.ts;
        d.first_data_frame = frame.number;
    }
    let mut head_done = false;
    if !keep_samples && !seen_before {
        if kind.is_some() {
            d.samples.count();
        }
    } else if let Some(kind) = kind {
        let sample = Sample {
            ts: frame.ts,
            frame: frame.number,
            kind,
            rel_seq: t.seq.wrapping_sub(seq.isn.unwrap_or(t.seq)),
            len: t.payload_len,
            hash: if t.payload.is_empty() {
                0
            } else {
                payload_hash(t.payload)
            },
            ip_id: p.ip_id,
            ttl: p.ttl,
        };
        if seen_before {
            let list = d.retransmitted.get_or_insert_with(Box::default);
            if list.len() < MAX_RETRANS {
                list.push(sample);
            }
        }
        if keep_samples {
            head_done = d.samples.push(sample);
        } else {
            d.samples.count();
        }
    }

    if let Some(app) = live.app.as_deref_mut() {
        feed_app(app, from_orig, frame, t, keepalive);
    }

    if let Some(z) = live.zeek.as_mut() {
        let r = z.segment(&Seg {
            from_orig,
            flags,
            seq: t.seq,
            ack: t.ack,
            len: t.payload_len,
            captured: t.payload.len() as u32,
            window: t.window,
        });
        if r.counts_for_duration && frame.ts > live.conn.last_ts {
            live.conn.last_ts = frame.ts;
        }
    }
    head_done
}

fn termination(
    usual: &Fingerprint,
    by: Side,
    frame: &Frame<'_>,
    p: &Packet<'_>,
    t: &TcpSegment<'_>,
    idle_before_s: f64,
) -> Termination {
    let ttl_fits = (usual.packets > 0).then_some(usual.ttl_usual == p.ttl);
    let ip_id_fits = match (usual.ip_id_pattern, p.ip_id, usual.ip_id_last) {
        // A counter only moves forward; a global counter (Windows, older Linux) may move far
        // during a long silence, so any forward step up to half the ID space fits. Zero, or a
        // step backwards, does not: the packet came from somewhere else.
        (IpIdPattern::Incrementing, Some(id), Some(last)) => {
            let step = id.wrapping_sub(last);
            Some(id != 0 && step > 0 && step < 0x8000)
        }
        (IpIdPattern::Zero, Some(id), _) => Some(id == 0),
        _ => None,
    };
    Termination {
        kind: if t.flags.rst() {
            TerminationKind::Rst
        } else {
            TerminationKind::Fin
        },
        by,
        ts: frame.ts,
        frame: frame.number,
        ttl: p.ttl,
        ip_id: p.ip_id,
        window: t.window,
        ack_flag: t.flags.ack(),
        seq: t.seq,
        options_len: t.options_raw.len().min(40) as u8,
        idle_before_s,
        sender_usual: *usual,
        ttl_fits,
        ip_id_fits,
    }
}

/// What the sequence analysis found of one segment, beyond its counters.
struct Analysis {
    /// A keep-alive (Wireshark's rule).
    keepalive: bool,
    /// Data (or SYN/FIN) below the end of what this capture saw from the sender: a copy of a
    /// segment seen here before.
    seen_before: bool,
}

/// Wireshark's sequence analysis (epan/dissectors/packet-tcp.c,
/// `tcp_analyze_sequence_number`): keep-alive (length 0 or 1, seq = next expected − 1, no
/// SYN/FIN/RST), retransmission (carries sequence space below the next expected), previous
/// segment not captured (starts above it), zero window (window 0, no SYN/FIN/RST). The next
/// expected sequence number moves with every segment, a pure ACK's too, as Wireshark's
/// `nextseq` does: a lab capture on a lossy link (weak-network) has the server's ACK arrive
/// before the retransmission of the data it follows, which Wireshark flags.
fn wireshark_analysis(d: &mut LiveDir, seq: &mut SeqState, t: &TcpSegment<'_>) -> Analysis {
    let mut keepalive = false;
    let flags = t.flags;
    let seglen = t.payload_len + flags.syn() as u32 + flags.fin() as u32;
    if flags.syn() {
        seq.isn = Some(t.seq);
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
            d.keepalives = d.keepalives.saturating_add(1);
            keepalive = true;
        } else if seglen > 0 && seq_lt(t.seq, next) && !flags.rst() {
            d.retransmissions = d.retransmissions.saturating_add(1);
        } else if seq_lt(next, t.seq) && !flags.rst() {
            // Any segment, a pure ACK too: its sequence number alone shows bytes of the
            // sender's that the capture missed ("previous segment not captured").
            d.gaps = d.gaps.saturating_add(1);
        }
    }
    if t.window == 0 && !flags.syn() && !flags.fin() && !flags.rst() {
        d.zero_windows = d.zero_windows.saturating_add(1);
    }
    let end = t.seq.wrapping_add(seglen);
    let seen_before =
        !keepalive && seglen > 0 && !flags.rst() && seq.seen_end.is_some_and(|e| seq_lt(t.seq, e));
    if seglen > 0 && !flags.rst() && seq.seen_end.is_none_or(|e| seq_lt(e, end)) {
        seq.seen_end = Some(end);
    } else if seq.seen_end.is_none() && !flags.rst() {
        seq.seen_end = Some(t.seq);
    }
    // Wireshark updates `nextseq` so for every segment, RSTs too.
    if seq.next.is_none_or(|n| seq_lt(n, end)) {
        seq.next = Some(end);
    }
    if flags.fin() {
        seq.fin_seen = true;
    }
    Analysis {
        keepalive,
        seen_before,
    }
}

/// Hands a segment to the reassembler of its direction, and its ACK to the other's.
fn feed_app(
    app: &mut AppState,
    from_orig: bool,
    frame: &Frame<'_>,
    t: &TcpSegment<'_>,
    keepalive: bool,
) {
    let flags = t.flags;
    let (mine, theirs) = if from_orig {
        (&mut app.client, &mut app.server)
    } else {
        (&mut app.server, &mut app.client)
    };
    if flags.syn() {
        mine.syn(t.seq);
    }
    if flags.fin() {
        mine.fin(
            t.seq
                .wrapping_add(flags.syn() as u32)
                .wrapping_add(t.payload_len),
        );
    }
    if keepalive {
        app.session.tcp_keepalive(frame.ts, from_orig);
    }
    if t.payload_len > 0 && !flags.rst() {
        let seq = t.seq.wrapping_add(flags.syn() as u32);
        let mut sink = Sink {
            session: &mut app.session,
            from_client: from_orig,
        };
        mine.segment(
            seq,
            t.payload,
            t.payload_len,
            frame.ts,
            frame.number,
            &mut sink,
        );
    }
    if flags.ack() && !flags.rst() {
        let mut sink = Sink {
            session: &mut app.session,
            from_client: !from_orig,
        };
        theirs.acked(t.ack, &mut sink);
    }
}

fn finish_live(l: Live, capture: &CaptureName, histories: &mut Histories) -> Connection {
    let (mut c, hb) = finish_live_but_heartbeat(l, capture, histories);
    with_heartbeat(&mut c, hb);
    c
}

/// The heartbeat `hb`'s analysis, in `c`'s application summary.
fn with_heartbeat(c: &mut Connection, hb: Option<HbLog>) {
    if let (Some(app), Some(hb)) = (c.app.as_deref_mut(), hb) {
        app.heartbeat = hb.analyse();
    }
}

/// `finish_live`, the TCP session's heartbeat log left unanalysed (`AppSummary::heartbeat`
/// `None`): a diagnosis keeps most connections as digests, which hold no heartbeat, and the
/// analysis was ~5 % of its time (`Tracker::keep` analyses the log of one kept whole).
fn finish_live_but_heartbeat(
    l: Live,
    capture: &CaptureName,
    histories: &mut Histories,
) -> (Connection, Option<HbLog>) {
    let (orig, resp) = l.endpoints();
    let proto = l.key.proto;
    let vlan = l.key.vlan;
    let LiveConn {
        ts,
        last_ts,
        first_frame,
        last_frame,
        orig: orig_dir,
        resp: resp_dir,
        termination: end,
        app: udp_app,
        mid_stream,
        reused_port,
    } = l.conn;
    // TCP's summary comes from its session, its heartbeat log beside it; SIP over UDP's was
    // kept as it went.
    let (app, hb) = match l.app {
        Some(state) => {
            let AppState {
                mut client,
                mut server,
                mut session,
            } = *state;
            client.flush(&mut Sink {
                session: &mut session,
                from_client: true,
            });
            server.flush(&mut Sink {
                session: &mut session,
                from_client: false,
            });
            let (summary, log) = session.finish_but_heartbeat();
            (Some(Box::new(summary)), Some(log))
        }
        None => (udp_app, None),
    };
    let mut c = Connection {
        uid: make_uid(capture.uid_seed, proto, orig, resp, ts),
        capture: capture.path.clone(),
        proto,
        orig_h: orig.0,
        orig_p: orig.1,
        resp_h: resp.0,
        resp_p: resp.1,
        vlan: (vlan != [0, 0]).then_some(vlan),
        ts,
        last_ts: last_ts.max(ts),
        first_frame,
        last_frame,
        conn_state: None,
        history: None,
        mid_stream,
        orig: orig_dir.finish(&l.orig_seq),
        resp: resp_dir.finish(&l.resp_seq),
        rtt_s: (l.handshake & HS_RTT != 0).then(|| l.rtt_ns as f64 / 1e9),
        max_idle: (l.max_idle.from_frame > 0).then(|| l.max_idle.gap(l.broken_by_resp >> 7 & 1)),
        silences: l.silences[..usize::from(l.n_silences)]
            .iter()
            .enumerate()
            .map(|(i, g)| g.gap(l.broken_by_resp >> i & 1))
            .collect(),
        termination: end.map(|t| *t),
        missed_bytes: 0,
        app,
        reused_port,
    };
    if let Some(z) = &l.zeek {
        c.conn_state = Some(z.conn_state());
        c.history = Some(histories.get(z.history()));
        c.orig.bytes = z.size(true);
        c.resp.bytes = z.size(false);
        c.missed_bytes = z.missed_bytes();
    }
    (c, hb)
}

#[cfg(test)]
mod uid_tests {
    use super::*;

    /// `Fnv::addr` hashes an address exactly as its `Display` text: every octet value in
    /// every place of an IPv4 address, and IPv6 ones (written by `Display` itself).
    #[test]
    fn addresses_hash_as_they_display() {
        use std::fmt::Write as _;
        let check = |a: IpAddr| {
            let (mut fast, mut text) = (Fnv::new(), Fnv::new());
            fast.addr(a);
            let _ = write!(text, "{a}");
            assert_eq!(fast.0, text.0, "{a}");
        };
        for o in 0..=255u8 {
            for place in 0..4 {
                let mut octets = [10, 0, 255, 7];
                octets[place] = o;
                check(IpAddr::from(octets));
            }
        }
        for a in [
            "::",
            "::1",
            "2001:db8::1",
            "fe80::1:2:3:4",
            "::ffff:192.0.2.1",
        ] {
            check(a.parse().unwrap());
        }
    }

    /// A uid depends on the capture's file name, not its directory.
    #[test]
    fn uids_follow_the_file_name() {
        let ends = (
            (IpAddr::from([192, 0, 2, 1]), 5060),
            (IpAddr::from([192, 0, 2, 2]), 80),
        );
        let uid = |capture: &str| {
            let seed = CaptureName::new(capture.to_string()).uid_seed;
            make_uid(seed, Proto::Tcp, ends.0, ends.1, Timestamp(7))
        };
        let a = uid("/tmp/x/agent.pcap");
        assert_eq!(a, uid("agent.pcap"));
        assert_ne!(a, uid("gateway.pcap"));
        assert_eq!(a, uid("/other/agent.pcap"));
        assert_eq!(a.len(), UID_LEN);
        assert!(a.starts_with('C'));
    }
}

#[cfg(test)]
mod samples_tests {
    use super::*;
    use crate::decode::{decode, Decoded, Transport};

    /// The samples as kept while open, then packed: the same, in the same order.
    fn check_packed(samples: &[Sample], what: &str) {
        let mut s = Samples::default();
        for &x in samples {
            s.push(x);
        }
        let open: Vec<Sample> = s.iter().collect();
        // Read in one loop a part (`fold`, as the alignment reads them), the same.
        let folded = |s: &Samples| {
            let mut v = Vec::new();
            s.iter().for_each(|x| v.push(x));
            v
        };
        assert_eq!(folded(&s), open, "{what}");
        assert!(matches!(
            s.kept.as_deref(),
            Some(KeptSamples::Head { .. } | KeptSamples::Tail { .. }) | None
        ));
        // What is kept: the first `SAMPLES_HEAD` and the last `SAMPLES_TAIL`.
        let n = samples.len();
        let kept: Vec<Sample> = if n <= SAMPLES_HEAD + SAMPLES_TAIL {
            samples.to_vec()
        } else {
            let (head, rest) = samples.split_at(SAMPLES_HEAD);
            head.iter()
                .chain(&rest[rest.len() - SAMPLES_TAIL..])
                .copied()
                .collect()
        };
        assert_eq!(open, kept, "{what}");
        s.pack();
        assert!(matches!(
            s.kept.as_deref(),
            Some(KeptSamples::Packed(_)) | None
        ));
        let packed: Vec<Sample> = s.iter().collect();
        assert_eq!(open, packed, "{what}");
        assert_eq!(folded(&s), packed, "{what}");
        assert_eq!(s.total, samples.len() as u64);
    }

    /// A direction's first samples take the room their packing needs, not 24 slots of 40 bytes
    /// from its first packet (two captures keep samples for every live connection); the head
    /// goes to the tail's form at its size.
    #[test]
    fn a_head_takes_the_room_of_its_packed_samples() {
        let sample = |i: u64| Sample {
            ts: Timestamp(i as i64 * 25_000_000_000 + 1_234),
            frame: 1000 + 7 * i,
            kind: SampleKind::Data,
            rel_seq: 1 + 180 * i as u32,
            len: 180,
            hash: i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ip_id: Some(i as u16),
            ttl: 64,
        };
        let mut s = Samples::default();
        for i in 0..3 {
            s.push(sample(i));
        }
        let Some(KeptSamples::Head { packed, n: 3, .. }) = s.kept.as_deref() else {
            panic!("{:?}", s.kept.is_some());
        };
        assert!(
            packed.capacity() <= HEAD_FIRST_ROOM,
            "{}",
            packed.capacity()
        );
        for i in 3..SAMPLES_HEAD as u64 {
            s.push(sample(i));
        }
        let Some(KeptSamples::Head { packed, .. }) = s.kept.as_deref() else {
            panic!("a head");
        };
        let full = packed.len();
        let slots = SAMPLES_HEAD * std::mem::size_of::<Sample>();
        assert!(
            packed.capacity() < slots / 2 + 64,
            "{} of {slots}",
            packed.capacity()
        );
        s.push(sample(SAMPLES_HEAD as u64));
        let Some(KeptSamples::Tail {
            bytes, head, n: 1, ..
        }) = s.kept.as_deref()
        else {
            panic!("a tail of one");
        };
        assert_eq!(usize::from(*head), full);
        let room = full + tail_layout::FULL_ROOM;
        assert!(
            bytes.capacity() <= full + tail_layout::FIRST_ROOM,
            "{} of {}",
            bytes.capacity(),
            full + tail_layout::FIRST_ROOM
        );
        let back: Vec<Sample> = s.iter().collect();
        let pushed: Vec<Sample> = (0..=SAMPLES_HEAD as u64).map(sample).collect();
        assert_eq!(back, pushed);
        // A long connection's tail stays in that room: the dropped samples' bytes are taken
        // out as new ones come, and the head is kept.
        let total = 40 * SAMPLES_TAIL as u64;
        for i in SAMPLES_HEAD as u64 + 1..total {
            s.push(sample(i));
        }
        let Some(KeptSamples::Tail { bytes, n, .. }) = s.kept.as_deref() else {
            panic!("a tail");
        };
        assert_eq!(usize::from(*n), SAMPLES_TAIL);
        assert!(bytes.capacity() <= room, "{} of {room}", bytes.capacity());
        let kept: Vec<Sample> = (0..SAMPLES_HEAD as u64)
            .chain(total - SAMPLES_TAIL as u64..total)
            .map(sample)
            .collect();
        assert_eq!(s.iter().collect::<Vec<_>>(), kept);
        s.pack();
        assert_eq!(s.iter().collect::<Vec<_>>(), kept);
    }

    /// Sample `i` of connection `c`: a data segment of 100 bytes, its payload hash distinct.
    fn data_sample(c: u64, i: u64) -> Sample {
        Sample {
            ts: Timestamp((c * 1000 + i) as i64 * 1_000_003),
            frame: c * 100 + i,
            kind: SampleKind::Data,
            rel_seq: (i * 100) as u32,
            len: 100,
            hash: (c << 32 | i).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ip_id: Some(i as u16),
            ttl: 60,
        }
    }

    /// Samples kept in a temporary file (`Tracker::spill_samples`) are read only once the store
    /// is sealed, and read back as they were packed; a file that lost its second half when
    /// sealed gives the samples before the cut, none of those after, and a warning.
    #[test]
    fn samples_in_a_file_read_back_up_to_what_it_lost() {
        let opts = TrackerOptions {
            samples_in_memory: 0,
            ..TrackerOptions::default()
        };
        let mut t = Tracker::with_options("cut.pcap", opts);
        let spill = t.samples_spill.get_or_insert_with(spill::Spill::new);
        assert!(spill.file.is_some(), "a temporary file");
        let sample = data_sample;
        // ~450 KB: several blocks in the file, the last in memory.
        let (n, per) = (500, 48);
        let mut all = Vec::new();
        for c in 0..n {
            let mut s = Samples::default();
            (0..per).for_each(|i| {
                s.push(sample(c, i));
            });
            s.pack();
            let packed: Vec<Sample> = s.iter().collect();
            s.spill(spill, &t.samples_store);
            assert!(s.in_file());
            // Not sealed: nothing to read yet.
            assert_eq!(s.iter().count(), 0);
            all.push((s, packed));
        }
        spill.cut_file_in_half();
        t.seal_samples();
        let read = all.iter().filter(|(s, packed)| {
            let back: Vec<Sample> = s.iter().collect();
            assert!(back.is_empty() || &back == packed);
            !back.is_empty()
        });
        // Those wholly before the cut: half of them (each record is as long), less the one cut.
        let kept = read.count();
        assert!(
            (n as usize / 2 - 1..=n as usize / 2).contains(&kept),
            "{kept}"
        );
        let w = t.warnings();
        assert!(
            w.iter().any(|w| w.text.contains("packet samples")),
            "{:?}",
            w.iter().map(|w| &w.text).collect::<Vec<_>>()
        );
        // A store sealed whole reads every sample back.
        let mut t = Tracker::with_options("whole.pcap", opts);
        let spill = t.samples_spill.get_or_insert_with(spill::Spill::new);
        let mut s = Samples::default();
        (0..per).for_each(|i| {
            s.push(sample(1, i));
        });
        s.pack();
        let packed: Vec<Sample> = s.iter().collect();
        s.spill(spill, &t.samples_store);
        t.seal_samples();
        assert_eq!(s.iter().collect::<Vec<_>>(), packed);
        assert!(t.warnings().is_empty());
    }

    /// Past the budget, a direction's head goes to the tracker's file as it completes
    /// (`heads_out`), and its tail begins after it in memory; kept (`join_head`), the head read
    /// back and made one list with the tail (if any), the samples are those a direction that
    /// kept its head in memory has, whatever their number. Within the budget, and when
    /// connections are handed over as they end (no budget), heads stay.
    #[test]
    fn heads_in_the_file_come_back_whole() {
        let sample = |c: u64, i: u64| Sample {
            ts: Timestamp((c * 1000 + i) as i64 * 999_983),
            frame: c * 1000 + i,
            kind: if i == 0 {
                SampleKind::Syn
            } else {
                SampleKind::Data
            },
            rel_seq: (i * 1300) as u32,
            len: (i % 7) as u32 * 200,
            hash: (c << 32 | i).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ip_id: (!i.is_multiple_of(5)).then_some((c * 7 + i * 3) as u16),
            ttl: 60 + u8::from(i.is_multiple_of(3)),
        };
        let (mut spill, mut held) = (None, 0);
        let counts = [1, 23, 24, 25, 47, 48, 49, 60, 200];
        for (c, &per) in counts.iter().enumerate() {
            let (mut memory, mut file) = (Samples::default(), Samples::default());
            for i in 0..per {
                memory.push(sample(c as u64, i));
                if file.push(sample(c as u64, i)) {
                    assert_eq!(i + 1, SAMPLES_HEAD as u64);
                    heads_out(&mut file, &mut spill, &mut held, Some(0));
                }
                // Not read before it is kept.
                assert_eq!(
                    file.head_in_file(),
                    i + 1 >= SAMPLES_HEAD as u64,
                    "{per} {i}"
                );
            }
            assert_eq!(held, 0);
            let state = file.kept.as_deref();
            match per {
                24 => assert!(matches!(state, Some(KeptSamples::HeadInFile { .. }))),
                25.. => assert!(matches!(state, Some(KeptSamples::TailAfterFile { .. }))),
                _ => assert!(matches!(state, Some(KeptSamples::Head { .. }))),
            }
            memory.pack();
            file.pack();
            let kept: Vec<Sample> = memory.iter().collect();
            assert_eq!(kept.len() as u64, per.min(48));
            let spill = spill.get_or_insert_with(spill::Spill::new);
            file.join_head(spill).expect("read back");
            assert!(!file.head_in_file());
            assert_eq!(file.total, per);
            assert_eq!(file.iter().collect::<Vec<_>>(), kept);
        }

        // Within the budget (each head counted with its tail's list), and with none.
        let (mut spill, mut held) = (None, 0);
        let mut probe = Samples::default();
        (0..SAMPLES_HEAD as u64).for_each(|i| {
            probe.push(sample(0, i));
        });
        let head = probe.full_head_len().expect("a full head");
        // Room for three (each ~as long as the probe's), not four.
        let budget = 3 * (head + tail_layout::FULL_ROOM) + 100;
        let mut kept_here = 0;
        for budget in [Some(budget), None] {
            for c in 0..6 {
                let mut s = Samples::default();
                for i in 0..30 {
                    if s.push(sample(c, i)) {
                        heads_out(&mut s, &mut spill, &mut held, budget);
                    }
                }
                kept_here += usize::from(!s.head_in_file());
            }
        }
        assert!(held <= budget && held > 0, "{held}");
        // Three of the first six, all of the last six.
        assert_eq!(kept_here, 3 + 6);
    }

    /// Through the tracker: a TCP connection's and a UDP flow's heads go to the file past the
    /// budget as their packets come (both of the tracker's call sites), and each summary's
    /// samples are those a tracker that kept every head in memory gives.
    #[test]
    fn the_tracker_sends_tcp_and_udp_heads_to_the_file() {
        use etherparse::PacketBuilder;
        let ends = |i: u64| ([192, 0, 2, 10], [198, 51, 100, 10], i.is_multiple_of(2));
        // Frame `i`: the TCP connection's handshake, then data both ways, and a datagram.
        let packet = |i: u64| -> Vec<u8> {
            let (a, b, out) = ends(i);
            let (src, dst) = if out { (a, b) } else { (b, a) };
            let ip = PacketBuilder::ethernet2([2; 6], [4; 6]).ipv4(src, dst, 64);
            let payload = format!("message {i}");
            let mut v = Vec::new();
            if i.is_multiple_of(3) {
                let (sp, dp) = if out { (5060, 5080) } else { (5080, 5060) };
                ip.udp(sp, dp).write(&mut v, payload.as_bytes()).unwrap();
                return v;
            }
            let (sp, dp) = if out { (40000, 443) } else { (443, 40000) };
            let (seq, ack) = if out { (1000, 9000) } else { (9000, 1000) };
            let t = ip.tcp(sp, dp, seq + i as u32 * 100, 64240);
            match i {
                1 => t.syn().write(&mut v, &[]),
                2 => t.syn().ack(ack).write(&mut v, &[]),
                _ => t
                    .ack(ack + i as u32 * 100)
                    .write(&mut v, payload.as_bytes()),
            }
            .unwrap();
            v
        };
        let summaries = |samples_in_memory: usize| {
            let opts = TrackerOptions {
                samples_in_memory,
                keep_samples: true,
                ..TrackerOptions::default()
            };
            let mut t = Tracker::with_options("heads.pcap", opts);
            let mut in_file = 0;
            for i in 1..=400 {
                let data = packet(i);
                let frame = Frame {
                    number: i,
                    ts: Timestamp(i as i64 * 10_000_000),
                    link: crate::capture::LinkType::ETHERNET,
                    interface: 0,
                    orig_len: data.len() as u32,
                    offset: 0,
                    data: &data,
                };
                let Decoded::Ip(p) = decode(&frame) else {
                    panic!("frame {i} decodes");
                };
                t.packet(&frame, &p);
            }
            for l in t.live.iter() {
                for d in [&l.conn.orig, &l.conn.resp] {
                    in_file += usize::from(d.samples.head_in_file());
                }
            }
            let ((done, _), warnings) = t.finish_kept();
            assert!(warnings.is_empty(), "{warnings:?}");
            (done, in_file)
        };
        let ((memory, none), (file, in_file)) = (summaries(usize::MAX), summaries(0));
        // Both directions of both.
        assert_eq!((none, in_file), (0, 4));
        assert_eq!(memory.len(), 2);
        for (m, f) in memory.iter().zip(&file) {
            for (dm, df) in [(&m.orig, &f.orig), (&m.resp, &f.resp)] {
                let kept: Vec<Sample> = dm.samples.iter().collect();
                assert_eq!(kept.len(), SAMPLES_HEAD + SAMPLES_TAIL, "{:?}", m.proto);
                assert_eq!(df.samples.iter().collect::<Vec<_>>(), kept);
            }
        }
    }

    /// The connections that waited in the file of finished connections come back whole, in
    /// the order kept (a lab capture's summaries, as a diagnosis of several captures keeps
    /// them, over and over: several blocks of the file, the last in memory; or every block in
    /// memory, without a file); a file that lost its second half gives back those before the
    /// cut, and a warning that counts the others.
    #[test]
    fn finished_connections_the_file_lost_are_counted() {
        let opts = TrackerOptions {
            http_heads: false,
            app_details: false,
            finished_in_file: true,
            ..TrackerOptions::default()
        };
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/haproxy-fin/softswitch.pcap");
        let conns = crate::pipeline::track_capture_with(&path, opts)
            .expect("a lab capture")
            .connections;
        assert!(conns.len() > 2, "{}", conns.len());
        let back = |cut: bool, file: bool| {
            let mut t = Tracker::with_options(path.to_string_lossy(), opts);
            let mut store = match file {
                true => kept::KeptStore::new(),
                false => kept::KeptStore::in_memory(),
            };
            let n = 3000;
            for c in conns.iter().cycle().take(n) {
                store.push(c).expect("encoded");
            }
            if cut {
                store.cut_file_in_half();
            }
            (t.finished, t.finished_n) = (Some(store), n);
            t.read_back_finished();
            for (c, b) in conns.iter().cycle().zip(&t.done) {
                assert_eq!(format!("{c:?}"), format!("{b:?}"));
            }
            (n, t.done.len(), t.warnings())
        };
        for file in [true, false] {
            let (n, whole, warnings) = back(false, file);
            assert_eq!(whole, n);
            assert!(warnings.is_empty());
        }
        let (n, read, warnings) = back(true, true);
        assert!((n / 3..n * 2 / 3).contains(&read), "{read} of {n}");
        let lost = format!("{} connections that ended could not be read back", n - read);
        assert!(
            warnings.iter().any(|w| w.text.starts_with(&lost)),
            "{:?}",
            warnings.iter().map(|w| &w.text).collect::<Vec<_>>()
        );
    }

    /// A head the file lost (a disk that failed under us) leaves its direction without
    /// samples (their count kept), and an error for the tracker's warnings; heads before the
    /// loss read back whole.
    #[test]
    fn a_head_the_file_lost_leaves_no_samples() {
        let sample = data_sample;
        let (mut spill, mut held) = (Some(spill::Spill::new()), 0);
        // ~200 KB of heads: several blocks in the file.
        let mut all: Vec<Samples> = (0..500)
            .map(|c| {
                let mut s = Samples::default();
                for i in 0..30 {
                    if s.push(sample(c, i)) {
                        heads_out(&mut s, &mut spill, &mut held, Some(0));
                    }
                }
                s.pack();
                s
            })
            .collect();
        let spill = spill.as_mut().expect("given");
        spill.cut_file_in_half();
        let (mut whole, mut lost) = (0, 0);
        for s in &mut all {
            match s.join_head(spill) {
                Ok(()) => {
                    assert_eq!(s.iter().count(), 30);
                    whole += 1;
                }
                Err(_) => {
                    assert_eq!((s.iter().count(), s.total), (0, 30));
                    lost += 1;
                }
            }
        }
        assert!(whole > 100 && lost > 100, "{whole} {lost}");

        // Without a temporary file, the blocks stay in memory: every head read back from them.
        let (mut spill, mut held) = (Some(spill::Spill::default()), 0);
        let all: Vec<(Samples, Vec<Sample>)> = (0..500)
            .map(|c| {
                let (mut s, mut memory) = (Samples::default(), Samples::default());
                for i in 0..30 {
                    memory.push(sample(c, i));
                    if s.push(sample(c, i)) {
                        heads_out(&mut s, &mut spill, &mut held, Some(0));
                    }
                }
                s.pack();
                (s, memory.iter().collect())
            })
            .collect();
        let spill = spill.as_ref().expect("given");
        assert!(spill.blocks.len() > 2 && spill.on_disk().is_none());
        for (mut s, kept) in all {
            s.join_head(spill).expect("in memory");
            assert_eq!(s.iter().collect::<Vec<_>>(), kept);
        }
    }

    /// Every frame of every fixture, as a sample of its transport (its real times, frame
    /// numbers, sequence numbers, IP IDs, TTLs, lengths and payload hashes), in runs of 60: the
    /// first 24 and last 24 of each run kept, packed and read back.
    #[test]
    fn packed_samples_read_back_as_kept_on_every_fixture() {
        let mut runs = 0;
        for f in &crate::testing::fixture_captures() {
            let Ok(mut r) = crate::capture::CaptureReader::open(f) else {
                continue;
            };
            let mut run = Vec::new();
            while let Ok(Some(frame)) = r.next_frame() {
                let Decoded::Ip(p) = decode(&frame) else {
                    continue;
                };
                let (kind, rel_seq, len, payload) = match p.transport {
                    Transport::Tcp(t) if t.flags.syn() && t.flags.ack() => {
                        (SampleKind::SynAck, t.seq, t.payload_len, t.payload)
                    }
                    Transport::Tcp(t) if t.flags.syn() => {
                        (SampleKind::Syn, t.seq, t.payload_len, t.payload)
                    }
                    Transport::Tcp(t) if t.flags.rst() => {
                        (SampleKind::Rst, t.seq, t.payload_len, t.payload)
                    }
                    Transport::Tcp(t) if t.flags.fin() => {
                        (SampleKind::Fin, t.seq, t.payload_len, t.payload)
                    }
                    Transport::Tcp(t) => (SampleKind::Data, t.seq, t.payload_len, t.payload),
                    Transport::Udp(u) => (SampleKind::Datagram, 0, u.payload_len, u.payload),
                    Transport::Other { .. } => continue,
                };
                run.push(Sample {
                    ts: frame.ts,
                    frame: frame.number,
                    kind,
                    rel_seq,
                    len,
                    hash: if payload.is_empty() {
                        0
                    } else {
                        payload_hash(payload)
                    },
                    ip_id: p.ip_id,
                    ttl: p.ttl,
                });
                if run.len() == 60 {
                    check_packed(&run, &format!("{} to frame {}", f.display(), frame.number));
                    runs += 1;
                    run.clear();
                }
            }
            check_packed(&run, &format!("{} end", f.display()));
        }
        assert!(runs > 50, "{runs} runs");
    }

    proptest::proptest! {
        /// A shard's read loop drops another shard's packet when `may_tick` says no sweep can
        /// fall at it (`Tracker::sweep_may_be_due`), asked of the clock as it is when the
        /// packet is read, before the packets held ahead of it tick it. Wherever the clock
        /// said no, up to eight packets before, the tick at that packet is false and leaves
        /// the clock as it was. Steps a second apart exactly, just under and over, and back.
        #[test]
        fn a_sweep_the_clock_rules_out_does_not_happen(
            start in 0i64..1 << 62,
            steps in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::prelude::Just(SWEEP_EVERY_NS),
                    proptest::prelude::Just(SWEEP_EVERY_NS - 1),
                    proptest::prelude::Just(SWEEP_EVERY_NS + 1),
                    proptest::prelude::Just(0i64),
                    -3 * SWEEP_EVERY_NS..3 * SWEEP_EVERY_NS,
                ],
                1..60,
            ),
        ) {
            let mut clock = SweepClock::new();
            let mut before: Vec<SweepClock> = Vec::new();
            let mut ts = start;
            for step in steps {
                ts += step;
                let now = Timestamp(ts);
                before.push(clock);
                let ruled_out = before.iter().rev().take(8).any(|c| !c.may_tick(now));
                let last = clock.last;
                let ticked = clock.tick(now);
                if ruled_out {
                    proptest::prop_assert!(!ticked, "a sweep at {ts} was ruled out");
                    proptest::prop_assert_eq!(clock.last, last);
                }
            }
        }

        /// A shard decides whether a frame is its own from its ends alone
        /// (`ConnKey::shard_of_ends`), without making the key the decoded frame's
        /// (`shard_of`) would be: the same hash under any seed, the same shard for any number
        /// of them, whichever end sent, equal ends too.
        #[test]
        fn a_frames_shard_from_its_ends_is_its_keys(
            a in proptest::prelude::any::<(u32, u16)>(),
            b in proptest::prelude::any::<(u32, u16)>(),
            same in proptest::prelude::any::<bool>(),
            seed in proptest::prelude::any::<u64>(),
            n in 1usize..9,
        ) {
            let b = if same { a } else { b };
            let v4 = |(ip, port): (u32, u16)| (std::net::Ipv4Addr::from_bits(ip), port);
            let ip = |(ip, port): (u32, u16)| (IpAddr::V4(std::net::Ipv4Addr::from_bits(ip)), port);
            for (src, dst) in [(a, b), (b, a)] {
                let key = FlowKey::of(ip(src), ip(dst), [0, 0], Proto::Tcp);
                proptest::prop_assert_eq!(
                    FlowKey::hash_v4_tcp(v4(src), v4(dst), seed),
                    key.hash_with(seed)
                );
                let ends = crate::decode::Ends { src: v4(src), dst: v4(dst) };
                proptest::prop_assert_eq!(
                    ConnKey::shard_of_ends(ends, n),
                    ConnKey::of_ends(ends).shard(n)
                );
            }
        }

        /// Any values, the extremes too: times going back, frames and sequence numbers
        /// wrapping, no IP ID; or (`near`) TTLs of three values and IP IDs within 300 of
        /// 65 400, so that a TTL repeats and an IP ID steps up by under 256, or back, or
        /// wraps past 65 535.
        #[test]
        fn packed_samples_are_exact(
            xs in proptest::collection::vec(
                (
                    proptest::prelude::any::<i64>(),
                    proptest::prelude::any::<u64>(),
                    0usize..6,
                    proptest::prelude::any::<u32>(),
                    proptest::prelude::any::<u32>(),
                    proptest::prelude::any::<u64>(),
                    proptest::prelude::any::<Option<u16>>(),
                    proptest::prelude::any::<u8>(),
                ),
                0..120,
            ),
            round in proptest::prelude::any::<bool>(),
            near in proptest::prelude::any::<bool>(),
        ) {
            let kinds = packed_samples::KINDS;
            let samples: Vec<Sample> = xs
                .into_iter()
                .map(|(ts, frame, k, rel_seq, len, hash, ip_id, ttl)| Sample {
                    // Whole microseconds, as most captures' times are, or any nanosecond.
                    ts: Timestamp(if round { ts / 1_000 * 1_000 } else { ts }),
                    frame,
                    kind: kinds[k],
                    rel_seq,
                    len,
                    hash,
                    ip_id: if near {
                        ip_id.map(|id| 65_400u16.wrapping_add(id % 300))
                    } else {
                        ip_id
                    },
                    ttl: if near { ttl % 3 } else { ttl },
                })
                .collect();
            check_packed(&samples, "random");
        }
    }
}
