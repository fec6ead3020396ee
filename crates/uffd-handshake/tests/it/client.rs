//! A VMM-side client for the handshake tests, behaving as Firecracker does: connect, then one
//! `sendmsg` with compact JSON (no newline) and the fds as SCM_RIGHTS. Also region payloads of
//! each Firecracker generation, fds whose closing the test can observe, and temporary socket
//! paths.
//!
//! The protocol test files include this with `#[path]`. Cargo also builds it as a test binary of
//! its own, with no tests: tests here would run inside every including binary, and fd-counting
//! tests need a binary where nothing else opens fds.
#![allow(dead_code, unreachable_pub)]

use std::fs;
use std::io::{self};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

use rustix::io::Errno;
use uffd_core::{Features, UffdBuilder};

/// 4 KiB.
pub use test_support::{HUGE, PAGE, TestDir as TempDir};

/// Which shape of region object a Firecracker version sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// v1.1–v1.6: `base_host_virt_addr`, `size`, `offset` only.
    V1_1,
    /// v1.7–v1.11: plus `page_size_kib`, holding bytes.
    V1_7,
    /// v1.12+: plus `page_size` (bytes) as well, equal to `page_size_kib`.
    V1_12,
}

/// One region as the VMM describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// Start in the VMM's address space.
    pub host_addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// Where its bytes start in the memory file.
    pub offset: u64,
}

/// Regions laid out as Firecracker does: given sizes, ascending addresses with a gap between
/// them, offsets the running sum of earlier sizes.
pub fn regions(sizes: &[u64]) -> Vec<Region> {
    let mut host_addr = 0x7f00_0000_0000u64;
    let mut offset = 0;
    sizes
        .iter()
        .map(|&size| {
            let region = Region {
                host_addr,
                size,
                offset,
            };
            host_addr += size + HUGE;
            offset += size;
            region
        })
        .collect()
}

/// The compact JSON a Firecracker of `generation` sends for `regions` of `page_size` pages.
pub fn payload(regions: &[Region], page_size: u64, generation: Generation) -> String {
    let objects: Vec<String> = regions
        .iter()
        .map(|r| {
            let base = format!(
                r#""base_host_virt_addr":{},"size":{},"offset":{}"#,
                r.host_addr, r.size, r.offset
            );
            match generation {
                Generation::V1_1 => format!("{{{base}}}"),
                Generation::V1_7 => format!(r#"{{{base},"page_size_kib":{page_size}}}"#),
                Generation::V1_12 => {
                    format!(r#"{{{base},"page_size":{page_size},"page_size_kib":{page_size}}}"#)
                }
            }
        })
        .collect();
    format!("[{}]", objects.join(","))
}

pub use test_support::send_with_fds as send;

/// A userfaultfd created as Firecracker creates it: non-blocking, close-on-exec, kernel faults
/// included, feature `EVENT_REMOVE` only.
pub fn firecracker_uffd() -> OwnedFd {
    UffdBuilder::new()
        .features(Features::EVENT_REMOVE)
        .create()
        .expect("creating a userfaultfd")
        .into_fd()
}

/// A memfd, standing in for E2B's second fd (guest memory).
pub fn memfd() -> OwnedFd {
    rustix::fs::memfd_create("guest-memory", rustix::fs::MemfdFlags::CLOEXEC).unwrap()
}

/// A pipe whose read end is sent as the fd under test: once every copy of the read end is
/// closed, writing to `writer` fails with EPIPE. This sees whether the handler (or the kernel)
/// closed a received fd without counting the process's fds, which other tests change.
pub struct Tracer {
    /// The end to send.
    pub reader: OwnedFd,
    /// The end we keep.
    pub writer: OwnedFd,
}

impl Tracer {
    /// A new pipe.
    pub fn pipe() -> Self {
        let (reader, writer) = rustix::pipe::pipe().unwrap();
        Tracer { reader, writer }
    }

    /// Sends nothing; drops our copy of the read end, so only the handler's copies remain.
    pub fn forget_reader(self) -> OwnedFd {
        self.writer
    }
}

/// Whether every copy of the pipe's read end is closed (SIGPIPE is ignored in Rust programs).
pub fn readers_closed(writer: &OwnedFd) -> bool {
    match rustix::io::write(writer, b"x") {
        Err(Errno::PIPE) => true,
        Ok(_) => false,
        Err(e) => panic!("writing to the tracer pipe: {e}"),
    }
}

/// How many fds this process has open.
pub fn open_fd_count() -> usize {
    fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Whether the other end closed `stream` (a read sees EOF or a reset).
pub fn peer_closed(stream: &UnixStream) -> bool {
    use std::io::Read;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut byte = [0u8];
    match (&*stream).read(&mut byte) {
        Ok(0) => true,
        Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    }
}
