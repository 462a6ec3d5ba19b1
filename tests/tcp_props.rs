//! Property tests of the TCP tracker and the stream reassembler: random valid conversations
//! (handshake, data both ways in random sizes, optional retransmissions and reordering, a FIN or
//! RST end, or none), built as real Ethernet/IPv4/TCP frames with etherparse, decoded by
//! `vantage::decode` and fed to `vantage::tcp::Tracker`, whole and cut at random points.

mod common;

use etherparse::PacketBuilder;
use proptest::prelude::*;

use vantage::capture::Timestamp;
use vantage::tcp::reassembly::{Reassembler, StreamSink};
use vantage::tcp::{Connection, Proto, Tracker};

const CLIENT: [u8; 4] = [192, 0, 2, 10];
const SERVER: [u8; 4] = [198, 51, 100, 10];
const CPORT: u16 = 51_000;
const SPORT: u16 = 8080;

/// Zeek's 13 `conn_state` values.
const CONN_STATES: [&str; 13] = [
    "S0", "S1", "SF", "REJ", "S2", "S3", "RSTO", "RSTR", "RSTOS0", "RSTRH", "SH", "SHR", "OTH",
];
/// Zeek's history letters (upper case: the originator), and `^` (direction flipped).
const HISTORY_LETTERS: &str = "^SsHhAaDdFfRrCcGgTtWwIiQq";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Fin,
    RstByClient,
    RstByServer,
    None,
}

/// One conversation, as generated.
#[derive(Clone, Debug)]
struct Script {
    isn: [u32; 2],
    /// (from the client, bytes) per application message, in order.
    messages: Vec<(bool, Vec<u8>)>,
    mss: usize,
    /// Per data segment (in order of creation): resend it right away.
    retransmit: Vec<bool>,
    /// Per data segment: swap it with the next segment of the same message.
    reorder: Vec<bool>,
    /// Per message: send its segments last first (many segments wait at once).
    reverse: Vec<bool>,
    end: End,
}

/// One packet of the conversation.
#[derive(Clone, Debug)]
struct Seg {
    from_client: bool,
    seq: u32,
    ack: Option<u32>,
    syn: bool,
    fin: bool,
    rst: bool,
    payload: Vec<u8>,
    /// A copy of an earlier segment.
    copy: bool,
}

impl Seg {
    fn new(from_client: bool, seq: u32) -> Self {
        Seg {
            from_client,
            seq,
            ack: None,
            syn: false,
            fin: false,
            rst: false,
            payload: Vec::new(),
            copy: false,
        }
    }
}

/// What the script sends, as segments in capture order; and each direction's bytes.
fn segments(s: &Script) -> (Vec<Seg>, [Vec<u8>; 2]) {
    let mut out = Vec::new();
    let mut next = [s.isn[0].wrapping_add(1), s.isn[1].wrapping_add(1)];
    let mut sent: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let mut syn = Seg::new(true, s.isn[0]);
    syn.syn = true;
    out.push(syn);
    let mut synack = Seg::new(false, s.isn[1]);
    synack.syn = true;
    synack.ack = Some(next[0]);
    out.push(synack);
    let mut ack = Seg::new(true, next[0]);
    ack.ack = Some(next[1]);
    out.push(ack);
    let mut k = 0;
    for (from_client, msg) in &s.messages {
        let d = if *from_client { 0 } else { 1 };
        let mut segs = Vec::new();
        for chunk in msg.chunks(s.mss) {
            let mut g = Seg::new(*from_client, next[d]);
            g.ack = Some(next[1 - d]);
            g.payload = chunk.to_vec();
            next[d] = next[d].wrapping_add(chunk.len() as u32);
            sent[d].extend_from_slice(chunk);
            segs.push(g);
        }
        // Reordering: swap neighbours.
        let mut i = 0;
        while i + 1 < segs.len() {
            if s.reorder.get(k + i).copied().unwrap_or(false) {
                segs.swap(i, i + 1);
                i += 2;
            } else {
                i += 1;
            }
        }
        // At most 32 segments wait at once: the tracker remembers 64 out-of-order ranges per
        // direction (zeek.rs MAX_BLOCKS) and counts ranges beyond that as missed when acked.
        if segs.len() <= 32 && s.reverse.get(out.len() % 16).copied().unwrap_or(false) {
            segs.reverse();
        }
        for g in segs {
            let again = s.retransmit.get(k).copied().unwrap_or(false);
            k += 1;
            out.push(g.clone());
            if again {
                let mut c = g;
                c.copy = true;
                out.push(c);
            }
        }
        // The receiver acknowledges the whole message.
        let mut a = Seg::new(!*from_client, next[1 - d]);
        a.ack = Some(next[d]);
        out.push(a);
    }
    match s.end {
        End::Fin => {
            let mut f = Seg::new(true, next[0]);
            f.fin = true;
            f.ack = Some(next[1]);
            out.push(f);
            next[0] = next[0].wrapping_add(1);
            let mut f = Seg::new(false, next[1]);
            f.fin = true;
            f.ack = Some(next[0]);
            out.push(f);
            next[1] = next[1].wrapping_add(1);
            let mut a = Seg::new(true, next[0]);
            a.ack = Some(next[1]);
            out.push(a);
        }
        End::RstByClient | End::RstByServer => {
            let c = s.end == End::RstByClient;
            let d = if c { 0 } else { 1 };
            let mut r = Seg::new(c, next[d]);
            r.rst = true;
            out.push(r);
        }
        End::None => {}
    }
    (out, sent)
}

fn frame_bytes(g: &Seg, ip_id: u16) -> Vec<u8> {
    let (src, dst, sport, dport) = if g.from_client {
        (CLIENT, SERVER, CPORT, SPORT)
    } else {
        (SERVER, CLIENT, SPORT, CPORT)
    };
    let mut b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ip(etherparse::IpHeaders::Ipv4(
            {
                let mut h = etherparse::Ipv4Header::new(0, 64, etherparse::IpNumber::TCP, src, dst)
                    .unwrap();
                h.identification = ip_id;
                h
            },
            Default::default(),
        ))
        .tcp(sport, dport, g.seq, 64_000);
    if g.syn {
        b = b.syn();
    }
    if g.fin {
        b = b.fin();
    }
    if g.rst {
        b = b.rst();
    }
    if let Some(a) = g.ack {
        b = b.ack(a);
    }
    if !g.payload.is_empty() {
        b = b.psh();
    }
    let mut out = Vec::with_capacity(b.size(g.payload.len()));
    b.write(&mut out, &g.payload).unwrap();
    out
}

/// Feeds the first `n` segments to a fresh tracker, 1 ms apart.
fn track(segs: &[Seg], n: usize) -> Vec<Connection> {
    let mut t = Tracker::new("props");
    for (i, g) in segs[..n].iter().enumerate() {
        feed(
            &mut t,
            g,
            i,
            1_700_000_000_000_000_000 + i as i64 * 1_000_000,
        );
    }
    t.finish().into_iter().map(|c| *c).collect()
}

/// Hands segment `g` to the tracker as frame `i + 1`, at `ts` (ns).
fn feed(t: &mut Tracker, g: &Seg, i: usize, ts: i64) {
    common::track_frame(t, i as u64 + 1, ts, &frame_bytes(g, i as u16));
}

/// ISNs anywhere, often just below the 2^32 wrap.
fn any_isn() -> BoxedStrategy<u32> {
    prop_oneof![any::<u32>(), (0u32..4096).prop_map(|x| u32::MAX - x)].boxed()
}

/// ISNs far enough from the wrap that no conversation crosses it.
fn isn_no_wrap() -> BoxedStrategy<u32> {
    (0u32..u32::MAX - 100_000).boxed()
}

/// ISNs just below the wrap: the conversation crosses it.
fn isn_wrap() -> BoxedStrategy<u32> {
    (0u32..4096).prop_map(|x| u32::MAX - x).boxed()
}

fn script() -> impl Strategy<Value = Script> {
    script_with(any_isn())
}

fn script_with(isn: BoxedStrategy<u32>) -> impl Strategy<Value = Script> {
    (
        isn.clone(),
        isn,
        prop::collection::vec(
            (any::<bool>(), prop::collection::vec(any::<u8>(), 1..3000)),
            0..8,
        ),
        prop_oneof![Just(1460usize), 1usize..600],
        prop::collection::vec(prop::bool::weighted(0.15), 64),
        prop::collection::vec(prop::bool::weighted(0.15), 64),
        prop::collection::vec(prop::bool::weighted(0.2), 16),
        prop_oneof![
            Just(End::Fin),
            Just(End::RstByClient),
            Just(End::RstByServer),
            Just(End::None)
        ],
    )
        .prop_map(
            |(a, b, messages, mss, retransmit, reorder, reverse, end)| Script {
                isn: [a, b],
                messages,
                mss,
                retransmit,
                reorder,
                reverse,
                end,
            },
        )
}

fn tcp_conns(conns: &[Connection]) -> Vec<&Connection> {
    conns.iter().filter(|c| c.proto == Proto::Tcp).collect()
}

fn check_sane(c: &Connection) {
    let st = c.conn_state.expect("a TCP connection has a conn_state");
    assert!(CONN_STATES.contains(&st), "conn_state {st}");
    let h = c.history.as_deref().unwrap_or("");
    assert!(
        h.chars().all(|ch| HISTORY_LETTERS.contains(ch)),
        "history {h:?}"
    );
}

struct Collect {
    bytes: Vec<u8>,
    gaps: u64,
}

impl StreamSink for Collect {
    fn data(&mut self, bytes: &[u8], _ts: Timestamp, _frame: u64) {
        self.bytes.extend_from_slice(bytes);
    }
    fn gap(&mut self, _missing: u64) {
        self.gaps += 1;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The whole conversation: one connection, every packet counted once, every byte counted
    /// once (copies do not inflate `orig_bytes`), and the state Zeek would give it.
    #[test]
    fn whole_conversation(s in script()) {
        let (segs, sent) = segments(&s);
        let conns = track(&segs, segs.len());
        let tcp = tcp_conns(&conns);
        prop_assert_eq!(tcp.len(), 1);
        let c = tcp[0];
        check_sane(c);
        prop_assert_eq!(c.orig_p, CPORT, "the SYN's sender is the originator");
        prop_assert_eq!(c.orig.pkts + c.resp.pkts, segs.len() as u64);
        prop_assert_eq!(c.orig.bytes, sent[0].len() as u64, "orig_bytes");
        prop_assert_eq!(c.resp.bytes, sent[1].len() as u64, "resp_bytes");
        let copies = |client: bool| -> u64 {
            segs.iter().filter(|g| g.copy && g.from_client == client)
                .map(|g| g.payload.len() as u64).sum()
        };
        prop_assert_eq!(c.orig.payload_bytes_sent, sent[0].len() as u64 + copies(true));
        prop_assert_eq!(c.resp.payload_bytes_sent, sent[1].len() as u64 + copies(false));
        prop_assert_eq!(c.missed_bytes, 0);
        let want = match s.end {
            End::Fin => "SF",
            End::RstByClient => "RSTO",
            End::RstByServer => "RSTR",
            End::None => "S1",
        };
        prop_assert_eq!(c.conn_state, Some(want), "history {:?}", c.history);
    }

    /// Cut anywhere: never more than the whole feed, never more than was sent before the cut,
    /// and the history of the cut feed is a prefix of the whole one's.
    #[test]
    fn cut_feed_never_exceeds_the_whole(s in script(), cut in any::<prop::sample::Index>()) {
        let (segs, _) = segments(&s);
        let n = cut.index(segs.len() + 1);
        let full = track(&segs, segs.len());
        let part = track(&segs, n);
        let full = tcp_conns(&full)[0];
        let part = tcp_conns(&part);
        if n == 0 {
            prop_assert!(part.is_empty());
            return Ok(());
        }
        prop_assert_eq!(part.len(), 1);
        let part = part[0];
        check_sane(part);
        prop_assert_eq!(part.orig.pkts + part.resp.pkts, n as u64);
        prop_assert!(part.orig.bytes <= full.orig.bytes);
        prop_assert!(part.resp.bytes <= full.resp.bytes);
        // Zeek counts bytes by sequence span (a segment seen after a hole counts the hole too,
        // and `missed_bytes` says so): never past the highest byte seen before the cut.
        let span_before = |client: bool| -> u64 {
            let d = if client { 0 } else { 1 };
            segs[..n].iter().filter(|g| g.from_client == client && !g.payload.is_empty())
                .map(|g| g.seq.wrapping_add(g.payload.len() as u32).wrapping_sub(s.isn[d]).wrapping_sub(1) as u64)
                .max().unwrap_or(0)
        };
        prop_assert!(part.orig.bytes <= span_before(true), "{} > {}", part.orig.bytes, span_before(true));
        prop_assert!(part.resp.bytes <= span_before(false), "{} > {}", part.resp.bytes, span_before(false));
        let (hp, hf) = (part.history.as_deref().unwrap_or_default(), full.history.as_deref().unwrap_or_default());
        prop_assert!(hf.starts_with(hp), "history {hp:?} then {hf:?}");
    }

    /// The reassembled stream of each direction is exactly the bytes sent, whatever the
    /// retransmissions and reordering, with no hole declared.
    #[test]
    fn reassembly_gives_back_the_sent_bytes(s in script_with(isn_no_wrap())) {
        check_reassembly(&s)?;
    }

    /// The same across the 2^32 sequence wrap. Known bug: `Reassembler::drain` takes the
    /// waiting segment with the lowest raw `u32` key (BTreeMap order), not the lowest in
    /// sequence space, so with two segments waiting on both sides of the wrap it stalls and
    /// `flush` declares a false hole (src/tcp/reassembly.rs). Un-ignore once fixed.
    #[test]
    fn reassembly_across_the_seq_wrap(s in script_with(isn_wrap())) {
        check_reassembly(&s)?;
    }
}

fn check_reassembly(s: &Script) -> Result<(), TestCaseError> {
    {
        let (segs, sent) = segments(s);
        for (d, client) in [(0usize, true), (1, false)] {
            let mut r = Reassembler::new(1 << 20);
            let mut sink = Collect {
                bytes: Vec::new(),
                gaps: 0,
            };
            r.syn(s.isn[d]);
            for (i, g) in segs.iter().enumerate() {
                if g.from_client == client && !g.payload.is_empty() {
                    r.segment(
                        g.seq,
                        &g.payload,
                        g.payload.len() as u32,
                        Timestamp(i as i64),
                        i as u64,
                        &mut sink,
                    );
                }
            }
            r.flush(&mut sink);
            prop_assert_eq!(sink.gaps, 0, "direction {}", d);
            prop_assert!(
                sink.bytes == sent[d],
                "direction {}: {} bytes back, {} sent",
                d,
                sink.bytes.len(),
                sent[d].len()
            );
            prop_assert_eq!(r.missed_bytes, 0);
        }
    }
    Ok(())
}

/// The smallest case of the wrap bug above, kept as a plain test.
#[test]
fn reassembly_two_waiting_segments_across_the_wrap() {
    let mut r = Reassembler::new(1 << 20);
    let mut sink = Collect {
        bytes: Vec::new(),
        gaps: 0,
    };
    let isn = u32::MAX - 20;
    r.syn(isn);
    // Bytes 1..=30 of the stream in three segments of 10, sent last first; the third starts
    // past the wrap.
    let first = isn.wrapping_add(1);
    let data: Vec<u8> = (0..30).collect();
    for k in [2u32, 1, 0] {
        let seq = first.wrapping_add(10 * k);
        let p = &data[(10 * k) as usize..(10 * k + 10) as usize];
        r.segment(seq, p, 10, Timestamp(0), u64::from(k), &mut sink);
    }
    r.flush(&mut sink);
    assert_eq!(sink.gaps, 0);
    assert_eq!(sink.bytes, data);
}

/// A connection's silences and `max_idle` against a model: every gap between two packets,
/// by the side that broke it; `max_idle` the first longest of all, `silences` the longest of
/// those at least `MIN_SILENCE_S` long (at most `TOP_GAPS`, longest first, ties in time
/// order). The tracker keeps them as it goes, each side in a bit of its own.
fn silences_match_model(gaps_ms: &[(u32, bool)]) -> Result<(), TestCaseError> {
    use vantage::tcp::{Side, MIN_SILENCE_S, TOP_GAPS};
    let mut t = Tracker::new("silences");
    let mut ts = 1_700_000_000_000_000_000i64;
    // (ns, by, from_frame, to_frame, from_ts) of every gap.
    let mut model: Vec<(i64, Side, u64, u64, i64)> = Vec::new();
    // Mid-stream: ACKs both ways on one 4-tuple, the client first.
    let sides = std::iter::once(true).chain(gaps_ms.iter().map(|g| g.1));
    let steps = std::iter::once(0).chain(gaps_ms.iter().map(|g| g.0));
    for (i, (from_client, step)) in sides.zip(steps).enumerate() {
        let prev = ts;
        ts += i64::from(step) * 1_000_000;
        let mut g = Seg::new(from_client, 1000 + i as u32);
        g.ack = Some(5000);
        let number = i as u64 + 1;
        if i > 0 && ts > prev {
            let by = if from_client { Side::Orig } else { Side::Resp };
            model.push((ts - prev, by, number - 1, number, prev));
        }
        feed(&mut t, &g, i, ts);
    }
    let conns = t.finish();
    prop_assert_eq!(conns.len(), 1);
    let c = &conns[0];
    let as_tuple = |g: &vantage::tcp::Gap| (g.secs, g.by, g.from_frame, g.to_frame, g.from_ts.0);
    let secs = |ns: i64| ns as f64 / 1e9;
    let mut first_longest: Option<&(i64, Side, u64, u64, i64)> = None;
    for g in &model {
        if first_longest.is_none_or(|m| g.0 > m.0) {
            first_longest = Some(g);
        }
    }
    prop_assert_eq!(
        c.max_idle.as_ref().map(as_tuple),
        first_longest.map(|g| (secs(g.0), g.1, g.2, g.3, g.4))
    );
    let mut long: Vec<_> = model
        .iter()
        .filter(|g| secs(g.0) >= MIN_SILENCE_S)
        .collect();
    long.sort_by_key(|g| std::cmp::Reverse(g.0)); // stable: ties stay in time order
    long.truncate(TOP_GAPS);
    let want: Vec<_> = long
        .iter()
        .map(|g| (secs(g.0), g.1, g.2, g.3, g.4))
        .collect();
    let got: Vec<_> = c.silences.iter().map(as_tuple).collect();
    prop_assert_eq!(got, want);
    Ok(())
}

proptest! {
    #[test]
    fn silences_and_max_idle_follow_the_model(
        gaps in prop::collection::vec(
            (prop_oneof![0u32..400, 400u32..3000, Just(2000u32), 3000u32..60_000], any::<bool>()),
            0..40,
        )
    ) {
        silences_match_model(&gaps)?;
    }
}

/// An endpoint drawn from a few addresses of each family and a few ports, so that equal
/// addresses (the port decides) and equal ends come up often.
fn endpoint() -> impl Strategy<Value = (std::net::IpAddr, u16)> {
    let v4 = (0u8..3, 0u8..3).prop_map(|(a, b)| std::net::IpAddr::from([10, a, 255, b]));
    let v6 = (0u16..3).prop_map(|a| std::net::IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, a, 1]));
    let port = prop_oneof![Just(0u16), Just(80), Just(8080), Just(65535), any::<u16>()];
    (prop_oneof![3 => v4, 1 => v6], port)
}

proptest! {
    /// `conversation` puts the lower end first as the tuples' own order does, whichever
    /// family (its IPv4 ends are compared as one integer).
    #[test]
    fn conversation_orders_ends_as_tuples_do(a in endpoint(), b in endpoint()) {
        let (lo, hi) = vantage::tcp::conversation(a, b);
        prop_assert_eq!((lo, hi), if a <= b { (a, b) } else { (b, a) });
        prop_assert_eq!(vantage::tcp::conversation(b, a), (lo, hi));
    }
}
