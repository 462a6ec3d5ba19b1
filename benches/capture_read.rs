//! Record reading: `CaptureReader::next_frame` over a whole synth capture (page cache warm).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use vantage::capture::CaptureReader;

mod common;

fn read_all(c: &mut Criterion) {
    let path = common::capture();
    let size = std::fs::metadata(&path).expect("capture").len();
    let mut g = c.benchmark_group("capture_read");
    g.throughput(Throughput::Bytes(size));
    g.sample_size(20);
    g.bench_function("next_frame/whole_file", |b| {
        b.iter(|| {
            let mut r = CaptureReader::open(&path).expect("open");
            let mut n = 0u64;
            let mut bytes = 0usize;
            while let Some(f) = r.next_frame().expect("read") {
                n += 1;
                bytes += f.data.len();
            }
            black_box((n, bytes))
        })
    });
    g.finish();
}

criterion_group!(benches, read_all);
criterion_main!(benches);
