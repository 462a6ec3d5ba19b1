//! WebSocket frame parsing: `app::websocket::WsParser::push` on a SIP-over-WebSocket client
//! stream (masked text frames: REGISTERs and CRLF keep-alives), fed in TCP-segment-sized pieces
//! as the reassembler hands them over, and the server stream (unmasked).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use vantage::app::websocket::{WsEvent, WsParser};
use vantage::capture::Timestamp;

mod common;

const REGISTER: &str = "REGISTER sip:example.net SIP/2.0\r\nVia: SIP/2.0/WSS a1f2c3d4.invalid;branch=z9hG4bK6a8f1e2d3c4b\r\nMax-Forwards: 69\r\nTo: <sip:agent1234@example.net>\r\nFrom: \"Agent 1234\" <sip:agent1234@example.net>;tag=8d1c2e\r\nCall-ID: 7f3a9b2c1d4e5f60\r\nCSeq: 102 REGISTER\r\nContact: <sip:a1f2c3d4@a1f2c3d4.invalid;transport=ws>;+sip.ice;reg-id=1;+sip.instance=\"<urn:uuid:7f3a9b2c1d4e5f60>\";expires=600\r\nExpires: 600\r\nAllow: INVITE,ACK,CANCEL,BYE,UPDATE,MESSAGE,OPTIONS,REFER,INFO,NOTIFY\r\nSupported: path,gruu,outbound\r\nUser-Agent: JsSIP 3.10.1\r\nContent-Length: 0\r\n\r\n";

/// Segments of one direction: 20 keep-alives for each REGISTER, one frame per segment.
fn stream(from_client: bool, messages: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(messages);
    let mut key = 0x1234_5678u32;
    for i in 0..messages {
        let body: &[u8] = if i % 21 == 0 {
            REGISTER.as_bytes()
        } else if from_client {
            b"\r\n\r\n"
        } else {
            b"\r\n"
        };
        key = key.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let mut seg = Vec::new();
        common::ws_frame(&mut seg, 0x1, body, from_client.then(|| key.to_be_bytes()));
        out.push(seg);
    }
    out
}

fn websocket(c: &mut Criterion) {
    let mut g = c.benchmark_group("websocket");
    for (name, from_client, cap) in [
        ("push/client_masked_sip_prefix", true, Some(4096)),
        ("push/client_masked_default_prefix", true, None),
        ("push/server_unmasked_sip_prefix", false, Some(4096)),
    ] {
        let segs = stream(from_client, 2_100);
        let bytes: usize = segs.iter().map(Vec::len).sum();
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_function(name, |b| {
            let mut events: Vec<WsEvent> = Vec::with_capacity(4096);
            b.iter(|| {
                let mut p = WsParser::new(from_client);
                if let Some(cap) = cap {
                    p.set_prefix_cap(cap);
                }
                events.clear();
                for (i, s) in segs.iter().enumerate() {
                    p.push(s, Timestamp(i as i64), i as u64 + 1, &mut events);
                }
                black_box((p.frames(), events.len()))
            })
        });
    }
    // A REGISTER split across two segments (the header, then the rest), as after a small MSS.
    let segs = stream(true, 2_100);
    let split: Vec<(Vec<u8>, Vec<u8>)> = segs
        .iter()
        .map(|s| {
            let at = (s.len() / 2).max(1);
            (s[..at].to_vec(), s[at..].to_vec())
        })
        .collect();
    let bytes: usize = segs.iter().map(Vec::len).sum();
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("push/client_split_segments", |b| {
        let mut events: Vec<WsEvent> = Vec::with_capacity(4096);
        b.iter(|| {
            let mut p = WsParser::new(true);
            p.set_prefix_cap(4096);
            events.clear();
            for (i, (a, z)) in split.iter().enumerate() {
                p.push(a, Timestamp(i as i64), i as u64 + 1, &mut events);
                p.push(z, Timestamp(i as i64), i as u64 + 1, &mut events);
            }
            black_box((p.frames(), events.len()))
        })
    });
    g.finish();
}

criterion_group!(benches, websocket);
criterion_main!(benches);
