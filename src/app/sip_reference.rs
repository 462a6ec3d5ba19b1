//! The SIP head parser as it was before it scanned bytes (`parse_head_text` over `str::split`
//! and char searches), kept for the tests only: `sip::tests` checks that the parser gives the
//! same message as this one on generated heads, so that a faster scan drops nothing the rules
//! read (Call-ID, CSeq, tags, URIs, Expires, Contact, Reason).

#![allow(dead_code)]

use super::sip::{cap, closing_quote, parse_start, set_once, SipMessage};
use super::MAX_HEAD;
use std::borrow::Cow;

const MAX_VALUE: usize = 512;

/// As `sip::parse_datagram`.
pub fn parse_datagram(buf: &[u8]) -> Option<SipMessage<'_>> {
    let skip = buf
        .iter()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .count();
    let rest = buf.get(skip..).unwrap_or(&[]);
    if rest.is_empty() {
        return None;
    }
    let head_len = find_head_end(rest).unwrap_or(rest.len().min(MAX_HEAD));
    let head = rest.get(..head_len).unwrap_or(rest);
    let mut msg = parse_head(head).ok()?;
    msg.body_len = rest.len().saturating_sub(head_len) as u64;
    msg.head_len = head_len;
    msg.leading_crlf = skip;
    Some(msg)
}

/// Length of the head including the empty line that ends it (RFC 3261 §7: CRLF CRLF; bare LF
/// tolerated), searched within [`MAX_HEAD`] bytes.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    let window = buf.get(..buf.len().min(MAX_HEAD)).unwrap_or(buf);
    for (i, &b) in window.iter().enumerate() {
        if b != b'\n' {
            continue;
        }
        match (window.get(i + 1), window.get(i + 2)) {
            (Some(b'\n'), _) => return Some(i + 2),
            (Some(b'\r'), Some(b'\n')) => return Some(i + 3),
            _ => {}
        }
    }
    None
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
        let n = name.trim().as_bytes();
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
        LONG.iter()
            .find(|(long, _)| n.eq_ignore_ascii_case(long.as_bytes()))
            .map_or(Field::Other, |&(_, f)| f)
    }
}

/// Parses the start line and headers (no body). Folded lines (leading SP/HT, RFC 3261 §7.3.1)
/// are joined to the previous header; lines without a colon are skipped. Bytes that are not
/// UTF-8 read as U+FFFD (then the message owns its text).
fn parse_head(head: &[u8]) -> Result<SipMessage<'_>, String> {
    match std::str::from_utf8(head) {
        Ok(text) => parse_head_text(text, head.len()),
        Err(_) => {
            let text = String::from_utf8_lossy(head);
            parse_head_text(&text, head.len()).map(SipMessage::into_owned)
        }
    }
}

fn parse_head_text(text: &str, head_len: usize) -> Result<SipMessage<'_>, String> {
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
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
                    v.push_str(line.trim());
                }
            }
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if let Some((field, v)) = pending.take() {
            apply(&mut msg, &mut contact_expires, field, v)?;
        }
        let field = Field::of(name);
        let value = if field == Field::Other {
            Cow::Borrowed("")
        } else {
            cap(value.trim())
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
            let (sent, params) = first.split_once(';').unwrap_or((first, ""));
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

/// delta-seconds (§20.19, §25.1); values too large for 32 bits are clamped.
fn parse_delta(v: &str) -> Option<u32> {
    let v = v.trim().trim_matches('"');
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
    let v = v.trim();
    // Skip a quoted display name, which may contain '<' or ';'.
    let after_name = if v.starts_with('"') {
        closing_quote(v).map_or("", |end| v.get(end + 1..).unwrap_or(""))
    } else {
        v
    };
    if let Some(lt) = after_name.find('<') {
        let inner = after_name.get(lt + 1..).unwrap_or("");
        let (uri, params) = inner.split_once('>').unwrap_or((inner, ""));
        (uri.trim(), params)
    } else {
        let (uri, params) = after_name.split_once(';').unwrap_or((after_name, ""));
        (uri.trim(), params)
    }
}

/// First value of a comma-separated header (§7.3.1), ignoring commas in quotes or `<...>`.
/// Scans bytes, as [`closing_quote`].
fn first_value(v: &str) -> &str {
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
            b',' if !in_quote && !in_angle => return v.get(..i).unwrap_or(v).trim(),
            _ => {}
        }
    }
    v.trim()
}

/// Value of parameter `name` in ";a=b;c=d" (case-insensitive name, quotes removed).
fn param<'v>(params: &'v str, name: &str) -> Option<&'v str> {
    params.split(';').find_map(|p| {
        let (k, val) = p.split_once('=').unwrap_or((p, ""));
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| val.trim().trim_matches('"'))
    })
}
