//! Last stage: renderings for people (comfy-table) and machines (JSON lines).
//!
//! `FlowRecord` is the one type behind every field of `vantage flows --format json`: Zeek's
//! conn.log names where the meaning is the same, ours beside them.

pub mod html;
pub mod sorted_lines;

use std::net::IpAddr;

use comfy_table::{presets, Cell, CellAlignment, ContentArrangement, Table};
use serde::Serialize;

use std::collections::BTreeMap;

use crate::app::session::{HttpSummary, Service};
use crate::app::sip::SipDialogs;
use crate::app::tls::ClientHello;
use crate::app::websocket::{AnomalyKind, WsStats};
use crate::capture::Timestamp;
use crate::tcp::{Connection, Direction, Gap, IpIdPattern, Proto, Termination};

/// One line of `vantage flows --format json`.
#[derive(Serialize)]
pub struct FlowRecord<'a> {
    /// Zeek: first packet, seconds since the epoch.
    pub ts: Timestamp,
    /// Zeek-style uid, stable for the same capture.
    pub uid: &'a str,
    #[serde(rename = "id.orig_h")]
    pub orig_h: IpAddr,
    #[serde(rename = "id.orig_p")]
    pub orig_p: u16,
    #[serde(rename = "id.resp_h")]
    pub resp_h: IpAddr,
    #[serde(rename = "id.resp_p")]
    pub resp_p: u16,
    pub proto: Proto,
    /// Zeek: last packet minus first packet, seconds.
    pub duration: f64,
    /// Zeek: payload bytes by sequence space (each byte once).
    pub orig_bytes: u64,
    pub resp_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conn_state: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<&'a str>,
    pub missed_bytes: u64,
    pub orig_pkts: u64,
    pub orig_ip_bytes: u64,
    pub resp_pkts: u64,
    pub resp_ip_bytes: u64,
    /// Zeek's `vlan` and `inner_vlan` (conn_key vlan_fivetuple).
    #[serde(rename = "id.ctx.vlan", skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    #[serde(rename = "id.ctx.inner_vlan", skip_serializing_if = "Option::is_none")]
    pub inner_vlan: Option<u16>,
    // ---- ours ----
    /// The capture file, and the first and last frame numbers (1-based, as Wireshark counts).
    pub capture: &'a str,
    pub first_frame: u64,
    pub last_frame: u64,
    /// No SYN seen; orientation guessed (lower port = responder).
    pub mid_stream: bool,
    /// A new SYN on this 5-tuple split it from an earlier connection.
    pub reused_port: bool,
    /// Handshake RTT at this capture point (SYN to the handshake's ACK).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_s: Option<f64>,
    /// Per direction: retransmissions, keep-alives, zero windows, sequence gaps, fingerprint.
    pub orig: DirRecord,
    pub resp: DirRecord,
    /// The longest silence (no packet either way).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_idle: Option<Gap>,
    /// The first FIN or RST, who sent it, the silence before it, and its fingerprint next to the
    /// sender's usual one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub termination: Option<&'a Termination>,
    // ---- application layer ----
    /// Zeek's `service`: websocket, sip, tls or http.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<Service>,
    /// The HTTP upgrade: request line, Host, Origin, User-Agent, Sec-WebSocket-* and the
    /// proxy headers (X-Forwarded-For, X-Real-IP, Forwarded), the response status, and whether
    /// Sec-WebSocket-Accept matched the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<&'a HttpSummary>,
    /// WebSocket subprotocol (Sec-WebSocket-Protocol of the 101, else of the request).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subprotocol: Option<&'a str>,
    /// WebSocket frames by opcode name, both directions together.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ws_frames: Option<BTreeMap<&'static str, u64>>,
    /// Who closed the WebSocket first, with code and reason, and whether both sides sent close.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ws_close: Option<WsClose>,
    /// WebSocket protocol violations (frame number, kind).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ws_anomalies: Option<&'a [(u64, AnomalyKind)]>,
    /// The keep-alive mechanism and its rhythm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<HeartbeatRecord>,
    /// SIP on this connection: messages, dialogs (calls) and registrations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sip: Option<SipRecord>,
    /// TLS ClientHello: SNI, version, ALPN.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<&'a ClientHello>,
}

#[derive(Serialize)]
pub struct WsClose {
    pub by: crate::app::Side,
    pub code: Option<u16>,
    pub reason: String,
    pub both: bool,
}

#[derive(Serialize)]
pub struct HeartbeatRecord {
    pub kind: crate::app::heartbeat::HeartbeatKind,
    pub started_by: crate::app::Side,
    pub count: usize,
    pub interval_median_s: f64,
    pub interval_p95_s: f64,
    pub interval_max_s: f64,
    /// A run of beats much slower than usual (a throttled background tab).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stretched: Option<crate::app::heartbeat::Stretch>,
}

#[derive(Serialize)]
pub struct SipRecord {
    pub messages: u64,
    pub calls: usize,
    pub registrations: usize,
    /// Call-IDs of the dialogs.
    pub call_ids: Vec<String>,
}

impl SipRecord {
    fn from(d: &SipDialogs) -> Self {
        SipRecord {
            messages: d.messages,
            calls: d.dialogs.len(),
            registrations: d.registrations_seen() as usize,
            call_ids: d.dialogs.iter().map(|x| x.call_id.clone()).collect(),
        }
    }
}

/// Frame counts by opcode name, both directions.
pub fn ws_frames(w: &WsStats) -> BTreeMap<&'static str, u64> {
    let mut m = BTreeMap::new();
    for d in [&w.client, &w.server] {
        for (name, n) in [
            ("continuation", d.continuation),
            ("text", d.text),
            ("binary", d.binary),
            ("close", d.close),
            ("ping", d.ping),
            ("pong", d.pong),
        ] {
            *m.entry(name).or_insert(0) += u64::from(n);
        }
    }
    m
}

#[derive(Serialize)]
pub struct DirRecord {
    pub first_ts: Option<Timestamp>,
    pub last_ts: Option<Timestamp>,
    pub payload_bytes_sent: u64,
    pub retransmissions: u64,
    pub keepalives: u64,
    pub zero_windows: u64,
    pub gaps: u64,
    pub ttl_usual: u8,
    pub ip_id_pattern: IpIdPattern,
}

impl DirRecord {
    fn from(d: &Direction) -> Self {
        DirRecord {
            first_ts: d.first_ts,
            last_ts: d.last_ts,
            payload_bytes_sent: d.payload_bytes_sent,
            retransmissions: d.retransmissions,
            keepalives: d.keepalives,
            zero_windows: d.zero_windows,
            gaps: d.gaps,
            ttl_usual: d.fingerprint.ttl_usual,
            ip_id_pattern: d.fingerprint.ip_id_pattern,
        }
    }
}

impl<'a> FlowRecord<'a> {
    pub fn from(c: &'a Connection) -> Self {
        FlowRecord {
            ts: c.ts,
            uid: c.uid.as_str(),
            orig_h: c.orig_h,
            orig_p: c.orig_p,
            resp_h: c.resp_h,
            resp_p: c.resp_p,
            proto: c.proto,
            duration: round6(c.duration_s()),
            orig_bytes: c.orig.bytes,
            resp_bytes: c.resp.bytes,
            conn_state: c.conn_state,
            history: c.history.as_deref(),
            missed_bytes: c.missed_bytes,
            orig_pkts: c.orig.pkts,
            orig_ip_bytes: c.orig.ip_bytes,
            resp_pkts: c.resp.pkts,
            resp_ip_bytes: c.resp.ip_bytes,
            vlan: c.vlan.map(|v| v[0]).filter(|v| *v != 0),
            inner_vlan: c.vlan.map(|v| v[1]).filter(|v| *v != 0),
            capture: &c.capture,
            first_frame: c.first_frame,
            last_frame: c.last_frame,
            mid_stream: c.mid_stream,
            reused_port: c.reused_port,
            rtt_s: c.rtt_s.map(round6),
            orig: DirRecord::from(&c.orig),
            resp: DirRecord::from(&c.resp),
            max_idle: c.max_idle.map(|g| Gap {
                secs: round6(g.secs),
                ..g
            }),
            termination: c.termination.as_ref(),
            service: c.app.as_ref().and_then(|a| a.service),
            http: c.app.as_ref().and_then(|a| a.http.as_ref()),
            subprotocol: c.app.as_ref().and_then(|a| a.http.as_ref()).and_then(|h| {
                h.response
                    .as_ref()
                    .and_then(|r| r.sec_websocket_protocol())
                    .or_else(|| h.request.as_ref()?.sec_websocket_protocol())
            }),
            ws_frames: c
                .app
                .as_ref()
                .and_then(|a| a.websocket.as_deref())
                .map(ws_frames),
            ws_close: c
                .app
                .as_ref()
                .and_then(|a| a.websocket.as_ref())
                .and_then(|w| {
                    w.first_close.as_ref().map(|f| WsClose {
                        by: f.by,
                        code: f.code,
                        reason: f.reason.clone(),
                        both: w.both_sent_close(),
                    })
                }),
            ws_anomalies: c
                .app
                .as_ref()
                .map(|a| a.ws_anomalies.as_slice())
                .filter(|a| !a.is_empty()),
            heartbeat: c
                .app
                .as_ref()
                .and_then(|a| a.heartbeat.as_ref())
                .map(|h| HeartbeatRecord {
                    kind: h.kind,
                    started_by: h.started_by,
                    count: h.count,
                    interval_median_s: round6(h.interval_median_s),
                    interval_p95_s: round6(h.interval_p95_s),
                    interval_max_s: round6(h.interval_max_s),
                    stretched: h.stretched.clone(),
                }),
            sip: c
                .app
                .as_ref()
                .and_then(|a| a.sip.as_ref())
                .map(SipRecord::from),
            tls: c.app.as_ref().and_then(|a| a.tls.as_deref()),
        }
    }
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// One connection as a line of `vantage flows --format json` (without the newline).
pub fn flow_json_line(c: &Connection) -> String {
    // Room for a typical line (~1.9 KB on the synth, 2.5 KB with an HTTP upgrade): grown from
    // `to_string`'s 128 bytes it was copied four or five times.
    let mut line = Vec::with_capacity(FLOW_LINE_BYTES);
    serde_json::to_writer(&mut line, &FlowRecord::from(c)).expect("serializable");
    String::from_utf8(line).expect("serde_json writes UTF-8")
}

const FLOW_LINE_BYTES: usize = 3 * 1024;

/// Seconds, compact: `0.000412`, `4.9`, `61.2`.
pub fn secs(x: f64) -> String {
    if x < 0.001 {
        format!("{x:.6}")
    } else if x < 10.0 {
        format!("{x:.3}")
    } else {
        format!("{x:.1}")
    }
}

fn endpoint(h: IpAddr, p: u16) -> String {
    match h {
        IpAddr::V4(a) => format!("{a}:{p}"),
        IpAddr::V6(a) => format!("[{a}]:{p}"),
    }
}

/// The human table: sorted by start time, timestamps like tcpdump -tttt (UTC, µs).
pub fn flows_table(conns: &[&Connection], show_capture: bool) -> String {
    let mut out = Vec::new();
    write_flows_table(&mut out, conns, show_capture).expect("writing to memory");
    String::from_utf8(out).expect("UTF-8 cells")
}

/// Columns of the flows table, and whether each is a number (right-aligned).
const FLOW_COLUMNS: [(&str, bool); 12] = [
    ("start (UTC)", false),
    ("proto", false),
    ("orig", false),
    ("resp", false),
    ("state", false),
    ("history", false),
    ("duration s", true),
    ("orig pkts/bytes", true),
    ("resp pkts/bytes", true),
    ("rexmit", true),
    ("max idle s", true),
    ("ended by", false),
];

/// The flows table written straight to `out`, in comfy-table's UTF8_FULL_CONDENSED layout, the
/// connections in the order given (`FlowRows::write`). comfy-table itself holds every cell as
/// a String until it prints, which on a 2 GB capture (93 k rows) was hundreds of MB on top of
/// the connections.
pub fn write_flows_table(
    out: &mut dyn std::io::Write,
    conns: &[&Connection],
    show_capture: bool,
) -> std::io::Result<()> {
    let mut rows = FlowRows::in_memory(show_capture);
    for c in conns {
        rows.push(c, 0)?;
    }
    rows.write(out)
}

/// The flows table's rows as text, for `vantage flows`, which keeps a row per finished
/// connection instead of the connection (`cli::flows_table`): its cells as `flow_cells`
/// renders them (143 bytes on average on the 2 GB synth) in a temporary file
/// (`sorted_lines::SortedLines`), a 32-byte key each in memory, and each column's width so
/// far. A kept summary was a 672-byte `Connection` in an allocation of its own, with its
/// silences' list and its pointer in the list of them: on that synth (93 k connections) the
/// table's peak went from 96.5 to 52.3 MiB with the rows' text in memory, and from 54.5 to
/// 41.7 MB (KB/1000) with it in the file; the rest is the 20 000 connections live at once.
pub struct FlowRows {
    show_capture: bool,
    /// Every row's cells, joined by `FlowRows::SEP`.
    rows: sorted_lines::SortedLines,
    /// Each column's width so far (the header's at first).
    widths: Vec<usize>,
    /// Whether `write` sorts the rows.
    sort: bool,
    /// `flow_cells`' buffers, and the row being joined, reused row to row.
    cells: Vec<String>,
    row: String,
}

impl FlowRows {
    /// Between a row's cells: no cell holds it (the only free text is the capture's file name,
    /// and neither a path nor a command-line argument can hold a NUL).
    const SEP: char = '\0';

    /// Rows kept in a temporary file (in memory without one).
    pub fn new(show_capture: bool) -> Self {
        Self::with(show_capture, sorted_lines::SortedLines::new())
    }

    /// Rows kept in memory.
    pub fn in_memory(show_capture: bool) -> Self {
        Self::with(show_capture, sorted_lines::SortedLines::in_memory())
    }

    fn with(show_capture: bool, rows: sorted_lines::SortedLines) -> Self {
        use unicode_width::UnicodeWidthStr;
        let columns = Self::columns(show_capture);
        FlowRows {
            show_capture,
            rows,
            widths: columns.iter().map(|(h, _)| h.width()).collect(),
            sort: false,
            cells: vec![String::new(); columns.len()],
            row: String::new(),
        }
    }

    fn columns(show_capture: bool) -> Vec<(&'static str, bool)> {
        show_capture
            .then_some(("capture", false))
            .into_iter()
            .chain(FLOW_COLUMNS)
            .collect()
    }

    /// Adds a connection's row; `capture` is its capture's index among those read.
    pub fn push(&mut self, c: &Connection, capture: usize) -> std::io::Result<()> {
        use unicode_width::UnicodeWidthStr;
        flow_cells(c, self.show_capture, &mut self.cells);
        self.row.clear();
        for (i, cell) in self.cells.iter().enumerate() {
            debug_assert!(!cell.contains(Self::SEP), "{cell:?}");
            if i > 0 {
                self.row.push(Self::SEP);
            }
            self.row.push_str(cell);
            self.widths[i] = self.widths[i].max(cell.width());
        }
        self.rows.push(c.ts, c.first_frame, capture, &self.row)
    }

    /// Has `write` sort the rows by start time, then first frame, then capture: the order
    /// `flows` printed when it kept the connections (a stable sort by start time and first
    /// frame of every capture's list, one capture after the other). Within a capture no two
    /// rows tie (a frame starts at most one connection, so first frames differ), so the order
    /// rows are pushed in (the merge's, by hand-over time) does not matter; ties between
    /// captures go in capture order.
    pub fn sort(&mut self) {
        self.sort = true;
    }

    /// The table, in comfy-table's UTF8_FULL_CONDENSED layout, the columns as wide as their
    /// widest cell, the rows sorted (`sort`) or in the order they came.
    pub fn write(self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        use unicode_width::UnicodeWidthStr;
        let columns = Self::columns(self.show_capture);
        let widths = self.widths;
        let rule = |out: &mut dyn std::io::Write, l: &str, fill: &str, mid: &str, r: &str| {
            let parts: Vec<String> = widths.iter().map(|w| fill.repeat(w + 2)).collect();
            writeln!(out, "{l}{}{r}", parts.join(mid))
        };
        let row = |out: &mut dyn std::io::Write, cells: &[&str], right: &[bool]| {
            let mut line = String::from("│");
            for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
                let pad = " ".repeat(w - cell.width());
                if i > 0 {
                    line.push('┆');
                }
                if right[i] {
                    line.push_str(&format!(" {pad}{cell} "));
                } else {
                    line.push_str(&format!(" {cell}{pad} "));
                }
            }
            line.push('│');
            writeln!(out, "{line}")
        };
        let left = vec![false; columns.len()];
        let right: Vec<bool> = columns.iter().map(|(_, r)| *r).collect();
        rule(out, "┌", "─", "┬", "┐")?;
        let header: Vec<&str> = columns.iter().map(|(h, _)| *h).collect();
        row(out, &header, &left)?;
        rule(out, "╞", "═", "╪", "╡")?;
        self.rows.for_each(self.sort, &mut |line| {
            let line = std::str::from_utf8(line).map_err(std::io::Error::other)?;
            let cells: Vec<&str> = line.split(Self::SEP).collect();
            row(out, &cells, &right)
        })?;
        rule(out, "└", "─", "┴", "┘")
    }
}

/// One connection's cells of the flows table, written into `cells` (reused row to row).
fn flow_cells(c: &Connection, show_capture: bool, cells: &mut [String]) {
    use std::fmt::Write;
    for cell in cells.iter_mut() {
        cell.clear();
    }
    let mut it = cells.iter_mut();
    let mut next = || it.next().expect("a cell per column");
    if show_capture {
        let name = std::path::Path::new(&*c.capture)
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        next().push_str(&name);
    }
    next().push_str(&c.ts.tcpdump());
    next().push_str(match c.proto {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    });
    let orig = next();
    orig.push_str(&endpoint(c.orig_h, c.orig_p));
    if c.mid_stream {
        orig.push_str(" (mid-stream)");
    }
    next().push_str(&endpoint(c.resp_h, c.resp_p));
    next().push_str(c.conn_state.unwrap_or("-"));
    next().push_str(c.history.as_deref().unwrap_or("-"));
    next().push_str(&secs(c.duration_s()));
    let _ = write!(next(), "{}/{}", c.orig.pkts, c.orig.bytes);
    let _ = write!(next(), "{}/{}", c.resp.pkts, c.resp.bytes);
    let _ = write!(
        next(),
        "{}",
        c.orig.retransmissions + c.resp.retransmissions
    );
    next().push_str(&c.max_idle.map_or("-".into(), |g| secs(g.secs)));
    write_ended(next(), c.termination.as_ref());
}

/// The table's "ended by" cell: who ended the connection, how, after how long a silence, in
/// which frame, and whether the packet's fingerprint differs from its sender's.
fn write_ended(out: &mut String, termination: Option<&crate::tcp::Termination>) {
    use std::fmt::Write as _;
    let Some(t) = termination else {
        out.push('-');
        return;
    };
    let _ = write!(
        out,
        "{} {} after {} s idle (#{})",
        match t.by {
            crate::tcp::Side::Orig => "orig",
            crate::tcp::Side::Resp => "resp",
        },
        match t.kind {
            crate::tcp::TerminationKind::Fin => "FIN",
            crate::tcp::TerminationKind::Rst => "RST",
        },
        secs(t.idle_before_s),
        t.frame
    );
    if t.ttl_fits == Some(false) || t.ip_id_fits == Some(false) {
        out.push_str(" [fingerprint differs]");
    }
}

#[cfg(test)]
mod flows_table_tests {
    use super::*;

    /// The table as comfy-table drew it before the two-pass writer: the oracle.
    fn comfy_flows_table(conns: &[&Connection], show_capture: bool) -> String {
        let mut t = Table::new();
        t.load_style(presets::UTF8_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Disabled);
        let mut header = vec![];
        if show_capture {
            header.push("capture");
        }
        header.extend([
            "start (UTC)",
            "proto",
            "orig",
            "resp",
            "state",
            "history",
            "duration s",
            "orig pkts/bytes",
            "resp pkts/bytes",
            "rexmit",
            "max idle s",
            "ended by",
        ]);
        t.set_header(header);
        for c in conns {
            let mut row: Vec<Cell> = vec![];
            if show_capture {
                let name = std::path::Path::new(&*c.capture)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                row.push(Cell::new(name));
            }
            let mut orig = endpoint(c.orig_h, c.orig_p);
            if c.mid_stream {
                orig.push_str(" (mid-stream)");
            }
            let mut ended = String::new();
            write_ended(&mut ended, c.termination.as_ref());
            row.extend([
                Cell::new(c.ts.tcpdump()),
                Cell::new(match c.proto {
                    Proto::Tcp => "tcp",
                    Proto::Udp => "udp",
                }),
                Cell::new(orig),
                Cell::new(endpoint(c.resp_h, c.resp_p)),
                Cell::new(c.conn_state.unwrap_or("-")),
                Cell::new(c.history.as_deref().unwrap_or("-")),
                Cell::new(secs(c.duration_s())).set_alignment(CellAlignment::Right),
                Cell::new(format!("{}/{}", c.orig.pkts, c.orig.bytes))
                    .set_alignment(CellAlignment::Right),
                Cell::new(format!("{}/{}", c.resp.pkts, c.resp.bytes))
                    .set_alignment(CellAlignment::Right),
                Cell::new(c.orig.retransmissions + c.resp.retransmissions)
                    .set_alignment(CellAlignment::Right),
                Cell::new(c.max_idle.map_or("-".into(), |g| secs(g.secs)))
                    .set_alignment(CellAlignment::Right),
                Cell::new(ended),
            ]);
            t.add_row(row);
        }
        format!("{t}\n")
    }

    /// The two-pass writer draws exactly what comfy-table drew, on every fixture and corpus
    /// capture (with and without the capture column), and on no connections at all.
    #[test]
    fn same_table_as_comfy_table() {
        let files = crate::testing::fixture_captures();
        let mut rows = 0;
        for f in &files {
            let Ok(flows) = crate::pipeline::track_capture(f) else {
                continue;
            };
            let conns: Vec<&Connection> = flows.connections.iter().map(|c| &**c).collect();
            rows += conns.len();
            for show in [false, true] {
                assert_eq!(
                    flows_table(&conns, show),
                    comfy_flows_table(&conns, show),
                    "{}",
                    f.display()
                );
            }
        }
        assert!(rows > 150, "{rows} rows compared");
        // The table shows only what TCP tracking finds: the same without the application
        // layer, which `vantage flows` skips for it.
        for f in &files {
            let run = |app: bool| {
                let opts = crate::tcp::TrackerOptions {
                    app,
                    ..Default::default()
                };
                crate::pipeline::track_capture_with(f, opts).map(|t| {
                    let conns: Vec<&Connection> = t.connections.iter().map(|c| &**c).collect();
                    flows_table(&conns, true)
                })
            };
            if let (Ok(with), Ok(without)) = (run(true), run(false)) {
                assert_eq!(with, without, "{}", f.display());
            }
        }
        assert_eq!(flows_table(&[], true), comfy_flows_table(&[], true));
        // Wide characters in a file name take two columns each, as comfy-table counts them.
        let f = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/conntrack-reject/softswitch.pcap");
        let mut c = crate::pipeline::track_capture(&f).unwrap().connections;
        c[0].capture = "/captures/坐席-北京.pcap".into();
        let conns: Vec<&Connection> = c.iter().map(|c| &**c).collect();
        assert_eq!(flows_table(&conns, true), comfy_flows_table(&conns, true));
    }
}

// ---- align and timeline ----

use crate::align::{Alignment, ClockOffset, HopLoss, TimelineEvent};

/// `vantage align --format json`: the shapes the diagnose document reuses.
#[derive(Serialize)]
pub struct AlignReport<'a> {
    pub reference: &'a str,
    pub clock_offsets: &'a [ClockOffset],
    pub connections: &'a crate::align::Lines,
    pub losses: &'a [HopLoss],
    pub ambiguous: usize,
}

impl<'a> AlignReport<'a> {
    pub fn from(al: &'a Alignment) -> Self {
        AlignReport {
            reference: &al.vantages[al.reference].name,
            clock_offsets: &al.clock_offsets,
            connections: &al.connections,
            losses: &al.losses,
            ambiguous: al.ambiguous,
        }
    }
}

pub fn align_json(al: &Alignment) -> String {
    serde_json::to_string_pretty(&AlignReport::from(al)).expect("serializable") + "\n"
}

fn table() -> Table {
    let mut t = Table::new();
    t.load_style(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled);
    t
}

/// Clock offsets as a table.
pub fn offsets_table(al: &Alignment) -> String {
    offsets_table_in(al, &Catalog::new(Lang::En))
}

/// `offsets_table` with headings in the catalog's language.
pub fn offsets_table_in(al: &Alignment, cat: &Catalog) -> String {
    let mut t = table();
    t.set_header(vec![
        cat.get("r-col-vantage"),
        cat.get("r-col-offset"),
        cat.get("r-col-bound"),
        cat.get("r-col-method"),
        cat.get("r-col-samples"),
    ]);
    let refname = &al.vantages[al.reference].name;
    t.add_row(vec![
        Cell::new(cat.render(&Msg::new("r-reference").s("name", refname))),
        Cell::new("0"),
        Cell::new("0"),
        Cell::new("-"),
        Cell::new("-"),
    ]);
    for (v, vant) in al.vantages.iter().enumerate() {
        if v == al.reference {
            continue;
        }
        match al.clock_offsets.iter().find(|o| o.vantage == vant.name) {
            Some(o) => t.add_row(vec![
                Cell::new(&o.vantage),
                Cell::new(format!("{:+.6}", o.offset_s)).set_alignment(CellAlignment::Right),
                Cell::new(format!("{:.6}", o.bound_s)).set_alignment(CellAlignment::Right),
                Cell::new(&o.method),
                Cell::new(o.samples).set_alignment(CellAlignment::Right),
            ]),
            None => t.add_row(vec![
                Cell::new(&vant.name),
                Cell::new(cat.get("r-offset-unknown")),
                Cell::new("-"),
                Cell::new(cat.get("r-offset-no-traffic")),
                Cell::new(0),
            ]),
        };
    }
    format!("{t}\n")
}

/// One row per lined-up connection, one column per vantage.
pub fn align_table(al: &Alignment) -> String {
    align_table_in(al, &Catalog::new(Lang::En))
}

/// Rows of the lined-up connections table in the text and Markdown reports (and the HTML's):
/// a reader skims the first ones; a busy capture's 26k rows belong in the JSON.
pub const MAX_ROWS: usize = 50;

/// Findings of one kind shown in full in the text and Markdown reports; past it, one line says
/// how many more (the JSON keeps every one). A busy capture gives one agent_outage per agent:
/// a thousand of them would bury the verdict in a ticket.
pub const MAX_PER_KIND: usize = 20;

/// The findings the text and Markdown reports show, and per kind how many are left out (in the
/// order the kinds first appear).
/// Counted by kind without reading them (`Findings::kinds`): only those shown are read.
fn shown_findings(d: &Diagnosis) -> (Vec<Finding>, Vec<(&'static str, usize)>) {
    let mut count: Vec<(&'static str, usize)> = Vec::new();
    let mut shown = Vec::new();
    for (i, (kind, _)) in d.findings.kinds().enumerate() {
        let name = kind.name();
        let n = match count.iter_mut().find(|(k, _)| *k == name) {
            Some((_, n)) => n,
            None => {
                count.push((name, 0));
                &mut count.last_mut().expect("just pushed").1
            }
        };
        *n += 1;
        if *n <= MAX_PER_KIND {
            shown.push(d.findings.get(i));
        }
    }
    let hidden = count
        .into_iter()
        .filter(|(_, n)| *n > MAX_PER_KIND)
        .map(|(k, n)| (k, n - MAX_PER_KIND))
        .collect();
    (shown, hidden)
}

/// "… and 1097 more agent_outage findings (see --format json)", one line per kind cut.
fn hidden_lines(cat: &Catalog, hidden: &[(&'static str, usize)]) -> String {
    hidden
        .iter()
        .map(|(k, n)| cat.render(&Msg::new("r-more-findings").n("n", *n).s("kind", *k)) + "\n")
        .collect()
}

/// Connection ids in a findings-table cell: a finding that groups a thousand connections names
/// the first ones; the finding's section and the JSON list them all.
pub const MAX_IDS: usize = 10;

/// "L1 L2 L3 … and 1132 more": at most `MAX_IDS` connection ids.
fn ids_cell(cat: &Catalog, ids: &[crate::align::LineId]) -> String {
    let mut s = ids
        .iter()
        .take(MAX_IDS)
        .map(|id| id.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    if ids.len() > MAX_IDS {
        s.push(' ');
        s.push_str(&cat.render(&Msg::new("r-more-ids").n("n", ids.len() - MAX_IDS)));
    }
    s
}

/// "… and 26457 more (see --format json)" after a table cut at `MAX_ROWS`.
fn more_rows(cat: &Catalog, total: usize, shown: usize) -> Option<String> {
    (total > shown).then(|| cat.render(&Msg::new("r-more-rows").n("n", total - shown)))
}

/// `align_table` with headings and sentences in the catalog's language.
pub fn align_table_in(al: &Alignment, cat: &Catalog) -> String {
    let mut out = lined_up_table(al, cat, usize::MAX);
    out.push_str(&align_extras(al, cat));
    out
}

/// The lined-up connections, one row each up to `max_rows`, then how many more there are.
fn lined_up_table(al: &Alignment, cat: &Catalog, max_rows: usize) -> String {
    let mut t = table();
    let mut header = vec![cat.get("r-col-id"), cat.get("r-col-start")];
    header.extend(al.vantages.iter().map(|v| v.name.clone()));
    header.push(cat.get("r-col-match"));
    t.set_header(header);
    for l in al.connections.iter().take(max_rows) {
        let mut row = vec![Cell::new(l.id), Cell::new(l.ts.tcpdump())];
        for (v, _) in al.vantages.iter().enumerate() {
            let cell = l
                .legs
                .iter()
                .filter(|leg| leg.at.0 == v)
                .map(|leg| {
                    format!(
                        "{} > {} {}",
                        endpoint(leg.src, leg.sport),
                        endpoint(leg.dst, leg.dport),
                        al.conn_state(leg).unwrap_or("udp")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            row.push(Cell::new(if cell.is_empty() { "-".into() } else { cell }));
        }
        row.push(Cell::new(format!(
            "{} {:.2}",
            serde_json::to_value(l.matched.method)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
            l.matched.confidence
        )));
        t.add_row(row);
    }
    let mut out = format!("{t}\n");
    if let Some(more) = more_rows(cat, al.connections.len(), max_rows) {
        out.push_str(&more);
        out.push('\n');
    }
    out
}

/// What `vantage align` shows after the lined-up connections: offsets, losses, ambiguity.
fn align_extras(al: &Alignment, cat: &Catalog) -> String {
    let mut out = offsets_table_in(al, cat);
    if !al.losses.is_empty() {
        let mut t = table();
        t.set_header(vec![
            cat.get("r-col-lost-between"),
            cat.get("r-col-direction"),
            cat.get("r-col-segments"),
            cat.get("r-col-connections"),
        ]);
        for h in &al.losses {
            t.add_row(vec![
                Cell::new(format!("{} -> {}", h.from, h.to)),
                Cell::new(h.direction),
                Cell::new(h.segments).set_alignment(CellAlignment::Right),
                Cell::new(h.connections.join(" ")),
            ]);
        }
        out.push_str(&format!("{t}\n"));
    }
    if al.ambiguous > 0 {
        out.push_str(&cat.render(&Msg::new("r-ambiguous").n("n", al.ambiguous)));
        out.push('\n');
    }
    out
}

pub fn timeline_json(events: &[TimelineEvent]) -> String {
    serde_json::to_string_pretty(events).expect("serializable") + "\n"
}

pub fn timeline_table(events: &[TimelineEvent]) -> String {
    let mut t = table();
    t.set_header(vec![
        "time (reference, UTC)",
        "vantage",
        "frame",
        "packet",
        "flags",
        "seq",
        "ack",
        "len",
        "ttl",
        "ip id",
    ]);
    for e in events {
        t.add_row(vec![
            Cell::new(e.ts.tcpdump()),
            Cell::new(&e.vantage),
            Cell::new(e.frame).set_alignment(CellAlignment::Right),
            Cell::new(format!(
                "{} {} {}",
                endpoint(e.src, e.sport),
                e.dir,
                endpoint(e.dst, e.dport)
            )),
            Cell::new(&e.flags),
            Cell::new(e.seq.map_or("-".into(), |s| s.to_string())),
            Cell::new(e.ack.map_or("-".into(), |s| s.to_string())),
            Cell::new(e.len).set_alignment(CellAlignment::Right),
            Cell::new(e.ttl).set_alignment(CellAlignment::Right),
            Cell::new(e.ip_id.map_or("-".into(), |s| s.to_string())),
        ]);
    }
    format!("{t}\n")
}

// ---- diagnose ----

use crate::diagnose::{Catalog, Diagnosis, Finding, Lang, Msg};

/// The catalog of a diagnosis's language.
pub fn catalog_of(d: &Diagnosis) -> Catalog {
    Catalog::new(Lang::parse(&d.lang).unwrap_or_default())
}

pub fn diagnose_json(d: &Diagnosis) -> String {
    let mut out = Vec::new();
    write_diagnose_json(d, &mut out).expect("a Vec takes every write");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// `diagnose_json` written as it is formatted: on a capture of 10 000 connections the document
/// is ~10 MB, which a `String` would hold on top of the diagnosis at the run's peak.
pub fn write_diagnose_json(d: &Diagnosis, w: &mut dyn std::io::Write) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut w = std::io::BufWriter::with_capacity(64 * 1024, w);
    serde_json::to_writer_pretty(&mut w, d)?;
    w.write_all(b"\n")?;
    w.flush()
}

fn kind_cell(f: &Finding) -> String {
    f.kind.name().to_string()
}

/// The severity in words of the catalog's language.
pub fn severity_words(cat: &Catalog, s: crate::diagnose::Severity) -> String {
    cat.get(match s {
        crate::diagnose::Severity::Info => "sev-info",
        crate::diagnose::Severity::Warning => "sev-warning",
        crate::diagnose::Severity::Critical => "sev-critical",
    })
}

fn severity_word(cat: &Catalog, f: &Finding) -> String {
    severity_words(cat, f.severity)
}

/// The text report: verdict first, then findings, clock offsets, lined-up connections and the
/// captures.
pub fn diagnose_text(d: &Diagnosis, al: &Alignment) -> String {
    let cat = catalog_of(d);
    let mut out = String::new();
    out.push_str(&format!(
        "{}\n  {}{}{}\n\n",
        cat.render(&Msg::new("r-verdict-line").s("summary", &d.verdict.summary)),
        cat.render(
            &Msg::new("r-confidence").s("pct", format!("{:.0}", d.verdict.confidence * 100.0))
        ),
        cat.get("sentence-sep"),
        d.verdict.would_change
    ));
    if al.vantages.len() == 1 {
        out.push_str(&cat.get("r-one-capture"));
        out.push_str("\n\n");
    }
    if d.findings.is_empty() {
        out.push_str(&cat.get("r-no-findings"));
        out.push_str("\n\n");
    } else {
        let mut t = table();
        t.set_header(vec![
            cat.get("r-col-id"),
            cat.get("r-col-severity"),
            cat.get("r-col-kind"),
            cat.get("r-col-connections"),
            cat.get("r-col-summary"),
        ]);
        let (shown, hidden) = shown_findings(d);
        for f in &shown {
            t.add_row(vec![
                Cell::new(&f.id),
                Cell::new(severity_word(&cat, f)),
                Cell::new(kind_cell(f)),
                Cell::new(ids_cell(&cat, &f.connections)),
                Cell::new(&f.summary),
            ]);
        }
        out.push_str(&format!("{t}\n"));
        out.push_str(&hidden_lines(&cat, &hidden));
        out.push('\n');
        for f in &shown {
            let head = Msg::new("r-finding-head")
                .s("id", &f.id)
                .s("kind", f.kind.name())
                .s("text", &f.explanation);
            out.push_str(&format!("{}\n", cat.render(&head)));
            for e in &f.evidence {
                let line = Msg::new("r-evidence-item")
                    .s("ts", e.ts.tcpdump())
                    .s("vantage", &e.vantage)
                    .s("frame", e.frame)
                    .s("what", &e.what);
                out.push_str(&format!("  - {}\n", cat.render(&line)));
            }
            for df in &f.display_filters {
                let line = Msg::new("r-wireshark-line")
                    .s("vantage", &df.vantage)
                    .s("file", &df.file)
                    .s("filter", &df.filter);
                out.push_str(&format!("  {}\n", cat.render(&line)));
            }
            let rec = Msg::new("r-recommendation-line").s("text", &f.recommendation);
            out.push_str(&format!("  {}\n\n", cat.render(&rec)));
        }
    }
    out.push_str(&format!("{}\n", cat.get("r-clock-offsets")));
    out.push_str(&offsets_table_in(al, &cat));
    out.push_str(&format!("\n{}\n", cat.get("r-lined-up")));
    out.push_str(&lined_up_table(al, &cat, MAX_ROWS));
    out.push_str(&format!("\n{}\n", cat.get("r-captures")));
    let mut t = table();
    t.set_header(vec![
        cat.get("r-col-vantage"),
        cat.get("r-col-file"),
        cat.get("r-col-packets"),
        cat.get("r-col-first"),
        cat.get("r-col-last"),
        cat.get("r-col-link-types"),
    ]);
    for c in &d.captures {
        t.add_row(vec![
            Cell::new(&c.name),
            Cell::new(&c.summary.path),
            Cell::new(c.summary.packets).set_alignment(CellAlignment::Right),
            Cell::new(c.summary.first_ts.map_or("-".into(), |t| t.tcpdump())),
            Cell::new(c.summary.last_ts.map_or("-".into(), |t| t.tcpdump())),
            Cell::new(c.summary.link_types.join(", ")),
        ]);
    }
    out.push_str(&format!("{t}\n"));
    for c in &d.captures {
        for w in &c.summary.warnings {
            let line = Msg::new("r-warning-line")
                .s("path", &c.summary.path)
                .m("text", w.msg.clone());
            out.push_str(&format!("{}\n", cat.render(&line)));
        }
    }
    out
}

/// Markdown for a ticket: the same content, evidence as tables, filters in code spans.
pub fn diagnose_markdown(d: &Diagnosis, al: &Alignment) -> String {
    let cat = catalog_of(d);
    let head = |keys: &[&'static str]| -> String {
        let names: Vec<String> = keys.iter().map(|k| cat.get(k)).collect();
        format!(
            "| {} |\n|{}\n",
            names.join(" | "),
            "---|".repeat(keys.len())
        )
    };
    let mut out = String::new();
    out.push_str(&format!("# {}\n\n", cat.get("r-title")));
    out.push_str(&format!(
        "**{}** {}\n\n{}{}{}\n\n",
        cat.get("r-verdict"),
        d.verdict.summary,
        cat.render(
            &Msg::new("r-confidence-cap").s("pct", format!("{:.0}", d.verdict.confidence * 100.0))
        ),
        cat.get("sentence-sep"),
        d.verdict.would_change
    ));
    out.push_str(&format!("## {}\n\n", cat.get("r-findings")));
    if d.findings.is_empty() {
        out.push_str(&format!("{}\n\n", cat.get("r-no-findings")));
    } else {
        out.push_str(&head(&[
            "r-col-id",
            "r-col-severity",
            "r-col-kind",
            "r-col-connections",
            "r-col-summary",
        ]));
        let (shown, hidden) = shown_findings(d);
        for f in &shown {
            out.push_str(&format!(
                "| {} | {} | `{}` | {} | {} |\n",
                f.id,
                severity_word(&cat, f),
                f.kind.name(),
                ids_cell(&cat, &f.connections),
                md_escape(&f.summary)
            ));
        }
        out.push('\n');
        if !hidden.is_empty() {
            out.push_str(&hidden_lines(&cat, &hidden));
            out.push('\n');
        }
        for f in &shown {
            out.push_str(&format!(
                "### {} `{}`\n\n{}\n\n",
                f.id,
                f.kind.name(),
                f.explanation
            ));
            if !f.evidence.is_empty() {
                out.push_str(&head(&[
                    "r-col-time",
                    "r-col-vantage",
                    "r-col-frame",
                    "r-col-what",
                ]));
                for e in &f.evidence {
                    out.push_str(&format!(
                        "| {} | {} | {} | {} |\n",
                        e.ts.tcpdump(),
                        e.vantage,
                        e.frame,
                        md_escape(&e.what)
                    ));
                }
                out.push('\n');
            }
            for df in &f.display_filters {
                let line = Msg::new("r-wireshark-md")
                    .s("vantage", &df.vantage)
                    .s("file", &df.file)
                    .s("filter", &df.filter);
                out.push_str(&format!("- {}\n", cat.render(&line)));
            }
            out.push_str(&format!(
                "\n**{}** {}\n\n",
                cat.get("r-recommendation"),
                f.recommendation
            ));
        }
    }
    out.push_str(&format!("## {}\n\n", cat.get("r-clock-offsets")));
    out.push_str(&head(&[
        "r-col-vantage",
        "r-col-offset-short",
        "r-col-bound",
        "r-col-method",
        "r-col-samples",
    ]));
    out.push_str(&format!(
        "| {} | 0 | 0 | - | - |\n",
        cat.render(&Msg::new("r-reference").s("name", &d.reference))
    ));
    for o in &d.clock_offsets {
        out.push_str(&format!(
            "| {} | {:+.6} | {:.6} | {} | {} |\n",
            o.vantage, o.offset_s, o.bound_s, o.method, o.samples
        ));
    }
    out.push_str(&format!("\n## {}\n\n", cat.get("r-lined-up")));
    out.push_str(&head(&[
        "r-col-id",
        "r-col-start",
        "r-col-legs",
        "r-col-match",
    ]));
    for l in d.connections.iter().take(MAX_ROWS) {
        let legs: Vec<String> = l
            .legs
            .iter()
            .map(|g| {
                format!(
                    "{}: {} > {}",
                    g.vantage,
                    endpoint(g.src, g.sport),
                    endpoint(g.dst, g.dport)
                )
            })
            .collect();
        out.push_str(&format!(
            "| {} | {} | {} | {} {:.2} |\n",
            l.id,
            l.ts.tcpdump(),
            legs.join("<br>"),
            serde_json::to_value(l.matched.method)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
            l.matched.confidence
        ));
    }
    if let Some(more) = more_rows(&cat, d.connections.len(), MAX_ROWS) {
        out.push_str(&format!("\n{more}\n"));
    }
    out.push_str(&format!("\n## {}\n\n", cat.get("r-captures")));
    out.push_str(&head(&[
        "r-col-vantage",
        "r-col-file",
        "r-col-packets",
        "r-col-first",
        "r-col-last",
    ]));
    for c in &d.captures {
        out.push_str(&format!(
            "| {} | `{}` | {} | {} | {} |\n",
            c.name,
            c.summary.path,
            c.summary.packets,
            c.summary.first_ts.map_or("-".into(), |t| t.tcpdump()),
            c.summary.last_ts.map_or("-".into(), |t| t.tcpdump())
        ));
    }
    let warnings: Vec<String> = d
        .captures
        .iter()
        .flat_map(|c| {
            c.summary.warnings.iter().map(|w| {
                format!(
                    "- {} `{}`: {}\n",
                    cat.get("r-warning"),
                    c.summary.path,
                    cat.render(&w.msg)
                )
            })
        })
        .collect();
    if !warnings.is_empty() {
        out.push('\n');
        out.push_str(&warnings.concat());
    }
    let _ = al;
    out
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so that
/// a crash or Ctrl-C never leaves half a report, and an existing report is replaced whole.
pub fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_atomically_with(path, |f| f.write_all(bytes))
}

/// `write_atomically` for a report written as it is formatted.
pub fn write_atomically_with(
    path: &std::path::Path,
    write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| anyhow::anyhow!("{}: not a file name", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        write(&mut f)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        anyhow::bail!("{}: cannot write: {e}", path.display());
    }
    Ok(())
}

/// `vantage flows --detail UID`: one connection's application events in time order, after its
/// conn.log line.
pub fn detail(c: &Connection, format: crate::cli::FlowsFormat) -> String {
    let events: &[crate::app::session::AppEvent] =
        c.app.as_ref().map_or(&[], |a| a.events.as_slice());
    match format {
        crate::cli::FlowsFormat::Json => {
            let v = serde_json::json!({ "connection": FlowRecord::from(c), "events": events });
            serde_json::to_string_pretty(&v).expect("serializable") + "\n"
        }
        crate::cli::FlowsFormat::Table => {
            let mut out = flows_table(&[c], false);
            let mut t = table();
            t.set_header(vec!["time (UTC)", "frame", "dir", "event"]);
            for e in events {
                t.add_row(vec![
                    Cell::new(e.ts.tcpdump()),
                    Cell::new(e.frame).set_alignment(CellAlignment::Right),
                    Cell::new(e.dir),
                    Cell::new(&e.what),
                ]);
            }
            out.push_str(&format!("{t}\n"));
            out
        }
    }
}
