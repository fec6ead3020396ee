//! Source failures across a process boundary: several VMM threads fault one page whose source
//! read fails; the engine wakes them after a backoff so the kernel re-delivers the fault,
//! counts one retry cycle per page (never one per faulting thread), honours the backoff, keeps
//! serving other faults meanwhile, and every thread reads the right bytes. 4 KiB and 2 MiB.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::common::FlakySource;
use crate::common::proc::until;
use crate::common::vmm::{
    MIB, Pages, Served, assert_hashes, hugepages_or_skip, model_image, serve_with,
};
use test_vmm::{Split, Touch};
use uffd_engine::EngineConfig;
use uffd_engine::RetryPolicy;

const HUGE: u64 = 2 * MIB;

/// A vmm served from a source whose reads of `page` fail `failures` times.
fn flaky_vmm(
    test: &str,
    pages: Pages,
    regions: Vec<u64>,
    page: u64,
    failures: u64,
    config: EngineConfig,
) -> (Served, Arc<FlakySource>) {
    let mut flaky = None;
    let s = serve_with(test, pages, regions, config, |inner| {
        let source = Arc::new(FlakySource {
            inner,
            // FlakySource counts in 4 KiB blocks.
            failing_page: page * pages.bytes() / 4096,
            failures_left: failures.into(),
            reads_of_failing_page: 0.into(),
        });
        flaky = Some(source.clone());
        source
    });
    (s, flaky.expect("wrapped"))
}

/// Eight vmm threads fault one page whose source read fails twice: one source read per
/// retry cycle, two cycles within a bound of two (had each faulting thread counted a cycle,
/// the bound would be blown), each cycle waiting its backoff, and every thread reads the
/// right bytes.
fn retry_cycles_per_page(test: &str, pages: Pages, regions: Vec<u64>, page: u64) {
    let backoff = Duration::from_millis(50);
    let config = EngineConfig {
        retry: RetryPolicy {
            max_cycles: 2,
            backoff,
            jitter: Duration::from_millis(2),
        },
        ..EngineConfig::default()
    };
    let (s, flaky) = flaky_vmm(test, pages, regions, page, 2, config);
    let model = model_image(s.size, s.page);
    let p = s.page;
    let touch = Touch::read(page * p, p, 8).split(Split::Shared);
    let report = s.vmm.touch(touch).unwrap();
    assert_eq!(report.accesses, 8);
    assert_eq!(report.checksum, model.read_checksum(page * p, p, 8));
    // Two failed cycles, each woken only after its backoff: a lower bound by design.
    assert!(
        Duration::from_nanos(report.elapsed_ns) >= 2 * backoff,
        "served after {:?}: a duplicate fault retried the source before the backoff ended",
        Duration::from_nanos(report.elapsed_ns)
    );
    s.engine.settle();
    let m = s.engine.metrics();
    assert_eq!(m.retried, 2, "{m:?}");
    assert_eq!(flaky.failures_left.load(Ordering::SeqCst), 0);
    assert_eq!(
        flaky.reads_of_failing_page.load(Ordering::SeqCst),
        3,
        "one source read per cycle"
    );
    assert_hashes(&s.vmm.hash(0, s.size).unwrap(), &model, 0, s.size);
    s.finish();
}

#[test]
fn retry_cycles_per_page_4k() {
    retry_cycles_per_page("retry-4k", Pages::Base, vec![4 * MIB, 2 * MIB], 1030);
}

#[test]
fn retry_cycles_per_page_2m() {
    if hugepages_or_skip("retry_cycles_per_page_2m", 3) {
        retry_cycles_per_page("retry-2m", Pages::Huge, vec![2 * HUGE, HUGE], 2);
    }
}

/// With a single reader, a failing page's one-second backoff parks nobody: while four vmm
/// threads wait for it, another page's fault is served at once.
fn backoff_parks_no_reader(test: &str, pages: Pages, regions: Vec<u64>, page: u64, other: u64) {
    let backoff = Duration::from_secs(1);
    let config = EngineConfig {
        readers: 1,
        retry: RetryPolicy {
            max_cycles: 1,
            backoff,
            jitter: Duration::ZERO,
        },
        ..EngineConfig::default()
    };
    let (s, flaky) = flaky_vmm(test, pages, regions, page, 1, config);
    let model = model_image(s.size, s.page);
    let p = s.page;
    let failing = s
        .vmm
        .start_touch(Touch::read(page * p, p, 4).split(Split::Shared))
        .unwrap();
    until("the source failure", || {
        flaky.failures_left.load(Ordering::SeqCst) == 0
    });
    let report = s.vmm.touch(Touch::read(other * p, p, 1)).unwrap();
    assert_eq!(report.checksum, model.word(other * p));
    let served_in = Duration::from_nanos(report.elapsed_ns);
    assert!(
        served_in < backoff / 2,
        "another fault waited {served_in:?} behind a backoff of {backoff:?}"
    );
    let report = failing.wait().unwrap();
    assert_eq!(report.checksum, model.read_checksum(page * p, p, 4));
    s.engine.settle();
    assert_eq!(s.engine.metrics().retried, 1);
    s.finish();
}

#[test]
fn backoff_parks_no_reader_4k() {
    backoff_parks_no_reader("backoff-4k", Pages::Base, vec![2 * MIB], 7, 300);
}

#[test]
fn backoff_parks_no_reader_2m() {
    if hugepages_or_skip("backoff_parks_no_reader_2m", 2) {
        backoff_parks_no_reader("backoff-2m", Pages::Huge, vec![HUGE, HUGE], 0, 1);
    }
}
