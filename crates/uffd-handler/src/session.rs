//! One VMM being served: the engine, the VMM's liveness, prefetch, the snapshot loop, and the
//! orderly end (the uffd is closed only once nothing can fault on it any more).

use std::ops::Range;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use tracing::{error, info, warn};

use super::generation::{GenerationError, NextGeneration, SnapshotSummary};
use super::prefetch_accuracy::prefetch_accuracy;
use super::stats::{PageCounts, PrefetchAccuracy, VmmStats};
use super::vmm_memory::VmmMemory;
use crate::cli::{OnFatal, PrefetchMode};
use snapshot_format::working_set;
use uffd_engine::GuestLayout;
use uffd_engine::{CloseWhen, Engine, EngineError, MetricsSnapshot, PrefetchReport};
use uffd_handshake::{PeerCredentials, PeerWatch};

/// How long the first-fault sampler runs before giving up (a guest that never faults).
const SAMPLE_FIRST_FAULT_FOR: Duration = Duration::from_secs(30);
/// How long to wait for a VMM to exit once its exit is expected (killed, or its memory gone).
const EXIT_WAIT: Duration = Duration::from_secs(10);

/// How a session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionClose {
    /// The VMM exited: close the uffd.
    Exited,
    /// Kill the VMM, wait for it, close.
    Kill,
    /// Install every page, unregister, close; the VMM runs on. If a page cannot be installed,
    /// the ranges stay registered and the VMM is killed or left frozen, as `or_else` says.
    Graduate {
        /// What to do with the VMM when graduation fails.
        or_else: OnFatal,
    },
    /// Stop serving and leave the uffd open until the process exits (`--on-fatal exit`): the
    /// VMM keeps its own copy, so its faulting threads stay blocked, never fed zeros.
    Abandon,
}

/// What was known when the session ended.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) metrics: MetricsSnapshot,
    pub(crate) pages: PageCounts,
    pub(crate) prefetch: Option<PrefetchReport>,
    /// Why the uffd could not be closed as planned, if so.
    pub(crate) close_error: Option<String>,
}

/// A background prefetch and its report, there once it has finished.
struct Prefetch {
    thread: JoinHandle<()>,
    report: Arc<Mutex<Option<PrefetchReport>>>,
}

/// A VMM being served.
pub(crate) struct Session {
    /// The daemon's number for this session (the metrics' `vmm` label).
    id: u64,
    engine: Engine,
    watch: PeerWatch,
    peer: PeerCredentials,
    layout: GuestLayout,
    started: Instant,
    first_fault: Option<Duration>,
    prefetch: Option<Prefetch>,
    prefetch_mode: PrefetchMode,
    /// Pages the prefetch order visits.
    prefetch_total_pages: u64,
    next_generation: Option<NextGeneration>,
    record_working_set: Option<PathBuf>,
}

/// What a session is started with, besides its engine and VMM.
pub(crate) struct SessionPlan {
    /// The daemon's number for the session.
    pub(crate) id: u64,
    /// `--prefetch`.
    pub(crate) prefetch_mode: PrefetchMode,
    /// The prefetch order (image byte ranges), if any.
    pub(crate) prefetch: Option<Vec<Range<u64>>>,
    /// `--next-generation`.
    pub(crate) next_generation: Option<NextGeneration>,
    /// `--record-working-set`'s file.
    pub(crate) record_working_set: Option<PathBuf>,
}

impl Session {
    /// Starts serving with `engine` (already running) and, if the plan has a prefetch order,
    /// a background prefetch in that order.
    pub(crate) fn new(
        engine: Engine,
        watch: PeerWatch,
        peer: PeerCredentials,
        plan: SessionPlan,
    ) -> Self {
        let SessionPlan {
            id,
            prefetch_mode,
            prefetch,
            next_generation,
            record_working_set,
        } = plan;
        let started = Instant::now();
        let layout = engine.layout();
        let page = engine.page_bytes().max(1);
        let prefetch_total_pages = prefetch.as_ref().map_or(0, |order| {
            order
                .iter()
                .map(|r| r.end.div_ceil(page).saturating_sub(r.start / page))
                .sum()
        });
        let prefetch = prefetch.and_then(|order| {
            let handle = engine.prefetch(order);
            let page = engine.page_bytes();
            let report = Arc::new(Mutex::new(None));
            let done = report.clone();
            std::thread::Builder::new()
                .name("prefetch-wait".into())
                .spawn(move || *done.lock() = Some(handle.wait(page)))
                .inspect_err(|e| warn!(error = %e, "cannot wait for the prefetch; no report"))
                .ok()
                .map(|thread| Prefetch { thread, report })
        });
        if watch.pidfd().is_none() && !watch.already_exited() {
            warn!(
                pid = peer.pid,
                "no pidfd for the VMM: its exit is noticed only when an ioctl finds its memory gone"
            );
        }
        Session {
            id,
            engine,
            watch,
            peer,
            layout,
            started,
            first_fault: None,
            prefetch,
            prefetch_mode,
            prefetch_total_pages,
            next_generation,
            record_working_set,
        }
    }

    /// The daemon's number for this session.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The VMM's pid.
    pub(crate) fn pid(&self) -> i32 {
        self.peer.pid
    }

    /// The VMM's pidfd, if one could be had.
    pub(crate) fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        self.watch.pidfd()
    }

    /// Whether the VMM has exited (its pidfd is readable), without waiting.
    pub(crate) fn vmm_exited(&self) -> bool {
        self.watch.already_exited() || self.pidfd().is_some_and(|fd| readable(fd, Duration::ZERO))
    }

    /// Notes the first demand fault served; the poll timeout that keeps sampling it.
    pub(crate) fn sample_first_fault(&mut self) -> Option<Duration> {
        if self.first_fault.is_some() {
            return None;
        }
        let elapsed = self.started.elapsed();
        if let Some(first) = self.engine.metrics().first_fault_served {
            self.first_fault = Some(first);
            info!(after = ?first, "first fault served");
            return None;
        }
        (elapsed < SAMPLE_FIRST_FAULT_FOR).then_some(Duration::from_millis(1))
    }

    /// Pages the prefetch order visits (0 without prefetch).
    pub(crate) fn prefetch_total_pages(&self) -> u64 {
        self.prefetch_total_pages
    }

    /// Prefetch precision and recall, or why they are unknown.
    pub(crate) fn prefetch_accuracy(&self) -> PrefetchAccuracy {
        prefetch_accuracy(self.prefetch_mode, self.layout.page_size().bytes())
    }

    /// Who is served and for how long.
    pub(crate) fn vmm_stats(&self, end: Option<String>) -> VmmStats {
        VmmStats {
            session: self.id,
            pid: self.peer.pid,
            uid: self.peer.uid,
            regions: self.layout.regions().len(),
            page_size: self.layout.page_size().bytes(),
            image_size: self.layout.image_size(),
            served_s: self.started.elapsed().as_secs_f64(),
            end,
        }
    }

    /// The engine's counters and page states now, settled.
    pub(crate) fn live(&self) -> (MetricsSnapshot, PageCounts) {
        self.engine.settle();
        let counts = self.engine.tracker().counts();
        (
            self.engine.metrics(),
            PageCounts::new(counts, self.engine.dirty_tracking()),
        )
    }

    /// Whether the prefetch is still running.
    pub(crate) fn prefetch_running(&self) -> bool {
        self.prefetch
            .as_ref()
            .is_some_and(|p| !p.thread.is_finished())
    }

    /// The prefetch's report, once it has finished.
    pub(crate) fn prefetch_report(&self) -> Option<PrefetchReport> {
        self.prefetch.as_ref().and_then(|p| *p.report.lock())
    }

    /// Writes the next generation (`snapshot`), if `--next-generation` was given.
    pub(crate) fn snapshot(&mut self) -> Option<Result<SnapshotSummary, GenerationError>> {
        let generation = self.next_generation.as_mut()?;
        info!(dir = %generation.dir().display(), "writing the next generation");
        let memory = VmmMemory::new(self.peer.pid, self.watch.pidfd(), self.engine.layout());
        Some(generation.snapshot(&self.engine, &memory))
    }

    /// Ends serving as `how` says, and reports.
    pub(crate) fn finish(self, how: SessionClose) -> Finished {
        let Session {
            engine,
            watch,
            prefetch,
            record_working_set,
            layout,
            peer,
            ..
        } = self;
        if how == SessionClose::Kill {
            // The guest stops faulting at once; the engine is drained after.
            match watch.kill() {
                Ok(()) => info!(pid = peer.pid, "VMM killed"),
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => error!(pid = peer.pid, error = %e, "cannot kill the VMM"),
            }
        }
        let mut engine = engine;
        // Graduation installs pages: it runs before the final figures are taken.
        let graduation = matches!(how, SessionClose::Graduate { .. }).then(|| engine.graduate());
        engine.settle();
        let metrics = engine.metrics();
        let pages = PageCounts::new(engine.tracker().counts(), engine.dirty_tracking());
        let working_set = record_working_set.map(|path| (path, engine.working_set()));
        let pidfd = watch.pidfd().and_then(|fd| fd.try_clone_to_owned().ok());
        let close_error = close(engine, how, graduation, pidfd, peer.pid);
        let prefetch = prefetch.and_then(|p| {
            let _ = p.thread.join();
            p.report.lock().take()
        });
        if let Some((path, ranges)) = working_set {
            if how == SessionClose::Abandon {
                info!("not writing the working set after a fatal error");
            } else {
                let page = layout.page_size().bytes();
                match working_set::write(&path, &ranges, page, layout.image_size()) {
                    Ok(()) => {
                        info!(path = %path.display(), ranges = ranges.len(), "working set written")
                    }
                    Err(e) => error!(error = %e, "cannot write the working set"),
                }
            }
        }
        drop(watch);
        Finished {
            metrics,
            pages,
            prefetch,
            close_error,
        }
    }
}

/// Closes the uffd when `how` allows it; never while the VMM may still fault. Returns what
/// went wrong, if anything; a refused close never drops the engine (which would close the uffd
/// under the VMM): the VMM is killed, or the uffd is kept open until the process exits.
fn close(
    engine: Engine,
    how: SessionClose,
    graduation: Option<Result<(), EngineError>>,
    pidfd: Option<OwnedFd>,
    pid: i32,
) -> Option<String> {
    let spare_pidfd = pidfd.as_ref().and_then(|fd| fd.try_clone().ok());
    if let Some(Err(error)) = graduation {
        error!(error = %error, "graduation failed; the ranges stay registered");
        return refused(engine, how, spare_pidfd, pid, error.to_string());
    }
    let when = match (how, pidfd) {
        (SessionClose::Abandon, _) => {
            abandon(engine);
            return None;
        }
        (SessionClose::Graduate { .. }, _) => CloseWhen::Graduate,
        (SessionClose::Exited | SessionClose::Kill, Some(pidfd)) => CloseWhen::VmmExited {
            pidfd,
            timeout: EXIT_WAIT,
        },
        // No pidfd: we only get here once an ioctl found the VMM's memory gone.
        (SessionClose::Exited, None) => CloseWhen::OwnerGuarantees,
        (SessionClose::Kill, None) => {
            abandon(engine);
            return Some(format!(
                "no pidfd to kill the VMM (pid {pid}) with; the uffd stays open until exit"
            ));
        }
    };
    let refusal = match engine.close(when) {
        Ok(()) => return None,
        Err(refusal) => refusal,
    };
    error!(error = %refusal.error, "the userfaultfd was not closed");
    let why = refusal.error.to_string();
    refused(refusal.engine, how, spare_pidfd, pid, why)
}

/// After a refused close (`why`): the VMM is killed if a graduation failed and `--on-fatal
/// kill` says so; otherwise our copy of the uffd stays open, never dropped under the VMM.
fn refused(
    engine: Engine,
    how: SessionClose,
    spare_pidfd: Option<OwnedFd>,
    pid: i32,
    why: String,
) -> Option<String> {
    match (how, spare_pidfd) {
        (
            SessionClose::Graduate {
                or_else: OnFatal::Kill,
            },
            Some(pidfd),
        ) => match engine.close(CloseWhen::KillVmm { pidfd }) {
            Ok(()) => Some(format!("{why}; the VMM (pid {pid}) was killed")),
            Err(refused) => {
                let also = refused.error.to_string();
                abandon(refused.engine);
                Some(format!(
                    "{why}; killing the VMM (pid {pid}) failed too ({also}): the uffd stays \
                         open and registered until exit"
                ))
            }
        },
        (SessionClose::Graduate { .. }, _) => {
            abandon(engine);
            Some(format!(
                "{why}; the VMM (pid {pid}) was left frozen (--on-fatal exit), its ranges still \
                 registered: it never reads zeros in place of snapshot bytes"
            ))
        }
        _ => {
            abandon(engine);
            Some(format!("{why}; the uffd stays open until exit"))
        }
    }
}

/// Stops serving and keeps our copy of the uffd open until the process exits: closing it
/// would unregister nothing the VMM still holds, but nothing may close it early.
fn abandon(mut engine: Engine) {
    engine.stop();
    std::mem::forget(engine);
}

fn readable(fd: BorrowedFd<'_>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let mut fds = [PollFd::from_borrowed_fd(fd, PollFlags::IN)];
        let left = deadline.saturating_duration_since(Instant::now());
        let left = Timespec::try_from(left).unwrap_or(Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        });
        match poll(&mut fds, Some(&left)) {
            Ok(n) if n > 0 => return true,
            Err(rustix::io::Errno::INTR) => continue,
            _ if Instant::now() < deadline => continue,
            _ => return false,
        }
    }
}
