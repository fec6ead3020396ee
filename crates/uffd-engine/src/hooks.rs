//! Named points inside the install path where a test can park a thread, so races are staged
//! deterministically. Compiled only with the `test-hooks` feature; free otherwise.

/// Where in the install path a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookPoint {
    /// Source bytes fetched (if any), settle read lock not yet taken.
    BeforeBarrier,
    /// Settle read lock held, the page's state just read.
    AfterStateRead,
    /// Settle read lock held, about to issue the install ioctl.
    BeforeInstall,
    /// Settle read lock held, the ioctl done (the faulting thread may already run), the new
    /// state not yet recorded.
    AfterInstall,
}

/// A test's callback: the point and the image offset of the page being installed. It may
/// block (park the thread) until the test releases it.
#[cfg(feature = "test-hooks")]
pub type Hook = std::sync::Arc<dyn Fn(HookPoint, u64) + Send + Sync>;

/// Runs the test's hook at `point` for the page at image offset `page_offset`, if one is set.
#[inline]
#[allow(unused_variables)]
pub(crate) fn hook(shared: &crate::shared::Shared, point: HookPoint, page_offset: u64) {
    #[cfg(feature = "test-hooks")]
    if let Some(hook) = &shared.config.hook {
        hook(point, page_offset);
    }
}
