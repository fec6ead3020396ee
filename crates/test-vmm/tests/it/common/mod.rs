//! Shared by the test VMM's tests: a temporary socket, the handler's side of the handshake
//! (recvmsg with SCM_RIGHTS), a minimal fault-serving handler over a known image, and a byte
//! model of the guest memory.
#![allow(dead_code, unreachable_pub)]

mod handler;

use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

use rustix::event::PollFlags;
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags};
use serde::Deserialize;
use test_vmm::{VmmConfig, VmmProcess, touch_word};

pub use handler::TestHandler;

pub use test_support::{HUGE, PAGE, TIMEOUT, TestDir, free_hugepages, skip};

/// A directory for one test's socket, removed on drop.
#[derive(Debug)]
pub struct SocketDir(TestDir);

impl SocketDir {
    /// A fresh directory under the temp dir.
    pub fn new(test: &str) -> Self {
        SocketDir(TestDir::new(test))
    }

    /// The socket's path.
    pub fn socket(&self) -> PathBuf {
        self.0.join("handler.sock")
    }

    /// A listener on [`SocketDir::socket`].
    pub fn listen(&self) -> UnixListener {
        UnixListener::bind(self.socket()).expect("bind the handler socket")
    }
}

/// One region of the payload, every field optional beyond the first three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct WireRegion {
    pub base_host_virt_addr: u64,
    pub size: u64,
    pub offset: u64,
    pub page_size_kib: Option<u64>,
    pub page_size: Option<u64>,
}

/// What the handler received.
#[derive(Debug)]
pub struct Handshake {
    /// The connection (the vmm may keep it open).
    pub stream: UnixStream,
    /// The message's bytes, as text.
    pub json: String,
    /// Every fd that came with it.
    pub fds: Vec<OwnedFd>,
    /// The JSON parsed.
    pub regions: Vec<WireRegion>,
}

pub use test_support::poll_in;

/// Accepts the vmm's connection and receives its one message (JSON and fds), as the handler
/// does: a large buffer, room for two fds, MSG_CMSG_CLOEXEC.
pub fn accept_handshake(listener: &UnixListener) -> Handshake {
    assert!(
        poll_in(listener, TIMEOUT).contains(PollFlags::IN),
        "no connection within {TIMEOUT:?}"
    );
    let (stream, _) = listener.accept().expect("accept");
    assert!(
        poll_in(&stream, TIMEOUT).contains(PollFlags::IN),
        "no handshake within {TIMEOUT:?}"
    );
    let mut data = vec![0u8; 64 << 10];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = rustix::net::recvmsg(
        &stream,
        &mut [IoSliceMut::new(&mut data)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .expect("recvmsg");
    assert!(
        !msg.flags.contains(ReturnFlags::CTRUNC),
        "control truncated"
    );
    assert!(!msg.flags.contains(ReturnFlags::TRUNC), "data truncated");
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    let json = String::from_utf8(data[..msg.bytes].to_vec()).expect("UTF-8 payload");
    let regions = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json}: {e}"));
    Handshake {
        stream,
        json,
        fds,
        regions,
    }
}

/// A vmm with `regions` (4 KiB pages unless `hugetlb`) connected to a fresh socket, and what
/// the handler received from it.
pub fn start(test: &str, regions: Vec<u64>, hugetlb: bool) -> (SocketDir, VmmProcess, Handshake) {
    let dir = SocketDir::new(test);
    let config = config(&dir, regions, hugetlb);
    let listener = dir.listen();
    let vmm = VmmProcess::spawn(config).expect("spawn the vmm");
    let handshake = accept_handshake(&listener);
    (dir, vmm, handshake)
}

/// The configuration [`start`] uses.
pub fn config(dir: &SocketDir, regions: Vec<u64>, hugetlb: bool) -> VmmConfig {
    let config = VmmConfig::new(test_vmm::binary(), dir.socket(), regions).timeout(TIMEOUT);
    if hugetlb { config.hugetlb() } else { config }
}

/// Word `i` (8 bytes) of the snapshot image with `seed`: splitmix64 of its index.
pub fn image_word(seed: u64, i: u64) -> u64 {
    touch_word(seed ^ 0x5eed, i)
}

/// The snapshot image bytes `[offset, offset + len)` (both multiples of 8).
pub fn image_bytes(seed: u64, offset: u64, len: u64) -> Vec<u8> {
    (offset / 8..(offset + len) / 8)
        .flat_map(|i| image_word(seed, i).to_le_bytes())
        .collect()
}

/// The expected bytes of guest memory.
pub use test_vmm::GuestModel as Model;

/// The snapshot image of `size` bytes with `seed`.
pub fn model_image(seed: u64, size: u64, page: u64) -> Model {
    Model::new(image_bytes(seed, 0, size), page)
}

pub use test_vmm::assert_hashes;
