//! The targets, each next to the baselines doing the same operation:
//! - state of one page (target <= 2 ns);
//! - claim + install on an uncontended page (target <= 20 ns);
//! - remove over 1 GiB of 4 KiB pages (target within 2x of memset over the same state bytes);
//! - export of the dirty set over 16 Mi pages, 1% dirty in runs (target < 5 ms).
//!
//! Baselines: a `Mutex<Vec<u8>>` (one byte per page) and an `RwLock<BTreeMap>` range map. Figures
//! and their discussion: `docs/benchmarks/page-tracker.md`.

mod baselines;

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use baselines::{BTreeTracker, CLEAN, DIRTY, MutexTracker, REMOVED};
use criterion::measurement::WallTime;
use criterion::{
    BatchSize, BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main,
};
use page_tracker::{Access, Geometry, PageRange, PageSize, PageTracker, StateSet};

/// A 64 GiB guest of 4 KiB pages.
const PAGES_64G: u64 = 16 << 20;
/// 1 GiB of 4 KiB pages.
const PAGES_1G: u64 = 1 << 18;

fn tracker(pages: u64) -> PageTracker {
    PageTracker::new(Geometry::with_pages(0, pages, PageSize::SIZE_4K).unwrap()).unwrap()
}

/// Dirty runs of 1..=64 pages separated by gaps of 1..=6272 pages: ~1% dirty.
fn dirty_runs(pages: u64) -> Vec<PageRange> {
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let mut runs = Vec::new();
    let mut page = next(6272);
    while page < pages {
        let end = (page + 1 + next(64)).min(pages);
        runs.push(PageRange::new(page, end).unwrap());
        page = end + 1 + next(6272);
    }
    runs
}

fn fill_dirty(t: &PageTracker, runs: &[PageRange]) {
    for &run in runs {
        for page in run {
            let claim = t.try_claim(page).unwrap().unwrap();
            claim.install_source(Access::Write);
        }
    }
}

fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    g
}

fn state_of_one_page(c: &mut Criterion) {
    let runs = dirty_runs(PAGES_64G);
    let t = tracker(PAGES_64G);
    fill_dirty(&t, &runs);
    let m = MutexTracker::new(PAGES_64G as usize);
    let b = BTreeTracker::new();
    for run in &runs {
        m.set(run.start() as usize..run.end() as usize, DIRTY);
        b.set(run.start()..run.end(), DIRTY);
    }
    let mut g = group(c, "state_of_one_page");
    // 64 reads per iteration, walking the pages in order: the cost of the read itself, not of
    // a cache miss or of the bench loop.
    const BLOCK: u64 = 64;
    g.throughput(Throughput::Elements(BLOCK));
    let mut start = 0;
    let mut next_block = move || {
        start = (start + BLOCK) & (PAGES_64G - 1);
        black_box(start)..start + BLOCK
    };
    g.bench_function("tracker", |bench| {
        bench.iter(|| {
            for page in next_block() {
                black_box(t.state(page).unwrap());
            }
        })
    });
    g.bench_function("mutex_vec", |bench| {
        bench.iter(|| {
            for page in next_block() {
                black_box(m.state(page as usize));
            }
        })
    });
    g.bench_function("rwlock_btreemap", |bench| {
        bench.iter(|| {
            for page in next_block() {
                black_box(b.state(page));
            }
        })
    });
    g.finish();
}

/// Times `op(tracker, page)` over every page of fresh trackers of at most 1 Mi pages.
fn per_fresh_page<T>(iters: u64, new: impl Fn(u64) -> T, op: impl Fn(&T, u64)) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(1 << 20);
        let t = new(n);
        let start = Instant::now();
        for page in 0..n {
            op(&t, page);
        }
        total += start.elapsed();
        left -= n;
    }
    total
}

fn claim_and_install(c: &mut Criterion) {
    let mut g = group(c, "claim_install_uncontended");
    g.throughput(Throughput::Elements(1));
    g.bench_function("tracker", |bench| {
        bench.iter_custom(|iters| {
            per_fresh_page(iters, tracker, |t, page| {
                let claim = t.try_claim(page).unwrap().unwrap();
                black_box(claim.install_source(Access::Read));
                // Dropping the claim releases it.
            })
        })
    });
    g.bench_function("mutex_vec", |bench| {
        bench.iter_custom(|iters| {
            per_fresh_page(
                iters,
                |n| MutexTracker::new(n as usize),
                |t, page| {
                    assert!(t.try_claim(page as usize));
                    black_box(t.install_source_and_release(page as usize, CLEAN));
                },
            )
        })
    });
    g.bench_function("rwlock_btreemap", |bench| {
        bench.iter_custom(|iters| {
            per_fresh_page(
                iters,
                |_| BTreeTracker::new(),
                |t, page| {
                    assert!(t.try_claim(page));
                    black_box(t.install_source_and_release(page, CLEAN));
                },
            )
        })
    });
    // Fault-around: a 16-page window claimed and installed at once (per page).
    g.throughput(Throughput::Elements(16));
    g.bench_function("tracker_window_16", |bench| {
        bench.iter_custom(|iters| {
            per_fresh_page(
                iters,
                |n| tracker(n * 16),
                |t, window| {
                    let claim = t
                        .try_claim_run(window * 16, 16, StateSet::MISSING)
                        .unwrap()
                        .unwrap();
                    black_box(claim.install_source(Access::Read));
                },
            )
        })
    });
    g.finish();
}

fn remove_1gib(c: &mut Criterion) {
    let t = tracker(PAGES_1G);
    let all = PageRange::new(0, PAGES_1G).unwrap();
    let mut g = group(c, "remove_1GiB_of_4K_pages");
    g.throughput(Throughput::Elements(PAGES_1G));
    g.bench_function("tracker", |bench| {
        bench.iter(|| t.remove(black_box(all)).unwrap())
    });
    // The reference: memset over one byte of state per page.
    let mut bytes = vec![0u8; PAGES_1G as usize];
    g.bench_function("memset_1_byte_per_page", |bench| {
        bench.iter(|| {
            bytes.fill(black_box(REMOVED));
            black_box(&mut bytes);
        })
    });
    // memset over the tracker's own state bytes (half a byte per page).
    let mut nibbles = vec![0u8; PAGES_1G as usize / 2];
    g.bench_function("memset_tracker_state_bytes", |bench| {
        bench.iter(|| {
            nibbles.fill(black_box(0x33));
            black_box(&mut nibbles);
        })
    });
    // The alternative design: claim bit inside the state byte, so a remove must keep it and
    // is one atomic read-modify-write per 8 pages.
    let words: Vec<AtomicU64> = (0..PAGES_1G / 8).map(|_| AtomicU64::new(0)).collect();
    g.bench_function("alt_claim_in_state_byte_fetch_or", |bench| {
        bench.iter(|| {
            let removed = black_box(0x0303_0303_0303_0303u64);
            for word in &words {
                word.fetch_or(removed, Ordering::AcqRel);
            }
        })
    });
    let m = MutexTracker::new(PAGES_1G as usize);
    g.bench_function("mutex_vec", |bench| {
        bench.iter(|| m.remove(black_box(0..PAGES_1G as usize)))
    });
    // The range map starts from the 1%-dirty pattern each time (removing from a map that is
    // already one Removed interval would measure nothing).
    let runs = dirty_runs(PAGES_1G);
    g.bench_function("rwlock_btreemap", |bench| {
        bench.iter_batched(
            || {
                let b = BTreeTracker::new();
                for run in &runs {
                    b.set(run.start()..run.end(), DIRTY);
                }
                b
            },
            |b| {
                b.remove(0..PAGES_1G);
                b
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn export_dirty_16mi(c: &mut Criterion) {
    let runs = dirty_runs(PAGES_64G);
    let t = tracker(PAGES_64G);
    fill_dirty(&t, &runs);
    assert_eq!(t.dirty_ranges(), runs);
    let m = MutexTracker::new(PAGES_64G as usize);
    let b = BTreeTracker::new();
    for run in &runs {
        m.set(run.start() as usize..run.end() as usize, DIRTY);
        b.set(run.start()..run.end(), DIRTY);
    }
    assert_eq!(m.dirty_ranges().len(), runs.len());
    assert_eq!(b.dirty_ranges().len(), runs.len());
    let dirty: u64 = runs.iter().map(|r| r.len()).sum();
    eprintln!(
        "export fixture: {} runs, {dirty} dirty pages ({:.2}%)",
        runs.len(),
        dirty as f64 * 100.0 / PAGES_64G as f64
    );
    let mut g = group(c, "export_dirty_16Mi_pages_1pct");
    g.sample_size(20);
    g.bench_function("tracker", |bench| {
        bench.iter(|| black_box(t.dirty_ranges()))
    });
    g.bench_function("tracker_empty_set", |bench| {
        bench.iter(|| black_box(t.empty_ranges()))
    });
    g.bench_function("mutex_vec", |bench| {
        bench.iter(|| black_box(m.dirty_ranges()))
    });
    g.bench_function("rwlock_btreemap", |bench| {
        bench.iter(|| black_box(b.dirty_ranges()))
    });
    g.finish();
}

fn counts_16mi(c: &mut Criterion) {
    let t = tracker(PAGES_64G);
    fill_dirty(&t, &dirty_runs(PAGES_64G));
    let mut g = group(c, "counts_16Mi_pages");
    g.sample_size(20);
    g.bench_function("one_chunk_changed", |bench| {
        let mut page = 0;
        bench.iter(|| {
            // A page freed somewhere, then a count: one 4096-page chunk re-read.
            page = (page + 4099) % PAGES_64G;
            t.remove(PageRange::single(page).unwrap()).unwrap();
            black_box(t.counts())
        })
    });
    let all = PageRange::new(0, PAGES_64G).unwrap();
    g.bench_function("every_chunk_changed", |bench| {
        bench.iter_batched(
            || t.remove(all).unwrap(),
            |_| black_box(t.counts()),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(
    benches,
    state_of_one_page,
    claim_and_install,
    remove_1gib,
    export_dirty_16mi,
    counts_16mi
);
criterion_main!(benches);
