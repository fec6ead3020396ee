//! Test hook (feature `test-hooks` only): a source that fails for good after a number of
//! successful reads, behind the hidden flag `--fail-source-after N`. A real source cannot be
//! made to fail on demand (the data files are `mmap`ed: a truncated file raises SIGBUS rather
//! than an error), so the fatal-error path is tested through this wrapper.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use snapshot_format::Chunk;

use uffd_engine::{PageSource, SourceError};

/// Passes `budget` reads through to `inner`, then fails every read.
pub(crate) struct FailingSource {
    inner: Arc<dyn PageSource>,
    budget: AtomicU64,
}

impl FailingSource {
    /// Wraps `inner`.
    pub(crate) fn new(inner: Arc<dyn PageSource>, budget: u64) -> Self {
        FailingSource {
            inner,
            budget: AtomicU64::new(budget),
        }
    }
}

impl PageSource for FailingSource {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn chunk(&self, offset: u64, max_len: u64) -> Result<Chunk<'_>, SourceError> {
        let left = self
            .budget
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        match left {
            Ok(_) => self.inner.chunk(offset, max_len),
            Err(_) => Err(SourceError(format!(
                "injected storage failure at image offset {offset:#x} (--fail-source-after)"
            ))),
        }
    }
}
