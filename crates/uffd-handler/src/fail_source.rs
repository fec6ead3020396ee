//! Test hook (feature `test-hooks` only): a source that fails for good after a number of
//! successful reads, behind the hidden flag `--fail-source-after N`, for tests of the fatal
//! path that need a source failing for good at a chosen moment.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use uffd_engine::{Extent, PageSource, SourceError};

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

impl FailingSource {
    /// Takes one read from the budget, or fails once it is spent.
    fn spend(&self, offset: u64) -> Result<(), SourceError> {
        self.budget
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .map(|_| ())
            .map_err(|_| {
                SourceError(format!(
                    "injected storage failure at image offset {offset:#x} (--fail-source-after)"
                ))
            })
    }
}

impl PageSource for FailingSource {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn extent(&self, offset: u64, max_len: u64) -> Result<Extent, SourceError> {
        self.inner.extent(offset, max_len)
    }

    fn read_into(&self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        self.spend(offset)?;
        self.inner.read_into(offset, buf)
    }
}
