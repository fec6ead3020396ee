//! The VMM's guest memory as a [`MemoryImage`]: image offsets read at the regions' host
//! addresses in the VMM's address space with `process_vm_readv`.
//!
//! `process_vm_readv` pins the pages with retry allowed, so a page the guest never touched
//! faults through the userfaultfd like any other access and the (still running) engine serves
//! it; `/proc/<pid>/mem` would fail such a page with EIO. Needs ptrace access to the VMM
//! (same uid, or CAP_SYS_PTRACE; Yama's `ptrace_scope` may restrict it further).

use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use snapshot_format::MemoryImage;

use uffd_engine::GuestLayout;

/// The guest memory of a live VMM process.
pub(crate) struct VmmMemory<'a> {
    pid: i32,
    /// The VMM's pidfd: a read is trusted only if the process was alive after it (so the pid
    /// was not reused meanwhile).
    pidfd: Option<BorrowedFd<'a>>,
    layout: GuestLayout,
}

impl<'a> VmmMemory<'a> {
    /// The memory of `pid` (watched through `pidfd`) laid out as `layout`.
    pub(crate) fn new(pid: i32, pidfd: Option<BorrowedFd<'a>>, layout: GuestLayout) -> Self {
        VmmMemory { pid, pidfd, layout }
    }

    fn exited(&self) -> bool {
        let Some(pidfd) = self.pidfd else {
            return false;
        };
        let mut fds = [PollFd::from_borrowed_fd(pidfd, PollFlags::IN)];
        let zero = Timespec::try_from(Duration::ZERO).expect("zero fits");
        matches!(poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
    }

    /// One `process_vm_readv` of `buf.len()` bytes at `addr`; returns the bytes read.
    fn read_at_addr(&self, buf: &mut [u8], addr: u64) -> io::Result<usize> {
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let remote = libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: buf.len(),
        };
        // SAFETY: `local` describes `buf`, which is valid for writes of its length and
        // exclusively borrowed for the call; `remote` names memory in another process, which
        // the kernel checks and never dereferences in ours. One iovec each, flags 0.
        let n = unsafe { libc::process_vm_readv(self.pid, &local, 1, &remote, 1, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

impl MemoryImage for VmmMemory<'_> {
    fn size(&self) -> io::Result<u64> {
        Ok(self.layout.image_size())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let (addr, region) = self.layout.host_addr(at).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("image offset {at:#x} is outside the VMM's regions"),
                )
            })?;
            let len = (buf.len() - done).min((region.end() - addr) as usize);
            let n = self
                .read_at_addr(&mut buf[done..done + len], addr)
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "process_vm_readv of VMM pid {} at {addr:#x} ({len} bytes): {e}",
                            self.pid
                        ),
                    )
                })?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "process_vm_readv of VMM pid {} at {addr:#x} read nothing",
                        self.pid
                    ),
                ));
            }
            done += n;
        }
        if self.exited() {
            return Err(io::Error::other(format!(
                "the VMM (pid {}) exited while its memory was being read",
                self.pid
            )));
        }
        Ok(())
    }
}
