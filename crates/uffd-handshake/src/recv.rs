//! Reading the handshake off the connection: recvmsg with MSG_CMSG_CLOEXEC, collecting the
//! bytes and any SCM_RIGHTS fds, one read at a time until the caller has what it needs.

use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, recvmsg};

use super::error::{HandshakeError, StoppedBy};
use super::wait::poll_for;

/// Most bytes of JSON accepted: about 590 regions at ~110 bytes each (Firecracker sends 1 to 4).
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Most fds accepted: the userfaultfd and, from E2B's fork, a memfd of guest memory.
pub const MAX_FDS: usize = 2;
/// Room for this many fds per read, so a peer sending a few too many is seen (and all its fds
/// closed) rather than silently cut by the kernel.
const FD_SLOTS: usize = 16;

/// What one read brought.
pub(super) enum Read {
    /// Bytes arrived (and perhaps fds).
    Data,
    /// The connection ended or the deadline passed before anything more arrived.
    Stopped(StoppedBy),
}

/// The bytes and fds received so far on one connection.
pub(super) struct Reader<'a> {
    conn: BorrowedFd<'a>,
    started: Instant,
    deadline: Instant,
    buf: Vec<u8>,
    len: usize,
    fds: Vec<OwnedFd>,
}

impl<'a> Reader<'a> {
    /// A reader of `conn` that gives up `timeout` from now.
    pub(super) fn new(conn: BorrowedFd<'a>, timeout: Duration) -> Self {
        let started = Instant::now();
        Reader {
            conn,
            started,
            deadline: started + timeout,
            buf: vec![0; MAX_PAYLOAD],
            len: 0,
            fds: Vec::new(),
        }
    }

    /// The bytes received so far.
    pub(super) fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// How many fds arrived so far.
    pub(super) fn fd_count(&self) -> usize {
        self.fds.len()
    }

    /// The fds received, in arrival order.
    pub(super) fn into_fds(self) -> Vec<OwnedFd> {
        self.fds
    }

    /// Waits for and performs one read. Every fd received is owned (and so closed on error)
    /// before anything is checked.
    pub(super) fn read(&mut self) -> Result<Read, HandshakeError> {
        loop {
            let remaining = self.deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Ok(Read::Stopped(StoppedBy::Deadline {
                    waited: self.started.elapsed(),
                }));
            }
            if self.len == MAX_PAYLOAD {
                return Err(HandshakeError::TooLarge { limit: MAX_PAYLOAD });
            }
            let mut fds = [PollFd::from_borrowed_fd(self.conn, PollFlags::IN)];
            if poll_for(&mut fds, remaining).map_err(HandshakeError::Io)? == 0 {
                continue;
            }
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FD_SLOTS))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let mut iov = [IoSliceMut::new(&mut self.buf[self.len..])];
            let flags = RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT;
            let msg = match recvmsg(self.conn, &mut iov, &mut control, flags) {
                Ok(msg) => msg,
                Err(Errno::AGAIN | Errno::INTR) => continue,
                Err(e) => return Err(HandshakeError::Io(e.into())),
            };
            for message in control.drain() {
                if let RecvAncillaryMessage::ScmRights(fds) = message {
                    self.fds.extend(fds);
                }
            }
            if msg.flags.contains(ReturnFlags::CTRUNC) {
                return Err(HandshakeError::ControlTruncated {
                    delivered: self.fds.len(),
                });
            }
            if msg.flags.contains(ReturnFlags::TRUNC) {
                return Err(HandshakeError::DataTruncated);
            }
            if self.fds.len() > MAX_FDS {
                return Err(HandshakeError::TooManyFds {
                    count: self.fds.len(),
                });
            }
            if msg.bytes == 0 {
                return Ok(Read::Stopped(StoppedBy::PeerClosed));
            }
            self.len += msg.bytes;
            return Ok(Read::Data);
        }
    }
}
