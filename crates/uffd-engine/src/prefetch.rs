//! Background prefetch: installs Missing pages in a given order, in large contiguous COPYs,
//! on crossbeam worker threads, yielding to demand faults. It never installs into any other
//! state (a removed page is never resurrected with snapshot bytes).

use std::ops::Range as Span;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, bounded};
use page_tracker::{Access, PageRange, PageState, StateSet};
use uffd_core::Status;

use crate::EngineExit;
use crate::metrics::Metrics;
use crate::shared::Shared;
use crate::source::Extent;
use crate::throttle::Throttle;

/// What a prefetch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct PrefetchReport {
    /// Pages installed.
    pub installed_pages: u64,
    /// Holes in the snapshot installed as zero pages (write-protected under dirty tracking, so
    /// a write still shows as dirty): no demand fault comes for them afterwards.
    pub zero_pages: u64,
    /// Pages passed over because they were not Missing any more (installed, removed) or
    /// another attempt held them.
    pub skipped_pages: u64,
    /// Pages whose source read failed: left Missing, to demand faults (which retry) and
    /// graduation's sweep.
    pub failed_pages: u64,
    /// Chunks retried after EAGAIN (an event was pending).
    pub deferred_chunks: u64,
    /// Bytes installed.
    pub bytes: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Whether it was stopped before the end.
    pub stopped: bool,
}

/// A running prefetch.
#[derive(Debug)]
pub struct PrefetchHandle {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    counters: Arc<Counters>,
    started: Instant,
}

#[derive(Debug, Default)]
struct Counters {
    installed: AtomicU64,
    zero: AtomicU64,
    skipped: AtomicU64,
    failed: AtomicU64,
    deferred: AtomicU64,
}

impl PrefetchHandle {
    /// Asks the workers to stop after their current chunk.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Pages installed so far.
    pub fn installed_pages(&self) -> u64 {
        self.counters.installed.load(Ordering::Relaxed)
    }

    /// Waits for the end and reports.
    pub fn wait(self, page_bytes: u64) -> PrefetchReport {
        for t in self.threads {
            let _ = t.join();
        }
        let installed = self.counters.installed.load(Ordering::Relaxed);
        PrefetchReport {
            installed_pages: installed,
            zero_pages: self.counters.zero.load(Ordering::Relaxed),
            skipped_pages: self.counters.skipped.load(Ordering::Relaxed),
            failed_pages: self.counters.failed.load(Ordering::Relaxed),
            deferred_chunks: self.counters.deferred.load(Ordering::Relaxed),
            bytes: installed * page_bytes,
            elapsed: self.started.elapsed(),
            stopped: self.stop.load(Ordering::Acquire),
        }
    }
}

/// Starts prefetching the image byte ranges `order`, in that order.
pub(crate) fn start(
    shared: Arc<Shared>,
    order: Vec<Span<u64>>,
    stop: Arc<AtomicBool>,
) -> PrefetchHandle {
    let counters = Arc::new(Counters::default());
    let workers = shared.config.prefetch_workers.max(1);
    let (tx, rx) = bounded::<PageRange>(workers * 4);
    let mut threads = Vec::with_capacity(workers + 1);
    for i in 0..workers {
        let (shared, rx, stop, counters) =
            (shared.clone(), rx.clone(), stop.clone(), counters.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("uffd-prefetch-{i}"))
                .spawn(move || worker(&shared, &rx, &stop, &counters))
                .expect("spawn prefetch worker"),
        );
    }
    let planner_stop = stop.clone();
    let planner_counters = counters.clone();
    threads.push(
        std::thread::Builder::new()
            .name("uffd-prefetch-plan".into())
            .spawn(move || {
                let _span = tracing::info_span!("prefetch", ranges = order.len()).entered();
                let chunk = chunk_pages(&shared);
                let page = shared.page_bytes();
                for span in order {
                    let first = span.start / page;
                    let last = span.end.div_ceil(page).min(shared.tracker.page_count());
                    let Ok(range) = PageRange::new(first, last.max(first)) else {
                        continue;
                    };
                    let Ok(runs) = shared.tracker.runs(range, StateSet::MISSING) else {
                        continue;
                    };
                    let mut missing = 0;
                    for run in runs {
                        missing += run.len();
                        let mut start = run.start();
                        while start < run.end() {
                            // Chunks aligned to the chunk size, so a claim window covers one.
                            let end = ((start / chunk + 1) * chunk).min(run.end());
                            if planner_stop.load(Ordering::Acquire)
                                || tx
                                    .send(PageRange::new(start, end).expect("ordered"))
                                    .is_err()
                            {
                                return;
                            }
                            start = end;
                        }
                    }
                    skipped(&shared, &planner_counters, range.len() - missing);
                }
            })
            .expect("spawn prefetch planner"),
    );
    PrefetchHandle {
        stop,
        threads,
        counters,
        started: Instant::now(),
    }
}

/// The most a prefetch COPY installs under the read gate (one 2 MiB page on hugetlbfs).
const GATE_PIECE_BYTES: u64 = 256 << 10;

/// Pages per prefetch COPY: the configured count, but never more than 2 MiB, so a demand
/// fault on a page inside a chunk in flight waits for one 2 MiB copy at most (with 2 MiB pages,
/// one page).
fn chunk_pages(shared: &Shared) -> u64 {
    let cap = ((2u64 << 20) / shared.page_bytes()).max(1);
    shared.config.prefetch_chunk_pages.clamp(1, cap)
}

fn worker(shared: &Shared, jobs: &Receiver<PageRange>, stop: &AtomicBool, counters: &Counters) {
    let mut buf =
        vec![0u8; (chunk_pages(shared).next_power_of_two() * shared.page_bytes()) as usize];
    for job in jobs {
        if stop.load(Ordering::Acquire) || shared.is_stopping() {
            stop.store(true, Ordering::Release);
            return;
        }
        let mut page = job.start();
        while page < job.end() && !stop.load(Ordering::Acquire) {
            yield_to_demand(shared);
            page = install_from(shared, page, job.end(), counters, &mut buf);
        }
    }
}

/// Demand faults go first: while a reader serves a batch, let it have the CPU; while faults
/// wait for a free fetcher, storage is saturated, so hold off until they have one.
fn yield_to_demand(shared: &Shared) {
    for _ in 0..64 {
        if shared.demand_active.load(Ordering::Acquire) == 0 {
            break;
        }
        std::thread::yield_now();
    }
    while shared.fetch.backlog() > 0 && !shared.is_stopping() {
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Installs the Missing run starting at `page` (inside `[page, end)`) as far as one source
/// piece reaches; returns the next page to look at.
fn install_from(shared: &Shared, page: u64, end: u64, counters: &Counters, buf: &mut [u8]) -> u64 {
    let bytes = shared.page_bytes();
    let window = chunk_pages(shared).next_power_of_two();
    let Ok(Some(mut claim)) = shared
        .tracker
        .try_claim_run(page, window, StateSet::MISSING)
    else {
        skipped(shared, counters, 1);
        return page + 1;
    };
    if claim.pages().start() < page {
        let Ok(tail) = claim.split_off(page) else {
            return page + 1;
        };
        claim = tail;
    }
    if claim.pages().end() > end {
        let _beyond = claim.split_off(end);
    }
    let mut claim = crate::claim::clip_to_region(shared, claim, page);
    let first = claim.pages().start();
    let pages = claim.pages().len();
    let extent = match shared.source.extent(first * bytes, pages * bytes) {
        Ok(extent) => extent,
        Err(e) => {
            tracing::debug!(first, %e, "prefetch source lookup failed; pages left to demand");
            counters.failed.fetch_add(pages, Ordering::Relaxed);
            return first + pages;
        }
    };
    // Runs shorter than a page (tiny source blocks) are read with the data around them.
    let run = (extent.len() / bytes).clamp(1, pages);
    if run < pages {
        let _later = claim.split_off(first + run);
    }
    let fill = match extent {
        // A hole: installed as zero pages in bulk, so no demand fault comes for it later.
        Extent::Zero(n) if n >= bytes => Fill::Zeros,
        _ => {
            // Outside every lock: a slow read holds up this worker only. Bytes already in the
            // page cache are copied by the kernel straight from the mapping (one memory copy
            // less than through the buffer: docs/benchmarks.md).
            let read = match shared.source.resident_slice(first * bytes, run * bytes) {
                Ok(Some(resident)) => Ok(resident),
                Ok(None) => {
                    let data = &mut buf[..(run * bytes) as usize];
                    shared
                        .source
                        .read_into(first * bytes, data)
                        .map(|()| &*data)
                }
                Err(e) => Err(e),
            };
            match read {
                Ok(data) => Fill::Data(data),
                Err(e) => {
                    // Demand faults retry source failures; prefetch leaves the pages Missing.
                    tracing::debug!(first, %e, "prefetch source read failed; pages left to demand");
                    counters.failed.fetch_add(run, Ordering::Relaxed);
                    return first + run;
                }
            }
        }
    };
    install_locked(shared, claim, end, fill, counters)
}

/// What a prefetch install puts into its pages.
enum Fill<'a> {
    /// Source bytes, at least as long as the claim.
    Data(&'a [u8]),
    /// Zeros: a hole in the snapshot.
    Zeros,
}

/// Installs the leading Missing pages of `claim` under the settle lock and the read gate (at
/// most one short piece per gate hold); returns the next page to look at.
fn install_locked(
    shared: &Shared,
    mut claim: page_tracker::Claim<'_>,
    end: u64,
    fill: Fill<'_>,
    counters: &Counters,
) -> u64 {
    let bytes = shared.page_bytes();
    let first = claim.pages().start();
    crate::hooks::hook(
        shared,
        crate::hooks::HookPoint::BeforeBarrier,
        first * bytes,
    );
    let Some(settled) = shared.locks.settled() else {
        return end;
    };
    // The read gate, from the state check to the record: no REMOVE is read meanwhile (the VMM
    // zaps a removed range once its REMOVE is read, and a COPY into it would succeed).
    let installing = settled.gate();
    // A REMOVE may have landed since the claim: install only the leading Missing pages.
    let missing = claim
        .pages()
        .iter()
        .take_while(|&p| shared.tracker.state(p).ok() == Some(PageState::Missing))
        .count() as u64;
    if missing == 0 {
        skipped(shared, counters, 1);
        return first + 1;
    }
    // One short install per gate hold, so reading events never waits long behind prefetch; the
    // rest of the run is the next call's. Zeros by COPY come from the engine's zero buffer.
    let cap = match fill {
        Fill::Zeros if !shared.zeros_by_zeropage(Access::Read) => {
            GATE_PIECE_BYTES.min(shared.zeros.len() as u64)
        }
        _ => GATE_PIECE_BYTES,
    };
    let missing = missing.min((cap / bytes).max(1));
    if missing < claim.pages().len() {
        let _later = claim.split_off(first + missing);
    }
    let Some(dst) = shared.host_range(first, missing) else {
        skipped(shared, counters, missing);
        return first + missing;
    };
    let outcome = match fill {
        Fill::Data(data) => installing.copy(
            dst,
            &data[..(missing * bytes) as usize],
            shared.copy_mode(Access::Read),
        ),
        Fill::Zeros => shared.install_zeros(&installing, dst, Access::Read),
    };
    let done = outcome.done / bytes;
    if done > 0 {
        if let Ok(rest) = claim.split_off(first + done) {
            match fill {
                Fill::Data(_) => {
                    let n = claim.install_source(Access::Read);
                    counters.installed.fetch_add(n, Ordering::Relaxed);
                    Metrics::add(&shared.metrics.prefetch_installed, n);
                    Metrics::add(&shared.metrics.prefetch_bytes, n * bytes);
                }
                Fill::Zeros => {
                    let n = claim.install_zero(Access::Read);
                    counters.zero.fetch_add(n, Ordering::Relaxed);
                    Metrics::add(&shared.metrics.prefetch_zero_pages, n);
                }
            }
            drop(rest);
        }
    }
    drop(installing);
    drop(settled);
    match outcome.status {
        Status::Complete => first + missing,
        Status::Again => {
            // An event is pending: give the readers a moment to read it, then go on.
            counters.deferred.fetch_add(1, Ordering::Relaxed);
            Metrics::add(&shared.metrics.prefetch_deferred, 1);
            std::thread::sleep(shared.config.defer_pacing);
            first + done
        }
        Status::Exists => first + done + 1,
        Status::Gone => {
            shared.exit(EngineExit::VmmGone);
            u64::MAX
        }
        other => {
            static FAILED: Throttle = Throttle::new();
            if let Some(held_back) = FAILED.allow() {
                tracing::warn!(
                    first,
                    ?other,
                    held_back,
                    "prefetch install failed; pages left to demand"
                );
            }
            first + done + 1
        }
    }
}

/// Counts `pages` passed over, in the report and in the engine's metrics.
fn skipped(shared: &Shared, counters: &Counters, pages: u64) {
    counters.skipped.fetch_add(pages, Ordering::Relaxed);
    Metrics::add(&shared.metrics.prefetch_skipped, pages);
}
