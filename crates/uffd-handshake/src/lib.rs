#![doc = include_str!("../README.md")]
#![deny(unsafe_code)]

mod client;
mod error;
mod listener;
mod payload;
// SO_PEERCRED and SO_PEERPIDFD by hand: the crate's only unsafe code (see the module).
#[allow(unsafe_code)]
mod peer;
mod recv;
mod socket_file;
mod wait;
mod watch;

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use tracing::{info, warn};

pub use client::{HandshakeRegion, PayloadVersion, UnknownPayloadVersion, handshake_json};
pub use error::{HandshakeError, StoppedBy};
pub use listener::{
    AcceptError, GROUP_MODE, HandshakeListener, ListenError, MAX_SOCKET_PATH, OWNER_ONLY_MODE,
};
pub use payload::{DEFAULT_PAGE_SIZE, PayloadError, parse_regions};
pub use peer::{PeerCredentials, PeerPolicy, open_pidfd, peer_credentials};
pub use recv::{MAX_FDS, MAX_PAYLOAD};
pub use socket_file::BoundSocket;
pub use watch::{PeerStatus, PeerWatch};

use recv::{Read, Reader};
use uffd_engine::GuestLayout;

/// A completed handshake: everything the VMM sent, validated.
#[derive(Debug)]
pub struct Handshake {
    /// The guest's regions, validated against the snapshot's memory size.
    pub layout: GuestLayout,
    /// The VMM's userfaultfd (the first fd sent). Not checked here: `uffd_core::Uffd::adopt`
    /// checks it is a userfaultfd when taking it (with the features the VMM enabled:
    /// `EVENT_REMOVE` for Firecracker).
    pub uffd: OwnedFd,
    /// A second fd, if sent (E2B's memfd of guest memory).
    pub extra_fd: Option<OwnedFd>,
    /// Who sent it.
    pub peer: PeerCredentials,
    /// The JSON as received (lossily decoded, trailing whitespace trimmed), for logs.
    pub raw_json: String,
    /// The VMM's liveness, holding the connection open.
    pub watch: PeerWatch,
}

/// Receives and validates a VMM's handshake on `conn`, waiting at most `timeout`.
///
/// Checks the peer's uid against `policy` before reading anything. Then reads until the JSON is
/// whole and at least one fd has arrived, tolerating JSON split across reads and an fd that
/// comes in a later message. Regions are checked as soon as the JSON is whole, against a memory
/// image of `image_size` bytes. On any error the connection and every received fd are closed.
pub fn receive_handshake(
    conn: UnixStream,
    timeout: Duration,
    image_size: u64,
    policy: &PeerPolicy,
) -> Result<Handshake, HandshakeError> {
    let _span = tracing::info_span!("handshake").entered();
    let peer = peer_credentials(&conn).map_err(HandshakeError::PeerCredentials)?;
    if !policy.allows(peer.uid) {
        warn!(
            pid = peer.pid,
            uid = peer.uid,
            "refusing a handshake from a disallowed uid"
        );
        return Err(HandshakeError::UidNotAllowed {
            peer,
            allowed: policy.allowed_uids.clone().unwrap_or_default(),
        });
    }
    let mut reader = Reader::new(conn.as_fd(), timeout);
    let (layout, raw_json) = loop {
        let stopped = match reader.read()? {
            Read::Data => None,
            Read::Stopped(stopped) => Some(stopped),
        };
        let layout = complete_layout(reader.bytes(), image_size)?;
        match (layout, stopped) {
            (Some(layout), _) if reader.fd_count() > 0 => break layout,
            (Some(_), Some(stopped)) => return Err(HandshakeError::MissingFd { stopped }),
            (None, Some(stopped)) if reader.bytes().is_empty() => {
                return Err(HandshakeError::NothingReceived { stopped });
            }
            (None, Some(stopped)) => {
                return Err(HandshakeError::Truncated {
                    received: reader.bytes().len(),
                    stopped,
                });
            }
            (_, None) => {}
        }
    };
    let mut fds = reader.into_fds().into_iter();
    let uffd = fds.next().expect("the loop ends only once an fd arrived");
    let extra_fd = fds.next();
    info!(
        pid = peer.pid,
        uid = peer.uid,
        regions = layout.regions().len(),
        page_size = layout.page_size().bytes(),
        fds = 1 + usize::from(extra_fd.is_some()),
        json = %raw_json,
        "handshake received"
    );
    let watch = PeerWatch::from_connection(conn, &peer);
    Ok(Handshake {
        layout,
        uffd,
        extra_fd,
        peer,
        raw_json,
        watch,
    })
}

/// The validated layout and the trimmed JSON if `bytes` are a whole JSON document; `None` if
/// more bytes are needed.
fn complete_layout(
    bytes: &[u8],
    image_size: u64,
) -> Result<Option<(GuestLayout, String)>, HandshakeError> {
    let raw_json = || String::from_utf8_lossy(bytes.trim_ascii_end()).into_owned();
    let value = match payload::complete_json(bytes) {
        Ok(Some(value)) => value,
        Ok(None) => return Ok(None),
        Err(source) => {
            return Err(HandshakeError::Payload {
                source,
                raw_json: raw_json(),
            });
        }
    };
    let regions =
        payload::regions_from_value(&value).map_err(|source| HandshakeError::Payload {
            source,
            raw_json: raw_json(),
        })?;
    let layout =
        GuestLayout::new(regions, image_size).map_err(|source| HandshakeError::Layout {
            source,
            raw_json: raw_json(),
        })?;
    Ok(Some((layout, raw_json())))
}
