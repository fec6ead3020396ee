//! The Unix socket the VMM connects to, created reachable only by its owner (or a group):
//! a world-writable socket lets any local user hand the handler a userfaultfd (known
//! failure 33).

use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use rustix::fs::{Gid, Mode, chmod, chown};
use rustix::io::Errno;
use rustix::net::{
    AddressFamily, SocketAddrUnix, SocketFlags, SocketType, accept_with, bind, listen, socket_with,
};
use tracing::{debug, info};

use super::wait::poll_for;

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
    socket: OwnedFd,
    path: PathBuf,
    /// Device and inode of the socket file we created, to remove only that one.
    identity: (u64, u64),
}

impl HandshakeListener {
    /// Binds a socket at `path` with mode 0600, or 0660 owned by group `group`, and listens.
    ///
    /// A stale socket file at `path` is replaced; any other kind of file is an error. The mode
    /// is set before `listen`, so nobody can connect while the socket is more open than asked.
    pub fn bind(path: impl AsRef<Path>, group: Option<u32>) -> Result<Self, ListenError> {
        let path = path.as_ref().to_path_buf();
        let len = path.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(ListenError::PathTooLong { path, len });
        }
        remove_stale_socket(&path)?;
        let fail = |step, source| io_error(step, &path, source);
        let address = SocketAddrUnix::new(&path).map_err(|e| fail("addressing", e.into()))?;
        let socket = socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )
        .map_err(|e| fail("creating a socket for", e.into()))?;
        bind(&socket, &address).map_err(|e| fail("binding", e.into()))?;
        let identity = fs::symlink_metadata(&path)
            .map(|m| (m.dev(), m.ino()))
            .map_err(|e| fail("inspecting", e))?;
        let listener = HandshakeListener {
            socket,
            path,
            identity,
        };
        // From here on, dropping `listener` removes the socket file on failure.
        let fail = |step, source: Errno| io_error(step, &listener.path, source.into());
        let mode = match group {
            None => OWNER_ONLY_MODE,
            Some(gid) => {
                chown(&listener.path, None, Some(Gid::from_raw(gid)))
                    .map_err(|e| fail("giving the group of", e))?;
                GROUP_MODE
            }
        };
        chmod(&listener.path, Mode::from_raw_mode(mode))
            .map_err(|e| fail("setting the mode of", e))?;
        listen(&listener.socket, 8).map_err(|e| fail("listening on", e))?;
        info!(path = %listener.path.display(), mode = format_args!("{mode:o}"), ?group, "listening for the VMM");
        Ok(listener)
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
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
                        debug!(path = %self.path.display(), "VMM connected");
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

impl Drop for HandshakeListener {
    fn drop(&mut self) {
        let ours = fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.file_type().is_socket() && (m.dev(), m.ino()) == self.identity);
        if ours {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn io_error(step: &'static str, path: &Path, source: io::Error) -> ListenError {
    ListenError::Io {
        step,
        path: path.to_path_buf(),
        source,
    }
}

/// Removes a socket file left at `path` by an earlier run; refuses anything else.
fn remove_stale_socket(path: &Path) -> Result<(), ListenError> {
    let metadata = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ListenError::Io {
                step: "inspecting",
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let kind = metadata.file_type();
    if !kind.is_socket() {
        let kind = if kind.is_file() {
            "regular file"
        } else if kind.is_dir() {
            "directory"
        } else if kind.is_symlink() {
            "symbolic link"
        } else {
            "special file"
        };
        return Err(ListenError::NotASocket {
            path: path.to_path_buf(),
            kind,
        });
    }
    debug!(path = %path.display(), "removing a stale socket");
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ListenError::Io {
            step: "removing the stale socket",
            path: path.to_path_buf(),
            source,
        }),
    }
}
