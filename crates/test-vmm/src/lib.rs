#![doc = include_str!("../README.md")]
//!
//! A test VMM: a process that behaves towards a page-fault handler exactly as Firecracker does,
//! for the engine's cross-process tests, the daemon's end-to-end tests, the benches and the
//! demo. Not published.
//!
//! The `test-vmm` binary ([`run`] over [`VmmArgs`]) maps guest memory as Firecracker does
//! (anonymous `MAP_PRIVATE|MAP_NORESERVE`, or `MAP_HUGETLB|MAP_HUGE_2MB`; 1..N regions with
//! unmapped gaps between them; image offsets are the running sum of sizes), creates a uffd
//! (device then syscall, non-blocking, close-on-exec, not user-mode-only, feature
//! `EVENT_REMOVE` only), registers every region MISSING only, connects to the handler's socket
//! and sends one message: the regions JSON of the chosen Firecracker generation
//! ([`handshake_json`]) with the uffd as SCM_RIGHTS. It keeps its own copy of the uffd and (from
//! v1.12) the socket for its lifetime. Then it obeys [`control`] requests on stdin.
//!
//! The driver, [`VmmProcess`], spawns the binary and turns each request into a method with a
//! per-request timeout, so a touch blocked on a dead handler fails instead of hanging the test.
//!
//! With KVM vCPUs (`--kvm-vcpus`, [`VmmConfig::kvm_vcpus`]) the test VMM also runs a KVM guest
//! whose memory slots are the regions (guest-physical address = image offset, so images up to
//! 3 GiB): [`Command::KvmTouch`] has vCPUs read (and optionally write) every block, so the
//! faults reach the handler through KVM, as under Firecracker.

mod args;
mod binary;
mod commands;
mod config;
pub mod control;
mod driver;
mod error;
#[cfg(target_arch = "x86_64")]
mod kvm;
#[cfg(not(target_arch = "x86_64"))]
#[path = "kvm_unsupported.rs"]
mod kvm;
mod memory;
mod model;
mod ops;
mod pattern;
mod pending;
mod serve;

pub use args::{DEFAULT_GAP, VmmArgs};
pub use binary::{BINARY_ENV, binary};
pub use config::VmmConfig;
pub use control::{
    BLOCK, Command, KvmReport, PageFlags, ReadyInfo, RemoteError, RemoteErrorKind, Reply, Split,
    Touch, TouchAccess, TouchReport, WriteData,
};
pub use driver::VmmProcess;
pub use error::VmmError;
pub use model::{GuestModel, assert_hashes, assert_hashes_in};
pub use pattern::{block_hash, kvm_block_sum, kvm_word, touch_word, zero_block_hash};
pub use pending::Pending;
pub use serve::{EXIT_STARTUP_FAILED, run};
pub use uffd_handshake::{HandshakeRegion, PayloadVersion, UnknownPayloadVersion, handshake_json};
