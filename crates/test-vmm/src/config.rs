//! How to start a test VMM.

use std::path::PathBuf;
use std::time::Duration;

use uffd_core::PageSize;

use crate::{DEFAULT_GAP, PayloadVersion, VmmArgs};

/// How to start a test VMM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmmConfig {
    /// The `test-vmm` executable (tests: [`crate::binary`]).
    pub binary: PathBuf,
    /// The handler's socket, which must already be listening.
    pub socket: PathBuf,
    /// Region sizes in bytes, in guest-physical order; each a multiple of the page size.
    pub regions: Vec<u64>,
    /// The page size declared to the handler and the unit of touches and madvise.
    pub page_size: PageSize,
    /// Map guest memory with `MAP_HUGETLB|MAP_HUGE_2MB` (needs 2 MiB pages).
    pub hugetlb: bool,
    /// The Firecracker generation whose handshake to send.
    pub payload_version: PayloadVersion,
    /// Keep the socket open after the handshake; `None`: as that generation does.
    pub keep_socket: Option<bool>,
    /// Unmapped address space between regions (rounded up to 2 MiB).
    pub gap: u64,
    /// vCPUs of a KVM guest over the guest memory (0: none; startup then fails at stage
    /// `kvm` where /dev/kvm is unusable).
    pub kvm_vcpus: u32,
    /// The longest the driver waits for startup, for any answer, and for exit.
    pub request_timeout: Duration,
    /// Create the userfaultfd without `O_NONBLOCK` (Firecracker sets it; other VMMs may not).
    pub blocking_uffd: bool,
    /// Register every region but describe all but the last one in the handshake.
    pub hide_last_region: bool,
    /// Where the test VMM's log lines go: this file (appended), or, when `None`, the
    /// driver's stderr, each prefixed with the VMM's pid.
    pub log_file: Option<PathBuf>,
}

impl VmmConfig {
    /// 4 KiB pages, no hugetlb, the v1.12+ payload, a 10 s timeout.
    pub fn new(binary: impl Into<PathBuf>, socket: impl Into<PathBuf>, regions: Vec<u64>) -> Self {
        VmmConfig {
            binary: binary.into(),
            socket: socket.into(),
            regions,
            page_size: PageSize::Base4K,
            hugetlb: false,
            payload_version: PayloadVersion::V1_12,
            keep_socket: None,
            gap: DEFAULT_GAP,
            kvm_vcpus: 0,
            request_timeout: Duration::from_secs(10),
            log_file: None,
            blocking_uffd: false,
            hide_last_region: false,
        }
    }

    /// The test VMM's log lines go to `path` (appended) instead of the driver's stderr.
    pub fn log_to(self, path: impl Into<PathBuf>) -> Self {
        VmmConfig {
            log_file: Some(path.into()),
            ..self
        }
    }

    /// 2 MiB hugetlbfs pages.
    pub fn hugetlb(self) -> Self {
        VmmConfig {
            page_size: PageSize::Huge2M,
            hugetlb: true,
            ..self
        }
    }

    /// Another payload version.
    pub fn payload(self, payload_version: PayloadVersion) -> Self {
        VmmConfig {
            payload_version,
            ..self
        }
    }

    /// Another request timeout.
    pub fn timeout(self, request_timeout: Duration) -> Self {
        VmmConfig {
            request_timeout,
            ..self
        }
    }

    /// The test VMM's command line.
    pub fn args(&self) -> VmmArgs {
        VmmArgs {
            socket: self.socket.clone(),
            regions: self.regions.clone(),
            page_size: self.page_size.bytes(),
            hugetlb: self.hugetlb,
            payload: self.payload_version,
            keep_socket: self.keep_socket,
            blocking_uffd: self.blocking_uffd,
            hide_last_region: self.hide_last_region,
            kvm_vcpus: self.kvm_vcpus,
            gap: self.gap,
        }
    }
}
