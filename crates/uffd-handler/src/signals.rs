//! The signals the daemon answers, as a readable fd: they are blocked in every thread (the mask
//! is set before any thread starts, and threads inherit it) and delivered through a signalfd
//! the main loop polls. None of them can kill the daemon (and leave its VMM hanging on a dead
//! handler): SIGTERM, SIGINT and SIGQUIT stop it gracefully (`--on-signal`), SIGUSR1 and
//! SIGUSR2 print the live statistics (a table, a JSON line), SIGHUP is logged and ignored (the
//! daemon logs to stderr: there is no log file to reopen, and a hangup must not stop it).

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};

/// The signals the daemon handles.
const HANDLED: [libc::c_int; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGHUP,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SignalAction {
    /// A graceful stop (SIGTERM, SIGINT, SIGQUIT).
    Stop,
    /// The live statistics as a table on stderr (SIGUSR1).
    StatsTable,
    /// The live statistics as one JSON line on stderr (SIGUSR2).
    StatsJson,
    /// Nothing but a log line (SIGHUP).
    Ignore,
}

/// A signal received: its name and what it asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Received {
    pub(crate) name: &'static str,
    pub(crate) action: SignalAction,
}

/// A non-blocking signalfd for the handled signals.
#[derive(Debug)]
pub(crate) struct StopSignals {
    fd: OwnedFd,
}

impl StopSignals {
    /// Blocks the handled signals in the calling thread and opens the signalfd. Call it before
    /// starting any thread, so every thread inherits the mask.
    pub(crate) fn install() -> io::Result<Self> {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: `set` points to writable storage for a sigset_t, which sigemptyset
        // initialises; sigaddset then takes valid signal numbers.
        let set = unsafe {
            libc::sigemptyset(set.as_mut_ptr());
            for signal in HANDLED {
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

    /// The next pending signal, if any (non-blocking).
    pub(crate) fn take(&self) -> Option<Received> {
        let mut info = [0u8; size_of::<libc::signalfd_siginfo>()];
        match rustix::io::read(&self.fd, &mut info) {
            Ok(n) if n == info.len() => {
                // ssi_signo, a u32 holding a small signal number.
                let signo = i32::from_ne_bytes(info[..4].try_into().expect("4 bytes"));
                let (name, action) = match signo {
                    libc::SIGTERM => ("SIGTERM", SignalAction::Stop),
                    libc::SIGINT => ("SIGINT", SignalAction::Stop),
                    libc::SIGQUIT => ("SIGQUIT", SignalAction::Stop),
                    libc::SIGUSR1 => ("SIGUSR1", SignalAction::StatsTable),
                    libc::SIGUSR2 => ("SIGUSR2", SignalAction::StatsJson),
                    libc::SIGHUP => ("SIGHUP", SignalAction::Ignore),
                    _ => ("an unexpected signal", SignalAction::Ignore),
                };
                Some(Received { name, action })
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
