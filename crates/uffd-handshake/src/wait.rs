//! poll(2) with a timeout, for deadline loops.

use std::io;
use std::time::Duration;

use rustix::event::{PollFd, Timespec, poll};
use rustix::io::Errno;

/// Polls `fds` for at most `timeout`. An interrupted poll reports nothing ready: callers loop
/// until their deadline anyway.
pub(super) fn poll_for(fds: &mut [PollFd<'_>], timeout: Duration) -> io::Result<usize> {
    // Beyond Timespec's range means "practically forever"; a day per round is plenty.
    let timeout = Timespec::try_from(timeout.min(Duration::from_secs(86_400)))
        .expect("a day fits in a timespec");
    match poll(fds, Some(&timeout)) {
        Ok(n) => Ok(n),
        Err(Errno::INTR) => Ok(0),
        Err(e) => Err(e.into()),
    }
}
