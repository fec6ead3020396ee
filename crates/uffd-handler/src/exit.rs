//! The daemon's exit codes and the outcome they report.

use std::fmt;
use std::process::ExitCode;

/// The exit codes, as `--help` shows them.
pub(crate) const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  the VMM exited normally (status 0) and every fault was served; or a graceful stop
     (SIGTERM, SIGINT or `stop`) graduated or killed the VMM as --on-signal says
  1  bad flags or files (the message names the flag or file)
  2  the handshake failed (--once; with --keep-listening the next VMM is accepted)
  3  fatal engine error (the reason is printed; the VMM was killed or left per --on-fatal)
  4  the VMM died unexpectedly: killed by a signal or exited with a non-zero status
  5  no VMM connected within --accept-timeout";

/// Why the daemon exits; each maps to one exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DaemonExit {
    /// 0: served to the end, or stopped gracefully.
    Success,
    /// 1: bad flags or files.
    Usage,
    /// 2: the handshake failed.
    Handshake,
    /// 3: a fatal engine error.
    Fatal,
    /// 4: the VMM was killed or crashed.
    VmmDied,
    /// 5: nobody connected in time.
    AcceptTimeout,
}

impl DaemonExit {
    /// The process exit code.
    pub(crate) const fn code(self) -> u8 {
        match self {
            DaemonExit::Success => 0,
            DaemonExit::Usage => 1,
            DaemonExit::Handshake => 2,
            DaemonExit::Fatal => 3,
            DaemonExit::VmmDied => 4,
            DaemonExit::AcceptTimeout => 5,
        }
    }

    /// A short name for logs and statistics.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            DaemonExit::Success => "success",
            DaemonExit::Usage => "usage",
            DaemonExit::Handshake => "handshake-failed",
            DaemonExit::Fatal => "fatal-engine-error",
            DaemonExit::VmmDied => "vmm-died",
            DaemonExit::AcceptTimeout => "accept-timeout",
        }
    }
}

impl From<DaemonExit> for ExitCode {
    fn from(exit: DaemonExit) -> ExitCode {
        ExitCode::from(exit.code())
    }
}

/// How the daemon ended: the exit code and the reason, printed last on stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExitReport {
    /// The exit code.
    pub exit: DaemonExit,
    /// Why, for a human.
    pub reason: String,
}

impl ExitReport {
    /// An outcome.
    pub(crate) fn new(exit: DaemonExit, reason: impl Into<String>) -> Self {
        ExitReport {
            exit,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ExitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "uffd-handler: {} (exit code {}: {})",
            self.reason,
            self.exit.code(),
            self.exit.name()
        )
    }
}
