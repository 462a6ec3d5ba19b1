//! One TCP connection's application layer: what it carries, fed with the in-order bytes of
//! each direction by the reassembler (`tcp::reassembly`), and summarised in `AppSummary`.
//!
//! Detection from the first client bytes: a TLS record (then only record sizes are seen), an
//! HTTP request (then the response; a 101 with `Upgrade: websocket` switches both directions to
//! WebSocket framing, RFC 6455 §4), a SIP start line (SIP over TCP, RFC 3261 §18.3), or opaque
//! bytes. Every buffer is capped: an unrecognised or broken stream costs at most `MAX_HEAD`
//! bytes per direction.

use serde::Serialize;

use super::heartbeat::{self, HbKind, HbLog, Heartbeat};
use super::http::{
    self, RequestHead, ResponseHead, UpgradeOutcome, UpgradeRequest, UpgradeResponse,
};
use super::sip::{self, KeepAlive, SipDialogs};
use super::tls::{self, ClientHello, TlsRecord, TlsRecordScanner};
use super::websocket::{AnomalyKind, Opcode, WsEvent, WsFrame, WsParser, WsSink, WsStats};
use super::{Parse, MAX_HEAD};
use crate::boxed_list::BoxedList;
use crate::capture::Timestamp;

/// What a connection carries (Zeek's `service` names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    Websocket,
    Sip,
    Tls,
    Http,
}

/// The HTTP exchange of a connection: the request that mattered (the upgrade, or the last one)
/// and its final response.
#[derive(Clone, Debug, Serialize)]
pub struct HttpSummary {
    /// The request head; `None` when the session was told not to keep heads
    /// ([`Session::keep_heads`]). Packed: a dozen strings that the diagnosis never reads,
    /// kept as long as the connection lives.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestHead>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<ResponseHead>,
    /// Sec-WebSocket-Accept checked against the key (RFC 6455 §4.2.2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept_ok: Option<bool>,
    /// 101 Switching Protocols.
    pub upgraded: bool,
    /// A final status other than 101 answered an upgrade request (401, 403, 502, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_status: Option<u16>,
    pub upgrade_ts: Option<Timestamp>,
    pub upgrade_frame: Option<u64>,
    /// Requests seen on the connection.
    pub requests: u32,
}

impl HttpSummary {
    /// The request head, unpacked (`None` without heads, [`Session::keep_heads`]).
    pub fn request(&self) -> Option<UpgradeRequest> {
        self.request.as_ref().map(RequestHead::get)
    }

    /// The final response's head, unpacked.
    pub fn response(&self) -> Option<UpgradeResponse> {
        self.response.as_ref().map(ResponseHead::get)
    }
}

/// One application event, for `vantage flows --detail`.
#[derive(Clone, Debug, Serialize)]
pub struct AppEvent {
    pub ts: Timestamp,
    pub frame: u64,
    /// `>` client to server, `<` back.
    pub dir: &'static str,
    pub what: String,
}

/// Everything the application layer found on one connection.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AppSummary {
    pub service: Option<Service>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Boxed: 320 bytes that only `flows` and the HTML report print, dropped from the
    /// summaries the diagnosis keeps (`TrackerOptions::app_details`).
    pub websocket: Option<Box<WsStats>>,
    /// WebSocket protocol violations: (frame number, kind). A `BoxedList` (8 bytes, not 24):
    /// only `flows` and the HTML report print them, and the summaries the diagnosis keeps have
    /// none (`TrackerOptions::app_details`).
    #[serde(skip_serializing_if = "BoxedList::is_empty")]
    pub ws_anomalies: BoxedList<(u64, AnomalyKind)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sip: Option<SipDialogs>,
    /// Boxed: kept in every summary until the report, and WebSocket/SIP connections have none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<Box<ClientHello>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<Heartbeat>,
    /// Bytes a parser could not follow (holes in the stream).
    pub stream_gaps: u64,
    /// Only with `TrackerOptions::detail` (`flows --detail`): a `BoxedList`, 8 bytes, not 24, in
    /// every other summary.
    #[serde(skip)]
    pub events: BoxedList<AppEvent>,
}

// Kept in every summary until the report, like `Connection` (see the size checks beside it).
const _: () = assert!(std::mem::size_of::<AppSummary>() <= 360);

/// Application events kept per connection for `--detail`.
pub const MAX_EVENTS: usize = 2000;
/// WebSocket anomalies listed per connection (all are counted in `WsStats`).
const MAX_ANOMALIES: usize = 32;
/// Bytes of a WebSocket message kept to parse SIP from it (a SIP head fits; RFC 7118 §4).
const SIP_PREFIX: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Detect,
    Http,
    WebSocket,
    SipStream,
    Tls,
    Opaque,
}

/// Bytes held per direction until a head or message is whole (HTTP, SIP over TCP, a TLS
/// ClientHello). Boxed, and gone once both are empty: after the upgrade a WebSocket connection
/// holds nothing here for the rest of its life, and two empty lists were 48 bytes of it.
#[derive(Debug, Default)]
struct Held(Option<Box<[Vec<u8>; 2]>>);

impl Held {
    fn get(&self, from_client: bool) -> &[u8] {
        self.0
            .as_deref()
            .map_or(&[], |h| h[usize::from(!from_client)].as_slice())
    }

    fn get_mut(&mut self, from_client: bool) -> &mut Vec<u8> {
        &mut self.0.get_or_insert_with(Box::default)[usize::from(!from_client)]
    }

    /// One direction's bytes, taken out (the box goes when both are empty).
    fn take(&mut self, from_client: bool) -> Vec<u8> {
        let Some(h) = self.0.as_deref_mut() else {
            return Vec::new();
        };
        let v = std::mem::take(&mut h[usize::from(!from_client)]);
        self.drop_if_empty();
        v
    }

    fn put(&mut self, from_client: bool, v: Vec<u8>) {
        if v.capacity() > 0 || self.0.is_some() {
            *self.get_mut(from_client) = v;
            self.drop_if_empty();
        }
    }

    fn drop_if_empty(&mut self) {
        if self
            .0
            .as_deref()
            .is_some_and(|h| h.iter().all(|b| b.capacity() == 0))
        {
            self.0 = None;
        }
    }

    fn clear(&mut self) {
        self.0 = None;
    }
}

/// The per-connection state. Every byte here is paid per live connection (20k and more), so
/// the parts that only some connections need are boxed, and buffers are released once empty.
///
/// `repr(C)`: what a packet of an upgraded connection reads (the WebSocket state's pointer,
/// the heartbeat log's counters and end, the mode) first, right after the two reassemblers
/// that precede the session in the connection's application state (`tcp::AppState`); what
/// only the handshake, SIP or the end reads last. In the compiler's order the log opened the
/// struct and the mode closed it, 136 bytes apart, and a packet read every cache line of that
/// state.
#[derive(Debug)]
#[repr(C)]
pub struct Session {
    /// After a 101 with `Upgrade: websocket`.
    ws: Option<Box<WsState>>,
    /// Heartbeat candidates and small messages, byte-encoded until [`Session::finish`]
    /// (bounded by [`heartbeat::MAX_LOG_EVENTS`] and [`heartbeat::MAX_LOG_SMALL`]).
    hb: HbLog,
    /// A hole stopped that direction's WebSocket parser (client, server): parse again from the
    /// next segment that starts with a plausible frame.
    ws_resync: [bool; 2],
    mode: Mode,
    detail: bool,
    /// Keep the HTTP request and response heads in the summary (see [`Session::keep_heads`]).
    heads: bool,
    /// Keep what only `flows` and the HTML report print (see [`Session::keep_details`]).
    details: bool,
    /// Keep a record of each SIP registration (see [`Session::keep_registrations`]).
    registrations: bool,
    sip_over_ws: bool,
    ws_extensions: bool,
    found: Found,
    /// Bytes held per direction while a head (HTTP, SIP) is incomplete.
    held: Held,
    tls_scan: Option<Box<(TlsRecordScanner, TlsRecordScanner)>>,
    /// The request waiting for its final response (HTTP mode only).
    pending_request: Option<Box<UpgradeRequest>>,
}

/// What the session found so far: the fields of [`AppSummary`] filled while the connection
/// lives, the large and often absent ones boxed. [`Session::finish`] unboxes them.
#[derive(Debug, Default)]
struct Found {
    service: Option<Service>,
    http: Option<Box<HttpSummary>>,
    /// Only with details (`flows`, HTML), like `events` with `detail`. Boxed lists: the slot is
    /// 8 bytes instead of 24 in every live session, and nearly all stay empty.
    #[allow(clippy::box_collection)]
    ws_anomalies: Option<Box<Vec<(u64, AnomalyKind)>>>,
    sip: Option<Box<SipDialogs>>,
    tls: Option<Box<ClientHello>>,
    stream_gaps: u64,
    #[allow(clippy::box_collection)]
    events: Option<Box<Vec<AppEvent>>>,
}

/// The WebSocket state of an upgraded connection, per direction (client, server).
///
/// `repr(C)`, in the order a packet reads it: the stats pointer, then one direction's parser
/// beside its message in progress. A packet reads its direction's ~150 bytes and the pointer
/// before them, about 3 cache lines of this allocation; in the compiler's order (both parsers,
/// then both messages, then the pointer: 376 bytes) a client packet read 5, and this state is a
/// cache miss of its own on most packets of a busy capture.
#[derive(Debug)]
#[repr(C)]
struct WsState {
    /// Frame counts and sizes, which only `flows` and the HTML report print: not kept (nor
    /// counted) without [`Session::keep_details`].
    stats: Option<Box<WsStats>>,
    dirs: [WsDir; 2],
}

/// One direction's WebSocket state.
#[derive(Debug)]
struct WsDir {
    parser: WsParser,
    /// A fragmented data message being put together (RFC 6455 §5.4). Boxed: rare, and 8 bytes
    /// where the message is 40.
    msg: Option<Box<WsMessage>>,
}

/// Handles one direction's WebSocket frames as the parser finds them (no event list).
struct WsEvents<'a> {
    session: &'a mut Session,
    stats: Option<&'a mut WsStats>,
    msg: &'a mut Option<Box<WsMessage>>,
    from_client: bool,
    /// Time of the segment being parsed.
    ts: Timestamp,
}

impl WsSink for WsEvents<'_> {
    fn frame(&mut self, f: &WsFrame) {
        if let Some(stats) = self.stats.as_deref_mut() {
            // Control frame times only with events (`flows --detail`): no report prints them,
            // and a connection that pings every 25 s gathers ~7 000 in a day, 24 bytes each.
            if self.session.detail {
                stats.add_frame(self.from_client, f);
            } else {
                stats.count_frame(self.from_client, f);
            }
        }
        self.session.ws_frame(self.from_client, f, self.msg);
    }

    fn anomaly(&mut self, _ts: Timestamp, frame_no: u64, kind: AnomalyKind) {
        if let Some(stats) = self.stats.as_deref_mut() {
            stats.add_anomaly(self.from_client);
        }
        let s = &mut *self.session;
        s.event(self.ts, frame_no, self.from_client, || {
            format!("WebSocket anomaly: {kind:?}")
        });
        if s.details {
            let list = s.found.ws_anomalies.get_or_insert_with(Box::default);
            if list.len() < MAX_ANOMALIES {
                list.push((frame_no, kind));
            }
        }
    }
}

/// The fragments of one data message so far: its length and the first bytes of its payload.
#[derive(Debug)]
struct WsMessage {
    len: u64,
    /// The first payload bytes, at most [`SIP_PREFIX`].
    prefix: Vec<u8>,
    /// Every fragment so far was kept whole in its frame's prefix, so `prefix` is contiguous and
    /// more can be appended.
    contiguous: bool,
}

impl WsMessage {
    fn add(&mut self, f: &WsFrame) {
        self.len = self.len.saturating_add(f.payload_len);
        if self.contiguous {
            let room = SIP_PREFIX.saturating_sub(self.prefix.len());
            let take = room.min(f.payload_prefix.len());
            self.prefix.extend_from_slice(&f.payload_prefix[..take]);
            self.contiguous = take as u64 == f.payload_len;
        }
    }
}

impl Session {
    pub fn new(detail: bool) -> Self {
        Session {
            mode: Mode::Detect,
            detail,
            heads: true,
            details: true,
            registrations: true,
            sip_over_ws: false,
            ws_extensions: false,
            ws_resync: [false, false],
            held: Held::default(),
            ws: None,
            tls_scan: None,
            hb: HbLog::default(),
            found: Found::default(),
            pending_request: None,
        }
    }

    /// Whether the summary keeps the HTTP heads (every header `flows` prints). The diagnosis
    /// reads only the outcome (upgraded, failed status, when): without the heads a live
    /// WebSocket connection holds ~700 bytes less, for as long as it lives.
    pub fn keep_heads(mut self, heads: bool) -> Self {
        self.heads = heads;
        self
    }

    /// Whether the summary keeps the WebSocket frame counts and anomalies, which only `flows`
    /// and the HTML report print (`TrackerOptions::app_details`). Without them a live
    /// WebSocket connection holds 240 bytes less, and no frame is counted.
    pub fn keep_details(mut self, details: bool) -> Self {
        self.details = details;
        self
    }

    /// The SIP header fields parsed: without details, only those the tracking reads
    /// (`sip::Fields::Tracked`).
    fn sip_fields(&self) -> sip::Fields {
        if self.details {
            sip::Fields::All
        } else {
            sip::Fields::Tracked
        }
    }

    /// The HTTP header values parsed: without heads and events, only those the session reads
    /// (`http::Fields::Tracked`).
    fn http_fields(&self) -> http::Fields {
        if self.heads || self.detail {
            http::Fields::All
        } else {
            http::Fields::Tracked
        }
    }

    /// Whether SIP keeps a record of each registration or only counts them
    /// (`TrackerOptions::sip_registrations`, `SipDialogs::keep_registrations`).
    pub fn keep_registrations(mut self, registrations: bool) -> Self {
        self.registrations = registrations;
        self
    }

    fn event(
        &mut self,
        ts: Timestamp,
        frame: u64,
        from_client: bool,
        what: impl FnOnce() -> String,
    ) {
        if !self.detail {
            return;
        }
        let events = self.found.events.get_or_insert_with(Box::default);
        if events.len() < MAX_EVENTS {
            events.push(AppEvent {
                ts,
                frame,
                dir: if from_client { ">" } else { "<" },
                what: what(),
            });
        }
    }

    fn hb(&mut self, ts: Timestamp, kind: HbKind, from_client: bool, size: u32) {
        self.hb.event(ts, kind, from_client, size);
    }

    fn small_msg(&mut self, ts: Timestamp, from_client: bool, size: u64) {
        if size <= u64::from(heartbeat::MAX_SMALL) {
            self.hb.small(ts, from_client, size as u32);
        }
    }

    /// A TCP keep-alive seen by the tracker (Wireshark's rule).
    pub fn tcp_keepalive(&mut self, ts: Timestamp, from_client: bool) {
        self.hb(ts, HbKind::TcpKeepalive, from_client, 0);
    }

    /// In-order bytes of one direction.
    pub fn data(&mut self, from_client: bool, bytes: &[u8], ts: Timestamp, frame: u64) {
        if let Mode::Detect = self.mode {
            // A first segment cut inside the first word ("GE" + "T /ws ..."): wait for more.
            if !self.held.get(from_client).is_empty() || undecided(bytes) {
                let held = self.held.get_mut(from_client);
                held.extend_from_slice(bytes);
                if undecided(held) {
                    return;
                }
                let joined = self.held.take(from_client);
                self.detect(from_client, &joined);
                return self.dispatch(from_client, &joined, ts, frame);
            }
            self.detect(from_client, bytes);
        }
        self.dispatch(from_client, bytes, ts, frame);
    }

    fn dispatch(&mut self, from_client: bool, bytes: &[u8], ts: Timestamp, frame: u64) {
        match self.mode {
            Mode::Detect => {}
            Mode::Http => self.http(from_client, bytes, ts, frame),
            Mode::WebSocket => self.websocket(from_client, bytes, ts, frame),
            Mode::SipStream => self.sip_stream(from_client, bytes, ts, frame),
            Mode::Tls => self.tls(from_client, bytes, ts, frame),
            Mode::Opaque => self.small_msg(ts, from_client, bytes.len() as u64),
        }
    }

    /// A hole in one direction's stream: parsers of that direction stop cleanly.
    pub fn gap(&mut self, from_client: bool, missing: u64) {
        self.found.stream_gaps += missing.max(1);
        match self.mode {
            Mode::WebSocket => {
                let slot = usize::from(!from_client);
                if let Some(dir) = self.ws.as_mut().and_then(|ws| ws.dirs.get_mut(slot)) {
                    dir.parser.gap();
                    dir.msg = None;
                }
                self.ws_resync[slot] = true;
            }
            Mode::Tls => {
                if let Some((c, s)) = self.tls_scan.as_deref_mut() {
                    if from_client {
                        c.gap()
                    } else {
                        s.gap()
                    }
                }
            }
            Mode::Http | Mode::SipStream | Mode::Detect => {
                // A head with a hole in it cannot be parsed: stop looking at this connection.
                self.held.clear();
                self.mode = Mode::Opaque;
            }
            Mode::Opaque => {}
        }
    }

    fn detect(&mut self, from_client: bool, bytes: &[u8]) {
        let b = bytes;
        if tls::looks_like_tls(b) {
            self.mode = Mode::Tls;
            self.found.service = Some(Service::Tls);
            self.tls_scan = Some(Box::new((TlsRecordScanner::new(), TlsRecordScanner::new())));
        } else if from_client && looks_like_http_request(b) {
            self.mode = Mode::Http;
            self.found.service = Some(Service::Http);
        } else if looks_like_sip(b)
            || sip::is_crlf_keepalive(b).is_some() && looks_like_sip_later(b)
        {
            self.mode = Mode::SipStream;
            self.found.service = Some(Service::Sip);
        } else if !b.is_empty() {
            self.mode = Mode::Opaque;
        }
    }

    fn http(&mut self, from_client: bool, bytes: &[u8], ts: Timestamp, frame: u64) {
        let buf = self.held.get_mut(from_client);
        if buf.len() + bytes.len() > MAX_HEAD * 2 {
            self.mode = Mode::Opaque;
            self.held.clear();
            return;
        }
        buf.extend_from_slice(bytes);
        loop {
            if from_client {
                if self.pending_request.is_some() {
                    break; // wait for its response; the client may pipeline frames
                }
                match http::parse_request_with(self.held.get(true), self.http_fields()) {
                    Parse::Complete { value, consumed } => {
                        // Saturating: a Content-Length is whatever the peer wrote (a fuzz
                        // input's near 2^64 overflowed here); the body is skipped as far as held.
                        let body = http::request_body_len(&value).unwrap_or(0) as usize;
                        let take = consumed.saturating_add(body).min(self.held.get(true).len());
                        self.held.get_mut(true).drain(..take);
                        self.event(ts, frame, true, || {
                            format!("HTTP {} {}", value.method, value.path)
                        });
                        let head = self.heads.then(|| RequestHead::new(&value));
                        match self.found.http.as_mut() {
                            Some(h) => h.request = head,
                            None => {
                                self.found.http = Some(Box::new(HttpSummary {
                                    request: head,
                                    response: None,
                                    accept_ok: None,
                                    upgraded: false,
                                    failed_status: None,
                                    upgrade_ts: None,
                                    upgrade_frame: None,
                                    requests: 0,
                                }))
                            }
                        }
                        if let Some(h) = self.found.http.as_mut() {
                            h.requests += 1;
                        }
                        self.pending_request = Some(Box::new(value));
                        // Responses may already wait.
                        if !self.held.get(false).is_empty() {
                            self.http(false, &[], ts, frame);
                        }
                        return;
                    }
                    Parse::Partial => break,
                    Parse::Invalid(_) => {
                        self.mode = Mode::Opaque;
                        return;
                    }
                }
            } else {
                // Taken while its response is read, put back while one is still to come.
                let Some(req) = self.pending_request.take() else {
                    break;
                };
                match http::parse_response_with(self.held.get(false), self.http_fields()) {
                    Parse::Complete { value, consumed } => {
                        let outcome = http::upgrade_outcome(&value);
                        let status = value.status;
                        self.event(ts, frame, false, || {
                            format!("HTTP {} {}", value.status, value.reason)
                        });
                        let h = self.found.http.as_mut().expect("request seen");
                        match outcome {
                            UpgradeOutcome::Interim { .. } => {
                                self.held.get_mut(false).drain(..consumed);
                                self.pending_request = Some(req);
                                continue;
                            }
                            UpgradeOutcome::WebSocket | UpgradeOutcome::OtherProtocol { .. } => {
                                h.accept_ok = http::accept_ok(&req, &value);
                                h.upgraded = true;
                                // An earlier refusal on the same connection (a 301 or a 401
                                // before the retry) is not how the upgrade ended.
                                h.failed_status = None;
                                h.upgrade_ts = Some(ts);
                                h.upgrade_frame = Some(frame);
                                h.response = self.heads.then(|| ResponseHead::new(&value));
                                self.held.get_mut(false).drain(..consumed);
                                if outcome == UpgradeOutcome::WebSocket {
                                    self.start_websocket(&req, &value, ts, frame);
                                } else {
                                    self.mode = Mode::Opaque;
                                    self.held.clear();
                                }
                                return;
                            }
                            UpgradeOutcome::Failed { .. } => {
                                if http::is_upgrade_request(&req) {
                                    h.failed_status = Some(status);
                                }
                                h.response = self.heads.then(|| ResponseHead::new(&value));
                                let body = http::response_body_len(&value, Some(&req.method))
                                    .unwrap_or(u64::MAX);
                                if body == u64::MAX {
                                    self.mode = Mode::Opaque;
                                    return;
                                }
                                let take = consumed
                                    .saturating_add(body as usize)
                                    .min(self.held.get(false).len());
                                self.held.get_mut(false).drain(..take);
                                self.pending_request = None;
                                // The next request may already be buffered.
                                if !self.held.get(true).is_empty() {
                                    self.http(true, &[], ts, frame);
                                }
                                return;
                            }
                        }
                    }
                    Parse::Partial => {
                        self.pending_request = Some(req);
                        break;
                    }
                    Parse::Invalid(_) => {
                        self.mode = Mode::Opaque;
                        return;
                    }
                }
            }
        }
    }

    fn start_websocket(
        &mut self,
        req: &UpgradeRequest,
        resp: &UpgradeResponse,
        ts: Timestamp,
        frame: u64,
    ) {
        self.mode = Mode::WebSocket;
        self.found.service = Some(Service::Websocket);
        let ext = resp.sec_websocket_extensions.is_some();
        self.ws_extensions = ext;
        let mut c = WsParser::with_extensions(true, ext);
        let mut s = WsParser::with_extensions(false, ext);
        let proto = resp
            .sec_websocket_protocol
            .as_deref()
            .or(req.sec_websocket_protocol.as_deref())
            .unwrap_or("");
        if proto
            .split(',')
            .any(|p| p.trim().eq_ignore_ascii_case("sip"))
        {
            self.sip_over_ws = true;
            c.set_prefix_cap(SIP_PREFIX);
            s.set_prefix_cap(SIP_PREFIX);
        }
        self.ws = Some(Box::new(WsState {
            stats: self.details.then(Box::default),
            dirs: [
                WsDir {
                    parser: c,
                    msg: None,
                },
                WsDir {
                    parser: s,
                    msg: None,
                },
            ],
        }));
        let client_rest = self.held.take(true);
        let server_rest = self.held.take(false);
        if !server_rest.is_empty() {
            self.websocket(false, &server_rest, ts, frame);
        }
        if !client_rest.is_empty() {
            self.websocket(true, &client_rest, ts, frame);
        }
    }

    /// Fetches the WebSocket state and the heartbeat log's end into the cache.
    pub fn prefetch(&self) {
        if let Some(ws) = self.ws.as_deref() {
            crate::tcp::prefetch_all_lines(ws);
        }
        self.hb.prefetch();
    }

    /// Fetches the WebSocket frame counts, where kept (`prefetch` fetched what points to them).
    pub fn prefetch_stats(&self) {
        if let Some(stats) = self.ws.as_deref().and_then(|ws| ws.stats.as_deref()) {
            crate::tcp::prefetch_lines(stats);
        }
    }

    fn websocket(&mut self, from_client: bool, bytes: &[u8], ts: Timestamp, frame: u64) {
        // Out of `self` while the parser runs, so that its frames can be handled in place.
        let Some(mut ws) = self.ws.take() else {
            return;
        };
        let slot = usize::from(!from_client);
        let WsState { stats, dirs } = &mut *ws;
        let WsDir { parser, msg } = &mut dirs[slot];
        if self.ws_resync[slot] {
            // After a hole, TCP segments usually start with a frame: the first one that looks
            // like a whole frame (or frames) for this direction restarts the parser.
            if !plausible_frames(bytes, from_client, self.ws_extensions) {
                // Counted as ignored (the parser is stopped: it finds nothing).
                parser.push(bytes, ts, frame, &mut Vec::<WsEvent>::new());
                self.ws = Some(ws);
                return;
            }
            self.ws_resync[slot] = false;
            parser.resync();
        }
        let mut sink = WsEvents {
            session: self,
            stats: stats.as_deref_mut(),
            msg,
            from_client,
            ts,
        };
        parser.push(bytes, ts, frame, &mut sink);
        self.ws = Some(ws);
    }

    fn ws_frame(&mut self, from_client: bool, f: &WsFrame, msg: &mut Option<Box<WsMessage>>) {
        let (ts, frame) = (f.ts, f.last_frame_no);
        if self.detail {
            let what = match (&f.opcode, &f.close) {
                (Opcode::Close, Some((code, reason))) => format!(
                    "WebSocket close {} {}",
                    code.map_or("-".into(), |c| c.to_string()),
                    reason
                ),
                _ => format!(
                    "WebSocket {}{} {} bytes{}",
                    f.opcode.name(),
                    if f.fin { "" } else { " (fragment)" },
                    f.payload_len,
                    match sip::is_crlf_keepalive(&f.payload_prefix).filter(|_| f.payload_len <= 4) {
                        Some(KeepAlive::Ping) => ": CRLF keep-alive",
                        Some(KeepAlive::Pong) => ": CRLF keep-alive answer",
                        None => "",
                    }
                ),
            };
            self.event(ts, frame, from_client, || what);
        }
        match f.opcode {
            Opcode::Ping => self.hb(ts, HbKind::WsPing, from_client, f.payload_len as u32),
            Opcode::Pong => self.hb(ts, HbKind::WsPong, from_client, f.payload_len as u32),
            Opcode::Text | Opcode::Binary if f.fin => {
                *msg = None;
                self.ws_message(from_client, &f.payload_prefix, f.payload_len, ts, frame);
            }
            // The first fragment of a message (§5.4): the rest comes in continuation frames,
            // possibly with control frames between them.
            Opcode::Text | Opcode::Binary => {
                let mut m = Box::new(WsMessage {
                    len: 0,
                    prefix: Vec::new(),
                    contiguous: true,
                });
                m.add(f);
                *msg = Some(m);
            }
            Opcode::Continuation => {
                if let Some(m) = msg.as_mut() {
                    m.add(f);
                    if f.fin {
                        if let Some(m) = msg.take() {
                            self.ws_message(from_client, &m.prefix, m.len, ts, frame);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// A whole data message (one frame, or the fragments of one): a CRLF keep-alive, a SIP
    /// message, or something else, of which only the size counts.
    fn ws_message(
        &mut self,
        from_client: bool,
        prefix: &[u8],
        len: u64,
        ts: Timestamp,
        frame: u64,
    ) {
        match sip::is_crlf_keepalive(prefix).filter(|_| len <= 4) {
            Some(KeepAlive::Ping) => self.hb(ts, HbKind::CrlfPing, from_client, len as u32),
            Some(KeepAlive::Pong) => self.hb(ts, HbKind::CrlfPong, from_client, len as u32),
            None => {
                self.small_msg(ts, from_client, len);
                if self.sip_over_ws || looks_like_sip(prefix) {
                    if let Parse::Complete { value, .. } =
                        sip::parse_ws_message_with(prefix, len, self.sip_fields())
                    {
                        self.sip_message(from_client, &value, ts, frame);
                    }
                }
            }
        }
    }

    fn sip_message(
        &mut self,
        from_client: bool,
        m: &sip::SipMessage<'_>,
        ts: Timestamp,
        frame: u64,
    ) {
        if m.method() == Some("OPTIONS") {
            // SIP OPTIONS pings are an application-level keep-alive (RFC 3261 §11).
            self.hb(ts, HbKind::App, from_client, m.head_len as u32);
        }
        self.event(ts, frame, from_client, || format!("SIP {}", m.label()));
        if self.found.service.is_none() {
            self.found.service = Some(Service::Sip);
        }
        let (details, registrations) = (self.details, self.registrations);
        self.found
            .sip
            .get_or_insert_with(|| {
                Box::new(
                    SipDialogs::new()
                        .keep_details(details)
                        .keep_registrations(registrations),
                )
            })
            .add(ts, frame, from_client, m);
    }

    /// SIP over TCP (RFC 3261 §18.3): messages framed by Content-Length, CRLF keep-alives
    /// between them. Bytes are held only while a message is incomplete; a segment that carries
    /// whole messages is parsed where it lies.
    fn sip_stream(&mut self, from_client: bool, bytes: &[u8], ts: Timestamp, frame: u64) {
        let mut held = self.held.take(from_client);
        if held.len() + bytes.len() > MAX_HEAD * 4 {
            return; // dropped with what was held
        }
        let data: &[u8] = if held.is_empty() {
            bytes
        } else {
            held.extend_from_slice(bytes);
            &held
        };
        let Some(used) = self.sip_messages(from_client, data, ts, frame) else {
            return;
        };
        let left = data.get(used..).unwrap_or(&[]);
        let rest = if left.is_empty() {
            Vec::new()
        } else if held.is_empty() {
            left.to_vec()
        } else {
            held.drain(..used.min(held.len()));
            held
        };
        self.held.put(from_client, rest);
    }

    /// The messages at the start of `data`: how many bytes they took, or `None` when the rest
    /// is to be dropped (keep-alives only, or not SIP).
    fn sip_messages(
        &mut self,
        from_client: bool,
        data: &[u8],
        ts: Timestamp,
        frame: u64,
    ) -> Option<usize> {
        let mut at = 0;
        loop {
            let buf = data.get(at..).unwrap_or(&[]);
            // RFC 5626 §3.5.1: CRLF keep-alives between messages on a stream.
            let crlf = sip::leading_crlf_len(buf);
            if crlf > 0 && crlf == buf.len() {
                let kind = if crlf >= 4 {
                    HbKind::CrlfPing
                } else {
                    HbKind::CrlfPong
                };
                self.hb(ts, kind, from_client, crlf as u32);
                return None;
            }
            match sip::parse_message_with(buf, self.sip_fields()) {
                Parse::Complete { value, consumed } => {
                    at += consumed.min(buf.len());
                    self.small_msg(ts, from_client, consumed as u64);
                    self.sip_message(from_client, &value, ts, frame);
                }
                Parse::Partial => return Some(at),
                Parse::Invalid(_) => return None,
            }
        }
    }

    fn tls(&mut self, from_client: bool, bytes: &[u8], ts: Timestamp, frame: u64) {
        if from_client && self.found.tls.is_none() && self.held.get(true).len() < MAX_HEAD {
            self.held.get_mut(true).extend_from_slice(bytes);
            if let Some(h) = tls::client_hello(self.held.get(true)) {
                let sni = h.sni.clone();
                self.event(ts, frame, true, || {
                    format!("TLS ClientHello SNI {}", sni.unwrap_or_else(|| "-".into()))
                });
                self.found.tls = Some(Box::new(h));
                self.held.take(true);
            }
        }
        let Some((c, s)) = self.tls_scan.as_deref_mut() else {
            return;
        };
        let mut recs: Vec<TlsRecord> = Vec::new();
        if from_client {
            c.push(bytes, ts, frame, &mut recs);
        } else {
            s.push(bytes, ts, frame, &mut recs);
        }
        for r in recs {
            // Application data only (content type 23, RFC 8446 §5.1): sizes reveal a rhythm.
            if r.content_type == 23 {
                self.small_msg(r.ts, from_client, r.len as u64);
            }
        }
    }

    /// Ends the session: the heartbeat analysis and the WebSocket summary.
    pub fn finish(self) -> AppSummary {
        let (mut summary, hb) = self.finish_but_heartbeat();
        summary.heartbeat = hb.analyse();
        summary
    }

    /// `finish` but for the heartbeat, left `None`: its log comes back unanalysed, for the
    /// caller to analyse only if the summary is kept whole (`tcp::Tracker::keep`).
    pub fn finish_but_heartbeat(self) -> (AppSummary, HbLog) {
        let found = self.found;
        let summary = AppSummary {
            service: found.service,
            http: found.http.map(|h| *h),
            websocket: self.ws.and_then(|w| w.stats),
            ws_anomalies: found.ws_anomalies.into(),
            sip: found.sip.map(|s| {
                let mut s = *s;
                s.finish();
                s
            }),
            tls: found.tls,
            heartbeat: None,
            stream_gaps: found.stream_gaps,
            events: found.events.into(),
        };
        (summary, self.hb)
    }
}

/// Whether a segment after a hole starts with WebSocket frames sent by this side (RFC 6455 §5.2):
/// a defined opcode, no RSV bit unless an extension may use RSV1, masked exactly when the
/// client sends, control frames whole and short, and the frames ending at the segment's end (or
/// the last one continuing past it in a large segment). Checks up to 8 frames.
fn plausible_frames(b: &[u8], from_client: bool, extensions: bool) -> bool {
    let mut at = 0usize;
    for _ in 0..8 {
        let rest = &b[at.min(b.len())..];
        if rest.is_empty() {
            return at > 0;
        }
        let [b0, b1, ..] = *rest else {
            return false;
        };
        let rsv = (b0 >> 4) & 7;
        let op = Opcode::from_u8(b0);
        if matches!(op, Opcode::Reserved(_))
            || rsv & !(if extensions { 4 } else { 0 }) != 0
            || (b1 & 0x80 != 0) != from_client
        {
            return false;
        }
        let (len, ext) = match b1 & 0x7f {
            126 => match rest.get(2..4) {
                Some(x) => (u64::from(u16::from_be_bytes([x[0], x[1]])), 2),
                None => return false,
            },
            127 => match rest.get(2..10) {
                Some(x) => {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(x);
                    (u64::from_be_bytes(a), 8)
                }
                None => return false,
            },
            n => (u64::from(n), 0),
        };
        if op.is_control() && (b0 & 0x80 == 0 || len > 125) {
            return false;
        }
        let header = 2 + ext + if from_client { 4 } else { 0 };
        let end = (at as u64)
            .saturating_add(header as u64)
            .saturating_add(len);
        if end > b.len() as u64 {
            // A frame larger than what is left: plausible only in a full-size segment, for a
            // frame of sane size.
            return b.len() >= 512 && len < 1 << 24;
        }
        at = end as usize;
    }
    true
}

/// The first bytes of a stream are too few to tell what it is: a strict prefix of an HTTP
/// method, of `SIP/2.0 `, or of a SIP method (capital letters), shorter than [`UNDECIDED_MAX`].
fn undecided(b: &[u8]) -> bool {
    !b.is_empty()
        && b.len() < UNDECIDED_MAX
        && (METHODS
            .iter()
            .any(|m| m.len() > b.len() && m.starts_with(b))
            || (b"SIP/2.0 ".len() > b.len() && b"SIP/2.0 ".starts_with(b))
            || b.iter().all(|c| c.is_ascii_uppercase()))
}

/// Bytes held while [`undecided`]: the longest method with its space ("OPTIONS ", "CONNECT ").
const UNDECIDED_MAX: usize = 8;

const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"HEAD ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];

fn looks_like_http_request(b: &[u8]) -> bool {
    // "OPTIONS sip:" is SIP, not HTTP.
    METHODS.iter().any(|m| b.starts_with(m)) && !looks_like_sip(b)
}

/// A SIP start line: a request (`METHOD sip:...`) or a status line (`SIP/2.0 200`).
pub fn looks_like_sip(b: &[u8]) -> bool {
    let b = &b[sip::leading_crlf_len(b)..];
    if b.starts_with(b"SIP/2.0 ") {
        return true;
    }
    let Some(sp) = b.iter().take(16).position(|&c| c == b' ') else {
        return false;
    };
    let method = &b[..sp];
    let rest = &b[sp + 1..];
    !method.is_empty()
        && method.iter().all(|c| c.is_ascii_uppercase())
        && (rest.starts_with(b"sip:") || rest.starts_with(b"sips:") || rest.starts_with(b"tel:"))
}

fn looks_like_sip_later(b: &[u8]) -> bool {
    looks_like_sip(&b[sip::leading_crlf_len(b)..])
}

// Here, where the private fields are: a live connection silent for minutes is parked encoded
// (`tcp::park`), and every field comes back as it was. What a diagnosis does not keep
// (events, anomalies, WebSocket counts, a TLS hello: `kept`'s refusals), a request waiting for
// its response and a TLS record scan are refused: that connection stays in memory.
crate::tcp::kept::codec_refused!(super::http::UpgradeRequest, TlsRecordScanner);
crate::tcp::kept::codec_enum!(Mode {
    Detect,
    Http,
    WebSocket,
    SipStream,
    Tls,
    Opaque
});
crate::tcp::kept::codec_struct!(WsMessage {
    len,
    prefix,
    contiguous
});
crate::tcp::kept::codec_struct!(WsDir { parser, msg });
crate::tcp::kept::codec_struct!(WsState { stats, dirs });
crate::tcp::kept::codec_struct!(Found {
    service,
    http,
    ws_anomalies,
    sip,
    tls,
    stream_gaps,
    events
});
crate::tcp::kept::codec_struct!(Session {
    ws,
    hb,
    ws_resync,
    mode,
    detail,
    heads,
    details,
    registrations,
    sip_over_ws,
    ws_extensions,
    found,
    held,
    tls_scan,
    pending_request
});

impl crate::tcp::kept::Codec for Held {
    fn put(&self, w: &mut Vec<u8>) -> bool {
        self.0.put(w)
    }
    fn get(r: &mut &[u8]) -> Option<Self> {
        crate::tcp::kept::Codec::get(r).map(Held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_start_lines() {
        assert!(looks_like_sip(b"REGISTER sip:example.com SIP/2.0\r\n"));
        assert!(looks_like_sip(b"SIP/2.0 200 OK\r\n"));
        assert!(looks_like_sip(b"\r\n\r\nOPTIONS sip:a@b SIP/2.0\r\n"));
        assert!(!looks_like_sip(b"GET / HTTP/1.1\r\n"));
        assert!(!looks_like_http_request(b"OPTIONS sip:a@b SIP/2.0\r\n"));
        assert!(looks_like_http_request(b"GET /ws HTTP/1.1\r\n"));
    }

    #[test]
    fn upgrade_then_frames_in_one_segment() {
        let mut s = Session::new(true);
        let req = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n\r\n";
        s.data(true, req, Timestamp(1), 1);
        let mut resp = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: sip\r\n\r\n".to_vec();
        // An unmasked server text frame "\r\n" (a CRLF pong) in the same segment.
        resp.extend_from_slice(&[0x81, 0x02, b'\r', b'\n']);
        s.data(false, &resp, Timestamp(2), 2);
        let sum = s.finish();
        assert_eq!(sum.service, Some(Service::Websocket));
        let h = sum.http.unwrap();
        assert!(h.upgraded);
        assert_eq!(h.accept_ok, Some(true));
        assert_eq!(sum.websocket.unwrap().server.text, 1);
    }

    const KEY_REQ: &[u8] = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n\r\n";
    const OK_101: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: sip\r\n\r\n";

    /// A masked client frame (RFC 6455 §5.2).
    fn client_frame(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
        let key = [1u8, 2, 3, 4];
        let mut v = vec![(u8::from(fin) << 7) | op];
        if payload.len() < 126 {
            v.push(0x80 | payload.len() as u8);
        } else {
            v.push(0x80 | 126);
            v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        v.extend_from_slice(&key);
        v.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        v
    }

    #[test]
    fn redirect_then_upgrade_is_not_a_failed_upgrade() {
        let mut s = Session::new(false);
        s.data(true, KEY_REQ, Timestamp(1), 1);
        s.data(
            false,
            b"HTTP/1.1 301 Moved Permanently\r\nLocation: /ws\r\nContent-Length: 5\r\n\r\nmoved",
            Timestamp(2),
            2,
        );
        s.data(true, KEY_REQ, Timestamp(3), 3);
        s.data(false, OK_101, Timestamp(4), 4);
        let sum = s.finish();
        let h = sum.http.unwrap();
        assert!(h.upgraded);
        assert_eq!(h.requests, 2);
        assert_eq!(h.failed_status, None, "the second request upgraded");
        assert_eq!(sum.service, Some(Service::Websocket));
    }

    #[test]
    fn fragmented_sip_message_is_parsed() {
        let mut s = Session::new(false);
        s.data(true, KEY_REQ, Timestamp(1), 1);
        s.data(false, OK_101, Timestamp(2), 2);
        let msg = b"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK56sdasks\r\nFrom: <sip:alice@example.com>;tag=65bnmj.34asd\r\nTo: <sip:alice@example.com>\r\nCall-ID: aiuy7k9njasd\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n";
        let (a, b) = msg.split_at(40);
        s.data(true, &client_frame(false, 1, a), Timestamp(3), 3);
        // A ping between the fragments (§5.4).
        s.data(true, &client_frame(true, 9, b""), Timestamp(3), 4);
        s.data(true, &client_frame(true, 0, b), Timestamp(4), 5);
        let sum = s.finish();
        let sip = sum.sip.expect("SIP parsed from the reassembled message");
        assert_eq!(sip.registrations.len(), 1);
        assert_eq!(sip.registrations[0].frame_no, 5);
    }

    #[test]
    fn request_split_before_the_method_ends() {
        let mut s = Session::new(false);
        s.data(true, &KEY_REQ[..2], Timestamp(1), 1);
        s.data(true, &KEY_REQ[2..], Timestamp(1), 2);
        s.data(false, OK_101, Timestamp(2), 3);
        let sum = s.finish();
        assert_eq!(sum.service, Some(Service::Websocket));
        assert!(sum.http.unwrap().upgraded);
    }

    /// Every byte of these is paid per live connection (20k in issue 8's target).
    #[test]
    fn live_state_stays_small() {
        assert!(std::mem::size_of::<Session>() <= 256);
        // 312 until the parser's cut-frame buffer was boxed and its prefix cap made 32-bit.
        assert!(std::mem::size_of::<WsState>() <= 280);
        let mut s = Session::new(false);
        s.data(true, KEY_REQ, Timestamp(1), 1);
        s.data(false, OK_101, Timestamp(2), 2);
        s.data(true, &client_frame(true, 1, b"\r\n\r\n"), Timestamp(3), 3);
        assert!(
            s.pending_request.is_none(),
            "the request is not kept after the upgrade"
        );
        assert!(s.held.0.is_none());
        // A frame cut by a segment boundary keeps its bytes so far, then lets them go.
        let frame = client_frame(true, 1, b"REGISTER sip:x SIP/2.0\r\n\r\n");
        s.data(true, &frame[..10], Timestamp(4), 4);
        s.data(true, &frame[10..], Timestamp(4), 5);
        let ws = s.ws.as_ref().unwrap();
        assert_eq!(ws.dirs[0].parser.frames(), 2);
        assert!(!ws.dirs[0].parser.mid_frame());
        assert!(s.finish().sip.is_some());
    }

    #[test]
    fn websocket_resumes_after_a_hole() {
        let mut s = Session::new(false);
        s.data(true, KEY_REQ, Timestamp(1), 1);
        s.data(false, OK_101, Timestamp(2), 2);
        let crlf = client_frame(true, 1, b"\r\n\r\n");
        s.data(true, &crlf, Timestamp(3), 3);
        // A lost segment in the middle of a frame, then the rest of that frame: ignored.
        s.gap(true, 10);
        s.data(
            true,
            &client_frame(true, 1, &[b'x'; 30])[12..],
            Timestamp(4),
            4,
        );
        // The next segments start with frames again.
        for k in 0..3u64 {
            s.data(true, &crlf, Timestamp(5 + k as i64), 5 + k);
        }
        // Server frames never stopped.
        s.data(false, &[0x81, 0x02, b'\r', b'\n'], Timestamp(9), 9);
        let sum = s.finish();
        let ws = sum.websocket.unwrap();
        assert_eq!(ws.client.text, 4, "one before the hole, three after");
        assert!(sum.ws_anomalies.is_empty(), "{:?}", sum.ws_anomalies);
        assert_eq!(ws.server.text, 1);
        assert!(
            !plausible_frames(&[0x81, 0x02, b'a'], true, false),
            "unmasked from the client"
        );
        assert!(!plausible_frames(b"lo world", false, false));
        assert!(plausible_frames(
            &[0x89, 0x00, 0x81, 0x01, b'a'],
            false,
            false
        ));
    }
}
