//! One TCP connection's application layer: what it carries, fed with the in-order bytes of
//! each direction by the reassembler (`tcp::reassembly`), and summarised in `AppSummary`.
//!
//! Detection from the first client bytes: a TLS record (then only record sizes are seen), an
//! HTTP request (then the response; a 101 with `Upgrade: websocket` switches both directions to
//! WebSocket framing, RFC 6455 §4), a SIP start line (SIP over TCP, RFC 3261 §18.3), or opaque
//! bytes. Every buffer is capped: an unrecognised or broken stream costs at most `MAX_HEAD`
//! bytes per direction.

use serde::Serialize;

use super::heartbeat::{self, HbEvent, HbKind, Heartbeat, SmallMsg};
use super::http::{self, UpgradeOutcome, UpgradeRequest, UpgradeResponse};
use super::sip::{self, KeepAlive, SipDialogs};
use super::tls::{self, ClientHello, TlsRecord, TlsRecordScanner};
use super::websocket::{AnomalyKind, Opcode, WsEvent, WsParser, WsStats};
use super::{Parse, MAX_HEAD};
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
    pub request: UpgradeRequest,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<UpgradeResponse>,
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
    pub websocket: Option<WsStats>,
    /// WebSocket protocol violations: (frame number, kind).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ws_anomalies: Vec<(u64, AnomalyKind)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sip: Option<SipDialogs>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientHello>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<Heartbeat>,
    /// Bytes a parser could not follow (holes in the stream).
    pub stream_gaps: u64,
    #[serde(skip)]
    pub events: Vec<AppEvent>,
}

/// Heartbeat candidates and small messages kept per connection: enough for hours of a 25 s
/// heartbeat, bounded for hostile captures.
const MAX_HB_EVENTS: usize = 4096;
const MAX_SMALL: usize = 4096;
/// Application events kept per connection for `--detail`.
pub const MAX_EVENTS: usize = 2000;
/// WebSocket anomalies listed per connection (all are counted in `WsStats`).
const MAX_ANOMALIES: usize = 32;
/// Bytes of a WebSocket message kept to parse SIP from it (a SIP head fits; RFC 7118 §4).
const SIP_PREFIX: usize = 4096;

#[derive(Debug)]
enum Mode {
    Detect,
    Http,
    WebSocket,
    SipStream,
    Tls,
    Opaque,
}

/// The per-connection state.
#[derive(Debug)]
pub struct Session {
    mode: Mode,
    client_buf: Vec<u8>,
    server_buf: Vec<u8>,
    /// Frame and time of the bytes at the start of each buffer (for events).
    ws: Option<(WsParser, WsParser)>,
    sip_over_ws: bool,
    tls_scan: Option<(TlsRecordScanner, TlsRecordScanner)>,
    hb: Vec<HbEvent>,
    small: Vec<SmallMsg>,
    detail: bool,
    pub summary: AppSummary,
    pending_request: Option<UpgradeRequest>,
    ws_stats: WsStats,
    scratch: Vec<WsEvent>,
}

impl Session {
    pub fn new(detail: bool) -> Self {
        Session {
            mode: Mode::Detect,
            client_buf: Vec::new(),
            server_buf: Vec::new(),
            ws: None,
            sip_over_ws: false,
            tls_scan: None,
            hb: Vec::new(),
            small: Vec::new(),
            detail,
            summary: AppSummary::default(),
            pending_request: None,
            ws_stats: WsStats::default(),
            scratch: Vec::new(),
        }
    }

    fn event(
        &mut self,
        ts: Timestamp,
        frame: u64,
        from_client: bool,
        what: impl FnOnce() -> String,
    ) {
        if self.detail && self.summary.events.len() < MAX_EVENTS {
            self.summary.events.push(AppEvent {
                ts,
                frame,
                dir: if from_client { ">" } else { "<" },
                what: what(),
            });
        }
    }

    fn hb(&mut self, ts: Timestamp, kind: HbKind, from_client: bool, size: u32) {
        if self.hb.len() < MAX_HB_EVENTS {
            self.hb.push(HbEvent {
                ts,
                kind,
                from_client,
                size,
            });
        }
    }

    fn small_msg(&mut self, ts: Timestamp, from_client: bool, size: u64) {
        if size <= heartbeat::MAX_SMALL as u64 && self.small.len() < MAX_SMALL {
            self.small.push(SmallMsg {
                ts,
                from_client,
                size: size as u32,
            });
        }
    }

    /// A TCP keep-alive seen by the tracker (Wireshark's rule).
    pub fn tcp_keepalive(&mut self, ts: Timestamp, from_client: bool) {
        self.hb(ts, HbKind::TcpKeepalive, from_client, 0);
    }

    /// In-order bytes of one direction.
    pub fn data(&mut self, from_client: bool, bytes: &[u8], ts: Timestamp, frame: u64) {
        if let Mode::Detect = self.mode {
            self.detect(from_client, bytes);
        }
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
        self.summary.stream_gaps += missing.max(1);
        match self.mode {
            Mode::WebSocket => {
                if let Some((c, s)) = self.ws.as_mut() {
                    if from_client {
                        c.gap()
                    } else {
                        s.gap()
                    }
                }
            }
            Mode::Tls => {
                if let Some((c, s)) = self.tls_scan.as_mut() {
                    if from_client {
                        c.gap()
                    } else {
                        s.gap()
                    }
                }
            }
            Mode::Http | Mode::SipStream | Mode::Detect => {
                // A head with a hole in it cannot be parsed: stop looking at this connection.
                self.client_buf = Vec::new();
                self.server_buf = Vec::new();
                self.mode = Mode::Opaque;
            }
            Mode::Opaque => {}
        }
    }

    fn detect(&mut self, from_client: bool, bytes: &[u8]) {
        let b = bytes;
        if tls::looks_like_tls(b) {
            self.mode = Mode::Tls;
            self.summary.service = Some(Service::Tls);
            self.tls_scan = Some((TlsRecordScanner::new(), TlsRecordScanner::new()));
        } else if from_client && looks_like_http_request(b) {
            self.mode = Mode::Http;
            self.summary.service = Some(Service::Http);
        } else if looks_like_sip(b)
            || sip::is_crlf_keepalive(b).is_some() && looks_like_sip_later(b)
        {
            self.mode = Mode::SipStream;
            self.summary.service = Some(Service::Sip);
        } else if !b.is_empty() {
            self.mode = Mode::Opaque;
        }
    }

    fn http(&mut self, from_client: bool, bytes: &[u8], ts: Timestamp, frame: u64) {
        let buf = if from_client {
            &mut self.client_buf
        } else {
            &mut self.server_buf
        };
        if buf.len() + bytes.len() > MAX_HEAD * 2 {
            self.mode = Mode::Opaque;
            self.client_buf = Vec::new();
            self.server_buf = Vec::new();
            return;
        }
        buf.extend_from_slice(bytes);
        loop {
            if from_client {
                if self.pending_request.is_some() {
                    break; // wait for its response; the client may pipeline frames
                }
                match http::parse_request(&self.client_buf) {
                    Parse::Complete { value, consumed } => {
                        let body = http::request_body_len(&value).unwrap_or(0) as usize;
                        let take = (consumed + body).min(self.client_buf.len());
                        self.client_buf.drain(..take);
                        let line = format!("{} {}", value.method, value.path);
                        self.event(ts, frame, true, || format!("HTTP {line}"));
                        let h = self.summary.http.get_or_insert_with(|| HttpSummary {
                            request: value.clone(),
                            response: None,
                            accept_ok: None,
                            upgraded: false,
                            failed_status: None,
                            upgrade_ts: None,
                            upgrade_frame: None,
                            requests: 0,
                        });
                        h.request = value.clone();
                        h.requests += 1;
                        self.pending_request = Some(value);
                        // Responses may already wait.
                        if !self.server_buf.is_empty() {
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
                let Some(req) = self.pending_request.clone() else {
                    break;
                };
                match http::parse_response(&self.server_buf) {
                    Parse::Complete { value, consumed } => {
                        let outcome = http::upgrade_outcome(&value);
                        let status = value.status;
                        self.event(ts, frame, false, || {
                            format!("HTTP {} {}", value.status, value.reason)
                        });
                        let h = self.summary.http.as_mut().expect("request seen");
                        match outcome {
                            UpgradeOutcome::Interim { .. } => {
                                self.server_buf.drain(..consumed);
                                continue;
                            }
                            UpgradeOutcome::WebSocket | UpgradeOutcome::OtherProtocol { .. } => {
                                h.accept_ok = http::accept_ok(&req, &value);
                                h.upgraded = true;
                                h.upgrade_ts = Some(ts);
                                h.upgrade_frame = Some(frame);
                                h.response = Some(value.clone());
                                self.server_buf.drain(..consumed);
                                if outcome == UpgradeOutcome::WebSocket {
                                    self.start_websocket(&req, &value, ts, frame);
                                } else {
                                    self.mode = Mode::Opaque;
                                    self.client_buf = Vec::new();
                                    self.server_buf = Vec::new();
                                }
                                return;
                            }
                            UpgradeOutcome::Failed { .. } => {
                                if http::is_upgrade_request(&req) {
                                    h.failed_status = Some(status);
                                }
                                h.response = Some(value.clone());
                                let body = http::response_body_len(&value, Some(&req.method))
                                    .unwrap_or(u64::MAX);
                                if body == u64::MAX {
                                    self.mode = Mode::Opaque;
                                    return;
                                }
                                let take = (consumed + body as usize).min(self.server_buf.len());
                                self.server_buf.drain(..take);
                                self.pending_request = None;
                                // The next request may already be buffered.
                                if !self.client_buf.is_empty() {
                                    self.http(true, &[], ts, frame);
                                }
                                return;
                            }
                        }
                    }
                    Parse::Partial => break,
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
        self.summary.service = Some(Service::Websocket);
        let ext = resp.sec_websocket_extensions.is_some();
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
        self.ws = Some((c, s));
        let client_rest = std::mem::take(&mut self.client_buf);
        let server_rest = std::mem::take(&mut self.server_buf);
        if !server_rest.is_empty() {
            self.websocket(false, &server_rest, ts, frame);
        }
        if !client_rest.is_empty() {
            self.websocket(true, &client_rest, ts, frame);
        }
    }

    fn websocket(&mut self, from_client: bool, bytes: &[u8], ts: Timestamp, frame: u64) {
        let Some((c, s)) = self.ws.as_mut() else {
            return;
        };
        let mut events = std::mem::take(&mut self.scratch);
        events.clear();
        if from_client {
            c.push(bytes, ts, frame, &mut events);
        } else {
            s.push(bytes, ts, frame, &mut events);
        }
        for ev in &events {
            self.ws_stats.add(from_client, ev);
            match ev {
                WsEvent::Frame(f) => self.ws_frame(from_client, f),
                WsEvent::Anomaly { frame_no, kind, .. } => {
                    if self.summary.ws_anomalies.len() < MAX_ANOMALIES {
                        self.summary.ws_anomalies.push((*frame_no, kind.clone()));
                    }
                    let k = kind.clone();
                    self.event(ts, *frame_no, from_client, || {
                        format!("WebSocket anomaly: {k:?}")
                    });
                }
            }
        }
        self.scratch = events;
    }

    fn ws_frame(&mut self, from_client: bool, f: &super::websocket::WsFrame) {
        let (ts, frame) = (f.ts, f.last_frame_no);
        match f.opcode {
            Opcode::Ping => self.hb(ts, HbKind::WsPing, from_client, f.payload_len as u32),
            Opcode::Pong => self.hb(ts, HbKind::WsPong, from_client, f.payload_len as u32),
            Opcode::Text | Opcode::Binary if f.fin => {
                let prefix = &f.payload_prefix;
                match sip::is_crlf_keepalive(prefix).filter(|_| f.payload_len <= 4) {
                    Some(KeepAlive::Ping) => {
                        self.hb(ts, HbKind::CrlfPing, from_client, f.payload_len as u32)
                    }
                    Some(KeepAlive::Pong) => {
                        self.hb(ts, HbKind::CrlfPong, from_client, f.payload_len as u32)
                    }
                    None => {
                        self.small_msg(ts, from_client, f.payload_len);
                        if self.sip_over_ws || looks_like_sip(prefix) {
                            if let Parse::Complete { value, .. } =
                                sip::parse_ws_message(prefix, f.payload_len)
                            {
                                self.sip_message(from_client, &value, ts, frame);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
        if self.detail {
            let what = match (&f.opcode, &f.close) {
                (Opcode::Close, Some((code, reason))) => format!(
                    "WebSocket close {} {}",
                    code.map_or("-".into(), |c| c.to_string()),
                    reason
                ),
                _ => format!(
                    "WebSocket {}{} {} bytes",
                    f.opcode.name(),
                    if f.fin { "" } else { " (fragment)" },
                    f.payload_len
                ),
            };
            self.event(ts, frame, from_client, || what);
        }
    }

    fn sip_message(&mut self, from_client: bool, m: &sip::SipMessage, ts: Timestamp, frame: u64) {
        if m.method() == Some("OPTIONS") {
            // SIP OPTIONS pings are an application-level keep-alive (RFC 3261 §11).
            self.hb(ts, HbKind::App, from_client, m.head_len as u32);
        }
        let label = m.label();
        self.event(ts, frame, from_client, || format!("SIP {label}"));
        if self.summary.service.is_none() {
            self.summary.service = Some(Service::Sip);
        }
        self.summary
            .sip
            .get_or_insert_with(SipDialogs::new)
            .add(ts, frame, from_client, m);
    }

    fn sip_stream(&mut self, from_client: bool, bytes: &[u8], ts: Timestamp, frame: u64) {
        {
            let buf = if from_client {
                &mut self.client_buf
            } else {
                &mut self.server_buf
            };
            if buf.len() + bytes.len() > MAX_HEAD * 4 {
                buf.clear();
                return;
            }
            buf.extend_from_slice(bytes);
        }
        loop {
            let buf = if from_client {
                &self.client_buf
            } else {
                &self.server_buf
            };
            // RFC 5626 §3.5.1: CRLF keep-alives between messages on a stream.
            let crlf = sip::leading_crlf_len(buf);
            if crlf > 0 && crlf == buf.len() {
                let kind = if crlf >= 4 {
                    HbKind::CrlfPing
                } else {
                    HbKind::CrlfPong
                };
                self.hb(ts, kind, from_client, crlf as u32);
                if from_client {
                    self.client_buf.clear();
                } else {
                    self.server_buf.clear();
                }
                return;
            }
            match sip::parse_message(buf) {
                Parse::Complete { value, consumed } => {
                    if from_client {
                        self.client_buf.drain(..consumed.min(self.client_buf.len()));
                    } else {
                        self.server_buf.drain(..consumed.min(self.server_buf.len()));
                    }
                    self.small_msg(ts, from_client, consumed as u64);
                    self.sip_message(from_client, &value, ts, frame);
                }
                Parse::Partial => return,
                Parse::Invalid(_) => {
                    if from_client {
                        self.client_buf.clear();
                    } else {
                        self.server_buf.clear();
                    }
                    return;
                }
            }
        }
    }

    fn tls(&mut self, from_client: bool, bytes: &[u8], ts: Timestamp, frame: u64) {
        if from_client && self.summary.tls.is_none() && self.client_buf.len() < MAX_HEAD {
            self.client_buf.extend_from_slice(bytes);
            if let Some(h) = tls::client_hello(&self.client_buf) {
                let sni = h.sni.clone();
                self.event(ts, frame, true, || {
                    format!("TLS ClientHello SNI {}", sni.unwrap_or_else(|| "-".into()))
                });
                self.summary.tls = Some(h);
                self.client_buf = Vec::new();
            }
        }
        let Some((c, s)) = self.tls_scan.as_mut() else {
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
    pub fn finish(mut self) -> AppSummary {
        self.hb.sort_by_key(|e| e.ts);
        self.small.sort_by_key(|m| m.ts);
        self.summary.heartbeat = heartbeat::analyse(&self.hb, &self.small);
        if self.ws.is_some() {
            self.summary.websocket = Some(self.ws_stats);
        }
        self.summary
    }
}

fn looks_like_http_request(b: &[u8]) -> bool {
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
}
