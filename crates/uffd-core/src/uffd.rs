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
    /// Set by `adopt` when it had to make the fd non-blocking.
    pub(crate) was_blocking: bool,
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
            was_blocking: false,
        }
    }

    /// Whether [`Uffd::adopt`] found the fd blocking and made it non-blocking.
    pub fn was_blocking(&self) -> bool {
        self.was_blocking
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

    /// `UFFDIO_REGISTER`: registers `range` (whole VMAs or parts of them, in this fd's
    /// process) for the fault modes in `mode`; returns the ioctls valid on it.
    ///
    /// From then on a fault of the kind registered in `range` blocks the faulting thread
    /// and queues an [`Event::PageFault`](crate::Event::PageFault) on this fd, until a range
    /// operation serves it or the range is unregistered.
    ///
    /// # Errors
    ///
    /// [`Error::Register`] with the kernel's errno: `EBUSY` when another uffd already has
    /// (part of) the range, `EINVAL` when nothing is mapped there or the memory cannot take
    /// `mode` (MINOR on private anonymous memory, say), `EPERM` for a shared mapping of a
    /// file this process may not write.
    ///
    /// # Examples
    ///
    /// ```
    /// use uffd_core::{Ioctls, PageSize, Range, RegisterMode, UffdBuilder};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let len = 4 * 4096;
    /// # // SAFETY: a new private mapping at an address the kernel chooses; it replaces nothing.
    /// # let addr = unsafe {
    /// #     rustix::mm::mmap_anonymous(
    /// #         std::ptr::null_mut(),
    /// #         len,
    /// #         rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
    /// #         rustix::mm::MapFlags::PRIVATE,
    /// #     )?
    /// # } as u64;
    /// // Four pages of fresh anonymous memory at `addr`.
    /// let uffd = UffdBuilder::new().create()?;
    /// let memory = Range::new(addr, 4 * 4096, PageSize::Base4K)?;
    /// let ioctls = uffd.register(memory, RegisterMode::MISSING)?;
    /// assert!(ioctls.contains(Ioctls::COPY | Ioctls::ZEROPAGE | Ioctls::WAKE));
    ///
    /// // A second uffd cannot take the same memory.
    /// let other = UffdBuilder::new().create()?;
    /// assert!(other.register(memory, RegisterMode::MISSING).is_err());
    /// uffd.unregister(memory)?;
    /// # // SAFETY: the mapping is this example's, and nothing refers into it any more.
    /// # unsafe { rustix::mm::munmap(addr as *mut std::ffi::c_void, len)? };
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # References
    ///
    /// - [UFFDIO_REGISTER(2const)][uffdio_register], and [ioctl_userfaultfd(2)][ioctl_userfaultfd]
    /// - [Userfaultfd][kernel-userfaultfd] in the kernel's admin guide
    ///
    /// [uffdio_register]: https://man7.org/linux/man-pages/man2/UFFDIO_REGISTER.2const.html
    /// [ioctl_userfaultfd]: https://man7.org/linux/man-pages/man2/ioctl_userfaultfd.2.html
    /// [kernel-userfaultfd]: https://docs.kernel.org/admin-guide/mm/userfaultfd.html
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

    /// `UFFDIO_UNREGISTER`: unregisters `range`; faults there are then served by the kernel
    /// as usual. Threads blocked on a fault in the range are woken and retry.
    ///
    /// # Errors
    ///
    /// [`Error::Unregister`] with the kernel's errno: `EINVAL` when nothing is mapped there
    /// or (part of) the range is registered with another uffd.
    ///
    /// # References
    ///
    /// - [UFFDIO_UNREGISTER(2const)][uffdio_unregister], and
    ///   [ioctl_userfaultfd(2)][ioctl_userfaultfd]
    /// - [Userfaultfd][kernel-userfaultfd] in the kernel's admin guide
    ///
    /// [uffdio_unregister]: https://man7.org/linux/man-pages/man2/UFFDIO_UNREGISTER.2const.html
    /// [ioctl_userfaultfd]: https://man7.org/linux/man-pages/man2/ioctl_userfaultfd.2.html
    /// [kernel-userfaultfd]: https://docs.kernel.org/admin-guide/mm/userfaultfd.html
    pub fn unregister(&self, range: Range) -> Result<(), Error> {
        let mut arg = range.raw();
        uffdio_range(self.fd.as_fd(), RangeRequest::Unregister, &mut arg)
            .map_err(|errno| Error::Unregister { range, errno })
    }

    /// `UFFDIO_COPY`: installs `src` at `dst` and (unless `DONTWAKE`) wakes the threads waiting
    /// on the copied prefix. `src` must be exactly as long as `dst`; if it is not, nothing is
    /// done and the outcome is [`Status::Invalid`](crate::Status::Invalid), as the kernel
    /// would answer a bad argument.
    ///
    /// # Errors
    ///
    /// None as a `Result`: the [`Outcome`] tells how many bytes were installed (a prefix of
    /// `dst`) and why the copy stopped; [`Outcome::into_result`] turns anything short of the
    /// whole range into an error. The statuses:
    ///
    /// - [`Exists`](crate::Status::Exists): a page of `dst` is already there (wake the
    ///   faulting thread anyway);
    /// - [`Again`](crate::Status::Again): a non-cooperative event is pending, or the copy
    ///   stopped part-way: retry the rest;
    /// - [`Gone`](crate::Status::Gone): the registered process exited;
    /// - [`NoMapping`](crate::Status::NoMapping): `dst` is no longer mapped or registered;
    /// - [`Invalid`](crate::Status::Invalid): a bad mode, or `src` not as long as `dst`.
    ///
    /// # Examples
    ///
    /// ```
    /// use uffd_core::{CopyMode, PageSize, Range, RegisterMode, Status, UffdBuilder};
    ///
    /// # fn read(addr: u64, len: usize) -> Vec<u8> {
    /// #     // SAFETY: the bytes lie in the example's mapping and are installed (no fault).
    /// #     unsafe { std::slice::from_raw_parts(addr as *const u8, len) }.to_vec()
    /// # }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let len = 2 * 4096;
    /// # // SAFETY: a new private mapping at an address the kernel chooses; it replaces nothing.
    /// # let addr = unsafe {
    /// #     rustix::mm::mmap_anonymous(
    /// #         std::ptr::null_mut(),
    /// #         len,
    /// #         rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
    /// #         rustix::mm::MapFlags::PRIVATE,
    /// #     )?
    /// # } as u64;
    /// let uffd = UffdBuilder::new().create()?;
    /// let memory = Range::new(addr, 2 * 4096, PageSize::Base4K)?;
    /// uffd.register(memory, RegisterMode::MISSING)?;
    ///
    /// // Fill both missing pages at once.
    /// let bytes: Vec<u8> = (0..2 * 4096).map(|i| (i % 251) as u8).collect();
    /// let outcome = uffd.copy(memory, &bytes, CopyMode::empty());
    /// assert_eq!((outcome.status, outcome.done), (Status::Complete, 2 * 4096));
    /// assert_eq!(read(addr, 2 * 4096), bytes);
    ///
    /// // The pages are present now: a second copy installs nothing.
    /// let again = uffd.copy(memory, &bytes, CopyMode::empty());
    /// assert_eq!((again.status, again.done), (Status::Exists, 0));
    /// uffd.unregister(memory)?;
    /// # // SAFETY: the mapping is this example's, and nothing refers into it any more.
    /// # unsafe { rustix::mm::munmap(addr as *mut std::ffi::c_void, len)? };
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # References
    ///
    /// - [UFFDIO_COPY(2const)][uffdio_copy], and [ioctl_userfaultfd(2)][ioctl_userfaultfd]
    /// - [Userfaultfd][kernel-userfaultfd] in the kernel's admin guide
    ///
    /// [uffdio_copy]: https://man7.org/linux/man-pages/man2/UFFDIO_COPY.2const.html
    /// [ioctl_userfaultfd]: https://man7.org/linux/man-pages/man2/ioctl_userfaultfd.2.html
    /// [kernel-userfaultfd]: https://docs.kernel.org/admin-guide/mm/userfaultfd.html
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

    /// `UFFDIO_ZEROPAGE`: maps the zero page over `range` and (unless `DONTWAKE`) wakes the
    /// threads waiting there. Not on hugetlbfs.
    ///
    /// # Errors
    ///
    /// None as a `Result`: the [`Outcome`] tells how many bytes were mapped and why it
    /// stopped, with the statuses of [`Uffd::copy`]; on hugetlbfs the status is
    /// [`Status::Invalid`](crate::Status::Invalid). [`Outcome::into_result`] makes it a
    /// `Result`.
    ///
    /// # Examples
    ///
    /// ```
    /// use uffd_core::{CopyMode, PageSize, Range, RegisterMode, UffdBuilder, ZeropageMode};
    ///
    /// # fn read(addr: u64, len: usize) -> Vec<u8> {
    /// #     // SAFETY: the bytes lie in the example's mapping and are installed (no fault).
    /// #     unsafe { std::slice::from_raw_parts(addr as *const u8, len) }.to_vec()
    /// # }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let len = 3 * 4096;
    /// # // SAFETY: a new private mapping at an address the kernel chooses; it replaces nothing.
    /// # let addr = unsafe {
    /// #     rustix::mm::mmap_anonymous(
    /// #         std::ptr::null_mut(),
    /// #         len,
    /// #         rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
    /// #         rustix::mm::MapFlags::PRIVATE,
    /// #     )?
    /// # } as u64;
    /// let uffd = UffdBuilder::new().create()?;
    /// let memory = Range::new(addr, 3 * 4096, PageSize::Base4K)?;
    /// uffd.register(memory, RegisterMode::MISSING)?;
    ///
    /// // A hole in the snapshot: zeros for page 0, bytes for pages 1 and 2.
    /// uffd.zeropage(Range::pages(addr, 1, PageSize::Base4K)?, ZeropageMode::empty())
    ///     .into_result()?;
    /// let rest = Range::pages(addr + 4096, 2, PageSize::Base4K)?;
    /// uffd.copy(rest, &[0x5A; 2 * 4096], CopyMode::empty()).into_result()?;
    ///
    /// let bytes = read(addr, 3 * 4096);
    /// assert!(bytes[..4096].iter().all(|&b| b == 0));
    /// assert!(bytes[4096..].iter().all(|&b| b == 0x5A));
    /// uffd.unregister(memory)?;
    /// # // SAFETY: the mapping is this example's, and nothing refers into it any more.
    /// # unsafe { rustix::mm::munmap(addr as *mut std::ffi::c_void, len)? };
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # References
    ///
    /// - [UFFDIO_ZEROPAGE(2const)][uffdio_zeropage], and [ioctl_userfaultfd(2)][ioctl_userfaultfd]
    /// - [Userfaultfd][kernel-userfaultfd] in the kernel's admin guide
    ///
    /// [uffdio_zeropage]: https://man7.org/linux/man-pages/man2/UFFDIO_ZEROPAGE.2const.html
    /// [ioctl_userfaultfd]: https://man7.org/linux/man-pages/man2/ioctl_userfaultfd.2.html
    /// [kernel-userfaultfd]: https://docs.kernel.org/admin-guide/mm/userfaultfd.html
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
    /// they retry the access (and fault again if the page is still missing). For a page
    /// installed with `DONTWAKE`, or one another handler installed first
    /// ([`Status::Exists`](crate::Status::Exists)).
    ///
    /// # Errors
    ///
    /// None as a `Result`: the [`Outcome`] is all or nothing;
    /// [`Status::Invalid`](crate::Status::Invalid) for a range outside the process's memory.
    ///
    /// # References
    ///
    /// - [UFFDIO_WAKE(2const)][uffdio_wake], and [ioctl_userfaultfd(2)][ioctl_userfaultfd]
    /// - [Userfaultfd][kernel-userfaultfd] in the kernel's admin guide
    ///
    /// [uffdio_wake]: https://man7.org/linux/man-pages/man2/UFFDIO_WAKE.2const.html
    /// [ioctl_userfaultfd]: https://man7.org/linux/man-pages/man2/ioctl_userfaultfd.2.html
    /// [kernel-userfaultfd]: https://docs.kernel.org/admin-guide/mm/userfaultfd.html
    pub fn wake(&self, range: Range) -> Outcome {
        let mut arg = range.raw();
        let result = uffdio_range(self.fd.as_fd(), RangeRequest::Wake, &mut arg);
        Outcome::all_or_nothing(range.len(), result)
    }

    /// `UFFDIO_WRITEPROTECT`: protects (`WP`) or unprotects `range`. Unprotecting wakes the
    /// waiting writers unless `DONTWAKE`. Protection on a never-populated anonymous page does
    /// nothing unless `WP_UNPOPULATED` is enabled: install such pages with `CopyMode::WP`.
    ///
    /// # Errors
    ///
    /// None as a `Result`: the [`Outcome`] is all or nothing;
    /// [`Status::NoMapping`](crate::Status::NoMapping) when part of `range` is not mapped
    /// or not registered for WP, [`Status::Again`](crate::Status::Again) while a
    /// non-cooperative event is pending, [`Status::Invalid`](crate::Status::Invalid) for a
    /// bad mode.
    ///
    /// # References
    ///
    /// - [UFFDIO_WRITEPROTECT(2const)][uffdio_writeprotect], and
    ///   [ioctl_userfaultfd(2)][ioctl_userfaultfd]
    /// - [Userfaultfd][kernel-userfaultfd] in the kernel's admin guide
    ///
    /// [uffdio_writeprotect]: https://man7.org/linux/man-pages/man2/UFFDIO_WRITEPROTECT.2const.html
    /// [ioctl_userfaultfd]: https://man7.org/linux/man-pages/man2/ioctl_userfaultfd.2.html
    /// [kernel-userfaultfd]: https://docs.kernel.org/admin-guide/mm/userfaultfd.html
    pub fn writeprotect(&self, range: Range, mode: WriteProtectMode) -> Outcome {
        let mut arg = sys::uffdio_writeprotect {
            range: range.raw(),
            mode: mode.bits(),
        };
        let result = uffdio(self.fd.as_fd(), &mut arg);
        Outcome::all_or_nothing(range.len(), result)
    }

    /// `UFFDIO_CONTINUE`: maps the page-cache pages behind `range` (resolves MINOR faults on
    /// shmem or hugetlbfs memory whose contents were put in place through another mapping).
    ///
    /// # Errors
    ///
    /// None as a `Result`: the [`Outcome`] tells how many bytes were mapped and why it
    /// stopped: [`Status::Exists`](crate::Status::Exists) for a page already mapped,
    /// [`Status::Other`](crate::Status::Other)(`EFAULT`) for a page with no page-cache page
    /// behind it, and the other statuses of [`Uffd::copy`].
    ///
    /// # References
    ///
    /// - [UFFDIO_CONTINUE(2const)][uffdio_continue], and [ioctl_userfaultfd(2)][ioctl_userfaultfd]
    /// - [Userfaultfd][kernel-userfaultfd] in the kernel's admin guide
    ///
    /// [uffdio_continue]: https://man7.org/linux/man-pages/man2/UFFDIO_CONTINUE.2const.html
    /// [ioctl_userfaultfd]: https://man7.org/linux/man-pages/man2/ioctl_userfaultfd.2.html
    /// [kernel-userfaultfd]: https://docs.kernel.org/admin-guide/mm/userfaultfd.html
    pub fn continue_minor(&self, range: Range, mode: ContinueMode) -> Outcome {
        let mut arg = sys::uffdio_continue {
            range: range.raw(),
            mode: mode.bits(),
            mapped: 0,
        };
        let result = uffdio(self.fd.as_fd(), &mut arg);
        Outcome::from_progress(range.len(), result, arg.mapped)
    }

    /// `UFFDIO_POISON`: marks `range` so that any later access raises SIGBUS (a page whose
    /// contents are lost, as after a memory error on the source host of a migration).
    ///
    /// # Errors
    ///
    /// None as a `Result`: the [`Outcome`] tells how many bytes were marked and why it
    /// stopped: [`Status::Exists`](crate::Status::Exists) for a page already present or
    /// poisoned, and the other statuses of [`Uffd::copy`].
    ///
    /// # References
    ///
    /// - [UFFDIO_POISON(2const)][uffdio_poison], and [ioctl_userfaultfd(2)][ioctl_userfaultfd]
    /// - [Userfaultfd][kernel-userfaultfd] in the kernel's admin guide
    ///
    /// [uffdio_poison]: https://man7.org/linux/man-pages/man2/UFFDIO_POISON.2const.html
    /// [ioctl_userfaultfd]: https://man7.org/linux/man-pages/man2/ioctl_userfaultfd.2.html
    /// [kernel-userfaultfd]: https://docs.kernel.org/admin-guide/mm/userfaultfd.html
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
    ///
    /// # Errors
    ///
    /// None as a `Result`: the [`Outcome`] tells how many bytes were moved and why it
    /// stopped: [`Status::NoMapping`](crate::Status::NoMapping) for a hole in the source
    /// (unless `ALLOW_SRC_HOLES`), [`Status::Exists`](crate::Status::Exists) for a page
    /// already in `dst`, [`Status::Invalid`](crate::Status::Invalid) for memory that is not
    /// private anonymous, and the other statuses of [`Uffd::copy`].
    ///
    /// # References
    ///
    /// - [UFFDIO_MOVE(2const)][uffdio_move], and [ioctl_userfaultfd(2)][ioctl_userfaultfd]
    /// - [Userfaultfd][kernel-userfaultfd] in the kernel's admin guide
    ///
    /// [uffdio_move]: https://man7.org/linux/man-pages/man2/UFFDIO_MOVE.2const.html
    /// [ioctl_userfaultfd]: https://man7.org/linux/man-pages/man2/ioctl_userfaultfd.2.html
    /// [kernel-userfaultfd]: https://docs.kernel.org/admin-guide/mm/userfaultfd.html
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
