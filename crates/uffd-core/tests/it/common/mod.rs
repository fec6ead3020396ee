//! Helpers the test modules share: byte patterns, a uffd with given features, event waiting
//! and fdinfo, and child processes (this test binary re-executed in a role) that pass fds
//! over a Unix socket. Mappings, registered regions and threads that block on faults come from
//! test-support, which the engine's tests use too.

mod child;
mod events;

pub(crate) use child::*;
pub(crate) use events::*;

use uffd_core::{Features, Uffd, UffdBuilder};

/// [`test_support::PAGE`] as a byte count of this process's memory, the type the mapping
/// helpers and buffers take: the tests use it as an offset or a length far more often than
/// as an address.
pub(crate) const PAGE_LEN: usize = test_support::PAGE as usize;
/// [`test_support::HUGE`] as a byte count of this process's memory.
pub(crate) const HUGE_LEN: usize = test_support::HUGE as usize;

/// A buffer whose every byte depends on `seed` and its offset, so pages and offsets are told
/// apart.
pub(crate) fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed ^ (i as u8).wrapping_mul(31) ^ ((i >> 8) as u8))
        .collect()
}

/// A uffd (device then syscall, non-blocking, close-on-exec) with `features`.
pub(crate) fn new_uffd(features: Features) -> Uffd {
    UffdBuilder::new()
        .features(features)
        .create()
        .unwrap_or_else(|e| panic!("creating a uffd with {features:?}: {e}"))
}
