//! How the VMM ended, for a process that is not its parent.
//!
//! A pidfd says *that* the process exited, not how. Two places tell the status to anyone
//! holding the right to look: `/proc/<pid>/stat` (field 52, `exit_code`) while the process
//! is a zombie, and `PIDFD_GET_INFO` with `PIDFD_INFO_EXIT` (Linux 6.15+) once its parent has
//! reaped it. Between the two there is no gap: the stat entry goes at the reap, which is when
//! the pidfd info gets the status. Where neither answers (older kernels, no access), the exit
//! is reported as unknown.

use std::fmt;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

/// How long to keep asking after the pidfd reported the exit.
const ASK_FOR: Duration = Duration::from_millis(200);

/// How a process ended, as a wait status decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VmmEnd {
    /// It exited with this status.
    Exited(i32),
    /// A signal killed it.
    Killed(i32),
    /// The status could not be read.
    Unknown,
}

impl VmmEnd {
    /// Decodes a wait status (`exit_code` in /proc and pidfd info use the same encoding).
    pub(crate) fn from_wait_status(status: i32) -> Self {
        if status & 0x7f == 0 {
            VmmEnd::Exited((status >> 8) & 0xff)
        } else {
            VmmEnd::Killed(status & 0x7f)
        }
    }

    /// Whether this counts as a normal exit (status 0, or unknown).
    pub(crate) fn is_normal(self) -> bool {
        matches!(self, VmmEnd::Exited(0) | VmmEnd::Unknown)
    }
}

impl fmt::Display for VmmEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            VmmEnd::Exited(code) => write!(f, "exited with status {code}"),
            VmmEnd::Killed(signal) => {
                write!(f, "was killed by signal {signal}{}", signal_name(signal))
            }
            VmmEnd::Unknown => f.write_str("exited (status unknown)"),
        }
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGKILL => " (SIGKILL)",
        libc::SIGTERM => " (SIGTERM)",
        libc::SIGSEGV => " (SIGSEGV)",
        libc::SIGABRT => " (SIGABRT)",
        libc::SIGBUS => " (SIGBUS)",
        libc::SIGINT => " (SIGINT)",
        _ => "",
    }
}

/// How the exited process `pid` (watched through `pidfd`) ended.
pub(crate) fn vmm_end(pid: i32, pidfd: Option<BorrowedFd<'_>>) -> VmmEnd {
    let deadline = Instant::now() + ASK_FOR;
    loop {
        if let Some(status) = pidfd.and_then(pidfd_exit_status) {
            return VmmEnd::from_wait_status(status);
        }
        if let Some(status) = zombie_exit_status(pid) {
            return VmmEnd::from_wait_status(status);
        }
        if Instant::now() >= deadline {
            return VmmEnd::Unknown;
        }
        // The status moves from /proc to the pidfd at the reap; ask again in a moment.
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `exit_code` from `/proc/<pid>/stat` if the process is a zombie (a live process with the
/// same pid, after a reap and reuse, is never in state Z or X).
fn zombie_exit_status(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 2 (comm) may hold spaces and parentheses: count fields after its last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = *fields.first()?;
    if state != "Z" && state != "X" {
        return None;
    }
    // Field 3 (state) is fields[0], so field 52 (exit_code) is fields[49].
    fields.get(49)?.parse().ok()
}

/// The exit status from `PIDFD_GET_INFO`, once the kernel has it (after the reap).
fn pidfd_exit_status(pidfd: BorrowedFd<'_>) -> Option<i32> {
    // SAFETY: pidfd_info is plain integers, for which all-zero is a valid value.
    let mut info: libc::pidfd_info = unsafe { std::mem::zeroed() };
    info.mask = u64::from(libc::PIDFD_INFO_EXIT);
    // SAFETY: PIDFD_GET_INFO reads and writes one pidfd_info, which `info` is, exclusively
    // borrowed for the call; the kernel copies at most its size.
    let rc = unsafe { libc::ioctl(pidfd.as_raw_fd(), libc::PIDFD_GET_INFO, &raw mut info) };
    (rc == 0 && info.mask & u64::from(libc::PIDFD_INFO_EXIT) != 0).then_some(info.exit_code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_statuses_decode() {
        assert_eq!(VmmEnd::from_wait_status(0), VmmEnd::Exited(0));
        assert_eq!(VmmEnd::from_wait_status(3 << 8), VmmEnd::Exited(3));
        assert_eq!(VmmEnd::from_wait_status(9), VmmEnd::Killed(9));
        assert!(VmmEnd::Exited(0).is_normal() && !VmmEnd::Killed(9).is_normal());
        assert_eq!(
            VmmEnd::Killed(9).to_string(),
            "was killed by signal 9 (SIGKILL)"
        );
    }

    #[test]
    fn a_killed_child_reports_its_signal() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let pidfd = uffd_handshake::open_pidfd(pid).unwrap();
        child.kill().unwrap();
        let mut fds = [rustix::event::PollFd::new(
            &pidfd,
            rustix::event::PollFlags::IN,
        )];
        let timeout = rustix::event::Timespec::try_from(Duration::from_secs(10)).unwrap();
        assert_eq!(rustix::event::poll(&mut fds, Some(&timeout)).unwrap(), 1);
        // A zombie: /proc tells.
        use std::os::fd::AsFd;
        assert_eq!(
            vmm_end(pid, Some(pidfd.as_fd())),
            VmmEnd::Killed(libc::SIGKILL)
        );
        child.wait().unwrap();
        // Reaped: the pidfd tells where the kernel supports it.
        let end = vmm_end(pid, Some(pidfd.as_fd()));
        assert!(
            matches!(end, VmmEnd::Killed(libc::SIGKILL) | VmmEnd::Unknown),
            "{end:?}"
        );
    }
}
