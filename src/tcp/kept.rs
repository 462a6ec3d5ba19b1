//! The connections a one-capture diagnosis keeps whole (those a rule may end: `rules::kept_as`),
//! written to an unnamed temporary file as they are summarised (`KeptStore`), and read from it
//! one at a time when a rule asks for one (`KeptFile::read`, through `align::Alignment::connection`).
//! Each has a digest like every other connection, which says where it is (`KeptAt`) and keeps
//! its place in the lists the rules walk.
//!
//! Held in memory, they were a fifth of the tracking's peak on the 2 GB synth (14 500
//! connections reset by the middlebox, ~1.4 KB each beside 25 800 live ones), and they grow with
//! the capture's length, not with the connections alive at once. Read back whole when tracking
//! ended (session 16), they were then the rules' largest list (20.5 MB at 2 GB, ~200 at 20 GB);
//! read when asked for, they hold no memory between the rules that read them.
//!
//! The encoding (`Codec`) is this program's own, written and read by the same build: every field
//! one after another, counts as varints (`crate::varint`), floats as their bits. A connection
//! holding what a one-capture diagnosis never keeps (HTTP heads, WebSocket counts, a TLS
//! hello, events, a live connection's packet samples) is refused (`put` is false) and stays in
//! memory, whole.
//!
//! The same store keeps a two-capture diagnosis's connections that end while tracking, packet
//! samples and all, until tracking ends (`TrackerOptions::finished_in_file`): read back then
//! (`KeptStore::drain`), when the live connections have left the memory they need.

use super::spill::{invalid, Sealed, Spill};
use super::{
    Connection, Direction, Fingerprint, Gap, Histories, IpIdPattern, KeptSamples, Proto, Sample,
    SampleKind, Samples, Side, Termination, TerminationKind, Uid,
};
use crate::app::heartbeat::{Heartbeat, HeartbeatKind, Stretch};
use crate::app::session::{AppEvent, AppSummary, HttpSummary, Service};
use crate::app::sip::{Dialog, DialogEnd, DialogState, Registration};
use crate::boxed_list::BoxedList;
use crate::capture::Timestamp;
use std::net::IpAddr;
use std::sync::Arc;

/// A value written to bytes and read back, field by field. `put` is false for a value this
/// encoding does not keep (what was written of it is then discarded by the caller); `get` is
/// `None` for bytes that end early or do not decode.
pub(crate) trait Codec: Sized {
    fn put(&self, w: &mut Vec<u8>) -> bool;
    fn get(r: &mut &[u8]) -> Option<Self>;
}

/// `Codec` for a struct, each field listed in order; every field must be named (the struct
/// literal in `get` does not compile otherwise), so a field added later is not forgotten.
macro_rules! codec_struct {
    ($t:ty { $($f:ident),* $(,)? }) => {
        impl $crate::tcp::kept::Codec for $t {
            fn put(&self, w: &mut Vec<u8>) -> bool {
                true $(&& $crate::tcp::kept::Codec::put(&self.$f, w))*
            }
            fn get(r: &mut &[u8]) -> Option<Self> {
                Some(Self { $($f: $crate::tcp::kept::Codec::get(r)?,)* })
            }
        }
    };
}
pub(crate) use codec_struct;

/// `Codec` for an enum without data, as its variant's place in the list; the `match` in
/// `_every` fails to compile if a variant is left out.
macro_rules! codec_enum {
    ($t:ident { $($v:ident),* $(,)? }) => {
        impl $crate::tcp::kept::Codec for $t {
            fn put(&self, w: &mut Vec<u8>) -> bool {
                fn _every(x: &$t) {
                    match x { $($t::$v)|* => {} }
                }
                let i = [$($t::$v),*].iter().position(|v| v == self);
                i.map(|i| w.push(i as u8)).is_some()
            }
            fn get(r: &mut &[u8]) -> Option<Self> {
                let i = <u8 as $crate::tcp::kept::Codec>::get(r)?;
                [$($t::$v),*].get(usize::from(i)).copied()
            }
        }
    };
}
pub(crate) use codec_enum;

/// A value this encoding does not keep: a connection holding one is kept in memory.
macro_rules! codec_refused {
    ($($t:ty),*) => {$(
        impl $crate::tcp::kept::Codec for $t {
            fn put(&self, _: &mut Vec<u8>) -> bool {
                false
            }
            fn get(_: &mut &[u8]) -> Option<Self> {
                None
            }
        }
    )*};
}
pub(crate) use codec_refused;

impl Codec for u8 {
    fn put(&self, w: &mut Vec<u8>) -> bool {
        w.push(*self);
        true
    }
    fn get(r: &mut &[u8]) -> Option<Self> {
        let (&b, rest) = r.split_first()?;
        *r = rest;
        Some(b)
    }
}

impl Codec for u64 {
    fn put(&self, w: &mut Vec<u8>) -> bool {
        crate::varint::push(w, *self);
        true
    }
    fn get(r: &mut &[u8]) -> Option<Self> {
        let (v, end) = crate::varint::read(r, 0)?;
        *r = &r[end..];
        Some(v)
    }
}

/// The narrower integers as `u64` varints, refused on the way back if they do not fit.
macro_rules! codec_uint {
    ($($t:ty),*) => {$(
        impl Codec for $t {
            fn put(&self, w: &mut Vec<u8>) -> bool {
                (*self as u64).put(w)
            }
            fn get(r: &mut &[u8]) -> Option<Self> {
                <$t>::try_from(u64::get(r)?).ok()
            }
        }
    )*};
}
codec_uint!(u16, u32, usize);

impl Codec for i64 {
    fn put(&self, w: &mut Vec<u8>) -> bool {
        crate::varint::zigzag(*self).put(w)
    }
    fn get(r: &mut &[u8]) -> Option<Self> {
        Some(crate::varint::unzigzag(u64::get(r)?))
    }
}

impl Codec for bool {
    fn put(&self, w: &mut Vec<u8>) -> bool {
        u8::from(*self).put(w)
    }
    fn get(r: &mut &[u8]) -> Option<Self> {
        match u8::get(r)? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }
}

/// Bit for bit (NaN and -0.0 included).
impl Codec for f64 {
    fn put(&self, w: &mut Vec<u8>) -> bool {
        w.extend_from_slice(&self.to_bits().to_le_bytes());
        true
    }
    fn get(r: &mut &[u8]) -> Option<Self> {
        let (b, rest) = r.split_first_chunk::<8>()?;
        *r = rest;
        Some(f64::from_bits(u64::from_le_bytes(*b)))
    }
}

impl Codec for Timestamp {
    fn put(&self, w: &mut Vec<u8>) -> bool {
        self.0.put(w)
    }
    fn get(r: &mut &[u8]) -> Option<Self> {
        i64::get(r).map(Timestamp)
    }
}

impl Codec for std::num::NonZeroU64 {
    fn put(&self, w: &mut Vec<u8>) -> bool {
        self.get().put(w)
    }
    fn get(r: &mut &[u8]) -> Option<Self> {
        Self::new(u64::get(r)?)
    }
}

/// Its length, then its bytes.
pub(crate) fn get_bytes<'a>(r: &mut &'a [u8]) -> Option<&'a [u8]> {
    let n = usize::get(r)?;
    let (b, rest) = r.split_at_checked(n)?;
    *r = rest;
    Some(b)
}

pub(crate) fn put_bytes(b: &[u8], w: &mut Vec<u8>) -> bool {
    b.len().put(w);
    w.extend_from_slice(b);
    true
}

impl Codec for String {
    fn put(&self, w: &mut Vec<u8>) -> bool {
        put_bytes(self.as_bytes(), w)
    }
    fn get(r: &mut &[u8]) -> Option<Self> {
        String::from_utf8(get_bytes(r)?.to_vec()).ok()
    }
}

impl Codec for Uid {
    fn put(&self, w: &mut Vec<u8>) -> bool {
        put_bytes(self.as_str().as_bytes(), w)
    }
    fn get(r: &mut &[u8]) -> Option<Self> {
        std::str::from_utf8(get_bytes(r)?).ok().map(Uid::new)
    }
}

impl Codec for IpAddr {
    fn put(&self, w: &mut Vec<u8>) -> bool {
        match self {
            IpAddr::V4(a) => {
                w.push(4);
                w.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                w.push(6);
                w.extend_from_slice(&a.octets());
            }
        }
        true
    }
    fn get(r: &mut &[u8]) -> Option<Self> {
        match u8::get(r)? {
            4 => {
                let (b, rest) = r.split_first_chunk::<4>()?;
                *r = rest;
                Some(IpAddr::from(*b))
            }
            6 => {
                let (b, rest) = r.split_first_chunk::<16>()?;
                *r = rest;
                Some(IpAddr::from(*b))
            }
            _ => None,
        }
    }
}

impl<T: Codec> Codec for Option<T> {
    fn put(&self, w: &mut Vec<u8>) -> bool {
        match self {
            None => false.put(w),
            Some(v) => true.put(w) && v.put(w),
        }
    }
    fn get(r: &mut &[u8]) -> Option<Self> {
        Some(match bool::get(r)? {
            false => None,
            true => Some(T::get(r)?),
        })
    }
}

impl<T: Codec> Codec for Box<T> {
    fn put(&self, w: &mut Vec<u8>) -> bool {
        (**self).put(w)
    }
    fn get(r: &mut &[u8]) -> Option<Self> {
        T::get(r).map(Box::new)
    }
}

fn put_slice<T: Codec>(s: &[T], w: &mut Vec<u8>) -> bool {
    s.len().put(w) && s.iter().all(|v| v.put(w))
}

/// A list as long as the bytes say, with room reserved for no more items than there are bytes
/// left (changed bytes must not ask for a huge allocation).
fn get_list<T: Codec>(r: &mut &[u8]) -> Option<Vec<T>> {
    let n = usize::get(r)?;
    let mut v = Vec::with_capacity(n.min(r.len()));
    for _ in 0..n {
        v.push(T::get(r)?);
    }
    Some(v)
}

impl<T: Codec> Codec for Vec<T> {
    fn put(&self, w: &mut Vec<u8>) -> bool {
        put_slice(self, w)
    }
    fn get(r: &mut &[u8]) -> Option<Self> {
        get_list(r)
    }
}

impl<T: Codec> Codec for BoxedList<T> {
    fn put(&self, w: &mut Vec<u8>) -> bool {
        put_slice(self.as_slice(), w)
    }
    fn get(r: &mut &[u8]) -> Option<Self> {
        get_list(r).map(BoxedList::from)
    }
}

impl<A: Codec, B: Codec> Codec for (A, B) {
    fn put(&self, w: &mut Vec<u8>) -> bool {
        self.0.put(w) && self.1.put(w)
    }
    fn get(r: &mut &[u8]) -> Option<Self> {
        Some((A::get(r)?, B::get(r)?))
    }
}

/// Each item in turn (no length: the type has it).
impl<T: Codec, const N: usize> Codec for [T; N] {
    fn put(&self, w: &mut Vec<u8>) -> bool {
        self.iter().all(|v| v.put(w))
    }
    fn get(r: &mut &[u8]) -> Option<Self> {
        let v = (0..N).map(|_| T::get(r)).collect::<Option<Vec<T>>>()?;
        v.try_into().ok()
    }
}

impl Codec for DialogEnd {
    fn put(&self, w: &mut Vec<u8>) -> bool {
        match self {
            DialogEnd::Bye => 0u8.put(w),
            DialogEnd::Rejected { code } => 1u8.put(w) && code.put(w),
            DialogEnd::Cancelled => 2u8.put(w),
            DialogEnd::TransportLost => 3u8.put(w),
        }
    }
    fn get(r: &mut &[u8]) -> Option<Self> {
        match u8::get(r)? {
            0 => Some(DialogEnd::Bye),
            1 => Some(DialogEnd::Rejected { code: u16::get(r)? }),
            2 => Some(DialogEnd::Cancelled),
            3 => Some(DialogEnd::TransportLost),
            _ => None,
        }
    }
}

/// A finished connection's samples (`TrackerOptions::finished_in_file`): packed in memory, or
/// where they wait in the tracker's store of samples. Read back with no store: the tracker
/// that wrote them gives them its own (`Samples::in_store`). A live connection's (a head or
/// tail still open) are refused.
impl Codec for KeptSamples {
    fn put(&self, w: &mut Vec<u8>) -> bool {
        match self {
            KeptSamples::Packed(b) => {
                w.push(0);
                b.len().put(w) && {
                    w.extend_from_slice(b);
                    true
                }
            }
            KeptSamples::OnDisk { at, len, .. } => 1u8.put(w) && at.put(w) && len.put(w),
            _ => false,
        }
    }
    fn get(r: &mut &[u8]) -> Option<Self> {
        match u8::get(r)? {
            0 => {
                let n = usize::get(r)?;
                let (b, rest) = r.split_at_checked(n)?;
                *r = rest;
                Some(KeptSamples::Packed(Box::from(b)))
            }
            1 => Some(KeptSamples::OnDisk {
                store: Default::default(),
                at: u64::get(r)?,
                len: u32::get(r)?,
            }),
            _ => None,
        }
    }
}

// What a one-capture diagnosis does not keep (`TrackerOptions::http_heads`, `app_details`,
// `detail`).
codec_refused!(
    AppEvent,
    crate::app::http::RequestHead,
    crate::app::http::ResponseHead,
    crate::app::websocket::WsStats,
    crate::app::websocket::AnomalyKind,
    crate::app::tls::ClientHello,
    std::collections::HashMap<String, usize>
);

codec_enum!(Proto { Tcp, Udp });
codec_enum!(Side { Orig, Resp });
codec_enum!(IpIdPattern {
    None,
    Zero,
    Incrementing,
    Random
});
codec_enum!(TerminationKind { Fin, Rst });
codec_enum!(SampleKind {
    Syn,
    SynAck,
    Data,
    Fin,
    Rst,
    Datagram
});
codec_enum!(Service {
    Websocket,
    Sip,
    Tls,
    Http
});
codec_enum!(HeartbeatKind {
    WsPing,
    Crlf,
    App,
    TcpKeepalive
});
codec_enum!(DialogState {
    Calling,
    Proceeding,
    Confirmed,
    Terminated
});

/// The application's side (client or server), beside TCP's (`Side`).
mod app_side {
    use crate::app::Side;
    codec_enum!(Side { Client, Server });
}

codec_struct!(Fingerprint {
    packets,
    ttl_usual,
    ttl_usual_count,
    ttl_min,
    ttl_max,
    ip_id_pattern,
    ip_id_last
});
codec_struct!(Samples { kept, total });
codec_struct!(Sample {
    ts,
    frame,
    kind,
    rel_seq,
    len,
    hash,
    ip_id,
    ttl
});
codec_struct!(Direction {
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
    fingerprint,
    isn,
    saw_syn,
    samples,
    retransmitted,
    first_data
});
codec_struct!(Gap {
    secs,
    by,
    from_frame,
    to_frame,
    from_ts
});
codec_struct!(Termination {
    kind,
    by,
    ts,
    frame,
    ttl,
    ip_id,
    window,
    ack_flag,
    seq,
    options_len,
    idle_before_s,
    sender_usual,
    ttl_fits,
    ip_id_fits
});
codec_struct!(HttpSummary {
    request,
    response,
    accept_ok,
    upgraded,
    failed_status,
    upgrade_ts,
    upgrade_frame,
    requests
});
codec_struct!(Dialog {
    call_id,
    from_tag,
    to_tag,
    from_uri,
    to_uri,
    caller,
    state,
    end,
    invite_cseq,
    invite_ts,
    invite_frame,
    first_1xx_ts,
    ringing_ts,
    ok_ts,
    final_code,
    final_ts,
    ack_ts,
    cancel_ts,
    bye_ts,
    bye_frame,
    bye_by,
    bye_reason,
    bye_ok_ts,
    bye_response_code,
    reinvites,
    cut_by_transport_loss,
    cut_ts
});
codec_struct!(Registration {
    call_id,
    cseq_num,
    by,
    ts,
    frame_no,
    expires_requested,
    is_unregister,
    response_code,
    response_ts,
    response_frame,
    expires_granted,
    lost
});
codec_struct!(Stretch {
    from,
    to,
    count,
    interval_median_s
});
codec_struct!(Heartbeat {
    kind,
    started_by,
    count,
    first,
    last,
    size,
    interval_median_s,
    interval_p95_s,
    interval_max_s,
    cv,
    intervals,
    intervals_truncated,
    stretched,
    stretch_runs
});
codec_struct!(AppSummary {
    service,
    http,
    websocket,
    ws_anomalies,
    sip,
    tls,
    heartbeat,
    stream_gaps,
    events
});

/// A connection's record: every field but its capture (the store's) and its Zeek state and
/// history (Zeek's `conn_state` as its place in `CONN_STATES`, the history as text, shared
/// again as `Histories` shares it).
fn put_connection(c: &Connection, w: &mut Vec<u8>) -> bool {
    let state = match c.conn_state {
        None => Some(0),
        Some(s) => super::zeek::CONN_STATES
            .iter()
            .position(|k| *k == s)
            .map(|i| i + 1),
    };
    let Some(state) = state else {
        return false;
    };
    let history = c.history.as_deref().map(str::to_owned);
    let Connection {
        uid,
        capture: _,
        proto,
        orig_h,
        orig_p,
        resp_h,
        resp_p,
        vlan,
        ts,
        last_ts,
        first_frame,
        last_frame,
        conn_state: _,
        history: _,
        mid_stream,
        orig,
        resp,
        rtt_s,
        max_idle,
        silences,
        termination,
        missed_bytes,
        app,
        reused_port,
    } = c;
    uid.put(w)
        && proto.put(w)
        && orig_h.put(w)
        && orig_p.put(w)
        && resp_h.put(w)
        && resp_p.put(w)
        && vlan.put(w)
        && ts.put(w)
        && last_ts.put(w)
        && first_frame.put(w)
        && last_frame.put(w)
        && state.put(w)
        && history.put(w)
        && mid_stream.put(w)
        && orig.put(w)
        && resp.put(w)
        && rtt_s.put(w)
        && max_idle.put(w)
        && silences.put(w)
        && termination.put(w)
        && missed_bytes.put(w)
        && app.put(w)
        && reused_port.put(w)
}

/// The connection a record holds, every byte of it read (`get_connection` alone may stop
/// short of the end of changed bytes).
fn get_record(rec: &[u8], capture: &Arc<str>, histories: &mut Histories) -> Option<Connection> {
    let mut r = rec;
    get_connection(&mut r, capture, histories).filter(|_| r.is_empty())
}

fn get_connection(
    r: &mut &[u8],
    capture: &Arc<str>,
    histories: &mut Histories,
) -> Option<Connection> {
    let g = r;
    Some(Connection {
        uid: Codec::get(g)?,
        capture: capture.clone(),
        proto: Codec::get(g)?,
        orig_h: Codec::get(g)?,
        orig_p: Codec::get(g)?,
        resp_h: Codec::get(g)?,
        resp_p: Codec::get(g)?,
        vlan: Codec::get(g)?,
        ts: Codec::get(g)?,
        last_ts: Codec::get(g)?,
        first_frame: Codec::get(g)?,
        last_frame: Codec::get(g)?,
        conn_state: match usize::get(g)? {
            0 => None,
            i => Some(*super::zeek::CONN_STATES.get(i - 1)?),
        },
        history: Option::<String>::get(g)?.map(|h| histories.get(&h)),
        mid_stream: Codec::get(g)?,
        orig: Codec::get(g)?,
        resp: Codec::get(g)?,
        rtt_s: Codec::get(g)?,
        max_idle: Codec::get(g)?,
        silences: Codec::get(g)?,
        termination: Codec::get(g)?,
        missed_bytes: Codec::get(g)?,
        app: Codec::get(g)?,
        reused_port: Codec::get(g)?,
    })
}

/// Where a connection kept whole is in its store (`KeptStore::push`): the store, and its
/// record's bytes. A digest carries it (`digest::Digest::whole`), so the connection keeps the
/// digest's place in every list (sorted, merged across shards, cut by `--max-summaries`) and
/// is read whole only when a rule asks for it (`KeptFile::read`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeptAt {
    /// `KeptStore::id` of the store that holds it: shards of one capture have one each.
    pub store: u32,
    /// The record's first byte in the store, past its length.
    pub at: u64,
    pub len: u32,
}

/// Connections, each a record: its length (a varint) and its bytes, written to a temporary
/// file as they come (`Spill`).
#[derive(Default)]
pub struct KeptStore {
    spill: Spill,
    scratch: Vec<u8>,
    len: usize,
    id: u32,
}

/// A store's id, unique in the process: digests of several shards' stores meet in one list.
fn next_store_id() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl KeptStore {
    /// A store that writes to a temporary file if one can be made.
    pub fn new() -> Self {
        KeptStore {
            spill: Spill::new(),
            id: next_store_id(),
            ..Self::default()
        }
    }

    /// A store that keeps its blocks in memory.
    #[cfg(test)]
    pub(crate) fn in_memory() -> Self {
        KeptStore {
            id: next_store_id(),
            ..Self::default()
        }
    }

    /// Connections kept.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keeps `c`, and says where; `None` (nothing kept) if it holds what the encoding refuses.
    pub fn push(&mut self, c: &Connection) -> Option<KeptAt> {
        self.scratch.clear();
        if !put_connection(c, &mut self.scratch) {
            return None;
        }
        let len = u32::try_from(self.scratch.len()).ok()?;
        let at = self.spill.write_record(&self.scratch);
        self.len += 1;
        Some(KeptAt {
            store: self.id,
            at,
            len,
        })
    }

    /// For tests: the temporary file cut to half what it holds, as a disk that lost its end
    /// would leave it.
    #[cfg(test)]
    pub(crate) fn cut_file_in_half(&mut self) {
        self.spill.cut_file_in_half();
    }

    /// Tracking is over, and the connections are wanted back in memory: each decoded once, in
    /// the order kept, and handed to `each`; the store is left empty. An error ends what is
    /// read from the temporary file (a record that does not read whole or decode: the file
    /// changed or was cut short under us); the connections in memory are still read.
    pub(super) fn drain(
        &mut self,
        capture: &Arc<str>,
        histories: &mut Histories,
        each: &mut dyn FnMut(Connection),
    ) -> Option<std::io::Error> {
        let mut one = |rec: &[u8]| match get_record(rec, capture, histories) {
            Some(c) => {
                each(c);
                true
            }
            None => false,
        };
        let error = self.spill.drain(&mut one);
        self.len = 0;
        error
    }

    /// Tracking is over: the records, readable one at a time (`KeptFile::read`). Those in the
    /// temporary file are checked once here by decoding them: a record that does not decode
    /// (the file changed or cut short under us) ends what the file is trusted with, and is the
    /// error returned; the connections from there on are read through their digests only
    /// (`KeptFile::holds`). Those in memory were written whole by `push`.
    pub fn seal(&mut self, capture: &Arc<str>) -> (KeptFile, Option<std::io::Error>) {
        let mut histories = Histories::default();
        let mut check = |rec: &[u8]| get_record(rec, capture, &mut histories).is_some();
        let (records, error) = self.spill.seal(&mut check);
        self.len = 0;
        let kept = KeptFile {
            id: self.id,
            capture: capture.clone(),
            records,
            recent: Default::default(),
        };
        (kept, error)
    }
}

/// A store's records once tracking is over (`KeptStore::seal`): in its temporary file, then in
/// memory (blocks written without one, or after a write to it failed). A connection is read
/// whole from here each time a rule asks for it (`align::Alignment::connection`), so the
/// connections a rule ends take no memory between the rules that read them: at 2 GB those
/// were 20.5 MB of the rules' peak (14 494 connections, ~1.4 KB each decoded, ~520 bytes
/// encoded), at 20 GB ~200 MB.
pub struct KeptFile {
    id: u32,
    capture: Arc<str>,
    records: Sealed,
    /// The last connections read (`read`), by offset.
    recent: std::sync::Mutex<Vec<(u64, Arc<Connection>)>>,
}

impl std::fmt::Debug for KeptFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeptFile")
            .field("id", &self.id)
            .field("records", &self.records)
            .finish()
    }
}

impl KeptFile {
    /// Whether the record at `at` is here and was read back whole when the store was sealed.
    pub fn holds(&self, at: &KeptAt) -> bool {
        at.store == self.id && self.records.holds(at.at, at.len)
    }

    /// The connection at `at`, decoded. An error only if the record is not one this file
    /// `holds`, or the file cannot be read again (it was, whole, when sealed). The last few
    /// read are kept: rules ask for a connection again within a few lines (on the 2 GB synth,
    /// ~95 000 reads of 14 494 connections, of which these catch a quarter).
    pub fn read(&self, at: &KeptAt) -> std::io::Result<Arc<Connection>> {
        if !self.holds(at) {
            return Err(invalid(&format!(
                "a record at byte {} of the kept connections",
                at.at
            )));
        }
        let mut recent = self
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(i) = recent.iter().position(|(k, _)| *k == at.at) {
            let hit = recent.remove(i);
            let c = hit.1.clone();
            recent.push(hit);
            return Ok(c);
        }
        let c = Arc::new(self.decode(at)?);
        if recent.len() == RECENT {
            recent.remove(0);
        }
        recent.push((at.at, c.clone()));
        Ok(c)
    }

    fn decode(&self, at: &KeptAt) -> std::io::Result<Connection> {
        let rec = self.records.record(at.at, at.len)?;
        get_record(&rec, &self.capture, &mut Histories::default())
            .ok_or_else(|| invalid(&format!("the record at byte {}", at.at)))
    }
}

/// Connections a `KeptFile` keeps decoded, the last read last.
const RECENT: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::TrackerOptions;

    /// Every connection of every fixture, tracked with `opts`, every one kept whole.
    fn every_connection(opts: TrackerOptions) -> Vec<Connection> {
        crate::testing::fixture_captures()
            .iter()
            .filter_map(|p| crate::pipeline::track_capture_with(p, opts).ok())
            .flat_map(|f| f.connections)
            .map(|c| *c)
            .collect()
    }

    /// What a one-capture diagnosis keeps of a connection (`tests/digest.rs` has the same).
    fn diagnosis() -> TrackerOptions {
        TrackerOptions {
            keep_samples: false,
            timeline: false,
            http_heads: false,
            app_details: false,
            ..TrackerOptions::default()
        }
    }

    fn round_trip(c: &Connection, histories: &mut Histories) -> Option<Connection> {
        let mut w = Vec::new();
        if !put_connection(c, &mut w) {
            return None;
        }
        let mut r = &w[..];
        let back = get_connection(&mut r, &c.capture, histories).expect("decodes");
        assert!(r.is_empty(), "{}: {} bytes left", c.uid, r.len());
        Some(back)
    }

    /// Every field comes back as it was (`Debug` prints them all, private ones included), for
    /// every connection a diagnosis keeps; none is refused. Kept with everything `flows`
    /// keeps, the connections with what the encoding refuses are refused, and the others come
    /// back the same.
    #[test]
    fn every_fixture_connection_comes_back_the_same() {
        let mut histories = Histories::default();
        let all = every_connection(diagnosis());
        assert!(all.len() > 150, "{}", all.len());
        let (mut with_app, mut with_sip, mut with_end, mut with_retx) = (0, 0, 0, 0);
        for c in &all {
            let back = round_trip(c, &mut histories).unwrap_or_else(|| panic!("{}", c.uid));
            assert_eq!(format!("{back:?}"), format!("{c:?}"));
            with_app += usize::from(back.app.is_some());
            with_sip += usize::from(back.app.as_ref().is_some_and(|a| a.sip.is_some()));
            with_end += usize::from(back.termination.is_some());
            with_retx += usize::from(!back.orig.retransmitted.is_empty());
        }
        // Not vacuous: the parts with lists and boxes of their own were there.
        assert!(with_app > 100 && with_sip > 10, "{with_app} {with_sip}");
        assert!(with_end > 50 && with_retx > 5, "{with_end} {with_retx}");

        let (mut refused, mut same) = (0, 0);
        let details = TrackerOptions {
            keep_samples: false,
            ..TrackerOptions::default()
        };
        for c in &every_connection(details) {
            match round_trip(c, &mut histories) {
                Some(back) => {
                    assert_eq!(format!("{back:?}"), format!("{c:?}"));
                    same += 1;
                }
                None => refused += 1,
            }
        }
        assert!(refused > 50 && same > 50, "{refused} {same}");
        // A finished connection's packet samples, packed (`finished_in_file`), come back the
        // same; a live connection's, still open, are refused.
        let samples = TrackerOptions {
            keep_samples: true,
            ..diagnosis()
        };
        let sampled = every_connection(samples);
        let mut with_samples = 0;
        for c in &sampled {
            let back = round_trip(c, &mut histories).unwrap_or_else(|| panic!("{}", c.uid));
            assert_eq!(format!("{back:?}"), format!("{c:?}"));
            with_samples += usize::from(back.orig.samples.iter().next().is_some());
        }
        assert!(with_samples > 100, "{with_samples}");
        let mut open = super::super::Samples::default();
        let first = sampled[0].orig.samples.iter().next().expect("a sample");
        open.push(first);
        assert!(!open.put(&mut Vec::new()));
    }

    /// Bytes cut short never decode; bytes changed decode or not, without a panic.
    #[test]
    fn changed_or_cut_records_do_not_panic() {
        let mut histories = Histories::default();
        let all = every_connection(diagnosis());
        let capture: Arc<str> = Arc::from("x");
        for c in all.iter().step_by(97).take(20) {
            let mut w = Vec::new();
            assert!(put_connection(c, &mut w));
            for n in 0..w.len() {
                assert!(get_connection(&mut &w[..n], &capture, &mut histories).is_none());
            }
            for i in 0..w.len() {
                for x in [0x01, 0x80, 0xff] {
                    let mut b = w.clone();
                    b[i] ^= x;
                    let _ = get_connection(&mut &b[..], &capture, &mut histories);
                }
            }
        }
    }

    /// Through the store: to the temporary file past a block, or in memory without one; read
    /// back in order, every one the same. A file cut short under the store gives what came
    /// before the cut and an error.
    #[test]
    fn the_store_gives_back_what_it_kept() {
        let all = every_connection(diagnosis());
        let capture = all[0].capture.clone();
        let same = |c: &Connection, d: &Connection| {
            assert_eq!(
                format!(
                    "{:?}",
                    Connection {
                        capture: d.capture.clone(),
                        ..c.clone()
                    }
                ),
                format!("{d:?}")
            );
        };
        for mut store in [KeptStore::new(), KeptStore::in_memory()] {
            let on_disk = store.spill.file.is_some();
            let at: Vec<KeptAt> = all.iter().map(|c| store.push(c).expect("kept")).collect();
            assert_eq!(store.len(), all.len());
            assert!(
                !on_disk || store.spill.written > 0,
                "a block went to the file"
            );
            let (file, e) = store.seal(&capture);
            assert!(e.is_none(), "{e:?}");
            assert!(file.records.every_record_valid());
            // In any order, each as it was kept.
            for (c, at) in all.iter().zip(&at).rev() {
                assert!(file.holds(at));
                same(c, &file.read(at).expect("read back"));
            }
            assert_eq!(store.len(), 0);
            // Not another store's.
            let other = KeptAt {
                store: at[0].store + 1,
                ..at[0]
            };
            assert!(!file.holds(&other) && file.read(&other).is_err());
        }

        let mut store = KeptStore::new();
        let at: Vec<KeptAt> = all.iter().map(|c| store.push(c).expect("kept")).collect();
        store.spill.cut_file_in_half();
        let (file, e) = store.seal(&capture);
        assert!(e.is_some());
        let held = at.iter().filter(|a| file.holds(a)).count();
        assert!(held > 0 && held < all.len(), "{held}");
        for (c, at) in all.iter().zip(&at) {
            match file.holds(at) {
                true => same(c, &file.read(at).expect("read back")),
                false => assert!(file.read(at).is_err()),
            }
        }
        // What was held comes first: the file is trusted up to the cut.
        assert!(at[..held].iter().all(|a| file.holds(a)));
    }

    /// A store whose file stops taking writes halfway (a full disk): what the file holds and
    /// what stayed in memory after it are both read back, each record at the offset `push`
    /// gave, the file's first.
    #[test]
    fn a_store_whose_file_fails_halfway_reads_both_parts() {
        let all = every_connection(diagnosis());
        let capture = all[0].capture.clone();
        let mut store = KeptStore::new();
        assert!(store.spill.file.is_some(), "a temporary file");
        let half = all.len() / 2;
        let mut at: Vec<KeptAt> = all[..half].iter().map(|c| store.push(c).unwrap()).collect();
        store.spill.flush();
        let written = store.spill.written;
        assert!(written > 0);
        // What a failed write leaves (`Spill::flush`): the file kept, written no more.
        store.spill.failed = true;
        at.extend(all[half..].iter().map(|c| store.push(c).unwrap()));
        store.spill.flush();
        assert_eq!(store.spill.written, written, "nothing more to the file");
        assert!(!store.spill.blocks.is_empty(), "blocks kept in memory");
        let (file, e) = store.seal(&capture);
        assert!(e.is_none(), "{e:?}");
        assert!(at[..half].iter().all(|a| a.at < written));
        assert!(at[half..].iter().all(|a| a.at >= written));
        for (c, a) in all.iter().zip(&at) {
            let back = file.read(a).expect("read back");
            assert_eq!(back.uid, c.uid);
            assert_eq!(back.first_frame, c.first_frame);
        }
    }

    /// A tracker whose temporary file is cut short under it says so in its warnings; the
    /// connections it could not read back are read through their digests only.
    #[test]
    fn a_tracker_that_loses_kept_connections_says_so() {
        let all = every_connection(diagnosis());
        let opts = TrackerOptions {
            // Every connection kept whole, as if a rule might end each.
            digest: Some(|c| (crate::diagnose::rules::digest_of(c), true)),
            ..diagnosis()
        };
        let mut t = crate::tcp::Tracker::with_options("cut.pcap", opts);
        for c in &all {
            t.keep(c.clone(), None);
        }
        let kept = t.kept.as_mut().expect("a diagnosis' store");
        assert!(t.done.is_empty() && kept.len() == all.len());
        kept.spill.cut_file_in_half();
        let ((done, digests), warnings) = t.finish_kept();
        assert!(done.is_empty());
        assert_eq!(digests.len(), all.len());
        let held = digests
            .iter()
            .filter(|d| digests.whole(d).is_some())
            .count();
        assert!(held > 0 && held < all.len(), "{held}");
        assert!(digests.iter().all(|d| d.whole().is_some()));
        let w: Vec<String> = warnings.iter().map(|w| w.to_string()).collect();
        assert!(
            w.iter()
                .any(|w| w.contains("a rule reads whole could not be read back")),
            "{w:?}"
        );
    }
}
