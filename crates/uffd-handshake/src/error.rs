//! Why a handshake failed. The connection is closed and every received fd with it.

use std::fmt;
use std::io;
use std::time::Duration;

use super::payload::PayloadError;
use super::peer::PeerCredentials;
use uffd_engine::LayoutError;

/// What ended the receive before the handshake was whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoppedBy {
    /// The VMM closed the connection.
    PeerClosed,
    /// The deadline passed.
    Deadline {
        /// How long we waited.
        waited: Duration,
    },
}

impl fmt::Display for StoppedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoppedBy::PeerClosed => f.write_str("the VMM closed the connection"),
            StoppedBy::Deadline { waited } => write!(f, "the deadline passed ({waited:.1?})"),
        }
    }
}

/// Why [`super::receive_handshake`] refused a connection.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// SO_PEERCRED failed (not a Unix socket?).
    #[error("could not read the peer's credentials (SO_PEERCRED): {0}")]
    PeerCredentials(#[source] io::Error),
    /// The peer's uid is not in the policy's allowed set. Nothing was read.
    #[error(
        "peer uid {} (pid {}) may not hand over a userfaultfd; allowed uids: {allowed:?}",
        peer.uid, peer.pid
    )]
    UidNotAllowed {
        /// Who connected.
        peer: PeerCredentials,
        /// The allowed uids.
        allowed: Vec<u32>,
    },
    /// Not a byte arrived.
    #[error("no handshake arrived: {stopped} before anything was sent")]
    NothingReceived {
        /// What ended the wait.
        stopped: StoppedBy,
    },
    /// Part of the JSON arrived, then nothing more.
    #[error("handshake truncated: {received} bytes of incomplete JSON, then {stopped}")]
    Truncated {
        /// Bytes received.
        received: usize,
        /// What ended the wait.
        stopped: StoppedBy,
    },
    /// The JSON arrived whole but no fd came with it or after it.
    #[error("the region list arrived without the userfaultfd (no SCM_RIGHTS fd), then {stopped}")]
    MissingFd {
        /// What ended the wait.
        stopped: StoppedBy,
    },
    /// More fds than the userfaultfd plus one memfd. All were closed.
    #[error(
        "the VMM sent {count} file descriptors; expected the userfaultfd and at most one more \
         (all were closed)"
    )]
    TooManyFds {
        /// How many arrived.
        count: usize,
    },
    /// The kernel cut the control data (MSG_CTRUNC): far too many fds. It closed those that
    /// did not fit; we closed the rest.
    #[error(
        "the kernel truncated the control data (MSG_CTRUNC) after {delivered} file \
         descriptors: the VMM sent far too many (all were closed)"
    )]
    ControlTruncated {
        /// How many fds were delivered before the cut.
        delivered: usize,
    },
    /// The kernel cut the data (MSG_TRUNC).
    #[error("the kernel truncated the handshake data (MSG_TRUNC)")]
    DataTruncated,
    /// The JSON went on past the size limit.
    #[error("the handshake JSON exceeds {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The JSON is malformed or does not describe regions.
    #[error("bad handshake payload: {source}")]
    Payload {
        /// What is wrong with it.
        source: PayloadError,
        /// The JSON as received (lossily decoded), for logs.
        raw_json: String,
    },
    /// The regions are well-formed but do not fit the snapshot.
    #[error("the VMM's regions do not fit the snapshot: {source}")]
    Layout {
        /// What is wrong with them.
        source: LayoutError,
        /// The JSON as received, for logs.
        raw_json: String,
    },
    /// poll or recvmsg failed.
    #[error("receiving the handshake failed: {0}")]
    Io(#[source] io::Error),
}

impl HandshakeError {
    /// The JSON as received, when the error is about its content.
    pub fn raw_json(&self) -> Option<&str> {
        match self {
            HandshakeError::Payload { raw_json, .. } | HandshakeError::Layout { raw_json, .. } => {
                Some(raw_json)
            }
            _ => None,
        }
    }
}
