//! Lookup over 1 M entries (target < 50 ns), against a linear scan; and the source's `chunk`.

mod common;

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use common::{PAGE, build, header, offsets};
use criterion::{Criterion, criterion_group, criterion_main};
use snapshot_format::{Header, LayeredSource, Mapping, Metadata};

const ENTRIES: usize = 1 << 20;

fn lookup(c: &mut Criterion) {
    let h = header(ENTRIES, 7);
    let probes = offsets(&h, 1 << 16, 11);
    let mut group = c.benchmark_group("lookup_1M_entries");

    let mut i = 0usize;
    group.bench_function("indexed_random", |b| {
        b.iter(|| {
            i = (i + 1) & (probes.len() - 1);
            black_box(h.lookup(black_box(probes[i])))
        })
    });

    let mut offset = 0u64;
    group.bench_function("indexed_sequential_pages", |b| {
        b.iter(|| {
            offset = (offset + PAGE) % h.size();
            black_box(h.lookup(black_box(offset)))
        })
    });

    // Random offsets inside a hot 64 MiB window (a guest's working set): index and entries stay
    // in cache, as they do for faults with locality.
    let hot: Vec<u64> = probes.iter().map(|p| p % (64 << 20)).collect();
    let mut k = 0usize;
    group.bench_function("indexed_random_in_hot_64MiB", |b| {
        b.iter(|| {
            k = (k + 1) & (hot.len() - 1);
            black_box(h.lookup(black_box(hot[k])))
        })
    });

    // Baseline: a plain binary search over the sorted entries, no bucket index (~20 probes,
    // most of them cache and TLB misses at this size).
    let mut n = 0usize;
    group.bench_function("plain_binary_search_random", |b| {
        b.iter(|| {
            n = (n + 1) & (probes.len() - 1);
            let o = black_box(probes[n]);
            let i = h.entries().partition_point(|e| e.offset <= o) - 1;
            black_box(h.entries()[i].storage_offset)
        })
    });

    // The naive baseline: scan from the front (what a list without an index costs).
    let entries = h.entries();
    let mut j = 0usize;
    group.sample_size(10);
    group.bench_function("linear_scan_random", |b| {
        b.iter(|| {
            j = (j + 1) & (probes.len() - 1);
            let o = black_box(probes[j]);
            black_box(
                entries
                    .iter()
                    .find(|e| e.offset <= o && o < e.offset + e.length),
            )
        })
    });
    group.finish();
}

fn source_chunk(c: &mut Criterion) {
    // 1 M entries alternating data and zero; data entries all alias the first 1 MiB of one file,
    // so the file stays small while the header is large.
    let dir = std::env::temp_dir().join(format!("snapshot-format-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("data");
    std::fs::write(&path, vec![0x5a; 1 << 20]).unwrap();
    let entries = (0..ENTRIES as u64)
        .map(|i| {
            if i % 2 == 0 {
                Mapping::data(i * PAGE, PAGE, build(1), (i % 256) * PAGE)
            } else {
                Mapping::zero(i * PAGE, PAGE)
            }
        })
        .collect();
    let meta = Metadata::generation_zero(build(1), PAGE, ENTRIES as u64 * PAGE);
    let h = Header::new(meta, entries).unwrap();
    let probes = offsets(&h, 1 << 16, 13);
    let source = LayeredSource::open(h, &HashMap::from([(build(1), path)])).unwrap();
    let mut i = 0usize;
    c.bench_function("source_chunk_1M_entries_random_page", |b| {
        b.iter(|| {
            i = (i + 1) & (probes.len() - 1);
            let page = probes[i] & !(PAGE - 1);
            black_box(source.chunk(black_box(page), PAGE).map(|c| c.len()))
        })
    });
    drop(source);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = lookup, source_chunk
}
criterion_main!(benches);
