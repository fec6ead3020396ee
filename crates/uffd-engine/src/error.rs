//! How the engine ends (its exit reasons) and the errors of its API.

use std::time::Duration;

use uffd_core::Range;

/// Why the engine stopped serving on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineExit {
    /// An ioctl answered ESRCH: the VMM's memory is gone (it exited). Not an error.
    VmmGone,
    /// Something that must not be papered over; the owner should kill the VMM or report.
    Fatal(FatalError),
}

/// A fatal error with everything known about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}{}", if errors.is_empty() { String::new() } else { format!(": {}", errors.join("; ")) })]
pub struct FatalError {
    /// The image offset of the page concerned, if one.
    pub page_offset: Option<u64>,
    /// What happened.
    pub reason: String,
    /// Every underlying error, in order (for source failures: one per retry cycle).
    pub errors: Vec<String>,
}

/// Errors of the engine's own API.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The source is smaller than the layout's image.
    #[error("the source holds {source_size:#x} bytes but the layout needs {image_size:#x}")]
    SourceTooSmall {
        /// Source size.
        source_size: u64,
        /// Image size.
        image_size: u64,
    },
    /// The page tracker refused the geometry.
    #[error("page tracker: {0}")]
    Tracker(#[from] page_tracker::Error),
    /// A uffd call failed.
    #[error(transparent)]
    Uffd(#[from] uffd_core::Error),
    /// A range could not be formed.
    #[error(transparent)]
    Range(#[from] uffd_core::RangeError),
    /// The layout is invalid.
    #[error(transparent)]
    Layout(#[from] crate::layout::LayoutError),
    /// A system call failed.
    #[error("{what}: {errno}")]
    Os {
        /// What was attempted.
        what: &'static str,
        /// The errno.
        errno: rustix::io::Errno,
    },
    /// Dirty sets were asked for without dirty tracking.
    #[error("dirty tracking is off: the written pages are not known")]
    NoDirtyTracking,
    /// A write-protect ioctl failed while starting a new generation.
    #[error("re-protecting {range} failed: {status:?}")]
    Reprotect {
        /// The range.
        range: Range,
        /// How it failed.
        status: uffd_core::Status,
    },
    /// Graduation could not install a page the snapshot holds bytes for; the ranges stay
    /// registered (unregistering would let the VMM read zeros there).
    #[error(
        "graduation cannot install the page at image offset {page_offset:#x}{}",
        if errors.is_empty() { String::new() } else { format!(": {}", errors.join("; ")) }
    )]
    Graduation {
        /// The image offset of the page.
        page_offset: u64,
        /// Every error met, in order (one per retry cycle for source failures).
        errors: Vec<String>,
    },
    /// The peer did not exit in time.
    #[error("the VMM did not exit within {0:?}")]
    VmmStillRunning(Duration),
}
