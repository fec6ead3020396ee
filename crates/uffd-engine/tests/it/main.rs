//! The engine's integration tests, against the real kernel: guest memory of this process
//! (`basic`, `events`) and of a separate VMM process that hands its uffd over through the real
//! handshake (`vmm*`, `soak`). The hook-driven race suites are the `races` test target
//! (feature `test-hooks`).

mod common;

mod basic;
mod events;
mod fetch;
mod fuse_short;
mod fuse_stall;
mod fuse_storage;
mod graduation;
mod prefetch;
mod soak;
mod truncated;
mod vmm;
mod vmm_dirty;
mod vmm_exit;
mod vmm_retry;
