//! Merge of two 100 k-entry mappings (a diff over its parent), normalise, and building a diff
//! from page sets.

mod common;

use std::hint::black_box;
use std::time::Duration;

use common::{PAGE, Rng, build, header};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use snapshot_format::{Diff, merge, normalise};

const ENTRIES: usize = 100_000;

fn merges(c: &mut Criterion) {
    let parent = header(ENTRIES, 3);
    let blocks = parent.size() / PAGE;
    // 100 k single-block dirty/empty ranges at random, spread over the image: about 100 k entries.
    let mut rng = Rng::new(5);
    let mut dirty = Vec::new();
    let mut empty = Vec::new();
    let mut b = 0;
    while b < blocks && dirty.len() + empty.len() < ENTRIES {
        let set = if rng.below(4) == 0 {
            &mut empty
        } else {
            &mut dirty
        };
        set.push(b * PAGE..(b + 1) * PAGE);
        b += 2 + rng.below(3);
    }
    let diff = Diff::from_page_sets(build(9), PAGE, parent.size(), &dirty, &empty).unwrap();
    println!(
        "parent {} entries, diff {} entries",
        parent.entries().len(),
        diff.entries().len()
    );

    let mut group = c.benchmark_group("merge_100k_over_100k");
    group.bench_function("merge", |b| {
        b.iter(|| black_box(merge(&parent, &diff).unwrap()))
    });
    let merged = merge(&parent, &diff).unwrap();
    group.bench_function("normalise", |b| b.iter(|| black_box(normalise(&merged))));
    group.bench_function("next_generation", |b| {
        b.iter(|| black_box(parent.next_generation(&diff).unwrap()))
    });
    group.bench_function("diff_from_page_sets", |b| {
        b.iter_batched(
            || (dirty.clone(), empty.clone()),
            |(d, e)| {
                black_box(Diff::from_page_sets(build(9), PAGE, parent.size(), &d, &e).unwrap())
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1)).sample_size(30);
    targets = merges
}
criterion_main!(benches);
