//! The engine's integration tests, against the real kernel: guest memory of this process
//! (`basic`, `events`) and of a separate VMM process that hands its uffd over through the real
//! handshake (`vmm*`, `soak`). The hook-driven race suites are the `races` test target
//! (feature `test-hooks`).

mod common;

mod basic;
mod efault;
mod events;
// mod fuse_stall; -- enabled once the fetcher pool lands (one stalled read holds every fault today)
// mod fuse_short; -- a short read serves zeros today (see the module); enabled once fixed
mod fuse_storage;
mod graduation;
mod prefetch;
mod soak;
mod vmm;
mod vmm_dirty;
mod vmm_exit;
mod vmm_retry;
