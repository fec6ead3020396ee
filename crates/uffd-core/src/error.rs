//! Errors of uffd-core: each names what was wrong and the kernel's errno where there is one.

use rustix::io::Errno;

use crate::{Features, Incomplete, Range, RegisterMode};

/// A range that cannot be valid for any userfaultfd operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// Zero length (the kernel would treat a zero-length WAKE as "wake everything").
    #[error("empty range at {start:#x}")]
    Empty {
        /// The start address given.
        start: u64,
    },
    /// Start or length not a multiple of the page size.
    #[error("range start {start:#x} / length {len:#x} not aligned to the {page_size}-byte page")]
    Misaligned {
        /// The start address given.
        start: u64,
        /// The length given.
        len: u64,
        /// The page size required.
        page_size: u64,
    },
    /// `start + len` overflows the address space.
    #[error("range start {start:#x} + length {len:#x} overflows")]
    Overflow {
        /// The start address given.
        start: u64,
        /// The length given.
        len: u64,
    },
}

/// An error from creating, configuring or reading a userfaultfd.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Opening `/dev/userfaultfd` or `USERFAULTFD_IOC_NEW` failed.
    #[error("cannot create a userfaultfd through /dev/userfaultfd: {0}")]
    Device(Errno),
    /// The `userfaultfd(2)` syscall failed.
    #[error(
        "userfaultfd(2) failed: {0} (EPERM: vm.unprivileged_userfaultfd is 0; run as root or ask for user-mode-only)"
    )]
    Syscall(Errno),
    /// Both creation paths failed.
    #[error("cannot create a userfaultfd: /dev/userfaultfd: {device}; userfaultfd(2): {syscall}")]
    NoPath {
        /// Why the device path failed.
        device: Errno,
        /// Why the syscall path failed.
        syscall: Errno,
    },
    /// `UFFDIO_API` failed.
    #[error("UFFDIO_API asking for features {requested:?} failed: {errno}")]
    Api {
        /// The features asked for.
        requested: Features,
        /// The kernel's answer.
        errno: Errno,
    },
    /// `UFFDIO_API` would fail because the kernel lacks some asked-for features.
    #[error("the kernel lacks features {missing:?} (it supports {supported:?})")]
    UnsupportedFeatures {
        /// Asked for but not supported.
        missing: Features,
        /// What the kernel supports.
        supported: Features,
    },
    /// An fd given to [`crate::Uffd::adopt`] is not a userfaultfd.
    #[error("fd {fd} is not a userfaultfd (it is {what})")]
    NotUserfaultfd {
        /// The fd number.
        fd: i32,
        /// What `/proc/self/fd` says it is.
        what: String,
    },
    /// An fd given to [`crate::Uffd::adopt`] is a userfaultfd on which `UFFDIO_API` was never
    /// called: no range can have been registered on it, and the features are not settled.
    #[error(
        "fd {fd} is a userfaultfd whose creator never called UFFDIO_API (no range can be \
         registered on it)"
    )]
    ApiNotCalled {
        /// The fd number.
        fd: i32,
    },
    /// Making an adopted userfaultfd non-blocking failed.
    #[error("cannot make userfaultfd {fd} non-blocking: {errno}")]
    SetNonBlocking {
        /// The fd number.
        fd: i32,
        /// The errno of `fcntl(F_SETFL)`.
        errno: Errno,
    },
    /// `UFFDIO_REGISTER` failed.
    #[error("UFFDIO_REGISTER of {range} with {mode:?} failed: {errno}")]
    Register {
        /// The range.
        range: Range,
        /// The modes asked for.
        mode: RegisterMode,
        /// The kernel's answer (EBUSY: another uffd owns it; EINVAL: mode unsupported there).
        errno: Errno,
    },
    /// `UFFDIO_UNREGISTER` failed.
    #[error("UFFDIO_UNREGISTER of {range} failed: {errno}")]
    Unregister {
        /// The range.
        range: Range,
        /// The kernel's answer.
        errno: Errno,
    },
    /// `read(2)` on the userfaultfd failed.
    #[error("reading events from the userfaultfd failed: {0}")]
    Read(Errno),
    /// `read(2)` returned a length that is not a whole number of messages.
    #[error("the userfaultfd returned {0} bytes, not a multiple of 32")]
    ShortRead(usize),
    /// Opening `/proc/<pid>/pagemap` failed.
    #[error("cannot open {path}: {errno}")]
    PagemapOpen {
        /// The path.
        path: String,
        /// The kernel's answer.
        errno: Errno,
    },
    /// `PAGEMAP_SCAN` failed.
    #[error("PAGEMAP_SCAN of {range} failed: {errno}")]
    PagemapScan {
        /// The range scanned.
        range: Range,
        /// The kernel's answer (EPERM with a re-protect: range not registered WP with
        /// `WP_ASYNC`).
        errno: Errno,
    },
    /// A bad range.
    #[error(transparent)]
    Range(#[from] RangeError),
    /// A range operation that did not do the whole range (from [`crate::Outcome::into_result`]).
    #[error(transparent)]
    Incomplete(#[from] Incomplete),
}
