//! A Unix socket file created with its final owner and mode in place, with no moment at which
//! another user can reach it more open than asked, and removed only by the one who made it.
//!
//! The socket is bound inside a fresh private directory (mode 0700, next to the final path),
//! given its group and mode there, where nobody else can reach it, and then renamed into place
//! with `RENAME_NOREPLACE`. Setting owner and mode by path after a bind at the final path
//! left a window in which another user who can write the parent directory could swap the path
//! and have a file of theirs changed instead. An existing file at the path is replaced only
//! when it is a socket this uid owns that nothing listens on (a stale one).

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, CWD, Gid, Mode, OFlags, RenameFlags, chmod, chown, renameat_with};
use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType, bind, socket_with};
use tracing::debug;

use crate::listener::{ListenError, MAX_SOCKET_PATH};

/// A bound (not yet listening) Unix stream socket and its file. Dropping it removes the file
/// if it is still the one it created.
#[derive(Debug)]
pub struct BoundSocket {
    socket: OwnedFd,
    path: PathBuf,
    /// Device and inode of the socket file, to remove only that one.
    identity: (u64, u64),
}

impl BoundSocket {
    /// Binds a non-blocking, close-on-exec Unix stream socket at `path` with `mode`, owned by
    /// group `group` if given.
    ///
    /// # Errors
    ///
    /// [`ListenError::PathTooLong`]; [`ListenError::NotASocket`] if something else is at
    /// `path`; [`ListenError::InUse`] if a socket there is listening (another daemon's);
    /// [`ListenError::NotOurs`] if a socket there belongs to another user;
    /// [`ListenError::Io`] for a step that failed.
    pub fn bind(path: &Path, mode: u32, group: Option<u32>) -> Result<Self, ListenError> {
        let len = path.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(ListenError::PathTooLong {
                path: path.to_path_buf(),
                len,
            });
        }
        let stale = check_existing(path)?;
        let fail = |step, source: io::Error| ListenError::Io {
            step,
            path: path.to_path_buf(),
            source,
        };
        let private =
            PrivateDir::create(path).map_err(|e| fail("creating a private directory for", e))?;
        // Reached through the directory's fd, so the address stays short whatever the path.
        let inside = format!("/proc/self/fd/{}/socket", private.fd.as_raw_fd());
        let address =
            SocketAddrUnix::new(inside.as_str()).map_err(|e| fail("addressing", e.into()))?;
        let socket = socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )
        .map_err(|e| fail("creating a socket for", e.into()))?;
        bind(&socket, &address).map_err(|e| fail("binding", e.into()))?;
        // Nobody but us can reach `inside` (its directory is ours, mode 0700): owner and mode
        // are set by path without a race.
        if let Some(gid) = group {
            chown(inside.as_str(), None, Some(Gid::from_raw(gid)))
                .map_err(|e| fail("giving the group of", e.into()))?;
        }
        chmod(inside.as_str(), Mode::from_raw_mode(mode))
            .map_err(|e| fail("setting the mode of", e.into()))?;
        if stale {
            debug!(path = %path.display(), "removing a stale socket");
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(fail("removing the stale socket", e)),
            }
        }
        // Its identity, read in the private directory before the move: read by path after
        // it, a socket another user swapped in meanwhile would pass for ours (and be removed
        // by our drop).
        let stat = rustix::fs::statat(&private.fd, "socket", AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| fail("inspecting the socket bound for", e.into()))?;
        let identity = (stat.st_dev, stat.st_ino);
        match renameat_with(&private.fd, "socket", CWD, path, RenameFlags::NOREPLACE) {
            Ok(()) => {}
            // Someone bound the path since it was checked.
            Err(Errno::EXIST) => {
                return Err(ListenError::InUse {
                    path: path.to_path_buf(),
                });
            }
            Err(e) => return Err(fail("moving the socket into place at", e.into())),
        }
        drop(private);
        Ok(BoundSocket {
            socket,
            path: path.to_path_buf(),
            identity,
        })
    }

    /// The socket file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl AsFd for BoundSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        let ours = fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.file_type().is_socket() && (m.dev(), m.ino()) == self.identity);
        if ours {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// What is at `path` now: `Ok(false)` nothing, `Ok(true)` a stale socket of ours to replace;
/// anything else is an error that names it.
fn check_existing(path: &Path) -> Result<bool, ListenError> {
    let metadata = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
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
    let own = rustix::process::geteuid().as_raw();
    if metadata.uid() != own {
        return Err(ListenError::NotOurs {
            path: path.to_path_buf(),
            uid: metadata.uid(),
        });
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(ListenError::InUse {
            path: path.to_path_buf(),
        }),
        Err(e) if e.raw_os_error() == Some(Errno::CONNREFUSED.raw_os_error()) => Ok(true),
        Err(source) => Err(ListenError::Io {
            step: "probing the socket at",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// A fresh directory, mode 0700, beside the final path, and an fd of it; removed (with what
/// is left in it) on drop.
struct PrivateDir {
    path: PathBuf,
    fd: OwnedFd,
}

impl PrivateDir {
    fn create(beside: &Path) -> io::Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let parent = match beside.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let name = beside
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let path = parent.join(format!(
            ".{name}.{}.{}.bind",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        rustix::fs::mkdir(&path, Mode::from_raw_mode(0o700))?;
        let opened = rustix::fs::open(
            &path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        );
        let fd = match opened {
            Ok(fd) => fd,
            Err(e) => {
                let _ = fs::remove_dir(&path);
                return Err(e.into());
            }
        };
        // Between the mkdir and the open, another user with write access to the parent could
        // have put a directory of theirs in its place: what was opened must be ours, closed to
        // everyone else.
        let stat = rustix::fs::fstat(&fd)?;
        let own = rustix::process::geteuid().as_raw();
        let mode = stat.st_mode & 0o7777;
        let is_dir =
            rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::Directory;
        if !is_dir || stat.st_uid != own || mode & 0o077 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} was replaced while it was being created (owner {}, mode {mode:o}): \
                     another user can write to its parent directory",
                    path.display(),
                    stat.st_uid
                ),
            ));
        }
        Ok(PrivateDir { path, fd })
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = fs::remove_file(self.path.join("socket"));
        let _ = fs::remove_dir(&self.path);
    }
}
