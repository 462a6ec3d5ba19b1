//! SIP messages (RFC 3261) on a stream, in one WebSocket message (RFC 7118) or a UDP datagram,
//! CRLF keep-alives (RFC 5626), and a bounded tracker of INVITE dialogs and registrations.
//!
//! Only the head is parsed, and only the fields the diagnosis needs are kept: which call
//! (Call-ID, CSeq), where it is (start line), and for how long a registration holds
//! (Expires); `flows` and the HTML report add the tags, URIs, Via and agents (`Fields`).
//! Bodies are never copied.

use super::{lossy_capped, Parse, Side, MAX_HEAD};
use crate::capture::Timestamp;
use serde::Serialize;
use std::borrow::Cow;
use std::collections::HashMap;

/// Largest Content-Length we wait for on a stream. SIP bodies (SDP, XML) are a few KB; a larger
/// value on a stream is taken as "not SIP" rather than buffered.
pub const MAX_BODY: u64 = 1 << 20;
/// Longest header value kept.
const MAX_VALUE: usize = 512;
/// Default caps of [`SipDialogs`].
pub const MAX_DIALOGS: usize = 10_000;
pub const MAX_REGISTRATIONS: usize = 10_000;
/// Dialogs are found by Call-ID through a map only from this many on; fewer are scanned. An
/// agent's connection has a call or two at a time, and the map with its copy of each Call-ID
/// was ~200 bytes of every live connection that had one.
const INDEX_FROM: usize = 16;
/// Without details (`SipDialogs::keep_details`), a call is forgotten this long after it ended:
/// far beyond any SIP transaction timer (Timer B and F: 64 × T1 = 32 s, RFC 3261 §17.1.1.2),
/// so no late response can still move it.
pub const FORGET_ENDED_AFTER_S: i64 = 120;

/// Start line (RFC 3261 §7.1 Request-Line, §7.2 Status-Line).
///
/// Text fields borrow from the parsed buffer when they can (valid UTF-8, not cut, not folded),
/// so that parsing a message allocates nothing in the common case.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Start<'a> {
    Request {
        method: Cow<'a, str>,
        uri: Cow<'a, str>,
    },
    Response {
        code: u16,
        reason: Cow<'a, str>,
    },
}

/// The parts of a SIP message the diagnosis uses. Header fields are `None` when absent. Values
/// borrow from the buffer that was parsed; [`SipMessage::into_owned`] detaches them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SipMessage<'a> {
    pub start: Start<'a>,
    pub call_id: Option<Cow<'a, str>>,
    pub cseq_num: Option<u32>,
    pub cseq_method: Option<Cow<'a, str>>,
    pub from_tag: Option<Cow<'a, str>>,
    pub to_tag: Option<Cow<'a, str>>,
    pub from_uri: Option<Cow<'a, str>>,
    pub to_uri: Option<Cow<'a, str>>,
    /// `branch` of the topmost Via (RFC 3261 §8.1.1.7, §20.42).
    pub via_branch: Option<Cow<'a, str>>,
    /// Transport of the topmost Via, e.g. "WSS", "TCP", "UDP" (RFC 7118 §5 adds WS/WSS).
    pub via_transport: Option<Cow<'a, str>>,
    /// The first Contact value as sent (RFC 3261 §20.10).
    pub contact: Option<Cow<'a, str>>,
    /// Expires header (§20.19), else the `expires` parameter of the first Contact (§10.2.1.1).
    pub expires: Option<u32>,
    pub user_agent: Option<Cow<'a, str>>,
    pub server: Option<Cow<'a, str>>,
    /// Reason header (RFC 3326), e.g. on a BYE or CANCEL: why the call ended.
    pub reason_header: Option<Cow<'a, str>>,
    pub content_length: Option<u64>,
    pub content_type: Option<Cow<'a, str>>,
    /// Body bytes: Content-Length on a stream, the rest of the buffer in a datagram.
    pub body_len: u64,
    /// Bytes of start line + headers + blank line.
    pub head_len: usize,
    /// Empty lines skipped before the start line (RFC 3261 §7.5).
    pub leading_crlf: usize,
}

impl SipMessage<'_> {
    pub fn method(&self) -> Option<&str> {
        match &self.start {
            Start::Request { method, .. } => Some(method),
            Start::Response { .. } => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match &self.start {
            Start::Response { code, .. } => Some(*code),
            Start::Request { .. } => None,
        }
    }

    /// Short label: the method, or the status code.
    pub fn label(&self) -> String {
        match &self.start {
            Start::Request { method, .. } => method.to_string(),
            Start::Response { code, .. } => code.to_string(),
        }
    }

    /// The same message, owning its text.
    pub fn into_owned(self) -> SipMessage<'static> {
        fn own(c: Option<Cow<'_, str>>) -> Option<Cow<'static, str>> {
            c.map(|c| Cow::Owned(c.into_owned()))
        }
        SipMessage {
            start: match self.start {
                Start::Request { method, uri } => Start::Request {
                    method: Cow::Owned(method.into_owned()),
                    uri: Cow::Owned(uri.into_owned()),
                },
                Start::Response { code, reason } => Start::Response {
                    code,
                    reason: Cow::Owned(reason.into_owned()),
                },
            },
            call_id: own(self.call_id),
            cseq_num: self.cseq_num,
            cseq_method: own(self.cseq_method),
            from_tag: own(self.from_tag),
            to_tag: own(self.to_tag),
            from_uri: own(self.from_uri),
            to_uri: own(self.to_uri),
            via_branch: own(self.via_branch),
            via_transport: own(self.via_transport),
            contact: own(self.contact),
            expires: self.expires,
            user_agent: own(self.user_agent),
            server: own(self.server),
            reason_header: own(self.reason_header),
            content_length: self.content_length,
            content_type: own(self.content_type),
            body_len: self.body_len,
            head_len: self.head_len,
            leading_crlf: self.leading_crlf,
        }
    }
}

/// CRLF keep-alive (RFC 5626 §3.5.1, §4.4.1): the client pings with CRLF CRLF, the server
/// answers ("pong") with one CRLF.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeepAlive {
    Ping,
    Pong,
}

/// Recognises a whole keep-alive: `buf` is exactly "\r\n\r\n" (ping) or "\r\n" (pong), as one
/// WebSocket message, one UDP datagram, or one TCP segment's payload.
pub fn is_crlf_keepalive(buf: &[u8]) -> Option<KeepAlive> {
    match buf {
        b"\r\n\r\n" => Some(KeepAlive::Ping),
        b"\r\n" => Some(KeepAlive::Pong),
        _ => None,
    }
}

/// Number of CR and LF bytes at the start of `buf`. On a stream, keep-alives sit between
/// messages (RFC 5626 §3.5.1); the caller classifies and skips them before [`parse_message`].
pub fn leading_crlf_len(buf: &[u8]) -> usize {
    buf.iter()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .count()
}

/// Parses one message at the start of a stream buffer. The body is framed by Content-Length
/// (RFC 3261 §18.3: mandatory on streams; absent = no body here). Leading empty lines are
/// skipped and counted (§7.5), so call [`leading_crlf_len`] first to see keep-alives.
pub fn parse_message(buf: &[u8]) -> Parse<SipMessage<'_>> {
    parse_message_with(buf, Fields::All)
}

/// [`parse_message`] keeping only `fields`.
pub fn parse_message_with(buf: &[u8], fields: Fields) -> Parse<SipMessage<'_>> {
    let skip = leading_crlf_len(buf);
    let rest = buf.get(skip..).unwrap_or(&[]);
    if rest.is_empty() {
        return Parse::Partial;
    }
    let mut ends = LineEnds::default();
    let Some(head_len) = find_head_end(rest, &mut ends) else {
        // Give up early on a start line that cannot be SIP.
        if let Some(line) = first_line(rest) {
            if let Err(e) = parse_start(&String::from_utf8_lossy(line)) {
                return Parse::Invalid(e);
            }
        }
        return if rest.len() >= MAX_HEAD {
            Parse::Invalid(format!("SIP head longer than {MAX_HEAD} bytes"))
        } else {
            Parse::Partial
        };
    };
    let head = rest.get(..head_len).unwrap_or(rest);
    let mut msg = match parse_head(head, fields, &ends) {
        Ok(m) => m,
        Err(e) => return Parse::Invalid(e),
    };
    let body = msg.content_length.unwrap_or(0);
    if body > MAX_BODY {
        return Parse::Invalid(format!("Content-Length {body} too large"));
    }
    let total = skip as u64 + head_len as u64 + body;
    if (buf.len() as u64) < total {
        return Parse::Partial;
    }
    msg.body_len = body;
    msg.head_len = head_len;
    msg.leading_crlf = skip;
    Parse::Complete {
        value: msg,
        consumed: total as usize,
    }
}

/// Parses a message that fills `buf` (one UDP datagram, RFC 3261 §18.3, or one WebSocket
/// message, RFC 7118 §4): the body is the rest of the buffer, whatever Content-Length says.
pub fn parse_datagram(buf: &[u8]) -> Parse<SipMessage<'_>> {
    parse_datagram_with(buf, Fields::All)
}

/// [`parse_datagram`] keeping only `fields`.
pub fn parse_datagram_with(buf: &[u8], fields: Fields) -> Parse<SipMessage<'_>> {
    let skip = leading_crlf_len(buf);
    let rest = buf.get(skip..).unwrap_or(&[]);
    if rest.is_empty() {
        return Parse::Invalid("empty".into());
    }
    let mut ends = LineEnds::default();
    let head_len = find_head_end(rest, &mut ends).unwrap_or(rest.len().min(MAX_HEAD));
    let head = rest.get(..head_len).unwrap_or(rest);
    let mut msg = match parse_head(head, fields, &ends) {
        Ok(m) => m,
        Err(e) => return Parse::Invalid(e),
    };
    msg.body_len = rest.len().saturating_sub(head_len) as u64;
    msg.head_len = head_len;
    msg.leading_crlf = skip;
    Parse::Complete {
        value: msg,
        consumed: buf.len(),
    }
}

/// Parses a SIP message carried in one WebSocket message (RFC 7118 §4) of which only a prefix
/// was kept (see `websocket::WsParser::set_prefix_cap`): `total_len` is the whole message's
/// length. Whole message: as [`parse_datagram`]. Cut message: the head must end inside the
/// prefix (else `Partial`: keep a larger prefix), and the body is the rest of `total_len`.
pub fn parse_ws_message(prefix: &[u8], total_len: u64) -> Parse<SipMessage<'_>> {
    parse_ws_message_with(prefix, total_len, Fields::All)
}

/// [`parse_ws_message`] keeping only `fields`.
pub fn parse_ws_message_with(
    prefix: &[u8],
    total_len: u64,
    fields: Fields,
) -> Parse<SipMessage<'_>> {
    if prefix.len() as u64 >= total_len {
        return parse_datagram_with(prefix, fields);
    }
    let skip = leading_crlf_len(prefix);
    let rest = prefix.get(skip..).unwrap_or(&[]);
    let mut ends = LineEnds::default();
    let Some(head_len) = find_head_end(rest, &mut ends) else {
        if let Some(line) = first_line(rest) {
            if let Err(e) = parse_start(&String::from_utf8_lossy(line)) {
                return Parse::Invalid(e);
            }
        }
        return Parse::Partial;
    };
    let head = rest.get(..head_len).unwrap_or(rest);
    let mut msg = match parse_head(head, fields, &ends) {
        Ok(m) => m,
        Err(e) => return Parse::Invalid(e),
    };
    msg.body_len = total_len.saturating_sub((skip + head_len) as u64);
    msg.head_len = head_len;
    msg.leading_crlf = skip;
    Parse::Complete {
        value: msg,
        consumed: prefix.len(),
    }
}

/// Length of the head including the empty line that ends it (RFC 3261 §7: CRLF CRLF; bare LF
/// tolerated), searched within [`MAX_HEAD`] bytes.
/// Every line end (LF) of the head it finds goes in `ends`, for `Lines` to take rather than
/// search for again; without an end, every one within [`MAX_HEAD`] bytes.
fn find_head_end(buf: &[u8], ends: &mut LineEnds) -> Option<usize> {
    let window = buf.get(..buf.len().min(MAX_HEAD)).unwrap_or(buf);
    // memchr: the head is ~500 bytes with a line end every ~40; a byte loop cost ~10
    // instructions a byte, a fifth of a SIP message's parse.
    for i in memchr::memchr_iter(b'\n', window) {
        ends.push(i);
        match (window.get(i + 1), window.get(i + 2)) {
            (Some(b'\n'), _) => {
                ends.push(i + 1);
                return Some(i + 2);
            }
            (Some(b'\r'), Some(b'\n')) => {
                ends.push(i + 2);
                return Some(i + 3);
            }
            _ => {}
        }
    }
    None
}

/// A head's line ends as `find_head_end` found them: the first [`HEAD_LINE_ENDS`] (a head has
/// ~12 lines), and whether there were more. `Lines` searched for them again, a memchr call a
/// line (~35 instructions with its set-up, on lines of ~40 bytes).
struct LineEnds {
    at: [u32; HEAD_LINE_ENDS],
    n: usize,
    more: bool,
}

const HEAD_LINE_ENDS: usize = 48;
// Positions within `MAX_HEAD` bytes fit 32 bits.
const _: () = assert!(MAX_HEAD <= u32::MAX as usize);

impl Default for LineEnds {
    fn default() -> Self {
        LineEnds {
            at: [0; HEAD_LINE_ENDS],
            n: 0,
            more: false,
        }
    }
}

impl LineEnds {
    fn push(&mut self, i: usize) {
        match self.at.get_mut(self.n) {
            Some(slot) => {
                *slot = i as u32;
                self.n += 1;
            }
            None => self.more = true,
        }
    }

    fn known(&self) -> &[u32] {
        self.at.get(..self.n).unwrap_or(&[])
    }
}

fn first_line(buf: &[u8]) -> Option<&[u8]> {
    let end = buf.iter().position(|&b| b == b'\n')?;
    let line = buf.get(..end)?;
    Some(line.strip_suffix(b"\r").unwrap_or(line))
}

/// The header fields [`parse_head`] keeps. Compact names (RFC 3261 §7.3.3) are expanded, and
/// names compare case-insensitively (§7.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    CallId,
    CSeq,
    From,
    To,
    Via,
    Contact,
    Expires,
    UserAgent,
    Server,
    Reason,
    ContentType,
    ContentLength,
    /// Any other header: skipped (including its folded lines).
    Other,
}

impl Field {
    fn of(name: &str) -> Field {
        let n = trim(name).as_bytes();
        if let [c] = n {
            // Compact forms of the fields kept (§7.3.3; the others expand to fields not kept).
            return match c.to_ascii_lowercase() {
                b'i' => Field::CallId,
                b'v' => Field::Via,
                b'f' => Field::From,
                b't' => Field::To,
                b'm' => Field::Contact,
                b'l' => Field::ContentLength,
                b'c' => Field::ContentType,
                _ => Field::Other,
            };
        }
        const LONG: [(&str, Field); 12] = [
            ("call-id", Field::CallId),
            ("cseq", Field::CSeq),
            ("from", Field::From),
            ("to", Field::To),
            ("via", Field::Via),
            ("contact", Field::Contact),
            ("expires", Field::Expires),
            ("user-agent", Field::UserAgent),
            ("server", Field::Server),
            ("reason", Field::Reason),
            ("content-type", Field::ContentType),
            ("content-length", Field::ContentLength),
        ];
        // Most headers of a message are kept ones; the others (Max-Forwards, Allow,
        // Supported, ...) mostly differ in length from all twelve.
        LONG.iter()
            .find(|(long, _)| long.len() == n.len() && n.eq_ignore_ascii_case(long.as_bytes()))
            .map_or(Field::Other, |&(_, f)| f)
    }
}

/// Which header fields a parse keeps (the others are skipped as unknown ones are).
///
/// The call and registration tracking without details (`SipDialogs::keep_details`, a
/// diagnosis) reads a message's start line, Call-ID, CSeq, Contact, Expires, Reason and
/// Content-Length; From, To (their URIs and tags), Via, User-Agent, Server and Content-Type
/// are printed only by `flows` and the HTML report. Their name-addr and parameter parsing was
/// a quarter of a SIP message's parse (the 200 MB synth: 60 000 messages, ~10 000
/// instructions each; 2.5 % of a diagnosis). Skipping them cannot change what the kept fields
/// hold, nor whether a message parses: only Content-Length can make a head invalid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fields {
    /// Every field [`SipMessage`] has.
    All,
    /// Only the fields the tracking reads without details (above); the others stay `None`.
    Tracked,
}

impl Fields {
    /// `field` as a parse with these fields treats it: skipped (`Other`) when not kept.
    fn keeps(self, field: Field) -> Field {
        match (self, field) {
            (
                Fields::Tracked,
                Field::From
                | Field::To
                | Field::Via
                | Field::UserAgent
                | Field::Server
                | Field::ContentType,
            ) => Field::Other,
            _ => field,
        }
    }
}

/// Parses the start line and headers (no body). Folded lines (leading SP/HT, RFC 3261 §7.3.1)
/// are joined to the previous header; lines without a colon are skipped. Bytes that are not
/// UTF-8 read as U+FFFD (then the message owns its text).
/// `ends`: the head's line ends (`find_head_end`), where they are still the text's.
fn parse_head<'h>(
    head: &'h [u8],
    fields: Fields,
    ends: &LineEnds,
) -> Result<SipMessage<'h>, String> {
    match std::str::from_utf8(head) {
        Ok(text) => parse_head_text(Lines::known(text, ends), head.len(), fields),
        Err(_) => {
            // U+FFFD takes three bytes where a bad byte took one: the ends are searched again.
            let text = String::from_utf8_lossy(head);
            parse_head_text(Lines::new(&text), head.len(), fields).map(SipMessage::into_owned)
        }
    }
}

fn parse_head_text<'t>(
    mut lines: Lines<'t, '_>,
    head_len: usize,
    fields: Fields,
) -> Result<SipMessage<'t>, String> {
    let start = parse_start(lines.next().unwrap_or(""))?;
    let mut msg = SipMessage {
        start,
        call_id: None,
        cseq_num: None,
        cseq_method: None,
        from_tag: None,
        to_tag: None,
        from_uri: None,
        to_uri: None,
        via_branch: None,
        via_transport: None,
        contact: None,
        expires: None,
        user_agent: None,
        server: None,
        reason_header: None,
        content_length: None,
        content_type: None,
        body_len: 0,
        head_len,
        leading_crlf: 0,
    };
    let mut contact_expires = None;
    // The header being read: it is applied once the next line shows it is not folded.
    let mut pending: Option<(Field, Cow<'_, str>)> = None;
    for line in lines {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((field, v)) = pending.as_mut() {
                if *field != Field::Other && v.len() < MAX_VALUE {
                    let v = v.to_mut();
                    v.push(' ');
                    v.push_str(trim(line));
                }
            }
            continue;
        }
        let Some((name, value)) = split_once_byte(line, b':') else {
            continue;
        };
        if let Some((field, v)) = pending.take() {
            apply(&mut msg, &mut contact_expires, field, v)?;
        }
        let field = fields.keeps(Field::of(name));
        let value = if field == Field::Other {
            Cow::Borrowed("")
        } else {
            cap(trim(value))
        };
        pending = Some((field, value));
    }
    if let Some((field, v)) = pending {
        apply(&mut msg, &mut contact_expires, field, v)?;
    }
    if msg.expires.is_none() {
        msg.expires = contact_expires;
    }
    Ok(msg)
}

/// The lines of a head, split at LF with a CR before it dropped (RFC 3261 §7: CRLF; bare LF
/// tolerated), as `text.split('\n')` with `strip_suffix('\r')`. The line ends are those
/// `find_head_end` found (`Lines::known`), or found with memchr (`str::split`'s searcher cost
/// ~200 instructions a line).
struct Lines<'a, 'e> {
    text: &'a str,
    /// Line ends known already (`LineEnds`), taken first.
    known: &'e [u32],
    /// Past them, whether to search for more (none were known, or not all).
    search: bool,
    at: usize,
    done: bool,
}

impl<'a, 'e> Lines<'a, 'e> {
    fn new(text: &'a str) -> Self {
        Lines {
            text,
            known: &[],
            search: true,
            at: 0,
            done: false,
        }
    }

    /// With the line ends `find_head_end` found in `text`'s bytes: every one of the head, or
    /// the first of them and a search for the rest.
    fn known(text: &'a str, ends: &'e LineEnds) -> Self {
        Lines {
            text,
            known: ends.known(),
            search: ends.more,
            at: 0,
            done: false,
        }
    }
}

impl<'a> Iterator for Lines<'a, '_> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.done {
            return None;
        }
        let end = if let Some((&end, rest)) = self.known.split_first() {
            self.known = rest;
            Some(end as usize)
        } else if self.search {
            let rest = self.text.as_bytes().get(self.at..).unwrap_or(&[]);
            memchr::memchr(b'\n', rest).map(|i| self.at + i)
        } else {
            None
        };
        let end = match end {
            Some(end) => end,
            None => {
                self.done = true;
                self.text.len()
            }
        };
        // LF is ASCII: both ends are character boundaries.
        let line = self.text.get(self.at..end).unwrap_or("");
        self.at = end + 1;
        Some(line.strip_suffix('\r').unwrap_or(line))
    }
}

/// `s` split around the first `b`, an ASCII byte (so both parts are on character boundaries:
/// UTF-8 continuation and lead bytes are never ASCII), as `s.split_once(char::from(b))`
/// without the char searcher's setup, which cost more than the search on these short values.
fn split_once_byte(s: &str, b: u8) -> Option<(&str, &str)> {
    let i = memchr::memchr(b, s.as_bytes())?;
    Some((s.get(..i)?, s.get(i + 1..)?))
}

/// `str::trim`, with ASCII ends settled without decoding characters. Exactly `s.trim()`: the
/// ASCII bytes `char::is_whitespace` accepts are TAB, LF, VT, FF, CR and SP; any byte of a
/// multi-byte character (which may be Unicode white space, U+00A0 and others) hands over to
/// `str::trim`.
fn trim(s: &str) -> &str {
    let b = s.as_bytes();
    let ws = |c: u8| matches!(c, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ');
    let start = b.iter().position(|&c| !ws(c)).unwrap_or(b.len());
    let end = b.iter().rposition(|&c| !ws(c)).map_or(start, |i| i + 1);
    let inner = s.get(start..end).unwrap_or("");
    match (inner.as_bytes().first(), inner.as_bytes().last()) {
        (Some(&f), Some(&l)) if f >= 0x80 || l >= 0x80 => inner.trim(),
        _ => inner,
    }
}

/// `s.trim_matches('"')` by bytes (the quote is ASCII).
fn trim_quotes(s: &str) -> &str {
    let b = s.as_bytes();
    let start = b.iter().position(|&c| c != b'"').unwrap_or(b.len());
    let end = b.iter().rposition(|&c| c != b'"').map_or(start, |i| i + 1);
    s.get(start..end).unwrap_or("")
}

/// One header: parts of a borrowed value are borrowed too; parts of a value that had to be
/// built (folded, cut) are copied.
fn apply<'a>(
    msg: &mut SipMessage<'a>,
    contact_expires: &mut Option<u32>,
    field: Field,
    v: Cow<'a, str>,
) -> Result<(), String> {
    match v {
        Cow::Borrowed(v) => apply_str(msg, contact_expires, field, v, Cow::Borrowed),
        Cow::Owned(v) => apply_str(msg, contact_expires, field, &v, |s| {
            Cow::Owned(s.to_owned())
        }),
    }
}

/// The first occurrence of each header counts (the topmost, for Via).
fn apply_str<'a, 'b>(
    msg: &mut SipMessage<'a>,
    contact_expires: &mut Option<u32>,
    field: Field,
    v: &'b str,
    keep: fn(&'b str) -> Cow<'a, str>,
) -> Result<(), String> {
    match field {
        Field::CallId => set_once(&mut msg.call_id, v, keep),
        Field::CSeq if msg.cseq_num.is_none() => {
            // CSeq = 1*DIGIT LWS Method (§20.16).
            let mut it = v.split_whitespace();
            msg.cseq_num = it.next().and_then(|n| n.parse().ok());
            msg.cseq_method = it.next().map(keep);
        }
        Field::From if msg.from_uri.is_none() => {
            let (uri, params) = name_addr(v);
            msg.from_uri = Some(keep(uri));
            msg.from_tag = param(params, "tag").map(keep);
        }
        Field::To if msg.to_uri.is_none() => {
            let (uri, params) = name_addr(v);
            msg.to_uri = Some(keep(uri));
            msg.to_tag = param(params, "tag").map(keep);
        }
        Field::Via if msg.via_transport.is_none() => {
            // Topmost Via = first value of the first Via header (§8.1.1.7, §7.3.1):
            // "SIP/2.0/WSS host;branch=...".
            let first = first_value(v);
            let (sent, params) = split_once_byte(first, b';').unwrap_or((first, ""));
            let transport = sent
                .split_whitespace()
                .next()
                .and_then(|p| p.rsplit('/').next())
                .unwrap_or("");
            msg.via_transport = Some(if transport.bytes().any(|b| b.is_ascii_lowercase()) {
                Cow::Owned(transport.to_ascii_uppercase())
            } else {
                keep(transport)
            });
            msg.via_branch = param(params, "branch").map(keep);
        }
        Field::Contact if msg.contact.is_none() => {
            let first = first_value(v);
            msg.contact = Some(keep(first));
            if first != "*" {
                let (_, params) = name_addr(first);
                *contact_expires = param(params, "expires").and_then(parse_delta);
            }
        }
        Field::Expires if msg.expires.is_none() => msg.expires = parse_delta(v),
        Field::UserAgent => set_once(&mut msg.user_agent, v, keep),
        Field::Server => set_once(&mut msg.server, v, keep),
        Field::Reason => set_once(&mut msg.reason_header, v, keep),
        Field::ContentType => set_once(&mut msg.content_type, v, keep),
        // Content-Length = 1*DIGIT (§20.14); anything else breaks stream framing.
        Field::ContentLength if msg.content_length.is_none() => {
            let n = v
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| v.parse::<u64>().ok())
                .flatten();
            match n {
                Some(n) => msg.content_length = Some(n),
                None => return Err(format!("bad Content-Length {v:?}")),
            }
        }
        _ => {}
    }
    Ok(())
}

/// Request-Line `Method SP Request-URI SP SIP-Version` (§7.1) or Status-Line
/// `SIP-Version SP Status-Code SP Reason-Phrase` (§7.2).
pub(super) fn parse_start(line: &str) -> Result<Start<'_>, String> {
    let short = || cap(line).into_owned();
    if let Some(rest) = line.strip_prefix("SIP/") {
        let (_version, rest) = rest
            .split_once(' ')
            .ok_or_else(|| format!("bad status line {:?}", short()))?;
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let code: u16 = code
            .trim()
            .parse()
            .ok()
            .filter(|c| (100..=699).contains(c))
            .ok_or_else(|| format!("bad status code in {:?}", short()))?;
        return Ok(Start::Response {
            code,
            reason: cap(reason.trim()),
        });
    }
    let mut parts = line.split(' ').filter(|p| !p.is_empty());
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("not a SIP start line: {:?}", short()));
    };
    // Method is a token (§25.1).
    let token = |b: u8| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b);
    if !version.starts_with("SIP/") || !method.bytes().all(token) {
        return Err(format!("not a SIP start line: {:?}", short()));
    }
    Ok(Start::Request {
        method: Cow::Borrowed(method),
        uri: cap(uri),
    })
}

/// At most [`MAX_VALUE`] bytes of a value: borrowed unless the cut falls inside a character
/// (then lossy, as [`lossy_capped`]).
pub(super) fn cap(s: &str) -> Cow<'_, str> {
    match s.get(..MAX_VALUE.min(s.len())) {
        Some(head) => Cow::Borrowed(head),
        None => lossy_capped(s.as_bytes(), MAX_VALUE),
    }
}

pub(super) fn set_once<'a, 'b>(
    slot: &mut Option<Cow<'a, str>>,
    v: &'b str,
    keep: fn(&'b str) -> Cow<'a, str>,
) {
    if slot.is_none() {
        *slot = Some(keep(v));
    }
}

/// delta-seconds (§20.19, §25.1); values too large for 32 bits are clamped.
fn parse_delta(v: &str) -> Option<u32> {
    let v = trim_quotes(trim(v));
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        v.parse::<u64>()
            .map_or(u32::MAX, |n| n.min(u64::from(u32::MAX)) as u32),
    )
}

/// Splits a name-addr / addr-spec (§20.10, §25.1) into the URI and the header parameters.
/// Without angle brackets, parameters after the URI belong to the header (§20.10).
fn name_addr(v: &str) -> (&str, &str) {
    let v = trim(v);
    // Skip a quoted display name, which may contain '<' or ';'.
    let after_name = if v.starts_with('"') {
        closing_quote(v).map_or("", |end| v.get(end + 1..).unwrap_or(""))
    } else {
        v
    };
    if let Some((_, inner)) = split_once_byte(after_name, b'<') {
        let (uri, params) = split_once_byte(inner, b'>').unwrap_or((inner, ""));
        (trim(uri), params)
    } else {
        let (uri, params) = split_once_byte(after_name, b';').unwrap_or((after_name, ""));
        (trim(uri), params)
    }
}

/// Byte index of the quote that closes the quoted string starting at 0 (backslash escapes,
/// §25.1 quoted-pair). Scans bytes: the delimiters are ASCII, and UTF-8 continuation bytes never
/// equal an ASCII byte, so this finds what a scan by characters finds.
pub(super) fn closing_quote(v: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, &c) in v.as_bytes().iter().enumerate().skip(1) {
        match c {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            b'"' => return Some(i),
            _ => {}
        }
    }
    None
}

/// First value of a comma-separated header (§7.3.1), ignoring commas in quotes or `<...>`.
/// Scans bytes, as [`closing_quote`].
fn first_value(v: &str) -> &str {
    // Without a comma there is one value, whatever the quotes and brackets (the common case,
    // found by memchr rather than the loop below).
    if memchr::memchr(b',', v.as_bytes()).is_none() {
        return trim(v);
    }
    let mut in_quote = false;
    let mut in_angle = false;
    let mut escaped = false;
    for (i, &c) in v.as_bytes().iter().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            b'\\' if in_quote => escaped = true,
            b'"' => in_quote = !in_quote,
            b'<' if !in_quote => in_angle = true,
            b'>' if !in_quote => in_angle = false,
            b',' if !in_quote && !in_angle => return trim(v.get(..i).unwrap_or(v)),
            _ => {}
        }
    }
    trim(v)
}

/// Value of parameter `name` in ";a=b;c=d" (case-insensitive name, quotes removed).
fn param<'v>(params: &'v str, name: &str) -> Option<&'v str> {
    // As `params.split(';').find_map(..)`, by bytes (both delimiters are ASCII).
    let mut rest = Some(params);
    while let Some(r) = rest {
        let (p, next) = match split_once_byte(r, b';') {
            Some((p, next)) => (p, Some(next)),
            None => (r, None),
        };
        rest = next;
        let (k, val) = split_once_byte(p, b'=').unwrap_or((p, ""));
        if trim(k).eq_ignore_ascii_case(name) {
            return Some(trim_quotes(trim(val)));
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Dialogs and registrations
// ---------------------------------------------------------------------------------------------

/// INVITE dialog state (RFC 3261 §12, §13, §17.1.1 for the client transaction's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DialogState {
    /// INVITE sent, no response yet.
    Calling,
    /// A 1xx came back (an early dialog when it carries a To tag, §12.1).
    Proceeding,
    /// A 2xx came back (§13.2.2.4); the ACK follows (§13.2.2.4, §17.1.1.3).
    Confirmed,
    Terminated,
}

/// Why a dialog ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "end")]
pub enum DialogEnd {
    /// BYE and its final response (§15.1).
    Bye,
    /// Final response ≥ 300 to the INVITE (§13.2.2.3).
    Rejected { code: u16 },
    /// CANCEL before a 2xx (§9).
    Cancelled,
    /// The connection carrying it died (see [`SipDialogs::mark_connection_died`]).
    TransportLost,
}

/// One INVITE dialog (one Call-ID), with the times of its milestones.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Dialog {
    pub call_id: String,
    pub from_tag: Option<String>,
    pub to_tag: Option<String>,
    pub from_uri: Option<String>,
    pub to_uri: Option<String>,
    /// Which side sent the INVITE.
    pub caller: Side,
    pub state: DialogState,
    pub end: Option<DialogEnd>,
    pub invite_cseq: Option<u32>,
    pub invite_ts: Timestamp,
    pub invite_frame: u64,
    pub first_1xx_ts: Option<Timestamp>,
    /// First 180/183 (ringing / session progress).
    pub ringing_ts: Option<Timestamp>,
    pub ok_ts: Option<Timestamp>,
    pub final_code: Option<u16>,
    pub final_ts: Option<Timestamp>,
    pub ack_ts: Option<Timestamp>,
    pub cancel_ts: Option<Timestamp>,
    pub bye_ts: Option<Timestamp>,
    pub bye_frame: Option<u64>,
    pub bye_by: Option<Side>,
    /// Reason header of the BYE/CANCEL (RFC 3326).
    pub bye_reason: Option<String>,
    pub bye_ok_ts: Option<Timestamp>,
    pub bye_response_code: Option<u16>,
    /// re-INVITEs within the dialog (§14), e.g. session refresh or hold.
    pub reinvites: u32,
    /// The call was up (confirmed or early) when the transport died and never got its BYE:
    /// a "call cut".
    pub cut_by_transport_loss: bool,
    pub cut_ts: Option<Timestamp>,
}

impl Dialog {
    /// The call ended over [`FORGET_ENDED_AFTER_S`] before `now`: its BYE was answered
    /// (§15.1.1), or it never got a 2xx and is over.
    fn ended_long_before(&self, now: Timestamp) -> bool {
        let end = if self.ok_ts.is_some() {
            self.bye_ok_ts
        } else if self.state == DialogState::Terminated {
            self.final_ts.or(self.cancel_ts)
        } else {
            None
        };
        end.is_some_and(|t| now.0.saturating_sub(t.0) > FORGET_ENDED_AFTER_S * 1_000_000_000)
    }
}

/// One REGISTER transaction (RFC 3261 §10.2) and its final response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Registration {
    pub call_id: String,
    pub cseq_num: u32,
    pub by: Side,
    pub ts: Timestamp,
    pub frame_no: u64,
    /// Expiry asked for (Expires header or Contact `expires`, §10.2.1.1).
    pub expires_requested: Option<u32>,
    /// `Contact: *` with Expires 0 removes all bindings (§10.2.2).
    pub is_unregister: bool,
    pub response_code: Option<u16>,
    pub response_ts: Option<Timestamp>,
    /// Frame of that final response (evidence cites it with `response_ts`).
    pub response_frame: Option<u64>,
    /// Expiry granted by the registrar (§10.2.4: in the 200's Contact or Expires).
    pub expires_granted: Option<u32>,
    /// The transport died with no final response (see [`SipDialogs::mark_connection_died`]).
    pub lost: bool,
}

/// ACK, CANCEL and BYE within a known dialog. Methods compare case-insensitively, as before
/// (method names are case-sensitive tokens in RFC 3261 §7.1, but lower-case ones are seen).
fn in_dialog_request(
    d: &mut Dialog,
    method: &str,
    ts: Timestamp,
    frame_no: u64,
    side: Side,
    msg: &SipMessage<'_>,
) {
    if method.eq_ignore_ascii_case("ACK") {
        // The ACK for a 2xx completes the three-way handshake (§13.2.2.4).
        if d.ack_ts.is_none() && d.ok_ts.is_some() {
            d.ack_ts = Some(ts);
        }
    } else if method.eq_ignore_ascii_case("CANCEL") {
        if d.cancel_ts.is_none() {
            d.cancel_ts = Some(ts);
            if d.bye_reason.is_none() {
                d.bye_reason = owned(&msg.reason_header);
            }
        }
        // CANCEL has no effect once a final response is out (§9.1).
        if matches!(d.state, DialogState::Calling | DialogState::Proceeding) {
            d.state = DialogState::Terminated;
            d.end = Some(DialogEnd::Cancelled);
        }
    } else if method.eq_ignore_ascii_case("BYE") && d.bye_ts.is_none() {
        // §15.1.1: the first BYE ends the session; the dialog ends with its final response.
        d.bye_ts = Some(ts);
        d.bye_frame = Some(frame_no);
        d.bye_by = Some(side);
        d.bye_reason = owned(&msg.reason_header);
    }
}

/// Pushes with capacity 1, 2, 4, ... where `Vec::push` starts at 4: most connections see one
/// registration and a call or two, and 20 000 of them pay for every empty slot (a `Dialog` is
/// over 300 bytes).
fn push_small<T>(v: &mut Vec<T>, x: T) {
    if v.len() == v.capacity() {
        v.reserve_exact(v.len().max(1));
    }
    v.push(x);
}

/// A Call-ID as `SipDialogs::recent` keeps it: 64 bits, where two Call-IDs of one connection
/// that collide would take 2^32 of them to be likely.
fn call_id_hash(call_id: &str) -> u64 {
    use std::hash::BuildHasher;
    foldhash::quality::FixedState::with_seed(0x7369_705f_7265_6773).hash_one(call_id)
}

/// A copy of a message's field, for the records that outlive the message.
fn owned(v: &Option<Cow<'_, str>>) -> Option<String> {
    v.as_deref().map(str::to_owned)
}

/// Tracks INVITE dialogs and registrations seen on one connection, in time order. Bounded:
/// past the caps new dialogs/registrations are only counted.
#[derive(Clone, Debug, Serialize)]
pub struct SipDialogs {
    pub dialogs: Vec<Dialog>,
    pub registrations: Vec<Registration>,
    pub dialogs_overflow: u64,
    pub registrations_overflow: u64,
    /// Messages seen, and of those without a Call-ID or CSeq (which cannot be tracked).
    pub messages: u64,
    pub untrackable: u64,
    /// OPTIONS requests (often used as an application keep-alive).
    pub options: u64,
    #[serde(skip)]
    /// Boxed: 8 bytes in every SIP session instead of 48, and built only from `INDEX_FROM`
    /// dialogs on.
    #[allow(clippy::box_collection)]
    index: Option<Box<HashMap<String, usize>>>,
    #[serde(skip)]
    max_dialogs: u32,
    #[serde(skip)]
    max_registrations: u32,
    /// Keep what only `flows` prints (see [`SipDialogs::keep_details`]).
    #[serde(skip)]
    details: bool,
    /// Keep a record of each registration (see [`SipDialogs::keep_registrations`]).
    #[serde(skip)]
    records: bool,
    /// Registrations seen, retransmissions left out, within `max_registrations`: how many
    /// records `registrations` would hold had none been forgotten.
    #[serde(skip)]
    registrations_seen: u32,
    /// Without records: the last `REG_RETRANS_WINDOW` registrations' Call-ID (hashed) and
    /// CSeq, which a retransmitted REGISTER is matched against as against the records. Boxed:
    /// summaries hold a `SipDialogs` inline (`AppSummary`'s size check).
    #[serde(skip)]
    #[allow(clippy::box_collection)]
    recent: Option<Box<Vec<(u64, u32)>>>,
}

/// How many of the latest registrations a REGISTER is compared with, to leave out a
/// retransmission of the same transaction (RFC 3261 §17.1.2.2).
const REG_RETRANS_WINDOW: usize = 16;

// Here, where its private fields are: a one-capture diagnosis writes the calls of the
// connections a rule ends to a temporary file while it tracks (`tcp::kept`). The Call-ID index
// is gone by then (`finish`); one still there is refused.
crate::tcp::kept::codec_struct!(SipDialogs {
    dialogs,
    registrations,
    dialogs_overflow,
    registrations_overflow,
    messages,
    untrackable,
    options,
    index,
    max_dialogs,
    max_registrations,
    details,
    records,
    registrations_seen,
    recent
});

impl Default for SipDialogs {
    fn default() -> Self {
        Self::new()
    }
}

impl SipDialogs {
    pub fn new() -> Self {
        Self::with_caps(MAX_DIALOGS, MAX_REGISTRATIONS)
    }

    pub fn with_caps(max_dialogs: usize, max_registrations: usize) -> Self {
        SipDialogs {
            dialogs: Vec::new(),
            registrations: Vec::new(),
            dialogs_overflow: 0,
            registrations_overflow: 0,
            messages: 0,
            untrackable: 0,
            options: 0,
            index: None,
            // 32 bits, like `registrations_seen`: the struct is kept inline in summaries.
            max_dialogs: u32::try_from(max_dialogs).unwrap_or(u32::MAX),
            max_registrations: u32::try_from(max_registrations).unwrap_or(u32::MAX),
            details: true,
            records: true,
            registrations_seen: 0,
            recent: None,
        }
    }

    /// Whether to keep a record of each registration (the default), or only count them:
    /// `flows --format json` prints how many there were, and the HTML report draws each. A
    /// softphone behind NAT refreshes its registration every minute or so: on the 2 GB synth,
    /// with every record kept, the registrations were 12 of `flows --stream`'s 103 MB heap.
    /// Without records, `registrations` stays empty; `registrations_seen` counts as with them.
    pub fn keep_registrations(mut self, records: bool) -> Self {
        self.records = records;
        self
    }

    /// Registrations seen (retransmissions left out, within the cap), kept or not: the
    /// length `registrations` would have with every record kept.
    pub fn registrations_seen(&self) -> u32 {
        self.registrations_seen
    }

    /// Whether to keep what only `flows` prints (`TrackerOptions::app_details`): every
    /// registration, each call's From/To URIs and tags, and the calls that ended long ago
    /// ([`SipDialogs::forget_ended_calls`]). Without them the diagnosis still gets what its
    /// rules read: the first registration the registrar accepted (`recovery`) and each call
    /// that may have been up when the connection died, with its Call-ID, times and BYE
    /// (`call_cut`). A connection that lives for hours refreshes its registration every few
    /// minutes (RFC 3261 §10.2.1.1: 3600 s by default, often far less behind NAT) and carries a
    /// call every few minutes: kept whole, ~170 bytes a refresh and ~500 a call, for as long as
    /// it lives.
    pub fn keep_details(mut self, details: bool) -> Self {
        self.details = details;
        self
    }

    /// Feeds one message, sent by the client side of the connection (`from_client_side`) or the
    /// server side.
    pub fn add(
        &mut self,
        ts: Timestamp,
        frame_no: u64,
        from_client_side: bool,
        msg: &SipMessage<'_>,
    ) {
        self.messages = self.messages.saturating_add(1);
        self.forget_ended_calls_early(ts);
        let side = Side::from_client(from_client_side);
        let (Some(call_id), Some(cseq), Some(cseq_method)) = (
            msg.call_id.as_deref(),
            msg.cseq_num,
            msg.cseq_method.as_deref(),
        ) else {
            self.untrackable = self.untrackable.saturating_add(1);
            return;
        };
        match &msg.start {
            Start::Request { method, .. } => {
                let is = |m: &str| method.eq_ignore_ascii_case(m);
                if is("INVITE") {
                    self.on_invite(ts, frame_no, side, call_id, cseq, msg);
                } else if is("REGISTER") {
                    self.on_register(ts, frame_no, side, call_id, cseq, msg);
                } else if is("OPTIONS") {
                    self.options = self.options.saturating_add(1);
                } else if let Some(d) = self.dialog_mut(call_id) {
                    in_dialog_request(d, method, ts, frame_no, side, msg);
                }
            }
            Start::Response { code, .. } => {
                let code = *code;
                let is = |m: &str| cseq_method.eq_ignore_ascii_case(m);
                if is("INVITE") {
                    self.on_invite_response(ts, call_id, cseq, code, msg);
                } else if is("REGISTER") {
                    self.on_register_response(ts, frame_no, call_id, cseq, code, msg);
                } else if is("BYE") {
                    if let Some(d) = self.dialog_mut(call_id) {
                        // Any final response to BYE ends the dialog (§15.1.1).
                        if code >= 200 && d.bye_ok_ts.is_none() {
                            d.bye_ok_ts = Some(ts);
                            d.bye_response_code = Some(code);
                            if d.state != DialogState::Terminated {
                                d.state = DialogState::Terminated;
                                d.end = Some(DialogEnd::Bye);
                            }
                        }
                    }
                }
            }
        }
    }

    fn dialog_mut(&mut self, call_id: &str) -> Option<&mut Dialog> {
        let i = match &self.index {
            None => self.dialogs.iter().position(|d| d.call_id == call_id)?,
            Some(index) => *index.get(call_id)?,
        };
        self.dialogs.get_mut(i)
    }

    fn on_invite(
        &mut self,
        ts: Timestamp,
        frame_no: u64,
        side: Side,
        call_id: &str,
        cseq: u32,
        msg: &SipMessage<'_>,
    ) {
        if let Some(d) = self.dialog_mut(call_id) {
            // A retransmission (same CSeq, §17.1.1.2) or a re-INVITE (§14).
            if d.invite_cseq != Some(cseq) {
                d.reinvites = d.reinvites.saturating_add(1);
            }
            return;
        }
        self.forget_ended_calls(ts);
        if self.dialogs.len() >= self.max_dialogs as usize {
            self.dialogs_overflow = self.dialogs_overflow.saturating_add(1);
            return;
        }
        if self.dialogs.len() + 1 >= INDEX_FROM {
            if self
                .index
                .as_ref()
                .is_none_or(|i| i.len() != self.dialogs.len())
            {
                self.reindex();
            }
            let at = self.dialogs.len();
            self.index
                .get_or_insert_with(Box::default)
                .insert(call_id.to_string(), at);
        }
        let detail = |v: &Option<Cow<'_, str>>| if self.details { owned(v) } else { None };
        push_small(
            &mut self.dialogs,
            Dialog {
                call_id: call_id.to_string(),
                from_tag: detail(&msg.from_tag),
                to_tag: detail(&msg.to_tag),
                from_uri: detail(&msg.from_uri),
                to_uri: detail(&msg.to_uri),
                caller: side,
                state: DialogState::Calling,
                end: None,
                invite_cseq: Some(cseq),
                invite_ts: ts,
                invite_frame: frame_no,
                first_1xx_ts: None,
                ringing_ts: None,
                ok_ts: None,
                final_code: None,
                final_ts: None,
                ack_ts: None,
                cancel_ts: None,
                bye_ts: None,
                bye_frame: None,
                bye_by: None,
                bye_reason: None,
                bye_ok_ts: None,
                bye_response_code: None,
                reinvites: 0,
                cut_by_transport_loss: false,
                cut_ts: None,
            },
        );
    }

    fn on_invite_response(
        &mut self,
        ts: Timestamp,
        call_id: &str,
        cseq: u32,
        code: u16,
        msg: &SipMessage<'_>,
    ) {
        let details = self.details;
        let Some(d) = self.dialog_mut(call_id) else {
            return;
        };
        // Responses to re-INVITEs don't move the dialog's state.
        if d.invite_cseq != Some(cseq) {
            return;
        }
        if d.to_tag.is_none() && code > 100 && details {
            d.to_tag = owned(&msg.to_tag);
        }
        match code {
            100..=199 => {
                d.first_1xx_ts.get_or_insert(ts);
                if matches!(code, 180 | 183) {
                    d.ringing_ts.get_or_insert(ts);
                }
                if d.state == DialogState::Calling {
                    d.state = DialogState::Proceeding;
                }
            }
            200..=299 => {
                if d.ok_ts.is_none() {
                    d.ok_ts = Some(ts);
                    d.final_code.get_or_insert(code);
                    d.final_ts.get_or_insert(ts);
                }
                // A 2xx after a CANCEL still establishes the call (§9.1 race).
                if matches!(d.state, DialogState::Calling | DialogState::Proceeding)
                    || d.end == Some(DialogEnd::Cancelled)
                {
                    d.state = DialogState::Confirmed;
                    d.end = None;
                }
            }
            _ => {
                if d.final_code.is_none() {
                    d.final_code = Some(code);
                    d.final_ts = Some(ts);
                }
                // A 487 after CANCEL finds the dialog already terminated as "cancelled".
                if matches!(d.state, DialogState::Calling | DialogState::Proceeding) {
                    d.state = DialogState::Terminated;
                    d.end = Some(DialogEnd::Rejected { code });
                }
            }
        }
    }

    fn on_register(
        &mut self,
        ts: Timestamp,
        frame_no: u64,
        side: Side,
        call_id: &str,
        cseq: u32,
        msg: &SipMessage<'_>,
    ) {
        if !self.records {
            // Retransmission of the same transaction (§17.1.2.2): counted once.
            let key = (call_id_hash(call_id), cseq);
            let recent = self.recent.get_or_insert_with(Box::default);
            if recent.contains(&key) {
                return;
            }
            if self.registrations_seen >= self.max_registrations {
                self.registrations_overflow = self.registrations_overflow.saturating_add(1);
                return;
            }
            self.registrations_seen = self.registrations_seen.saturating_add(1);
            if recent.len() == REG_RETRANS_WINDOW {
                recent.remove(0);
            }
            push_small(recent, key);
            return;
        }
        // Retransmission of the same transaction (§17.1.2.2): keep the first.
        if self
            .registrations
            .iter()
            .rev()
            .take(REG_RETRANS_WINDOW)
            .any(|r| r.call_id == call_id && r.cseq_num == cseq)
        {
            return;
        }
        if self.registrations.len() >= self.max_registrations as usize {
            self.registrations_overflow = self.registrations_overflow.saturating_add(1);
            return;
        }
        self.registrations_seen = self.registrations_seen.saturating_add(1);
        push_small(
            &mut self.registrations,
            Registration {
                call_id: call_id.to_string(),
                cseq_num: cseq,
                by: side,
                ts,
                frame_no,
                expires_requested: msg.expires,
                is_unregister: msg.contact.as_deref() == Some("*") || msg.expires == Some(0),
                response_code: None,
                response_ts: None,
                response_frame: None,
                expires_granted: None,
                lost: false,
            },
        );
    }

    fn on_register_response(
        &mut self,
        ts: Timestamp,
        frame_no: u64,
        call_id: &str,
        cseq: u32,
        code: u16,
        msg: &SipMessage<'_>,
    ) {
        if code < 200 {
            return;
        }
        let Some(r) = self
            .registrations
            .iter_mut()
            .rev()
            .take(64)
            .find(|r| r.call_id == call_id && r.cseq_num == cseq)
        else {
            return;
        };
        if r.response_code.is_some() {
            return;
        }
        r.response_code = Some(code);
        r.response_ts = Some(ts);
        r.response_frame = Some(frame_no);
        if (200..300).contains(&code) {
            r.expires_granted = msg.expires;
        }
        if !self.details {
            self.forget_answered_registrations();
        }
    }

    /// Without details, when the list is full: drops the calls that ended more than
    /// [`FORGET_ENDED_AFTER_S`] before `now`. An agent's connection lives all day and carries
    /// a call every few minutes; the diagnosis reads only the calls that were up when a
    /// connection died (`call_cut`), and a call whose BYE was answered (§15.1.1) that long ago
    /// was not (the transport still worked then), nor was a call that never got a 2xx. Only a
    /// stream's session asks for no details: SIP over UDP keeps every call, since the voice
    /// gateway's trunk shows the BYEs sent after another connection died.
    fn forget_ended_calls(&mut self, now: Timestamp) {
        // From the first call on: an agent's connection carries a few calls an hour, ~330
        // bytes each (`Dialog`), and a pass only from the eighth kept them all (20 000 agents
        // connected for two hours, 2.6 calls each: 12 MB of a diagnosis's 114 MB heap).
        let full = self.dialogs.len() == self.dialogs.capacity();
        if self.details || !full {
            return;
        }
        self.drop_ended_calls(now);
        // Unless half went, grow as if nothing had: the next pass then comes only after as
        // many new calls as are kept (O(1) a call).
        if self.dialogs.len() * 2 > self.dialogs.capacity() {
            self.dialogs.reserve_exact(self.dialogs.capacity());
        }
    }

    /// Without details, at any message: once the oldest call kept ended long before `now`,
    /// the calls that did go, and the room they took. `forget_ended_calls` alone waited for
    /// the next INVITE, so every connection that had carried a call held its last one (~450
    /// bytes with its Call-ID) until it carried another: on the 2 GB synth (20 000 agents, a
    /// call every few minutes and a REGISTER refresh every ~9) 3.4 MB of the heap at its
    /// peak, against 0.85 on the 200 MB one, whose connections are younger. The refresh now
    /// takes it. What goes is what `forget_ended_calls_at_end` would drop at the end anyway
    /// (a call over long before a message is over long before the last packet), so no
    /// report changes; the check is one comparison a message while the list is empty or
    /// its oldest call is not over.
    fn forget_ended_calls_early(&mut self, now: Timestamp) {
        if self.details
            || !self
                .dialogs
                .first()
                .is_some_and(|d| d.ended_long_before(now))
        {
            return;
        }
        self.drop_ended_calls(now);
        self.dialogs.shrink_to_fit();
    }

    /// Without details, once the connection has ended (`end`: its last packet): the same rule
    /// as while it lived (`forget_ended_calls`), applied to the whole list. Kept connections
    /// wait for the rules with their calls; on an agent's long connection most ended long
    /// before it did.
    pub fn forget_ended_calls_at_end(&mut self, end: Timestamp) {
        if !self.details {
            self.drop_ended_calls(end);
        }
    }

    /// Drops the calls that ended long before `now` (`Dialog::ended_long_before`); the Call-ID
    /// index, where there still is one, follows.
    fn drop_ended_calls(&mut self, now: Timestamp) {
        let before = self.dialogs.len();
        self.dialogs.retain(|d| !d.ended_long_before(now));
        if self.dialogs.len() < before && self.index.is_some() {
            if self.dialogs.len() >= INDEX_FROM {
                self.reindex();
            } else {
                self.index = None;
            }
        }
    }

    /// The Call-ID index rebuilt from the dialogs (without one, `dialog_mut` scans them).
    fn reindex(&mut self) {
        let index = self.index.get_or_insert_with(Box::default);
        index.clear();
        for (i, d) in self.dialogs.iter().enumerate() {
            index.insert(d.call_id.clone(), i);
        }
    }

    /// Without details: drops the answered registrations except the first one accepted (what
    /// the rules read: `recovery`). Pending ones stay, to be answered. The one just answered
    /// went too: it was kept to match a retransmitted REGISTER against, but a REGISTER is
    /// retransmitted only over an unreliable transport (RFC 3261 §17.1.2.2, timer E), and a
    /// session without details is a stream's. With it, a connection refreshing its
    /// registration held two records and room for four: the busy synth's 20 000 agents
    /// connected for two hours, diagnosed, 83.3 -> 79.6 MiB.
    fn forget_answered_registrations(&mut self) {
        let accepted = |r: &Registration| r.response_code.is_some_and(|c| (200..300).contains(&c));
        let first_ok = self.registrations.iter().position(accepted);
        let mut i = 0;
        self.registrations.retain(|r| {
            let keep = r.response_code.is_none() || Some(i) == first_ok;
            i += 1;
            keep
        });
        // Back to the room it needs: between refreshes a connection holds the first accepted
        // record alone, and the room for the refresh it held (104 bytes) would stay with it
        // all day. The next refresh grows it again: one reallocation each way every ~10 min.
        self.registrations.shrink_to_fit();
    }

    /// The connection is over: no message will look a dialog up by Call-ID again, so the index
    /// goes (a key string and a slot per call, kept until the report otherwise).
    pub fn finish(&mut self) {
        self.index = None;
    }

    /// The connection died at `ts`: every dialog that was up (Confirmed) or early (Proceeding)
    /// and never saw a BYE is a call cut by transport loss; pending INVITEs and REGISTERs are
    /// marked lost too.
    pub fn mark_connection_died(&mut self, ts: Timestamp) {
        for d in &mut self.dialogs {
            if d.state == DialogState::Terminated || d.bye_ts.is_some() {
                continue;
            }
            if matches!(d.state, DialogState::Confirmed | DialogState::Proceeding) {
                d.cut_by_transport_loss = true;
                d.cut_ts = Some(ts);
            }
            d.state = DialogState::Terminated;
            d.end = Some(DialogEnd::TransportLost);
        }
        for r in &mut self.registrations {
            if r.response_code.is_none() {
                r.lost = true;
            }
        }
    }

    /// Dialogs cut by the transport loss.
    pub fn cut_calls(&self) -> impl Iterator<Item = &Dialog> {
        self.dialogs.iter().filter(|d| d.cut_by_transport_loss)
    }

    /// Seconds between consecutive successful (2xx) registrations: the refresh rhythm.
    pub fn register_refresh_intervals_s(&self) -> Vec<f64> {
        let ok: Vec<Timestamp> = self
            .registrations
            .iter()
            .filter(|r| r.response_code.is_some_and(|c| (200..300).contains(&c)))
            .map(|r| r.ts)
            .collect();
        ok.windows(2)
            .map(|w| (w[1].0.saturating_sub(w[0].0)) as f64 / 1e9)
            .collect()
    }

    /// The last successful registration, with the time its binding expires (ts + granted, or
    /// requested, expiry): a connection that dies after that without a refresh had lost its
    /// registration already.
    pub fn last_binding_expiry(&self) -> Option<(&Registration, Timestamp)> {
        let r = self
            .registrations
            .iter()
            .rev()
            .find(|r| r.response_code.is_some_and(|c| (200..300).contains(&c)))?;
        let secs = r.expires_granted.or(r.expires_requested)?;
        let base = r.response_ts.unwrap_or(r.ts);
        Some((
            r,
            Timestamp(
                base.0
                    .saturating_add(i64::from(secs).saturating_mul(1_000_000_000)),
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGISTER: &[u8] = b"REGISTER sip:pbx.example.com SIP/2.0\r\n\
v: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKasudf;rport\r\n\
Max-Forwards: 70\r\n\
t: <sip:1001@pbx.example.com>\r\n\
f: \"Agent 1001\" <sip:1001@pbx.example.com>;tag=65bnmj.l\r\n\
i: aiu2nq4b3o1ck@df7jal23ls0d.invalid\r\n\
CSeq: 1 REGISTER\r\n\
m: <sip:a8h2k@df7jal23ls0d.invalid;transport=ws>;expires=600;+sip.instance=\"<urn:uuid:1>\"\r\n\
k: path,gruu,outbound\r\n\
User-Agent: JsSIP 3.10.0\r\n\
l: 0\r\n\
\r\n";

    const REGISTER_OK: &[u8] = b"SIP/2.0 200 OK\r\n\
Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKasudf;rport=51234;received=203.0.113.7\r\n\
To: <sip:1001@pbx.example.com>;tag=as6e0f2\r\n\
From: \"Agent 1001\" <sip:1001@pbx.example.com>;tag=65bnmj.l\r\n\
Call-ID: aiu2nq4b3o1ck@df7jal23ls0d.invalid\r\n\
CSeq: 1 REGISTER\r\n\
Contact: <sip:a8h2k@df7jal23ls0d.invalid;transport=ws>;expires=300\r\n\
Server: Asterisk PBX 18\r\n\
Content-Length: 0\r\n\
\r\n";

    const SDP: &str = "v=0\r\no=- 1 1 IN IP4 203.0.113.7\r\ns=-\r\nc=IN IP4 203.0.113.7\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";

    fn msg(start: &str, call_id: &str, cseq: &str, to_tag: Option<&str>, body: &str) -> Vec<u8> {
        let to = match to_tag {
            Some(t) => format!("To: <sip:2000@pbx>;tag={t}\r\n"),
            None => "To: <sip:2000@pbx>\r\n".to_string(),
        };
        format!(
            "{start}\r\nVia: SIP/2.0/WSS x.invalid;branch=z9hG4bK{cseq_b}\r\nFrom: <sip:1001@pbx>;tag=ft\r\n{to}Call-ID: {call_id}\r\nCSeq: {cseq}\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len(),
            cseq_b = cseq.replace(' ', "")
        )
        .into_bytes()
    }

    fn parse(b: &[u8]) -> SipMessage<'static> {
        match parse_message(b) {
            Parse::Complete { value, consumed } => {
                assert_eq!(consumed, b.len());
                value.into_owned()
            }
            other => panic!("{other:?}"),
        }
    }

    /// `m` as a parse with `Fields::Tracked` gives it: the fields the tracking does not read
    /// left out.
    fn tracked_only(mut m: SipMessage<'_>) -> SipMessage<'_> {
        (m.from_tag, m.to_tag, m.from_uri, m.to_uri) = (None, None, None, None);
        (m.via_branch, m.via_transport) = (None, None);
        (m.user_agent, m.server, m.content_type) = (None, None, None);
        m
    }

    #[test]
    fn a_parse_for_the_tracking_keeps_what_it_reads() {
        let folded = b"BYE sip:a SIP/2.0\r\nf: <sip:1001@x>;tag=1\r\n\tmore\r\nReason: SIP\r\n ;cause=200\r\n\
i: c1\r\nCSeq: 2 BYE\r\nUser-Agent: a\r\n b\r\nl: 0\r\n\r\n";
        for b in [REGISTER, REGISTER_OK, &folded[..]] {
            let all = parse(b);
            let Parse::Complete { value, consumed } = parse_message_with(b, Fields::Tracked) else {
                panic!("{}", String::from_utf8_lossy(b));
            };
            assert_eq!(consumed, b.len());
            assert!(all.from_uri.is_some() && all.via_transport.is_some() || b == &folded[..]);
            assert_eq!(value, tracked_only(all.clone()));
            // A WebSocket message cut after its head, as a datagram: the same.
            let Parse::Complete { value, .. } =
                parse_ws_message_with(b, b.len() as u64 + 10, Fields::Tracked)
            else {
                panic!("cut");
            };
            assert_eq!(value.call_id, all.call_id);
            assert_eq!(value.reason_header, all.reason_header);
            assert_eq!((value.from_uri, value.user_agent), (None, None));
        }
        // Content-Length still decides whether a head is valid.
        assert!(matches!(
            parse_message_with(b"INVITE sip:a SIP/2.0\r\nl: x\r\n\r\n", Fields::Tracked),
            Parse::Invalid(_)
        ));
    }

    #[test]
    fn register_with_compact_headers() {
        let m = parse(REGISTER);
        assert_eq!(
            m.start,
            Start::Request {
                method: "REGISTER".into(),
                uri: "sip:pbx.example.com".into()
            }
        );
        assert_eq!(
            m.call_id.as_deref(),
            Some("aiu2nq4b3o1ck@df7jal23ls0d.invalid")
        );
        assert_eq!(
            (m.cseq_num, m.cseq_method.as_deref()),
            (Some(1), Some("REGISTER"))
        );
        assert_eq!(m.from_tag.as_deref(), Some("65bnmj.l"));
        assert_eq!(m.from_uri.as_deref(), Some("sip:1001@pbx.example.com"));
        assert_eq!(m.to_tag, None);
        assert_eq!(m.via_branch.as_deref(), Some("z9hG4bKasudf"));
        assert_eq!(m.via_transport.as_deref(), Some("WSS"));
        assert_eq!(m.expires, Some(600), "from the Contact's expires parameter");
        assert_eq!(m.user_agent.as_deref(), Some("JsSIP 3.10.0"));
        assert_eq!((m.content_length, m.body_len), (Some(0), 0));

        let ok = parse(REGISTER_OK);
        assert_eq!(ok.status(), Some(200));
        assert_eq!(ok.to_tag.as_deref(), Some("as6e0f2"));
        assert_eq!(ok.expires, Some(300));
        assert_eq!(ok.server.as_deref(), Some("Asterisk PBX 18"));

        let mut d = SipDialogs::new();
        d.add(Timestamp(0), 1, true, &parse(REGISTER));
        d.add(Timestamp(50_000_000), 2, false, &ok);
        let r = &d.registrations[0];
        assert_eq!(
            (r.expires_requested, r.expires_granted),
            (Some(600), Some(300))
        );
        assert_eq!(r.response_code, Some(200));
        let (_, until) = d.last_binding_expiry().unwrap();
        assert_eq!(until, Timestamp(300_050_000_000));
    }

    #[test]
    fn invite_with_sdp_two_and_a_half_messages_on_a_stream() {
        let invite = msg("INVITE sip:2000@pbx SIP/2.0", "c1", "1 INVITE", None, SDP);
        let trying = msg("SIP/2.0 100 Trying", "c1", "1 INVITE", None, "");
        let ringing = msg("SIP/2.0 180 Ringing", "c1", "1 INVITE", Some("tt"), "");
        let mut stream = invite.clone();
        stream.extend_from_slice(&trying);
        stream.extend_from_slice(&ringing[..ringing.len() / 2]);

        let (m, n) = parse_message(&stream).complete().unwrap();
        assert_eq!(n, invite.len());
        assert_eq!(m.method(), Some("INVITE"));
        assert_eq!(m.body_len, SDP.len() as u64);
        assert_eq!(m.content_type.as_deref(), Some("application/sdp"));
        let rest = &stream[n..];
        let (m2, n2) = parse_message(rest).complete().unwrap();
        assert_eq!(m2.status(), Some(100));
        assert_eq!(parse_message(&rest[n2..]), Parse::Partial);
        // The INVITE cut inside its body is partial too.
        assert_eq!(parse_message(&invite[..invite.len() - 3]), Parse::Partial);
        // One WebSocket message (RFC 7118 §4): the body is the rest.
        let (d, _) = parse_datagram(&invite).complete().unwrap();
        assert_eq!(d.body_len, SDP.len() as u64);
    }

    #[test]
    fn sip_in_a_cut_websocket_prefix() {
        let invite = msg("INVITE sip:2000@pbx SIP/2.0", "c9", "1 INVITE", None, SDP);
        let head_end = invite.len() - SDP.len();
        let (m, _) = parse_ws_message(&invite[..head_end + 5], invite.len() as u64)
            .complete()
            .unwrap();
        assert_eq!(m.call_id.as_deref(), Some("c9"));
        assert_eq!(m.body_len, SDP.len() as u64);
        assert_eq!(
            parse_ws_message(&invite[..60], invite.len() as u64),
            Parse::Partial
        );
        assert!(matches!(
            parse_ws_message(b"\x00\x01binary\r\n", 500),
            Parse::Invalid(_)
        ));
        let (whole, _) = parse_ws_message(&invite, invite.len() as u64)
            .complete()
            .unwrap();
        assert_eq!(whole.body_len, SDP.len() as u64);
    }

    #[test]
    fn headers_case_folding_and_missing_length() {
        let raw = b"OPTIONS sip:pbx SIP/2.0\r\nCALL-ID: abc\r\ncseq: 7\r\n  OPTIONS\r\nFROM: <sip:a@b>;TAG=x\r\n\r\ntrailing";
        let (m, n) = parse_message(raw).complete().unwrap();
        assert_eq!(m.call_id.as_deref(), Some("abc"));
        assert_eq!(
            (m.cseq_num, m.cseq_method.as_deref()),
            (Some(7), Some("OPTIONS"))
        );
        assert_eq!(m.from_tag.as_deref(), Some("x"));
        assert_eq!(m.content_length, None);
        assert_eq!(
            &raw[n..],
            b"trailing",
            "no Content-Length on a stream: no body"
        );
    }

    #[test]
    fn not_sip() {
        assert!(matches!(
            parse_message(b"GET / HTTP/1.1\r\n\r\n"),
            Parse::Invalid(_)
        ));
        assert!(matches!(
            parse_message(b"HTTP/1.1 200 OK\r\n"),
            Parse::Invalid(_)
        ));
        assert!(matches!(
            parse_message(b"SIP/2.0 999 Nope\r\n\r\n"),
            Parse::Invalid(_)
        ));
        assert!(matches!(
            parse_message(b"INVITE sip:a SIP/2.0\r\nContent-Length: 12x\r\n\r\n"),
            Parse::Invalid(_)
        ));
        assert_eq!(
            parse_message(b"INVITE sip:a SIP/2.0\r\nVia: x"),
            Parse::Partial
        );
    }

    #[test]
    fn crlf_keepalives() {
        assert_eq!(is_crlf_keepalive(b"\r\n\r\n"), Some(KeepAlive::Ping));
        assert_eq!(is_crlf_keepalive(b"\r\n"), Some(KeepAlive::Pong));
        assert_eq!(is_crlf_keepalive(b"\r\n\r\n\r\n"), None);
        assert_eq!(is_crlf_keepalive(b"OPTIONS"), None);
        let mut stream = b"\r\n\r\n".to_vec();
        stream.extend_from_slice(REGISTER);
        assert_eq!(leading_crlf_len(&stream), 4);
        let (m, n) = parse_message(&stream).complete().unwrap();
        assert_eq!((m.leading_crlf, n), (4, stream.len()));
        assert_eq!(parse_message(b"\r\n\r\n"), Parse::Partial);
    }

    fn call(d: &mut SipDialogs, steps: &[(&str, bool, Option<&str>)]) {
        for (i, (start, from_client, to_tag)) in steps.iter().enumerate() {
            let cseq = if start.contains("BYE") || start.ends_with("BYE") {
                "2 BYE"
            } else if start.starts_with("ACK") {
                "1 ACK"
            } else {
                "1 INVITE"
            };
            let body = if start.starts_with("INVITE") { SDP } else { "" };
            let m = parse(&msg(start, "call-1", cseq, *to_tag, body));
            d.add(
                Timestamp(i as i64 * 1_000_000_000),
                i as u64 + 1,
                *from_client,
                &m,
            );
        }
    }

    #[test]
    fn dialog_invite_to_bye() {
        let mut d = SipDialogs::new();
        call(
            &mut d,
            &[
                ("INVITE sip:2000@pbx SIP/2.0", true, None),
                ("SIP/2.0 180 Ringing", false, Some("tt")),
                ("SIP/2.0 200 OK", false, Some("tt")),
                ("ACK sip:2000@pbx SIP/2.0", true, Some("tt")),
                ("BYE sip:1001@x SIP/2.0", false, Some("tt")),
            ],
        );
        assert_eq!(d.dialogs[0].state, DialogState::Confirmed);
        let ok = parse(&msg("SIP/2.0 200 OK", "call-1", "2 BYE", Some("tt"), ""));
        d.add(Timestamp(5_000_000_000), 6, true, &ok);
        let dl = &d.dialogs[0];
        assert_eq!(dl.state, DialogState::Terminated);
        assert_eq!(dl.end, Some(DialogEnd::Bye));
        assert_eq!(dl.caller, Side::Client);
        assert_eq!(dl.bye_by, Some(Side::Server));
        assert_eq!(dl.to_tag.as_deref(), Some("tt"));
        assert_eq!(
            (dl.first_1xx_ts, dl.ok_ts, dl.ack_ts, dl.bye_ok_ts),
            (
                Some(Timestamp(1_000_000_000)),
                Some(Timestamp(2_000_000_000)),
                Some(Timestamp(3_000_000_000)),
                Some(Timestamp(5_000_000_000))
            )
        );
        d.mark_connection_died(Timestamp(9));
        assert_eq!(d.cut_calls().count(), 0);
    }

    #[test]
    fn dialog_cut_by_transport_loss() {
        let mut d = SipDialogs::new();
        call(
            &mut d,
            &[
                ("INVITE sip:2000@pbx SIP/2.0", true, None),
                ("SIP/2.0 180 Ringing", false, Some("tt")),
                ("SIP/2.0 200 OK", false, Some("tt")),
                ("ACK sip:2000@pbx SIP/2.0", true, Some("tt")),
            ],
        );
        d.mark_connection_died(Timestamp(60_000_000_000));
        let cut: Vec<_> = d.cut_calls().collect();
        assert_eq!(cut.len(), 1);
        assert_eq!(cut[0].end, Some(DialogEnd::TransportLost));
        assert_eq!(cut[0].cut_ts, Some(Timestamp(60_000_000_000)));
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["dialogs"][0]["cut_by_transport_loss"], true);
    }

    #[test]
    fn rejected_and_cancelled_calls() {
        let mut d = SipDialogs::new();
        let inv = parse(&msg(
            "INVITE sip:2000@pbx SIP/2.0",
            "c2",
            "1 INVITE",
            None,
            SDP,
        ));
        d.add(Timestamp(0), 1, true, &inv);
        d.add(
            Timestamp(1),
            2,
            false,
            &parse(&msg(
                "SIP/2.0 486 Busy Here",
                "c2",
                "1 INVITE",
                Some("x"),
                "",
            )),
        );
        assert_eq!(d.dialogs[0].end, Some(DialogEnd::Rejected { code: 486 }));
        let inv = parse(&msg(
            "INVITE sip:2000@pbx SIP/2.0",
            "c3",
            "1 INVITE",
            None,
            SDP,
        ));
        d.add(Timestamp(2), 3, true, &inv);
        d.add(
            Timestamp(3),
            4,
            true,
            &parse(&msg(
                "CANCEL sip:2000@pbx SIP/2.0",
                "c3",
                "1 CANCEL",
                None,
                "",
            )),
        );
        d.add(
            Timestamp(4),
            5,
            false,
            &parse(&msg(
                "SIP/2.0 487 Request Terminated",
                "c3",
                "1 INVITE",
                Some("y"),
                "",
            )),
        );
        assert_eq!(d.dialogs[1].end, Some(DialogEnd::Cancelled));
        d.mark_connection_died(Timestamp(5));
        assert_eq!(d.cut_calls().count(), 0);
    }

    #[test]
    fn dialogs_are_capped() {
        let mut d = SipDialogs::with_caps(2, 2);
        for i in 0..5 {
            let m = parse(&msg(
                "INVITE sip:x SIP/2.0",
                &format!("id{i}"),
                "1 INVITE",
                None,
                "",
            ));
            d.add(Timestamp(i), 1, true, &m);
        }
        assert_eq!((d.dialogs.len(), d.dialogs_overflow), (2, 3));
    }

    #[test]
    fn register_refresh_and_lost_registration() {
        let mut d = SipDialogs::new();
        for k in 0..3u32 {
            let r =
                String::from_utf8_lossy(REGISTER).replace("CSeq: 1", &format!("CSeq: {}", k + 1));
            let ok = String::from_utf8_lossy(REGISTER_OK)
                .replace("CSeq: 1", &format!("CSeq: {}", k + 1));
            let t = i64::from(k) * 300_000_000_000;
            d.add(Timestamp(t), 1, true, &parse(r.as_bytes()));
            if k < 2 {
                d.add(Timestamp(t + 1), 2, false, &parse(ok.as_bytes()));
            }
        }
        assert_eq!(d.register_refresh_intervals_s(), vec![300.0]);
        d.mark_connection_died(Timestamp(700_000_000_000));
        assert!(d.registrations[2].lost);
        assert!(!d.registrations[1].lost);
    }

    /// Without details a long connection keeps the first accepted registration and the pending
    /// ones, not one record per refresh; calls keep no From/To.
    #[test]
    fn slim_registrations_keep_first_accepted_and_pending() {
        let mut d = SipDialogs::new().keep_details(false);
        // CSeq 1 is refused (401 challenge), 2..=5 accepted, 6 never answered.
        for k in 1..=6u32 {
            let cseq = format!("CSeq: {k}");
            let r = String::from_utf8_lossy(REGISTER).replace("CSeq: 1", &cseq);
            let mut ok = String::from_utf8_lossy(REGISTER_OK).replace("CSeq: 1", &cseq);
            if k == 1 {
                ok = ok.replace("200 OK", "401 Unauthorized");
            }
            let t = i64::from(k) * 300_000_000_000;
            d.add(Timestamp(t), u64::from(k) * 2, true, &parse(r.as_bytes()));
            if k < 6 {
                d.add(
                    Timestamp(t + 1),
                    u64::from(k) * 2 + 1,
                    false,
                    &parse(ok.as_bytes()),
                );
                // Between refreshes: the first accepted alone, in a list without room for
                // the refresh it held.
                if k >= 2 {
                    assert_eq!(d.registrations.len(), 1);
                    assert_eq!(d.registrations.capacity(), 1, "after CSeq {k}");
                }
            }
        }
        let cseqs: Vec<u32> = d.registrations.iter().map(|r| r.cseq_num).collect();
        assert_eq!(cseqs, vec![2, 6]);
        assert_eq!(d.registrations[0].response_code, Some(200));
        assert_eq!(d.registrations[1].response_code, None);
        // Room for the next refresh, not a list grown for every one kept before.
        assert!(
            d.registrations.capacity() <= 2,
            "{}",
            d.registrations.capacity()
        );
        // The same exchange with details keeps every refresh.
        let mut full = SipDialogs::new();
        for k in 1..=3u32 {
            let cseq = format!("CSeq: {k}");
            let r = String::from_utf8_lossy(REGISTER).replace("CSeq: 1", &cseq);
            let ok = String::from_utf8_lossy(REGISTER_OK).replace("CSeq: 1", &cseq);
            full.add(Timestamp(0), 1, true, &parse(r.as_bytes()));
            full.add(Timestamp(1), 2, false, &parse(ok.as_bytes()));
        }
        assert_eq!(full.registrations.len(), 3);

        let invite = msg("INVITE sip:2000@pbx SIP/2.0", "c1", "1 INVITE", None, SDP);
        let ok = msg("SIP/2.0 200 OK", "c1", "1 INVITE", Some("tt"), SDP);
        for details in [true, false] {
            let mut d = SipDialogs::new().keep_details(details);
            d.add(Timestamp(0), 1, true, &parse(&invite));
            d.add(Timestamp(1), 2, false, &parse(&ok));
            let dl = &d.dialogs[0];
            assert_eq!(dl.ok_ts, Some(Timestamp(1)));
            assert_eq!(dl.to_tag.is_some(), details);
            assert_eq!(dl.from_uri.is_some(), details);
        }
    }

    /// Calls are found by Call-ID by a scan while they are few and through the index from
    /// `INDEX_FROM` on: every BYE finds its call on either side of the switch, and a retransmitted
    /// INVITE is not a second call.
    #[test]
    fn calls_are_found_with_and_without_the_index() {
        let secs = |s: i64| Timestamp(s * 1_000_000_000);
        let m = |start: &str, id: &str, cseq: &str| parse(&msg(start, id, cseq, Some("tt"), ""));
        for n in [INDEX_FROM - 1, INDEX_FROM, 3 * INDEX_FROM] {
            let mut d = SipDialogs::new();
            for k in 0..n {
                let id = format!("call-{k}");
                d.add(
                    secs(k as i64),
                    1,
                    false,
                    &m("INVITE sip:1@x SIP/2.0", &id, "1 INVITE"),
                );
                d.add(
                    secs(k as i64),
                    2,
                    true,
                    &m("SIP/2.0 200 OK", &id, "1 INVITE"),
                );
            }
            // The first call's INVITE again: a retransmission.
            d.add(
                secs(1000),
                3,
                false,
                &m("INVITE sip:1@x SIP/2.0", "call-0", "1 INVITE"),
            );
            assert_eq!(d.dialogs.len(), n);
            assert_eq!(d.index.is_none(), n < INDEX_FROM, "{n}");
            for k in (0..n).rev() {
                let id = format!("call-{k}");
                d.add(
                    secs(2000),
                    4,
                    false,
                    &m("BYE sip:1@x SIP/2.0", &id, "2 BYE"),
                );
            }
            assert!(
                d.dialogs.iter().all(|x| x.bye_ts == Some(secs(2000))),
                "{n}"
            );
        }
    }

    /// An agent's day: a call every 5 minutes, each ended by a BYE and its 200. Without details
    /// the calls that ended long ago go; the one up, and one whose BYE was never answered, stay,
    /// and the call cut when the connection dies is the same as with every call kept.
    #[test]
    fn ended_calls_are_forgotten_without_details() {
        let secs = |s: i64| Timestamp(s * 1_000_000_000);
        let call = |d: &mut SipDialogs, id: &str, at: i64, bye: Option<bool>| {
            let m = |start: &str, cseq: &str| parse(&msg(start, id, cseq, Some("tt"), "")).clone();
            d.add(
                secs(at),
                1,
                false,
                &m("INVITE sip:1001@x SIP/2.0", "1 INVITE"),
            );
            d.add(secs(at + 1), 2, true, &m("SIP/2.0 200 OK", "1 INVITE"));
            d.add(
                secs(at + 1),
                3,
                false,
                &m("ACK sip:1001@x SIP/2.0", "1 ACK"),
            );
            if let Some(answered) = bye {
                d.add(
                    secs(at + 60),
                    4,
                    false,
                    &m("BYE sip:1001@x SIP/2.0", "2 BYE"),
                );
                if answered {
                    d.add(secs(at + 60), 5, true, &m("SIP/2.0 200 OK", "2 BYE"));
                }
            }
        };
        for details in [true, false] {
            let mut d = SipDialogs::new().keep_details(details);
            call(&mut d, "unanswered-bye", 0, Some(false));
            for k in 1..100 {
                call(&mut d, &format!("c{k}"), k * 300, Some(true));
            }
            call(&mut d, "up", 100 * 300, None);
            let ids: Vec<&str> = d.dialogs.iter().map(|x| x.call_id.as_str()).collect();
            if details {
                assert_eq!(ids.len(), 101);
            } else {
                // The calls 300 s apart each ended long before the next began: the one
                // before is forgotten as the next comes, from the first call on.
                assert!(ids.len() <= 3, "{ids:?}");
                assert!(
                    ids.contains(&"unanswered-bye") && ids.contains(&"up"),
                    "{ids:?}"
                );
            }
            // Messages still find their calls after the list was rewritten.
            let reinvite = msg(
                "INVITE sip:1001@x SIP/2.0",
                "up",
                "3 INVITE",
                Some("tt"),
                "",
            );
            d.add(secs(100 * 300 + 5), 6, false, &parse(&reinvite));
            assert!(d
                .dialogs
                .iter()
                .any(|x| x.call_id == "up" && x.reinvites == 1));
            d.mark_connection_died(secs(100 * 300 + 10));
            let cut: Vec<&str> = d.cut_calls().map(|x| x.call_id.as_str()).collect();
            assert_eq!(cut, vec!["up"]);
        }
    }

    #[test]
    fn a_finished_connection_forgets_the_calls_that_ended_long_before_it() {
        let secs = |s: i64| Timestamp(s * 1_000_000_000);
        let m = |start: &str, id: &str, cseq: &str| parse(&msg(start, id, cseq, Some("tt"), ""));
        // Three calls, each ended less than two minutes before the next began (so the pass
        // made while the connection lives keeps them): one ended 140 s before the end, one
        // 40 s before it, one still up.
        for details in [true, false] {
            let mut d = SipDialogs::new().keep_details(details);
            for (id, at, bye) in [("old", 0, true), ("recent", 100, true), ("up", 170, false)] {
                d.add(
                    secs(at),
                    1,
                    false,
                    &m("INVITE sip:1@x SIP/2.0", id, "1 INVITE"),
                );
                d.add(secs(at + 1), 2, true, &m("SIP/2.0 200 OK", id, "1 INVITE"));
                if bye {
                    d.add(
                        secs(at + 60),
                        3,
                        false,
                        &m("BYE sip:1@x SIP/2.0", id, "2 BYE"),
                    );
                    d.add(secs(at + 60), 4, true, &m("SIP/2.0 200 OK", id, "2 BYE"));
                }
            }
            let live: Vec<&str> = d.dialogs.iter().map(|x| x.call_id.as_str()).collect();
            assert_eq!(live, ["old", "recent", "up"]);
            d.forget_ended_calls_at_end(secs(200));
            let ids: Vec<&str> = d.dialogs.iter().map(|x| x.call_id.as_str()).collect();
            if details {
                assert_eq!(ids, ["old", "recent", "up"]);
            } else {
                assert_eq!(ids, ["recent", "up"]);
            }
            // The index still leads to the calls kept.
            d.add(
                secs(201),
                5,
                false,
                &m("BYE sip:1@x SIP/2.0", "up", "2 BYE"),
            );
            assert!(d
                .dialogs
                .iter()
                .any(|x| x.call_id == "up" && x.bye_ts.is_some()));
        }
    }

    #[test]
    fn a_call_over_long_ago_goes_at_the_next_message_with_its_room() {
        let secs = |s: i64| Timestamp(s * 1_000_000_000);
        let m = |start: &str, id: &str, cseq: &str| parse(&msg(start, id, cseq, Some("tt"), ""));
        let register = |id: &str| m("REGISTER sip:example.net SIP/2.0", id, "7 REGISTER");
        let (invite, bye) = ("INVITE sip:1@x SIP/2.0", "BYE sip:1@x SIP/2.0");
        for details in [true, false] {
            let mut d = SipDialogs::new().keep_details(details);
            d.add(secs(0), 1, false, &m(invite, "call", "1 INVITE"));
            d.add(secs(1), 2, true, &m("SIP/2.0 200 OK", "call", "1 INVITE"));
            d.add(secs(60), 3, false, &m(bye, "call", "2 BYE"));
            d.add(secs(60), 4, true, &m("SIP/2.0 200 OK", "call", "2 BYE"));
            // Within two minutes of its end, a message leaves the call (a late response may
            // still come).
            d.add(secs(180), 5, false, &register("r1"));
            assert_eq!(d.dialogs.len(), 1, "details {details}");
            // Past them, the next message takes it and its room, unless details are kept.
            d.add(secs(181), 6, false, &register("r2"));
            if details {
                assert_eq!(d.dialogs.len(), 1);
            } else {
                assert!(d.dialogs.is_empty());
                assert_eq!(d.dialogs.capacity(), 0);
            }
            // A call still up is never taken, however old.
            d.add(secs(200), 7, false, &m(invite, "up", "1 INVITE"));
            d.add(secs(201), 8, true, &m("SIP/2.0 200 OK", "up", "1 INVITE"));
            d.add(secs(20_000), 9, false, &register("r3"));
            let ids: Vec<&str> = d.dialogs.iter().map(|x| x.call_id.as_str()).collect();
            assert_eq!(ids.last(), Some(&"up"));
            d.mark_connection_died(secs(20_001));
            let cut: Vec<&str> = d.cut_calls().map(|x| x.call_id.as_str()).collect();
            assert_eq!(cut, ["up"]);
        }
    }

    /// Heads made of the pieces the byte scans treat specially: compact and long names in any
    /// case, with white space around them, values with quotes, brackets, commas, parameters,
    /// Unicode white space (U+00A0, U+3000) and bytes that are not UTF-8, folded lines, bare LF
    /// ends and lines without a colon.
    fn sip_head() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        const STARTS: [&str; 5] = [
            "INVITE sip:a@b SIP/2.0",
            "SIP/2.0 200 OK",
            "REGISTER sip:example.net SIP/2.0",
            "SIP/2.0 180 Ringing",
            "BYE sip:x SIP/2.0",
        ];
        const NAMES: [&str; 28] = [
            "Call-ID",
            "i",
            "CSeq",
            "cseq",
            "From",
            "f",
            "To",
            "t",
            "TO",
            "Via",
            "v",
            "Contact",
            "m",
            "Expires",
            "User-Agent",
            "Server",
            "Reason",
            "Content-Type",
            "c",
            "Content-Length",
            "l",
            "Max-Forwards",
            "Allow",
            " Call-ID ",
            "\u{a0}To",
            "Fr\u{f6}m",
            "\tcseq",
            "Supported",
        ];
        const PIECES: [&str; 32] = [
            "<sip:a@b>",
            ";tag=x1",
            ";TAG = \"q\"",
            ";expires=60",
            ";branch=z9hG4bK1",
            "\"Agent, 1\"",
            "\"a\\\"b\"",
            ",",
            "SIP/2.0/wss h:5060",
            " ",
            "\t",
            "\"",
            "\\",
            "<",
            ">",
            ";",
            "=",
            "\u{e9}",
            "\u{a0}",
            "\u{3000}",
            "123",
            " INVITE",
            "*",
            "x",
            "4294967296",
            "sip:c@d;transport=ws",
            ";expires=\"30\"",
            "q=0.5",
            "\u{85}",
            "0",
            "\x0b",
            "\x0c",
        ];
        let value = proptest::collection::vec(prop::sample::select(&PIECES[..]), 0..8)
            .prop_map(|v| v.concat());
        let line = (
            0u8..10,
            prop::sample::select(&NAMES[..]),
            prop::sample::select(&[":", ": ", " :", ":\t"][..]),
            value,
            any::<bool>(),
        )
            .prop_map(|(kind, name, sep, value, lf)| {
                let end = if lf { "\n" } else { "\r\n" };
                let mut l = match kind {
                    0 => format!(" {value}{end}"),       // folded
                    1 => format!("\t{value}{end}"),      // folded
                    2 => format!("{name} {value}{end}"), // no colon
                    _ => format!("{name}{sep}{value}{end}"),
                }
                .into_bytes();
                if kind == 3 && !value.is_empty() {
                    l.insert(l.len() / 2, 0xff); // not UTF-8: the message owns its text
                }
                l
            });
        (
            prop::sample::select(&STARTS[..]),
            proptest::collection::vec(line, 0..14),
            any::<bool>(),
        )
            .prop_map(|(start, lines, end)| {
                let mut b = format!("{start}\r\n").into_bytes();
                for l in lines {
                    b.extend_from_slice(&l);
                }
                if end {
                    b.extend_from_slice(b"\r\nv=0\r\n");
                }
                b
            })
    }

    proptest::proptest! {
        /// The byte scans (memchr line ends, `split_once_byte`, `trim`, `param`) read what the
        /// char searches they replaced read: every field of the message, hence every field the
        /// dialogs and the rules read, is the same as the former parser's
        /// (`sip_reference`, test-only).
        #[test]
        fn head_parse_matches_the_former_parser(head in sip_head()) {
            let now = match parse_datagram(&head) {
                Parse::Complete { value, .. } => Some(value),
                _ => None,
            };
            proptest::prop_assert_eq!(now, crate::app::sip_reference::parse_datagram(&head));
        }

        /// A parse for the tracking (`Fields::Tracked`) is the whole parse without the fields
        /// it leaves out, on every kind of head: folded lines, compact names, no colon, bytes
        /// that are not UTF-8, a stream's Content-Length (which alone can make a head invalid:
        /// both parses then give up alike).
        #[test]
        fn a_parse_for_the_tracking_is_the_whole_parse_less_its_fields(head in sip_head()) {
            // What a parse gave, the fields the tracking leaves out cleared (no-ops on its own).
            fn outcome(p: Parse<SipMessage<'_>>) -> Result<Option<(SipMessage<'_>, usize)>, String> {
                match p {
                    Parse::Complete { value, consumed } => Ok(Some((tracked_only(value), consumed))),
                    Parse::Partial => Ok(None),
                    Parse::Invalid(e) => Err(e),
                }
            }
            proptest::prop_assert_eq!(
                outcome(parse_message_with(&head, Fields::Tracked)),
                outcome(parse_message(&head))
            );
            proptest::prop_assert_eq!(
                outcome(parse_datagram_with(&head, Fields::Tracked)),
                outcome(parse_datagram(&head))
            );
            proptest::prop_assert_eq!(
                outcome(parse_ws_message_with(&head, head.len() as u64 + 9, Fields::Tracked)),
                outcome(parse_ws_message(&head, head.len() as u64 + 9))
            );
        }

        /// The lines of a head split at the line ends `find_head_end` found are the lines
        /// searched for: with CRLF or bare LF ends, CRs inside lines, an end of the head or
        /// none, and more lines than `LineEnds` holds (the rest then searched for).
        #[test]
        fn lines_at_the_ends_found_are_the_lines_searched(
            lines in proptest::collection::vec(
                (proptest::collection::vec(proptest::sample::select(&b"a:\r "[..]), 1..6), proptest::prelude::any::<bool>()),
                0..120,
            ),
            end in proptest::sample::select(&["", "\r\n", "\n", "\r\nbody\n"][..]),
        ) {
            let mut text = String::new();
            for (line, crlf) in &lines {
                text.push_str(std::str::from_utf8(line).unwrap_or(""));
                text.push_str(if *crlf { "\r\n" } else { "\n" });
            }
            text.push_str(end);
            let mut ends = LineEnds::default();
            let head_len = find_head_end(text.as_bytes(), &mut ends)
                .unwrap_or(text.len().min(MAX_HEAD));
            let head = text.get(..head_len).unwrap_or(&text);
            let searched: Vec<&str> = Lines::new(head).collect();
            let found: Vec<&str> = Lines::known(head, &ends).collect();
            proptest::prop_assert_eq!(found, searched);
        }

        #[test]
        fn random_bytes_parse_as_the_former_parser(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let mut with_start = b"INVITE sip:a SIP/2.0\r\n".to_vec();
            with_start.extend_from_slice(&data);
            for b in [&data, &with_start] {
                let now = match parse_datagram(b) {
                    Parse::Complete { value, .. } => Some(value),
                    _ => None,
                };
                proptest::prop_assert_eq!(now, crate::app::sip_reference::parse_datagram(b));
            }
        }

        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..500)) {
            let mut d = SipDialogs::new();
            for parsed in [parse_message(&data), parse_datagram(&data)] {
                if let Parse::Complete { value, consumed } = parsed {
                    proptest::prop_assert!(consumed <= data.len());
                    d.add(Timestamp(0), 1, true, &value);
                }
            }
            let mut with_start = b"INVITE sip:a SIP/2.0\r\n".to_vec();
            with_start.extend_from_slice(&data);
            let _ = parse_message(&with_start);
            let _ = parse_ws_message(&with_start, with_start.len() as u64 + 100);
            let _ = parse_ws_message(&data, 50);
            if let Parse::Complete { value, .. } = parse_datagram(&with_start) {
                d.add(Timestamp(1), 2, false, &value);
            }
            d.mark_connection_died(Timestamp(2));
        }
    }
}
