//! The one place uffd-core issues raw ioctls on a userfaultfd.

use core::ffi::c_void;
use std::os::fd::BorrowedFd;

use rustix::io::Errno;
use rustix::ioctl::{Ioctl, IoctlOutput, Opcode};
use uffd_sys as sys;

/// An ioctl whose argument is a pointer (or an integer smuggled as one) and whose return value
/// is kept (USERFAULTFD_IOC_NEW returns an fd).
struct RawIoctl {
    opcode: Opcode,
    arg: *mut c_void,
}

// SAFETY: `as_ptr` returns exactly the argument the caller of `RawIoctl` vouched for, and the
// output is the raw return value, interpreted by the caller.
unsafe impl Ioctl for RawIoctl {
    type Output = IoctlOutput;
    const IS_MUTATING: bool = true;

    fn opcode(&self) -> Opcode {
        self.opcode
    }

    fn as_ptr(&mut self) -> *mut c_void {
        self.arg
    }

    unsafe fn output_from_ptr(
        out: IoctlOutput,
        _arg: *mut c_void,
    ) -> rustix::io::Result<Self::Output> {
        Ok(out)
    }
}

/// A `uffd-sys` argument struct paired with the one request number that takes it.
pub(crate) trait UffdioArg {
    /// The request number whose argument is `Self`.
    const OPCODE: u32;
}

macro_rules! uffdio_args {
    ($($ty:ident => $op:ident),* $(,)?) => {$(
        impl UffdioArg for sys::$ty {
            const OPCODE: u32 = sys::$op;
        }
    )*};
}

uffdio_args! {
    uffdio_api => UFFDIO_API,
    uffdio_register => UFFDIO_REGISTER,
    uffdio_copy => UFFDIO_COPY,
    uffdio_zeropage => UFFDIO_ZEROPAGE,
    uffdio_writeprotect => UFFDIO_WRITEPROTECT,
    uffdio_continue => UFFDIO_CONTINUE,
    uffdio_poison => UFFDIO_POISON,
    uffdio_move => UFFDIO_MOVE,
}

/// `uffdio_range` serves two requests, so it is passed with an explicit choice.
#[derive(Clone, Copy)]
pub(crate) enum RangeRequest {
    Unregister,
    Wake,
}

/// Issues the `UFFDIO_*` request that takes `T`.
pub(crate) fn uffdio<T: UffdioArg>(fd: BorrowedFd<'_>, arg: &mut T) -> Result<(), Errno> {
    let req = RawIoctl {
        opcode: T::OPCODE as Opcode,
        arg: (arg as *mut T).cast(),
    };
    // SAFETY: `T::OPCODE` takes a pointer to a `T` (the pairs above; numbers and sizes are
    // checked against the kernel headers in uffd-sys), `arg` is a live, exclusive `T`, and the
    // kernel reads and writes only `size_of::<T>()` bytes of it. Addresses inside `T` name
    // memory of the uffd's registered mm, which the kernel validates (EFAULT/ENOENT/EINVAL);
    // the only one read from this process is `uffdio_copy.src`, which callers set from a live
    // `&[u8]` of `len` bytes.
    unsafe { rustix::ioctl::ioctl(fd, req) }.map(drop)
}

/// Issues `UFFDIO_UNREGISTER` or `UFFDIO_WAKE`.
pub(crate) fn uffdio_range(
    fd: BorrowedFd<'_>,
    request: RangeRequest,
    range: &mut sys::uffdio_range,
) -> Result<(), Errno> {
    let opcode = match request {
        RangeRequest::Unregister => sys::UFFDIO_UNREGISTER,
        RangeRequest::Wake => sys::UFFDIO_WAKE,
    };
    let req = RawIoctl {
        opcode: opcode as Opcode,
        arg: (range as *mut sys::uffdio_range).cast(),
    };
    // SAFETY: both requests take a pointer to a `uffdio_range`, which `range` is; the kernel
    // only reads it.
    unsafe { rustix::ioctl::ioctl(fd, req) }.map(drop)
}

/// `USERFAULTFD_IOC_NEW` on an open `/dev/userfaultfd`; returns the new fd number.
pub(crate) fn ioc_new(dev: BorrowedFd<'_>, flags: u32) -> Result<i32, Errno> {
    let req = RawIoctl {
        opcode: sys::USERFAULTFD_IOC_NEW as Opcode,
        arg: core::ptr::without_provenance_mut(flags as usize),
    };
    // SAFETY: USERFAULTFD_IOC_NEW takes its flags as the integer argument and touches no
    // memory; it returns a new fd (or fails), which the caller takes ownership of.
    unsafe { rustix::ioctl::ioctl(dev, req) }
}

/// `PAGEMAP_SCAN` on an open `/proc/<pid>/pagemap`; returns the number of regions written.
pub(crate) fn pagemap_scan(
    pagemap: BorrowedFd<'_>,
    arg: &mut sys::pm_scan_arg,
    regions: &mut [sys::page_region],
) -> Result<usize, Errno> {
    arg.size = core::mem::size_of::<sys::pm_scan_arg>() as u64;
    arg.vec = regions.as_mut_ptr() as u64;
    arg.vec_len = regions.len() as u64;
    let req = RawIoctl {
        opcode: sys::PAGEMAP_SCAN as Opcode,
        arg: (arg as *mut sys::pm_scan_arg).cast(),
    };
    // SAFETY: PAGEMAP_SCAN takes a pointer to a `pm_scan_arg`; `vec`/`vec_len` were just set
    // from the live, exclusive `regions` slice, so the kernel writes at most `regions.len()`
    // `page_region`s (plain integers) into memory we own.
    let n = unsafe { rustix::ioctl::ioctl(pagemap, req) }?;
    Ok(usize::try_from(n).unwrap_or(0).min(regions.len()))
}
