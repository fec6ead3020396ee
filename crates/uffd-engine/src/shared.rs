//! State shared by the engine's threads.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use crossbeam_channel::Sender;
use page_tracker::Access;
use page_tracker::PageTracker;
use parking_lot::{Mutex, RwLock};
use uffd_core::{CopyMode, Outcome, PageSize, Range, ZeropageMode};

use crate::deferred::DeferredQueue;
use crate::fault::{Fault, Finish};
use crate::fetch::FetchQueue;
use crate::layout::GuestLayout;
use crate::locks::{Installing, Locks};
use crate::metrics::Metrics;
use crate::retry::RetryTable;
use crate::source::PageSource;
use crate::{EngineConfig, EngineExit, FatalError};

pub(crate) struct Shared {
    /// The uffd, behind the settle barrier and the read gate (see `crate::locks`).
    pub(crate) locks: Locks,
    /// Behind a lock only so a REMAP of a whole region can move it; read on every fault.
    pub(crate) layout: RwLock<GuestLayout>,
    pub(crate) page_size: PageSize,
    pub(crate) tracker: PageTracker,
    pub(crate) source: Arc<dyn PageSource>,
    pub(crate) stopping: AtomicBool,
    pub(crate) config: EngineConfig,
    /// Whether installs keep pages write-protected (dirty tracking).
    pub(crate) wp: bool,
    /// Zeros for one fault-around window of base pages (at most 2 MiB) or one huge page: the
    /// source of zero installs by COPY (`zero_buffer_len`).
    pub(crate) zeros: Box<[u8]>,
    pub(crate) deferred: Mutex<DeferredQueue>,
    pub(crate) retries: Mutex<RetryTable>,
    /// Pages with retry state; lets the hot path skip the retry lock when none fail.
    pub(crate) retrying: AtomicUsize,
    pub(crate) metrics: Metrics,
    /// An eventfd written once on stop; never drained, so every reader sees it.
    pub(crate) stop_fd: OwnedFd,
    /// An eventfd other threads write after queueing a deferred entry, so the readers
    /// recompute their poll timeout (a reader polls with the earliest due time it saw).
    pub(crate) kick_fd: OwnedFd,
    /// A semaphore eventfd reader 0 writes to call a standing-by reader in (faults queue up).
    pub(crate) join_fd: OwnedFd,
    /// Since when reader 0 has been serving its current batch.
    pub(crate) primary_busy: BusySince,
    /// Readers other than reader 0 polling the uffd now.
    pub(crate) helpers_active: AtomicUsize,
    /// Faults parked for the fetchers.
    pub(crate) fetch: FetchQueue,
    /// Faults being served right now; prefetch yields while it is non-zero.
    pub(crate) demand_active: AtomicUsize,
    pub(crate) exit_tx: Sender<EngineExit>,
    pub(crate) exit_sent: AtomicBool,
    /// First installs by demand faults, in order: (first page, page count).
    pub(crate) working_set: Mutex<Vec<(u64, u64)>>,
}

impl Shared {
    pub(crate) fn page_bytes(&self) -> u64 {
        self.page_size.bytes()
    }

    /// The bytes of one claim at most: a fault-around window, or one page.
    pub(crate) fn window_bytes(&self) -> usize {
        (self.page_bytes() * self.config.fault_around_pages.max(1)) as usize
    }

    /// The image offset of a host address, if the layout covers it.
    #[inline]
    pub(crate) fn image_offset(&self, addr: u64) -> Option<u64> {
        self.layout.read().image_offset(addr)
    }

    /// The host range of `pages` pages starting at image page `page`.
    pub(crate) fn host_range(&self, page: u64, pages: u64) -> Option<Range> {
        let offset = page.checked_mul(self.page_bytes())?;
        let (addr, region) = {
            let layout = self.layout.read();
            layout.host_addr(offset).map(|(a, r)| (a, *r))?
        };
        let len = pages.checked_mul(self.page_bytes())?;
        if addr + len > region.end() {
            return None;
        }
        Range::new(addr, len, self.page_size).ok()
    }

    /// The image pages `[first, end)` of the region holding image page `page`. Fault-around
    /// windows and prefetch runs are clipped to it: the next region of the image lives
    /// elsewhere in the VMM's address space, so one COPY cannot span both.
    pub(crate) fn region_pages(&self, page: u64) -> Option<(u64, u64)> {
        let bytes = self.page_bytes();
        let layout = self.layout.read();
        let (_, region) = layout.host_addr(page.checked_mul(bytes)?)?;
        Some((region.offset / bytes, (region.offset + region.size) / bytes))
    }

    /// Ends `fault` in the deferred queue, to be served again after the pacing delay.
    pub(crate) fn defer(&self, fault: Fault) {
        let due = Instant::now() + self.config.defer_pacing;
        self.deferred.lock().defer(fault.addr(), fault.kind(), due);
        Metrics::add(&self.metrics.deferred, 1);
        fault.finish(Finish::Deferred);
    }

    /// Ends serving: the owner learns why from the exit channel; readers stop.
    pub(crate) fn exit(&self, why: EngineExit) {
        if let EngineExit::Fatal(_) = why {
            Metrics::add(&self.metrics.fatal, 1);
        }
        if !self.exit_sent.swap(true, Ordering::AcqRel) {
            tracing::error!(?why, "engine stops serving");
            let _ = self.exit_tx.try_send(why);
        }
        self.request_stop();
    }

    pub(crate) fn fatal(&self, page_offset: Option<u64>, reason: String, errors: Vec<String>) {
        self.exit(EngineExit::Fatal(FatalError {
            page_offset,
            reason,
            errors,
        }));
    }

    /// The COPY mode of an install for `access`: write-protected for a read under dirty
    /// tracking, so the first write to the page is seen.
    pub(crate) fn copy_mode(&self, access: Access) -> CopyMode {
        if self.wp && access == Access::Read {
            CopyMode::WP
        } else {
            CopyMode::empty()
        }
    }

    /// Whether zeros for `access` go in by ZEROPAGE (no buffer, any length) rather than by a
    /// COPY of the zero buffer (at most its length).
    pub(crate) fn zeros_by_zeropage(&self, access: Access) -> bool {
        !self.wp && access == Access::Read && self.page_size == PageSize::Base4K
    }

    /// Installs zeros at `dst`: one COPY of zeros with MODE_WP under dirty tracking (never
    /// ZEROPAGE then WRITEPROTECT: a write in between would go unseen, known failure #16);
    /// ZEROPAGE for a plain read; a COPY of zeros for a write (cheaper than ZEROPAGE plus the
    /// COW fault) and on hugetlbfs, which has no ZEROPAGE. `dst` fits the zero buffer unless
    /// [`Shared::zeros_by_zeropage`].
    pub(crate) fn install_zeros(
        &self,
        installing: &Installing<'_>,
        dst: Range,
        access: Access,
    ) -> Outcome {
        if self.zeros_by_zeropage(access) {
            installing.zeropage(dst, ZeropageMode::empty())
        } else {
            installing.copy(
                dst,
                &self.zeros[..dst.len() as usize],
                self.copy_mode(access),
            )
        }
    }

    pub(crate) fn request_stop(&self) {
        self.stopping.store(true, Ordering::Release);
        let _ = rustix::io::write(&self.stop_fd, &1u64.to_ne_bytes());
    }

    /// Wakes the readers' polls (a deferred entry was queued by another thread).
    pub(crate) fn kick_readers(&self) {
        let _ = rustix::io::write(&self.kick_fd, &1u64.to_ne_bytes());
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}

/// Since when a thread has been busy, readable by others without a lock: nanoseconds since
/// `base`, plus one (0: idle).
#[derive(Debug)]
pub(crate) struct BusySince {
    base: Instant,
    since: AtomicU64,
}

impl Default for BusySince {
    fn default() -> Self {
        BusySince {
            base: Instant::now(),
            since: AtomicU64::new(0),
        }
    }
}

impl BusySince {
    pub(crate) fn start(&self) {
        let now = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
        self.since.store(now + 1, Ordering::Release);
    }

    pub(crate) fn end(&self) {
        self.since.store(0, Ordering::Release);
    }

    /// Whether it has been busy for longer than `limit`.
    pub(crate) fn longer_than(&self, limit: std::time::Duration) -> bool {
        match self.since.load(Ordering::Acquire) {
            0 => false,
            since => {
                let now = self.base.elapsed().as_nanos();
                now.saturating_sub(u128::from(since - 1)) > limit.as_nanos()
            }
        }
    }
}
