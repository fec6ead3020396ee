//! Polling and sending file descriptors, as the tests of several crates need them.

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};

/// The poll events `fd` reports within `timeout` when asked for input (empty if none).
///
/// # Panics
///
/// If `poll` fails with anything but EINTR.
pub fn poll_in(fd: impl AsFd, timeout: Duration) -> PollFlags {
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let timeout = Timespec::try_from(timeout).expect("timeout");
    loop {
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(_) => return fds[0].revents(),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => panic!("poll: {e}"),
        }
    }
}

/// Sends `bytes` with `fds` attached as SCM_RIGHTS in one `sendmsg`, as Firecracker sends
/// its handshake. A stream socket carries fds only with at least one data byte.
///
/// # Errors
///
/// The `sendmsg` error.
///
/// # Panics
///
/// If the kernel took fewer bytes than `bytes`.
pub fn send_with_fds(stream: &UnixStream, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() {
        assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
    }
    let sent = sendmsg(
        stream,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::empty(),
    )?;
    assert_eq!(sent, bytes.len(), "short send");
    Ok(())
}
