//! Lining up two captures of the same traffic (`align::align`): the candidates found through
//! the ISN, tuple and payload indexes, their comparison, and the clock offset. The captures are
//! tracked once, outside the timing; each iteration aligns a clone of their connections.
//!
//! Two captures' diagnosis took 8x one capture's until the comparison stopped hashing every
//! sample of both connections for each candidate pair (benches/RESULTS.md, session 5).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;
use vantage::align::{align, AlignOptions, Vantage};
use vantage::pipeline::{read_vantages_with, CaptureFlows, VantageSpec};
use vantage::tcp::TrackerOptions;

mod common;

fn bench_align(c: &mut Criterion) {
    let (a, b) = common::capture_pair();
    let specs = [
        VantageSpec {
            name: "a".into(),
            path: a,
        },
        VantageSpec {
            name: "b".into(),
            path: b,
        },
    ];
    let opts = TrackerOptions {
        keep_samples: true,
        ..TrackerOptions::default()
    };
    let (vantages, errors) = read_vantages_with(&specs, opts);
    assert!(errors.is_empty(), "{errors:?}");
    let connections: usize = vantages.iter().map(|v| v.flows.connections.len()).sum();
    let mut g = c.benchmark_group("align");
    g.throughput(Throughput::Elements(connections as u64));
    g.sample_size(10);
    g.bench_function("two_captures_nat", |bench| {
        bench.iter_batched(
            || {
                vantages
                    .iter()
                    .map(|v| Vantage {
                        name: v.name.clone(),
                        flows: CaptureFlows {
                            summary: v.flows.summary.clone(),
                            connections: v.flows.connections.clone(),
                            digests: v.flows.digests.clone(),
                            error: None,
                            views: Vec::new(),
                            tracked_on_threads: v.flows.tracked_on_threads,
                        },
                    })
                    .collect::<Vec<_>>()
            },
            |v| {
                let al = align(
                    v,
                    &AlignOptions {
                        reference: 0,
                        offsets: Vec::new(),
                        threads: 2,
                    },
                );
                black_box(al.connections.len())
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench_align);
criterion_main!(benches);
