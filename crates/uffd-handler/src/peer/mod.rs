//! A VMM peer: a process that behaves towards our handler exactly as Firecracker does, for
//! the engine's cross-process tests, the daemon's end-to-end tests and the demo.
//!
//! The `vmm-peer` binary ([`run`] over [`PeerArgs`]) maps guest memory as Firecracker does
//! (anonymous `MAP_PRIVATE|MAP_NORESERVE`, or `MAP_HUGETLB|MAP_HUGE_2MB`; 1..N regions with
//! unmapped gaps between them; image offsets are the running sum of sizes), creates a uffd
//! (device then syscall, non-blocking, close-on-exec, not user-mode-only, feature
//! `EVENT_REMOVE` only), registers every region MISSING only, connects to the handler's socket
//! and sends one message: the regions JSON of the chosen Firecracker generation
//! ([`handshake_json`]) with the uffd as SCM_RIGHTS. It keeps its own copy of the uffd and (from
//! v1.12) the socket for its lifetime. Then it obeys [`control`] requests on stdin.
//!
//! The driver, [`PeerProcess`], spawns the binary and turns each request into a method with a
//! per-request timeout, so a touch blocked on a dead handler fails instead of hanging the test.
//!
//! With KVM vCPUs (`--kvm-vcpus`, [`PeerConfig::kvm_vcpus`]) the peer also runs a KVM guest
//! whose memory slots are the regions (guest-physical address = image offset, so images up to
//! 3 GiB): [`Command::KvmTouch`] has vCPUs read (and optionally write) every block, so the
//! faults reach the handler through KVM, as under Firecracker.

mod args;
mod commands;
mod config;
pub mod control;
mod driver;
mod error;
mod handshake;
mod kvm;
mod memory;
mod model;
mod ops;
mod pattern;
mod pending;
mod serve;

pub use args::{DEFAULT_GAP, PeerArgs, parse_size};
pub use config::PeerConfig;
pub use control::{
    Access, BLOCK, Command, KvmReport, PageFlags, ReadyInfo, RemoteError, RemoteErrorKind, Reply,
    Split, Touch, TouchReport, WriteData,
};
pub use driver::PeerProcess;
pub use error::PeerError;
pub use handshake::{HandshakeRegion, PayloadVersion, UnknownPayloadVersion, handshake_json};
pub use model::GuestModel;
pub use pattern::{block_hash, kvm_block_sum, kvm_word, touch_word, zero_block_hash};
pub use pending::Pending;
pub use serve::{EXIT_STARTUP_FAILED, run};

/// Free 2 MiB hugepages (`HugePages_Free` in /proc/meminfo): what a peer with
/// [`PeerConfig::hugetlb`] guest memory can still map. 0 if it cannot be read.
pub fn free_hugepages() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("HugePages_Free:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}
