//! How the engine serves: threads, batching, fault-around, dirty tracking, retries, prefetch.

use std::time::Duration;

#[cfg(feature = "test-hooks")]
use crate::hooks::Hook;
use crate::retry::RetryPolicy;

/// How the engine serves.
#[derive(Clone)]
pub struct EngineConfig {
    /// Threads that read the uffd and serve what they read (default 2: one per core here).
    pub readers: usize,
    /// Readers other than the first stand by, not polling the uffd, and join only while
    /// faults queue up (or while the first is held up with messages waiting), so a lone
    /// faulting vCPU wakes one thread per fault, not every reader. Off by default: on an idle
    /// host, a reader polling on each CPU is what serves a fault on the faulting thread's own
    /// CPU, and standing by cost 2.3x the unpinned fault latency (docs/benchmarks.md).
    pub standby_readers: bool,
    /// CPUs to pin reader threads to, round robin (empty: no pinning). Pinning a reader
    /// beside the vCPU threads it serves avoids a cross-CPU wake-up per fault.
    pub reader_cpus: Vec<usize>,
    /// Messages read per `read(2)` (default 1). With two readers on one uffd, one message
    /// per read lets both serve in parallel; a large batch lets one reader drain every
    /// pending fault while the other idles: 108 k against 61 k faults/s for two faulting
    /// threads here (`docs/benchmarks.md`). Raise it for a single reader facing many vCPUs.
    pub event_batch: usize,
    /// Fault-around window in pages (a power of two; 1 = off): a read fault installs the
    /// aligned window of still-Missing pages around it in one COPY.
    pub fault_around_pages: u64,
    /// Track written pages: re-register the regions MISSING|WP, install read faults
    /// write-protected, and record WP faults as dirty.
    pub dirty_tracking: bool,
    /// Source failure retries.
    pub retry: RetryPolicy,
    /// Delay before a deferred fault (EAGAIN, page in flight) is tried again.
    pub defer_pacing: Duration,
    /// Prefetch worker threads.
    pub prefetch_workers: usize,
    /// Pages per prefetch COPY (at most; capped at 2 MiB, so demand faults on a page inside a
    /// chunk in flight wait for one 2 MiB copy at most).
    pub prefetch_chunk_pages: u64,
    /// Fetcher threads: they read the bytes of faults whose bytes are not resident (page
    /// cache misses), so no read from storage blocks a thread that reads the uffd. Each
    /// stalled read holds one fetcher until it returns.
    pub fetchers: usize,
    /// How long a fetch may take before its fault is treated as a source failure: the page is
    /// woken after the backoff and fetched again (a retry cycle). A read that returns later is
    /// dropped.
    pub read_deadline: Duration,
    /// Record the order in which demand faults first install pages (the working set), to
    /// replay as the prefetch order of the next restore.
    pub record_working_set: bool,
    /// A callback at the named hook points (tests only).
    #[cfg(feature = "test-hooks")]
    pub hook: Option<Hook>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            readers: 2,
            standby_readers: false,
            reader_cpus: Vec::new(),
            event_batch: 1,
            fault_around_pages: 1,
            dirty_tracking: false,
            retry: RetryPolicy::default(),
            defer_pacing: Duration::from_micros(200),
            prefetch_workers: 2,
            prefetch_chunk_pages: 512,
            fetchers: 4,
            read_deadline: Duration::from_secs(2),
            record_working_set: false,
            #[cfg(feature = "test-hooks")]
            hook: None,
        }
    }
}

impl std::fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineConfig")
            .field("readers", &self.readers)
            .field("standby_readers", &self.standby_readers)
            .field("reader_cpus", &self.reader_cpus)
            .field("event_batch", &self.event_batch)
            .field("fault_around_pages", &self.fault_around_pages)
            .field("dirty_tracking", &self.dirty_tracking)
            .field("retry", &self.retry)
            .field("defer_pacing", &self.defer_pacing)
            .field("prefetch_workers", &self.prefetch_workers)
            .field("prefetch_chunk_pages", &self.prefetch_chunk_pages)
            .field("fetchers", &self.fetchers)
            .field("read_deadline", &self.read_deadline)
            .field("record_working_set", &self.record_working_set)
            .finish()
    }
}
