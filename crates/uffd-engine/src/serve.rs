//! One fault, start to finish, following the install policy: claim, read the bytes outside
//! every lock (or park the fault for a fetcher when they are not resident), take the settle
//! read lock, read the state again, install with one ioctl, record, release.

use std::sync::atomic::Ordering;
use std::time::Instant;

use page_tracker::{Access, Claim, PageState, WriteMark};
use uffd_core::{CopyMode, Outcome, Range, Status, WriteProtectMode};

use crate::EngineExit;
use crate::claim;
use crate::fault::{Fault, FaultKind, Finish};
use crate::fetch::{self, Parked};
use crate::hooks::hook;
use crate::metrics::Metrics;
use crate::retry::Verdict;
use crate::shared::Shared;
use crate::source::Extent;
use crate::throttle::Throttle;

/// A reader's buffer for the bytes of one claim: one fault-around window, or one page.
pub(crate) struct Scratch(Vec<u8>);

impl Scratch {
    pub(crate) fn new(window_bytes: usize) -> Self {
        Scratch(vec![0; window_bytes])
    }
}

/// What a claim's pages get.
pub(crate) enum Bytes<'a> {
    /// Bytes read from the source, as long as the claim (the faulting page's alone after a
    /// narrowing).
    Data(&'a [u8]),
    /// Zeros (a hole in the snapshot, or a removed page).
    Zero,
    /// Nothing to install: the page is already there.
    None,
}

pub(crate) fn serve(shared: &Shared, fault: Fault, scratch: &mut Scratch) {
    let started = Instant::now();
    let Some(offset) = shared.image_offset(fault.addr()) else {
        // The VMM registered memory it did not declare (or moved part of a region): nothing
        // can be served there, and a wake alone would have the fault delivered again forever.
        // One fatal error (the owner kills the VMM or leaves it, by its policy), then a wake.
        Metrics::add(&shared.metrics.discarded, 1);
        let reason = format!(
            "a fault at {:#x} is outside every region the VMM declared (it registered memory \
             it did not describe to the handler)",
            fault.addr()
        );
        shared.fatal(None, reason, Vec::new());
        wake(shared, fault);
        return;
    };
    let page = offset / shared.page_bytes();
    let served = match fault.kind() {
        FaultKind::WriteProtect => {
            serve_wp(shared, fault, page);
            true
        }
        FaultKind::Read | FaultKind::Write => serve_missing(shared, fault, page, scratch, started),
    };
    if served {
        shared.metrics.record_latency(started.elapsed());
    }
}

fn access(kind: FaultKind) -> Access {
    match kind {
        FaultKind::Read => Access::Read,
        FaultKind::Write | FaultKind::WriteProtect => Access::Write,
    }
}

/// Serves a missing-page fault; `false` when it was parked for a fetcher, which records its
/// latency when it ends.
fn serve_missing(
    shared: &Shared,
    fault: Fault,
    page: u64,
    scratch: &mut Scratch,
    read_at: Instant,
) -> bool {
    let Some(mut claim) = claim::for_fault(shared, fault.kind(), page) else {
        // Another attempt holds the page; it ends in an install or a wake, but retry this one
        // after it, in case the page is zapped again in between.
        shared.defer(fault);
        return true;
    };
    // Checked with the claim held: a failing attempt schedules its wake before it releases
    // the claim, so this sees it, and no second attempt starts before the backoff ends.
    if shared.retrying.load(Ordering::Acquire) > 0
        && shared.deferred.lock().wake_pending(fault.addr())
    {
        // A source failure's backoff is running for this page; its wake serves this waiter.
        fault.finish(Finish::WakeScheduled);
        return true;
    }
    let page_bytes = shared.page_bytes();
    // Read outside every lock: a slow source never holds up a REMOVE batch.
    let state = shared.tracker.state(page).unwrap_or(PageState::Missing);
    let bytes = match state {
        PageState::Missing => {
            let pages = claim.pages();
            let (offset, len) = (pages.start() * page_bytes, pages.len() * page_bytes);
            match shared.source.extent(offset, len) {
                Ok(Extent::Zero(n)) if n >= len => {
                    // A hole: zeros come from a buffer that holds one fault-around window of
                    // base pages (one page on hugetlbfs); a longer run serves the page alone.
                    if len > shared.zeros.len() as u64 {
                        claim = claim::narrow(claim, page);
                    }
                    Bytes::Zero
                }
                Ok(_) => {
                    let buf = &mut scratch.0[..len as usize];
                    match shared.source.read_resident(offset, buf) {
                        Ok(true) => Bytes::Data(buf),
                        Ok(false) => {
                            // Not resident: a fetcher reads it, and this reader goes on.
                            let parked = Parked {
                                fault,
                                claim: claim.detach(),
                                page,
                                read_at,
                            };
                            fetch::park(shared, parked, offset, len as usize);
                            return false;
                        }
                        Err(e) => {
                            source_failed(shared, fault, page, e.0);
                            return true;
                        }
                    }
                }
                Err(e) => {
                    source_failed(shared, fault, page, e.0);
                    return true;
                }
            }
        }
        PageState::Removed | PageState::Zero | PageState::Dirty => Bytes::Zero,
        PageState::Clean => Bytes::None,
    };
    install(shared, fault, claim, bytes, page);
    true
}

/// Installs `bytes` for the claim of `fault` (on image page `page`) and ends the fault: the
/// states are checked again under the settle lock and once more under the read gate, since
/// a REMOVE may have been read while the bytes were read.
pub(crate) fn install(
    shared: &Shared,
    fault: Fault,
    mut claim: Claim<'_>,
    mut bytes: Bytes<'_>,
    page: u64,
) {
    let page_bytes = shared.page_bytes();
    hook(
        shared,
        crate::hooks::HookPoint::BeforeBarrier,
        page * page_bytes,
    );
    let Some(settled) = shared.locks.settled() else {
        fault.finish(Finish::Closing);
        return;
    };
    (claim, bytes) = fit(shared, claim, bytes, page);
    hook(
        shared,
        crate::hooks::HookPoint::AfterStateRead,
        page * page_bytes,
    );
    hook(
        shared,
        crate::hooks::HookPoint::BeforeInstall,
        page * page_bytes,
    );
    // The last state check, under the read gate: a REMOVE read since the check above (its
    // range perhaps zapped already) is recorded by now, and none is read until the COPY ends.
    let installing = settled.gate();
    (claim, bytes) = fit(shared, claim, bytes, page);
    let Some(dst) = shared.host_range(claim.pages().start(), claim.pages().len()) else {
        drop(installing);
        drop(settled);
        Metrics::add(&shared.metrics.discarded, 1);
        wake(shared, fault);
        return;
    };
    let access = access(fault.kind());
    // Source bytes are copied without waking, and woken once the gate is released: a wake-up
    // inside the gate would keep every reader's read(2) waiting on it (half the throughput
    // of two faulting threads, measured).
    let mode = shared.copy_mode(access) | CopyMode::DONTWAKE;
    let (outcome, from_source) = match bytes {
        Bytes::Data(src) => (installing.copy(dst, src, mode), true),
        Bytes::Zero => (shared.install_zeros(&installing, dst, access), false),
        Bytes::None => {
            drop(installing);
            Metrics::add(&shared.metrics.already_present, 1);
            finish_wake(shared, settled.wake(dst));
            fault.finish(Finish::Woken);
            return;
        }
    };
    drop(installing);
    if from_source
        && outcome.done > 0
        && let Ok(installed) = Range::new(dst.start(), outcome.done, shared.page_size)
    {
        // Before the wake, so the woken thread's next first touch is recorded after this one.
        if shared.config.record_working_set {
            let pages = outcome.done / page_bytes;
            shared
                .working_set
                .lock()
                .push((claim.pages().start(), pages));
        }
        finish_wake(shared, settled.wake(installed));
    }
    hook(
        shared,
        crate::hooks::HookPoint::AfterInstall,
        page * page_bytes,
    );
    let installed_pages = outcome.done / page_bytes;
    let fault_served = page < claim.pages().start() + installed_pages;
    if installed_pages > 0
        && let Ok(rest) = claim.split_off(claim.pages().start() + installed_pages)
    {
        record(shared, &claim, access, from_source, page);
        claim = rest;
    }
    drop(settled);
    drop(claim);
    match outcome.status {
        Status::Complete => fault.finish(Finish::Installed),
        Status::Exists => {
            Metrics::add(&shared.metrics.already_present, 1);
            wake(shared, fault);
        }
        // An event is pending, or the copy stopped part-way; the installed prefix is woken,
        // so only a fault outside it waits for the retry.
        Status::Again if !fault_served => shared.defer(fault),
        Status::Again => fault.finish(Finish::Installed),
        status => outcome_failed(shared, fault, page, outcome, status),
    }
}

/// Fits a claim and its bytes to the pages' states now. A REMOVE since the fetch turns the
/// faulting page's install into zeros, never old bytes (the stale-source race), and drops the
/// rest of a window. A Clean page is only woken (the fault raced its install). A Dirty page is
/// served zeros again, as a Zero one is: a page written after a REMOVE was read is zapped with
/// it if the VMM's zap comes after the install, and a fault there means it is absent (when it
/// is not, the COPY meets EEXIST and wakes).
fn fit<'t, 'b>(
    shared: &Shared,
    mut claim: Claim<'t>,
    bytes: Bytes<'b>,
    page: u64,
) -> (Claim<'t>, Bytes<'b>) {
    let page_bytes = shared.page_bytes();
    match shared.tracker.state(page).unwrap_or(PageState::Missing) {
        PageState::Missing => {
            if claim.pages().len() > 1 && !all_missing(shared, &claim) {
                // A REMOVE landed in the window since the claim: keep only the faulting page.
                let start = claim.pages().start();
                claim = claim::narrow(claim, page);
                if let Bytes::Data(d) = bytes {
                    let at = ((page - start) * page_bytes) as usize;
                    return (claim, Bytes::Data(&d[at..at + page_bytes as usize]));
                }
            }
            (claim, bytes)
        }
        PageState::Removed | PageState::Zero | PageState::Dirty => {
            (claim::narrow(claim, page), Bytes::Zero)
        }
        PageState::Clean => (claim::narrow(claim, page), Bytes::None),
    }
}

fn all_missing(shared: &Shared, claim: &Claim<'_>) -> bool {
    claim
        .pages()
        .iter()
        .all(|p| shared.tracker.state(p).ok() == Some(PageState::Missing))
}

fn record(
    shared: &Shared,
    installed: &Claim<'_>,
    access: Access,
    from_source: bool,
    fault_page: u64,
) {
    let pages = installed.pages().len();
    if from_source {
        // The faulting page may be a write; pages around it are reads.
        let n = if pages == 1 {
            installed.install_source(access)
        } else {
            installed.install_source(Access::Read)
        };
        Metrics::add(&shared.metrics.installed_source, n);
        Metrics::add(&shared.metrics.fault_around_pages, pages.saturating_sub(1));
    } else {
        Metrics::add(
            &shared.metrics.installed_zero,
            installed.install_zero(access),
        );
    }
    if shared.retrying.load(Ordering::Acquire) > 0 {
        let mut retries = shared.retries.lock();
        if retries.cycles(fault_page) > 0 {
            retries.succeeded(fault_page);
            shared.retrying.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn serve_wp(shared: &Shared, fault: Fault, page: u64) {
    // The claim keeps this from interleaving with an install still recording the page, which
    // would otherwise record Clean over the write we are about to let through.
    let Ok(Some(_claim)) = shared.tracker.try_claim(page) else {
        shared.defer(fault);
        return;
    };
    let Some(dst) = shared.host_range(page, 1) else {
        Metrics::add(&shared.metrics.discarded, 1);
        wake(shared, fault);
        return;
    };
    let Some(settled) = shared.locks.settled() else {
        fault.finish(Finish::Closing);
        return;
    };
    // Dirty before the page becomes writable, so an export never misses the write.
    match shared.tracker.mark_written(page) {
        Ok(WriteMark::Marked | WriteMark::AlreadyDirty) => {}
        Ok(WriteMark::NotInstalled(state)) => {
            tracing::debug!(page, ?state, "WP fault on a page not recorded installed");
        }
        Err(e) => {
            static OUTSIDE: Throttle = Throttle::new();
            if let Some(held_back) = OUTSIDE.allow() {
                tracing::warn!(page, %e, held_back, "WP fault outside the tracker");
            }
        }
    }
    let outcome = settled.writeprotect(dst, WriteProtectMode::empty());
    drop(settled);
    match outcome.status {
        Status::Complete => {
            Metrics::add(&shared.metrics.wp_resolved, 1);
            fault.finish(Finish::Unprotected);
        }
        Status::Again => shared.defer(fault),
        status => outcome_failed(shared, fault, page, outcome, status),
    }
}

pub(crate) fn source_failed(shared: &Shared, fault: Fault, page: u64, error: String) {
    let page_offset = page * shared.page_bytes();
    let verdict = {
        let mut retries = shared.retries.lock();
        let first = retries.cycles(page) == 0;
        let verdict = retries.failed(page, error, &shared.config.retry, Instant::now());
        if first && matches!(verdict, Verdict::RetryAt(_)) {
            shared.retrying.fetch_add(1, Ordering::AcqRel);
        }
        if !first && matches!(verdict, Verdict::GiveUp(_)) {
            shared.retrying.fetch_sub(1, Ordering::AcqRel);
        }
        verdict
    };
    match verdict {
        Verdict::RetryAt(at) => {
            Metrics::add(&shared.metrics.retried, 1);
            shared.deferred.lock().schedule_wake(fault.addr(), at);
            fault.finish(Finish::WakeScheduled);
        }
        Verdict::GiveUp(errors) => {
            let reason = format!(
                "the source failed {} times for the page at image offset {page_offset:#x}",
                errors.len()
            );
            shared.fatal(Some(page_offset), reason, errors);
            wake(shared, fault);
        }
    }
}

fn outcome_failed(shared: &Shared, fault: Fault, page: u64, outcome: Outcome, status: Status) {
    match status {
        Status::Gone => {
            shared.exit(EngineExit::VmmGone);
            fault.finish(Finish::VmmGone);
        }
        Status::NoMapping => {
            // The range was unmapped or unregistered under us: nothing to install into.
            Metrics::add(&shared.metrics.discarded, 1);
            wake(shared, fault);
        }
        other => {
            let reason = format!(
                "install at {:#x} (image offset {:#x}) failed: {other:?} after {} of {} bytes",
                fault.addr(),
                page * shared.page_bytes(),
                outcome.done,
                outcome.requested
            );
            shared.fatal(Some(page * shared.page_bytes()), reason, Vec::new());
            wake(shared, fault);
        }
    }
}

/// Ends `fault` with a wake of its page: its thread touches the page again and faults anew
/// if the page is still absent.
pub(crate) fn wake(shared: &Shared, fault: Fault) {
    if wake_page(shared, fault.addr()) {
        fault.finish(Finish::Woken);
    } else {
        fault.finish(Finish::Closing);
    }
}

/// Wakes the waiters of the page at `addr`; `false` if the uffd is closed (which woke them).
pub(crate) fn wake_page(shared: &Shared, addr: u64) -> bool {
    let Some(settled) = shared.locks.settled() else {
        return false;
    };
    if let Ok(range) = Range::page_containing(addr, shared.page_size) {
        finish_wake(shared, settled.wake(range));
    }
    true
}

fn finish_wake(shared: &Shared, outcome: Outcome) {
    if outcome.status == Status::Gone {
        shared.exit(EngineExit::VmmGone);
    }
}
