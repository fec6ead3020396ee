//! SIGTERM and SIGINT as a readable fd: the signals are blocked in every thread (the mask is
//! set before any thread starts, and threads inherit it) and delivered through a signalfd
//! the main loop polls.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};

/// The signals that stop the daemon gracefully.
const STOP_SIGNALS: [libc::c_int; 2] = [libc::SIGTERM, libc::SIGINT];

/// A non-blocking signalfd for SIGTERM and SIGINT.
#[derive(Debug)]
pub(crate) struct StopSignals {
    fd: OwnedFd,
}

impl StopSignals {
    /// Blocks SIGTERM and SIGINT in the calling thread and opens the signalfd. Call it before
    /// starting any thread, so every thread inherits the mask.
    pub(crate) fn install() -> io::Result<Self> {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: `set` points to writable storage for a sigset_t, which sigemptyset
        // initialises; sigaddset then takes valid signal numbers.
        let set = unsafe {
            libc::sigemptyset(set.as_mut_ptr());
            for signal in STOP_SIGNALS {
                libc::sigaddset(set.as_mut_ptr(), signal);
            }
            set.assume_init()
        };
        // SAFETY: `set` is an initialised sigset_t; the old mask is not asked for (null).
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        // SAFETY: -1 asks for a new signalfd; `set` is an initialised sigset_t.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: signalfd returned a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(StopSignals { fd })
    }

    /// The next pending signal's name, if any (non-blocking).
    pub(crate) fn take(&self) -> Option<&'static str> {
        let mut info = [0u8; size_of::<libc::signalfd_siginfo>()];
        match rustix::io::read(&self.fd, &mut info) {
            Ok(n) if n == info.len() => {
                // ssi_signo, a u32 holding a small signal number.
                let signo = i32::from_ne_bytes(info[..4].try_into().expect("4 bytes"));
                Some(match signo {
                    libc::SIGTERM => "SIGTERM",
                    libc::SIGINT => "SIGINT",
                    _ => "a signal",
                })
            }
            _ => None,
        }
    }
}

impl AsFd for StopSignals {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
