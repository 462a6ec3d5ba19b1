//! What each fuzz target does with its input, shared by the targets (`fuzz/fuzz_targets/*.rs`)
//! and by the regression replay in `tests/broken.rs`, so that a crash input committed under
//! `fuzz/regressions/<target>/` is replayed through exactly the code path that found it.
//!
//! Every function takes the raw fuzz input and must never panic; the `assert!`s are invariants
//! whose failure is a bug as much as a panic inside vantage is.

#![allow(dead_code)]

use std::io::Cursor;
use std::net::{IpAddr, Ipv4Addr};

use vantage::app::{http, sip, tls, websocket, Parse};
use vantage::capture::{CaptureReader, Frame, LinkType, Timestamp};
use vantage::decode::{decode, decode_link, Decoded, Transport};
use vantage::tcp::{ConnKey, Proto, Seen, Tracker};

/// Zeek's 13 `conn_state` values.
pub const CONN_STATES: [&str; 13] = [
    "S0", "S1", "SF", "REJ", "S2", "S3", "RSTO", "RSTR", "RSTOS0", "RSTRH", "SH", "SHR", "OTH",
];
/// Zeek's history letters (upper case: from the originator), and `^` (direction flipped).
pub const HISTORY_LETTERS: &str = "^SsHhAaDdFfRrCcGgTtWwIiQq";

/// A target's body.
pub type Target = fn(&[u8]);

/// Every target, by the name of its folder under `fuzz/regressions/` and `fuzz/corpus/`.
pub const TARGETS: [(&str, Target); 7] = [
    ("capture", capture),
    ("decode", decode_any),
    ("tcp", tcp),
    ("http", http_upgrade),
    ("websocket", websocket_frames),
    ("sip", sip_messages),
    ("tls", tls_hello),
];

/// The link types `decode_link` supports; the first input byte picks one.
pub const LINKS: [u32; 8] = [0, 1, 101, 108, 113, 228, 229, 276];

/// A whole capture file (pcap, pcapng, either gzip-compressed), read to its end or its first
/// error, every frame decoded and tracked, as `vantage flows` does.
pub fn capture(data: &[u8]) {
    let Ok(mut r) = CaptureReader::from_reader("fuzz.pcap", Cursor::new(data.to_vec())) else {
        return;
    };
    let mut tracker = Tracker::new("fuzz");
    let mut n = 0u64;
    loop {
        match r.next_frame() {
            Ok(Some(f)) => {
                n += 1;
                assert_eq!(f.number, n, "frames are numbered 1, 2, ...");
                assert!(f.link.is_supported());
                if let Decoded::Ip(p) = decode(&f) {
                    // What the reader's lookahead does before tracking a frame
                    // (`pipeline::Lookahead`): the connection's key from the frame's ends, or
                    // from the packet where the fast path does not take it, then reads of the
                    // table and the state, never a panic; the packet tracked with what it
                    // found.
                    let key = match vantage::decode::peek_ends(f.link, f.data) {
                        Some(ends) => Some(ConnKey::of_ends(ends)),
                        None => ConnKey::of_packet(&p),
                    };
                    let seen = key.map(|key| Seen {
                        key,
                        slot: tracker.prefetch_key(&key),
                    });
                    if let Some(slot) = seen.and_then(|s| s.slot) {
                        tracker.prefetch_deeper(slot, 1);
                        tracker.prefetch_deeper(slot, 2);
                    }
                    tracker.sweep(&f);
                    tracker.packet_seen(&f, &p, seen);
                }
            }
            Ok(None) => break,
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.starts_with("fuzz.pcap: "),
                    "error names the file: {msg}"
                );
                break;
            }
        }
    }
    // After the end or an error, the reader stays at its end.
    assert!(matches!(r.next_frame(), Ok(None)));
    assert_eq!(r.frames_read(), n);
    let conns = tracker.finish();
    check_connections(&conns);
}

/// One frame of any supported link type: the first byte picks the link type.
pub fn decode_any(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let link = LinkType(LINKS[pick as usize % LINKS.len()]);
    let decoded = decode_link(link, rest);
    if let Decoded::Ip(p) = decoded {
        match p.transport {
            Transport::Tcp(t) => {
                assert!(t.payload.len() as u64 <= t.payload_len as u64 || t.payload_len == 0);
                let _ = t.flags.tcpdump();
            }
            Transport::Udp(u) => {
                assert!(u.payload.len() <= rest.len());
            }
            Transport::Other { .. } => {}
        }
        // The tracker must take whatever decode hands it.
        let frame = Frame {
            number: 1,
            ts: Timestamp(0),
            link,
            interface: 0,
            orig_len: rest.len() as u32,
            offset: 0,
            data: rest,
        };
        let mut t = Tracker::new("fuzz");
        t.packet(&frame, &p);
        check_connections(&t.finish());
    }
}

/// Checks what must hold of any tracker output.
pub fn check_connections(conns: &[Box<vantage::tcp::Connection>]) {
    for c in conns {
        if c.proto == Proto::Tcp {
            let st = c.conn_state.expect("TCP connections have a conn_state");
            assert!(CONN_STATES.contains(&st), "conn_state {st}");
            let h = c.history.as_deref().unwrap_or("");
            assert!(
                h.chars().all(|ch| HISTORY_LETTERS.contains(ch)),
                "history {h:?}"
            );
        }
        let _ = c.duration_s();
        // The kept HTTP heads unpack to what packs the same (`app::http::RequestHead`), and
        // every connection renders as `flows --format json` prints it.
        if let Some(h) = c.app.as_ref().and_then(|a| a.http.as_ref()) {
            if let (Some(packed), Some(head)) = (h.request.as_ref(), h.request()) {
                assert_eq!(*packed, vantage::app::http::RequestHead::new(&head));
            }
            if let (Some(packed), Some(head)) = (h.response.as_ref(), h.response()) {
                assert_eq!(*packed, vantage::app::http::ResponseHead::new(&head));
            }
        }
        let line = vantage::report::flow_json_line(c);
        assert!(!line.contains('\n'), "one line");
    }
}

/// Little cursor over the fuzz bytes; runs dry as zeros.
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// TCP tracking fed arbitrary segment sequences. The input is a list of 8-byte segment
/// descriptions (direction, flags, sequence and acknowledgment offsets from each side's ISN,
/// payload length, time step), each followed by its payload; the segments are built as real
/// Ethernet/IPv4/TCP frames with etherparse, decoded by `vantage::decode` and fed to the
/// `Tracker` (with stream reassembly and the application parsers on). A description can also
/// ask for its bytes to be fed as a raw Ethernet frame instead.
pub fn tcp(data: &[u8]) {
    let mut b = Bytes(data);
    let isn = [b.u16() as u32 * 65_537, b.u16() as u32 * 40_503];
    let server_port = [80u16, 443, 5060, 8080][b.u8() as usize % 4];
    let client = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
    let server = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10));
    let mut tracker = Tracker::new("fuzz");
    let mut ts: i64 = 1_700_000_000_000_000_000;
    let mut number = 0u64;
    let mut fed_tcp = 0u64;
    let mut frames = 0usize;
    while !b.is_empty() && frames < 4096 {
        frames += 1;
        let ctl = b.u8();
        let flags = b.u8();
        let seq_off = b.u16() as u32;
        let ack_off = b.u16() as u32;
        let len = b.u8() as usize;
        let step = b.u8();
        let from_client = ctl & 1 == 0;
        let raw = ctl & 0x80 != 0;
        let cport = 40_000 + ((ctl >> 1) & 3) as u16;
        // Time: mostly small steps, sometimes seconds or minutes, sometimes backwards.
        let dt: i64 = match step >> 6 {
            0 => (step & 63) as i64 * 1_000_000,
            1 => (step & 63) as i64 * 1_000_000_000,
            2 => (step & 63) as i64 * 60_000_000_000,
            _ => -((step & 63) as i64) * 1_000_000_000,
        };
        ts = ts.saturating_add(dt);
        let payload = b.take(len);
        let bytes: Vec<u8> = if raw {
            payload.to_vec()
        } else {
            let (src, dst, sport, dport, dir) = if from_client {
                (client, server, cport, server_port, 0)
            } else {
                (server, client, server_port, cport, 1)
            };
            let (IpAddr::V4(s), IpAddr::V4(d)) = (src, dst) else {
                unreachable!()
            };
            let seq = if ctl & 0x40 != 0 {
                seq_off.wrapping_mul(65_599)
            } else {
                isn[dir].wrapping_add(seq_off)
            };
            let ack = isn[1 - dir].wrapping_add(ack_off);
            let mut builder =
                etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                    .ipv4(s.octets(), d.octets(), 64 - (ctl >> 5 & 1))
                    .tcp(sport, dport, seq, u16::from_be_bytes([flags, ctl]));
            if flags & 0x01 != 0 {
                builder = builder.fin();
            }
            if flags & 0x02 != 0 {
                builder = builder.syn();
            }
            if flags & 0x04 != 0 {
                builder = builder.rst();
            }
            if flags & 0x08 != 0 {
                builder = builder.psh();
            }
            if flags & 0x10 != 0 {
                builder = builder.ack(ack);
            }
            if flags & 0x20 != 0 {
                builder = builder.urg(0);
            }
            let mut out = Vec::with_capacity(builder.size(payload.len()));
            builder.write(&mut out, payload).expect("writing to a Vec");
            // Snaplen: sometimes the frame is cut short.
            if flags & 0xc0 == 0xc0 {
                out.truncate(54 + payload.len() / 2);
            }
            out
        };
        number += 1;
        let frame = Frame {
            number,
            ts: Timestamp(ts),
            link: LinkType::ETHERNET,
            interface: 0,
            orig_len: bytes.len() as u32,
            offset: 0,
            data: &bytes,
        };
        if let Decoded::Ip(p) = decode(&frame) {
            if matches!(p.transport, Transport::Tcp(_)) {
                fed_tcp += 1;
            }
            tracker.packet(&frame, &p);
        }
    }
    let conns = tracker.finish();
    check_connections(&conns);
    let counted: u64 = conns
        .iter()
        .filter(|c| c.proto == Proto::Tcp)
        .map(|c| c.orig.pkts + c.resp.pkts)
        .sum();
    assert_eq!(counted, fed_tcp, "every TCP packet is counted once");
}

/// HTTP upgrade request and response heads.
pub fn http_upgrade(data: &[u8]) {
    let req = http::parse_request(data);
    let resp = http::parse_response(data);
    if let Parse::Complete { value, consumed } = &req {
        assert!(*consumed <= data.len());
        let _ = http::is_websocket_upgrade(value);
        let _ = http::is_upgrade_request(value);
        let _ = http::request_body_len(value);
        if let Some(k) = &value.sec_websocket_key {
            let _ = http::expected_accept(k);
        }
    }
    if let Parse::Complete { value, consumed } = &resp {
        assert!(*consumed <= data.len());
        let _ = http::upgrade_outcome(value);
        let _ = http::upgraded(value);
        let _ = http::response_body_len(value, Some("GET"));
        let _ = http::response_body_len(value, Some("HEAD"));
        let _ = http::response_body_len(value, None);
        if let Parse::Complete { value: r, .. } = &req {
            let _ = http::accept_ok(r, value);
        }
    }
    // Pipelined: keep parsing after the first head.
    let mut rest = data;
    for _ in 0..8 {
        match http::parse_request(rest) {
            Parse::Complete { consumed, .. } if consumed > 0 && consumed <= rest.len() => {
                rest = &rest[consumed..]
            }
            _ => break,
        }
    }
}

/// Splits `stream` into chunks whose lengths come from `seed` (an empty seed: one chunk).
fn chunks<'a>(stream: &'a [u8], seed: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = stream;
    let mut i = 0;
    while !rest.is_empty() {
        let n = if seed.is_empty() {
            rest.len()
        } else {
            let s = seed[i % seed.len()] as usize;
            i += 1;
            // 0 means "the rest", small values split finely.
            if s == 0 {
                rest.len()
            } else {
                (s % 37).max(1)
            }
        };
        let n = n.min(rest.len());
        out.push(&rest[..n]);
        rest = &rest[n..];
    }
    out
}

/// WebSocket frames pushed with arbitrary splits. Byte 0: side, extensions, prefix cap; byte 1:
/// how many split bytes follow; then the stream. The events must not depend on the splits.
pub fn websocket_frames(data: &[u8]) {
    let mut b = Bytes(data);
    let cfg = b.u8();
    let nseed = (b.u8() % 16) as usize;
    let seed = b.take(nseed);
    let stream = b.0;
    let from_client = cfg & 1 != 0;
    let ext = cfg & 2 != 0;
    let cap = [0usize, 1, 16, 4096][(cfg >> 2 & 3) as usize];
    let run = |parts: &[&[u8]]| {
        let mut p = websocket::WsParser::with_extensions(from_client, ext);
        if cfg & 0x10 != 0 {
            p.set_prefix_cap(cap);
        }
        let mut ev = Vec::new();
        for part in parts {
            p.push(part, Timestamp(7), 1, &mut ev);
        }
        assert_eq!(p.stream_offset(), stream.len() as u64);
        (ev, p.frames(), p.lost_sync().cloned(), p.mid_frame())
    };
    let whole = run(&[stream]);
    let split = run(&chunks(stream, seed));
    assert_eq!(
        whole, split,
        "WebSocket events depend on how the stream was split"
    );
    let stats = websocket::WsStats::from_events(&whole.0, &split.0);
    let _ = stats.closed_first_by();
    let _ = stats.both_sent_close();
    // A gap in the middle, then a resync attempt.
    let mut p = websocket::WsParser::new(from_client);
    let mut ev = Vec::new();
    let (a, c) = stream.split_at(stream.len() / 2);
    p.push(a, Timestamp(1), 1, &mut ev);
    p.gap();
    p.push(c, Timestamp(2), 2, &mut ev);
    p.resync();
    p.push(c, Timestamp(3), 3, &mut ev);
    for e in &ev {
        let mut s = websocket::WsStats::default();
        s.add(true, e);
    }
}

/// SIP over a stream (one message after the other), as a datagram, inside a WebSocket message
/// cut to a prefix, and every parsed message fed to the dialog tracker (small caps, so that the
/// overflow paths run too).
pub fn sip_messages(data: &[u8]) {
    let mut dialogs = sip::SipDialogs::with_caps(4, 4);
    // The same messages counted without registration records (`flows --format json`): the
    // same count, the same overflow, no record.
    let mut counted = sip::SipDialogs::with_caps(4, 4).keep_registrations(false);
    let add = |d: &mut sip::SipDialogs, c: &mut sip::SipDialogs, t, n, client, m: &_| {
        d.add(Timestamp(t), n, client, m);
        c.add(Timestamp(t), n, client, m);
    };
    let mut rest = data;
    let mut t = 0i64;
    for i in 0..64u64 {
        let skip = sip::leading_crlf_len(rest);
        let _ = sip::is_crlf_keepalive(rest);
        match sip::parse_message(rest) {
            Parse::Complete { value, consumed } => {
                assert!(
                    consumed > 0 && consumed <= rest.len(),
                    "consumed {consumed}"
                );
                assert!(skip <= consumed);
                let _ = value.label();
                t += 1_000_000_000;
                add(&mut dialogs, &mut counted, t, i, i % 2 == 0, &value);
                rest = &rest[consumed..];
            }
            _ => break,
        }
    }
    if let Parse::Complete { value, .. } = sip::parse_datagram(data) {
        add(&mut dialogs, &mut counted, t + 1, 100, false, &value);
    }
    if data.len() >= 2 {
        let total = data.len() as u64 + u16::from_be_bytes([data[0], data[1]]) as u64;
        let cut = (data[0] as usize).min(data.len());
        if let Parse::Complete { value, .. } = sip::parse_ws_message(&data[..cut], total) {
            add(&mut dialogs, &mut counted, t + 2, 101, true, &value);
        }
        let _ = sip::parse_ws_message(data, data.len() as u64);
    }
    assert_eq!(
        counted.registrations_seen() as usize,
        dialogs.registrations.len()
    );
    assert_eq!(
        counted.registrations_overflow,
        dialogs.registrations_overflow
    );
    assert!(counted.registrations.is_empty());
    dialogs.mark_connection_died(Timestamp(t + 3));
    let _ = dialogs.cut_calls().count();
    let _ = dialogs.register_refresh_intervals_s();
    let _ = dialogs.last_binding_expiry();
    let _ = vantage::app::session::looks_like_sip(data);
}

/// TLS: the ClientHello parser on the whole input, and the record scanner with arbitrary splits
/// (byte 0: how many split bytes follow); the records must not depend on the splits.
pub fn tls_hello(data: &[u8]) {
    let _ = tls::looks_like_tls(data);
    if let Some(h) = tls::client_hello(data) {
        let _ = (h.sni, h.version, h.alpn, h.ech);
    }
    let mut b = Bytes(data);
    let nseed = (b.u8() % 16) as usize;
    let seed = b.take(nseed);
    let stream = b.0;
    let _ = tls::client_hello(stream);
    let run = |parts: &[&[u8]]| {
        let mut s = tls::TlsRecordScanner::new();
        let mut out = Vec::new();
        for p in parts {
            s.push(p, Timestamp(5), 1, &mut out);
        }
        (out, s.records(), s.lost())
    };
    let whole = run(&[stream]);
    let split = run(&chunks(stream, seed));
    assert_eq!(
        whole, split,
        "TLS records depend on how the stream was split"
    );
}
