//! The daemon over storage that really fails: its `--memory-file` is on the test FUSE file
//! system, whose reads of chosen blocks fail with EIO. Transient failures are retried (the
//! statistics count the cycles) and the test VMM's hashes of every byte match; a permanent
//! failure is fatal after the bounded retries: the VMM is killed (`--on-fatal kill`, exit 3
//! naming the cause) or left frozen (`--on-fatal exit`), and never served a zero page.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;

use rustix::process::Signal;
use test_fuse::{Fault, FuseMount};
use test_vmm::{Touch, VmmError};

use crate::common::{
    Daemon, HUGE, MIB, Model, PAGE, TIMEOUT, TestDir, assert_hashes, exit_code, model_image,
    start_vmm, verify, verify_all,
};

const SEED: u64 = 0xf05e;

/// Failed reads injected per failing page in the transient tests: within the daemon's default
/// bound of five retry cycles per page even if every failed read costs a cycle of its own.
const FAILURES: u64 = 4;

/// The FUSE mount holding the memory file, and the test's directory. Fields drop in order:
/// the mount before the directory it lives in.
pub(crate) struct Storage {
    pub(crate) mount: FuseMount,
    pub(crate) dir: TestDir,
}

/// A memory file of `size` bytes (pages of `page`) on a fresh FUSE mount, or `None` after a
/// SKIP line.
pub(crate) fn storage(test: &str, size: u64, page: u64) -> Option<(Storage, Model)> {
    if !test_fuse::fuse_or_skip(test) {
        return None;
    }
    let dir = TestDir::new(test);
    std::fs::create_dir(dir.join("backing")).unwrap();
    std::fs::create_dir(dir.join("mnt")).unwrap();
    let mount = FuseMount::mount(&dir.join("backing"), &dir.join("mnt")).expect("mount");
    let model = model_image(SEED, size, page);
    std::fs::write(mount.backing_path("memory"), &model.bytes).unwrap();
    Some((Storage { mount, dir }, model))
}

pub(crate) fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The 4 KiB block in the middle of page `index` of `page` bytes, holding data (not one of
/// the model's zero runs, which the daemon's source also reads: the file is not sparse).
pub(crate) fn block_of(index: u64, page: u64) -> std::ops::Range<u64> {
    let start = index * page + (page / 2) / PAGE * PAGE;
    start..start + PAGE
}

/// The reads of a block in each of two pages fail [`FAILURES`] times; the VMM hashes every
/// byte from four threads and every hash matches. A failed `pread` may have taken one or more
/// of the failing FUSE reads (the kernel retries some reads itself), so each failing page
/// costs one retry cycle at least and [`FAILURES`] at most, within the default bound of five;
/// the statistics count them. Then a graceful stop (graduation) exits 0 with the same
/// count in `--stats-json`, and the VMM runs on with every byte right.
fn transient_failures_are_retried(test: &str, hugetlb: bool) {
    let page = if hugetlb { HUGE } else { PAGE };
    let size = 4 * MIB;
    let Some((storage, model)) = storage(test, size, page) else {
        return;
    };
    let failing = if hugetlb { [0, 1] } else { [5, 900] };
    let rules = failing.map(|i| {
        storage
            .mount
            .inject("memory", block_of(i, page), Fault::FailNext(FAILURES))
    });
    let stats = storage.dir.join("stats.json");
    let memory = storage.mount.path("memory");
    let daemon = Daemon::start(
        &storage.dir,
        &["--memory-file", path(&memory), "--stats-json", path(&stats)],
    );
    let vmm = start_vmm(&daemon, vec![2 * MIB, 2 * MIB], hugetlb);
    verify(&daemon, &vmm, &model);
    let live = daemon.control("stats");
    let retried = live["metrics"]["retried"].as_u64().expect("retried");
    assert!(
        (2..=2 * FAILURES).contains(&retried),
        "retry cycles {retried}: {live}"
    );
    assert_eq!(live["metrics"]["fatal"], 0, "{live}");
    for (i, rule) in failing.iter().zip(&rules) {
        assert_eq!(rule.counts().failed, FAILURES, "page {i}: {rule:?}");
        assert!(!rule.is_active(), "page {i}: {rule:?}");
    }
    daemon.signal(Signal::TERM);
    let (status, stderr) = daemon.wait(TIMEOUT);
    assert_eq!(exit_code(status, &stderr), 0, "{stderr}");
    let stats: serde_json::Value = serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
    assert_eq!(stats["metrics"]["retried"], retried, "{stats:#}");
    // Graduated: the VMM runs on without a handler, every byte still right.
    verify_all(&vmm, &model);
    assert!(vmm.exit().unwrap().success());
}

#[test]
fn fuse_transient_failures_are_retried_by_the_daemon_every_byte_exact_4k() {
    transient_failures_are_retried("fuse-daemon-transient-4k", false);
}

#[test]
fn fuse_transient_failures_are_retried_by_the_daemon_every_byte_exact_2m() {
    if !test_support::hugepages_or_skip(
        "fuse_transient_failures_are_retried_by_the_daemon_every_byte_exact_2m",
        2,
    ) {
        return;
    }
    transient_failures_are_retried("fuse-daemon-transient-2m", true);
}

/// Every read of a block of one page fails. Pages before it are served exact; a touch of
/// the whole guest never completes. `--on-fatal kill`: the VMM is killed by SIGKILL and the
/// daemon exits 3 naming the fatal error; `--on-fatal exit`: the daemon exits 3 and the VMM
/// is left frozen, the failing page absent (no zero page put in its place).
fn permanent_failure_is_fatal(test: &str, hugetlb: bool, on_fatal: &str) {
    let page = if hugetlb { HUGE } else { PAGE };
    let Some((storage, model)) = storage(test, 4 * MIB, page) else {
        return;
    };
    let bad = if hugetlb { 1 } else { 600 };
    let rule = storage
        .mount
        .inject("memory", block_of(bad, page), Fault::FailAlways);
    let memory = storage.mount.path("memory");
    let daemon = Daemon::start(
        &storage.dir,
        &["--memory-file", path(&memory), "--on-fatal", on_fatal],
    );
    let vmm = start_vmm(&daemon, vec![2 * MIB, 2 * MIB], hugetlb);
    assert_hashes(&vmm.hash(0, page).unwrap(), &model, 0, page);
    let touch = vmm.start_touch(Touch::read(0, 4 * MIB, 2)).unwrap();
    let (status, stderr) = daemon.wait(TIMEOUT);
    assert_eq!(exit_code(status, &stderr), 3, "{stderr}");
    assert!(stderr.contains("fatal engine error"), "{stderr}");
    assert!(rule.counts().failed >= 2, "{rule:?}");
    if on_fatal == "kill" {
        assert!(stderr.contains("was killed (--on-fatal kill)"), "{stderr}");
        let touched = touch.wait();
        assert!(
            matches!(touched, Err(VmmError::Exited { .. })),
            "the touch completed over a page that cannot be read: {touched:?}"
        );
        assert_eq!(vmm.wait().unwrap().signal(), Some(libc::SIGKILL));
        return;
    }
    assert!(
        stderr.contains("left running (--on-fatal exit)"),
        "{stderr}"
    );
    let waited = touch.wait_timeout(test_support::BLOCKED);
    assert!(
        matches!(waited, Err(VmmError::Timeout { .. })),
        "the touch finished without a handler: {waited:?}"
    );
    let flags = vmm.pagemap(bad * page, page).unwrap();
    assert!(
        flags.iter().all(|f| !f.present()),
        "the failing page is present in the VMM"
    );
    vmm.kill().unwrap();
    assert_eq!(vmm.wait().unwrap().signal(), Some(libc::SIGKILL));
}

#[test]
fn fuse_permanent_failure_gets_the_vmm_killed_4k() {
    permanent_failure_is_fatal("fuse-daemon-permanent-kill-4k", false, "kill");
}

#[test]
fn fuse_permanent_failure_with_on_fatal_exit_leaves_the_vmm_frozen_never_zeroed_4k() {
    permanent_failure_is_fatal("fuse-daemon-permanent-exit-4k", false, "exit");
}

#[test]
fn fuse_permanent_failure_gets_the_vmm_killed_2m() {
    if !test_support::hugepages_or_skip("fuse_permanent_failure_gets_the_vmm_killed_2m", 2) {
        return;
    }
    permanent_failure_is_fatal("fuse-daemon-permanent-kill-2m", true, "kill");
}
