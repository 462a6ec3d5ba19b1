//! Connection lookup and tracking: `tcp::Tracker::packet` over every packet of a synth capture
//! (decoded beforehand), with the application layer (the default) and without it, plus
//! `finish`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;
use vantage::decode::{decode_link, Decoded, Packet};
use vantage::tcp::{Tracker, TrackerOptions};

mod common;

fn tracker(c: &mut Criterion) {
    let (frames, _) = common::frames();
    let decoded: Vec<(vantage::capture::Frame<'_>, Packet<'_>)> = frames
        .iter()
        .filter_map(|f| match decode_link(f.link, &f.data) {
            Decoded::Ip(p) => Some((f.frame(), p)),
            _ => None,
        })
        .collect();
    let mut g = c.benchmark_group("tracker");
    g.throughput(Throughput::Elements(decoded.len() as u64));
    g.sample_size(10);
    for (name, app) in [("packet/app", true), ("packet/no_app", false)] {
        let opts = TrackerOptions {
            app,
            ..TrackerOptions::default()
        };
        g.bench_function(name, |b| {
            b.iter_batched(
                || Tracker::with_options("bench.pcap", opts),
                |mut t| {
                    for (f, p) in &decoded {
                        t.packet(f, p);
                    }
                    // Dropped outside the timing.
                    t
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.bench_function("packet+finish/app", |b| {
        b.iter(|| {
            let mut t = Tracker::new("bench.pcap");
            for (f, p) in &decoded {
                t.packet(f, p);
            }
            black_box(t.finish().len())
        })
    });
    g.finish();
}

criterion_group!(benches, tracker);
criterion_main!(benches);
