//! The Unix socket the VMM connects to, created reachable only by its owner (or a group):
//! a world-writable socket lets any local user hand the handler a userfaultfd (known
//! failure 33).

use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
use rustix::net::{SocketFlags, accept_with, listen};
use tracing::{debug, info};

use super::wait::poll_for;
use crate::socket_file::BoundSocket;

/// Longest socket path the kernel takes (`sun_path` is 108 bytes with its NUL).
pub const MAX_SOCKET_PATH: usize = 107;
/// The socket's mode without a group: owner only.
pub const OWNER_ONLY_MODE: u32 = 0o600;
/// The socket's mode when given to a group: owner and group.
pub const GROUP_MODE: u32 = 0o660;

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// Something other than a socket is at the path; it is left alone.
    #[error("{} exists and is a {kind}, not a socket; refusing to replace it", path.display())]
    NotASocket {
        /// The path.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// The path does not fit in a socket address.
    #[error("socket path {} is {len} bytes; the limit is {MAX_SOCKET_PATH}", path.display())]
    PathTooLong {
        /// The path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
    },
    /// A socket at the path is listening: another daemon's. It is left alone.
    #[error("{} is in use: a socket there is listening (another daemon?); refusing to replace it", path.display())]
    InUse {
        /// The path.
        path: PathBuf,
    },
    /// A socket at the path belongs to another user. It is left alone.
    #[error("{} is a socket of uid {uid}, not ours; refusing to replace it", path.display())]
    NotOurs {
        /// The path.
        path: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// A step of setting up the socket failed.
    #[error("{step} {}: {source}", path.display())]
    Io {
        /// What we were doing ("binding", "setting the mode of", ...).
        step: &'static str,
        /// The path.
        path: PathBuf,
        /// The failure.
        source: io::Error,
    },
}

/// Why no connection was accepted.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// Nobody connected in time.
    #[error("no VMM connected within {waited:.1?}")]
    Timeout {
        /// How long we waited.
        waited: Duration,
    },
    /// poll or accept failed.
    #[error("accepting a connection failed: {0}")]
    Io(#[source] io::Error),
}

/// A listening Unix stream socket for the handshake. The socket file is removed on drop (if it
/// is still ours).
///
/// The parent directory must not be writable by untrusted users: they could swap the path
/// between our checks and our use.
#[derive(Debug)]
pub struct HandshakeListener {
    socket: BoundSocket,
}

impl HandshakeListener {
    /// Binds a socket at `path` with mode 0600, or 0660 owned by group `group`, and listens.
    ///
    /// The socket file is created with that owner and mode in place ([`BoundSocket`]): there is
    /// no moment at which anyone else can reach it more open. A stale socket file at `path`
    /// (ours, nothing listening) is replaced; a listening one, another user's, or any other kind
    /// of file is an error.
    pub fn bind(path: impl AsRef<Path>, group: Option<u32>) -> Result<Self, ListenError> {
        let path = path.as_ref();
        let mode = if group.is_some() {
            GROUP_MODE
        } else {
            OWNER_ONLY_MODE
        };
        let socket = BoundSocket::bind(path, mode, group)?;
        listen(&socket, 8).map_err(|e| ListenError::Io {
            step: "listening on",
            path: path.to_path_buf(),
            source: e.into(),
        })?;
        info!(path = %path.display(), mode = format_args!("{mode:o}"), ?group, "listening for the VMM");
        Ok(HandshakeListener { socket })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        self.socket.path()
    }

    /// Waits up to `timeout` for a VMM to connect. The connection is blocking and
    /// close-on-exec.
    pub fn accept(&self, timeout: Duration) -> Result<UnixStream, AcceptError> {
        let started = Instant::now();
        let deadline = started + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let mut fds = [PollFd::new(&self.socket, PollFlags::IN)];
            let ready = poll_for(&mut fds, remaining).map_err(AcceptError::Io)?;
            if ready > 0 {
                match accept_with(&self.socket, SocketFlags::CLOEXEC) {
                    Ok(conn) => {
                        debug!(path = %self.socket.path().display(), "VMM connected");
                        return Ok(UnixStream::from(conn));
                    }
                    // The client gave up between poll and accept, or a signal came.
                    Err(Errno::AGAIN | Errno::INTR | Errno::CONNABORTED) => {}
                    Err(e) => return Err(AcceptError::Io(e.into())),
                }
            }
            if Instant::now() >= deadline {
                return Err(AcceptError::Timeout {
                    waited: started.elapsed(),
                });
            }
        }
    }
}

impl AsFd for HandshakeListener {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.socket.as_fd()
    }
}
