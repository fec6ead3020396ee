//! Deterministic race tests, one per engine item of `known-failures.md`: hook points park an
//! engine thread, the racing operation is fired, the thread released, and the page's bytes
//! and state checked. No sleeps as synchronisation: the kernel's own state (fdinfo, wchan)
//! tells when a fault or an event is queued.

#[cfg(feature = "test-hooks")]
mod races {
    use std::os::fd::AsRawFd;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::thread::JoinHandle;
    use std::time::Duration;

    use crossbeam_channel::bounded;
    use page_tracker::PageState;
    use uffd_core::{CopyMode, PageSize, Range, UffdBuilder};
    use uffd_engine::{CloseWhen, Engine, EngineConfig};
    use uffd_engine::{Hook, HookPoint, RetryPolicy};

    use crate::common::parker::Parker;
    use crate::common::proc::{gettid, pending_faults, until, wchan};
    use crate::common::{FlakySource, Guest, PAGE, image_source, pattern};

    fn engine_with(
        pages: u64,
        hook: Option<Hook>,
        config: EngineConfig,
    ) -> (Arc<Guest>, Engine, i32) {
        let (guest, uffd) = Guest::new(pages, PageSize::Base4K);
        let fd = uffd.as_raw_fd();
        let (source, _dir) = image_source(pages * PAGE);
        let config = EngineConfig { hook, ..config };
        let engine = Engine::start(uffd, guest.layout(PageSize::Base4K), source, config).unwrap();
        (guest, engine, fd)
    }

    /// A thread reading byte 0 of `page`; its tid first, then the byte.
    fn toucher(guest: &Arc<Guest>, page: u64) -> (i32, JoinHandle<u8>) {
        let (tx, rx) = bounded(1);
        let guest = guest.clone();
        let handle = std::thread::spawn(move || {
            tx.send(gettid()).unwrap();
            guest.read_byte(page, 0)
        });
        (rx.recv().unwrap(), handle)
    }

    /// A thread running `madvise(DONTNEED)` of pages `[first, first + count)`; reports when
    /// it returns.
    fn madviser(
        guest: &Arc<Guest>,
        first: u64,
        count: u64,
    ) -> (i32, crossbeam_channel::Receiver<()>) {
        let (tid_tx, tid_rx) = bounded(1);
        let (done_tx, done_rx) = bounded(1);
        let guest = guest.clone();
        std::thread::spawn(move || {
            tid_tx.send(gettid()).unwrap();
            guest.dontneed(first, count);
            done_tx.send(()).unwrap();
        });
        (tid_rx.recv().unwrap(), done_rx)
    }

    fn blocked_in_uffd_event(tid: i32) -> bool {
        wchan(tid).contains("userfaultfd")
    }

    /// A REMOVE lands while reader 0 holds a fault between its read and its install: the
    /// install must be zeros, not the snapshot bytes it read.
    fn stale_source_race_installs_zeros(config: EngineConfig) {
        let (hook, parker) = Parker::new(HookPoint::BeforeBarrier, 5 * PAGE, Some("uffd-reader"));
        let (guest, engine, _) = engine_with(16, Some(hook), config);
        let (_, touch) = toucher(&guest, 5);
        parker.wait_parked();
        // Another reader reads and records the REMOVE; madvise returns.
        guest.dontneed(5, 1);
        parker.release();
        assert_eq!(
            touch.join().unwrap(),
            0,
            "freed page refilled with snapshot bytes"
        );
        engine.settle();
        assert_eq!(engine.tracker().state(5).unwrap(), PageState::Zero);
        engine.close(CloseWhen::OwnerGuarantees).unwrap();
    }

    /// known-failures #1: the worker fetched snapshot bytes while the page was Missing, a
    /// REMOVE landed before it took the settle lock: it must install zeros.
    #[test]
    fn kf01_stale_source_race_installs_zeros() {
        stale_source_race_installs_zeros(EngineConfig::default());
    }

    /// #1 again with standing-by readers: the REMOVE is read only if a standing-by reader
    /// notices reader 0 is stuck with a message waiting and joins (nothing calls it in: no
    /// second fault is queued).
    #[test]
    fn kf01_with_standby_readers_a_stuck_reader_0_is_helped() {
        stale_source_race_installs_zeros(EngineConfig {
            standby_readers: true,
            ..EngineConfig::default()
        });
    }

    /// known-failures #2: a worker holds the settle read lock; the balloon's madvise must
    /// still return, because reading events never waits on that lock.
    #[test]
    fn kf02_madvise_returns_while_a_worker_holds_the_read_lock() {
        let (hook, parker) = Parker::new(HookPoint::BeforeInstall, 3 * PAGE, Some("uffd-reader"));
        let (guest, engine, _) = engine_with(16, Some(hook), EngineConfig::default());
        let (_, touch) = toucher(&guest, 3);
        parker.wait_parked();
        let (_, returned) = madviser(&guest, 9, 2);
        returned
            .recv_timeout(Duration::from_secs(10))
            .expect("madvise hung behind the settle lock");
        parker.release();
        assert_eq!(touch.join().unwrap(), pattern(3 * PAGE));
        assert_eq!(guest.read_byte(9, 0), 0);
        engine.close(CloseWhen::OwnerGuarantees).unwrap();
    }

    /// known-failures #3: the kernel returns a fault ahead of the REMOVE queued before it in
    /// the same read; the REMOVE is applied first and the fault served zeros.
    #[test]
    fn kf03_remove_before_fault_in_one_batch() {
        // One reader, parked on page 0, so the next read takes the fault and the REMOVE together.
        let (hook, parker) = Parker::new(HookPoint::BeforeBarrier, 0, Some("uffd-reader"));
        let config = EngineConfig {
            readers: 1,
            ..EngineConfig::default()
        };
        let (guest, engine, fd) = engine_with(16, Some(hook), config);
        let (_, first) = toucher(&guest, 0);
        parker.wait_parked();
        let (madvise_tid, removed) = madviser(&guest, 7, 1);
        until("the REMOVE to be queued", || {
            blocked_in_uffd_event(madvise_tid)
        });
        let (_, touch) = toucher(&guest, 7);
        until("the fault to be queued", || pending_faults(fd) == 1);
        parker.release();
        removed.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(
            touch.join().unwrap(),
            0,
            "fault served before its batch's REMOVE"
        );
        assert_eq!(first.join().unwrap(), pattern(0));
        engine.settle();
        assert_eq!(engine.tracker().state(7).unwrap(), PageState::Zero);
        engine.close(CloseWhen::OwnerGuarantees).unwrap();
    }

    /// known-failures #4: prefetch claimed a run, a REMOVE landed before it installed: the
    /// removed pages are never resurrected with snapshot bytes.
    #[test]
    fn kf04_prefetch_never_resurrects_a_removed_page() {
        let (hook, parker) = Parker::new(HookPoint::BeforeBarrier, 0, Some("uffd-prefetch"));
        let (guest, engine, _) = engine_with(64, Some(hook), EngineConfig::default());
        let prefetch = engine.prefetch(std::iter::once(0..64 * PAGE));
        parker.wait_parked();
        guest.dontneed(0, 4);
        parker.release();
        let report = prefetch.wait(PAGE);
        assert_eq!(report.installed_pages, 60);
        for p in 0..64 {
            let expect = if p < 4 { 0 } else { pattern(p * PAGE) };
            assert_eq!(guest.read_byte(p, 0), expect, "page {p}");
        }
        engine.close(CloseWhen::OwnerGuarantees).unwrap();
    }

    /// known-failures #5: an installer suspended between its COPY and its record must not
    /// overwrite the write promotion that follows: the page ends Dirty.
    #[test]
    fn kf05_installs_never_downgrade_a_later_write() {
        let (hook, parker) = Parker::new(HookPoint::AfterInstall, 2 * PAGE, Some("uffd-reader"));
        let config = EngineConfig {
            dirty_tracking: true,
            ..EngineConfig::default()
        };
        let (guest, engine, _) = engine_with(8, Some(hook), config);
        let (_, touch) = toucher(&guest, 2);
        parker.wait_parked();
        // The page is installed write-protected and its reader woken; now it writes.
        assert_eq!(touch.join().unwrap(), pattern(2 * PAGE));
        let writer = {
            let guest = guest.clone();
            std::thread::spawn(move || guest.write_byte(2, 1, 0xAB))
        };
        // The WP fault waits (the page is still claimed by the parked installer).
        until("the WP fault to be deferred", || {
            engine.metrics().deferred >= 1
        });
        parker.release();
        writer.join().unwrap();
        engine.settle();
        assert_eq!(engine.tracker().state(2).unwrap(), PageState::Dirty);
        assert_eq!(engine.page_sets().unwrap().dirty, vec![2 * PAGE..3 * PAGE]);
        assert_eq!(guest.read_byte(2, 1), 0xAB);
        engine.close(CloseWhen::OwnerGuarantees).unwrap();
    }

    /// known-failures #6: close while prefetch is between chunks: no ioctl after close, and
    /// the fd stays open until the prefetch thread is gone (never a reused fd number).
    #[test]
    fn kf06_prefetch_is_ordered_against_close() {
        let (hook, parker) =
            Parker::new(HookPoint::BeforeBarrier, 512 * PAGE, Some("uffd-prefetch"));
        let config = EngineConfig {
            prefetch_workers: 1,
            ..EngineConfig::default()
        };
        let (guest, engine, _) = engine_with(2048, Some(hook), config);
        let prefetch = engine.prefetch(std::iter::once(0..2048 * PAGE));
        parker.wait_parked();
        let installed_before = prefetch.installed_pages();
        assert_eq!(installed_before, 512);
        let closer = std::thread::spawn(move || engine.close(CloseWhen::OwnerGuarantees));
        closer.join().unwrap().unwrap();
        parker.release();
        let report = prefetch.wait(PAGE);
        assert_eq!(
            report.installed_pages, 512,
            "prefetch installed after close"
        );
        drop(guest);
    }

    /// known-failures #7, #11: a COPY that meets a pending REMOVE (EAGAIN) is deferred, never
    /// dropped, and completed once the event is read, without any other event arriving.
    #[test]
    fn kf07_eagain_is_deferred_then_completed() {
        let (hook, parker) = Parker::new(HookPoint::BeforeInstall, 4 * PAGE, Some("uffd-reader"));
        let config = EngineConfig {
            readers: 1,
            ..EngineConfig::default()
        };
        let (guest, engine, _) = engine_with(16, Some(hook), config);
        let (_, touch) = toucher(&guest, 4);
        parker.wait_parked();
        let (madvise_tid, removed) = madviser(&guest, 12, 1);
        until("the REMOVE to be queued", || {
            blocked_in_uffd_event(madvise_tid)
        });
        parker.release();
        assert_eq!(touch.join().unwrap(), pattern(4 * PAGE));
        removed.recv_timeout(Duration::from_secs(10)).unwrap();
        engine.settle();
        assert!(engine.metrics().deferred >= 1, "{:?}", engine.metrics());
        engine.close(CloseWhen::OwnerGuarantees).unwrap();
    }

    /// known-failures #17: EEXIST proves the page is there, not that its waiter was woken.
    #[test]
    fn kf17_wake_after_eexist() {
        let (hook, parker) = Parker::new(HookPoint::BeforeInstall, 6 * PAGE, Some("uffd-reader"));
        let (guest, engine, _) = engine_with(16, Some(hook), EngineConfig::default());
        let (_, touch) = toucher(&guest, 6);
        parker.wait_parked();
        // Someone else installs the page without waking the waiter.
        let other = UffdBuilder::new().create().unwrap();
        let page = Range::new(guest.addr() + 6 * PAGE, PAGE, PageSize::Base4K).unwrap();
        let bytes: Vec<u8> = (0..PAGE).map(|i| pattern(6 * PAGE + i)).collect();
        assert!(other.copy(page, &bytes, CopyMode::DONTWAKE).is_complete());
        parker.release();
        assert_eq!(
            touch.join().unwrap(),
            pattern(6 * PAGE),
            "waiter never woken after EEXIST"
        );
        engine.settle();
        assert!(engine.metrics().already_present >= 1);
        engine.close(CloseWhen::OwnerGuarantees).unwrap();
    }

    /// known-failures #23: three threads fault one failing page together: they share one
    /// retry cycle per failure, not one each.
    #[test]
    fn kf23_retry_cycles_are_counted_per_page() {
        let (hook, parker) = Parker::new(HookPoint::BeforeBarrier, 0, Some("uffd-reader"));
        let (guest, uffd) = Guest::new(8, PageSize::Base4K);
        let fd = uffd.as_raw_fd();
        let (inner, _dir) = image_source(8 * PAGE);
        let source = Arc::new(FlakySource {
            inner,
            failing_page: 3,
            failures_left: 2.into(),
            reads_of_failing_page: 0.into(),
        });
        let retry = RetryPolicy {
            max_cycles: 3,
            backoff: Duration::from_millis(5),
            jitter: Duration::ZERO,
        };
        let config = EngineConfig {
            readers: 1,
            retry,
            hook: Some(hook),
            ..EngineConfig::default()
        };
        let engine =
            Engine::start(uffd, guest.layout(PageSize::Base4K), source.clone(), config).unwrap();
        let (_, first) = toucher(&guest, 0);
        parker.wait_parked();
        let touches: Vec<_> = (0..3).map(|_| toucher(&guest, 3).1).collect();
        until("three faults queued", || pending_faults(fd) == 3);
        parker.release();
        for t in touches {
            assert_eq!(t.join().unwrap(), pattern(3 * PAGE));
        }
        assert_eq!(first.join().unwrap(), pattern(0));
        engine.settle();
        assert_eq!(engine.metrics().retried, 2);
        assert_eq!(source.reads_of_failing_page.load(Ordering::SeqCst), 3);
        engine.close(CloseWhen::OwnerGuarantees).unwrap();
    }

    /// known-failures #12: on stop, every deferred fault is woken (the guest thread re-faults
    /// rather than waiting on a queue nobody will serve again).
    #[test]
    fn kf12_deferred_faults_are_woken_on_stop() {
        let (hook, parker) = Parker::new(HookPoint::BeforeInstall, 4 * PAGE, Some("uffd-reader"));
        // A long pacing keeps the deferred fault in the queue until the stop.
        let config = EngineConfig {
            readers: 1,
            defer_pacing: Duration::from_secs(60),
            ..EngineConfig::default()
        };
        let (guest, mut engine, fd) = engine_with(16, Some(hook), config);
        let (_, touch) = toucher(&guest, 4);
        parker.wait_parked();
        let (madvise_tid, removed) = madviser(&guest, 12, 1);
        until("the REMOVE to be queued", || {
            blocked_in_uffd_event(madvise_tid)
        });
        parker.release();
        removed.recv_timeout(Duration::from_secs(10)).unwrap();
        until("the fault to be deferred", || {
            engine.metrics().deferred >= 1
        });
        assert_eq!(pending_faults(fd), 0);
        engine.stop();
        // Woken without an install, the thread faults again: a fresh message is queued.
        until("the woken thread to fault again", || {
            pending_faults(fd) == 1
        });
        engine.close(CloseWhen::OwnerGuarantees).unwrap();
        // Unregistered: the anonymous page now reads zero.
        assert_eq!(touch.join().unwrap(), 0);
    }
}
