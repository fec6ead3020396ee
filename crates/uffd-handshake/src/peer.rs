//! Who is on the other end of the socket: SO_PEERCRED credentials, the policy on which uids may
//! hand us a userfaultfd, and a pidfd of the peer process.

use std::io;
use std::mem::{MaybeUninit, size_of};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use rustix::process::{Pid, PidfdFlags, pidfd_open};

/// The peer's credentials as the kernel recorded them when it connected (SO_PEERCRED).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerCredentials {
    /// The peer's process id in our pid namespace; 0 when the peer's namespace hides it.
    pub pid: i32,
    /// The peer's effective user id.
    pub uid: u32,
    /// The peer's effective group id.
    pub gid: u32,
}

/// Which peers may complete a handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPolicy {
    /// The user ids allowed to connect; `None` allows any (the socket's mode is then the only
    /// guard).
    pub allowed_uids: Option<Vec<u32>>,
}

impl PeerPolicy {
    /// Any peer that can open the socket.
    pub fn any() -> Self {
        PeerPolicy { allowed_uids: None }
    }

    /// Only these user ids.
    pub fn uids(uids: impl IntoIterator<Item = u32>) -> Self {
        PeerPolicy {
            allowed_uids: Some(uids.into_iter().collect()),
        }
    }

    /// Our own user id and root: the daemon's default.
    pub fn own_uid_and_root() -> Self {
        let own = rustix::process::getuid().as_raw();
        PeerPolicy::uids(if own == 0 { vec![0] } else { vec![own, 0] })
    }

    /// Whether a peer with user id `uid` may connect.
    pub fn allows(&self, uid: u32) -> bool {
        self.allowed_uids
            .as_ref()
            .is_none_or(|uids| uids.contains(&uid))
    }
}

/// The connected peer's credentials (SO_PEERCRED).
///
/// Read with libc rather than rustix: rustix's `UCred` holds a non-zero `Pid`, but the kernel
/// reports pid 0 for a peer outside our pid namespace.
pub fn peer_credentials(socket: impl AsFd) -> io::Result<PeerCredentials> {
    let mut cred = MaybeUninit::<libc::ucred>::zeroed();
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is writable for `len` bytes, `len` is a valid in/out length, and the fd is
    // borrowed for the call's duration.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            cred.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if len as usize != size_of::<libc::ucred>() {
        return Err(io::Error::other(format!(
            "SO_PEERCRED returned {len} bytes, expected {}",
            size_of::<libc::ucred>()
        )));
    }
    // SAFETY: zero-initialised and fully written by the kernel (length checked above); every bit
    // pattern is a valid `ucred`.
    let cred = unsafe { cred.assume_init() };
    Ok(PeerCredentials {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
    })
}

/// A pidfd of the process that connected, taken from the socket itself (SO_PEERPIDFD, Linux
/// 6.5+), so it names that process even if its pid was since reused.
pub(super) fn peer_pidfd(socket: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let mut fd: libc::c_int = -1;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` is writable for `len` bytes and `len` is a valid in/out length.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERPIDFD,
            (&raw mut fd).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if fd < 0 || len as usize != size_of::<libc::c_int>() {
        return Err(io::Error::other("SO_PEERPIDFD returned no fd"));
    }
    // SAFETY: on success the kernel installed a new fd (close-on-exec) that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A pidfd of process `pid` (`pidfd_open`). Open it while the process is known to be alive
/// (pids are reused after a process is reaped).
pub fn open_pidfd(pid: i32) -> io::Result<OwnedFd> {
    let pid = Pid::from_raw(pid).ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))?;
    Ok(pidfd_open(pid, PidfdFlags::empty())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn policy_allows_listed_uids_only() {
        assert!(PeerPolicy::any().allows(12345));
        let policy = PeerPolicy::uids([1000]);
        assert!(policy.allows(1000));
        assert!(!policy.allows(0));
        assert!(PeerPolicy::own_uid_and_root().allows(0));
        assert!(PeerPolicy::own_uid_and_root().allows(rustix::process::getuid().as_raw()));
    }

    #[test]
    fn socketpair_peer_is_this_process() {
        let (a, _b) = UnixStream::pair().unwrap();
        let cred = peer_credentials(&a).unwrap();
        assert_eq!(u32::try_from(cred.pid).ok(), Some(std::process::id()));
        assert_eq!(cred.uid, rustix::process::geteuid().as_raw());
        assert!(open_pidfd(cred.pid).is_ok());
        assert!(open_pidfd(0).is_err());
    }
}
