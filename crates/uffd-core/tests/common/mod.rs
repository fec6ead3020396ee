//! Helpers shared by the integration tests: anonymous and shared mappings, a registered region
//! that cleans up after itself, threads that block on faults, event waiting, and child
//! processes (the test binary re-executed with a role) that pass fds over a Unix socket.
//!
//! Every test binary uses a different subset of these helpers.
#![allow(dead_code, unreachable_pub, unused_imports)]

mod child;
mod events;
mod mapping;
mod threads;

use std::io::Write;
use std::time::Duration;

use uffd_core::{Features, Uffd, UffdBuilder};

pub use child::*;
pub use events::*;
pub use mapping::*;
pub use threads::*;

/// Base page size.
pub const PAGE: usize = 4096;
/// 2 MiB huge page size.
pub const HUGE: usize = 2 << 20;
/// How long anything that must happen may take before the test fails instead of hanging.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a thread must stay blocked to show that something did NOT happen.
pub const BLOCKED: Duration = Duration::from_millis(100);

/// A page-sized buffer whose every byte depends on `seed` and its offset, so pages and offsets
/// are told apart.
pub fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed ^ (i as u8).wrapping_mul(31) ^ ((i >> 8) as u8))
        .collect()
}

/// A uffd (device then syscall, non-blocking, close-on-exec) with `features`.
pub fn uffd(features: Features) -> Uffd {
    UffdBuilder::new()
        .features(features)
        .create()
        .unwrap_or_else(|e| panic!("creating a uffd with {features:?}: {e}"))
}
/// Reports a skipped test as `SKIP <test>: <reason>` on the process's stderr, bypassing the
/// test harness's output capture so that a skip is never silent.
pub fn skip(test: &str, reason: &str) {
    let _ = writeln!(std::io::stderr().lock(), "SKIP {test}: {reason}");
}

/// `HugePages_Free` from /proc/meminfo.
pub fn free_hugepages() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("read /proc/meminfo");
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
