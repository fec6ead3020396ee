//! The userfaultfd handle and its range operations.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use uffd_sys as sys;

use crate::sys::{RangeRequest, uffdio, uffdio_range};
use crate::{
    ApiInfo, ContinueMode, CopyMode, Error, Features, Ioctls, MoveMode, Origin, Outcome,
    PoisonMode, Range, RegisterMode, WriteProtectMode, ZeropageMode,
};

/// An open userfaultfd. Owns its fd; `Send + Sync`, so many threads may read and operate on
/// it at once (the kernel serialises what needs serialising).
///
/// Operations take addresses in the registered process's address space as `u64`. The kernel
/// validates them; this process never dereferences them. When the registered memory is this
/// process's own, changing it through the uffd is like writing `/proc/self/mem`: outside what
/// Rust's borrow rules can see, so do not hold Rust references into registered ranges.
#[derive(Debug)]
pub struct Uffd {
    fd: OwnedFd,
    features: Features,
    origin: Origin,
    pub(crate) api: Option<ApiInfo>,
}

impl Uffd {
    pub(crate) fn from_parts(
        fd: OwnedFd,
        features: Features,
        origin: Origin,
        api: Option<ApiInfo>,
    ) -> Self {
        Uffd {
            fd,
            features,
            origin,
            api,
        }
    }

    /// Features enabled on this fd (negotiated, or declared on adoption).
    pub fn features(&self) -> Features {
        self.features
    }

    /// How the fd was created.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// What `UFFDIO_API` answered, if this process called it (not for adopted fds).
    pub fn api_info(&self) -> Option<ApiInfo> {
        self.api
    }

    /// Gives the fd back without closing it.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// Registers `range` for the given fault modes; returns the ioctls valid on it.
    pub fn register(&self, range: Range, mode: RegisterMode) -> Result<Ioctls, Error> {
        let mut arg = sys::uffdio_register {
            range: range.raw(),
            mode: mode.bits(),
            ioctls: 0,
        };
        uffdio(self.fd.as_fd(), &mut arg).map_err(|errno| Error::Register {
            range,
            mode,
            errno,
        })?;
        Ok(Ioctls::from_bits_retain(arg.ioctls))
    }

    /// Unregisters `range`; faults there are then served by the kernel as usual.
    pub fn unregister(&self, range: Range) -> Result<(), Error> {
        let mut arg = range.raw();
        uffdio_range(self.fd.as_fd(), RangeRequest::Unregister, &mut arg)
            .map_err(|errno| Error::Unregister { range, errno })
    }

    /// `UFFDIO_COPY`: installs `src` at `dst` and (unless `DONTWAKE`) wakes the threads waiting
    /// on the copied prefix. `src` must be exactly as long as `dst`; if it is not, nothing is
    /// done and the outcome is [`Status::Invalid`](crate::Status::Invalid), as the kernel
    /// would answer a bad argument.
    pub fn copy(&self, dst: Range, src: &[u8], mode: CopyMode) -> Outcome {
        if src.len() as u64 != dst.len() {
            return Outcome::invalid(dst.len());
        }
        let mut arg = sys::uffdio_copy {
            dst: dst.start(),
            src: src.as_ptr() as u64,
            len: dst.len(),
            mode: mode.bits(),
            copy: 0,
        };
        let result = uffdio(self.fd.as_fd(), &mut arg);
        Outcome::from_progress(dst.len(), result, arg.copy)
    }

    /// `UFFDIO_ZEROPAGE`: maps the zero page over `range` (not on hugetlbfs).
    pub fn zeropage(&self, range: Range, mode: ZeropageMode) -> Outcome {
        let mut arg = sys::uffdio_zeropage {
            range: range.raw(),
            mode: mode.bits(),
            zeropage: 0,
        };
        let result = uffdio(self.fd.as_fd(), &mut arg);
        Outcome::from_progress(range.len(), result, arg.zeropage)
    }

    /// `UFFDIO_WAKE`: wakes threads waiting on faults in `range` without installing anything;
    /// they retry the access (and fault again if the page is still missing).
    pub fn wake(&self, range: Range) -> Outcome {
        let mut arg = range.raw();
        let result = uffdio_range(self.fd.as_fd(), RangeRequest::Wake, &mut arg);
        Outcome::all_or_nothing(range.len(), result)
    }

    /// `UFFDIO_WRITEPROTECT`: protects (`WP`) or unprotects `range`. Unprotecting wakes the
    /// waiting writers unless `DONTWAKE`. Protection on a never-populated anonymous page does
    /// nothing unless `WP_UNPOPULATED` is enabled: install such pages with `CopyMode::WP`.
    pub fn writeprotect(&self, range: Range, mode: WriteProtectMode) -> Outcome {
        let mut arg = sys::uffdio_writeprotect {
            range: range.raw(),
            mode: mode.bits(),
        };
        let result = uffdio(self.fd.as_fd(), &mut arg);
        Outcome::all_or_nothing(range.len(), result)
    }

    /// `UFFDIO_CONTINUE`: maps the page-cache pages behind `range` (resolves MINOR faults).
    pub fn continue_minor(&self, range: Range, mode: ContinueMode) -> Outcome {
        let mut arg = sys::uffdio_continue {
            range: range.raw(),
            mode: mode.bits(),
            mapped: 0,
        };
        let result = uffdio(self.fd.as_fd(), &mut arg);
        Outcome::from_progress(range.len(), result, arg.mapped)
    }

    /// `UFFDIO_POISON`: marks `range` so that any later access raises SIGBUS.
    pub fn poison(&self, range: Range, mode: PoisonMode) -> Outcome {
        let mut arg = sys::uffdio_poison {
            range: range.raw(),
            mode: mode.bits(),
            updated: 0,
        };
        let result = uffdio(self.fd.as_fd(), &mut arg);
        Outcome::from_progress(range.len(), result, arg.updated)
    }

    /// `UFFDIO_MOVE`: moves the anonymous pages at `src_start` (same mm, same length as `dst`)
    /// to `dst`, leaving holes behind.
    pub fn move_pages(&self, dst: Range, src_start: u64, mode: MoveMode) -> Outcome {
        let mut arg = sys::uffdio_move {
            dst: dst.start(),
            src: src_start,
            len: dst.len(),
            mode: mode.bits(),
            move_: 0,
        };
        let result = uffdio(self.fd.as_fd(), &mut arg);
        Outcome::from_progress(dst.len(), result, arg.move_)
    }
}

impl AsFd for Uffd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Uffd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
