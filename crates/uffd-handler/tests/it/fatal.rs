//! A snapshot source that fails for good (the `test-hooks` flag `--fail-source-after N`):
//! after the engine's bounded retries the daemon kills the VMM (`--on-fatal kill`, exit code
//! 3 with the reason) rather than leave it hanging on a dead handler or feed it zeros; with
//! `--on-fatal exit` it leaves the VMM blocked (never fed zeros) to its owner.
#![cfg(feature = "test-hooks")]

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

use crate::common::{
    Daemon, MIB, Model, PAGE, TIMEOUT, TestDir, assert_hashes, exit_code, model_image, start_vmm,
};
use test_vmm::{Touch, VmmError, VmmProcess};

const SEED: u64 = 0xfa11;

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn start(test: &str, on_fatal: &str) -> (TestDir, Daemon, Model) {
    start_with_budget(test, on_fatal, "64")
}

/// The daemon over a source that serves `reads` reads, then fails every one.
fn start_with_budget(test: &str, on_fatal: &str, reads: &str) -> (TestDir, Daemon, Model) {
    let dir = TestDir::new(test);
    let memory = dir.join("memory");
    let model = model_image(SEED, 4 * MIB, PAGE);
    std::fs::write(&memory, &model.bytes).expect("write the memory file");
    let daemon = Daemon::start(
        &dir,
        &[
            "--memory-file",
            path(&memory),
            "--fail-source-after",
            reads,
            "--on-fatal",
            on_fatal,
        ],
    );
    (dir, daemon, model)
}

#[test]
fn a_failing_source_gets_the_vmm_killed() {
    let (_dir, daemon, model) = start("fatal-kill", "kill");
    let vmm = start_vmm(&daemon, vec![2 * MIB, 2 * MIB], false);
    // Within the budget: served right.
    let hashes = vmm.hash(0, 16 * PAGE).unwrap();
    assert_hashes(&hashes, &model, 0, 16 * PAGE);
    // Beyond it every read fails: the touch never completes, the VMM is killed.
    let touched = vmm.touch(Touch::read(0, 4 * MIB, 2));
    assert!(
        matches!(touched, Err(VmmError::Exited { .. })),
        "the touch completed on a failing source: {touched:?}"
    );
    assert_eq!(vmm.wait().unwrap().signal(), Some(libc::SIGKILL));
    let (status, stderr) = daemon.wait(TIMEOUT);
    assert_eq!(exit_code(status, &stderr), 3, "{stderr}");
    for needle in [
        "fatal engine error",
        "injected storage failure",
        "was killed (--on-fatal kill)",
    ] {
        assert!(
            stderr.contains(needle),
            "{needle:?} missing from:\n{stderr}"
        );
    }
}

#[test]
fn on_fatal_exit_leaves_the_vmm_blocked_never_fed_zeros() {
    let (_dir, daemon, model) = start("fatal-exit", "exit");
    let vmm = start_vmm(&daemon, vec![2 * MIB, 2 * MIB], false);
    let hashes = vmm.hash(0, 16 * PAGE).unwrap();
    assert_hashes(&hashes, &model, 0, 16 * PAGE);
    let touch = vmm.start_touch(Touch::read(0, 4 * MIB, 2)).unwrap();
    let (status, stderr) = daemon.wait(TIMEOUT);
    assert_eq!(exit_code(status, &stderr), 3, "{stderr}");
    assert!(
        stderr.contains("left running (--on-fatal exit)"),
        "{stderr}"
    );
    assert_frozen_never_zeroed(&vmm, touch);
}

/// A graceful stop graduates (the default `--on-signal graduate`); a page whose bytes cannot
/// be read fails graduation, and the VMM is killed (`--on-fatal kill`) instead of having its
/// ranges unregistered over missing bytes.
#[test]
fn graduation_over_a_failing_source_kills_the_vmm() {
    let (_dir, daemon, model) = start_with_budget("graduate-fail-kill", "kill", "20");
    let vmm = start_vmm(&daemon, vec![2 * MIB, 2 * MIB], false);
    let hashes = vmm.hash(0, 16 * PAGE).unwrap();
    assert_hashes(&hashes, &model, 0, 16 * PAGE);
    daemon.signal(rustix::process::Signal::TERM);
    assert_eq!(vmm.wait().unwrap().signal(), Some(libc::SIGKILL));
    let (status, stderr) = daemon.wait(TIMEOUT);
    assert_eq!(exit_code(status, &stderr), 3, "{stderr}");
    for needle in [
        "graduation cannot install the page",
        "injected storage failure",
        "was killed",
    ] {
        assert!(
            stderr.contains(needle),
            "{needle:?} missing from:\n{stderr}"
        );
    }
}

/// As above with `--on-fatal exit`: the VMM is left frozen with its ranges still registered,
/// so its untouched pages stay absent and a touch of them waits (never reads zeros).
#[test]
fn graduation_over_a_failing_source_with_on_fatal_exit_leaves_the_vmm_frozen() {
    let (_dir, daemon, model) = start_with_budget("graduate-fail-exit", "exit", "20");
    let vmm = start_vmm(&daemon, vec![2 * MIB, 2 * MIB], false);
    let hashes = vmm.hash(0, 16 * PAGE).unwrap();
    assert_hashes(&hashes, &model, 0, 16 * PAGE);
    daemon.signal(rustix::process::Signal::TERM);
    let (status, stderr) = daemon.wait(TIMEOUT);
    assert_eq!(exit_code(status, &stderr), 3, "{stderr}");
    assert!(stderr.contains("was left frozen"), "{stderr}");
    let touch = vmm.start_touch(Touch::read(0, 4 * MIB, 2)).unwrap();
    assert_frozen_never_zeroed(&vmm, touch);
}

/// The handler is gone and the VMM (which keeps its own copy of the uffd) is left: its touch
/// of the 4 MiB guest waits (a bounded check of something that must not happen), and the
/// pages past those served are still absent, no zero page put in their place. Then it is
/// killed.
#[track_caller]
fn assert_frozen_never_zeroed(
    vmm: &VmmProcess,
    touch: test_vmm::Pending<'_, test_vmm::TouchReport>,
) {
    let waited = touch.wait_timeout(Duration::from_millis(500));
    assert!(
        matches!(waited, Err(VmmError::Timeout { .. })),
        "the touch finished without a handler: {waited:?}"
    );
    let present = vmm
        .pagemap(0, 4 * MIB)
        .unwrap()
        .iter()
        .filter(|f| f.present())
        .count() as u64;
    assert!(present < 4 * MIB / PAGE, "{present} pages present");
    vmm.kill().unwrap();
    assert_eq!(vmm.wait().unwrap().signal(), Some(libc::SIGKILL));
}
