//! HTTP/1.1 heads, mainly the WebSocket opening handshake (RFC 6455 §4), parsed with `httparse`.
//!
//! A WebSocket connection starts as an HTTP/1.1 `GET` with `Upgrade: websocket` and
//! `Connection: Upgrade` (RFC 6455 §4.1, RFC 7230 §6.7); the server answers `101 Switching
//! Protocols` with `Sec-WebSocket-Accept` (RFC 6455 §4.2.2). Anything else (a 401 from an
//! authenticating proxy, a 502/503/504 from a load balancer whose back end is gone) is a failed
//! upgrade, and the status tells why.
//!
//! The same functions parse plain (non-upgrade) HTTP heads, which the caller labels service
//! `http`: e.g. Docker's `101 UPGRADED` to raw TCP (`Upgrade: tcp`), or a `301` before a `101` on
//! the same connection (wstunnel). Only the head is parsed; `consumed` is the head's length, and
//! `content_length` / `chunked` tell the caller how to step over a body before the next head.

use super::{lossy_capped, Parse, MAX_HEAD};
use base64::Engine as _;
use serde::Serialize;

/// Most headers we accept in one head. Real upgrade requests carry about 15–25.
const MAX_HEADERS: usize = 96;
/// Longest header value we keep (values are only displayed).
const MAX_VALUE: usize = 1024;

/// The GUID appended to the key before hashing (RFC 6455 §1.3, §4.2.2).
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A request head; header fields are `None` when absent. Repeated headers are joined with ", "
/// (RFC 7230 §3.2.2), which is what matters for `X-Forwarded-For` chains. `S` is `&str` for a
/// kept head read in place (`RequestHead::view`), which serialises the same.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UpgradeRequest<S = String> {
    pub method: S,
    pub path: S,
    /// Minor version: 1 for HTTP/1.1.
    pub version: u8,
    pub host: Option<S>,
    pub origin: Option<S>,
    pub user_agent: Option<S>,
    /// The `Upgrade` header (RFC 7230 §6.7).
    pub upgrade: Option<S>,
    pub connection: Option<S>,
    pub sec_websocket_key: Option<S>,
    pub sec_websocket_protocol: Option<S>,
    pub sec_websocket_extensions: Option<S>,
    pub sec_websocket_version: Option<S>,
    pub x_forwarded_for: Option<S>,
    pub x_real_ip: Option<S>,
    /// RFC 7239 `Forwarded`.
    pub forwarded: Option<S>,
    pub content_length: Option<u64>,
    /// `Transfer-Encoding` ends in `chunked` (RFC 7230 §3.3.1).
    pub chunked: bool,
}

/// A response head.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UpgradeResponse<S = String> {
    pub status: u16,
    pub reason: S,
    /// Minor version: 1 for HTTP/1.1.
    pub version: u8,
    pub upgrade: Option<S>,
    pub connection: Option<S>,
    pub sec_websocket_accept: Option<S>,
    pub sec_websocket_protocol: Option<S>,
    pub sec_websocket_extensions: Option<S>,
    pub server: Option<S>,
    pub location: Option<S>,
    pub content_length: Option<u64>,
    pub chunked: bool,
}

/// A head kept for the report, in one allocation: a live connection keeps its upgrade's
/// request and response heads (`vantage flows` prints them) for as long as it lives. As a dozen
/// `String`s each, the 20 000 live connections of issue 8's synth held 17 MB of resident memory
/// in them, most of it the allocator's rounding and the holes between small blocks; packed, a
/// head is one block of about its text's length.
///
/// Numbers are LEB128; a string is its length plus one as LEB128 (0 for an absent header), then
/// its bytes. A `ThinVec`: one pointer, as the `Box<UpgradeRequest>` it replaces, so that
/// `AppSummary` (kept for every connection until the report) does not grow.
#[derive(Clone, PartialEq, Eq)]
struct Packed(thin_vec::ThinVec<u8>);

#[derive(Default)]
struct Packer(Vec<u8>);

impl Packer {
    fn uint(&mut self, mut n: u64) -> &mut Self {
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                self.0.push(b);
                return self;
            }
            self.0.push(b | 0x80);
        }
    }

    /// `Option<u64>` as a flag and the number (`Unpacker::opt`).
    fn opt(&mut self, n: Option<u64>) -> &mut Self {
        self.uint(n.is_some().into()).uint(n.unwrap_or(0))
    }

    fn str(&mut self, s: Option<&str>) -> &mut Self {
        self.uint(s.map_or(0, |s| s.len() as u64 + 1));
        self.0.extend_from_slice(s.unwrap_or("").as_bytes());
        self
    }

    /// The head in a block of its exact length: it is kept as long as its connection lives,
    /// so the `Vec`'s growth slack is not.
    fn done(&mut self) -> Packed {
        let mut v = thin_vec::ThinVec::with_capacity(self.0.len());
        v.extend_from_slice(&self.0);
        Packed(v)
    }
}

/// Reads a `Packed` in the order it was written; past its end, zeros and `None`s.
struct Unpacker<'a>(&'a [u8]);

impl<'a> Unpacker<'a> {
    fn uint(&mut self) -> u64 {
        let mut n = 0u64;
        let mut shift = 0u32;
        while let Some((&b, rest)) = self.0.split_first() {
            self.0 = rest;
            if shift < 64 {
                n |= u64::from(b & 0x7f) << shift;
            }
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        n
    }

    fn str(&mut self) -> Option<&'a str> {
        let n = self.uint();
        let len = usize::try_from(n.checked_sub(1)?).unwrap_or(usize::MAX);
        let (s, rest) = self.0.split_at(len.min(self.0.len()));
        self.0 = rest;
        // Written from a `&str`: valid.
        Some(std::str::from_utf8(s).unwrap_or(""))
    }

    /// `Option<u64>` as a flag and the number.
    fn opt(&mut self) -> Option<u64> {
        let some = self.uint() != 0;
        let n = self.uint();
        some.then_some(n)
    }
}

/// A packed head shows and serialises as the head it unpacks to (`get`), read in place
/// (`view`: a `String` for every header of every line was a fifth of `flows --format json`'s
/// allocations).
macro_rules! unpacked_as_head {
    ($t:ty) => {
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.view().fmt(f)
            }
        }

        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.view().serialize(s)
            }
        }
    };
}

/// An [`UpgradeRequest`] as a connection keeps it ([`Packed`]); `get` gives it back whole, and
/// it serialises as the request does.
#[derive(Clone, PartialEq, Eq)]
pub struct RequestHead(Packed);

impl RequestHead {
    pub fn new(r: &UpgradeRequest) -> Self {
        // `Sec-WebSocket-Protocol` first, for `sec_websocket_protocol`.
        RequestHead(
            Packer::default()
                .str(r.sec_websocket_protocol.as_deref())
                .uint(r.version.into())
                .uint(r.chunked.into())
                .opt(r.content_length)
                .str(Some(&r.method))
                .str(Some(&r.path))
                .str(r.host.as_deref())
                .str(r.origin.as_deref())
                .str(r.user_agent.as_deref())
                .str(r.upgrade.as_deref())
                .str(r.connection.as_deref())
                .str(r.sec_websocket_key.as_deref())
                .str(r.sec_websocket_extensions.as_deref())
                .str(r.sec_websocket_version.as_deref())
                .str(r.x_forwarded_for.as_deref())
                .str(r.x_real_ip.as_deref())
                .str(r.forwarded.as_deref())
                .done(),
        )
    }

    /// The request, unpacked.
    pub fn get(&self) -> UpgradeRequest {
        self.unpack(str::to_string)
    }

    /// The request, its text read in place (what it serialises as, without a copy of each
    /// header: `flows --format json` writes every connection's).
    pub fn view(&self) -> UpgradeRequest<&str> {
        self.unpack(|s| s)
    }

    fn unpack<'a, S: Default>(&'a self, text: impl Fn(&'a str) -> S) -> UpgradeRequest<S> {
        let mut u = Unpacker(&self.0 .0);
        let sec_websocket_protocol = u.str().map(&text);
        let version = u.uint() as u8;
        let chunked = u.uint() != 0;
        let content_length = u.opt();
        let mut string = || u.str().map(&text);
        UpgradeRequest {
            method: string().unwrap_or_default(),
            path: string().unwrap_or_default(),
            version,
            host: string(),
            origin: string(),
            user_agent: string(),
            upgrade: string(),
            connection: string(),
            sec_websocket_key: string(),
            sec_websocket_protocol,
            sec_websocket_extensions: string(),
            sec_websocket_version: string(),
            x_forwarded_for: string(),
            x_real_ip: string(),
            forwarded: string(),
            content_length,
            chunked,
        }
    }

    /// `Sec-WebSocket-Protocol`, without unpacking the rest.
    pub fn sec_websocket_protocol(&self) -> Option<&str> {
        Unpacker(&self.0 .0).str()
    }
}

unpacked_as_head!(RequestHead);

/// An [`UpgradeResponse`] as a connection keeps it, as [`RequestHead`] keeps a request.
#[derive(Clone, PartialEq, Eq)]
pub struct ResponseHead(Packed);

impl ResponseHead {
    pub fn new(r: &UpgradeResponse) -> Self {
        ResponseHead(
            Packer::default()
                .str(r.sec_websocket_protocol.as_deref())
                .uint(r.status.into())
                .uint(r.version.into())
                .uint(r.chunked.into())
                .opt(r.content_length)
                .str(Some(&r.reason))
                .str(r.upgrade.as_deref())
                .str(r.connection.as_deref())
                .str(r.sec_websocket_accept.as_deref())
                .str(r.sec_websocket_extensions.as_deref())
                .str(r.server.as_deref())
                .str(r.location.as_deref())
                .done(),
        )
    }

    /// The response, unpacked.
    pub fn get(&self) -> UpgradeResponse {
        self.unpack(str::to_string)
    }

    /// The response, its text read in place (`RequestHead::view`).
    pub fn view(&self) -> UpgradeResponse<&str> {
        self.unpack(|s| s)
    }

    fn unpack<'a, S: Default>(&'a self, text: impl Fn(&'a str) -> S) -> UpgradeResponse<S> {
        let mut u = Unpacker(&self.0 .0);
        let sec_websocket_protocol = u.str().map(&text);
        let status = u.uint() as u16;
        let version = u.uint() as u8;
        let chunked = u.uint() != 0;
        let content_length = u.opt();
        let mut string = || u.str().map(&text);
        UpgradeResponse {
            status,
            reason: string().unwrap_or_default(),
            version,
            upgrade: string(),
            connection: string(),
            sec_websocket_accept: string(),
            sec_websocket_protocol,
            sec_websocket_extensions: string(),
            server: string(),
            location: string(),
            content_length,
            chunked,
        }
    }

    /// `Sec-WebSocket-Protocol`, without unpacking the rest.
    pub fn sec_websocket_protocol(&self) -> Option<&str> {
        Unpacker(&self.0 .0).str()
    }
}

unpacked_as_head!(ResponseHead);

/// What a response did to the connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum UpgradeOutcome {
    /// `101` with `Upgrade: websocket` (RFC 6455 §4.2.2): frames follow.
    WebSocket,
    /// `101` to something else (RFC 7231 §6.2.2), e.g. Docker's `Upgrade: tcp`: raw bytes follow.
    OtherProtocol { protocol: String },
    /// Another 1xx (e.g. `100 Continue`): the final response is still to come (RFC 7231 §6.2).
    Interim { status: u16 },
    /// Any final status other than 101: the upgrade failed (401/403/404, LB's 502/503/504,
    /// a 301/302 redirect, or a plain 200 from a server that ignored the Upgrade).
    Failed { status: u16 },
}

/// Which header values a parse keeps (the others are skipped as unknown ones are).
///
/// A session that keeps neither the heads (`Session::keep_heads`) nor events (a diagnosis)
/// reads of a request its method, `Upgrade`, `Connection`, `Sec-WebSocket-Key` and
/// `Sec-WebSocket-Protocol`, and of a response its status, `Upgrade`, `Sec-WebSocket-Accept`,
/// `Sec-WebSocket-Protocol` and `Sec-WebSocket-Extensions`, besides both framings
/// (`Content-Length`, `Transfer-Encoding`). Copying the other values (the path, Host, Origin,
/// User-Agent, the forwarding headers, the reason, Server, Location), an allocation each, was
/// a fifth of an upgrade's ~22 000 instructions on issue 8's synth. Skipping them cannot
/// change what the kept fields hold, nor whether a head parses: httparse reads every header
/// either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fields {
    /// Every field [`UpgradeRequest`] and [`UpgradeResponse`] have.
    All,
    /// Only those the session reads without heads or events (above); the others stay empty
    /// (`None`, and an empty path or reason).
    Tracked,
}

/// Parses a request head at the start of `buf`.
pub fn parse_request(buf: &[u8]) -> Parse<UpgradeRequest> {
    parse_request_with(buf, Fields::All)
}

/// [`parse_request`], keeping `fields`.
pub fn parse_request_with(buf: &[u8], fields: Fields) -> Parse<UpgradeRequest> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let mut config = httparse::ParserConfig::default();
    config
        .ignore_invalid_headers_in_requests(true)
        .allow_multiple_spaces_in_request_line_delimiters(true);
    let consumed = match config.parse_request(&mut req, buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return partial_or_too_long(buf),
        Err(e) => return Parse::Invalid(format!("HTTP request: {e}")),
    };
    let mut r = UpgradeRequest {
        method: req.method.unwrap_or("").to_string(),
        path: displayed(req.path, fields),
        version: req.version.unwrap_or(1),
        ..Default::default()
    };
    each_header(
        req.headers,
        &mut r.content_length,
        &mut r.chunked,
        |name, v| {
            let slot = match (name, fields) {
                (b"upgrade", _) => &mut r.upgrade,
                (b"connection", _) => &mut r.connection,
                (b"sec-websocket-key", _) => &mut r.sec_websocket_key,
                (b"sec-websocket-protocol", _) => &mut r.sec_websocket_protocol,
                (_, Fields::Tracked) => return,
                (b"host", _) => &mut r.host,
                (b"origin", _) => &mut r.origin,
                (b"user-agent", _) => &mut r.user_agent,
                (b"sec-websocket-extensions", _) => &mut r.sec_websocket_extensions,
                (b"sec-websocket-version", _) => &mut r.sec_websocket_version,
                (b"x-forwarded-for", _) => &mut r.x_forwarded_for,
                (b"x-real-ip", _) => &mut r.x_real_ip,
                (b"forwarded", _) => &mut r.forwarded,
                _ => return,
            };
            join_value(slot, v);
        },
    );
    Parse::Complete { value: r, consumed }
}

/// Room for the longest header name we look for (`sec-websocket-extensions`, 24 bytes).
const NAME_BUF: usize = 32;

/// A header name lower-cased into `buf` (names are case-insensitive, RFC 7230 §3.2), without
/// allocating per header; a name too long for `buf` is none we look for, and comes back empty.
/// Bytes: the names looked for are ASCII, and checking the copy was UTF-8 again cost more
/// than matching it.
fn lower<'a>(name: &str, buf: &'a mut [u8; NAME_BUF]) -> &'a [u8] {
    let Some(out) = buf.get_mut(..name.len()) else {
        return b"";
    };
    out.copy_from_slice(name.as_bytes());
    out.make_ascii_lowercase();
    out
}

/// A start line's path or reason, which only heads and events show: capped, and empty for
/// `Fields::Tracked`.
fn displayed(text: Option<&str>, fields: Fields) -> String {
    match fields {
        Fields::All => lossy_capped(text.unwrap_or("").as_bytes(), MAX_VALUE).into_owned(),
        Fields::Tracked => String::new(),
    }
}

/// Each header of a head: Content-Length and Transfer-Encoding, which frame requests and
/// responses alike (RFC 7230 §3.3), recorded; the others handed to `each` with their name
/// lower-cased.
fn each_header(
    headers: &[httparse::Header<'_>],
    content_length: &mut Option<u64>,
    chunked: &mut bool,
    mut each: impl FnMut(&[u8], &[u8]),
) {
    let mut buf = [0u8; NAME_BUF];
    for h in headers {
        match lower(h.name, &mut buf) {
            b"content-length" => *content_length = parse_content_length(h.value),
            b"transfer-encoding" => *chunked = is_chunked(h.value),
            name => each(name, h.value),
        }
    }
}

/// Parses a response head at the start of `buf`.
pub fn parse_response(buf: &[u8]) -> Parse<UpgradeResponse> {
    parse_response_with(buf, Fields::All)
}

/// [`parse_response`], keeping `fields`.
pub fn parse_response_with(buf: &[u8], fields: Fields) -> Parse<UpgradeResponse> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let mut config = httparse::ParserConfig::default();
    config
        .ignore_invalid_headers_in_responses(true)
        .allow_obsolete_multiline_headers_in_responses(true)
        .allow_multiple_spaces_in_response_status_delimiters(true)
        .allow_spaces_after_header_name_in_responses(true);
    let consumed = match config.parse_response(&mut resp, buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return partial_or_too_long(buf),
        Err(e) => return Parse::Invalid(format!("HTTP response: {e}")),
    };
    let mut r = UpgradeResponse {
        status: resp.code.unwrap_or(0),
        reason: displayed(resp.reason, fields),
        version: resp.version.unwrap_or(1),
        ..Default::default()
    };
    each_header(
        resp.headers,
        &mut r.content_length,
        &mut r.chunked,
        |name, v| {
            let slot = match (name, fields) {
                (b"upgrade", _) => &mut r.upgrade,
                (b"sec-websocket-accept", _) => &mut r.sec_websocket_accept,
                (b"sec-websocket-protocol", _) => &mut r.sec_websocket_protocol,
                (b"sec-websocket-extensions", _) => &mut r.sec_websocket_extensions,
                (_, Fields::Tracked) => return,
                (b"connection", _) => &mut r.connection,
                (b"server", _) => &mut r.server,
                (b"location", _) => &mut r.location,
                _ => return,
            };
            join_value(slot, v);
        },
    );
    Parse::Complete { value: r, consumed }
}

/// `Sec-WebSocket-Accept` the server must send for `key` (RFC 6455 §4.2.2, item 5.4):
/// base64(SHA-1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")). The key is used as sent,
/// without surrounding whitespace.
pub fn expected_accept(key: &str) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key.trim().as_bytes());
    sha.update(WS_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.digest().bytes())
}

/// Whether the response's `Sec-WebSocket-Accept` matches the request's key (RFC 6455 §4.1,
/// client requirement: a wrong value fails the connection). `None` when either is missing.
pub fn accept_ok(req: &UpgradeRequest, resp: &UpgradeResponse) -> Option<bool> {
    let key = req.sec_websocket_key.as_deref()?;
    let accept = resp.sec_websocket_accept.as_deref()?;
    Some(accept.trim() == expected_accept(key))
}

/// Whether a request asks for a WebSocket (RFC 6455 §4.1 items 2, 5, 6): a `GET` whose `Upgrade`
/// lists the token `websocket` and whose `Connection` lists `Upgrade`, both case-insensitive.
pub fn is_websocket_upgrade(req: &UpgradeRequest) -> bool {
    req.method.eq_ignore_ascii_case("GET")
        && has_token(req.upgrade.as_deref(), "websocket")
        && has_token(req.connection.as_deref(), "upgrade")
}

/// Whether a request asks to switch protocol at all (RFC 7230 §6.7), WebSocket or not.
pub fn is_upgrade_request(req: &UpgradeRequest) -> bool {
    req.upgrade.is_some() && has_token(req.connection.as_deref(), "upgrade")
}

/// What a response did (RFC 7231 §6.2, RFC 6455 §4.2.2). Status 101 = upgraded; any other
/// final status = failed upgrade, keeping the status.
pub fn upgrade_outcome(resp: &UpgradeResponse) -> UpgradeOutcome {
    match resp.status {
        101 => {
            if has_token(resp.upgrade.as_deref(), "websocket") {
                UpgradeOutcome::WebSocket
            } else {
                UpgradeOutcome::OtherProtocol {
                    protocol: resp.upgrade.clone().unwrap_or_default(),
                }
            }
        }
        s @ 100..=199 => UpgradeOutcome::Interim { status: s },
        s => UpgradeOutcome::Failed { status: s },
    }
}

/// `true` when the response upgraded the connection to WebSocket (status 101, RFC 6455 §4.2.2).
pub fn upgraded(resp: &UpgradeResponse) -> bool {
    upgrade_outcome(resp) == UpgradeOutcome::WebSocket
}

/// Length of the body that follows a head, when the head fixes it (RFC 7230 §3.3.3): `Some(0)`
/// for 1xx/204/304 responses, `Some(n)` for `Content-Length: n`, `None` when chunked or unknown
/// (the caller then stops parsing heads on that connection).
pub fn response_body_len(resp: &UpgradeResponse, request_method: Option<&str>) -> Option<u64> {
    if matches!(resp.status, 100..=199 | 204 | 304)
        || request_method.is_some_and(|m| m.eq_ignore_ascii_case("HEAD"))
    {
        return Some(0);
    }
    if resp.chunked {
        return None;
    }
    resp.content_length
}

/// Same for a request (RFC 7230 §3.3.3 item 6: no Content-Length and not chunked = no body).
pub fn request_body_len(req: &UpgradeRequest) -> Option<u64> {
    if req.chunked {
        None
    } else {
        Some(req.content_length.unwrap_or(0))
    }
}

/// `Partial` while the head may still fit in [`MAX_HEAD`]; `Invalid` past it.
fn partial_or_too_long<T>(buf: &[u8]) -> Parse<T> {
    if buf.len() >= MAX_HEAD {
        Parse::Invalid(format!("HTTP head longer than {MAX_HEAD} bytes"))
    } else {
        Parse::Partial
    }
}

/// Stores a header value, joining repeats with ", " (RFC 7230 §3.2.2), capped in length.
fn join_value(slot: &mut Option<String>, value: &[u8]) {
    let v = lossy_capped(value, MAX_VALUE);
    let v = v.trim();
    match slot {
        Some(s) if s.len() < MAX_VALUE => {
            s.push_str(", ");
            s.push_str(v);
        }
        Some(_) => {}
        None => *slot = Some(v.to_string()),
    }
}

/// Whether a comma-separated header value lists `token`, case-insensitively (RFC 7230 §7).
fn has_token(value: Option<&str>, token: &str) -> bool {
    value.is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Content-Length (RFC 7230 §3.3.2): digits only; a repeated identical list ("5, 5") is accepted.
fn parse_content_length(v: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(v).ok()?;
    let mut out: Option<u64> = None;
    for part in s.split(',') {
        let p = part.trim();
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n: u64 = p.parse().ok()?;
        if out.is_some_and(|o| o != n) {
            return None;
        }
        out = Some(n);
    }
    out
}

fn is_chunked(v: &[u8]) -> bool {
    let s = String::from_utf8_lossy(v);
    s.split(',')
        .next_back()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A parse for the tracking (`Fields::Tracked`) is the whole parse less the values it
    /// skips, on heads with every header (repeated, in any case, folded by a proxy's list),
    /// on a refusal with a body, and on heads cut short or invalid, which it refuses alike.
    #[test]
    fn a_parse_for_the_tracking_is_the_whole_parse_less_its_fields() {
        let request = b"GET /ws?agent=7 HTTP/1.1\r\nHost: pbx.example:8443\r\nOrigin: https://agents.example\r\nUser-Agent: Mozilla/5.0 (X11)\r\nUPGRADE: websocket\r\nConnection: keep-alive, Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: sip\r\nSec-WebSocket-Protocol: x\r\nSec-WebSocket-Extensions: permessage-deflate\r\nSec-WebSocket-Version: 13\r\nX-Forwarded-For: 198.51.100.7\r\nX-Forwarded-For: 10.0.0.2\r\nX-Real-IP: 198.51.100.7\r\nForwarded: for=198.51.100.7\r\nContent-Length: 0\r\n\r\n";
        let responses: [&[u8]; 2] = [
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: sip\r\nSec-WebSocket-Extensions: permessage-deflate\r\nServer: nginx\r\n\r\n",
            b"HTTP/1.1 401 Unauthorized\r\nServer: nginx\r\nLocation: /login\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello",
        ];
        // Both parses of `bytes`, complete: (whole, for the tracking), each with its length.
        fn both<T>(parse: fn(&[u8], Fields) -> Parse<T>, bytes: &[u8]) -> ((T, usize), (T, usize)) {
            let complete = |p| match p {
                Parse::Complete { value, consumed } => (value, consumed),
                _ => panic!("{}", String::from_utf8_lossy(bytes)),
            };
            (
                complete(parse(bytes, Fields::All)),
                complete(parse(bytes, Fields::Tracked)),
            )
        }
        let ((all, n), tracked) = both(parse_request_with, request);
        assert!(all.user_agent.is_some() && all.x_forwarded_for.is_some() && !all.path.is_empty());
        // The framing headers, matched in any case.
        assert_eq!((all.content_length, all.chunked), (Some(0), false));
        let less = UpgradeRequest {
            path: String::new(),
            host: None,
            origin: None,
            user_agent: None,
            sec_websocket_extensions: None,
            sec_websocket_version: None,
            x_forwarded_for: None,
            x_real_ip: None,
            forwarded: None,
            ..all.clone()
        };
        assert_eq!(tracked, (less, n));
        assert!(is_websocket_upgrade(&all));
        for resp in responses {
            let ((all, n), tracked) = both(parse_response_with, resp);
            assert!(all.server.is_some());
            assert_eq!(all.chunked, all.status == 401);
            let less = UpgradeResponse {
                reason: String::new(),
                connection: None,
                server: None,
                location: None,
                ..all.clone()
            };
            assert_eq!(tracked, (less, n));
        }
        // Cut short, or not HTTP: the same answer either way.
        for bad in [
            &request[..40],
            b"GET / HTTP/1.1\r\nBad Header\r\n\r\n" as &[u8],
            b"\x16\x03\x01",
        ] {
            let kind = |p: Parse<UpgradeRequest>| match p {
                Parse::Complete { .. } => "complete",
                Parse::Partial => "partial",
                Parse::Invalid(_) => "invalid",
            };
            assert_eq!(
                kind(parse_request_with(bad, Fields::All)),
                kind(parse_request_with(bad, Fields::Tracked))
            );
        }
    }

    /// Every field of a packed head comes back, present or absent, short or long (a length
    /// past 127 takes two LEB128 bytes, past 16 383 three), and serialises as the head did.
    #[test]
    fn packed_heads_round_trip() {
        let long = "x".repeat(20_000);
        let full = UpgradeRequest {
            method: "GET".into(),
            path: "/ws?a=é".into(),
            version: 1,
            host: Some("pbx.example".into()),
            origin: Some("".into()),
            user_agent: Some("a".repeat(200)),
            upgrade: Some("websocket".into()),
            connection: Some("Upgrade".into()),
            sec_websocket_key: Some("dGhlIHNhbXBsZSBub25jZQ==".into()),
            sec_websocket_protocol: Some("sip".into()),
            sec_websocket_extensions: Some(long.clone()),
            sec_websocket_version: Some("13".into()),
            x_forwarded_for: Some("10.0.0.1, 10.0.0.2".into()),
            x_real_ip: Some("10.0.0.1".into()),
            forwarded: Some("for=10.0.0.1".into()),
            content_length: Some(u64::MAX),
            chunked: true,
        };
        for r in [full, UpgradeRequest::default()] {
            let p = RequestHead::new(&r);
            assert_eq!(p.get(), r);
            assert_eq!(
                p.sec_websocket_protocol(),
                r.sec_websocket_protocol.as_deref()
            );
            assert_eq!(
                serde_json::to_value(&p).unwrap(),
                serde_json::to_value(&r).unwrap()
            );
            // Read in place (`view`), it shows and serialises as the head whole.
            assert_eq!(format!("{p:?}"), format!("{r:?}"));
            assert_eq!(
                serde_json::to_string(&p.view()).unwrap(),
                serde_json::to_string(&r).unwrap()
            );
        }
        let full = UpgradeResponse {
            status: 101,
            reason: "Switching Protocols".into(),
            version: 1,
            upgrade: Some("websocket".into()),
            connection: None,
            sec_websocket_accept: Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into()),
            sec_websocket_protocol: Some("sip".into()),
            sec_websocket_extensions: Some("permessage-deflate".into()),
            server: Some(long),
            location: None,
            content_length: Some(0),
            chunked: false,
        };
        for r in [full, UpgradeResponse::default()] {
            let p = ResponseHead::new(&r);
            assert_eq!(p.get(), r);
            assert_eq!(
                p.sec_websocket_protocol(),
                r.sec_websocket_protocol.as_deref()
            );
            assert_eq!(
                serde_json::to_value(&p).unwrap(),
                serde_json::to_value(&r).unwrap()
            );
            // Read in place (`view`), it shows and serialises as the head whole.
            assert_eq!(format!("{p:?}"), format!("{r:?}"));
            assert_eq!(
                serde_json::to_string(&p.view()).unwrap(),
                serde_json::to_string(&r).unwrap()
            );
        }
    }

    /// A Chrome upgrade as a web-phone sends it through a load balancer.
    const CHROME_REQ: &[u8] = b"GET /ws HTTP/1.1\r\n\
Host: pbx.example.com\r\n\
Connection: Upgrade\r\n\
Pragma: no-cache\r\n\
Cache-Control: no-cache\r\n\
User-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36\r\n\
Upgrade: websocket\r\n\
Origin: https://phone.example.com\r\n\
Sec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
Sec-WebSocket-Protocol: sip\r\n\
X-Forwarded-For: 203.0.113.7\r\n\
x-forwarded-for: 10.0.0.5\r\n\
X-Real-IP: 203.0.113.7\r\n\
\r\n";

    const OK_RESP: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\n\
Upgrade: websocket\r\n\
Connection: Upgrade\r\n\
Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
Sec-WebSocket-Protocol: sip\r\n\
\r\n";

    fn req() -> UpgradeRequest {
        match parse_request(CHROME_REQ) {
            Parse::Complete { value, consumed } => {
                assert_eq!(consumed, CHROME_REQ.len());
                value
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn chrome_upgrade_request() {
        let r = req();
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/ws");
        assert_eq!(r.host.as_deref(), Some("pbx.example.com"));
        assert_eq!(r.origin.as_deref(), Some("https://phone.example.com"));
        assert_eq!(r.sec_websocket_protocol.as_deref(), Some("sip"));
        assert_eq!(r.sec_websocket_version.as_deref(), Some("13"));
        assert_eq!(
            r.x_forwarded_for.as_deref(),
            Some("203.0.113.7, 10.0.0.5"),
            "repeated headers are joined, names case-insensitive"
        );
        assert_eq!(r.x_real_ip.as_deref(), Some("203.0.113.7"));
        assert!(r.user_agent.unwrap_or_default().contains("Chrome/120"));
        assert!(r.sec_websocket_extensions.is_some());
        assert!(is_websocket_upgrade(&req()));
        assert_eq!(request_body_len(&req()), Some(0));
    }

    #[test]
    fn rfc6455_example_accept() {
        // RFC 6455 §1.3.
        assert_eq!(
            expected_accept("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let (resp, n) = parse_response(OK_RESP).complete().unwrap();
        assert_eq!(n, OK_RESP.len());
        assert_eq!(resp.status, 101);
        assert_eq!(resp.reason, "Switching Protocols");
        assert_eq!(accept_ok(&req(), &resp), Some(true));
        assert!(upgraded(&resp));
        assert_eq!(upgrade_outcome(&resp), UpgradeOutcome::WebSocket);
    }

    #[test]
    fn wrong_accept_detected() {
        let bad = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n";
        let (resp, _) = parse_response(bad).complete().unwrap();
        assert_eq!(accept_ok(&req(), &resp), Some(false));
        let none = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
        let (resp, _) = parse_response(none).complete().unwrap();
        assert_eq!(accept_ok(&req(), &resp), None);
    }

    #[test]
    fn unauthorized_is_failed_upgrade() {
        let r = b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"x\"\r\nContent-Length: 12\r\n\r\nUnauthorized";
        let (resp, n) = parse_response(r).complete().unwrap();
        assert_eq!(resp.status, 401);
        assert_eq!(
            upgrade_outcome(&resp),
            UpgradeOutcome::Failed { status: 401 }
        );
        assert!(!upgraded(&resp));
        assert_eq!(response_body_len(&resp, Some("GET")), Some(12));
        assert_eq!(&r[n..], b"Unauthorized");
        let r = b"HTTP/1.1 503 Service Unavailable\r\n\r\n";
        let (resp, _) = parse_response(r).complete().unwrap();
        assert_eq!(
            upgrade_outcome(&resp),
            UpgradeOutcome::Failed { status: 503 }
        );
    }

    #[test]
    fn partial_input() {
        for cut in [0, 1, 5, 20, CHROME_REQ.len() - 1] {
            assert_eq!(
                parse_request(&CHROME_REQ[..cut]),
                Parse::Partial,
                "cut {cut}"
            );
        }
        for cut in [0, 3, 12, OK_RESP.len() - 2] {
            assert_eq!(parse_response(&OK_RESP[..cut]), Parse::Partial, "cut {cut}");
        }
        // A head that never ends gives up at MAX_HEAD.
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.resize(MAX_HEAD + 10, b'a');
        assert!(matches!(parse_request(&long), Parse::Invalid(_)));
    }

    #[test]
    fn not_http_is_invalid() {
        assert!(matches!(
            parse_request(b"\x16\x03\x01\x02\x00\x01\x00"),
            Parse::Invalid(_)
        ));
        assert!(matches!(
            parse_response(b"SIP/2.0 200 OK\r\n\r\n"),
            Parse::Invalid(_)
        ));
    }

    #[test]
    fn docker_upgrade_to_tcp() {
        let q = b"POST /v1.41/containers/abc/attach?stream=1&stdout=1 HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n";
        let (r, _) = parse_request(q).complete().unwrap();
        assert!(is_upgrade_request(&r));
        assert!(!is_websocket_upgrade(&r));
        let a = b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n\x01\x00\x00\x00";
        let (resp, n) = parse_response(a).complete().unwrap();
        assert_eq!(resp.reason, "UPGRADED");
        assert_eq!(
            upgrade_outcome(&resp),
            UpgradeOutcome::OtherProtocol {
                protocol: "tcp".into()
            }
        );
        assert_eq!(&a[n..], b"\x01\x00\x00\x00");
    }

    #[test]
    fn redirect_then_upgrade_on_same_connection() {
        // wstunnel: a 301 with a body, then the 101, back to back in one stream.
        let stream = b"HTTP/1.1 301 Moved Permanently\r\nLocation: /v1/events\r\nContent-Length: 5\r\n\r\nmovedHTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n";
        let (first, n) = parse_response(stream).complete().unwrap();
        assert_eq!(
            upgrade_outcome(&first),
            UpgradeOutcome::Failed { status: 301 }
        );
        assert_eq!(first.location.as_deref(), Some("/v1/events"));
        let body = response_body_len(&first, Some("GET")).unwrap() as usize;
        let (second, _) = parse_response(&stream[n + body..]).complete().unwrap();
        assert!(upgraded(&second));
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let _ = parse_request(&data);
            let _ = parse_response(&data);
            let mut with_prefix = b"GET / HTTP/1.1\r\n".to_vec();
            with_prefix.extend_from_slice(&data);
            let _ = parse_request(&with_prefix);
        }
    }
}
