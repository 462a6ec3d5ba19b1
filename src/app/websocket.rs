//! WebSocket framing (RFC 6455 §5), parsed from one direction of a reassembled TCP stream.
//!
//! One [`WsParser`] per direction is fed the stream's bytes as they come, split anywhere; it gives
//! the same [`WsEvent`]s whatever the split. Memory is fixed: a header buffer of at most 14 bytes
//! (RFC 6455 §5.2: 2 + 8 extended length + 4 masking key) and the first [`PREFIX_CAP`] unmasked
//! payload bytes of the current frame (enough for any valid control frame, §5.5, and to recognise
//! a SIP start line or a CRLF keep-alive, RFC 7118 §4 / RFC 5626 §3.5.1). The rest of a large
//! payload is skipped without being buffered.
//!
//! Protocol violations become [`WsEvent::Anomaly`] and parsing goes on; only a lost framing (a
//! gap in the stream, or a 64-bit length with its most significant bit set, §5.2) stops it.

use super::{Side, MAX_HEAD};
use crate::capture::Timestamp;
use serde::{Serialize, Serializer};
use std::cell::RefCell;

/// Unmasked payload bytes kept per frame by default. Control frames carry at most 125 (§5.5).
pub const PREFIX_CAP: usize = 128;
/// Largest prefix [`WsParser::set_prefix_cap`] accepts. A SIP head (RFC 7118: one SIP message
/// per WebSocket message) fits in a few KB; 4096 is a good value for `Sec-WebSocket-Protocol: sip`.
pub const MAX_PREFIX_CAP: usize = MAX_HEAD;
/// Control-frame times kept by [`WsStats`].
pub const MAX_CONTROL_TIMES: usize = 10_000;

// Compile-time check that a prefix never exceeds what callers expect of a "head".
const _: () = assert!(PREFIX_CAP <= MAX_PREFIX_CAP);
const _: () = assert!(MAX_PREFIX_CAP <= u32::MAX as usize);

/// Frame opcode (RFC 6455 §5.2, "Opcode: 4 bits"; registry in §11.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
    /// %x3-7 (further non-control) and %xB-F (further control): reserved.
    Reserved(u8),
}

impl Opcode {
    pub fn from_u8(op: u8) -> Opcode {
        match op & 0x0f {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            other => Opcode::Reserved(other),
        }
    }

    pub fn as_u8(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
            Opcode::Reserved(op) => op & 0x0f,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Opcode::Continuation => "continuation",
            Opcode::Text => "text",
            Opcode::Binary => "binary",
            Opcode::Close => "close",
            Opcode::Ping => "ping",
            Opcode::Pong => "pong",
            Opcode::Reserved(_) => "reserved",
        }
    }

    /// Control frames have the high bit of the opcode set (§5.5).
    pub fn is_control(self) -> bool {
        self.as_u8() & 0x8 != 0
    }
}

impl Serialize for Opcode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Opcode::Reserved(op) => s.serialize_str(&format!("reserved_{op:#x}")),
            other => s.serialize_str(other.name()),
        }
    }
}

/// One complete frame. Its payload is not kept beyond `payload_prefix`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WsFrame {
    /// Time of the packet that completed the frame (its last payload byte).
    pub ts: Timestamp,
    /// Time of the packet that carried the frame's first header byte.
    pub start_ts: Timestamp,
    /// Capture frame number where the header started.
    pub first_frame_no: u64,
    /// Capture frame number where the frame completed.
    pub last_frame_no: u64,
    /// Offset of the frame's first byte in this direction's stream, counted from the first byte
    /// given to the parser.
    pub stream_offset: u64,
    pub fin: bool,
    /// RSV1..3 as a 3-bit number (RSV1 = 4).
    pub rsv: u8,
    pub opcode: Opcode,
    pub masked: bool,
    /// Header length in bytes (2..=14).
    pub header_len: u8,
    pub payload_len: u64,
    /// First payload bytes (up to the parser's prefix cap, [`PREFIX_CAP`] by default),
    /// unmasked (§5.3). The payload is whole when `payload_prefix.len() == payload_len`.
    pub payload_prefix: Vec<u8>,
    /// For close frames (§5.5.1): status code if the body has one, and the reason (lossy UTF-8).
    pub close: Option<(Option<u16>, String)>,
}

/// A protocol violation, with the RFC 6455 rule it breaks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "anomaly")]
pub enum AnomalyKind {
    /// §5.1: a client MUST mask every frame it sends to the server.
    UnmaskedClientFrame,
    /// §5.1: a server MUST NOT mask any frame it sends to the client.
    MaskedServerFrame,
    /// §5.2: opcodes %x3-7 and %xB-F are reserved.
    ReservedOpcode { opcode: u8 },
    /// §5.2: RSV1-3 MUST be 0 unless an extension defining them was negotiated.
    /// (With an extension negotiated, RSV1 is allowed, e.g. permessage-deflate, RFC 7692 §6.)
    RsvWithoutExtension { rsv: u8 },
    /// §5.5: control frames MUST have a payload of 125 bytes or less.
    ControlFrameTooLong { len: u64 },
    /// §5.5: control frames MUST NOT be fragmented.
    FragmentedControlFrame,
    /// §5.4: a continuation frame needs a started fragmented message.
    ContinuationWithoutStart,
    /// §5.4: the fragments of one message MUST NOT be interleaved with another data message.
    NewMessageWhileFragmented,
    /// §5.2: "the minimal number of bytes MUST be used to encode the length".
    NonMinimalLength,
    /// §5.5.1: a close body is empty or starts with a 2-byte code; 1 byte is invalid.
    CloseOneBytePayload,
    /// §7.4.1/§7.4.2: codes < 1000, 1004–1006, 1015, 1016–2999 and ≥ 5000 are not sendable.
    InvalidCloseCode { code: u16 },
    /// §5.5.1: the close reason MUST be UTF-8.
    CloseReasonNotUtf8,
    /// §5.5.1: after sending a Close frame, an endpoint MUST NOT send more frames.
    FrameAfterClose,
    /// §5.2: the most significant bit of a 64-bit length MUST be 0. Framing is lost: the parser
    /// stops.
    LengthMsbSet,
}

impl AnomalyKind {
    /// Whether the parser stopped on it.
    pub fn is_fatal(&self) -> bool {
        matches!(self, AnomalyKind::LengthMsbSet)
    }
}

/// What the parser reports, in stream order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum WsEvent {
    Frame(WsFrame),
    Anomaly {
        ts: Timestamp,
        frame_no: u64,
        kind: AnomalyKind,
    },
}

/// Why a parser stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LostReason {
    /// The caller reported missing stream bytes ([`WsParser::gap`]).
    Gap,
    /// A header made the framing unreadable (e.g. [`AnomalyKind::LengthMsbSet`]).
    BadHeader,
}

/// Where and why a parser lost the framing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LostSync {
    pub reason: LostReason,
    /// Stream offset reached when sync was lost.
    pub stream_offset: u64,
    /// Opcode of the frame that was being read, if the loss happened inside one.
    pub in_frame: Option<Opcode>,
}

/// The frame being read: its header. Its payload prefix is unmasked into the push's scratch
/// buffer, and kept in [`WsParser::partial`] only while the frame continues in a later push.
#[derive(Clone, Copy, Debug)]
struct Current {
    start_ts: Timestamp,
    first_frame_no: u64,
    stream_offset: u64,
    payload_len: u64,
    /// Payload bytes read so far (also the masking-key index, §5.3).
    pos: u64,
    mask: Option<[u8; 4]>,
    fin: bool,
    rsv: u8,
    opcode: Opcode,
    masked: bool,
    header_len: u8,
    /// Prefix cap for this frame (at most `MAX_PREFIX_CAP`).
    cap: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Collecting header bytes into `hdr`.
    Header,
    /// Reading the payload of `cur`.
    Payload,
    /// Framing lost; bytes are counted and ignored.
    Lost,
}

/// Receives what a parser finds, in stream order. A `Vec<WsEvent>` collects owned events; the
/// session handles them as they come, so that a frame costs no allocation.
pub trait WsSink {
    /// A complete frame. Its `payload_prefix` buffer is reused once the call returns.
    fn frame(&mut self, frame: &WsFrame);
    fn anomaly(&mut self, ts: Timestamp, frame_no: u64, kind: AnomalyKind);
}

impl WsSink for Vec<WsEvent> {
    fn frame(&mut self, frame: &WsFrame) {
        self.push(WsEvent::Frame(frame.clone()));
    }

    fn anomaly(&mut self, ts: Timestamp, frame_no: u64, kind: AnomalyKind) {
        self.push(WsEvent::Anomaly { ts, frame_no, kind });
    }
}

thread_local! {
    /// Where payload prefixes are unmasked during a push, shared by the thread's parsers: a frame
    /// that starts and ends within one push (nearly all of them: TCP segments usually carry
    /// whole frames) costs neither an allocation nor memory per connection.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Streaming frame parser for one direction of one connection.
#[derive(Debug)]
pub struct WsParser {
    from_client: bool,
    extensions_negotiated: bool,
    /// At most [`MAX_PREFIX_CAP`]: 32 bits, beside the flags above.
    prefix_cap: u32,
    state: State,
    cur: Current,
    /// The prefix so far of a frame cut by the end of a push (empty otherwise).
    /// Boxed (8 bytes, not 24): two parsers a live WebSocket connection, and a frame is
    /// rarely cut by the end of a segment.
    partial: crate::boxed_list::BoxedList<u8>,
    hdr: [u8; 14],
    hdr_len: u8,
    /// A fragmented data message is open (§5.4).
    in_message: bool,
    /// After a resync we don't know whether a message was open: don't flag the first
    /// continuation.
    message_state_unknown: bool,
    close_sent: bool,
    /// Stream bytes consumed (including ignored ones).
    offset: u64,
    frames: u64,
    ignored_bytes: u64,
    /// Boxed: rare, and every parser holds the slot (two a WebSocket connection).
    lost: Option<Box<LostSync>>,
}

impl WsParser {
    /// A parser for the bytes sent by the client (`from_client`) or by the server.
    pub fn new(from_client: bool) -> Self {
        WsParser {
            from_client,
            extensions_negotiated: false,
            prefix_cap: PREFIX_CAP as u32,
            state: State::Header,
            cur: Current {
                start_ts: Timestamp::default(),
                first_frame_no: 0,
                stream_offset: 0,
                payload_len: 0,
                pos: 0,
                mask: None,
                fin: false,
                rsv: 0,
                opcode: Opcode::Continuation,
                masked: false,
                header_len: 0,
                cap: PREFIX_CAP as u32,
            },
            partial: Default::default(),
            hdr: [0; 14],
            hdr_len: 0,
            in_message: false,
            message_state_unknown: false,
            close_sent: false,
            offset: 0,
            frames: 0,
            ignored_bytes: 0,
            lost: None,
        }
    }

    /// Same, telling whether the handshake negotiated an extension
    /// (`Sec-WebSocket-Extensions` in the 101), which may use RSV bits (§5.2, §9).
    pub fn with_extensions(from_client: bool, extensions_negotiated: bool) -> Self {
        let mut p = Self::new(from_client);
        p.extensions_negotiated = extensions_negotiated;
        p
    }

    pub fn set_extensions_negotiated(&mut self, yes: bool) {
        self.extensions_negotiated = yes;
    }

    /// Keeps up to `cap` payload bytes per frame (clamped to [`MAX_PREFIX_CAP`]), e.g. 4096 on
    /// a SIP-over-WebSocket connection so that SIP heads can be parsed. Applies from the next
    /// frame.
    pub fn set_prefix_cap(&mut self, cap: usize) {
        self.prefix_cap = cap.min(MAX_PREFIX_CAP) as u32;
    }

    pub fn side(&self) -> Side {
        Side::from_client(self.from_client)
    }

    /// Complete frames seen.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Stream bytes given so far.
    pub fn stream_offset(&self) -> u64 {
        self.offset
    }

    /// Bytes ignored after the framing was lost.
    pub fn ignored_bytes(&self) -> u64 {
        self.ignored_bytes
    }

    /// Set once the framing is lost.
    pub fn lost_sync(&self) -> Option<&LostSync> {
        self.lost.as_deref()
    }

    /// Whether a frame is half read (header or payload).
    pub fn mid_frame(&self) -> bool {
        match self.state {
            State::Header => self.hdr_len > 0,
            State::Payload => true,
            State::Lost => false,
        }
    }

    /// The stream lost bytes: whatever frame was being read is dropped, and further bytes are
    /// ignored (counted in [`ignored_bytes`](Self::ignored_bytes)) until [`resync`](Self::resync).
    pub fn gap(&mut self) {
        if self.lost.is_none() {
            self.lost = Some(Box::new(LostSync {
                reason: LostReason::Gap,
                stream_offset: self.offset,
                in_frame: self.current_opcode(),
            }));
        }
        self.state = State::Lost;
        self.hdr_len = 0;
        self.partial = Default::default();
    }

    /// The caller knows the next byte it pushes starts a frame (e.g. a segment after a gap that
    /// begins with a plausible header): parse again. `lost_sync` stays set as a record.
    pub fn resync(&mut self) {
        self.state = State::Header;
        self.hdr_len = 0;
        self.message_state_unknown = true;
    }

    fn current_opcode(&self) -> Option<Opcode> {
        match self.state {
            State::Payload => Some(self.cur.opcode),
            State::Header if self.hdr_len > 0 => Some(Opcode::from_u8(self.hdr[0])),
            _ => None,
        }
    }

    /// Feeds stream bytes carried by capture frame `frame_no` at time `ts`.
    pub fn push(&mut self, data: &[u8], ts: Timestamp, frame_no: u64, out: &mut impl WsSink) {
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => self.push_with(data, ts, frame_no, out, &mut scratch),
            // A sink that feeds another parser from its callback: a buffer of its own.
            Err(_) => self.push_with(data, ts, frame_no, out, &mut Vec::new()),
        });
    }

    fn push_with(
        &mut self,
        data: &[u8],
        ts: Timestamp,
        frame_no: u64,
        out: &mut impl WsSink,
        scratch: &mut Vec<u8>,
    ) {
        scratch.clear();
        if !self.partial.is_empty() {
            scratch.extend_from_slice(&self.partial);
            self.partial = Default::default();
        }
        let mut rest = data;
        while !rest.is_empty() {
            match self.state {
                State::Lost => {
                    self.ignored_bytes = self.ignored_bytes.saturating_add(rest.len() as u64);
                    self.offset = self.offset.saturating_add(rest.len() as u64);
                    return;
                }
                State::Header => {
                    if self.hdr_len == 0 {
                        // Where the frame starts (`cur` is free until the header is in).
                        self.cur.start_ts = ts;
                        self.cur.first_frame_no = frame_no;
                    }
                    let need = self.header_need();
                    let have = usize::from(self.hdr_len);
                    let take = need.saturating_sub(have).min(rest.len());
                    let (head, tail) = rest.split_at(take);
                    if let Some(dst) = self.hdr.get_mut(have..have + take) {
                        dst.copy_from_slice(head);
                    }
                    // At most the 14 bytes of `hdr`.
                    self.hdr_len += take as u8;
                    self.offset = self.offset.saturating_add(take as u64);
                    rest = tail;
                    // With the first two bytes in, the full header length is known (§5.2).
                    if self.hdr_len >= 2 && usize::from(self.hdr_len) == self.header_need() {
                        self.header_complete(ts, frame_no, out, scratch);
                    }
                }
                State::Payload => {
                    let cur = &mut self.cur;
                    let remaining = cur.payload_len.saturating_sub(cur.pos);
                    let take = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(rest.len());
                    let (chunk, tail) = rest.split_at(take);
                    // Keep (unmasked, §5.3) only what still fits in the prefix.
                    let room = (cur.cap as usize).saturating_sub(scratch.len());
                    let kept = chunk.get(..room.min(chunk.len())).unwrap_or(chunk);
                    match cur.mask {
                        Some(key) => unmask_into(scratch, kept, key, (cur.pos % 4) as usize),
                        None => scratch.extend_from_slice(kept),
                    }
                    cur.pos = cur.pos.saturating_add(take as u64);
                    self.offset = self.offset.saturating_add(take as u64);
                    rest = tail;
                    if self.cur.pos >= self.cur.payload_len {
                        self.finish_frame(ts, frame_no, out, scratch);
                    }
                }
            }
        }
        // The frame goes on in the next push: keep its prefix so far.
        if self.state == State::Payload && !scratch.is_empty() {
            self.partial = scratch.as_slice().to_vec().into();
        }
    }

    /// Header length implied by the bytes so far: 2 until the second byte is in, then
    /// 2 + extended length (0, 2 or 8) + masking key (0 or 4) (§5.2).
    fn header_need(&self) -> usize {
        if self.hdr_len < 2 {
            return 2;
        }
        let b1 = self.hdr[1];
        let ext = match b1 & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
        2 + ext + mask
    }

    fn anomaly(&self, out: &mut impl WsSink, ts: Timestamp, frame_no: u64, kind: AnomalyKind) {
        out.anomaly(ts, frame_no, kind);
    }

    /// All header bytes are in: decode them, check the header-level rules, start the payload.
    fn header_complete(
        &mut self,
        ts: Timestamp,
        frame_no: u64,
        out: &mut impl WsSink,
        scratch: &mut Vec<u8>,
    ) {
        let hdr = self.hdr;
        let header_len = self.hdr_len;
        self.hdr_len = 0;
        let b0 = hdr[0];
        let b1 = hdr[1];
        let fin = b0 & 0x80 != 0;
        let rsv = (b0 >> 4) & 0x7;
        let opcode = Opcode::from_u8(b0);
        let masked = b1 & 0x80 != 0;
        // Payload length: 7 bits, or 126 + 16 bits, or 127 + 64 bits, network order (§5.2).
        let (payload_len, ext) = match b1 & 0x7f {
            126 => (u64::from(u16::from_be_bytes([hdr[2], hdr[3]])), 2),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&hdr[2..10]);
                (u64::from_be_bytes(b), 8)
            }
            n => (u64::from(n), 0),
        };
        if payload_len >> 63 != 0 {
            self.anomaly(out, ts, frame_no, AnomalyKind::LengthMsbSet);
            self.lost = Some(Box::new(LostSync {
                reason: LostReason::BadHeader,
                stream_offset: self.offset,
                in_frame: Some(opcode),
            }));
            self.state = State::Lost;
            return;
        }
        if (ext == 2 && payload_len < 126) || (ext == 8 && payload_len <= 0xffff) {
            self.anomaly(out, ts, frame_no, AnomalyKind::NonMinimalLength);
        }
        let mask = if masked {
            let at = 2 + ext;
            Some([hdr[at], hdr[at + 1], hdr[at + 2], hdr[at + 3]])
        } else {
            None
        };

        // §5.1: masking by direction.
        if self.from_client && !masked {
            self.anomaly(out, ts, frame_no, AnomalyKind::UnmaskedClientFrame);
        }
        if !self.from_client && masked {
            self.anomaly(out, ts, frame_no, AnomalyKind::MaskedServerFrame);
        }
        // §5.2: RSV bits need an extension; one negotiated extension may use RSV1.
        let allowed_rsv = if self.extensions_negotiated { 0b100 } else { 0 };
        if rsv & !allowed_rsv != 0 {
            self.anomaly(out, ts, frame_no, AnomalyKind::RsvWithoutExtension { rsv });
        }
        if let Opcode::Reserved(op) = opcode {
            self.anomaly(
                out,
                ts,
                frame_no,
                AnomalyKind::ReservedOpcode { opcode: op },
            );
        }
        if self.close_sent {
            self.anomaly(out, ts, frame_no, AnomalyKind::FrameAfterClose);
        }
        if opcode.is_control() {
            // §5.5: control frames are short and whole; they may come between fragments (§5.4).
            if payload_len > 125 {
                self.anomaly(
                    out,
                    ts,
                    frame_no,
                    AnomalyKind::ControlFrameTooLong { len: payload_len },
                );
            }
            if !fin {
                self.anomaly(out, ts, frame_no, AnomalyKind::FragmentedControlFrame);
            }
        } else {
            // §5.4: fragmentation of data messages.
            match opcode {
                Opcode::Continuation => {
                    if !self.in_message && !self.message_state_unknown {
                        self.anomaly(out, ts, frame_no, AnomalyKind::ContinuationWithoutStart);
                    }
                    self.in_message = !fin;
                }
                Opcode::Text | Opcode::Binary => {
                    if self.in_message {
                        self.anomaly(out, ts, frame_no, AnomalyKind::NewMessageWhileFragmented);
                    }
                    self.in_message = !fin;
                }
                _ => {}
            }
            self.message_state_unknown = false;
        }
        if opcode == Opcode::Close {
            self.close_sent = true;
        }

        self.cur = Current {
            start_ts: self.cur.start_ts,
            first_frame_no: self.cur.first_frame_no,
            stream_offset: self.offset.saturating_sub(header_len as u64),
            payload_len,
            pos: 0,
            mask,
            fin,
            rsv,
            opcode,
            masked,
            header_len,
            cap: self.prefix_cap,
        };
        self.state = State::Payload;
        if payload_len == 0 {
            self.finish_frame(ts, frame_no, out, scratch);
        }
    }

    /// The last payload byte is in: check the close body (§5.5.1, §7.4) and emit the frame,
    /// whose prefix is `scratch` (emptied for the next frame).
    fn finish_frame(
        &mut self,
        ts: Timestamp,
        frame_no: u64,
        out: &mut impl WsSink,
        scratch: &mut Vec<u8>,
    ) {
        if self.state != State::Payload {
            return;
        }
        self.state = State::Header;
        let cur = self.cur;
        let mut close = None;
        if cur.opcode == Opcode::Close {
            let p = scratch.as_slice();
            close = Some(match p.get(..2) {
                None => {
                    if cur.payload_len == 1 {
                        self.anomaly(out, ts, frame_no, AnomalyKind::CloseOneBytePayload);
                    }
                    (None, String::new())
                }
                Some(code_bytes) => {
                    let code = u16::from_be_bytes([code_bytes[0], code_bytes[1]]);
                    if !close_code_sendable(code) {
                        self.anomaly(out, ts, frame_no, AnomalyKind::InvalidCloseCode { code });
                    }
                    let reason = p.get(2..).unwrap_or(&[]);
                    // Only a whole reason can be judged; a cut one may end mid-character.
                    let whole = cur.payload_len == p.len() as u64;
                    if whole && std::str::from_utf8(reason).is_err() {
                        self.anomaly(out, ts, frame_no, AnomalyKind::CloseReasonNotUtf8);
                    }
                    (Some(code), String::from_utf8_lossy(reason).into_owned())
                }
            });
        }
        let frame = WsFrame {
            ts,
            start_ts: cur.start_ts,
            first_frame_no: cur.first_frame_no,
            last_frame_no: frame_no,
            stream_offset: cur.stream_offset,
            fin: cur.fin,
            rsv: cur.rsv,
            opcode: cur.opcode,
            masked: cur.masked,
            header_len: cur.header_len,
            payload_len: cur.payload_len,
            payload_prefix: std::mem::take(scratch),
            close,
        };
        self.frames = self.frames.saturating_add(1);
        out.frame(&frame);
        // The buffer goes back for the next frame.
        *scratch = frame.payload_prefix;
        scratch.clear();
    }
}

/// Whether a status code may appear in a Close frame (§7.4.1, §7.4.2, IANA registry §11.7):
/// 1000–1003, 1007–1014, and 3000–4999. 1004 is reserved; 1005, 1006 and 1015 MUST NOT be sent;
/// 1016–2999 are reserved for future revisions; < 1000 and ≥ 5000 are unused.
pub fn close_code_sendable(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Name of a close code (§7.4.1 and the IANA "WebSocket Close Code Number Registry").
pub fn close_code_name(code: u16) -> &'static str {
    match code {
        1000 => "normal_closure",
        1001 => "going_away",
        1002 => "protocol_error",
        1003 => "unsupported_data",
        1004 => "reserved",
        1005 => "no_status_received",
        1006 => "abnormal_closure",
        1007 => "invalid_payload_data",
        1008 => "policy_violation",
        1009 => "message_too_big",
        1010 => "mandatory_extension",
        1011 => "internal_error",
        1012 => "service_restart",
        1013 => "try_again_later",
        1014 => "bad_gateway",
        1015 => "tls_handshake",
        3000..=3999 => "registered",
        4000..=4999 => "private_use",
        _ => "invalid",
    }
}

/// Frame counts for one direction. Counted in 32 bits, saturating: a live connection keeps
/// two of these for `flows` (as 64-bit counts they made its stats 80 bytes larger, 20 000
/// times over in issue 8's synth), and 4 billion frames on one connection would take a capture
/// of tens of GB. The bytes are counted in 64.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DirStats {
    pub frames: u32,
    pub continuation: u32,
    pub text: u32,
    pub binary: u32,
    pub close: u32,
    pub ping: u32,
    pub pong: u32,
    pub reserved: u32,
    pub masked: u32,
    pub unmasked: u32,
    pub payload_bytes: u64,
    pub anomalies: u32,
}

/// One Close frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CloseInfo {
    pub by: Side,
    pub ts: Timestamp,
    pub frame_no: u64,
    pub code: Option<u16>,
    pub reason: String,
}

/// When a control frame (ping/pong/close) was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ControlTime {
    pub ts: Timestamp,
    pub by: Side,
    pub opcode: Opcode,
    pub frame_no: u64,
}

/// `dst` extended with `src` unmasked (RFC 6455 §5.3: octet `i` of the payload XOR octet
/// `i % 4` of the key), `src` starting at payload octet `start`. Eight octets at a time: one at a
/// time, with the key's index taken modulo 4 for each, it was ~1 % of a diagnosis (every
/// client frame's SIP text is unmasked).
fn unmask_into(dst: &mut Vec<u8>, src: &[u8], key: [u8; 4], start: usize) {
    let k = |i: usize| key[(start + i) % 4];
    let key4 = [k(0), k(1), k(2), k(3)];
    let key8 = u64::from_ne_bytes([
        key4[0], key4[1], key4[2], key4[3], key4[0], key4[1], key4[2], key4[3],
    ]);
    let from = dst.len();
    dst.extend_from_slice(src);
    let mut words = dst[from..].chunks_exact_mut(8);
    for w in &mut words {
        let x = u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]) ^ key8;
        w.copy_from_slice(&x.to_ne_bytes());
    }
    // The rest starts at a multiple of 8 from `src`'s start, so at `key4[0]`.
    for (i, b) in words.into_remainder().iter_mut().enumerate() {
        *b ^= key4[i % 4];
    }
}

/// Per-connection WebSocket summary, built from both parsers' events with [`WsStats::add`]
/// (in any order: the close handshake is ordered by time, §7.1.2 / §5.5.1).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WsStats {
    pub client: DirStats,
    pub server: DirStats,
    /// The first Close frame (who started the closing handshake).
    pub first_close: Option<CloseInfo>,
    /// The other side's Close, if it answered (§5.5.1: the endpoint receiving a Close sends one
    /// back).
    pub close_reply: Option<CloseInfo>,
    /// Control frame times, first [`MAX_CONTROL_TIMES`]. The tracker keeps them only with
    /// `TrackerOptions::detail` (`flows --detail`), as the events: no report prints them, and
    /// they would grow with a connection's age ([`WsStats::count_frame`]).
    pub control_times: Vec<ControlTime>,
    pub control_times_dropped: u64,
}

impl WsStats {
    /// Builds the summary from each direction's events.
    pub fn from_events(client: &[WsEvent], server: &[WsEvent]) -> Self {
        let mut s = WsStats::default();
        for e in client {
            s.add(true, e);
        }
        for e in server {
            s.add(false, e);
        }
        s.control_times.sort_by_key(|c| (c.ts, c.frame_no));
        s
    }

    /// Adds one event from the client's (`from_client`) or the server's parser.
    pub fn add(&mut self, from_client: bool, ev: &WsEvent) {
        match ev {
            WsEvent::Anomaly { .. } => self.add_anomaly(from_client),
            WsEvent::Frame(f) => self.add_frame(from_client, f),
        }
    }

    /// Counts one anomaly of the client's (`from_client`) or the server's parser.
    pub fn add_anomaly(&mut self, from_client: bool) {
        let d = if from_client {
            &mut self.client
        } else {
            &mut self.server
        };
        d.anomalies = d.anomalies.saturating_add(1);
    }

    /// Adds one frame of the client's (`from_client`) or the server's parser, and its time if
    /// it is a control frame.
    pub fn add_frame(&mut self, from_client: bool, f: &WsFrame) {
        self.count_frame(from_client, f);
        if matches!(f.opcode, Opcode::Close | Opcode::Ping | Opcode::Pong) {
            if self.control_times.len() < MAX_CONTROL_TIMES {
                self.control_times.push(ControlTime {
                    ts: f.ts,
                    by: Side::from_client(from_client),
                    opcode: f.opcode,
                    frame_no: f.last_frame_no,
                });
            } else {
                self.control_times_dropped = self.control_times_dropped.saturating_add(1);
            }
        }
    }

    /// Counts one frame, as `add_frame`, without keeping a control frame's time: a live
    /// connection's stats then stay the same size however long it lives.
    pub fn count_frame(&mut self, from_client: bool, f: &WsFrame) {
        let by = Side::from_client(from_client);
        let d = if from_client {
            &mut self.client
        } else {
            &mut self.server
        };
        d.frames = d.frames.saturating_add(1);
        d.payload_bytes = d.payload_bytes.saturating_add(f.payload_len);
        if f.masked {
            d.masked = d.masked.saturating_add(1);
        } else {
            d.unmasked = d.unmasked.saturating_add(1);
        }
        let counter = match f.opcode {
            Opcode::Continuation => &mut d.continuation,
            Opcode::Text => &mut d.text,
            Opcode::Binary => &mut d.binary,
            Opcode::Close => &mut d.close,
            Opcode::Ping => &mut d.ping,
            Opcode::Pong => &mut d.pong,
            Opcode::Reserved(_) => &mut d.reserved,
        };
        *counter = counter.saturating_add(1);
        if let Some((code, reason)) = &f.close {
            let info = CloseInfo {
                by,
                ts: f.ts,
                frame_no: f.last_frame_no,
                code: *code,
                reason: reason.clone(),
            };
            self.note_close(info);
        }
    }

    fn note_close(&mut self, info: CloseInfo) {
        match &self.first_close {
            None => self.first_close = Some(info),
            Some(first) if first.by == info.by => {} // a repeated Close from the same side
            Some(first) => {
                let earlier = (info.ts, info.frame_no) < (first.ts, first.frame_no);
                if self.close_reply.is_none() {
                    if earlier {
                        self.close_reply = self.first_close.replace(info);
                    } else {
                        self.close_reply = Some(info);
                    }
                }
            }
        }
    }

    /// Who sent the first Close.
    pub fn closed_first_by(&self) -> Option<Side> {
        self.first_close.as_ref().map(|c| c.by)
    }

    /// Both sides sent a Close: the closing handshake completed (§7.1.2).
    pub fn both_sent_close(&self) -> bool {
        self.first_close.is_some() && self.close_reply.is_some()
    }
}

// Here, where the private fields are: a live connection silent for minutes is parked encoded
// (`tcp::park`). One whose parser lost the framing stays in memory (it is rare).
crate::tcp::kept::codec_enum!(State {
    Header,
    Payload,
    Lost
});
crate::tcp::kept::codec_refused!(LostSync);
crate::tcp::kept::codec_struct!(Current {
    start_ts,
    first_frame_no,
    stream_offset,
    payload_len,
    pos,
    mask,
    fin,
    rsv,
    opcode,
    masked,
    header_len,
    cap
});
crate::tcp::kept::codec_struct!(WsParser {
    from_client,
    extensions_negotiated,
    prefix_cap,
    state,
    cur,
    partial,
    hdr,
    hdr_len,
    in_message,
    message_state_unknown,
    close_sent,
    offset,
    frames,
    ignored_bytes,
    lost
});

/// Its 4-bit value (`as_u8`); refused for a `Reserved` that would not read back as itself.
impl crate::tcp::kept::Codec for Opcode {
    fn put(&self, w: &mut Vec<u8>) -> bool {
        let b = self.as_u8();
        Opcode::from_u8(b) == *self && crate::tcp::kept::Codec::put(&b, w)
    }
    fn get(r: &mut &[u8]) -> Option<Self> {
        let b = <u8 as crate::tcp::kept::Codec>::get(r)?;
        (b < 16).then(|| Opcode::from_u8(b))
    }
}

#[cfg(test)]
mod tests {
    proptest::proptest! {
        /// Eight octets at a time, as one at a time: any length, any place in the payload,
        /// after what the list already held.
        #[test]
        fn unmasking_by_words_is_unmasking_by_octets(
            before in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..5),
            src in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
            key in proptest::prelude::any::<[u8; 4]>(),
            start in 0usize..9,
        ) {
            let mut words = before.clone();
            super::unmask_into(&mut words, &src, key, start);
            let mut octets = before;
            octets.extend(src.iter().enumerate().map(|(i, b)| b ^ key[(start + i) % 4]));
            proptest::prop_assert_eq!(words, octets);
        }
    }

    use super::*;
    use proptest::prelude::*;

    const TS: Timestamp = Timestamp(1_000);

    fn run(from_client: bool, bytes: &[u8]) -> Vec<WsEvent> {
        let mut p = WsParser::new(from_client);
        let mut out = Vec::new();
        p.push(bytes, TS, 1, &mut out);
        out
    }

    fn frames(ev: &[WsEvent]) -> Vec<&WsFrame> {
        ev.iter()
            .filter_map(|e| match e {
                WsEvent::Frame(f) => Some(f),
                _ => None,
            })
            .collect()
    }

    fn anomalies(ev: &[WsEvent]) -> Vec<&AnomalyKind> {
        ev.iter()
            .filter_map(|e| match e {
                WsEvent::Anomaly { kind, .. } => Some(kind),
                _ => None,
            })
            .collect()
    }

    /// Serialises a frame (§5.2) with the minimal length encoding.
    fn encode(fin: bool, rsv: u8, op: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![(u8::from(fin) << 7) | ((rsv & 7) << 4) | (op & 0x0f)];
        let m = if mask.is_some() { 0x80 } else { 0 };
        let n = payload.len();
        if n < 126 {
            v.push(m | n as u8);
        } else if n <= 0xffff {
            v.push(m | 126);
            v.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            v.push(m | 127);
            v.extend_from_slice(&(n as u64).to_be_bytes());
        }
        match mask {
            Some(key) => {
                v.extend_from_slice(&key);
                v.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
            }
            None => v.extend_from_slice(payload),
        }
        v
    }

    // RFC 6455 §5.7 examples, byte for byte.
    const HELLO_UNMASKED: &[u8] = &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    const HELLO_MASKED: &[u8] = &[
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    const HEL_LO: &[u8] = &[0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f];
    const PING_HELLO: &[u8] = &[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    const PONG_HELLO_MASKED: &[u8] = &[
        0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];

    #[test]
    fn rfc_single_frame_unmasked_text() {
        let ev = run(false, HELLO_UNMASKED);
        assert!(anomalies(&ev).is_empty());
        let f = frames(&ev);
        assert_eq!(f.len(), 1);
        assert!(f[0].fin);
        assert_eq!(f[0].opcode, Opcode::Text);
        assert!(!f[0].masked);
        assert_eq!(f[0].payload_len, 5);
        assert_eq!(f[0].payload_prefix, b"Hello");
        // The same frame from a client breaks §5.1.
        assert_eq!(
            anomalies(&run(true, HELLO_UNMASKED)),
            vec![&AnomalyKind::UnmaskedClientFrame]
        );
    }

    #[test]
    fn rfc_single_frame_masked_text() {
        let ev = run(true, HELLO_MASKED);
        assert!(anomalies(&ev).is_empty());
        let f = frames(&ev);
        assert!(f[0].masked);
        assert_eq!(f[0].header_len, 6);
        assert_eq!(f[0].payload_prefix, b"Hello");
        assert_eq!(
            anomalies(&run(false, HELLO_MASKED)),
            vec![&AnomalyKind::MaskedServerFrame]
        );
    }

    #[test]
    fn rfc_fragmented_text() {
        let ev = run(false, HEL_LO);
        assert!(anomalies(&ev).is_empty(), "{ev:?}");
        let f = frames(&ev);
        assert_eq!(f.len(), 2);
        assert_eq!((f[0].opcode, f[0].fin), (Opcode::Text, false));
        assert_eq!(f[0].payload_prefix, b"Hel");
        assert_eq!((f[1].opcode, f[1].fin), (Opcode::Continuation, true));
        assert_eq!(f[1].payload_prefix, b"lo");
        assert_eq!(f[1].stream_offset, 5);
    }

    #[test]
    fn rfc_ping_and_masked_pong() {
        let ev = run(false, PING_HELLO);
        assert_eq!(frames(&ev)[0].opcode, Opcode::Ping);
        assert_eq!(frames(&ev)[0].payload_prefix, b"Hello");
        let ev = run(true, PONG_HELLO_MASKED);
        assert!(anomalies(&ev).is_empty());
        assert_eq!(frames(&ev)[0].opcode, Opcode::Pong);
        assert_eq!(frames(&ev)[0].payload_prefix, b"Hello");
    }

    #[test]
    fn rfc_256_byte_and_64k_binary() {
        // §5.7: "0x82 0x7E 0x0100 [256 bytes of binary data]".
        let mut b = vec![0x82, 0x7e, 0x01, 0x00];
        b.extend(std::iter::repeat_n(0xab, 256));
        // §5.7: "0x82 0x7F 0x0000000000010000 [65536 bytes of binary data]".
        b.extend_from_slice(&[0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]);
        b.extend(std::iter::repeat_n(0xcd, 65536));
        let ev = run(false, &b);
        assert!(anomalies(&ev).is_empty());
        let f = frames(&ev);
        assert_eq!(f.len(), 2);
        assert_eq!((f[0].payload_len, f[0].header_len), (256, 4));
        assert_eq!((f[1].payload_len, f[1].header_len), (65536, 10));
        assert_eq!(f[1].payload_prefix.len(), PREFIX_CAP);
        assert_eq!(f[1].stream_offset, 260);
    }

    #[test]
    fn close_with_code_and_reason() {
        let mut body = 1000u16.to_be_bytes().to_vec();
        body.extend_from_slice(b"bye");
        let ev = run(true, &encode(true, 0, 8, Some([1, 2, 3, 4]), &body));
        assert!(anomalies(&ev).is_empty());
        assert_eq!(frames(&ev)[0].close, Some((Some(1000), "bye".to_string())));

        let mut body = 1009u16.to_be_bytes().to_vec();
        body.extend_from_slice(b"over size limit (4 > 2 bytes)");
        let ev = run(false, &encode(true, 0, 8, None, &body));
        assert!(anomalies(&ev).is_empty());
        assert_eq!(
            frames(&ev)[0].close,
            Some((Some(1009), "over size limit (4 > 2 bytes)".to_string()))
        );
        assert_eq!(close_code_name(1009), "message_too_big");

        // Empty close body: no code (§5.5.1).
        let ev = run(false, &[0x88, 0x00]);
        assert_eq!(frames(&ev)[0].close, Some((None, String::new())));
    }

    #[test]
    fn bad_close_bodies() {
        let ev = run(false, &[0x88, 0x01, 0x03]);
        assert_eq!(anomalies(&ev), vec![&AnomalyKind::CloseOneBytePayload]);
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            let ev = run(false, &encode(true, 0, 8, None, &code.to_be_bytes()));
            assert_eq!(
                anomalies(&ev),
                vec![&AnomalyKind::InvalidCloseCode { code }],
                "{code}"
            );
        }
        for code in [1000u16, 1001, 1011, 1012, 1013, 1014, 3000, 4999] {
            let ev = run(false, &encode(true, 0, 8, None, &code.to_be_bytes()));
            assert!(anomalies(&ev).is_empty(), "{code}");
        }
        let ev = run(false, &encode(true, 0, 8, None, &[0x03, 0xe8, 0xff, 0xfe]));
        assert_eq!(anomalies(&ev), vec![&AnomalyKind::CloseReasonNotUtf8]);
    }

    #[test]
    fn oversized_control_frame_is_an_anomaly() {
        let payload = vec![7u8; 258];
        let mut b = encode(true, 0, 9, None, &payload);
        b.extend_from_slice(HELLO_UNMASKED);
        let ev = run(false, &b);
        assert_eq!(
            anomalies(&ev),
            vec![&AnomalyKind::ControlFrameTooLong { len: 258 }]
        );
        let f = frames(&ev);
        assert_eq!(f.len(), 2, "parsing goes on");
        assert_eq!(f[0].payload_prefix.len(), PREFIX_CAP);
        assert_eq!(f[1].payload_prefix, b"Hello");
    }

    #[test]
    fn ping_between_fragments_is_fine() {
        let mut b = encode(false, 0, 1, None, b"Hel");
        b.extend(encode(true, 0, 9, None, b""));
        b.extend(encode(true, 0, 0, None, b"lo"));
        let ev = run(false, &b);
        assert!(anomalies(&ev).is_empty(), "{ev:?}");
        assert_eq!(frames(&ev).len(), 3);
    }

    #[test]
    fn fragmentation_and_header_anomalies() {
        let mut b = encode(true, 0, 0, None, b"x"); // continuation, nothing open
        b.extend(encode(false, 0, 1, None, b"a")); // opens a message
        b.extend(encode(true, 0, 2, None, b"b")); // new message while open
        b.extend(encode(false, 0, 9, None, b"")); // fragmented ping
        b.extend(encode(true, 0, 3, None, b"")); // reserved opcode
        b.extend(encode(true, 4, 1, None, b"")); // RSV1 without extension
        b.extend([0x81, 126, 0, 5, 1, 2, 3, 4, 5]); // non-minimal length
        let ev = run(false, &b);
        assert_eq!(
            anomalies(&ev),
            vec![
                &AnomalyKind::ContinuationWithoutStart,
                &AnomalyKind::NewMessageWhileFragmented,
                &AnomalyKind::FragmentedControlFrame,
                &AnomalyKind::ReservedOpcode { opcode: 3 },
                &AnomalyKind::RsvWithoutExtension { rsv: 4 },
                &AnomalyKind::NonMinimalLength,
            ]
        );
        assert_eq!(frames(&ev).len(), 7);
        // RSV1 is fine once an extension (permessage-deflate) was negotiated.
        let mut p = WsParser::with_extensions(false, true);
        let mut out = Vec::new();
        p.push(&encode(true, 4, 1, None, b"z"), TS, 1, &mut out);
        assert!(anomalies(&out).is_empty());
    }

    #[test]
    fn larger_prefix_for_sip() {
        let sip = b"OPTIONS sip:x SIP/2.0\r\n".repeat(20);
        let b = encode(true, 0, 1, Some([5, 6, 7, 8]), &sip);
        let mut p = WsParser::new(true);
        p.set_prefix_cap(4096);
        let mut out = Vec::new();
        p.push(&b, TS, 1, &mut out);
        assert_eq!(frames(&out)[0].payload_prefix, sip);
        p.set_prefix_cap(usize::MAX);
        assert_eq!(p.prefix_cap as usize, MAX_PREFIX_CAP);
    }

    /// A sink that feeds a second parser from inside the first one's callback: the shared
    /// scratch buffer is busy, so the inner push uses a buffer of its own; both frames are whole.
    #[test]
    fn nested_push_uses_its_own_buffer() {
        struct Nested {
            inner: WsParser,
            outer: Vec<WsEvent>,
            inner_events: Vec<WsEvent>,
        }
        impl WsSink for Nested {
            fn frame(&mut self, f: &WsFrame) {
                self.inner
                    .push(HELLO_UNMASKED, TS, 2, &mut self.inner_events);
                self.outer.frame(f);
            }
            fn anomaly(&mut self, ts: Timestamp, frame_no: u64, kind: AnomalyKind) {
                self.outer.anomaly(ts, frame_no, kind);
            }
        }
        let mut n = Nested {
            inner: WsParser::new(false),
            outer: Vec::new(),
            inner_events: Vec::new(),
        };
        let mut both = HELLO_MASKED.to_vec();
        both.extend_from_slice(HELLO_MASKED);
        WsParser::new(true).push(&both, TS, 1, &mut n);
        assert_eq!(frames(&n.outer).len(), 2);
        assert!(frames(&n.outer)
            .iter()
            .all(|f| f.payload_prefix == b"Hello"));
        assert_eq!(frames(&n.inner_events).len(), 2);
        assert!(frames(&n.inner_events)
            .iter()
            .all(|f| f.payload_prefix == b"Hello"));
    }

    #[test]
    fn frame_after_close() {
        let mut b = encode(true, 0, 8, None, &1000u16.to_be_bytes());
        b.extend_from_slice(HELLO_UNMASKED);
        let ev = run(false, &b);
        assert_eq!(anomalies(&ev), vec![&AnomalyKind::FrameAfterClose]);
    }

    #[test]
    fn msb_length_stops_parsing() {
        let mut b = vec![0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 1];
        b.extend_from_slice(HELLO_UNMASKED);
        let mut p = WsParser::new(false);
        let mut out = Vec::new();
        p.push(&b, TS, 1, &mut out);
        assert_eq!(anomalies(&out), vec![&AnomalyKind::LengthMsbSet]);
        assert!(frames(&out).is_empty());
        assert_eq!(p.lost_sync().unwrap().reason, LostReason::BadHeader);
        assert_eq!(p.ignored_bytes(), HELLO_UNMASKED.len() as u64);
    }

    #[test]
    fn gap_stops_without_garbage_and_resync_restarts() {
        let mut p = WsParser::new(false);
        let mut out = Vec::new();
        p.push(&HELLO_UNMASKED[..4], TS, 1, &mut out);
        p.gap();
        p.push(&HELLO_UNMASKED[4..], TS, 2, &mut out);
        p.push(HELLO_UNMASKED, TS, 3, &mut out);
        assert!(out.is_empty());
        let lost = p.lost_sync().unwrap();
        assert_eq!(lost.reason, LostReason::Gap);
        assert_eq!(lost.in_frame, Some(Opcode::Text));
        assert_eq!(lost.stream_offset, 4);
        p.resync();
        p.push(&[0x80, 0x01, b'x'], TS, 4, &mut out); // continuation: not flagged after resync
        p.push(HELLO_UNMASKED, TS, 4, &mut out);
        assert!(anomalies(&out).is_empty());
        assert_eq!(frames(&out).len(), 2);
    }

    #[test]
    fn frame_numbers_across_packets() {
        let mut p = WsParser::new(true);
        let mut out = Vec::new();
        p.push(&HELLO_MASKED[..1], Timestamp(10), 7, &mut out);
        p.push(&HELLO_MASKED[1..8], Timestamp(20), 8, &mut out);
        assert!(out.is_empty());
        p.push(&HELLO_MASKED[8..], Timestamp(30), 9, &mut out);
        let f = frames(&out);
        assert_eq!(
            (
                f[0].first_frame_no,
                f[0].last_frame_no,
                f[0].start_ts,
                f[0].ts
            ),
            (7, 9, Timestamp(10), Timestamp(30))
        );
        assert_eq!(f[0].payload_prefix, b"Hello");
    }

    #[test]
    fn byte_by_byte_equals_whole() {
        let mut b = HELLO_MASKED.to_vec();
        b.extend_from_slice(HEL_LO);
        b.extend_from_slice(PING_HELLO);
        b.extend(encode(true, 0, 8, Some([9, 8, 7, 6]), b"\x03\xe8done"));
        for from_client in [true, false] {
            let whole = run(from_client, &b);
            let mut p = WsParser::new(from_client);
            let mut out = Vec::new();
            for byte in &b {
                p.push(std::slice::from_ref(byte), TS, 1, &mut out);
            }
            assert_eq!(whole, out);
        }
    }

    #[test]
    fn stats_close_handshake() {
        let client = run(
            true,
            &encode(true, 0, 8, Some([1, 1, 1, 1]), b"\x03\xe9gone"),
        );
        let mut p = WsParser::new(false);
        let mut server = Vec::new();
        p.push(
            &encode(true, 0, 9, None, b""),
            Timestamp(500),
            2,
            &mut server,
        );
        p.push(
            &encode(true, 0, 8, None, b"\x03\xe9"),
            Timestamp(2_000),
            3,
            &mut server,
        );
        // Server events added first: ordering still by time.
        let mut s = WsStats::default();
        for e in &server {
            s.add(false, e);
        }
        for e in &client {
            s.add(true, e);
        }
        assert_eq!(s.closed_first_by(), Some(Side::Client));
        let first = s.first_close.as_ref().unwrap();
        assert_eq!((first.code, first.reason.as_str()), (Some(1001), "gone"));
        assert!(s.both_sent_close());
        assert_eq!(s.server.ping, 1);
        assert_eq!(s.client.masked, 1);
        assert_eq!(s.control_times.len(), 3);
        let s2 = WsStats::from_events(&client, &server);
        assert_eq!(s2.closed_first_by(), Some(Side::Client));
        assert_eq!(s2.control_times.first().map(|c| c.ts), Some(Timestamp(500)));
        let json = serde_json::to_value(&s2).unwrap();
        assert_eq!(json["first_close"]["by"], "client");
        assert_eq!(json["control_times"][0]["opcode"], "ping");
        assert_eq!(json["control_times"][1]["opcode"], "close");
    }

    /// One arbitrary frame: any opcode, RSV, FIN and mask; mostly small payloads.
    fn any_frame() -> impl Strategy<Value = Vec<u8>> {
        let len = prop_oneof![8 => 0usize..140, 2 => 120usize..400, 1 => 65_530usize..65_600];
        (
            any::<bool>(),
            0u8..8,
            0u8..16,
            proptest::option::of(any::<[u8; 4]>()),
            len,
            any::<u8>(),
        )
            .prop_map(|(fin, rsv, op, mask, len, fill)| {
                let payload: Vec<u8> = (0..len).map(|i| fill.wrapping_add(i as u8)).collect();
                encode(fin, rsv, op, mask, &payload)
            })
    }

    /// A valid client conversation: masked, fragmented messages with pings between fragments.
    fn valid_client_frames() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            (
                1u8..3,
                1usize..4,
                any::<bool>(),
                any::<[u8; 4]>(),
                0usize..200,
            ),
            1..6,
        )
        .prop_map(|msgs| {
            let mut b = Vec::new();
            for (op, parts, ping, key, len) in msgs {
                for k in 0..parts {
                    let opcode = if k == 0 { op } else { 0 };
                    let payload = vec![b'a'; len];
                    b.extend(encode(k + 1 == parts, 0, opcode, Some(key), &payload));
                    if ping {
                        b.extend(encode(true, 0, 9, Some(key), b"hb"));
                    }
                }
            }
            b
        })
    }

    fn split_push(from_client: bool, bytes: &[u8], cuts: &[usize]) -> Vec<WsEvent> {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        points.sort_unstable();
        let mut p = WsParser::new(from_client);
        let mut out = Vec::new();
        let mut at = 0;
        for c in points.into_iter().chain([bytes.len()]) {
            p.push(&bytes[at..c], TS, 1, &mut out);
            at = c;
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn split_anywhere_gives_same_events(
            frames in proptest::collection::vec(any_frame(), 1..8),
            cuts in proptest::collection::vec(any::<usize>(), 0..20),
            from_client in any::<bool>(),
        ) {
            let bytes: Vec<u8> = frames.concat();
            let whole = run(from_client, &bytes);
            prop_assert_eq!(&whole, &split_push(from_client, &bytes, &cuts));
            prop_assert_eq!(
                whole.iter().filter(|e| matches!(e, WsEvent::Frame(_))).count(),
                frames.len()
            );
        }

        #[test]
        fn valid_frames_have_no_anomalies_when_split(
            bytes in valid_client_frames(),
            cuts in proptest::collection::vec(any::<usize>(), 0..20),
        ) {
            let whole = run(true, &bytes);
            prop_assert!(anomalies(&whole).is_empty());
            prop_assert_eq!(&whole, &split_push(true, &bytes, &cuts));
        }

        #[test]
        fn random_bytes_never_panic(
            data in proptest::collection::vec(any::<u8>(), 0..600),
            cuts in proptest::collection::vec(any::<usize>(), 0..10),
            from_client in any::<bool>(),
        ) {
            let whole = run(from_client, &data);
            prop_assert_eq!(&whole, &split_push(from_client, &data, &cuts));
            for e in &whole {
                if let WsEvent::Frame(f) = e {
                    prop_assert!(f.payload_prefix.len() <= PREFIX_CAP);
                }
            }
        }
    }
}
