//! The engine's handle: start, inspect, export, prefetch, stop and close.

use std::ops::Range as Span;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, bounded};
use page_tracker::{Geometry, PageTracker};
use parking_lot::{Mutex, RwLock};
use uffd_core::{Range, RegisterMode, Uffd, WriteProtectMode};

use crate::fetch::{self, FetchQueue};
use crate::graduate;
use crate::layout::GuestLayout;
use crate::locks::{Exclusive, Locks};
use crate::metrics::{self, MetricsSnapshot};
use crate::prefetch::{self, PrefetchHandle};
use crate::reader;
use crate::shared::Shared;
use crate::source::PageSource;
use crate::time::timespec;
use crate::{EngineConfig, EngineError, EngineExit};

/// The dirty and empty page sets, as sorted image byte ranges.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PageSets {
    /// Pages written since restore (or since the last generation reset).
    pub dirty: Vec<Span<u64>>,
    /// Pages that must read as zeros (zero-filled or freed by the guest).
    pub empty: Vec<Span<u64>>,
}

/// When the uffd may be closed (closing while the VMM can still fault turns every unfaulted
/// page into a silent zero page).
#[derive(Debug)]
pub enum CloseWhen {
    /// Wait (up to the timeout) for the VMM, watched through its pidfd, to exit.
    VmmExited {
        /// `pidfd_open` of the VMM.
        pidfd: OwnedFd,
        /// How long to wait.
        timeout: Duration,
    },
    /// Kill the VMM through its pidfd, then wait for it.
    KillVmm {
        /// `pidfd_open` of the VMM.
        pidfd: OwnedFd,
    },
    /// Populate every page still Missing, unregister the regions, then close: the VMM runs
    /// on without a handler.
    Graduate,
    /// The caller guarantees nothing can fault on the registered memory any more (it is
    /// unmapped, or its process has exited).
    OwnerGuarantees,
}

/// The page-fault handler engine. Dropping it stops the threads but never closes the uffd
/// early: use [`Engine::close`].
pub struct Engine {
    shared: Arc<Shared>,
    readers: Vec<JoinHandle<()>>,
    exits: Receiver<EngineExit>,
    prefetches: Mutex<Vec<Arc<AtomicBool>>>,
    /// Set once [`Engine::graduate`] has succeeded.
    graduated: bool,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Starts serving `uffd` (adopted from the VMM, or created here) for `layout`, with bytes
    /// from `source`.
    pub fn start(
        uffd: Uffd,
        layout: GuestLayout,
        source: Arc<dyn PageSource>,
        config: EngineConfig,
    ) -> Result<Engine, EngineError> {
        if source.size() < layout.image_size() {
            return Err(EngineError::SourceTooSmall {
                source_size: source.size(),
                image_size: layout.image_size(),
            });
        }
        let page_size = layout.page_size();
        let tracker_page = page_tracker::PageSize::new(page_size.bytes())?;
        let tracker = PageTracker::new(Geometry::new(0, layout.image_size(), tracker_page)?)?;
        if config.dirty_tracking {
            // Registering an already registered range again updates its modes.
            for region in layout.regions() {
                uffd.register(region.range()?, RegisterMode::MISSING | RegisterMode::WP)?;
            }
        }
        let stop_fd =
            rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).map_err(|errno| {
                EngineError::Os {
                    what: "eventfd",
                    errno,
                }
            })?;
        let kick_fd = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )
        .map_err(|errno| EngineError::Os {
            what: "eventfd",
            errno,
        })?;
        let join_fd = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC
                | rustix::event::EventfdFlags::NONBLOCK
                | rustix::event::EventfdFlags::SEMAPHORE,
        )
        .map_err(|errno| EngineError::Os {
            what: "eventfd",
            errno,
        })?;
        let (exit_tx, exits) = bounded(1);
        let shared = Arc::new(Shared {
            locks: Locks::new(uffd),
            layout: RwLock::new(layout),
            page_size,
            tracker,
            source,
            stopping: AtomicBool::new(false),
            wp: config.dirty_tracking,
            zeros: vec![0u8; zero_buffer_len(page_size.bytes(), config.fault_around_pages)]
                .into_boxed_slice(),
            deferred: Mutex::default(),
            retries: Mutex::default(),
            retrying: AtomicUsize::new(0),
            metrics: metrics::Metrics::default(),
            stop_fd,
            kick_fd,
            join_fd,
            primary_busy: Default::default(),
            helpers_active: AtomicUsize::new(0),
            fetch: FetchQueue::default(),
            demand_active: AtomicUsize::new(0),
            exit_tx,
            exit_sent: AtomicBool::new(false),
            working_set: Mutex::default(),
            config,
        });
        // Not joined: a fetcher inside a stalled read exits when the read returns.
        let _fetchers =
            fetch::start(&shared, shared.config.fetchers).map_err(|e| EngineError::Os {
                what: "spawning a fetcher thread",
                errno: rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::AGAIN),
            })?;
        let readers = (0..shared.config.readers.max(1))
            .map(|i| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("uffd-reader-{i}"))
                    .spawn(move || {
                        if let Some(&cpu) = shared
                            .config
                            .reader_cpus
                            .get(i % shared.config.reader_cpus.len().max(1))
                        {
                            let mut set = rustix::thread::CpuSet::new();
                            set.set(cpu);
                            if let Err(e) = rustix::thread::sched_setaffinity(None, &set) {
                                tracing::warn!(cpu, %e, "cannot pin reader");
                            }
                        }
                        let on_panic = shared.clone();
                        if let Err(panic) =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                reader::run(shared, i)
                            }))
                        {
                            // A bug, but never a silent one: the faults this reader would have
                            // served would wait forever. The owner learns and acts.
                            let what = panic
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                                .unwrap_or_default();
                            on_panic.fatal(
                                None,
                                format!("reader thread panicked: {what}"),
                                Vec::new(),
                            );
                        }
                    })
                    .map_err(|e| EngineError::Os {
                        what: "spawning a reader thread",
                        errno: rustix::io::Errno::from_io_error(&e)
                            .unwrap_or(rustix::io::Errno::AGAIN),
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .inspect_err(|_| {
                shared.request_stop();
                fetch::stop(&shared);
            })?;
        Ok(Engine {
            shared,
            readers,
            exits,
            prefetches: Mutex::default(),
            graduated: false,
        })
    }

    /// Waits until every install in flight has recorded its state and counters. A faulting
    /// thread resumes as soon as its page is installed, a moment before the record; call this
    /// before reading states or metrics that must include that fault.
    pub fn settle(&self) {
        self.shared.locks.wait_for_installs();
    }

    /// A snapshot of the counters and the service latency histogram.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared.metrics.snapshot()
    }

    /// The per-page states (read-only use: inspection, tests, statistics).
    pub fn tracker(&self) -> &PageTracker {
        &self.shared.tracker
    }

    /// The layout being served.
    pub fn layout(&self) -> GuestLayout {
        self.shared.layout.read().clone()
    }

    /// Receives the engine's exit reason (a fatal error, or the VMM gone) when it stops
    /// serving on its own.
    pub fn exits(&self) -> &Receiver<EngineExit> {
        &self.exits
    }

    /// Prefetches the image byte ranges of `order`, in that order, in the background.
    pub fn prefetch(&self, order: impl IntoIterator<Item = Span<u64>>) -> PrefetchHandle {
        let stop = Arc::new(AtomicBool::new(false));
        self.prefetches.lock().push(stop.clone());
        prefetch::start(self.shared.clone(), order.into_iter().collect(), stop)
    }

    /// The working set recorded so far (with `record_working_set`): image byte ranges in the
    /// order demand faults first installed them, adjacent pages joined.
    pub fn working_set(&self) -> Vec<Span<u64>> {
        let page = self.page_bytes();
        let mut out: Vec<Span<u64>> = Vec::new();
        for &(first, count) in self.shared.working_set.lock().iter() {
            let span = first * page..(first + count) * page;
            match out.last_mut() {
                Some(last) if last.end == span.start => last.end = span.end,
                _ => out.push(span),
            }
        }
        out
    }

    /// Whether written pages are tracked (`EngineConfig::dirty_tracking`).
    pub fn dirty_tracking(&self) -> bool {
        self.shared.wp
    }

    /// The page size in bytes.
    pub fn page_bytes(&self) -> u64 {
        self.shared.page_bytes()
    }

    /// The dirty and empty sets, consistent with in-flight work: taken under the settle
    /// write lock, when no install is between its check and its record.
    pub fn page_sets(&self) -> Result<PageSets, EngineError> {
        if !self.shared.wp {
            return Err(EngineError::NoDirtyTracking);
        }
        let _exclusive = self.shared.locks.exclusive();
        Ok(self.collect_sets())
    }

    fn collect_sets(&self) -> PageSets {
        let page = self.page_bytes();
        let bytes = |r: &page_tracker::PageRange| r.start() * page..r.end() * page;
        PageSets {
            dirty: self
                .shared
                .tracker
                .dirty_ranges()
                .iter()
                .map(bytes)
                .collect(),
            empty: self
                .shared
                .tracker
                .empty_ranges()
                .iter()
                .map(bytes)
                .collect(),
        }
    }

    /// Exports the sets and starts a new generation atomically: dirty pages become Clean and
    /// are write-protected again, so the next export holds only later writes.
    pub fn export_and_reset(&self) -> Result<PageSets, EngineError> {
        if !self.shared.wp {
            return Err(EngineError::NoDirtyTracking);
        }
        let exclusive = self.shared.locks.exclusive();
        let sets = self.collect_sets();
        for span in &sets.dirty {
            self.reprotect(&exclusive, span.clone())?;
        }
        self.shared.tracker.reset_generation_all();
        Ok(sets)
    }

    fn reprotect(&self, exclusive: &Exclusive<'_>, span: Span<u64>) -> Result<(), EngineError> {
        let layout = self.shared.layout.read();
        for region in layout.regions() {
            let lo = span.start.max(region.offset);
            let hi = span.end.min(region.offset + region.size);
            if lo >= hi {
                continue;
            }
            let range = Range::new(
                region.host_addr + (lo - region.offset),
                hi - lo,
                self.shared.page_size,
            )?;
            let outcome = exclusive.writeprotect(range, WriteProtectMode::WP);
            if !outcome.is_complete() {
                return Err(EngineError::Reprotect {
                    range,
                    status: outcome.status,
                });
            }
        }
        Ok(())
    }

    /// Stops reading new work, stops prefetch, joins the threads, and wakes every deferred
    /// fault. The uffd stays open (see [`Engine::close`]). Idempotent.
    pub fn stop(&mut self) {
        for stop in self.prefetches.lock().iter() {
            stop.store(true, Ordering::Release);
        }
        self.shared.request_stop();
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        fetch::stop(&self.shared);
        reader::wake_all_deferred(&self.shared);
    }

    /// Closes the uffd once `when` allows it; unregisters the regions first (a close racing
    /// KVM's async page faults livelocked older kernels).
    ///
    /// # Errors
    ///
    /// [`CloseRefused`], holding this engine back unclosed (the uffd open and registered), when
    /// `when` cannot be met: graduation could not install a page, or the VMM did not exit or
    /// could not be killed. The caller then kills the VMM or leaves it frozen; dropping the
    /// engine instead would close the uffd and let the VMM read zeros.
    pub fn close(mut self, when: CloseWhen) -> Result<(), Box<CloseRefused>> {
        let refused =
            |engine: Engine, error: EngineError| Err(Box::new(CloseRefused { engine, error }));
        match when {
            CloseWhen::Graduate => {
                if let Err(error) = self.graduate() {
                    return refused(self, error);
                }
            }
            CloseWhen::VmmExited { pidfd, timeout } => {
                self.stop();
                if !wait_pidfd(&pidfd, timeout) {
                    return refused(self, EngineError::VmmStillRunning(timeout));
                }
            }
            CloseWhen::KillVmm { pidfd } => {
                self.stop();
                let kill = rustix::process::Signal::KILL;
                if let Err(errno) = rustix::process::pidfd_send_signal(&pidfd, kill) {
                    let what = "pidfd_send_signal";
                    return refused(self, EngineError::Os { what, errno });
                }
                if !wait_pidfd(&pidfd, Duration::from_secs(10)) {
                    return refused(self, EngineError::VmmStillRunning(Duration::from_secs(10)));
                }
            }
            CloseWhen::OwnerGuarantees => self.stop(),
        }
        let ranges: Vec<Range> = (self.shared.layout.read().regions().iter())
            .filter_map(|region| region.range().ok())
            .collect();
        self.shared.locks.exclusive().close(ranges);
        Ok(())
        // The uffd closes when the last reference to the shared state goes, here: every
        // thread holding one has been joined.
    }

    /// Installs every page the snapshot holds bytes for while still serving faults (the bulk
    /// prefetch, then a sweep of what it left), then stops serving. Only holes in the snapshot
    /// stay Missing, to read zeros from the kernel once [`Engine::close`] with
    /// [`CloseWhen::Graduate`] unregisters the ranges. Calling it first lets the owner read
    /// the final counters before the close; the close then does not graduate again.
    ///
    /// # Errors
    ///
    /// [`EngineError::Graduation`] naming a page that could not be installed (its source
    /// failed past the retries). The ranges stay registered and the uffd open: kill the VMM
    /// ([`CloseWhen::KillVmm`]) or leave it frozen; never unregister over missing bytes.
    pub fn graduate(&mut self) -> Result<(), EngineError> {
        if self.graduated {
            return Ok(());
        }
        let _span = tracing::info_span!("graduation").entered();
        let size = self.shared.layout.read().image_size();
        let started = Instant::now();
        let report = self
            .prefetch(std::iter::once(0..size))
            .wait(self.page_bytes());
        let sweep = graduate::sweep(&self.shared)?;
        tracing::info!(?report, ?sweep, elapsed = ?started.elapsed(), "graduation installs done");
        self.stop();
        if sweep.vmm_gone {
            self.graduated = true;
            return Ok(());
        }
        // Every page still Missing now must be a hole: a page a demand fault held while the
        // sweep passed ended installed, or its source failed for good (a fatal exit).
        let holes = graduate::sweep_holes_only(&self.shared)?;
        tracing::info!(
            holes,
            "pages left Missing at graduation: holes in the snapshot"
        );
        Ok(())
    }
}

/// Why [`Engine::close`] refused: the engine is handed back unclosed, its uffd open and its
/// ranges registered, so that no page reads zeros in place of snapshot bytes.
#[derive(Debug, thiserror::Error)]
#[error("the userfaultfd was not closed: {error}")]
pub struct CloseRefused {
    /// The engine, stopped or still serving, never closed.
    pub engine: Engine,
    /// Why.
    #[source]
    pub error: EngineError,
}

impl Drop for Engine {
    fn drop(&mut self) {
        if !self.readers.is_empty() {
            self.stop();
        }
    }
}

/// One fault-around window of zeros for base pages (at most 2 MiB), one page for huge pages.
fn zero_buffer_len(page: u64, fault_around_pages: u64) -> usize {
    page.max((page * fault_around_pages.max(1)).min(2 << 20)) as usize
}

fn wait_pidfd(pidfd: &OwnedFd, timeout: Duration) -> bool {
    let mut fds = [rustix::event::PollFd::new(
        pidfd,
        rustix::event::PollFlags::IN,
    )];
    matches!(rustix::event::poll(&mut fds, Some(&timespec(timeout))), Ok(n) if n > 0)
}
