//! Decoding: `decode::decode_link` over every frame of a synth capture (frames in memory), and
//! over single typical frames.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use vantage::decode::{decode_link, Decoded};

mod common;

fn decode(c: &mut Criterion) {
    let (frames, _) = common::frames();
    let bytes: u64 = frames.iter().map(|f| f.data.len() as u64).sum();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(frames.len() as u64));
    g.sample_size(30);
    g.bench_function("decode_link/all_frames", |b| {
        b.iter(|| {
            let mut tcp = 0u64;
            for f in &frames {
                if let Decoded::Ip(p) = decode_link(f.link, &f.data) {
                    tcp += p.ip_len as u64;
                }
            }
            black_box(tcp)
        })
    });
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("decode_link/all_frames_bytes", |b| {
        b.iter(|| {
            for f in &frames {
                black_box(decode_link(f.link, &f.data));
            }
        })
    });
    g.finish();

    // Single frames: the smallest (a pure ACK or keep-alive) and the largest (an INVITE).
    let small = frames.iter().min_by_key(|f| f.data.len()).expect("frames");
    let large = frames.iter().max_by_key(|f| f.data.len()).expect("frames");
    let mut g = c.benchmark_group("decode_one");
    g.throughput(Throughput::Elements(1));
    g.bench_function(format!("smallest_{}B", small.data.len()), |b| {
        b.iter(|| black_box(decode_link(small.link, black_box(&small.data))))
    });
    g.bench_function(format!("largest_{}B", large.data.len()), |b| {
        b.iter(|| black_box(decode_link(large.link, black_box(&large.data))))
    });
    g.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
