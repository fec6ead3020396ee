//! Storage that really fails: the snapshot image is read through the test FUSE file system,
//! whose reads of chosen blocks fail with EIO. FUSE has no page-cache-only reads, so every
//! fault is parked and a fetcher reads its bytes with `pread`, which answers EIO: a source
//! error.
//! Transient failures are retried by waking the faulting threads after the backoff (the
//! kernel delivers the fault again), the cycles are counted, and every byte arrives exact;
//! a permanent failure is fatal after the retry bound, naming the page, and the page is never
//! served (no zero page in place of data). 4 KiB and 2 MiB pages.

use std::time::Duration;

use test_fuse::Fault;
use test_vmm::{Split, Touch, VmmError};
use uffd_engine::{CloseWhen, EngineConfig, EngineExit, RetryPolicy};
use uffd_handshake::open_pidfd;

use crate::common::fuse::{FuseServed, IMAGE, serve_over_fuse};
use crate::common::vmm::{MIB, Pages, TIMEOUT, assert_hashes, hugepages_or_skip, model_image};

const HUGE: u64 = 2 * MIB;

/// Failed reads injected per failing page in the transient tests.
const FAILURES: u64 = 6;

/// A short backoff, and `max_cycles` failed cycles allowed per page.
fn retrying(max_cycles: u32) -> EngineConfig {
    EngineConfig {
        retry: RetryPolicy {
            max_cycles,
            backoff: Duration::from_millis(5),
            jitter: Duration::from_millis(1),
        },
        ..EngineConfig::default()
    }
}

/// The reads of a block in each of the `failing` pages fail [`FAILURES`] times; the whole
/// guest is hashed from four vmm threads. The kernel reads a mapped page two or three times
/// per access before it gives up (readahead, the page itself, a retry of the fault: 7 failed
/// reads over 3 cycles measured here), and serves the page at once if one of those reads
/// succeeds. So each failing page costs one retry cycle at least (its first access meets
/// three failures at most, all failing) and [`FAILURES`] at most (a cycle uses up at least one
/// failure), within the bound; both rules are used up (the page's bytes were read in the end,
/// past them); every byte is exact.
fn transient_failures_are_retried(test: &str, pages: Pages, regions: Vec<u64>, failing: [u64; 2]) {
    let Some(f) = serve_over_fuse(test, pages, regions, retrying(FAILURES as u32 + 2)) else {
        return;
    };
    let rules = failing.map(|page| {
        f.mount
            .inject(IMAGE, f.block_of(page), Fault::FailNext(FAILURES))
    });
    let FuseServed {
        served: s,
        mount,
        dir: _dir,
    } = f;
    let model = model_image(s.size, s.page);
    let hashes = s
        .vmm
        .start_hash(0, s.size, 4)
        .and_then(|pending| pending.wait())
        .expect("hash the whole guest");
    assert_hashes(&hashes, &model, 0, s.size);
    s.engine.settle();
    let m = s.engine.metrics();
    assert!(
        (2..=2 * FAILURES).contains(&m.retried),
        "retry cycles: {m:?}"
    );
    assert_eq!(m.fatal, 0, "{m:?}");
    for (page, rule) in failing.iter().zip(&rules) {
        assert_eq!(rule.counts().failed, FAILURES, "page {page}: {rule:?}");
        assert!(!rule.is_active(), "page {page}: {rule:?}");
    }
    assert_eq!(mount.counts().failed, 2 * FAILURES, "{:?}", mount.counts());
    s.finish();
}

#[test]
fn fuse_transient_read_failures_are_retried_and_served_exact_4k() {
    transient_failures_are_retried(
        "fuse-transient-4k",
        Pages::Base,
        vec![4 * MIB, 2 * MIB],
        [7, 1030],
    );
}

#[test]
fn fuse_transient_read_failures_are_retried_and_served_exact_2m() {
    if hugepages_or_skip(
        "fuse_transient_read_failures_are_retried_and_served_exact_2m",
        3,
    ) {
        transient_failures_are_retried(
            "fuse-transient-2m",
            Pages::Huge,
            vec![2 * HUGE, HUGE],
            [0, 2],
        );
    }
}

/// Every read of a block of page `bad` fails. Page `good` is served exact first; then two
/// vmm threads fault `bad`: after `max_cycles` retries the engine raises one fatal exit
/// naming the page with every cycle's error, and the page was never installed: the threads
/// are still waiting and the vmm's pagemap shows it absent (no zero page was put in its
/// place). Then the engine closes as the daemon's `--on-fatal kill` does.
fn permanent_failure_is_fatal(test: &str, pages: Pages, regions: Vec<u64>, good: u64, bad: u64) {
    let max_cycles = 2;
    let Some(f) = serve_over_fuse(test, pages, regions, retrying(max_cycles)) else {
        return;
    };
    let rule = f.mount.inject(IMAGE, f.block_of(bad), Fault::FailAlways);
    let FuseServed {
        served: s,
        mount: _mount,
        dir: _dir,
    } = f;
    let model = model_image(s.size, s.page);
    let p = s.page;
    assert_hashes(&s.vmm.hash(good * p, p).unwrap(), &model, good * p, p);
    let touch = s
        .vmm
        .start_touch(Touch::read(bad * p, p, 2).split(Split::Shared))
        .unwrap();
    let exit = s
        .engine
        .exits()
        .recv_timeout(TIMEOUT)
        .expect("the engine gives up on the page");
    let EngineExit::Fatal(fatal) = exit else {
        panic!("expected a fatal exit, got {exit:?}");
    };
    assert_eq!(fatal.page_offset, Some(bad * p), "{fatal}");
    assert_eq!(fatal.errors.len() as u32, max_cycles + 1, "{fatal}");
    // Each cycle's read of the page failed with the file system's EIO, read by the engine
    // into its own buffer (never inside a COPY).
    assert!(
        fatal.errors.iter().all(|e| e.contains("os error 5")),
        "{fatal}"
    );
    let m = s.engine.metrics();
    assert!(m.retried >= u64::from(max_cycles), "{m:?}");
    assert!(
        rule.counts().failed > u64::from(max_cycles),
        "every cycle read the failing block: {rule:?}"
    );
    // The engine stopped on the page; nothing served it.
    let waited = touch.wait_timeout(test_support::BLOCKED);
    assert!(
        matches!(waited, Err(VmmError::Timeout { .. })),
        "the touch of a page that cannot be read completed: {waited:?}"
    );
    let flags = s.vmm.pagemap(bad * p, p).unwrap();
    assert!(
        flags.iter().all(|f| !f.present()),
        "the failing page is present in the vmm"
    );
    let pid = i32::try_from(s.vmm.pid()).expect("pid");
    let pidfd = open_pidfd(pid).expect("pidfd of the vmm");
    s.engine
        .close(CloseWhen::KillVmm { pidfd })
        .expect("close by killing the vmm");
}

#[test]
fn fuse_permanent_read_failure_is_fatal_never_a_zero_page_4k() {
    permanent_failure_is_fatal(
        "fuse-permanent-4k",
        Pages::Base,
        vec![2 * MIB, 2 * MIB],
        3,
        700,
    );
}

#[test]
fn fuse_permanent_read_failure_is_fatal_never_a_zero_page_2m() {
    if hugepages_or_skip(
        "fuse_permanent_read_failure_is_fatal_never_a_zero_page_2m",
        2,
    ) {
        permanent_failure_is_fatal("fuse-permanent-2m", Pages::Huge, vec![HUGE, HUGE], 0, 1);
    }
}
