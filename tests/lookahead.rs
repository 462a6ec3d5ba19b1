//! Once connections are many, the reader holds a few frames back while the CPU fetches their
//! connections' state into the cache (`pipeline::Lookahead`, from
//! `TrackerOptions::prefetch_from` live connections). Held back or not, every capture under
//! `fixtures/` gives the same connections, summary and warnings, kept or streamed, on one
//! thread and on several. The fixtures are small, so the threshold is forced to 0 (every frame
//! held back) against `usize::MAX` (none).

mod common;

use vantage::pipeline::{stream_capture, track_capture_with};
use vantage::report::flow_json_line;
use vantage::tcp::TrackerOptions;

fn options(prefetch_from: usize, shards: usize) -> TrackerOptions {
    TrackerOptions {
        prefetch_from,
        shards,
        ..TrackerOptions::default()
    }
}

/// Every connection as `flows --format json` prints it, the capture's summary and its error.
fn kept(path: &std::path::Path, opts: TrackerOptions) -> (Vec<String>, String, Option<String>) {
    let flows = track_capture_with(path, opts).expect("opens");
    (
        flows
            .connections
            .iter()
            .map(|c| flow_json_line(c))
            .collect(),
        serde_json::to_string(&flows.summary).expect("serializable"),
        flows.error.map(|e| format!("{e:#}")),
    )
}

/// Every connection in the order it was handed over, with the capture time it was.
fn streamed(path: &std::path::Path, opts: TrackerOptions) -> (Vec<String>, String) {
    let mut out = Vec::new();
    let run = stream_capture(path, opts, None, |ts, c| {
        out.push(format!("{} {}", ts.0, flow_json_line(&c)))
    })
    .expect("opens");
    (
        out,
        serde_json::to_string(&run.summary).expect("serializable"),
    )
}

#[test]
fn holding_frames_back_changes_nothing() {
    let mut connections = 0;
    for path in common::fixture_captures() {
        // Five: another shard's frames come in runs longer than the lookahead's ring holds
        // (`pipeline::RING`), which must then be swept at in turn.
        for shards in [1, 2, 5] {
            let what = format!("{} ({shards} threads)", path.display());
            let direct = kept(&path, options(usize::MAX, shards));
            let held = kept(&path, options(0, shards));
            assert_eq!(direct, held, "{what}");
            connections += held.0.len();
            assert_eq!(
                streamed(&path, options(usize::MAX, shards)),
                streamed(&path, options(0, shards)),
                "{what}, streamed"
            );
        }
    }
    // The comparison had something to compare.
    assert!(connections > 400, "{connections}");
}

/// A capture cut short mid-record, and one whose record in the middle lies about its length:
/// the frames held back when reading stops are tracked all the same, and the warning and
/// the error are the same.
#[test]
fn frames_held_back_when_reading_stops_are_tracked() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("lookahead");
    std::fs::create_dir_all(&dir).unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/corpus/zeek/testing/btest/Traces/http/docker-http-upgrade.pcap");
    let bytes = std::fs::read(&src).unwrap();
    let records = common::pcap_records(&bytes);
    assert!(records.len() > 20, "{}", records.len());
    // A record's 16-byte header holds its captured length at 8.
    let mut lying = bytes.clone();
    let mid = records[records.len() / 2].0;
    lying[mid + 8..mid + 12].copy_from_slice(&0x00ff_ffffu32.to_le_bytes());
    for (name, b) in [
        ("cut.pcap", bytes[..bytes.len() - 7].to_vec()),
        ("lying.pcap", lying),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, b).unwrap();
        let direct = kept(&path, options(usize::MAX, 1));
        let held = kept(&path, options(0, 1));
        assert!(!direct.0.is_empty(), "{name}");
        assert_eq!(direct, held, "{name}");
        assert!(
            direct.1.contains("cut short") || direct.2.is_some(),
            "{name}: {} {:?}",
            direct.1,
            direct.2
        );
        assert_eq!(
            streamed(&path, options(usize::MAX, 1)),
            streamed(&path, options(0, 1)),
            "{name}, streamed"
        );
    }
}

/// What the lookahead reads of a frame it holds back, before decoding it: the ends of an
/// Ethernet/IPv4/TCP segment (`decode::peek_ends`), looked up as the decoded packet is
/// (`ConnKey`). On every frame of every fixture: where it reads ends, the decode is that TCP
/// segment, with those ends and the same key; a segment whose header the decode refuses
/// (data offset under 5 words, or past the packet) has none.
#[test]
fn a_frame_peeked_is_the_segment_it_decodes_to() {
    use vantage::capture::{CaptureReader, LinkType};
    use vantage::decode::{decode_link, peek_ends, Decoded, Fragment, Transport};
    use vantage::tcp::ConnKey;

    let (mut frames, mut peeked) = (0, 0);
    for path in common::fixture_captures() {
        let Ok(mut reader) = CaptureReader::open(&path) else {
            continue;
        };
        while let Ok(Some(f)) = reader.next_frame() {
            frames += 1;
            let Some(ends) = peek_ends(f.link, f.data) else {
                continue;
            };
            peeked += 1;
            let what = format!("{} frame {}", path.display(), f.number);
            let Decoded::Ip(p) = decode_link(f.link, f.data) else {
                panic!("{what}: not IP");
            };
            let Transport::Tcp(t) = p.transport else {
                panic!("{what}: not TCP");
            };
            assert_eq!(
                (p.src, t.src_port, p.dst, t.dst_port),
                (ends.src.0.into(), ends.src.1, ends.dst.0.into(), ends.dst.1),
                "{what}"
            );
            assert_eq!((p.vlan, p.fragment), ([0, 0], Fragment::No), "{what}");
            assert_eq!(
                ConnKey::of_packet(&p),
                Some(ConnKey::of_ends(ends)),
                "{what}"
            );
        }
    }
    // The comparison had something to compare (1 903 of the 7 930 frames: the rest are
    // other link types, IPv6, UDP, VLANs, fragments, or cut by the snaplen).
    assert!(peeked > 1_000 && frames > peeked, "{peeked} of {frames}");

    let segment = |data_offset: u8, len: usize| {
        let mut v = Vec::new();
        etherparse::PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([192, 0, 2, 1], [192, 0, 2, 2], 64)
            .tcp(40000, 443, 1, 1000)
            .write(&mut v, &vec![b'x'; len])
            .unwrap();
        v[14 + 20 + 12] = (data_offset << 4) | (v[14 + 20 + 12] & 0x0f);
        v
    };
    assert!(peek_ends(LinkType::ETHERNET, &segment(5, 10)).is_some());
    for (offset, len) in [(4, 10), (0, 10), (15, 39), (6, 3)] {
        let v = segment(offset, len);
        assert_eq!(peek_ends(LinkType::ETHERNET, &v), None, "offset {offset}");
        assert!(
            !matches!(
                decode_link(LinkType::ETHERNET, &v),
                Decoded::Ip(p) if matches!(p.transport, Transport::Tcp(_))
            ),
            "offset {offset}"
        );
    }
    // The same frame on another link type is not peeked.
    assert_eq!(peek_ends(LinkType(101), &segment(5, 10)[14..]), None);
}

/// The lookahead hands the tracker the slot it found a held segment's connection in
/// (`tcp::Seen`); frames tracked meanwhile may end that connection and give its slot to
/// another. Built: X reset, swept out 10 s later as Y's SYN takes its slot, then a late
/// segment of X with X's old slot. It starts a connection of X's again; Y is left as it was.
#[test]
fn a_slot_given_to_another_connection_is_not_the_held_segments() {
    use common::{track_frame, P};
    use vantage::capture::LinkType;
    use vantage::decode::{decode, peek_ends, Decoded};
    use vantage::tcp::{ConnKey, Seen, Tracker};

    let base = 1_700_000_000_000_000_000i64;
    let x = P::new([10, 0, 0, 1], 40000, [10, 0, 0, 2], 443);
    let y = P::new([10, 0, 0, 3], 40001, [10, 0, 0, 2], 443);
    let key = |p: P| ConnKey::of_ends(peek_ends(LinkType::ETHERNET, &p.bytes()).expect("TCP"));
    let mut t = Tracker::new("built.pcap");
    track_frame(&mut t, 1, base, &x.seq(100).syn().bytes());
    let x_slot = t.prefetch_key(&key(x)).expect("X is live");
    track_frame(&mut t, 2, base + 1_000_000_000, &x.seq(101).rst().bytes());
    track_frame(&mut t, 3, base + 11_000_000_000, &y.seq(500).syn().bytes());
    assert_eq!(t.prefetch_key(&key(x)), None, "X swept out");
    assert_eq!(t.prefetch_key(&key(y)), Some(x_slot), "Y in X's slot");

    let late = x.seq(101).ack(7).len(10).bytes();
    let frame = common::frame(4, base + 11_500_000_000, &late);
    let Decoded::Ip(pkt) = decode(&frame) else {
        panic!("decodes")
    };
    t.sweep(&frame);
    let seen = Seen {
        key: key(x),
        slot: Some(x_slot),
    };
    t.packet_seen(&frame, &pkt, Some(seen));
    let mut conns = t.finish();
    conns.sort_by_key(|c| c.first_frame);
    let frames: Vec<_> = conns
        .iter()
        .map(|c| {
            (
                c.orig_p,
                c.first_frame,
                c.last_frame,
                c.orig.pkts + c.resp.pkts,
            )
        })
        .collect();
    assert_eq!(
        frames,
        [(40000, 1, 2, 2), (40001, 3, 3, 1), (40000, 4, 4, 1)],
        "{conns:#?}"
    );
}
