//! Helpers shared by the workspace's integration tests, one copy each.
//!
//! A test that needs a privilege or a resource the machine lacks calls [`skip`] and returns:
//! the skip is printed past the test harness's output capture and, under `cargo xtask test`,
//! appended to the run's skip log, whose count and reasons the xtask prints at the end. A skip
//! is therefore never silent and never counted as a pass in the xtask's summary.
//!
//! For userfaultfd tests, [`mapping`] has memory accessed through raw pointers only and a
//! mapping registered with its own uffd ([`Mapping`], [`Region`]), and [`threads`] a thread
//! that may block on a fault, waited for with a bound ([`Pending`], [`spawn`]). [`s3`] runs
//! a real S3-compatible server for the object-storage tests.

// `mapping` maps and accesses memory (mmap, munmap, raw-pointer loads): the one module allowed
// unsafe code, each block with its SAFETY argument. Everything else stays free of it.
#![deny(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

mod binary;
mod io;
#[allow(unsafe_code)]
pub mod mapping;
pub mod s3;
pub mod threads;

pub use binary::workspace_binary;
pub use io::{poll_in, send_with_fds};
pub use mapping::{Mapping, Region};
pub use threads::{BLOCKED, Pending, spawn};

/// 4 KiB, the base page size.
pub const PAGE: u64 = 4096;
/// 2 MiB, the huge page size.
pub const HUGE: u64 = 2 << 20;
/// 1 MiB.
pub const MIB: u64 = 1 << 20;
/// How long anything that must happen may take before a test fails instead of hanging.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// The environment variable naming the file skips are appended to (set by `cargo xtask test`).
pub const SKIP_LOG_ENV: &str = "UFFD_TEST_SKIP_LOG";

/// Reports that `test` did not run, and why: `SKIP <test>: <reason>` on stderr (bypassing
/// output capture) and, when [`SKIP_LOG_ENV`] names a file, one line appended to it.
pub fn skip(test: &str, reason: &str) {
    let line = format!("SKIP {test}: {reason}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
    if let Some(path) = std::env::var_os(SKIP_LOG_ENV) {
        // One write of one line with O_APPEND: lines from parallel tests do not interleave.
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| file.write_all(line.as_bytes()));
        if let Err(e) = appended {
            let _ = writeln!(
                std::io::stderr().lock(),
                "cannot append to the skip log {}: {e}",
                PathBuf::from(path).display()
            );
        }
    }
}

/// Free 2 MiB hugepages (`HugePages_Free` in /proc/meminfo); 0 if it cannot be read.
pub fn free_hugepages() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|meminfo| {
            meminfo
                .lines()
                .find_map(|l| l.strip_prefix("HugePages_Free:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Whether `needed` 2 MiB pages are free; if not, reports `test` as skipped and says why.
pub fn hugepages_or_skip(test: &str, needed: u64) -> bool {
    let free = free_hugepages();
    if free < needed {
        skip(
            test,
            &format!(
                "HugePages_Free is {free}, the test needs {needed} \
                 (cargo xtask test reserves them; or echo 256 > /proc/sys/vm/nr_hugepages)"
            ),
        );
    }
    free >= needed
}

/// Whether /dev/kvm can be opened read-write; if not, reports `test` as skipped.
pub fn kvm_or_skip(test: &str) -> bool {
    let usable = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !usable {
        skip(test, "/dev/kvm cannot be opened read-write");
    }
    usable
}

/// A fresh directory for one test's files (sockets, snapshots), removed on drop.
#[derive(Debug)]
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    /// A new, empty directory under the temp dir, named after `test` and unique in the run.
    pub fn new(test: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("uffd-{test}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        TestDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
