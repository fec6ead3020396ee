//! The threads that read the uffd. Each reads a batch of messages under the read gate (never
//! the settle lock), records the batch's REMOVEs before any of its faults, then serves the
//! faults itself: a fault served on the CPU that read it costs ~4.5 us here, a hand-off to
//! another thread ~24 us more (`limits.md`), so readers are the servers.
//!
//! Every reader polls the uffd, unless `standby_readers` is set: then reader 0 always polls the
//! uffd and the others stand by until faults queue up (every poller of a uffd is woken by
//! every fault, and on a host whose other cores are busy a second reader woken for nothing
//! may cost the guest more than it serves). After reading a fault, reader 0
//! looks whether another is already waiting; if so it calls one helper in, which polls the
//! uffd too until it has found no work for `HELPER_IDLE`. A standing-by reader also looks every
//! `STANDBY_CHECK` whether reader 0 has been serving one batch for `PRIMARY_STUCK` while
//! messages wait (held up behind an export, say), and then joins, so a REMOVE is never left
//! unread behind a busy reader 0.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use page_tracker::PageRange;
use rustix::event::{PollFd, PollFlags};
use uffd_core::{Event, EventBuffer};

use crate::deferred::Due;
use crate::fault::{Fault, FaultKind};
use crate::metrics::Metrics;
use crate::serve::{Scratch, serve, wake_page};
use crate::shared::Shared;
use crate::throttle::Throttle;

/// How long a helper reader polls the uffd without finding work before it stands by again.
const HELPER_IDLE: Duration = Duration::from_millis(20);
/// How often a standing-by reader looks whether reader 0 is stuck.
const STANDBY_CHECK: Duration = Duration::from_millis(10);
/// How long reader 0 may serve one batch, with messages waiting, before a helper joins.
const PRIMARY_STUCK: Duration = Duration::from_millis(1);

pub(crate) fn run(shared: Arc<Shared>, index: usize) {
    // Without standby every reader polls the uffd, as reader 0 does.
    let primary = index == 0 || !shared.config.standby_readers;
    // Reader 0 calls the standing-by readers in.
    let calls_helpers = index == 0 && shared.config.standby_readers;
    let mut active = primary;
    let mut idle_since = Instant::now();
    let mut batch = EventBuffer::new(shared.config.event_batch);
    let mut scratch = Scratch::new(shared.window_bytes());
    let mut faults: Vec<Fault> = Vec::with_capacity(shared.config.event_batch);
    let mut removes: Vec<(u64, u64)> = Vec::new();
    let mut due: Vec<Due> = Vec::new();
    while !shared.is_stopping() {
        if active {
            let woke = wait_readable(&shared, !primary);
            if !primary && !woke && idle_since.elapsed() >= HELPER_IDLE {
                active = false;
                shared.helpers_active.fetch_sub(1, Ordering::AcqRel);
                continue;
            }
        } else {
            if stand_by(&shared) {
                active = true;
                idle_since = Instant::now();
                shared.helpers_active.fetch_add(1, Ordering::AcqRel);
            }
            run_due(&shared, &mut due, &mut scratch);
            continue;
        }
        if shared.is_stopping() {
            break;
        }
        faults.clear();
        removes.clear();
        // The madvising thread resumes as soon as its REMOVE is read and zaps the range; until
        // the REMOVE is recorded, no other reader may read a fault that could follow it, and
        // no install may pass its last state check (see `crate::locks`).
        let reading = shared.locks.reading();
        match reading.read_events(&mut batch) {
            Ok(events) => {
                for event in events {
                    classify(&shared, event, &mut faults, &mut removes);
                }
            }
            Err(e) => {
                shared.fatal(
                    None,
                    format!("reading the userfaultfd failed: {e}"),
                    Vec::new(),
                );
                break;
            }
        }
        if !removes.is_empty() {
            apply_removes(&shared, &removes);
        }
        drop(reading);
        if !faults.is_empty() {
            if !primary {
                idle_since = Instant::now();
            }
            if calls_helpers {
                call_helper_if_queued(&shared);
                shared.primary_busy.start();
            }
            shared.demand_active.fetch_add(1, Ordering::AcqRel);
            Metrics::add(&shared.metrics.faults, faults.len() as u64);
            for fault in faults.drain(..) {
                serve(&shared, fault, &mut scratch);
            }
            shared.demand_active.fetch_sub(1, Ordering::AcqRel);
            if calls_helpers {
                shared.primary_busy.end();
            }
        }
        run_due(&shared, &mut due, &mut scratch);
    }
}

/// Calls a standing-by reader in when another fault is already waiting in the uffd (one
/// zero-timeout poll, only while no helper is active).
fn call_helper_if_queued(shared: &Shared) {
    let helpers = shared.config.readers.max(1) - 1;
    if helpers == 0 || shared.helpers_active.load(Ordering::Acquire) >= helpers {
        return;
    }
    if uffd_readable(shared) {
        let _ = rustix::io::write(&shared.join_fd, &1u64.to_ne_bytes());
    }
}

/// Whether a message waits in the uffd (a zero-timeout poll).
fn uffd_readable(shared: &Shared) -> bool {
    let uffd = shared.locks.poll_fd();
    let mut fds = [PollFd::new(&uffd, PollFlags::IN)];
    let zero = crate::time::timespec(Duration::ZERO);
    matches!(rustix::event::poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
}

/// Waits, not polling the uffd, until reader 0 calls a helper in (`true` if this one took
/// the call), a deferred entry is queued, or the engine stops.
fn stand_by(shared: &Shared) -> bool {
    let timeout = next_due_timeout(shared, Some(STANDBY_CHECK));
    let mut fds = [
        PollFd::new(&shared.join_fd, PollFlags::IN),
        PollFd::new(&shared.stop_fd, PollFlags::IN),
        PollFd::new(&shared.kick_fd, PollFlags::IN),
    ];
    let _ = rustix::event::poll(&mut fds, timeout.as_ref());
    if fds[2].revents().contains(PollFlags::IN) {
        drain(&shared.kick_fd);
    }
    // A semaphore eventfd: one count per call, so one helper takes it.
    let mut count = [0u8; 8];
    if fds[0].revents().contains(PollFlags::IN)
        && rustix::io::read(&shared.join_fd, &mut count).is_ok()
    {
        return true;
    }
    shared.primary_busy.longer_than(PRIMARY_STUCK) && uffd_readable(shared)
}

fn drain(fd: &impl rustix::fd::AsFd) {
    // Non-blocking: another reader may have drained it first.
    let mut count = [0u8; 8];
    let _ = rustix::io::read(fd, &mut count);
}

/// The poll timeout: until the next deferred entry is due, at most `cap`.
fn next_due_timeout(shared: &Shared, cap: Option<Duration>) -> Option<rustix::time::Timespec> {
    let due = shared
        .deferred
        .lock()
        .next_due()
        .map(|at| at.saturating_duration_since(Instant::now()));
    match (due, cap) {
        (Some(d), Some(c)) => Some(d.min(c)),
        (d, c) => d.or(c),
    }
    .map(crate::time::timespec)
}

/// Polls the uffd, the stop and the kick eventfds; the timeout is the next deferred entry's due
/// time, so a deferred fault never waits for an unrelated event (and for a helper at most
/// `HELPER_IDLE`). Returns whether anything was ready.
fn wait_readable(shared: &Shared, helper: bool) -> bool {
    let timeout = next_due_timeout(shared, helper.then_some(HELPER_IDLE));
    let uffd = shared.locks.poll_fd();
    let mut fds = [
        PollFd::new(&uffd, PollFlags::IN),
        PollFd::new(&shared.stop_fd, PollFlags::IN),
        PollFd::new(&shared.kick_fd, PollFlags::IN),
    ];
    let ready = matches!(rustix::event::poll(&mut fds, timeout.as_ref()), Ok(n) if n > 0);
    if fds[2].revents().contains(PollFlags::IN) {
        drain(&shared.kick_fd);
    }
    ready
}

fn classify(shared: &Shared, event: Event, faults: &mut Vec<Fault>, removes: &mut Vec<(u64, u64)>) {
    match event {
        Event::PageFault(pf) => {
            let kind = if pf.is_wp() {
                FaultKind::WriteProtect
            } else if pf.is_write() {
                FaultKind::Write
            } else {
                FaultKind::Read
            };
            let addr = shared.page_size.align_down(pf.address);
            faults.push(Fault::new(addr, kind));
        }
        Event::Remove { start, end } | Event::Unmap { start, end } => {
            // UNMAP: the range is gone; marking it removed makes any later fault there (a new
            // mapping at the same place) read zeros rather than old snapshot bytes.
            removes.push((start, end));
        }
        Event::Remap { from, to, len } => {
            // Under the read gate (the caller holds it): no install is between computing its
            // host address and its COPY.
            Metrics::add(&shared.metrics.other_events, 1);
            if !shared.layout.write().move_region(from, to, len) {
                tracing::warn!(
                    from,
                    to,
                    len,
                    "REMAP of part of a region: a fault in the moved part is outside the layout, a fatal error"
                );
            }
        }
        Event::Fork { uffd } => {
            // A forked child's memory is not ours to serve; closing its uffd lets the kernel
            // handle its faults normally.
            Metrics::add(&shared.metrics.other_events, 1);
            drop(uffd);
        }
        Event::Unknown { code, .. } => {
            Metrics::add(&shared.metrics.other_events, 1);
            static UNKNOWN: Throttle = Throttle::new();
            if let Some(held_back) = UNKNOWN.allow() {
                tracing::warn!(code, held_back, "unknown userfaultfd event ignored");
            }
        }
    }
}

/// Marks every page touched by the batch's REMOVE/UNMAP ranges `Removed`, under the read
/// gate (the caller holds it): no install is between its last state check and the end of
/// its COPY meanwhile. An install already past its COPY records over `Removed` without
/// resurrecting it (installs never downgrade); a zero install for a write records `Dirty`
/// over it, and a fault there later, once the VMM has zapped the page, is served zeros.
fn apply_removes(shared: &Shared, removes: &[(u64, u64)]) {
    let layout = shared.layout.read();
    let page = shared.page_bytes();
    for &(start, end) in removes {
        Metrics::add(&shared.metrics.removes, 1);
        for region in layout.regions() {
            let lo = start.max(region.host_addr);
            let hi = end.min(region.end());
            if lo >= hi {
                continue;
            }
            let first = (region.offset + (lo - region.host_addr)) / page;
            let last = (region.offset + (hi - region.host_addr)).div_ceil(page);
            if let Ok(range) = PageRange::new(first, last)
                && shared.tracker.remove(range).is_ok()
            {
                Metrics::add(&shared.metrics.removed_pages, range.len());
            }
        }
    }
}

fn run_due(shared: &Shared, due: &mut Vec<Due>, scratch: &mut Scratch) {
    due.clear();
    shared.deferred.lock().take_due(Instant::now(), due);
    for entry in due.drain(..) {
        match entry {
            Due::Fault { addr, kind } => serve(shared, Fault::new(addr, kind), scratch),
            Due::Wake { addr } => {
                wake_page(shared, addr);
            }
        }
    }
}

/// Wakes every deferred fault and pending retry (on stop): a guest thread is never left
/// waiting on a queue nobody will serve.
pub(crate) fn wake_all_deferred(shared: &Shared) {
    let entries = shared.deferred.lock().drain();
    for entry in entries {
        let addr = match entry {
            Due::Fault { addr, .. } | Due::Wake { addr } => addr,
        };
        wake_page(shared, addr);
    }
}
