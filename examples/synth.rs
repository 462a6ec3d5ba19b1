//! synth: writes large, realistic captures for benchmarks (not fixtures: nothing here is
//! checked against a real kernel).
//!
//! ```text
//! cargo run --release --example synth -- --size 1GiB --connections 20000 -o big.pcap
//! cargo run --release --example synth -- --size 200MB --vantages 2 --offset 1.75 -o a.pcap -o b.pcap
//! ```
//!
//! The traffic: `--connections` agents (browser softphones), each keeping one SIP-over-WebSocket
//! connection (RFC 7118) to one of four softswitch front ends. Every connection starts with a TCP
//! handshake (MSS, SACK, timestamps, window scale), an HTTP upgrade with
//! `Sec-WebSocket-Protocol: sip` (a real `Sec-WebSocket-Accept`), then masked client text frames:
//! REGISTER/200 every ~9 minutes, CRLF keep-alives (`\r\n\r\n` answered by `\r\n`, RFC 5626)
//! every `--heartbeat` seconds with jitter, and now and then an incoming call
//! (INVITE/180/200/ACK, later BYE/200). Connections live an exponential time (mean
//! `--lifetime`) and then end: mostly a WebSocket close and FIN; some go quiet longer than a
//! middlebox's idle timeout and the next keep-alive is answered by a RST the middlebox builds (TTL
//! 64, IP ID 0, window 0, no options; the server's packets have TTL 55 and incrementing IDs); some
//! agents just vanish. The agent reconnects, sometimes from the same port (port reuse). Some data
//! segments are lost and retransmitted (`--loss`). Half the connections are already up when the
//! capture starts (mid-stream). Timestamps follow per-connection path delays.
//!
//! Vantages: the first capture is taken inside a NAT (agents' private addresses); with
//! `--vantages 2` the second is taken outside it: the agents' address and port are rewritten
//! (198.51.100.1-4, ports from a pool), sequence numbers are kept, the clock is `--offset`
//! seconds ahead, packets lost between the two points are missing, and the middlebox's RSTs
//! (built between the two points) are only in the first.
//!
//! Output: classic pcap, microseconds, Ethernet, through a `BufWriter`; headers written by hand.
//! Deterministic for a given `--seed` and arguments. `--size` bounds the first capture.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use base64::Engine as _;

const USAGE: &str = "\
usage: synth [--size SIZE] [--connections N] [--seed N] [--vantages 1|2] [--offset SECS]
             [--heartbeat SECS] [--lifetime SECS] [--loss P] [--start EPOCH_SECS] -o FILE [-o FILE]

  --size SIZE        size of the first capture: 200MB, 1GiB, 500M (K/M/G and KiB.. are binary,
                     KB/MB/GB decimal); default 100MB
  --connections N    agents, each with one long-lived connection; default 20000
  --seed N           random seed; default 1
  --vantages N       1, or 2 (inside and outside a NAT); default: the number of -o
  --offset SECS      clock of the second capture minus the first; default 1.75
  --heartbeat SECS   CRLF keep-alive interval (jittered by ±8 %); default 25
  --lifetime SECS    mean connection lifetime; default 1800
  --loss P           probability that a data segment is lost and retransmitted; default 0.002
  --start SECS       capture start, seconds since the epoch; default 1772438400 (2026-03-02 08:00 UTC)
  -o, --output FILE  output file (once per vantage)
";

const NS: i64 = 1_000_000_000;
const MS: i64 = 1_000_000;
const US: i64 = 1_000;

/// The idle timeout of the middlebox (a conntrack-style firewall) between the two vantages.
const MIDDLEBOX_IDLE_S: f64 = 55.0;
const SERVER_PORT: u16 = 8080;
const SERVERS: [[u8; 4]; 4] = [
    [203, 0, 113, 10],
    [203, 0, 113, 11],
    [203, 0, 113, 12],
    [203, 0, 113, 13],
];
const GW_MAC_A: [u8; 6] = [0x00, 0x1b, 0x21, 0xaa, 0xbb, 0x01];
const NAT_MAC_B: [u8; 6] = [0x00, 0x1b, 0x21, 0xaa, 0xbb, 0x02];
const RTR_MAC_B: [u8; 6] = [0x00, 0x25, 0x90, 0xcc, 0xdd, 0x01];

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

struct Args {
    size: u64,
    connections: u32,
    outputs: Vec<PathBuf>,
    vantages: usize,
    offset: f64,
    seed: u64,
    heartbeat: f64,
    lifetime: f64,
    loss: f64,
    start: i64,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("{s}: not a size"))?;
    let mult: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(format!("{s}: unknown unit {unit}")),
    };
    Ok((n * mult) as u64)
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        size: 100_000_000,
        connections: 20_000,
        outputs: Vec::new(),
        vantages: 0,
        offset: 1.75,
        seed: 1,
        heartbeat: 25.0,
        lifetime: 1800.0,
        loss: 0.002,
        start: 1_772_438_400,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        if flag == "-h" || flag == "--help" {
            print!("{USAGE}");
            std::process::exit(0);
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        let num = |v: String| -> Result<f64, String> {
            v.trim_end_matches('s')
                .parse::<f64>()
                .map_err(|_| format!("{flag}: {v} is not a number"))
        };
        match flag.as_str() {
            "--size" => a.size = parse_size(&value()?)?,
            "--connections" => a.connections = num(value()?)? as u32,
            "-o" | "--output" => a.outputs.push(value()?.into()),
            "--vantages" => a.vantages = num(value()?)? as usize,
            "--offset" => a.offset = num(value()?)?,
            "--seed" => a.seed = num(value()?)? as u64,
            "--heartbeat" => a.heartbeat = num(value()?)?,
            "--lifetime" => a.lifetime = num(value()?)?,
            "--loss" => a.loss = num(value()?)?,
            "--start" => a.start = num(value()?)? as i64,
            _ => return Err(format!("unknown argument {arg}\n{USAGE}")),
        }
    }
    if a.vantages == 0 {
        a.vantages = a.outputs.len().max(1);
    }
    if !(1..=2).contains(&a.vantages) {
        return Err("--vantages must be 1 or 2".into());
    }
    if a.outputs.len() != a.vantages {
        return Err(format!(
            "{} vantage(s) need as many -o FILE (got {})\n{USAGE}",
            a.vantages,
            a.outputs.len()
        ));
    }
    if a.connections == 0 || a.connections > 4_000_000 {
        return Err("--connections must be between 1 and 4000000".into());
    }
    Ok(a)
}

/// splitmix64: small, fast, and the same on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn f64(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// In [lo, hi).
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
    fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }
    /// Uniform duration in [lo, hi) seconds, as nanoseconds.
    fn secs(&mut self, lo: f64, hi: f64) -> i64 {
        ((lo + (hi - lo) * self.f64()) * 1e9) as i64
    }
    fn exp_secs(&mut self, mean: f64) -> i64 {
        (-(1.0 - self.f64()).ln() * mean * 1e9) as i64
    }
}

/// One record waiting for its turn: a capture must be in time order, and the two directions of
/// a connection reach a capture point with different delays.
struct Rec {
    ts: i64,
    n: u64,
    data: Vec<u8>,
}

impl PartialEq for Rec {
    fn eq(&self, o: &Self) -> bool {
        (self.ts, self.n) == (o.ts, o.n)
    }
}
impl Eq for Rec {}
impl PartialOrd for Rec {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Rec {
    fn cmp(&self, o: &Self) -> Ordering {
        (self.ts, self.n).cmp(&(o.ts, o.n))
    }
}

/// One capture file being written.
struct Out {
    w: BufWriter<File>,
    pending: BinaryHeap<Reverse<Rec>>,
    free: Vec<Vec<u8>>,
    n: u64,
    /// Bytes of every record made so far (file header included), written or pending.
    bytes: u64,
    packets: u64,
    clock_offset: i64,
}

impl Out {
    fn create(path: &PathBuf, clock_offset: i64) -> std::io::Result<Out> {
        let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
        // Classic pcap, little endian, microseconds, snaplen 262144, Ethernet.
        w.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
        w.write_all(&2u16.to_le_bytes())?;
        w.write_all(&4u16.to_le_bytes())?;
        w.write_all(&0i32.to_le_bytes())?;
        w.write_all(&0u32.to_le_bytes())?;
        w.write_all(&262_144u32.to_le_bytes())?;
        w.write_all(&1u32.to_le_bytes())?;
        Ok(Out {
            w,
            pending: BinaryHeap::new(),
            free: Vec::new(),
            n: 0,
            bytes: 24,
            packets: 0,
            clock_offset,
        })
    }

    fn push(&mut self, ts: i64, pkt: &Pkt<'_>) {
        let ts = ts + self.clock_offset;
        let mut data = self.free.pop().unwrap_or_default();
        data.clear();
        let secs = ts.div_euclid(NS);
        let usecs = ts.rem_euclid(NS) / US;
        data.extend_from_slice(&(secs as u32).to_le_bytes());
        data.extend_from_slice(&(usecs as u32).to_le_bytes());
        data.extend_from_slice(&[0; 8]);
        write_frame(&mut data, pkt);
        let len = (data.len() - 16) as u32;
        data[8..12].copy_from_slice(&len.to_le_bytes());
        data[12..16].copy_from_slice(&len.to_le_bytes());
        self.bytes += data.len() as u64;
        self.packets += 1;
        self.n += 1;
        self.pending.push(Reverse(Rec {
            ts,
            n: self.n,
            data,
        }));
    }

    /// Writes every record no later than `now` (capture clock = simulation clock + offset):
    /// nothing made later can be earlier than the simulation time it is made at.
    fn flush_until(&mut self, now: i64) -> std::io::Result<()> {
        let now = now + self.clock_offset;
        while self.pending.peek().is_some_and(|r| r.0.ts <= now) {
            let Reverse(r) = self.pending.pop().expect("peeked");
            self.w.write_all(&r.data)?;
            self.free.push(r.data);
        }
        Ok(())
    }

    fn finish(mut self) -> std::io::Result<()> {
        self.flush_until(i64::MAX - self.clock_offset.max(0))?;
        self.w.flush()
    }
}

#[derive(Clone, Copy)]
enum TcpOpts {
    None,
    /// NOP NOP TS (12 bytes), as Linux sends on an established connection.
    Ts(u32, u32),
    /// MSS, SACK permitted, TS, NOP, window scale 7 (20 bytes), as Linux sends on a SYN.
    Syn(u32, u32),
}

struct Pkt<'a> {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    ttl: u8,
    ip_id: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    opts: TcpOpts,
    payload: &'a [u8],
}

fn csum_add(mut sum: u64, bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        sum += u16::from_be_bytes([c[0], c[1]]) as u64;
    }
    if let [last] = chunks.remainder() {
        sum += (*last as u64) << 8;
    }
    sum
}

fn csum_fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Ethernet II + IPv4 (DF) + TCP, checksums included.
fn write_frame(buf: &mut Vec<u8>, p: &Pkt<'_>) {
    buf.extend_from_slice(&p.dst_mac);
    buf.extend_from_slice(&p.src_mac);
    buf.extend_from_slice(&[0x08, 0x00]);
    let ip_at = buf.len();
    let opt_len = match p.opts {
        TcpOpts::None => 0,
        TcpOpts::Ts(..) => 12,
        TcpOpts::Syn(..) => 20,
    };
    let tcp_len = 20 + opt_len + p.payload.len();
    let total = (20 + tcp_len) as u16;
    buf.extend_from_slice(&[0x45, 0x00]);
    buf.extend_from_slice(&total.to_be_bytes());
    buf.extend_from_slice(&p.ip_id.to_be_bytes());
    buf.extend_from_slice(&[0x40, 0x00, p.ttl, 6, 0, 0]);
    buf.extend_from_slice(&p.src);
    buf.extend_from_slice(&p.dst);
    let ip_sum = csum_fold(csum_add(0, &buf[ip_at..ip_at + 20]));
    buf[ip_at + 10..ip_at + 12].copy_from_slice(&ip_sum.to_be_bytes());
    let tcp_at = buf.len();
    buf.extend_from_slice(&p.sport.to_be_bytes());
    buf.extend_from_slice(&p.dport.to_be_bytes());
    buf.extend_from_slice(&p.seq.to_be_bytes());
    buf.extend_from_slice(&p.ack.to_be_bytes());
    buf.push((((20 + opt_len) / 4) as u8) << 4);
    buf.push(p.flags);
    buf.extend_from_slice(&p.window.to_be_bytes());
    buf.extend_from_slice(&[0, 0, 0, 0]);
    match p.opts {
        TcpOpts::None => {}
        TcpOpts::Ts(v, e) => {
            buf.extend_from_slice(&[1, 1, 8, 10]);
            buf.extend_from_slice(&v.to_be_bytes());
            buf.extend_from_slice(&e.to_be_bytes());
        }
        TcpOpts::Syn(v, e) => {
            buf.extend_from_slice(&[2, 4, 0x05, 0xb4, 4, 2, 8, 10]);
            buf.extend_from_slice(&v.to_be_bytes());
            buf.extend_from_slice(&e.to_be_bytes());
            buf.extend_from_slice(&[1, 3, 3, 7]);
        }
    }
    buf.extend_from_slice(p.payload);
    let mut sum = csum_add(0, &p.src);
    sum = csum_add(sum, &p.dst);
    sum += 6 + tcp_len as u64;
    sum = csum_add(sum, &buf[tcp_at..]);
    let tcp_sum = csum_fold(sum);
    buf[tcp_at + 16..tcp_at + 18].copy_from_slice(&tcp_sum.to_be_bytes());
}

/// What a connection is doing: an exchange of messages, and the step within it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ex {
    Connect,
    Register,
    Keepalive,
    CallIn,
    Bye,
    Close,
    ResetProbe,
    Vanished,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Close,
    MiddleboxReset,
    Vanish,
}

/// One agent and its current connection.
struct Conn {
    slot: u32,
    client: [u8; 4],
    client_mac: [u8; 6],
    cport: u16,
    server: [u8; 4],
    nat: [u8; 4],
    nat_port: u16,
    /// One-way delay between the two capture points, and from the outer one to the server.
    dab: i64,
    dbs: i64,
    server_ttl_a: u8,
    client_ttl_b: u8,
    cnext: u32,
    snext: u32,
    c_ipid: u16,
    s_ipid: u16,
    c_ts0: u32,
    s_ts0: u32,
    c_last_tsval: u32,
    s_last_tsval: u32,
    ex: Ex,
    step: u8,
    next_ka: i64,
    next_reg: i64,
    call_due: i64,
    call_up: bool,
    client_hangs_up: bool,
    end_at: i64,
    end: End,
    cseq: u32,
    reg_call_id: u64,
    call_id: u64,
    call_tag: u64,
    ws_key: [u8; 16],
    /// A clean end (close or RST) leaves the port free for the agent to reuse.
    port_free: bool,
}

impl Conn {
    fn ow(&self) -> i64 {
        self.dab + self.dbs
    }
}

struct Stats {
    opened: u64,
    mid_stream: u64,
    closes: u64,
    resets: u64,
    vanished: u64,
    calls: u64,
    retransmissions: u64,
    port_reuse: u64,
}

struct Sim {
    cfg: Args,
    rng: Rng,
    conns: Vec<Conn>,
    outs: Vec<Out>,
    text: String,
    frame: Vec<u8>,
    nat_counter: u32,
    stats: Stats,
}

/// Sender's side of a packet, with which captures see it.
#[derive(Clone, Copy)]
struct Seen {
    a: bool,
    b: bool,
}
const BOTH: Seen = Seen { a: true, b: true };

impl Sim {
    fn new(cfg: Args) -> std::io::Result<Sim> {
        let mut outs = Vec::new();
        for (i, p) in cfg.outputs.iter().enumerate() {
            let off = if i == 0 { 0 } else { (cfg.offset * 1e9) as i64 };
            outs.push(Out::create(p, off)?);
        }
        let rng = Rng(cfg.seed ^ 0x005E_ED0F_7A17);
        Ok(Sim {
            cfg,
            rng,
            conns: Vec::new(),
            outs,
            text: String::with_capacity(2048),
            frame: Vec::with_capacity(2048),
            nat_counter: 0,
            stats: Stats {
                opened: 0,
                mid_stream: 0,
                closes: 0,
                resets: 0,
                vanished: 0,
                calls: 0,
                retransmissions: 0,
                port_reuse: 0,
            },
        })
    }

    fn slot_conn(&mut self, slot: u32) -> Conn {
        let r = &mut self.rng;
        let client = [
            10,
            16 + (slot / 62_500) as u8,
            ((slot / 250) % 250) as u8,
            (slot % 250) as u8 + 2,
        ];
        let client_mac = [0x02, 0x00, client[0], client[1], client[2], client[3]];
        let dab = r.secs(0.004, 0.060);
        let dbs = r.secs(0.0001, 0.0006);
        let hops = r.range(6, 12) as u8;
        let mut c = Conn {
            slot,
            client,
            client_mac,
            cport: 0,
            server: SERVERS[slot as usize % SERVERS.len()],
            nat: [0; 4],
            nat_port: 0,
            dab,
            dbs,
            server_ttl_a: 64 - hops,
            client_ttl_b: 64 - hops + 1,
            cnext: 0,
            snext: 0,
            c_ipid: 0,
            s_ipid: 0,
            c_ts0: 0,
            s_ts0: 0,
            c_last_tsval: 0,
            s_last_tsval: 0,
            ex: Ex::Connect,
            step: 0,
            next_ka: 0,
            next_reg: 0,
            call_due: 0,
            call_up: false,
            client_hangs_up: false,
            end_at: 0,
            end: End::Close,
            cseq: 0,
            reg_call_id: 0,
            call_id: 0,
            call_tag: 0,
            ws_key: [0; 16],
            port_free: false,
        };
        c.cport = r.range(32_768, 61_000) as u16;
        c
    }

    /// A new connection of the agent in `c` (new port unless reused, new ISNs, new NAT mapping).
    fn renew(&mut self, id: usize, start: i64) {
        let cfg_life = self.cfg.lifetime;
        self.nat_counter = self.nat_counter.wrapping_add(1);
        let nat_n = self.nat_counter;
        let r = &mut self.rng;
        let c = &mut self.conns[id];
        if c.port_free && r.chance(0.05) {
            self.stats.port_reuse += 1;
        } else {
            c.cport = r.range(32_768, 61_000) as u16;
        }
        c.port_free = false;
        c.nat = [198, 51, 100, 1 + (nat_n % 4) as u8];
        c.nat_port = 1024 + ((nat_n / 4) % 64_000) as u16;
        c.cnext = r.next() as u32;
        c.snext = r.next() as u32;
        c.c_ipid = r.next() as u16;
        c.s_ipid = r.next() as u16;
        c.c_ts0 = r.next() as u32;
        c.s_ts0 = r.next() as u32;
        c.ex = Ex::Connect;
        c.step = 0;
        c.next_ka = i64::MAX;
        c.next_reg = i64::MAX;
        c.call_due = start + r.exp_secs(2400.0);
        c.call_up = false;
        c.end_at = start + r.exp_secs(cfg_life);
        let p = r.f64();
        c.end = if p < 0.72 {
            End::Close
        } else if p < 0.92 {
            End::MiddleboxReset
        } else {
            End::Vanish
        };
        c.cseq = r.range(1, 9000) as u32;
        c.reg_call_id = r.next();
        for b in c.ws_key.iter_mut() {
            *b = r.next() as u8;
        }
        self.stats.opened += 1;
    }

    fn tsval(c: &Conn, from_client: bool, t: i64) -> u32 {
        let base = if from_client { c.c_ts0 } else { c.s_ts0 };
        base.wrapping_add((t / MS) as u32)
    }

    /// Sends one segment at `t` from one side; payload is `self.frame`. Returns when the copy
    /// that got through was sent (later than `t` when the first was lost).
    fn send(&mut self, id: usize, from_client: bool, t: i64, flags: u8, payload: bool) -> i64 {
        let payload_len = if payload { self.frame.len() } else { 0 };
        let lost = payload_len > 0 && self.rng.chance(self.cfg.loss);
        // Lost between the two capture points (the outer/inner one misses the first copy), or
        // beyond both (both see it twice).
        let between = lost && self.rng.chance(0.5);
        let mut eff = t;
        let copies = if lost { 2 } else { 1 };
        for k in 0..copies {
            let at = if k == 0 {
                t
            } else {
                let c = &self.conns[id];
                let rto = 200 * MS + 2 * c.ow() + self.rng.secs(0.0, 0.01);
                self.stats.retransmissions += 1;
                t + rto
            };
            eff = at;
            let seen = if k == 0 && between {
                if from_client {
                    Seen { a: true, b: false }
                } else {
                    Seen { a: false, b: true }
                }
            } else {
                BOTH
            };
            self.emit(id, from_client, at, flags, payload, seen);
        }
        let c = &mut self.conns[id];
        let len = payload_len as u32 + (flags & (SYN | FIN) != 0) as u32;
        if from_client {
            c.cnext = c.cnext.wrapping_add(len);
        } else {
            c.snext = c.snext.wrapping_add(len);
        }
        eff
    }

    fn emit(&mut self, id: usize, from_client: bool, t: i64, flags: u8, payload: bool, seen: Seen) {
        let c = &self.conns[id];
        let tsval = Self::tsval(c, from_client, t);
        let syn = flags & SYN != 0;
        let (seq, ack) = if from_client {
            (c.cnext, c.snext)
        } else {
            (c.snext, c.cnext)
        };
        let (ecr, window) = if from_client {
            (c.s_last_tsval, if syn { 64_240 } else { 502 })
        } else {
            (c.c_last_tsval, if syn { 65_160 } else { 509 })
        };
        let opts = if syn {
            TcpOpts::Syn(tsval, ecr)
        } else {
            TcpOpts::Ts(tsval, ecr)
        };
        let ack = if flags & ACK != 0 { ack } else { 0 };
        let ip_id = if from_client { c.c_ipid } else { c.s_ipid };
        let payload: &[u8] = if payload { &self.frame } else { &[] };
        let ow = c.ow();
        for (v, out) in self.outs.iter_mut().enumerate() {
            let inside = v == 0;
            if (inside && !seen.a) || (!inside && !seen.b) {
                continue;
            }
            let (caddr, cport) = if inside {
                (c.client, c.cport)
            } else {
                (c.nat, c.nat_port)
            };
            let (cmac, smac) = if inside {
                (c.client_mac, GW_MAC_A)
            } else {
                (NAT_MAC_B, RTR_MAC_B)
            };
            let at = match (inside, from_client) {
                (true, true) => t,
                (true, false) => t + ow,
                (false, true) => t + c.dab,
                (false, false) => t + c.dbs,
            };
            let ttl = match (inside, from_client) {
                (true, true) => 64,
                (true, false) => c.server_ttl_a,
                (false, true) => c.client_ttl_b,
                (false, false) => 63,
            };
            let pkt = if from_client {
                Pkt {
                    src_mac: cmac,
                    dst_mac: smac,
                    src: caddr,
                    dst: c.server,
                    sport: cport,
                    dport: SERVER_PORT,
                    ttl,
                    ip_id,
                    seq,
                    ack,
                    flags,
                    window,
                    opts,
                    payload,
                }
            } else {
                Pkt {
                    src_mac: smac,
                    dst_mac: cmac,
                    src: c.server,
                    dst: caddr,
                    sport: SERVER_PORT,
                    dport: cport,
                    ttl,
                    ip_id,
                    seq,
                    ack,
                    flags,
                    window,
                    opts,
                    payload,
                }
            };
            out.push(at, &pkt);
        }
        let c = &mut self.conns[id];
        if from_client {
            c.c_ipid = c.c_ipid.wrapping_add(1);
            c.c_last_tsval = tsval;
        } else {
            c.s_ipid = c.s_ipid.wrapping_add(1);
            c.s_last_tsval = tsval;
        }
    }

    /// The middlebox between the captures answers the client's segment at `t` with a RST "from
    /// the server": seen only by the inner capture.
    fn middlebox_rst(&mut self, id: usize, t: i64) {
        let c = &self.conns[id];
        let pkt = Pkt {
            src_mac: GW_MAC_A,
            dst_mac: c.client_mac,
            src: c.server,
            dst: c.client,
            sport: SERVER_PORT,
            dport: c.cport,
            ttl: 64,
            ip_id: 0,
            seq: c.snext,
            ack: 0,
            flags: RST,
            window: 0,
            opts: TcpOpts::None,
            payload: &[],
        };
        let at = t + c.dab * 6 / 10;
        self.outs[0].push(at, &pkt);
    }

    /// Frames `self.text` as one WebSocket text frame into `self.frame` (masked from the
    /// client, RFC 6455 §5.3).
    fn ws_text(&mut self, from_client: bool) {
        let mask = from_client.then(|| (self.rng.next() as u32).to_be_bytes());
        ws_frame(&mut self.frame, 0x1, self.text.as_bytes(), mask);
    }

    fn ws_close(&mut self, from_client: bool) {
        let mask = from_client.then(|| (self.rng.next() as u32).to_be_bytes());
        let mut body = 1000u16.to_be_bytes().to_vec();
        body.extend_from_slice(b"bye");
        ws_frame(&mut self.frame, 0x8, &body, mask);
    }

    /// Runs the connection's next step at `now`; returns when it acts again.
    fn act(&mut self, id: usize, now: i64) -> i64 {
        let (ex, step, ow) = {
            let c = &self.conns[id];
            (c.ex, c.step, c.ow())
        };
        let hb = self.cfg.heartbeat;
        let next = |s: &mut Sim, ex: Ex, step: u8, at: i64| {
            let c = &mut s.conns[id];
            c.ex = ex;
            c.step = step;
            at
        };
        match (ex, step) {
            (Ex::Connect, 0) => {
                self.send(id, true, now, SYN, false);
                let d = self.rng.secs(0.00002, 0.0001);
                next(self, Ex::Connect, 1, now + ow + d)
            }
            (Ex::Connect, 1) => {
                self.send(id, false, now, SYN | ACK, false);
                next(self, Ex::Connect, 2, now + ow)
            }
            (Ex::Connect, 2) => {
                self.send(id, true, now, ACK, false);
                self.http_upgrade_request(id);
                let t = self.send(id, true, now + 30 * US, PSH | ACK, true);
                let d = self.rng.secs(0.0002, 0.002);
                next(self, Ex::Connect, 3, t + ow + d)
            }
            (Ex::Connect, 3) => {
                self.http_101(id);
                let t = self.send(id, false, now, PSH | ACK, true);
                let d = self.rng.secs(0.001, 0.005);
                let c = &mut self.conns[id];
                c.next_ka = now + (hb * 1e9) as i64;
                next(self, Ex::Register, 0, t + ow + d)
            }
            (Ex::Register, 0) => {
                self.sip_register(id);
                self.ws_text(true);
                let t = self.send(id, true, now, PSH | ACK, true);
                let d = self.rng.secs(0.001, 0.008);
                next(self, Ex::Register, 1, t + ow + d)
            }
            (Ex::Register, 1) => {
                self.sip_register_ok(id);
                self.ws_text(false);
                let t = self.send(id, false, now, PSH | ACK, true);
                next(self, Ex::Register, 2, t + ow + 40 * MS)
            }
            (Ex::Register, 2) => {
                self.send(id, true, now, ACK, false);
                let d = self.rng.secs(520.0, 580.0);
                let c = &mut self.conns[id];
                c.next_reg = now + d;
                c.cseq += 1;
                self.plan(id, now)
            }
            (Ex::Keepalive, 0) => {
                self.text.clear();
                self.text.push_str("\r\n\r\n");
                self.ws_text(true);
                let t = self.send(id, true, now, PSH | ACK, true);
                let d = self.rng.secs(0.00005, 0.0003);
                next(self, Ex::Keepalive, 1, t + ow + d)
            }
            (Ex::Keepalive, 1) => {
                self.text.clear();
                self.text.push_str("\r\n");
                self.ws_text(false);
                let t = self.send(id, false, now, PSH | ACK, true);
                next(self, Ex::Keepalive, 2, t + ow + 40 * MS)
            }
            (Ex::Keepalive, 2) => {
                self.send(id, true, now, ACK, false);
                let j = self.rng.secs(hb * 0.92, hb * 1.08);
                self.conns[id].next_ka = now + j;
                self.plan(id, now)
            }
            (Ex::CallIn, 0) => {
                self.stats.calls += 1;
                let (cid, tag) = (self.rng.next(), self.rng.next());
                let c = &mut self.conns[id];
                c.call_id = cid;
                c.call_tag = tag;
                self.sip_invite(id);
                self.ws_text(false);
                let t = self.send(id, false, now, PSH | ACK, true);
                let d = self.rng.secs(0.005, 0.03);
                next(self, Ex::CallIn, 1, t + ow + d)
            }
            (Ex::CallIn, 1) => {
                self.sip_response(id, 180, "Ringing", "INVITE", false);
                self.ws_text(true);
                let t = self.send(id, true, now, PSH | ACK, true);
                // The server's delayed ACK of the 180, well before the 200.
                self.emit(id, false, t + ow + 40 * MS, ACK, false, BOTH);
                let ring = self.rng.secs(2.0, 15.0);
                next(self, Ex::CallIn, 2, t + ring)
            }
            (Ex::CallIn, 2) => {
                self.sip_response(id, 200, "OK", "INVITE", true);
                self.ws_text(true);
                let t = self.send(id, true, now, PSH | ACK, true);
                let d = self.rng.secs(0.0005, 0.003);
                next(self, Ex::CallIn, 3, t + ow + d)
            }
            (Ex::CallIn, 3) => {
                self.sip_ack(id);
                self.ws_text(false);
                let t = self.send(id, false, now, PSH | ACK, true);
                next(self, Ex::CallIn, 4, t + ow + 40 * MS)
            }
            (Ex::CallIn, 4) => {
                self.send(id, true, now, ACK, false);
                let dur = self.rng.secs(20.0, 600.0);
                let by_client = self.rng.chance(0.6);
                let c = &mut self.conns[id];
                c.call_up = true;
                c.client_hangs_up = by_client;
                c.call_due = now + dur;
                self.plan(id, now)
            }
            (Ex::Bye, 0) => {
                let by_client = self.conns[id].client_hangs_up;
                self.sip_bye(id, by_client);
                self.ws_text(by_client);
                let t = self.send(id, by_client, now, PSH | ACK, true);
                let d = self.rng.secs(0.0005, 0.003);
                next(self, Ex::Bye, 1, t + ow + d)
            }
            (Ex::Bye, 1) => {
                let by_client = self.conns[id].client_hangs_up;
                self.sip_response(id, 200, "OK", "BYE", false);
                self.ws_text(!by_client);
                let t = self.send(id, !by_client, now, PSH | ACK, true);
                next(self, Ex::Bye, 2, t + ow + 40 * MS)
            }
            (Ex::Bye, 2) => {
                let by_client = self.conns[id].client_hangs_up;
                self.send(id, by_client, now, ACK, false);
                let gap = self.rng.exp_secs(2400.0);
                let c = &mut self.conns[id];
                c.call_up = false;
                c.call_due = now + gap;
                self.plan(id, now)
            }
            (Ex::Close, 0) => {
                self.ws_close(true);
                let t = self.send(id, true, now, PSH | ACK, true);
                let d = self.rng.secs(0.00005, 0.0003);
                next(self, Ex::Close, 1, t + ow + d)
            }
            (Ex::Close, 1) => {
                // The server echoes the close and closes the TCP connection first (RFC 6455 §7.1.1).
                self.ws_close(false);
                let t = self.send(id, false, now, PSH | ACK, true);
                self.send(id, false, t + 50 * US, FIN | ACK, false);
                next(self, Ex::Close, 2, t + 50 * US + ow + 20 * US)
            }
            (Ex::Close, 2) => {
                self.send(id, true, now, FIN | ACK, false);
                next(self, Ex::Close, 3, now + ow)
            }
            (Ex::Close, 3) => {
                self.send(id, false, now, ACK, false);
                self.stats.closes += 1;
                self.conns[id].port_free = true;
                let gap = self.rng.secs(1.0, 10.0);
                self.renew(id, now + gap);
                now + gap
            }
            (Ex::ResetProbe, _) => {
                self.text.clear();
                self.text.push_str("\r\n\r\n");
                self.ws_text(true);
                // The middlebox has forgotten the flow: it drops the segment and answers it.
                self.emit(id, true, now, PSH | ACK, true, Seen { a: true, b: false });
                self.middlebox_rst(id, now);
                self.stats.resets += 1;
                self.conns[id].port_free = true;
                let gap = self.rng.secs(0.5, 3.0);
                self.renew(id, now + gap);
                now + gap
            }
            (Ex::Vanished, _) => {
                self.renew(id, now);
                now
            }
            (ex, step) => unreachable!("{ex:?} step {step}"),
        }
    }

    /// Chooses the next exchange of an idle connection.
    fn plan(&mut self, id: usize, now: i64) -> i64 {
        let c = &self.conns[id];
        let mut at = c.next_ka;
        let mut ex = Ex::Keepalive;
        if c.next_reg < at {
            at = c.next_reg;
            ex = Ex::Register;
        }
        if c.call_due < at {
            at = c.call_due;
            ex = if c.call_up { Ex::Bye } else { Ex::CallIn };
        }
        if at >= c.end_at {
            let end = c.end;
            let end_at = c.end_at.max(now + MS);
            let (ex, at) = match end {
                End::Close => (Ex::Close, end_at),
                End::MiddleboxReset => {
                    // The agent stops its heartbeat (a suspended tab) for longer than the
                    // middlebox keeps idle flows.
                    let quiet = self
                        .rng
                        .secs(MIDDLEBOX_IDLE_S + 1.0, MIDDLEBOX_IDLE_S + 90.0);
                    (Ex::ResetProbe, now + quiet)
                }
                End::Vanish => {
                    self.stats.vanished += 1;
                    let back = self.rng.secs(20.0, 120.0);
                    (Ex::Vanished, end_at + back)
                }
            };
            let c = &mut self.conns[id];
            c.ex = ex;
            c.step = 0;
            return at;
        }
        let c = &mut self.conns[id];
        c.ex = ex;
        c.step = 0;
        at.max(now)
    }

    /// A connection that is already up when the capture starts: only its ongoing traffic is seen.
    fn mid_stream(&mut self, id: usize, start: i64) -> i64 {
        let age = self.rng.secs(60.0, 3600.0);
        self.renew(id, start - age);
        self.stats.mid_stream += 1;
        let hb = self.cfg.heartbeat;
        let r = &mut self.rng;
        let c = &mut self.conns[id];
        c.next_ka = start + r.secs(0.0, hb);
        c.next_reg = start + r.secs(0.0, 580.0);
        if c.end_at < start {
            c.end_at = start + r.exp_secs(self.cfg.lifetime);
        }
        c.c_last_tsval = Self::tsval(c, true, start - r.secs(1.0, 25.0));
        c.s_last_tsval = Self::tsval(c, false, start - r.secs(1.0, 25.0));
        if c.call_due < start {
            c.call_due = start + r.exp_secs(2400.0);
        }
        self.plan(id, start)
    }

    fn http_upgrade_request(&mut self, id: usize) {
        let c = &self.conns[id];
        let key = base64::engine::general_purpose::STANDARD.encode(c.ws_key);
        let server = c.server;
        self.text.clear();
        let _ = write!(
            self.text,
            "GET /ws HTTP/1.1\r\n\
             Host: {}.{}.{}.{}:{SERVER_PORT}\r\n\
             Connection: Upgrade\r\n\
             Pragma: no-cache\r\n\
             Cache-Control: no-cache\r\n\
             User-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n\
             Upgrade: websocket\r\n\
             Origin: https://agents.example.net\r\n\
             Sec-WebSocket-Version: 13\r\n\
             Accept-Encoding: gzip, deflate, br\r\n\
             Accept-Language: en-US,en;q=0.9\r\n\
             Sec-WebSocket-Key: {key}\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
             Sec-WebSocket-Protocol: sip\r\n\r\n",
            server[0], server[1], server[2], server[3]
        );
        self.frame.clear();
        self.frame.extend_from_slice(self.text.as_bytes());
    }

    fn http_101(&mut self, id: usize) {
        let key = base64::engine::general_purpose::STANDARD.encode(self.conns[id].ws_key);
        let mut sha = sha1_smol::Sha1::new();
        sha.update(key.as_bytes());
        sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
        let accept = base64::engine::general_purpose::STANDARD.encode(sha.digest().bytes());
        self.text.clear();
        let _ = write!(
            self.text,
            "HTTP/1.1 101 Switching Protocols\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\n\
             Sec-WebSocket-Protocol: sip\r\n\r\n"
        );
        self.frame.clear();
        self.frame.extend_from_slice(self.text.as_bytes());
    }

    fn agent_host(c: &Conn) -> String {
        format!("a{:x}{:06x}", c.slot, c.reg_call_id as u32 & 0xff_ffff)
    }

    fn sip_register(&mut self, id: usize) {
        let branch = self.rng.next();
        let c = &self.conns[id];
        let host = Self::agent_host(c);
        self.text.clear();
        let _ = write!(
            self.text,
            "REGISTER sip:example.net SIP/2.0\r\n\
             Via: SIP/2.0/WSS {host}.invalid;branch=z9hG4bK{branch:x}\r\n\
             Max-Forwards: 69\r\n\
             To: <sip:agent{slot}@example.net>\r\n\
             From: \"Agent {slot}\" <sip:agent{slot}@example.net>;tag={tag:x}\r\n\
             Call-ID: {cid:x}\r\n\
             CSeq: {cseq} REGISTER\r\n\
             Contact: <sip:{host}@{host}.invalid;transport=ws>;+sip.ice;reg-id=1;+sip.instance=\"<urn:uuid:{cid:016x}>\";expires=600\r\n\
             Expires: 600\r\n\
             Allow: INVITE,ACK,CANCEL,BYE,UPDATE,MESSAGE,OPTIONS,REFER,INFO,NOTIFY\r\n\
             Supported: path,gruu,outbound\r\n\
             User-Agent: JsSIP 3.10.1\r\n\
             Content-Length: 0\r\n\r\n",
            slot = c.slot,
            tag = c.reg_call_id >> 20,
            cid = c.reg_call_id,
            cseq = c.cseq,
        );
    }

    fn sip_register_ok(&mut self, id: usize) {
        let c = &self.conns[id];
        let host = Self::agent_host(c);
        self.text.clear();
        let _ = write!(
            self.text,
            "SIP/2.0 200 OK\r\n\
             Via: SIP/2.0/WSS {host}.invalid;branch=z9hG4bK{cid:x};received={ip}\r\n\
             To: <sip:agent{slot}@example.net>;tag=as{cid:08x}\r\n\
             From: \"Agent {slot}\" <sip:agent{slot}@example.net>;tag={tag:x}\r\n\
             Call-ID: {cid:x}\r\n\
             CSeq: {cseq} REGISTER\r\n\
             Contact: <sip:{host}@{host}.invalid;transport=ws>;expires=600\r\n\
             Supported: path,outbound\r\n\
             Server: softswitch 5.8\r\n\
             Content-Length: 0\r\n\r\n",
            slot = c.slot,
            tag = c.reg_call_id >> 20,
            cid = c.reg_call_id,
            cseq = c.cseq,
            ip = std::net::Ipv4Addr::from(c.nat),
        );
    }

    fn sdp(&self, c: &Conn, server: bool) -> String {
        let (addr, port) = if server {
            (
                std::net::Ipv4Addr::from(c.server),
                20_000 + (c.call_tag % 10_000) as u16 * 2,
            )
        } else {
            (
                std::net::Ipv4Addr::from(c.client),
                50_000 + (c.call_tag % 5_000) as u16 * 2,
            )
        };
        format!(
            "v=0\r\no=- {id} 2 IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\n\
             m=audio {port} UDP/TLS/RTP/SAVPF 111 0 8 101\r\n\
             a=rtpmap:111 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n\
             a=fingerprint:sha-256 4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB:17:2D:9C:2B:4D:71:1A:6C:2D:C9:3F:EE\r\n\
             a=setup:actpass\r\na=ice-ufrag:{ufrag:08x}\r\na=ice-pwd:{pwd:024x}\r\n",
            id = c.call_tag >> 16,
            ufrag = c.call_tag as u32,
            pwd = c.call_tag as u128 * 0x9e37_79b9,
        )
    }

    fn dialog_headers(text: &mut String, c: &Conn, method_cseq: &str, with_to_tag: bool) {
        let _ = write!(
            text,
            "From: \"Queue 7\" <sip:queue7@example.net>;tag=ss{tag:x}\r\n\
             To: <sip:agent{slot}@example.net>{to_tag}\r\n\
             Call-ID: {cid:x}@softswitch.example.net\r\n\
             CSeq: {cseq} {method_cseq}\r\n",
            tag = c.call_tag >> 24,
            slot = c.slot,
            to_tag = if with_to_tag {
                format!(";tag=ag{:x}", c.call_tag & 0xffff_ffff)
            } else {
                String::new()
            },
            cid = c.call_id,
            cseq = if method_cseq == "BYE" { 2 } else { 1 },
        );
    }

    fn sip_invite(&mut self, id: usize) {
        let c = &self.conns[id];
        let host = Self::agent_host(c);
        let sdp = self.sdp(c, true);
        self.text.clear();
        let _ = write!(
            self.text,
            "INVITE sip:{host}@{host}.invalid;transport=ws SIP/2.0\r\n\
             Via: SIP/2.0/WSS {srv}:{SERVER_PORT};branch=z9hG4bK{b:x}\r\n\
             Max-Forwards: 70\r\n",
            srv = std::net::Ipv4Addr::from(c.server),
            b = c.call_id >> 8,
        );
        Self::dialog_headers(&mut self.text, c, "INVITE", false);
        let _ = write!(
            self.text,
            "Contact: <sip:softswitch@{srv}:{SERVER_PORT};transport=ws>\r\n\
             Content-Type: application/sdp\r\n\
             Content-Length: {}\r\n\r\n{sdp}",
            sdp.len(),
            srv = std::net::Ipv4Addr::from(c.server),
        );
    }

    fn sip_response(&mut self, id: usize, code: u16, reason: &str, method: &str, sdp: bool) {
        let c = &self.conns[id];
        let body = if sdp {
            self.sdp(c, false)
        } else {
            String::new()
        };
        let host = Self::agent_host(c);
        let by_client_bye = method == "BYE" && c.client_hangs_up;
        self.text.clear();
        let _ = write!(self.text, "SIP/2.0 {code} {reason}\r\n");
        if by_client_bye {
            let _ = write!(
                self.text,
                "Via: SIP/2.0/WSS {host}.invalid;branch=z9hG4bK{b:x}\r\n",
                b = c.call_id >> 12
            );
        } else {
            let _ = write!(
                self.text,
                "Via: SIP/2.0/WSS {srv}:{SERVER_PORT};branch=z9hG4bK{b:x}\r\n",
                srv = std::net::Ipv4Addr::from(c.server),
                b = c.call_id >> 8,
            );
        }
        Self::dialog_headers(&mut self.text, c, method, true);
        if code == 200 && method == "INVITE" {
            let _ = write!(
                self.text,
                "Contact: <sip:{host}@{host}.invalid;transport=ws>\r\n"
            );
        }
        if sdp {
            let _ = write!(
                self.text,
                "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        } else {
            self.text.push_str("Content-Length: 0\r\n\r\n");
        }
    }

    fn sip_ack(&mut self, id: usize) {
        let c = &self.conns[id];
        let host = Self::agent_host(c);
        self.text.clear();
        let _ = write!(
            self.text,
            "ACK sip:{host}@{host}.invalid;transport=ws SIP/2.0\r\n\
             Via: SIP/2.0/WSS {srv}:{SERVER_PORT};branch=z9hG4bK{b:x}\r\n\
             Max-Forwards: 70\r\n",
            srv = std::net::Ipv4Addr::from(c.server),
            b = c.call_id >> 4,
        );
        Self::dialog_headers(&mut self.text, c, "ACK", true);
        self.text.push_str("Content-Length: 0\r\n\r\n");
    }

    fn sip_bye(&mut self, id: usize, by_client: bool) {
        let c = &self.conns[id];
        let host = Self::agent_host(c);
        self.text.clear();
        if by_client {
            let _ = write!(
                self.text,
                "BYE sip:softswitch@{srv}:{SERVER_PORT};transport=ws SIP/2.0\r\n\
                 Via: SIP/2.0/WSS {host}.invalid;branch=z9hG4bK{b:x}\r\n\
                 Max-Forwards: 69\r\n",
                srv = std::net::Ipv4Addr::from(c.server),
                b = c.call_id >> 12,
            );
        } else {
            let _ = write!(
                self.text,
                "BYE sip:{host}@{host}.invalid;transport=ws SIP/2.0\r\n\
                 Via: SIP/2.0/WSS {srv}:{SERVER_PORT};branch=z9hG4bK{b:x}\r\n\
                 Max-Forwards: 70\r\n",
                srv = std::net::Ipv4Addr::from(c.server),
                b = c.call_id >> 8,
            );
        }
        Self::dialog_headers(&mut self.text, c, "BYE", true);
        self.text.push_str("Content-Length: 0\r\n\r\n");
    }
}

/// One WebSocket frame (FIN set) into `out` (RFC 6455 §5.2).
pub fn ws_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) {
    out.clear();
    out.push(0x80 | opcode);
    let m = if mask.is_some() { 0x80 } else { 0 };
    let n = payload.len();
    if n < 126 {
        out.push(m | n as u8);
    } else if n <= 0xffff {
        out.push(m | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(m | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
}

/// One capture of about `size` bytes with `connections` agents, written quietly: for the
/// benches, which include this file as a module.
pub fn generate(
    path: &std::path::Path,
    size: u64,
    connections: u32,
    seed: u64,
) -> std::io::Result<()> {
    let cfg = Args {
        size,
        connections,
        outputs: vec![path.to_path_buf()],
        vantages: 1,
        offset: 0.0,
        seed,
        heartbeat: 25.0,
        lifetime: 1800.0,
        loss: 0.002,
        start: 1_772_438_400,
    };
    run(cfg, true).map(|_| ())
}

/// What a generated pair of captures holds, for a test to check a diagnosis against.
pub struct PairTruth {
    /// Clock of `b` minus clock of `a`.
    pub offset_s: f64,
    /// The middlebox's idle timeout between them.
    pub idle_timeout_s: f64,
    /// Connections the middlebox reset after that timeout.
    pub resets: u64,
    /// Connections opened (or up at the start).
    pub connections: u64,
}

/// The same traffic as two captures inside (`a`) and outside (`b`) the NAT, `b`'s clock 1.75 s
/// ahead, written quietly: for the alignment bench and test.
pub fn generate_pair(
    a: &std::path::Path,
    b: &std::path::Path,
    size: u64,
    connections: u32,
    seed: u64,
) -> std::io::Result<PairTruth> {
    let cfg = Args {
        size,
        connections,
        outputs: vec![a.to_path_buf(), b.to_path_buf()],
        vantages: 2,
        offset: 1.75,
        seed,
        heartbeat: 25.0,
        lifetime: 1800.0,
        loss: 0.002,
        start: 1_772_438_400,
    };
    let offset_s = cfg.offset;
    let s = run(cfg, true)?;
    Ok(PairTruth {
        offset_s,
        idle_timeout_s: MIDDLEBOX_IDLE_S,
        resets: s.resets,
        connections: s.opened,
    })
}

fn run(cfg: Args, quiet: bool) -> std::io::Result<Stats> {
    let started = Instant::now();
    let start = cfg.start * NS;
    let size = cfg.size;
    let n = cfg.connections;
    let mut sim = Sim::new(cfg)?;
    let mut heap: BinaryHeap<Reverse<(i64, u32)>> = BinaryHeap::with_capacity(n as usize);
    for slot in 0..n {
        let c = sim.slot_conn(slot);
        sim.conns.push(c);
        let id = slot as usize;
        // Half the connections are up before the capture starts; the others connect during
        // its first minute (agents logging in).
        let at = if sim.rng.chance(0.5) {
            sim.mid_stream(id, start)
        } else {
            let at = start + sim.rng.secs(0.0, 60.0);
            sim.renew(id, at);
            at
        };
        heap.push(Reverse((at, slot)));
    }
    let mut now = start;
    while let Some(Reverse((t, slot))) = heap.pop() {
        if sim.outs[0].bytes >= size {
            break;
        }
        now = t;
        for o in sim.outs.iter_mut() {
            o.flush_until(t)?;
        }
        let next = sim.act(slot as usize, t);
        heap.push(Reverse((next.max(t), slot)));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let s = &sim.stats;
    let mut report = format!(
        "synth: {:.1} s of traffic from {} agents: {} connections ({} already up at the start), {} closed, {} reset by the middlebox, {} vanished, {} port reuses, {} calls, {} retransmissions\n",
        (now - start) as f64 / 1e9,
        n,
        s.opened,
        s.mid_stream,
        s.closes,
        s.resets,
        s.vanished,
        s.port_reuse,
        s.calls,
        s.retransmissions,
    );
    let outs = std::mem::take(&mut sim.outs);
    for (o, path) in outs.iter().zip(&sim.cfg.outputs) {
        let _ = writeln!(
            report,
            "  {}: {} packets, {:.1} MB (clock offset {:+.3} s)",
            path.display(),
            o.packets,
            o.bytes as f64 / 1e6,
            o.clock_offset as f64 / 1e9
        );
    }
    let total: u64 = outs.iter().map(|o| o.bytes).sum();
    for o in outs {
        o.finish()?;
    }
    let elapsed_all = started.elapsed().as_secs_f64();
    let _ = writeln!(
        report,
        "  generated in {elapsed:.2} s, written in {elapsed_all:.2} s ({:.0} MB/s)",
        total as f64 / 1e6 / elapsed_all
    );
    if !quiet {
        eprint!("{report}");
    }
    Ok(sim.stats)
}

fn main() {
    let cfg = match parse_args() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("synth: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(cfg, false) {
        eprintln!("synth: {e}");
        std::process::exit(1);
    }
}
