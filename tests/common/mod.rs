//! Packets built with etherparse for rule tests: a small builder and a tracker driver.
#![allow(dead_code)] // each test crate uses a part

use assert_cmd::Command;
use etherparse::PacketBuilder;
use vantage::capture::{Frame, LinkType, Timestamp};
use vantage::decode::{decode, Decoded};
use vantage::tcp::{Connection, Tracker};

pub const AGENT: [u8; 4] = [192, 0, 2, 10];
pub const VIP: [u8; 4] = [198, 51, 100, 10];

#[derive(Clone, Copy)]
pub struct P {
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    seq: u32,
    ack: Option<u32>,
    syn: bool,
    fin: bool,
    rst: bool,
    win: u16,
    ttl: u8,
    ip_id: u16,
    len: usize,
}

impl P {
    pub fn new(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Self {
        P {
            src,
            dst,
            sport,
            dport,
            seq: 0,
            ack: None,
            syn: false,
            fin: false,
            rst: false,
            win: 502,
            ttl: 64,
            ip_id: 0,
            len: 0,
        }
    }
    pub fn seq(mut self, s: u32) -> Self {
        self.seq = s;
        self
    }
    pub fn ack(mut self, a: u32) -> Self {
        self.ack = Some(a);
        self
    }
    pub fn syn(mut self) -> Self {
        self.syn = true;
        self
    }
    pub fn is_fin(&self) -> bool {
        self.fin
    }

    pub fn fin(mut self) -> Self {
        self.fin = true;
        self
    }
    pub fn rst(mut self) -> Self {
        self.rst = true;
        self
    }
    pub fn win(mut self, w: u16) -> Self {
        self.win = w;
        self
    }
    pub fn ttl(mut self, t: u8) -> Self {
        self.ttl = t;
        self
    }
    pub fn id(mut self, i: u16) -> Self {
        self.ip_id = i;
        self
    }
    pub fn len(mut self, l: usize) -> Self {
        self.len = l;
        self
    }
    pub fn bytes(&self) -> Vec<u8> {
        let mut ip =
            etherparse::Ipv4Header::new(0, self.ttl, etherparse::IpNumber::TCP, self.src, self.dst)
                .unwrap();
        ip.identification = self.ip_id;
        let mut b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ip(etherparse::IpHeaders::Ipv4(ip, Default::default()))
            .tcp(self.sport, self.dport, self.seq, self.win);
        if self.syn {
            b = b.syn();
        }
        if self.fin {
            b = b.fin();
        }
        if self.rst {
            b = b.rst();
        }
        if let Some(a) = self.ack {
            b = b.ack(a);
        }
        let payload = vec![b'x'; self.len];
        let mut v = Vec::new();
        b.write(&mut v, &payload).unwrap();
        v
    }
}

/// A pcapng file (`vantage::pcapng_writer`, Ethernet) of (seconds after 1 700 000 000,
/// packet) pairs, in the order given.
pub fn write_pcapng(path: &std::path::Path, packets: &[(f64, P)]) {
    use vantage::pcapng_writer::PcapngWriter;
    let mut w = PcapngWriter::new(std::fs::File::create(path).unwrap(), "vantage tests").unwrap();
    let eth = w.interface(LinkType::ETHERNET, "eth0", "").unwrap();
    for (secs, p) in packets {
        let data = p.bytes();
        w.packet(eth, Timestamp(ns_at(*secs)), data.len() as u32, &data, None)
            .unwrap();
    }
    w.into_inner().unwrap();
}

/// Feeds (seconds, packet) pairs to a tracker and returns the connections.
pub fn track(packets: &[(f64, P)]) -> Vec<Connection> {
    track_named("built.pcap", packets)
}

pub fn track_named(name: &str, packets: &[(f64, P)]) -> Vec<Connection> {
    feed(name, packets, |_| {})
        .finish()
        .into_iter()
        .map(|c| *c)
        .collect()
}

/// Feeds (seconds, packet) pairs to a tracker and returns how many connections were live after
/// each packet (the table that memory follows), then the finished connections.
pub fn track_live(packets: &[(f64, P)]) -> (Vec<usize>, Vec<Connection>) {
    let mut live = Vec::new();
    let t = feed("built.pcap", packets, |t| live.push(t.live_connections()));
    (live, t.finish().into_iter().map(|c| *c).collect())
}

/// A packet's time (ns) `secs` after 1 700 000 000 s, as the builders here give them.
fn ns_at(secs: f64) -> i64 {
    (secs * 1e9) as i64 + 1_700_000_000_000_000_000
}

/// A tracker fed the packets (times from 1.7e9 s), `after` called after each one.
fn feed(name: &str, packets: &[(f64, P)], mut after: impl FnMut(&Tracker)) -> Tracker {
    let mut t = Tracker::new(name);
    for (i, (secs, p)) in packets.iter().enumerate() {
        track_frame(&mut t, i as u64 + 1, ns_at(*secs), &p.bytes());
        after(&t);
    }
    t
}

/// An Ethernet frame's bytes as frame `number`, at `ts` (ns).
pub fn frame(number: u64, ts: i64, data: &[u8]) -> Frame<'_> {
    Frame {
        number,
        ts: Timestamp(ts),
        link: LinkType::ETHERNET,
        interface: 0,
        orig_len: data.len() as u32,
        offset: 0,
        data,
    }
}

/// Hands an Ethernet frame's bytes to the tracker as frame `number`, at `ts` (ns).
pub fn track_frame(t: &mut Tracker, number: u64, ts: i64, data: &[u8]) {
    let frame = frame(number, ts, data);
    match decode(&frame) {
        Decoded::Ip(pkt) => t.packet(&frame, &pkt),
        other => panic!("frame {number} did not decode: {other:?}"),
    }
}

/// A capture built in a test, as the alignment takes it: `connections` tracked from `packets`
/// packets, and the times it covered when the test gives them.
pub fn built_vantage(
    name: &str,
    packets: u64,
    span: Option<(Timestamp, Timestamp)>,
    connections: impl IntoIterator<Item = Box<Connection>>,
) -> vantage::align::Vantage {
    vantage::align::Vantage {
        name: name.into(),
        flows: vantage::pipeline::CaptureFlows {
            summary: vantage::pipeline::CaptureSummary {
                path: format!("{name}.pcap"),
                format: vantage::capture::Format::Pcap,
                gzip: false,
                packets,
                first_ts: span.map(|s| s.0),
                last_ts: span.map(|s| s.1),
                link_types: vec![],
                not_ip: 0,
                malformed: 0,
                ip_fragments: 0,
                filtered_out: 0,
                warnings: vec![],
            },
            connections: connections.into_iter().collect(),
            digests: Default::default(),
            error: None,
            views: Vec::new(),
            tracked_on_threads: false,
        },
    }
}

/// The lab's scenarios (fixtures/<scenario>/, made by fixtures/lab/run.sh).
pub const SCENARIOS: &[&str] = &[
    "conntrack-reject",
    "conntrack-reject-serverka",
    "conntrack-drop",
    "haproxy-fin",
    "haproxy-nolinger",
    "nginx-ws",
    "weak-network",
    "control-conntrack",
    "control-haproxy",
    "control-nginx",
];

/// The `vantage` binary, run from the crate root (where `fixtures/` is).
pub fn vantage() -> Command {
    let mut c = Command::cargo_bin("vantage").unwrap();
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

/// Runs `cmd`, which must succeed (its stderr is the failure message).
pub fn succeed(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// What `cmd`, which must succeed, wrote on stdout.
pub fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(succeed(cmd).stdout).unwrap()
}

/// A lab scenario's three vantages as `NAME=FILE` arguments.
pub fn three(s: &str) -> Vec<String> {
    vec![
        format!("agent=fixtures/{s}/agent.pcapng"),
        format!("softswitch=fixtures/{s}/softswitch.pcap"),
        format!("gateway=fixtures/{s}/gateway.pcap"),
    ]
}

/// The frames of `file` that `filter` shows, or tshark's complaint.
pub fn shown(file: &str, filter: &str) -> Result<std::collections::BTreeSet<u64>, String> {
    let out = std::process::Command::new("tshark")
        .args([
            "-n",
            "-r",
            file,
            "-Y",
            filter,
            "-T",
            "fields",
            "-e",
            "frame.number",
        ])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect())
}

/// Whether tshark runs here; when it does not, `test` is skipped with a message, or fails with
/// `VANTAGE_REQUIRE_TSHARK=1`.
pub fn tshark_here(test: &str) -> bool {
    if std::process::Command::new("tshark")
        .arg("--version")
        .output()
        .is_ok()
    {
        return true;
    }
    let required = std::env::var_os("VANTAGE_REQUIRE_TSHARK").is_some_and(|v| v != "0");
    assert!(
        !required,
        "VANTAGE_REQUIRE_TSHARK is set but tshark is not installed"
    );
    eprintln!(
        "SKIPPED {test}: tshark is not installed (.ci/run installs it; \
         VANTAGE_REQUIRE_TSHARK=1 makes this a failure)"
    );
    false
}

/// Every capture under `fixtures/`, sorted (the library's walker, which its unit tests use).
// Not every test file uses it (`dead_code` does not cover a re-export).
#[allow(unused_imports)]
pub use vantage::testing::fixture_captures;

/// (offset, length including the 16-byte header) of every record of a little-endian pcap.
pub fn pcap_records(b: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= b.len() {
        let incl = u32::from_le_bytes(b[at + 8..at + 12].try_into().unwrap()) as usize;
        out.push((at, 16 + incl));
        at += 16 + incl;
    }
    out
}
