//! Noticing that the VMM went away.
//!
//! A userfaultfd gives no POLLHUP when the process that created it exits (known failure 28), so
//! the handler watches the VMM itself, through two separate signals:
//!
//! - **the pidfd** becomes readable (POLLIN) when the VMM process exits. This is authoritative.
//! - **the socket** reports POLLHUP when the VMM closed its end. Firecracker v1.12+ keeps the
//!   socket open for its whole life, so there POLLHUP means it exited; v1.1–v1.11 close the
//!   socket right after the handshake, so for them POLLHUP alone says nothing about the VMM.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use rustix::process::{Signal, pidfd_send_signal};
use tracing::debug;

use super::peer::{PeerCredentials, open_pidfd, peer_pidfd};
use super::wait::poll_for;

/// What a [`PeerWatch`] knows of the peer process.
#[derive(Debug)]
enum Pidfd {
    /// A pidfd: readable once the process exited.
    Open(OwnedFd),
    /// The process was already gone when we looked.
    Gone,
    /// No pidfd could be had (pid hidden by a pid namespace, or pidfds unsupported).
    Unavailable,
}

/// The two liveness signals at one moment, reported separately (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeerStatus {
    /// The peer process exited (its pidfd is readable). Authoritative.
    pub exited: bool,
    /// The peer closed its end of the socket (POLLHUP). Means "exited" only for VMMs that keep
    /// the socket open (Firecracker v1.12+).
    pub socket_closed: bool,
}

/// Watches the VMM that completed a handshake: its pidfd and the handshake connection, which
/// is kept open here (closing it early would look like a handler crash to the VMM).
#[derive(Debug)]
pub struct PeerWatch {
    pid: i32,
    pidfd: Pidfd,
    conn: UnixStream,
}

impl PeerWatch {
    /// Watches the peer of `conn`. The pidfd is taken from the socket (SO_PEERPIDFD) when the
    /// kernel offers it, else opened from the SO_PEERCRED pid.
    pub fn from_connection(conn: UnixStream, peer: &PeerCredentials) -> Self {
        let opened = peer_pidfd(conn.as_fd()).or_else(|e| {
            debug!(error = %e, pid = peer.pid, "no SO_PEERPIDFD; opening a pidfd from the pid");
            open_pidfd(peer.pid)
        });
        let pidfd = match opened {
            Ok(fd) => Pidfd::Open(fd),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) && peer.pid != 0 => Pidfd::Gone,
            Err(e) => {
                debug!(error = %e, pid = peer.pid, "no pidfd for the peer; only the socket is watched");
                Pidfd::Unavailable
            }
        };
        PeerWatch {
            pid: peer.pid,
            pidfd,
            conn,
        }
    }

    /// Watches the process behind `pidfd` (if any) and the connection `conn`, for callers that
    /// obtained them otherwise.
    pub fn from_parts(conn: UnixStream, pid: i32, pidfd: Option<OwnedFd>) -> Self {
        PeerWatch {
            pid,
            pidfd: pidfd.map_or(Pidfd::Unavailable, Pidfd::Open),
            conn,
        }
    }

    /// The peer's pid (0 when unknown).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The pidfd, for the caller's own poll set: POLLIN means the VMM exited. `None` when no
    /// pidfd could be opened (see [`PeerWatch::already_exited`]).
    pub fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        match &self.pidfd {
            Pidfd::Open(fd) => Some(fd.as_fd()),
            Pidfd::Gone | Pidfd::Unavailable => None,
        }
    }

    /// Whether the peer had exited before a pidfd could be opened.
    pub fn already_exited(&self) -> bool {
        matches!(self.pidfd, Pidfd::Gone)
    }

    /// The handshake connection, for the caller's own poll set: POLLHUP means the VMM closed
    /// it (see the module docs for what that means per version). Poll it with no requested
    /// events; POLLHUP and POLLERR are always reported.
    pub fn socket(&self) -> BorrowedFd<'_> {
        self.conn.as_fd()
    }

    /// Waits up to `timeout` for either signal and reports both. Returns as soon as one is
    /// set; a socket already closed is reported at once.
    pub fn status(&self, timeout: Duration) -> io::Result<PeerStatus> {
        if self.already_exited() {
            return Ok(PeerStatus {
                exited: true,
                socket_closed: self.socket_hung_up()?,
            });
        }
        let deadline = Instant::now() + timeout;
        loop {
            let mut fds = vec![PollFd::new(&self.conn, PollFlags::empty())];
            if let Some(pidfd) = self.pidfd() {
                fds.push(PollFd::from_borrowed_fd(pidfd, PollFlags::IN));
            }
            poll_for(&mut fds, deadline.saturating_duration_since(Instant::now()))?;
            let hup = PollFlags::HUP | PollFlags::ERR;
            let status = PeerStatus {
                socket_closed: fds[0].revents().intersects(hup),
                exited: fds.get(1).is_some_and(|fd| !fd.revents().is_empty()),
            };
            if status != PeerStatus::default() || Instant::now() >= deadline {
                return Ok(status);
            }
        }
    }

    /// Waits up to `timeout` for the peer process to exit (the pidfd alone). Without a pidfd
    /// this waits out the timeout and returns false unless the peer was already gone: watch
    /// [`PeerWatch::status`]'s socket signal then. A failed poll (only ENOMEM is possible)
    /// counts as "not exited"; the caller polls again.
    pub fn poll_exited(&self, timeout: Duration) -> bool {
        match &self.pidfd {
            Pidfd::Gone => true,
            Pidfd::Open(pidfd) => {
                let deadline = Instant::now() + timeout;
                loop {
                    let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
                    match poll_for(&mut fds, deadline.saturating_duration_since(Instant::now())) {
                        Ok(n) if n > 0 => return true,
                        Ok(_) if Instant::now() < deadline => continue,
                        Ok(_) | Err(_) => return false,
                    }
                }
            }
            Pidfd::Unavailable => {
                std::thread::sleep(timeout);
                false
            }
        }
    }

    /// Kills the peer (SIGKILL through the pidfd, so never a process that reused its pid):
    /// what a handler does when it can no longer serve faults, rather than leave the guest
    /// hanging. Fails with ESRCH if it is already gone, and `Unsupported` without a pidfd.
    pub fn kill(&self) -> io::Result<()> {
        match &self.pidfd {
            Pidfd::Open(pidfd) => Ok(pidfd_send_signal(pidfd, Signal::KILL)?),
            Pidfd::Gone => Err(io::Error::from_raw_os_error(libc::ESRCH)),
            Pidfd::Unavailable => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "no pidfd for the peer",
            )),
        }
    }

    /// The connection, giving up the watch.
    pub fn into_connection(self) -> UnixStream {
        self.conn
    }

    fn socket_hung_up(&self) -> io::Result<bool> {
        let mut fds = [PollFd::new(&self.conn, PollFlags::empty())];
        poll_for(&mut fds, Duration::ZERO)?;
        Ok(fds[0].revents().intersects(PollFlags::HUP | PollFlags::ERR))
    }
}
