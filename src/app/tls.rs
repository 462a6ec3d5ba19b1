//! TLS: the ClientHello's server name (SNI, RFC 6066 §3) and ALPN (RFC 7301 §3.1), a record
//! header sanity check for either direction, and a streaming record scanner that reports record
//! sizes (content hidden) for the heartbeat analysis.
//!
//! Hand-written: the ClientHello layout is fixed by RFC 8446 §4.1.2 (same shape in TLS 1.2,
//! RFC 5246 §7.4.1.2), and a few length-prefixed reads are simpler than a parser framework.

use crate::capture::Timestamp;
use serde::Serialize;

/// TLSPlaintext.length MUST NOT exceed 2^14 (RFC 8446 §5.1); TLS 1.2 ciphertext may add 2048
/// (RFC 5246 §6.2.3).
pub const MAX_RECORD_LEN: usize = (1 << 14) + 2048;
/// Most handshake bytes gathered across records for one ClientHello.
const MAX_HELLO: usize = 64 * 1024;
/// Names kept.
const MAX_NAME: usize = 255;
const MAX_ALPN: usize = 16;

/// Record content types (RFC 8446 §5.1; RFC 6520 heartbeat = 24).
pub const CT_CHANGE_CIPHER_SPEC: u8 = 20;
pub const CT_ALERT: u8 = 21;
pub const CT_HANDSHAKE: u8 = 22;
pub const CT_APPLICATION_DATA: u8 = 23;
pub const CT_HEARTBEAT: u8 = 24;

/// Extension numbers (IANA TLS ExtensionType registry).
const EXT_SERVER_NAME: u16 = 0; // RFC 6066 §3
const EXT_ALPN: u16 = 16; // RFC 7301 §3.1
const EXT_SUPPORTED_VERSIONS: u16 = 43; // RFC 8446 §4.2.1
const EXT_ECH: u16 = 0xfe0d; // encrypted_client_hello (RFC 9849)

/// What a ClientHello tells about the connection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ClientHello {
    /// host_name from server_name (RFC 6066 §3). With ECH this is the outer, public name.
    pub sni: Option<String>,
    /// Highest version offered: from supported_versions (RFC 8446 §4.2.1, GREASE ignored),
    /// else legacy_version. 0x0304 = TLS 1.3, 0x0303 = TLS 1.2.
    pub version: u16,
    /// ClientHello.legacy_version (0x0303 in TLS 1.3, RFC 8446 §4.1.2).
    pub legacy_version: u16,
    /// Record-layer version of the first record (often 0x0301, RFC 8446 §5.1).
    pub record_version: u16,
    pub alpn: Vec<String>,
    /// An encrypted_client_hello extension was present.
    pub ech: bool,
}

/// A TLS record header (RFC 8446 §5.1): content type, version and length, with its sanity.
pub fn looks_like_tls(buf: &[u8]) -> bool {
    let (Some(&ct), Some(&major), Some(&minor), Some(&l0), Some(&l1)) =
        (buf.first(), buf.get(1), buf.get(2), buf.get(3), buf.get(4))
    else {
        return false;
    };
    let len = usize::from(u16::from_be_bytes([l0, l1]));
    (CT_CHANGE_CIPHER_SPEC..=CT_HEARTBEAT).contains(&ct)
        && major == 3
        && minor <= 4
        && (1..=MAX_RECORD_LEN).contains(&len)
}

/// Parses the ClientHello at the start of a client stream: one or more handshake records
/// (type 22) whose fragments hold a handshake message of type 1 (RFC 8446 §4, §5.1: handshake
/// messages may be split across records). `None` if it is not one, or incomplete.
pub fn client_hello(buf: &[u8]) -> Option<ClientHello> {
    if !looks_like_tls(buf) || buf.first() != Some(&CT_HANDSHAKE) {
        return None;
    }
    let record_version = u16::from_be_bytes([*buf.get(1)?, *buf.get(2)?]);
    // Gather handshake bytes until the whole message is in.
    let mut hs: Vec<u8> = Vec::new();
    let mut rest = buf;
    loop {
        if rest.first() != Some(&CT_HANDSHAKE) || !looks_like_tls(rest) {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([*rest.get(3)?, *rest.get(4)?]));
        let frag = rest.get(5..5 + len)?;
        if hs.len() + frag.len() > MAX_HELLO {
            return None;
        }
        hs.extend_from_slice(frag);
        rest = rest.get(5 + len..)?;
        if hs.len() >= 4 {
            let need = 4 + u24(hs.get(1..4)?);
            if hs.len() >= need {
                break;
            }
        }
    }
    let mut r = Reader(&hs);
    if r.u8()? != 1 {
        return None; // HandshakeType client_hello(1), RFC 8446 §4
    }
    let body_len = r.u24()?;
    let mut r = Reader(r.take(body_len)?);
    // struct ClientHello, RFC 8446 §4.1.2.
    let legacy_version = r.u16()?;
    r.take(32)?; // random
    let sid = usize::from(r.u8()?);
    r.take(sid)?; // legacy_session_id <0..32>
    let cs = usize::from(r.u16()?);
    r.take(cs)?; // cipher_suites <2..2^16-2>
    let comp = usize::from(r.u8()?);
    r.take(comp)?; // legacy_compression_methods <1..2^8-1>
    let mut hello = ClientHello {
        version: legacy_version,
        legacy_version,
        record_version,
        ..Default::default()
    };
    if r.0.is_empty() {
        return Some(hello); // no extensions (possible before TLS 1.3)
    }
    let ext_len = usize::from(r.u16()?);
    let mut exts = Reader(r.take(ext_len)?);
    while !exts.0.is_empty() {
        let ty = exts.u16()?;
        let len = usize::from(exts.u16()?);
        let mut data = Reader(exts.take(len)?);
        match ty {
            EXT_SERVER_NAME => {
                // ServerNameList: server_name_list<1..2^16-1>; each NameType(1) + opaque
                // HostName<1..2^16-1>; host_name = 0 (RFC 6066 §3).
                let list_len = usize::from(data.u16()?);
                let mut list = Reader(data.take(list_len)?);
                while !list.0.is_empty() {
                    let name_type = list.u8()?;
                    let n = usize::from(list.u16()?);
                    let name = list.take(n)?;
                    if name_type == 0 && hello.sni.is_none() {
                        let name = name.get(..n.min(MAX_NAME))?;
                        hello.sni = Some(String::from_utf8_lossy(name).into_owned());
                    }
                }
            }
            EXT_ALPN => {
                // ProtocolNameList: protocol_name_list<2..2^16-1>, each opaque <1..2^8-1>
                // (RFC 7301 §3.1).
                let list_len = usize::from(data.u16()?);
                let mut list = Reader(data.take(list_len)?);
                while !list.0.is_empty() {
                    let n = usize::from(list.u8()?);
                    let name = list.take(n)?;
                    if hello.alpn.len() < MAX_ALPN {
                        hello.alpn.push(String::from_utf8_lossy(name).into_owned());
                    }
                }
            }
            EXT_SUPPORTED_VERSIONS => {
                // ProtocolVersion versions<2..254> in a ClientHello (RFC 8446 §4.2.1).
                let n = usize::from(data.u8()?);
                let mut list = Reader(data.take(n)?);
                while let Some(v) = list.u16() {
                    // GREASE values are 0x?a?a (RFC 8701 §2).
                    let grease = v & 0x0f0f == 0x0a0a;
                    if !grease && v > hello.version && v >> 8 == 3 {
                        hello.version = v;
                    }
                }
            }
            EXT_ECH => hello.ech = true,
            _ => {}
        }
    }
    Some(hello)
}

fn u24(b: &[u8]) -> usize {
    b.iter()
        .take(3)
        .fold(0usize, |acc, &x| (acc << 8) | usize::from(x))
}

/// Bounds-checked big-endian reads.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }
    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([*b.first()?, *b.get(1)?]))
    }
    fn u24(&mut self) -> Option<usize> {
        Some(u24(self.take(3)?))
    }
}

/// One record seen on a stream: only its header is read (the content is encrypted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TlsRecord {
    /// Time of the packet that completed the record.
    pub ts: Timestamp,
    pub first_frame_no: u64,
    pub last_frame_no: u64,
    pub content_type: u8,
    pub version: u16,
    /// Record payload length (without the 5-byte header).
    pub len: u16,
}

/// Streaming record splitter for one direction (RFC 8446 §5.1): a 5-byte header buffer, payload
/// skipped. Stops at a header that fails [`looks_like_tls`] or at a [`gap`](Self::gap).
#[derive(Debug, Default)]
pub struct TlsRecordScanner {
    hdr: [u8; 5],
    hdr_len: usize,
    start_frame: u64,
    remaining: usize,
    cur: Option<TlsRecord>,
    lost: bool,
    records: u64,
}

impl TlsRecordScanner {
    pub fn new() -> Self {
        Self::default()
    }

    /// Framing lost (gap, or not TLS).
    pub fn lost(&self) -> bool {
        self.lost
    }

    pub fn records(&self) -> u64 {
        self.records
    }

    pub fn gap(&mut self) {
        self.lost = true;
    }

    pub fn push(&mut self, data: &[u8], ts: Timestamp, frame_no: u64, out: &mut Vec<TlsRecord>) {
        let mut rest = data;
        while !rest.is_empty() && !self.lost {
            if let Some(rec) = self.cur.as_mut() {
                let take = self.remaining.min(rest.len());
                self.remaining -= take;
                rest = rest.get(take..).unwrap_or(&[]);
                if self.remaining == 0 {
                    rec.ts = ts;
                    rec.last_frame_no = frame_no;
                    out.push(*rec);
                    self.records = self.records.saturating_add(1);
                    self.cur = None;
                }
                continue;
            }
            if self.hdr_len == 0 {
                self.start_frame = frame_no;
            }
            let take = (5 - self.hdr_len).min(rest.len());
            if let (Some(dst), Some(src)) = (
                self.hdr.get_mut(self.hdr_len..self.hdr_len + take),
                rest.get(..take),
            ) {
                dst.copy_from_slice(src);
            }
            self.hdr_len += take;
            rest = rest.get(take..).unwrap_or(&[]);
            if self.hdr_len == 5 {
                self.hdr_len = 0;
                if !looks_like_tls(&self.hdr) {
                    self.lost = true;
                    return;
                }
                let [ct, v0, v1, l0, l1] = self.hdr;
                let len = u16::from_be_bytes([l0, l1]);
                self.remaining = usize::from(len);
                self.cur = Some(TlsRecord {
                    ts,
                    first_frame_no: self.start_frame,
                    last_frame_no: frame_no,
                    content_type: ct,
                    version: u16::from_be_bytes([v0, v1]),
                    len,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(ty: u16, data: &[u8]) -> Vec<u8> {
        let mut v = ty.to_be_bytes().to_vec();
        v.extend_from_slice(&(data.len() as u16).to_be_bytes());
        v.extend_from_slice(data);
        v
    }

    /// A ClientHello built field by field (RFC 8446 §4.1.2), with server_name "example.com"
    /// (RFC 6066 §3), ALPN h2/http/1.1 (RFC 7301), and supported_versions {GREASE, 1.3, 1.2}.
    fn client_hello_bytes() -> Vec<u8> {
        let mut body = vec![0x03, 0x03]; // legacy_version TLS 1.2
        body.extend_from_slice(&[0x11; 32]); // random
        body.push(32); // legacy_session_id length
        body.extend_from_slice(&[0x22; 32]);
        body.extend_from_slice(&[0x00, 0x06, 0x13, 0x01, 0x13, 0x02, 0xc0, 0x2f]); // 3 suites
        body.extend_from_slice(&[0x01, 0x00]); // compression: null
        let host = b"example.com";
        let mut sni = Vec::new();
        sni.extend_from_slice(&((host.len() + 3) as u16).to_be_bytes()); // list length
        sni.push(0); // host_name
        sni.extend_from_slice(&(host.len() as u16).to_be_bytes());
        sni.extend_from_slice(host);
        let alpn = [
            0x00, 0x0c, 0x02, b'h', b'2', 0x08, b'h', b't', b't', b'p', b'/', b'1', b'.', b'1',
        ];
        let versions = [0x06, 0x7a, 0x7a, 0x03, 0x04, 0x03, 0x03];
        let mut exts = ext(EXT_SERVER_NAME, &sni);
        exts.extend(ext(EXT_ALPN, &alpn));
        exts.extend(ext(EXT_SUPPORTED_VERSIONS, &versions));
        exts.extend(ext(0x000a, &[0x00, 0x02, 0x00, 0x1d])); // supported_groups x25519
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend(exts);
        let mut hs = vec![1]; // client_hello
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend(body);
        let mut rec = vec![CT_HANDSHAKE, 0x03, 0x01];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend(hs);
        rec
    }

    #[test]
    fn sni_alpn_version() {
        let b = client_hello_bytes();
        assert!(looks_like_tls(&b));
        let h = client_hello(&b).unwrap();
        assert_eq!(h.sni.as_deref(), Some("example.com"));
        assert_eq!(h.alpn, vec!["h2".to_string(), "http/1.1".to_string()]);
        assert_eq!(h.version, 0x0304);
        assert_eq!(h.legacy_version, 0x0303);
        assert_eq!(h.record_version, 0x0301);
        assert!(!h.ech);
        // Incomplete: None, never a panic.
        for cut in 0..b.len() {
            assert_eq!(client_hello(&b[..cut]), None, "cut {cut}");
        }
    }

    #[test]
    fn hello_split_across_two_records() {
        let b = client_hello_bytes();
        let hs = &b[5..];
        let (a, c) = hs.split_at(40);
        let mut two = Vec::new();
        for part in [a, c] {
            two.extend_from_slice(&[CT_HANDSHAKE, 0x03, 0x01]);
            two.extend_from_slice(&(part.len() as u16).to_be_bytes());
            two.extend_from_slice(part);
        }
        assert_eq!(
            client_hello(&two).unwrap().sni.as_deref(),
            Some("example.com")
        );
    }

    #[test]
    fn not_tls() {
        assert!(!looks_like_tls(b"GET / HTTP/1.1\r\n"));
        assert!(!looks_like_tls(b"\x16\x03\x01"));
        assert!(!looks_like_tls(&[0x17, 0x03, 0x03, 0xff, 0xff]));
        assert!(looks_like_tls(&[0x17, 0x03, 0x03, 0x00, 0x27]));
        assert_eq!(client_hello(&[0x17, 0x03, 0x03, 0x00, 0x01, 0x00]), None);
    }

    #[test]
    fn record_scanner_sizes_split_anywhere() {
        let mut stream = Vec::new();
        for len in [39u16, 39, 1200, 39] {
            stream.extend_from_slice(&[CT_APPLICATION_DATA, 3, 3]);
            stream.extend_from_slice(&len.to_be_bytes());
            stream.extend(std::iter::repeat_n(0u8, usize::from(len)));
        }
        let mut whole = Vec::new();
        TlsRecordScanner::new().push(&stream, Timestamp(1), 1, &mut whole);
        assert_eq!(
            whole.iter().map(|r| r.len).collect::<Vec<_>>(),
            vec![39, 39, 1200, 39]
        );
        let mut bytewise = Vec::new();
        let mut s = TlsRecordScanner::new();
        for b in &stream {
            s.push(std::slice::from_ref(b), Timestamp(1), 1, &mut bytewise);
        }
        assert_eq!(whole, bytewise);
        let mut s = TlsRecordScanner::new();
        let mut out = Vec::new();
        s.push(b"GET / HTTP/1.1", Timestamp(1), 1, &mut out);
        assert!(s.lost() && out.is_empty());
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = looks_like_tls(&data);
            let _ = client_hello(&data);
            let mut with_header = vec![CT_HANDSHAKE, 3, 1];
            with_header.extend_from_slice(&(data.len() as u16).to_be_bytes());
            with_header.extend_from_slice(&data);
            let _ = client_hello(&with_header);
            let mut out = Vec::new();
            TlsRecordScanner::new().push(&data, Timestamp(0), 0, &mut out);
        }

        #[test]
        fn mutated_hello_never_panics(pos in 0usize..200, byte in proptest::prelude::any::<u8>()) {
            let mut b = client_hello_bytes();
            let i = pos % b.len();
            b[i] = byte;
            let _ = client_hello(&b);
        }
    }
}
