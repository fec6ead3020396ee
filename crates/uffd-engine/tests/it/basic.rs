//! The engine serving guest memory of this process: every byte, zeros after REMOVE, dirty
//! tracking, fault-around, prefetch, retry, lifecycle.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::common::{FlakySource, Guest, PAGE, image_source, pattern};
use uffd_core::PageSize;
use uffd_engine::{CloseWhen, Engine, EngineConfig, EngineExit, RetryPolicy};

fn start(pages: u64, config: EngineConfig) -> (Arc<Guest>, Engine) {
    let (guest, uffd) = Guest::new(pages, PageSize::Base4K);
    let (source, _dir) = image_source(pages * PAGE);
    let engine =
        Engine::start(uffd, guest.layout(PageSize::Base4K), source, config).expect("start");
    (guest, engine)
}

fn close(engine: Engine) {
    engine.close(CloseWhen::OwnerGuarantees).expect("close");
}

#[test]
fn every_byte_is_served_from_two_threads() {
    let pages = 256;
    let (guest, engine) = start(pages, EngineConfig::default());
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let guest = guest.clone();
            std::thread::spawn(move || {
                for p in (t..pages).step_by(2) {
                    let bytes = guest.page_bytes(p);
                    for (i, b) in bytes.iter().enumerate() {
                        assert_eq!(*b, pattern(p * PAGE + i as u64), "page {p} byte {i}");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    engine.settle();
    let m = engine.metrics();
    assert_eq!(m.installed_source, pages);
    assert!(m.faults >= pages);
    close(engine);
}

#[test]
fn removed_pages_read_zeros_and_others_keep_their_bytes() {
    let (guest, engine) = start(32, EngineConfig::default());
    for p in 0..32 {
        assert_eq!(guest.read_byte(p, 7), pattern(p * PAGE + 7));
    }
    guest.dontneed(8, 8);
    for p in 0..32 {
        let expect = if (8..16).contains(&p) {
            0
        } else {
            pattern(p * PAGE + 7)
        };
        assert_eq!(guest.read_byte(p, 7), expect, "page {p}");
    }
    // Removed before ever being touched: zeros too, never snapshot bytes.
    let (guest2, engine2) = start(16, EngineConfig::default());
    guest2.dontneed(0, 16);
    for p in 0..16 {
        assert_eq!(guest2.read_byte(p, 1), 0);
    }
    engine2.settle();
    let m = engine2.metrics();
    assert_eq!(m.installed_zero, 16);
    assert_eq!(m.installed_source, 0);
    close(engine);
    close(engine2);
}

#[test]
fn dirty_tracking_exports_exactly_the_written_pages() {
    let config = EngineConfig {
        dirty_tracking: true,
        ..EngineConfig::default()
    };
    let (guest, engine) = start(64, config);
    for p in 0..64 {
        assert_eq!(guest.read_byte(p, 0), pattern(p * PAGE));
    }
    for p in [3u64, 4, 10, 63] {
        guest.write_byte(p, 5, 0xEE);
    }
    guest.dontneed(20, 2);
    assert_eq!(guest.read_byte(20, 0), 0);
    let sets = engine.page_sets().unwrap();
    assert_eq!(
        sets.dirty,
        vec![
            3 * PAGE..5 * PAGE,
            10 * PAGE..11 * PAGE,
            63 * PAGE..64 * PAGE
        ]
    );
    assert_eq!(sets.empty, vec![20 * PAGE..22 * PAGE]);
    assert_eq!(guest.read_byte(3, 5), 0xEE);
    // A new generation: the next export holds only later writes.
    let first = engine.export_and_reset().unwrap();
    assert_eq!(first.dirty, sets.dirty);
    guest.write_byte(4, 0, 1);
    guest.write_byte(30, 0, 1);
    assert_eq!(
        engine.page_sets().unwrap().dirty,
        vec![4 * PAGE..5 * PAGE, 30 * PAGE..31 * PAGE]
    );
    close(engine);
}

#[test]
fn fault_around_installs_the_window_in_one_copy() {
    let config = EngineConfig {
        fault_around_pages: 16,
        ..EngineConfig::default()
    };
    let (guest, engine) = start(64, config);
    assert_eq!(guest.read_byte(5, 0), pattern(5 * PAGE));
    engine.settle();
    let m = engine.metrics();
    assert_eq!(m.installed_source, 16);
    assert_eq!(m.fault_around_pages, 15);
    for p in 0..16 {
        assert_eq!(guest.read_byte(p, 100), pattern(p * PAGE + 100));
    }
    assert_eq!(
        engine.metrics().faults,
        1,
        "the window needed no further faults"
    );
    close(engine);
}

#[test]
fn prefetch_installs_missing_pages_and_skips_removed_ones() {
    let (guest, engine) = start(1024, EngineConfig::default());
    guest.dontneed(100, 50);
    assert_eq!(guest.read_byte(0, 0), pattern(0));
    let report = engine.prefetch(std::iter::once(0..1024 * PAGE)).wait(PAGE);
    assert_eq!(report.installed_pages, 1024 - 50 - 1);
    assert_eq!(report.skipped_pages, 51);
    engine.settle();
    let faults_before = engine.metrics().faults;
    for p in 0..1024 {
        let expect = if (100..150).contains(&p) {
            0
        } else {
            pattern(p * PAGE + 9)
        };
        assert_eq!(guest.read_byte(p, 9), expect);
    }
    assert_eq!(
        engine.metrics().faults - faults_before,
        50,
        "only removed pages fault"
    );
    close(engine);
}

#[test]
fn a_transient_source_failure_is_retried_and_served() {
    let pages = 8;
    let (guest, uffd) = Guest::new(pages, PageSize::Base4K);
    let (inner, _dir) = image_source(pages * PAGE);
    let source = Arc::new(FlakySource {
        inner,
        failing_page: 3,
        failures_left: 2.into(),
        reads_of_failing_page: 0.into(),
    });
    let retry = RetryPolicy {
        max_cycles: 3,
        backoff: Duration::from_millis(5),
        jitter: Duration::from_millis(1),
    };
    let engine = Engine::start(
        uffd,
        guest.layout(PageSize::Base4K),
        source.clone(),
        EngineConfig {
            retry,
            ..EngineConfig::default()
        },
    )
    .unwrap();
    assert_eq!(guest.read_byte(3, 0), pattern(3 * PAGE));
    engine.settle();
    assert_eq!(engine.metrics().retried, 2);
    assert_eq!(source.reads_of_failing_page.load(Ordering::SeqCst), 3);
    assert!(engine.exits().try_recv().is_err());
    close(engine);
}

#[test]
fn retry_exhaustion_raises_the_fatal_signal_with_every_error() {
    let (guest, uffd) = Guest::new(4, PageSize::Base4K);
    let (inner, _dir) = image_source(4 * PAGE);
    let source = Arc::new(FlakySource {
        inner,
        failing_page: 1,
        failures_left: 100.into(),
        reads_of_failing_page: 0.into(),
    });
    let retry = RetryPolicy {
        max_cycles: 2,
        backoff: Duration::from_millis(2),
        jitter: Duration::ZERO,
    };
    let engine = Engine::start(
        uffd,
        guest.layout(PageSize::Base4K),
        source,
        EngineConfig {
            retry,
            ..EngineConfig::default()
        },
    )
    .unwrap();
    let toucher = {
        let guest = guest.clone();
        std::thread::spawn(move || guest.read_byte(1, 0))
    };
    let exit = engine
        .exits()
        .recv_timeout(Duration::from_secs(10))
        .expect("fatal signal");
    match exit {
        EngineExit::Fatal(fatal) => {
            assert_eq!(fatal.page_offset, Some(PAGE));
            assert_eq!(fatal.errors.len(), 3);
            assert!(
                fatal
                    .errors
                    .iter()
                    .all(|e| e.starts_with("storage timeout")),
                "{fatal}"
            );
        }
        other => panic!("unexpected exit {other:?}"),
    }
    // The thread is still blocked on a page nobody will serve; graduating it is not possible
    // (the source is broken), so unregister by closing: the owner guarantees the rest.
    close(engine);
    // After unregistering, the touch completes (anonymous memory reads zero once no handler).
    assert_eq!(toucher.join().unwrap(), 0);
}

#[test]
fn the_working_set_records_first_touches_in_order() {
    let config = EngineConfig {
        record_working_set: true,
        ..EngineConfig::default()
    };
    let (guest, engine) = start(32, config);
    for p in [7u64, 8, 9, 2, 30, 8] {
        let _ = guest.read_byte(p, 0);
    }
    guest.dontneed(20, 1);
    let _ = guest.read_byte(20, 0);
    engine.settle();
    assert_eq!(
        engine.working_set(),
        vec![
            7 * PAGE..10 * PAGE,
            2 * PAGE..3 * PAGE,
            30 * PAGE..31 * PAGE
        ]
    );
    close(engine);
}

#[test]
fn fault_around_over_a_hole_installs_zeros_for_the_window() {
    for window in [16u64, 64] {
        let (guest, uffd) = Guest::new(256, PageSize::Base4K);
        let (inner, _dir) = image_source(256 * PAGE);
        let source = Arc::new(crate::common::HoleSource {
            inner,
            hole: 0..128 * PAGE,
        });
        let config = EngineConfig {
            fault_around_pages: window,
            ..EngineConfig::default()
        };
        let engine = Engine::start(uffd, guest.layout(PageSize::Base4K), source, config).unwrap();
        assert_eq!(guest.read_byte(5, 0), 0);
        assert_eq!(guest.read_byte(130, 0), pattern(130 * PAGE));
        engine.settle();
        let m = engine.metrics();
        assert_eq!(m.installed_zero, window, "window {window}");
        assert!(engine.exits().try_recv().is_err());
        for p in 0..window {
            assert_eq!(guest.read_byte(p, 77), 0);
        }
        close(engine);
    }
}
