//! Faults whose bytes are not resident: parked with their claim while a bounded pool of
//! fetcher threads reads the bytes, so no read from storage ever blocks a thread that reads
//! the uffd. A fetched fault is installed with the same re-checks as an inline one; a read
//! that fails, or outlives the read deadline, becomes a source failure (a wake after backoff,
//! then fatal), and a read that returns after its deadline is dropped.

use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use page_tracker::DetachedClaim;
use parking_lot::{Condvar, Mutex};

use crate::fault::Fault;
use crate::metrics::Metrics;
use crate::serve::{self, Bytes};
use crate::shared::Shared;

/// A fault waiting for its bytes: the ticket, the claim on its window, and when it was read.
pub(crate) struct Parked {
    pub(crate) fault: Fault,
    pub(crate) claim: DetachedClaim,
    /// The faulting image page (inside the claim).
    pub(crate) page: u64,
    /// When the fault was read, for its service latency.
    pub(crate) read_at: Instant,
}

/// One read for one parked fault. The fault is taken out exactly once: by the fetcher that
/// completes the read, by the watchdog when the deadline passes first, or on stop.
struct Job {
    offset: u64,
    len: usize,
    deadline: Instant,
    parked: Mutex<Option<Parked>>,
}

#[derive(Default)]
struct Queue {
    /// Jobs no fetcher has taken yet, oldest first.
    waiting: VecDeque<Arc<Job>>,
    /// Every job whose fault is still parked (waiting or being read), for the watchdog.
    pending: Vec<Arc<Job>>,
    stopping: bool,
}

/// The fetchers' queue, shared by the readers (who park), the fetchers and the watchdog.
#[derive(Default)]
pub(crate) struct FetchQueue {
    queue: Mutex<Queue>,
    /// Signalled when a job is queued or on stop.
    work: Condvar,
    /// Signalled when a job with a new deadline is queued or on stop.
    deadlines: Condvar,
}

impl FetchQueue {
    /// Faults waiting for a free fetcher: prefetch holds back while any do.
    pub(crate) fn backlog(&self) -> usize {
        self.queue.lock().waiting.len()
    }

    /// Takes every parked fault out (on stop): the caller wakes them.
    fn drain(&self) -> Vec<Parked> {
        let mut queue = self.queue.lock();
        queue.stopping = true;
        queue.waiting.clear();
        let parked = queue
            .pending
            .drain(..)
            .filter_map(|job| job.parked.lock().take())
            .collect();
        self.work.notify_all();
        self.deadlines.notify_all();
        parked
    }

    fn forget(&self, job: &Arc<Job>) {
        self.queue.lock().pending.retain(|j| !Arc::ptr_eq(j, job));
    }
}

/// Parks `parked`, whose bytes are `[offset, offset + len)` of the image, for a fetcher.
pub(crate) fn park(shared: &Shared, parked: Parked, offset: u64, len: usize) {
    let deadline = Instant::now() + shared.config.read_deadline;
    let job = Arc::new(Job {
        offset,
        len,
        deadline,
        parked: Mutex::new(None),
    });
    let fetch = &shared.fetch;
    let mut queue = fetch.queue.lock();
    if queue.stopping {
        drop(queue);
        let Parked { fault, claim, .. } = parked;
        release(shared, claim);
        serve::wake(shared, fault);
        return;
    }
    *job.parked.lock() = Some(parked);
    queue.waiting.push_back(job.clone());
    queue.pending.push(job);
    drop(queue);
    Metrics::add(&shared.metrics.parked, 1);
    fetch.work.notify_one();
    fetch.deadlines.notify_one();
}

/// Starts `count` fetchers and the deadline watchdog.
pub(crate) fn start(shared: &Arc<Shared>, count: usize) -> std::io::Result<Vec<JoinHandle<()>>> {
    let mut threads = Vec::with_capacity(count + 1);
    for i in 0..count.max(1) {
        let shared = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("uffd-fetch-{i}"))
                .spawn(move || fetcher(&shared))?,
        );
    }
    let shared = shared.clone();
    threads.push(
        std::thread::Builder::new()
            .name("uffd-fetch-watch".into())
            .spawn(move || watchdog(&shared))?,
    );
    Ok(threads)
}

/// Ends the pool: every parked fault is woken (its thread faults again, and is served or
/// released by whoever serves the uffd next) and the threads are told to exit. A fetcher
/// still inside a stalled read exits when the read returns; it is never waited for.
pub(crate) fn stop(shared: &Shared) {
    for Parked { fault, claim, .. } in shared.fetch.drain() {
        release(shared, claim);
        serve::wake(shared, fault);
    }
}

fn fetcher(shared: &Shared) {
    let mut buf: Vec<u8> = Vec::new();
    while let Some(job) = next_job(&shared.fetch) {
        buf.resize(job.len, 0);
        // No lock is held: a stalled read holds up this thread only.
        let read = shared.source.read_into(job.offset, &mut buf);
        let Some(parked) = job.parked.lock().take() else {
            // The watchdog expired it (its retry is scheduled), or the engine stopped.
            Metrics::add(&shared.metrics.late_reads, 1);
            continue;
        };
        shared.fetch.forget(&job);
        let Parked {
            fault,
            claim,
            page,
            read_at,
        } = parked;
        let claim = reattach(shared, claim);
        match read {
            Ok(()) => {
                serve::install(shared, fault, claim, Bytes::Data(&buf), page);
                shared.metrics.record_latency(read_at.elapsed());
            }
            Err(e) => {
                serve::source_failed(shared, fault, page, e.0);
                drop(claim);
            }
        }
        // A retry wake or a deferral may have been queued: readers recompute their timeouts.
        shared.kick_readers();
    }
}

fn next_job(fetch: &FetchQueue) -> Option<Arc<Job>> {
    let mut queue = fetch.queue.lock();
    loop {
        if queue.stopping {
            return None;
        }
        if let Some(job) = queue.waiting.pop_front() {
            return Some(job);
        }
        fetch.work.wait(&mut queue);
    }
}

/// Turns every read past its deadline (waiting or in progress) into a source failure.
fn watchdog(shared: &Shared) {
    let fetch = &shared.fetch;
    let mut expired: Vec<(Arc<Job>, Parked)> = Vec::new();
    loop {
        {
            let mut queue = fetch.queue.lock();
            loop {
                if queue.stopping {
                    return;
                }
                let now = Instant::now();
                if queue.pending.iter().any(|j| j.deadline <= now) {
                    break;
                }
                match queue.pending.iter().map(|j| j.deadline).min() {
                    Some(next) => {
                        fetch.deadlines.wait_until(&mut queue, next);
                    }
                    None => fetch.deadlines.wait(&mut queue),
                }
            }
            let now = Instant::now();
            let (due, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut queue.pending)
                .into_iter()
                .partition(|j| j.deadline <= now);
            queue.pending = rest;
            queue.waiting.retain(|j| j.deadline > now);
            for job in due {
                let parked = job.parked.lock().take();
                if let Some(parked) = parked {
                    expired.push((job, parked));
                }
            }
        }
        for (job, parked) in expired.drain(..) {
            let Parked {
                fault, claim, page, ..
            } = parked;
            Metrics::add(&shared.metrics.read_timeouts, 1);
            let error = format!(
                "reading image bytes [{:#x}, {:#x}) took longer than the {:?} read deadline",
                job.offset,
                job.offset + job.len as u64,
                shared.config.read_deadline
            );
            let claim = reattach(shared, claim);
            serve::source_failed(shared, fault, page, error);
            drop(claim);
        }
        shared.kick_readers();
    }
}

fn reattach(shared: &Shared, claim: DetachedClaim) -> page_tracker::Claim<'_> {
    match shared.tracker.reattach(claim) {
        Ok(claim) => claim,
        Err(_) => unreachable!("a parked claim comes from the engine's own tracker"),
    }
}

fn release(shared: &Shared, claim: DetachedClaim) {
    drop(reattach(shared, claim));
}
