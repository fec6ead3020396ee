//! Randomized soak across a process boundary: actor threads drive a VMM's threads to read
//! and write random pages, fill and peek at bytes, madvise ranges away (some racing reads of
//! the same pages) and prefetch random spans, while the source fails at random
//! (never more often for a page than the retry bound). Pages are partitioned in stripes among
//! the actors, so every page's expected bytes and state follow from the commands issued.
//!
//! Every epoch (half a round) the engine's bytes, states, dirty and empty sets, metrics and
//! exit channel are checked against the model; every round starts a new vmm and engine, so
//! pages are Missing again and the source is read again. Every vmm request must complete
//! within its timeout (no thread stuck).
//!
//! About a second per test in the normal suite; `UFFD_SOAK=1` (`cargo xtask test --soak`)
//! runs each for 60 s, `UFFD_SOAK_SECS` for any length. The seed is printed; replay with
//! `UFFD_SOAK_SEED`.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::common::soak::{RandomFlaky, Rng, World};
use crate::common::vmm::{MIB, Pages, Served, assert_hashes_in, hugepages_or_skip, serve_with};
use parking_lot::Mutex;
use test_vmm::{BLOCK, Split, Touch, VmmError, touch_word};
use uffd_engine::RetryPolicy;
use uffd_engine::{EngineConfig, MetricsSnapshot};

/// One random command of an actor, drawn in full before it runs (so it can be printed).
#[derive(Debug, Clone)]
enum Op {
    Read {
        pages: Range<u64>,
        threads: u32,
        split: Split,
    },
    WriteTouch {
        pages: Range<u64>,
        threads: u32,
        split: Split,
        seed: u64,
    },
    Write {
        offset: u64,
        data: Vec<u8>,
    },
    Fill {
        offset: u64,
        len: u64,
        byte: u8,
    },
    Remove {
        pages: Range<u64>,
    },
    RaceReadRemove {
        read: Range<u64>,
        remove: Range<u64>,
    },
    Hash {
        pages: Range<u64>,
    },
    Peek {
        offset: u64,
        len: u64,
    },
    /// Prefetch of any pages (it never changes what they read).
    Prefetch {
        pages: Range<u64>,
    },
    /// Prefetch of own pages while some of them are removed.
    RacePrefetchRemove {
        pages: Range<u64>,
        remove: Range<u64>,
    },
}

const KINDS: [&str; 10] = [
    "read",
    "write-touch",
    "write",
    "fill",
    "remove",
    "race",
    "hash",
    "peek",
    "prefetch",
    "race-prefetch",
];

impl Op {
    fn kind(&self) -> usize {
        match self {
            Op::Read { .. } => 0,
            Op::WriteTouch { .. } => 1,
            Op::Write { .. } => 2,
            Op::Fill { .. } => 3,
            Op::Remove { .. } => 4,
            Op::RaceReadRemove { .. } => 5,
            Op::Hash { .. } => 6,
            Op::Peek { .. } => 7,
            Op::Prefetch { .. } => 8,
            Op::RacePrefetchRemove { .. } => 9,
        }
    }

    /// A random op on `stripe` (pages of `page` bytes), or a prefetch of any of the image's
    /// `pages`.
    fn draw(rng: &mut Rng, stripe: Range<u64>, page: u64, pages: u64) -> Op {
        let splits = [Split::Chunks, Split::Interleaved, Split::Shared];
        let bytes = stripe.start * page..stripe.end * page;
        let threads = rng.between(1, 4) as u32;
        let split = splits[rng.below(3) as usize];
        match rng.below(100) {
            0..25 => Op::Read {
                pages: rng.sub_range(stripe, 8),
                threads,
                split,
            },
            25..38 => Op::WriteTouch {
                pages: rng.sub_range(stripe, 8),
                threads,
                split,
                seed: rng.next_u64(),
            },
            38..48 => {
                let at = rng.sub_range(bytes, 64);
                let data = (at.clone()).map(|_| rng.next_u64() as u8).collect();
                Op::Write {
                    offset: at.start,
                    data,
                }
            }
            48..53 => {
                let at = rng.sub_range(bytes, 2 * page);
                Op::Fill {
                    offset: at.start,
                    len: at.end - at.start,
                    byte: rng.next_u64() as u8,
                }
            }
            53..66 => Op::Remove {
                pages: rng.sub_range(stripe, 4),
            },
            66..75 => {
                let read = rng.sub_range(stripe, 4);
                Op::RaceReadRemove {
                    remove: rng.sub_range(read.clone(), 4),
                    read,
                }
            }
            75..80 => {
                let pages = rng.sub_range(stripe.clone(), 16);
                Op::RacePrefetchRemove {
                    remove: rng.sub_range(pages.clone(), 4),
                    pages,
                }
            }
            80..90 => Op::Hash {
                pages: rng.sub_range(stripe, 8),
            },
            90..96 => {
                let at = rng.sub_range(bytes, 64);
                Op::Peek {
                    offset: at.start,
                    len: at.end - at.start,
                }
            }
            _ => Op::Prefetch {
                pages: rng.sub_range(0..pages, 64),
            },
        }
    }
}

/// Counters over the whole soak.
#[derive(Default)]
struct Totals {
    ops: [AtomicU64; 10],
    metrics: Mutex<Vec<MetricsSnapshot>>,
    prefetch_failures: AtomicU64,
}

/// What one soak runs.
struct Plan {
    name: &'static str,
    pages: Pages,
    regions: Vec<u64>,
    /// Pages per stripe; stripe `i` belongs to actor `i % actors`.
    stripe: u64,
    actors: u64,
    /// Source reads failing, per million.
    per_million: u64,
    /// Source reads taking up to a millisecond, per million.
    slow_per_million: u64,
    config: EngineConfig,
}

fn ok<T>(what: &str, r: Result<T, VmmError>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Runs `op` against the vmm and the world model.
fn apply(s: &Served, world: &Mutex<World>, op: &Op, what: &str) {
    let (p, vmm) = (s.page, &s.vmm);
    let times = |split: Split, threads: u32| {
        if split == Split::Shared {
            u64::from(threads)
        } else {
            1
        }
    };
    match op {
        Op::Read {
            pages,
            threads,
            split,
        } => {
            let (off, len) = (pages.start * p, (pages.end - pages.start) * p);
            let touch = Touch::read(off, len, *threads).split(*split);
            let report = ok(what, vmm.touch(touch));
            let mut w = world.lock();
            let want = w.bytes.read_checksum(off, len, times(*split, *threads));
            assert_eq!(report.checksum, want, "{what}: bytes read");
            w.read(pages.clone());
        }
        Op::WriteTouch {
            pages,
            threads,
            split,
            seed,
        } => {
            let (off, len) = (pages.start * p, (pages.end - pages.start) * p);
            let touch = Touch::write(off, len, *threads, *seed).split(*split);
            let report = ok(what, vmm.touch(touch));
            let want = pages.clone().fold(0u64, |sum, q| {
                sum.wrapping_add(touch_word(*seed, q).wrapping_mul(times(*split, *threads)))
            });
            assert_eq!(report.checksum, want, "{what}: words written");
            let mut w = world.lock();
            w.bytes.touch_write(off, len, *seed);
            w.written(off, len);
        }
        Op::Write { offset, data } => {
            ok(what, vmm.write(*offset, data));
            let mut w = world.lock();
            w.bytes.write(*offset, data);
            w.written(*offset, data.len() as u64);
        }
        Op::Fill { offset, len, byte } => {
            ok(what, vmm.fill(*offset, *len, *byte));
            let mut w = world.lock();
            w.bytes.write(*offset, &vec![*byte; *len as usize]);
            w.written(*offset, *len);
        }
        Op::Remove { pages } => {
            let (off, len) = (pages.start * p, (pages.end - pages.start) * p);
            ok(what, vmm.madvise_dontneed(off, len));
            world.lock().removed(pages.clone());
        }
        Op::RaceReadRemove { read, remove } => {
            // Two vmm threads read the pages while a third removes some of them: the reads
            // may see either, but afterwards the removed pages read zeros.
            let touch =
                Touch::read(read.start * p, (read.end - read.start) * p, 2).split(Split::Shared);
            let touching = ok(what, vmm.start_touch(touch));
            let removing = ok(
                what,
                vmm.start_madvise_dontneed(remove.start * p, (remove.end - remove.start) * p),
            );
            ok(what, removing.wait());
            ok(what, touching.wait());
            let mut w = world.lock();
            w.read(read.start..remove.start);
            w.read(remove.end..read.end);
            w.removed(remove.clone());
        }
        Op::Hash { pages } => {
            let (off, len) = (pages.start * p, (pages.end - pages.start) * p);
            let hashes = ok(what, vmm.hash(off, len));
            let mut w = world.lock();
            assert_hashes_in(what, &hashes, &w.bytes, off, len);
            w.read(pages.clone());
        }
        Op::Peek { offset, len } => {
            let got = ok(what, vmm.read(*offset, *len));
            let w = world.lock();
            let want = &w.bytes.bytes[*offset as usize..(*offset + *len) as usize];
            assert_eq!(got, want, "{what}: bytes");
        }
        Op::RacePrefetchRemove { pages, remove } => {
            // The removed pages must never come back with snapshot bytes.
            let prefetch = s
                .engine
                .prefetch(std::iter::once(pages.start * p..pages.end * p));
            let (off, len) = (remove.start * p, (remove.end - remove.start) * p);
            ok(what, vmm.madvise_dontneed(off, len));
            let report = prefetch.wait(p);
            assert_eq!(
                report.installed_pages
                    + report.zero_pages
                    + report.skipped_pages
                    + report.failed_pages,
                pages.end - pages.start,
                "{what}: {report:?}"
            );
            world.lock().removed(remove.clone());
        }
        Op::Prefetch { pages } => {
            // Every page of the span is accounted for, installed or skipped.
            let report = s
                .engine
                .prefetch(std::iter::once(pages.start * p..pages.end * p))
                .wait(p);
            assert_eq!(
                report.installed_pages
                    + report.zero_pages
                    + report.skipped_pages
                    + report.failed_pages,
                pages.end - pages.start,
                "{what}: {report:?}"
            );
        }
    }
}

fn actor(
    s: &Served,
    world: &Mutex<World>,
    rng: &mut Rng,
    stripes: &[Range<u64>],
    deadline: Instant,
    totals: &Totals,
    ctx: &str,
) {
    let mut n = 0u64;
    while Instant::now() < deadline {
        let stripe = stripes[rng.below(stripes.len() as u64) as usize].clone();
        let op = Op::draw(rng, stripe, s.page, s.pages());
        apply(s, world, &op, &format!("{ctx} op {n}: {op:?}"));
        totals.ops[op.kind()].fetch_add(1, Ordering::Relaxed);
        n += 1;
    }
}

/// Checks the quiescent engine against the model. `full`: every page is hashed (so every
/// model state becomes exact); else only the pages the model does not hold Missing, and a
/// new generation is exported.
fn verify(
    s: &Served,
    world: &Mutex<World>,
    flaky: &RandomFlaky,
    dirty: bool,
    full: bool,
    ctx: &str,
) {
    let p = s.page;
    let mut w = world.lock();
    let runs = if full {
        std::iter::once(0..s.pages()).collect()
    } else {
        w.settled_runs()
    };
    for run in runs {
        let (off, len) = (run.start * p, (run.end - run.start) * p);
        let hashes = ok(ctx, s.vmm.start_hash(off, len, 2).and_then(|h| h.wait()));
        assert_hashes_in(ctx, &hashes, &w.bytes, off, len);
        w.read(run);
    }
    if dirty {
        let sets = s.engine.page_sets().expect("page sets");
        for page in 0..s.pages() {
            let got = s.engine.tracker().state(page).unwrap();
            assert!(
                w.allows(page, got),
                "{ctx}: page {page} is {got:?}, the model says {:?}",
                w.states[page as usize]
            );
        }
        assert_eq!(sets, w.sets(), "{ctx}: page sets");
        if full {
            let flags = ok(ctx, s.vmm.pagemap(0, s.size));
            for (block, f) in flags.iter().enumerate() {
                let page = block as u64 * BLOCK / p;
                let dirty = w.states[page as usize] == page_tracker::PageState::Dirty;
                assert_eq!(
                    (f.present(), f.uffd_wp()),
                    (true, !dirty),
                    "{ctx}: block {block}"
                );
            }
        } else {
            let exported = s.engine.export_and_reset().expect("export");
            assert_eq!(exported, sets, "{ctx}: exported sets");
            w.new_generation();
        }
    }
    s.engine.settle();
    if let Ok(exit) = s.engine.exits().try_recv() {
        panic!("{ctx}: the engine stopped serving: {exit:?}");
    }
    let m = s.engine.metrics();
    assert_eq!(m.fatal, 0, "{ctx}: {m:?}");
    assert_eq!(
        m.retried,
        flaky.reader_failures.load(Ordering::Relaxed),
        "{ctx}: one retry cycle per failed demand read: {m:?}"
    );
}

fn round(plan: &Plan, seed: u64, index: u64, rngs: &mut [Rng], len: Duration, totals: &Totals) {
    let mut flaky = None;
    let budget = plan.config.retry.max_cycles;
    let s = serve_with(
        plan.name,
        plan.pages,
        plan.regions.clone(),
        plan.config.clone(),
        |inner| {
            let mut source = RandomFlaky::new(
                inner,
                plan.pages.bytes(),
                plan.per_million,
                budget,
                seed ^ index.wrapping_mul(0x9e37_79b9),
            );
            source.slow_per_million = plan.slow_per_million;
            let source = Arc::new(source);
            flaky = Some(source.clone());
            source
        },
    );
    let flaky = flaky.expect("wrapped");
    let world = Mutex::new(World::new(s.size, s.page));
    let stripes: Vec<Vec<Range<u64>>> = (0..plan.actors)
        .map(|a| {
            (0..s.pages().div_ceil(plan.stripe))
                .filter(|i| i % plan.actors == a)
                .map(|i| i * plan.stripe..((i + 1) * plan.stripe).min(s.pages()))
                .collect()
        })
        .collect();
    for epoch in 0..2 {
        let deadline = Instant::now() + len / 2;
        let ctx = format!("{} seed {seed} round {index} epoch {epoch}", plan.name);
        std::thread::scope(|scope| {
            for (a, rng) in rngs.iter_mut().enumerate() {
                let (s, world, stripes, ctx) = (&s, &world, &stripes[a], &ctx);
                scope.spawn(move || {
                    actor(
                        s,
                        world,
                        rng,
                        stripes,
                        deadline,
                        totals,
                        &format!("{ctx} actor {a}"),
                    )
                });
            }
        });
        verify(
            &s,
            &world,
            &flaky,
            plan.config.dirty_tracking,
            epoch == 1,
            &ctx,
        );
    }
    totals.metrics.lock().push(s.engine.metrics());
    totals.prefetch_failures.fetch_add(
        flaky.other_failures.load(Ordering::Relaxed),
        Ordering::Relaxed,
    );
    s.finish();
}

fn run(plan: Plan) {
    let seed = crate::common::soak::seed();
    let total = match (std::env::var("UFFD_SOAK_SECS"), std::env::var("UFFD_SOAK")) {
        (Ok(secs), _) => Duration::from_secs(secs.trim().parse().expect("UFFD_SOAK_SECS")),
        (_, Ok(v)) if v == "1" => Duration::from_secs(60),
        _ => Duration::from_millis(1500),
    };
    let round_len = (total / 10).clamp(Duration::from_millis(600), Duration::from_secs(6));
    say(&format!(
        "soak {}: seed {seed} (replay: UFFD_SOAK_SEED={seed}), {total:?} in rounds of {round_len:?}",
        plan.name
    ));
    let mut rngs: Vec<Rng> = (0..plan.actors)
        .map(|a| Rng::new(seed ^ (a + 1).wrapping_mul(0x2545_f491_4f6c_dd1d)))
        .collect();
    let totals = Totals::default();
    let started = Instant::now();
    let mut rounds = 0;
    while rounds == 0 || started.elapsed() < total {
        round(&plan, seed, rounds, &mut rngs, round_len, &totals);
        rounds += 1;
    }
    report(&plan, seed, rounds, started.elapsed(), &totals);
}

/// A line on stderr that output capture does not hide.
fn say(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

fn report(plan: &Plan, seed: u64, rounds: u64, elapsed: Duration, totals: &Totals) {
    let ops: Vec<String> = KINDS
        .iter()
        .zip(&totals.ops)
        .map(|(k, n)| format!("{k} {}", n.load(Ordering::Relaxed)))
        .collect();
    let all = totals
        .ops
        .iter()
        .map(|n| n.load(Ordering::Relaxed))
        .sum::<u64>();
    let metrics = totals.metrics.lock();
    let sum = |f: fn(&MetricsSnapshot) -> u64| metrics.iter().map(f).sum::<u64>();
    say(&format!(
        "soak {}: seed {seed}, {rounds} rounds in {elapsed:.1?}: {all} ops ({}); \
         engine: {} faults, {} source installs ({} around), {} zero installs, {} WP faults, \
         {} removes ({} pages), {} deferred, {} already present, {} retry cycles, \
         {} prefetched pages, {} prefetch source failures",
        plan.name,
        ops.join(", "),
        sum(|m| m.faults),
        sum(|m| m.installed_source),
        sum(|m| m.fault_around_pages),
        sum(|m| m.installed_zero),
        sum(|m| m.wp_resolved),
        sum(|m| m.removes),
        sum(|m| m.removed_pages),
        sum(|m| m.deferred),
        sum(|m| m.already_present),
        sum(|m| m.retried),
        sum(|m| m.prefetch_installed),
        totals.prefetch_failures.load(Ordering::Relaxed),
    ));
    assert!(
        sum(|m| m.retried) > 0,
        "the source never failed a demand read"
    );
}

fn retry() -> RetryPolicy {
    RetryPolicy {
        max_cycles: 3,
        backoff: Duration::from_millis(1),
        jitter: Duration::from_millis(1),
    }
}

#[test]
fn soak_4k() {
    run(Plan {
        name: "soak-4k",
        pages: Pages::Base,
        // The middle region is not a multiple of the fault-around window or prefetch chunk.
        regions: vec![4 * MIB, 2 * MIB + 40 * 1024, 4 * MIB],
        stripe: 16,
        actors: 4,
        per_million: 20_000,
        slow_per_million: 100_000,
        config: EngineConfig {
            fault_around_pages: 16,
            prefetch_workers: 1,
            prefetch_chunk_pages: 16,
            retry: retry(),
            ..EngineConfig::default()
        },
    });
}

#[test]
fn soak_4k_dirty() {
    run(Plan {
        name: "soak-4k-dirty",
        pages: Pages::Base,
        regions: vec![2 * MIB + 12 * 1024, 6 * MIB],
        stripe: 8,
        actors: 4,
        per_million: 20_000,
        slow_per_million: 100_000,
        config: EngineConfig {
            readers: 3,
            event_batch: 4,
            fault_around_pages: 4,
            dirty_tracking: true,
            prefetch_workers: 1,
            prefetch_chunk_pages: 8,
            retry: retry(),
            ..EngineConfig::default()
        },
    });
}

#[test]
fn soak_2m_dirty() {
    if !hugepages_or_skip("soak_2m_dirty", 10) {
        return;
    }
    run(Plan {
        name: "soak-2m-dirty",
        pages: Pages::Huge,
        regions: vec![2 * MIB, 4 * MIB, 10 * MIB],
        stripe: 1,
        actors: 3,
        per_million: 100_000,
        slow_per_million: 200_000,
        config: EngineConfig {
            fault_around_pages: 4,
            dirty_tracking: true,
            prefetch_workers: 1,
            prefetch_chunk_pages: 2,
            retry: retry(),
            ..EngineConfig::default()
        },
    });
}
