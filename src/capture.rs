//! Stage 1: capture files -> timestamped frames.
//!
//! Reads classic pcap (both byte orders, µs and ns resolution, and the "modified" Kuznetzov
//! variant) and pcapng (several sections, several interfaces with their own link type,
//! `if_tsresol` and `if_tsoffset`; EPB, SPB and the obsolete Packet Block), plain or gzip
//! compressed, with the pure-Rust `pcap-parser` crate. Reading is streaming: the only buffer is
//! the reader's window, so memory does not grow with the file.
//!
//! Every frame keeps its 1-based number (as Wireshark counts) and the byte offset of its record,
//! so that every error and every piece of evidence can point back into the file.

use std::cell::RefCell;
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use anyhow::{bail, Result};
use pcap_parser::pcapng::Block;
use pcap_parser::traits::{PcapNGPacketBlock, PcapReaderIterator};
use pcap_parser::{LegacyPcapReader, PcapBlockOwned, PcapError, PcapNGReader};
use serde::Serialize;

use crate::i18n::Msg;

/// A non-fatal problem with a capture, each naming the frame or offset: the English line (the
/// JSON document and the command's stderr) and the same as a catalog message (the reports, in
/// their language). Reads as its English text (`Deref<Target = str>`, `Display`).
#[derive(Clone, Debug, PartialEq)]
pub struct Warning {
    pub text: String,
    pub msg: Msg,
}

impl Warning {
    pub fn new(text: impl Into<String>, msg: Msg) -> Warning {
        Warning {
            text: text.into(),
            msg,
        }
    }
}

impl std::ops::Deref for Warning {
    type Target = str;
    fn deref(&self) -> &str {
        &self.text
    }
}

impl std::borrow::Borrow<str> for Warning {
    fn borrow(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// In the JSON document, a warning is its English line.
impl Serialize for Warning {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// Initial read window. Large reads are what make streaming fast.
const INITIAL_BUFFER: usize = 1 << 20;
/// No capture tool writes records this large (libpcap's maximum snaplen is 256 KiB, Wireshark's
/// largest is 256 MiB for a few USB link types). A length above this is corruption, not data.
pub const MAX_RECORD: usize = 16 << 20;
/// pcapng "Obsolete Packet Block" (pcapng spec, appendix; type 0x00000002), which pcap-parser
/// hands over as an unknown block.
const OPB_TYPE: u32 = 0x0000_0002;
/// A frame byte-identical to one of the previous `DUP_WINDOW` frames, at most `DUP_MAX_NS`
/// apart, is the same packet captured twice (two interfaces of one pcapng, a SPAN port copying
/// both directions, `tcpdump -i any` on a bridge): no TCP stack resends a segment within 1 ms
/// with the same IP ID and TCP timestamp.
const DUP_WINDOW: usize = 8;
const DUP_MAX_NS: i64 = 1_000_000;

/// A point in time, in nanoseconds since the Unix epoch (UTC). Good until the year 2262.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn from_secs_nanos(secs: i64, nanos: i64) -> Self {
        Timestamp(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
    }
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }
    /// Seconds from `earlier` to `self`.
    pub fn secs_since(self, earlier: Timestamp) -> f64 {
        (self.0 - earlier.0) as f64 / 1e9
    }
    /// tcpdump `-tttt` style, UTC, microseconds: `2024-05-13 09:14:07.123456`.
    pub fn tcpdump(self) -> String {
        let secs = self.0.div_euclid(1_000_000_000);
        let nanos = self.0.rem_euclid(1_000_000_000) as u32;
        match chrono::DateTime::from_timestamp(secs, nanos) {
            Some(t) => t.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
            None => format!("{:.6}", self.as_secs_f64()),
        }
    }
}

/// Serialized as Zeek's JSON logs write `ts`: seconds since the epoch, as a number with
/// microseconds.
impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let micros = self.0.div_euclid(1_000);
        s.serialize_f64(micros as f64 / 1e6)
    }
}

impl schemars::JsonSchema for Timestamp {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timestamp".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "number",
            "description": "Seconds since the Unix epoch (UTC), with microseconds, as Zeek's ts"
        })
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.tcpdump())
    }
}

/// A link-layer header type, as numbered by tcpdump.org's LINKTYPE_ registry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct LinkType(pub u32);

impl LinkType {
    pub const NULL: LinkType = LinkType(0);
    pub const ETHERNET: LinkType = LinkType(1);
    pub const RAW: LinkType = LinkType(101);
    pub const LOOP: LinkType = LinkType(108);
    pub const LINUX_SLL: LinkType = LinkType(113);
    pub const IPV4: LinkType = LinkType(228);
    pub const IPV6: LinkType = LinkType(229);
    pub const LINUX_SLL2: LinkType = LinkType(276);

    /// The link types `decode` understands.
    pub fn is_supported(self) -> bool {
        matches!(self.0, 0 | 1 | 101 | 108 | 113 | 228 | 229 | 276)
    }

    pub fn name(self) -> String {
        match self.0 {
            0 => "NULL".into(),
            1 => "EN10MB".into(),
            101 => "RAW".into(),
            108 => "LOOP".into(),
            113 => "LINUX_SLL".into(),
            228 => "IPV4".into(),
            229 => "IPV6".into(),
            276 => "LINUX_SLL2".into(),
            n => format!("LINKTYPE_{n}"),
        }
    }
}

/// One captured frame. `data` borrows the reader's window: copy what must outlive the next call.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    /// 1-based, counting every packet record in the file, as Wireshark numbers frames.
    pub number: u64,
    pub ts: Timestamp,
    pub link: LinkType,
    /// pcapng interface id within its section (0 for classic pcap).
    pub interface: u32,
    /// Length on the wire; `data.len()` is what was captured.
    pub orig_len: u32,
    /// Byte offset of the record in the (decompressed) file.
    pub offset: u64,
    pub data: &'a [u8],
}

/// What the file turned out to be, for the capture summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Pcap,
    Pcapng,
}

#[derive(Clone, Debug)]
struct Interface {
    link: LinkType,
    /// Units per second.
    resolution: u64,
    /// Seconds to add to every timestamp (pcapng `if_tsoffset`).
    offset_secs: i64,
}

enum Inner {
    Legacy {
        reader: LegacyPcapReader<Box<dyn Read>>,
        link: LinkType,
        nanos: bool,
        big_endian: bool,
    },
    Ng {
        reader: PcapNGReader<Box<dyn Read>>,
        interfaces: Vec<Interface>,
        big_endian: bool,
    },
}

/// Streaming reader of one capture file.
pub struct CaptureReader {
    pub path: PathBuf,
    pub format: Format,
    pub gzip: bool,
    inner: Inner,
    /// Bytes the previous call handed out and that must be consumed before the next.
    pending: usize,
    frames: u64,
    io_error: Rc<RefCell<Option<io::Error>>>,
    /// Link types seen, in order of first appearance.
    pub link_types: Vec<LinkType>,
    /// Non-fatal problems, each naming the frame or offset.
    pub warnings: Vec<Warning>,
    done: bool,
    /// Frames that were exact copies of a recent frame (see `DUP_WINDOW`). They are still handed
    /// out, and a warning says so.
    pub duplicates: u64,
    /// (hash of the bytes, length, time, frame number) of the last frames.
    recent: [(u64, usize, i64, u64); DUP_WINDOW],
    /// Where the duplicates warning sits in `warnings`, with the first duplicate's description.
    dup_warning: Option<(usize, String, Msg)>,
    /// Whether frames are checked for copies (`skip_duplicate_check`).
    check_duplicates: bool,
}

/// Keeps the real I/O error (pcap-parser reduces it to `ReadError`) so that a corrupt `.gz`
/// is reported as such.
struct TrackedRead<R> {
    inner: R,
    error: Rc<RefCell<Option<io::Error>>>,
    /// Set once the source failed: every later read fails the same way.
    failed: Option<io::ErrorKind>,
}

impl<R: Read> Read for TrackedRead<R> {
    /// Fills `buf` as far as the source allows: pcap-parser reads once when it starts and
    /// expects a whole header from that one read. Bytes read before an error are handed out
    /// first (so the frames before a corrupt part of a `.gz` are kept); the error comes with the
    /// next read.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(kind) = self.failed {
            return Err(io::Error::from(kind));
        }
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let kind = e.kind();
                    self.failed = Some(kind);
                    *self.error.borrow_mut() = Some(e);
                    if got > 0 {
                        return Ok(got);
                    }
                    return Err(io::Error::from(kind));
                }
            }
        }
        Ok(got)
    }
}

/// Metadata of the next block, extracted so the borrow of the reader ends before we act on it.
enum Next {
    Packet {
        len: usize,
        ts: Timestamp,
        link: LinkType,
        interface: u32,
        orig_len: u32,
        data_start: usize,
        data_len: usize,
        bad_nanos: Option<u64>,
    },
    Interface {
        len: usize,
        iface: Interface,
    },
    Section {
        len: usize,
        big_endian: bool,
    },
    Skip {
        len: usize,
    },
    Error(String),
    UnknownInterface {
        id: u32,
    },
    Eof,
    Truncated,
    Refill,
    TooSmall,
}

/// The first two bytes of a gzip file (RFC 1952 §2.3.1).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

fn open_file(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| anyhow::anyhow!("{}: cannot open: {e}", path.display()))
}

/// Whether the capture at `path` is gzip-compressed, from its first two bytes (the same test
/// `CaptureReader::open` makes).
pub fn is_gzip_file(path: &Path) -> Result<bool> {
    let mut head = [0u8; 2];
    let n = read_up_to(&mut open_file(path)?, &mut head)
        .map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", path.display()))?;
    Ok(head[..n] == GZIP_MAGIC)
}

impl CaptureReader {
    /// Opens a capture read-only. Gzip is recognised by its magic, not by the file name.
    pub fn open(path: &Path) -> Result<Self> {
        Self::from_reader(path, open_file(path)?)
    }

    /// Reads a capture from any byte source; `name` is what messages call it (usually its path).
    /// Gzip is recognised by its magic. This is what `open` uses, and what the fuzz targets feed.
    pub fn from_reader(name: impl Into<PathBuf>, source: impl Read + 'static) -> Result<Self> {
        let path: PathBuf = name.into();
        let shown = path.display();
        let mut source = source;
        let mut head = [0u8; 2];
        let n = read_up_to(&mut source, &mut head)
            .map_err(|e| anyhow::anyhow!("{shown}: cannot read: {e}"))?;
        let gzip = head[..n] == GZIP_MAGIC;
        let io_error = Rc::new(RefCell::new(None));
        let rest = io::Cursor::new(head[..n].to_vec()).chain(source);
        let raw: Box<dyn Read> = if gzip {
            Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(rest)))
        } else {
            Box::new(rest)
        };
        let mut raw = raw;
        // Peek at the (decompressed) magic to choose the reader and to name what we found.
        let mut magic = [0u8; 4];
        let got = read_up_to(&mut raw, &mut magic)
            .map_err(|e| anyhow::anyhow!("{shown}: cannot read: {e}"))?;
        if got == 0 {
            bail!("{shown}: empty file: not a capture");
        }
        if got < 4 {
            bail!("{shown}: {got} bytes: too short to be a capture");
        }
        let source: Box<dyn Read> = Box::new(TrackedRead {
            inner: io::Cursor::new(magic).chain(raw),
            error: io_error.clone(),
            failed: None,
        });
        let m = u32::from_le_bytes(magic);
        let (format, inner) = match m {
            // pcapng Section Header Block type is a palindrome.
            0x0A0D_0D0A => {
                let reader = PcapNGReader::new(INITIAL_BUFFER, source).map_err(|e| {
                    anyhow::anyhow!("{shown}: byte 0: not a valid pcapng section header: {e}")
                })?;
                (
                    Format::Pcapng,
                    Inner::Ng {
                        reader,
                        interfaces: Vec::new(),
                        big_endian: false,
                    },
                )
            }
            0xA1B2_C3D4 | 0xD4C3_B2A1 | 0xA1B2_3C4D | 0x4D3C_B2A1 | 0xA1B2_CD34 | 0x34CD_B2A1 => {
                let reader = LegacyPcapReader::new(INITIAL_BUFFER, source).map_err(|e| {
                    anyhow::anyhow!("{shown}: byte 0: not a valid pcap file header: {e}")
                })?;
                (
                    Format::Pcap,
                    Inner::Legacy {
                        reader,
                        link: LinkType(0),
                        nanos: false,
                        big_endian: false,
                    },
                )
            }
            _ => {
                let what = if magic.starts_with(b"\x89PNG") {
                    " (this is a PNG image)"
                } else {
                    ""
                };
                bail!(
                    "{shown}: byte 0: unknown magic 0x{:02x}{:02x}{:02x}{:02x}{what}: not a pcap or pcapng capture",
                    magic[0],
                    magic[1],
                    magic[2],
                    magic[3]
                );
            }
        };
        Ok(CaptureReader {
            path,
            format,
            gzip,
            inner,
            pending: 0,
            frames: 0,
            io_error,
            link_types: Vec::new(),
            warnings: Vec::new(),
            done: false,
            duplicates: 0,
            recent: [(0, 0, 0, 0); DUP_WINDOW],
            dup_warning: None,
            check_duplicates: true,
        })
    }

    /// No frame is checked for being a copy of one just before it, nor counted in the
    /// warnings: for a reader whose warnings are not read. A capture tracked on several
    /// threads is read by each (`pipeline::read_frames`), and only the first's warnings are
    /// kept; hashing every frame's bytes again was ~1 % of a two-thread diagnosis.
    pub fn skip_duplicate_check(&mut self) {
        self.check_duplicates = false;
    }

    /// Frames read so far.
    pub fn frames_read(&self) -> u64 {
        self.frames
    }

    /// Bytes of the (decompressed) file read so far: for progress.
    pub fn bytes_read(&self) -> u64 {
        self.consumed()
    }

    fn consumed(&self) -> u64 {
        match &self.inner {
            Inner::Legacy { reader, .. } => reader.consumed() as u64,
            Inner::Ng { reader, .. } => reader.consumed() as u64,
        }
    }

    fn err_at(&self, msg: impl fmt::Display) -> anyhow::Error {
        let of = if self.gzip {
            " of the decompressed data"
        } else {
            ""
        };
        anyhow::anyhow!(
            "{}: frame {} at byte {}{of}: {msg}",
            self.path.display(),
            self.frames + 1,
            self.consumed()
        )
    }

    /// The next frame, `Ok(None)` at the end. A capture cut short ends with a warning, not an
    /// error. After an error the reader stays at its end.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>> {
        if self.done {
            return Ok(None);
        }
        loop {
            if self.pending > 0 {
                let n = self.pending;
                self.pending = 0;
                // No shift here: `consume` moves the unread bytes to the buffer's start each time
                // the position passes half of it, which copied about half of every refill (a
                // 1 MiB memmove per 512 KiB read, ~100 MB over a 200 MB capture, through the
                // cache the connections' state needs). `refill` shifts what is left of a record
                // before it reads, so the bytes still move only when the buffer runs out.
                match &mut self.inner {
                    Inner::Legacy { reader, .. } => reader.consume_noshift(n),
                    Inner::Ng { reader, .. } => reader.consume_noshift(n),
                }
            }
            let next = self.peek_block();
            match next {
                Next::Packet {
                    len,
                    ts,
                    link,
                    interface,
                    orig_len,
                    data_start,
                    data_len,
                    bad_nanos,
                } => {
                    let offset = self.consumed();
                    self.frames += 1;
                    self.pending = len;
                    if let Some(ns) = bad_nanos {
                        self.warnings.push(Warning::new(
                            format!(
                                "frame {} at byte {offset}: invalid sub-second field {ns} (≥ 10^9 ns); carried into seconds",
                                self.frames
                            ),
                            Msg::new("w-bad-nanos")
                                .s("frame", self.frames)
                                .s("offset", offset)
                                .s("ns", ns),
                        ));
                    }
                    if !self.link_types.contains(&link) {
                        self.link_types.push(link);
                    }
                    let window = match &self.inner {
                        Inner::Legacy { reader, .. } => reader.data(),
                        Inner::Ng { reader, .. } => reader.data(),
                    };
                    let data = &window[data_start..data_start + data_len];
                    if self.check_duplicates && !data.is_empty() {
                        let h = frame_hash(data);
                        let copy_of = self.recent.iter().find(|r| {
                            r.0 == h && r.1 == data.len() && (r.2 - ts.0).abs() <= DUP_MAX_NS
                        });
                        if let Some(&(_, _, _, of)) = copy_of {
                            self.duplicates += 1;
                            let n = self.duplicates;
                            let (at, first, first_msg) =
                                self.dup_warning.get_or_insert_with(|| {
                                    let first = format!(
                                        "the first is frame {} at byte {offset}, a copy of frame {of}",
                                        self.frames
                                    );
                                    let first_msg = Msg::new("w-duplicates-first")
                                        .s("frame", self.frames)
                                        .s("offset", offset)
                                        .s("of", of);
                                    self.warnings
                                        .push(Warning::new(String::new(), crate::i18n::empty()));
                                    (self.warnings.len() - 1, first, first_msg)
                                });
                            self.warnings[*at] = Warning::new(
                                format!(
                                    "{n} frames are byte-identical copies of a frame just before them \
                                     (within 1 ms): the same packet captured twice (two interfaces, \
                                     or a SPAN port copying both directions); {first}. They are kept: \
                                     packet, retransmission and duplicate-ACK counts include them"
                                ),
                                Msg::new("w-duplicates")
                                    .s("n", n)
                                    .m("first", first_msg.clone()),
                            );
                        }
                        let slot = (self.frames as usize) % DUP_WINDOW;
                        self.recent[slot] = (h, data.len(), ts.0, self.frames);
                    }
                    return Ok(Some(Frame {
                        number: self.frames,
                        ts,
                        link,
                        interface,
                        orig_len,
                        offset,
                        data,
                    }));
                }
                Next::Interface { len, iface } => {
                    if !iface.link.is_supported() {
                        let e = self.err_at(format!(
                            "interface {} has unsupported link type {} ({})",
                            self.interface_count(),
                            iface.link.0,
                            iface.link.name()
                        ));
                        self.done = true;
                        return Err(e);
                    }
                    if let Inner::Ng { interfaces, .. } = &mut self.inner {
                        interfaces.push(iface);
                    }
                    self.pending = len;
                }
                Next::Section { len, big_endian } => {
                    if let Inner::Ng {
                        interfaces,
                        big_endian: be,
                        ..
                    } = &mut self.inner
                    {
                        // Interface ids are scoped to their section (pcapng §4.1).
                        interfaces.clear();
                        *be = big_endian;
                    }
                    self.pending = len;
                }
                Next::Skip { len } => self.pending = len,
                Next::Refill => {
                    let r = match &mut self.inner {
                        Inner::Legacy { reader, .. } => reader.refill().map_err(|e| e.to_string()),
                        Inner::Ng { reader, .. } => reader.refill().map_err(|e| e.to_string()),
                    };
                    if let Err(e) = r {
                        let msg = self.io_message(e);
                        let why = Msg::new("w-reader").s("text", &msg);
                        return self.truncated_or_error(msg, why);
                    }
                }
                Next::TooSmall => {
                    let claimed = self.claimed_len();
                    if claimed > MAX_RECORD as u64 {
                        let e = self.err_at(format!(
                            "record claims {claimed} bytes, more than any capture tool writes ({MAX_RECORD}); the file is corrupt"
                        ));
                        self.done = true;
                        return Err(e);
                    }
                    let cap = (claimed as usize + 64)
                        .next_power_of_two()
                        .max(INITIAL_BUFFER * 2);
                    let grown = match &mut self.inner {
                        Inner::Legacy { reader, .. } => reader.grow(cap),
                        Inner::Ng { reader, .. } => reader.grow(cap),
                    };
                    if !grown {
                        let e = self.err_at(format!("cannot buffer a record of {claimed} bytes"));
                        self.done = true;
                        return Err(e);
                    }
                    let r = match &mut self.inner {
                        Inner::Legacy { reader, .. } => reader.refill().map_err(|e| e.to_string()),
                        Inner::Ng { reader, .. } => reader.refill().map_err(|e| e.to_string()),
                    };
                    if let Err(e) = r {
                        let msg = self.io_message(e);
                        let why = Msg::new("w-reader").s("text", &msg);
                        return self.truncated_or_error(msg, why);
                    }
                }
                Next::Eof => {
                    self.done = true;
                    if let Some(e) = self.io_error.borrow_mut().take() {
                        return Err(self.err_at(self.read_error(&e)));
                    }
                    return Ok(None);
                }
                Next::Truncated => {
                    let claimed = self.claimed_len();
                    let msg = if claimed > MAX_RECORD as u64 {
                        format!("record claims {claimed} bytes, past the end of the file; the file is corrupt")
                    } else {
                        "the last record is cut short (capture ended mid-write?)".to_string()
                    };
                    if claimed > MAX_RECORD as u64 {
                        self.done = true;
                        return Err(self.err_at(msg));
                    }
                    return self.truncated_or_error(msg, Msg::new("w-cut-short"));
                }
                Next::UnknownInterface { id } => {
                    let e = self.err_at(format!(
                        "packet names interface {id}, but the section describes only {}",
                        self.interface_count()
                    ));
                    self.done = true;
                    return Err(e);
                }
                Next::Error(msg) => {
                    // Garbage after a failed read (a damaged `.gz`): the read error is the cause.
                    let msg = match self.io_error.borrow_mut().take() {
                        Some(e) => self.read_error(&e),
                        None => msg,
                    };
                    let e = self.err_at(msg);
                    self.done = true;
                    return Err(e);
                }
            }
        }
    }

    fn interface_count(&self) -> usize {
        match &self.inner {
            Inner::Ng { interfaces, .. } => interfaces.len(),
            Inner::Legacy { .. } => 1,
        }
    }

    /// What to say about the source failing: a damaged `.gz` is named as such, and the frames
    /// read before the failure are counted (they have been handed out).
    fn read_error(&self, e: &io::Error) -> String {
        let what = if self.gzip {
            format!("read error: the gzip data is corrupt or cut short here ({e})")
        } else {
            format!("read error: {e}")
        };
        format!("{what}; the {} frames before it were read", self.frames)
    }

    fn io_message(&self, fallback: String) -> String {
        match self.io_error.borrow_mut().take() {
            Some(e) => self.read_error(&e),
            None => fallback,
        }
    }

    /// A cut-short file keeps what was read and warns; a read error (e.g. corrupt gzip) is an
    /// error, but the frames before it have already been handed out.
    fn truncated_or_error(&mut self, msg: String, why: Msg) -> Result<Option<Frame<'_>>> {
        self.done = true;
        if let Some(e) = self.io_error.borrow_mut().take() {
            return Err(self.err_at(self.read_error(&e)));
        }
        if msg.starts_with("read error") {
            return Err(self.err_at(msg));
        }
        let w = format!(
            "frame {} at byte {}: {msg}; kept the {} frames before it",
            self.frames + 1,
            self.consumed(),
            self.frames
        );
        let m = Msg::new("w-truncated")
            .s("frame", self.frames + 1)
            .s("offset", self.consumed())
            .m("why", why)
            .s("kept", self.frames);
        self.warnings.push(Warning::new(w, m));
        Ok(None)
    }

    /// The length the record at the current position claims (for messages and buffer growth).
    fn claimed_len(&self) -> u64 {
        let (window, be, legacy) = match &self.inner {
            Inner::Legacy {
                reader, big_endian, ..
            } => (reader.data(), *big_endian, true),
            Inner::Ng {
                reader, big_endian, ..
            } => (reader.data(), *big_endian, false),
        };
        let at = if legacy { 8 } else { 4 };
        if window.len() < at + 4 {
            return 0;
        }
        let b = [window[at], window[at + 1], window[at + 2], window[at + 3]];
        let v = if be {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        } as u64;
        if legacy {
            v + 16
        } else {
            v
        }
    }

    fn peek_block(&mut self) -> Next {
        match &mut self.inner {
            Inner::Legacy {
                reader,
                link,
                nanos,
                big_endian,
            } => {
                let base = reader.data().as_ptr() as usize;
                match reader.next() {
                    Ok((len, PcapBlockOwned::LegacyHeader(h))) => {
                        *link = LinkType(h.network.0 as u32);
                        *nanos = h.is_nanosecond_precision();
                        *big_endian = h.is_bigendian();
                        if !link.is_supported() {
                            return Next::Error(format!(
                                "unsupported link type {} ({})",
                                link.0,
                                link.name()
                            ));
                        }
                        Next::Skip { len }
                    }
                    Ok((len, PcapBlockOwned::Legacy(b))) => {
                        let unit: u64 = if *nanos { 1_000_000_000 } else { 1_000_000 };
                        let frac = b.ts_usec as u64;
                        let bad_nanos = (frac >= unit).then_some(frac);
                        let nanos_frac = frac * (1_000_000_000 / unit);
                        let ts = Timestamp::from_secs_nanos(b.ts_sec as i64, nanos_frac as i64);
                        let data_len = (b.caplen as usize).min(b.data.len());
                        Next::Packet {
                            len,
                            ts,
                            link: *link,
                            interface: 0,
                            orig_len: b.origlen,
                            data_start: b.data.as_ptr() as usize - base,
                            data_len,
                            bad_nanos,
                        }
                    }
                    Ok((len, PcapBlockOwned::NG(_))) => Next::Skip { len },
                    Err(e) => classify(e),
                }
            }
            Inner::Ng {
                reader,
                interfaces,
                big_endian,
            } => {
                let base = reader.data().as_ptr() as usize;
                let be = *big_endian;
                if let Some(e) = short_block(reader.data(), be) {
                    return Next::Error(e);
                }
                match reader.next() {
                    Ok((len, PcapBlockOwned::NG(block))) => match block {
                        Block::SectionHeader(shb) => Next::Section {
                            len,
                            big_endian: shb.big_endian(),
                        },
                        Block::InterfaceDescription(idb) => {
                            let resolution = idb.ts_resolution().unwrap_or(1_000_000);
                            Next::Interface {
                                len,
                                iface: Interface {
                                    link: LinkType(idb.linktype.0 as u32),
                                    resolution,
                                    offset_secs: idb.ts_offset(),
                                },
                            }
                        }
                        Block::EnhancedPacket(epb) => {
                            let Some(iface) = interfaces.get(epb.if_id as usize) else {
                                return Next::UnknownInterface { id: epb.if_id };
                            };
                            let units = ((epb.ts_high as u64) << 32) | epb.ts_low as u64;
                            let ts = ng_timestamp(units, iface);
                            // pcap-parser's EPB data may include the padding to 32 bits.
                            let data = epb.packet_data();
                            let data_len = (epb.caplen as usize).min(data.len());
                            Next::Packet {
                                len,
                                ts,
                                link: iface.link,
                                interface: epb.if_id,
                                orig_len: epb.origlen,
                                data_start: data.as_ptr() as usize - base,
                                data_len,
                                bad_nanos: None,
                            }
                        }
                        Block::SimplePacket(spb) => {
                            // SPB: interface 0, no timestamp (pcapng §4.4).
                            let Some(iface) = interfaces.first() else {
                                return Next::UnknownInterface { id: 0 };
                            };
                            let snap = spb.origlen as usize;
                            let data = spb.packet_data();
                            Next::Packet {
                                len,
                                ts: Timestamp(0),
                                link: iface.link,
                                interface: 0,
                                orig_len: spb.origlen,
                                data_start: data.as_ptr() as usize - base,
                                data_len: data.len().min(snap),
                                bad_nanos: None,
                            }
                        }
                        Block::Unknown(ub) if ub.block_type == OPB_TYPE => {
                            // Obsolete Packet Block: if_id u16, drops u16, ts_high, ts_low,
                            // caplen, origlen, data.
                            let d = ub.data;
                            if d.len() < 20 {
                                return Next::Error("obsolete packet block too short".into());
                            }
                            let rd16 = |o: usize| {
                                let b = [d[o], d[o + 1]];
                                if be {
                                    u16::from_be_bytes(b)
                                } else {
                                    u16::from_le_bytes(b)
                                }
                            };
                            let rd32 = |o: usize| {
                                let b = [d[o], d[o + 1], d[o + 2], d[o + 3]];
                                if be {
                                    u32::from_be_bytes(b)
                                } else {
                                    u32::from_le_bytes(b)
                                }
                            };
                            let id = rd16(0) as u32;
                            let Some(iface) = interfaces.get(id as usize) else {
                                return Next::UnknownInterface { id };
                            };
                            let units = ((rd32(4) as u64) << 32) | rd32(8) as u64;
                            let caplen = rd32(12) as usize;
                            let data = &d[20..];
                            Next::Packet {
                                len,
                                ts: ng_timestamp(units, iface),
                                link: iface.link,
                                interface: id,
                                orig_len: rd32(16),
                                data_start: data.as_ptr() as usize - base,
                                data_len: caplen.min(data.len()),
                                bad_nanos: None,
                            }
                        }
                        _ => Next::Skip { len },
                    },
                    Ok((len, _)) => Next::Skip { len },
                    Err(e) => classify(e),
                }
            }
        }
    }
}

fn classify(e: PcapError<&[u8]>) -> Next {
    match e {
        PcapError::Eof => Next::Eof,
        PcapError::Incomplete(_) => Next::Refill,
        PcapError::UnexpectedEof => Next::Truncated,
        PcapError::BufferTooSmall => Next::TooSmall,
        PcapError::ReadError => Next::Error("read error".into()),
        other => Next::Error(format!("malformed record: {other}")),
    }
}

/// A pcapng block whose length is less than its fields need: every block has 12 bytes of type
/// and lengths (pcapng §3.1), a Process Information Block 4 more for its process id. pcap-parser
/// 0.17 takes a Process Information Block's length on trust and subtracts 12 from it: shorter,
/// that panics with overflow checks (a debug build; found by the `capture` fuzz target) and
/// wraps without, which read as a capture cut short. Checked here for every block but the
/// section header, whose length is in the byte order it declares (`be` is the section's
/// before it), and which pcap-parser checks (28 bytes at least).
fn short_block(data: &[u8], be: bool) -> Option<String> {
    const SHB: u32 = 0x0A0D_0D0A;
    const PIB: u32 = 0x8000_0001;
    let word = |at: usize| -> Option<u32> {
        let b: [u8; 4] = data.get(at..at + 4)?.try_into().ok()?;
        Some(if be {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    };
    let (kind, len) = (word(0)?, word(4)?);
    let least = match kind {
        SHB => return None,
        PIB => 16,
        _ => 12,
    };
    (len < least).then(|| {
        format!("block of type {kind:#010x} says it is {len} bytes long, less than its {least}")
    })
}

/// Hash of a frame's bytes, for spotting the same packet captured twice.
fn frame_hash(data: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    foldhash::quality::FixedState::with_seed(0x6475_705f_6672_616d).hash_one(data)
}

fn ng_timestamp(units: u64, iface: &Interface) -> Timestamp {
    let res = iface.resolution.max(1) as u128;
    let secs = units as u128 / res;
    let frac = units as u128 % res;
    let nanos = frac * 1_000_000_000 / res;
    Timestamp::from_secs_nanos(
        (secs as i64).saturating_add(iface.offset_secs),
        nanos as i64,
    )
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out at most `chunk` bytes a read, so that records straddle every refill.
    struct Trickle {
        bytes: Vec<u8>,
        at: usize,
        chunk: usize,
    }

    impl Read for Trickle {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let rest = self.bytes.get(self.at..).unwrap_or(&[]);
            let n = rest.len().min(out.len()).min(self.chunk);
            out[..n].copy_from_slice(&rest[..n]);
            self.at += n;
            Ok(n)
        }
    }

    fn record_bytes(i: usize, len: usize) -> Vec<u8> {
        (0..len).map(|k| (k * 31 + i * 7) as u8).collect()
    }

    /// Every record comes out whole and in order however the reader's buffer is consumed and
    /// refilled: records cut by the buffer's end, records larger than the buffer (it grows), and
    /// reads that return a few KB at a time (`consume_noshift` leaves the bytes in place until
    /// a refill moves what is left of a record).
    #[test]
    fn records_come_out_whole_across_refills_and_growth() {
        let sizes: Vec<usize> = (0..400)
            .map(|i| match i % 50 {
                7 => 300_000,
                23 => INITIAL_BUFFER + 12_345, // larger than the buffer
                _ => 60 + (i * 977) % 1_600,
            })
            .collect();
        // Classic pcap header: magic, version 2.4, thiszone, sigfigs, snaplen, Ethernet.
        let mut file = 0xa1b2_c3d4u32.to_le_bytes().to_vec();
        file.extend_from_slice(&2u16.to_le_bytes());
        file.extend_from_slice(&4u16.to_le_bytes());
        for v in [0u32, 0, 0x7fff_ffff, 1] {
            file.extend_from_slice(&v.to_le_bytes());
        }
        let mut offsets = Vec::new();
        for (i, &len) in sizes.iter().enumerate() {
            offsets.push(file.len() as u64);
            for v in [i as u32, 0, len as u32, len as u32] {
                file.extend_from_slice(&v.to_le_bytes());
            }
            file.extend_from_slice(&record_bytes(i, len));
        }
        for chunk in [4_093, 1 << 20] {
            let src = Trickle {
                bytes: file.clone(),
                at: 0,
                chunk,
            };
            let mut r = CaptureReader::from_reader("t.pcap", src).expect("a pcap");
            let mut n = 0;
            while let Some(f) = r.next_frame().expect("no error") {
                let len = sizes[n];
                assert_eq!(f.number, n as u64 + 1);
                assert_eq!(f.offset, offsets[n]);
                assert_eq!(f.ts.0, n as i64 * 1_000_000_000);
                assert!(
                    f.data == record_bytes(n, len).as_slice(),
                    "record {n} of {len} bytes"
                );
                n += 1;
            }
            assert_eq!(n, sizes.len(), "read {chunk} bytes at a time");
        }
    }
}
