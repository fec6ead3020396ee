//! Faults whose bytes are not resident are parked for the fetchers: a stalled read holds up
//! its own page only, a read past the deadline becomes a retry cycle (its late bytes are
//! dropped), and a read that never returns ends fatal, never in zeros.
//!
//! The source here says which pages are "resident" and holds reads of the others on a gate
//! the test opens; `tests/it/fuse_storage.rs` does the same through a real file system.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use parking_lot::Mutex;
use uffd_core::PageSize;
use uffd_engine::{
    CloseWhen, Engine, EngineConfig, EngineExit, Extent, PageSource, RetryPolicy, SourceError,
};

use crate::common::{Guest, PAGE, image_source, pattern};

/// Pages of `stalled` are not resident, and each read of one waits for a token from the test
/// (the read announces itself first); every other page is resident.
struct StallingSource {
    inner: Arc<dyn PageSource>,
    stalled: HashSet<u64>,
    reached: Sender<u64>,
    release: Receiver<()>,
    reads: AtomicU64,
    /// Reads of stalled pages that returned, released by the test.
    returned: Mutex<Vec<u64>>,
}

impl StallingSource {
    fn stalls(&self, offset: u64, len: usize) -> Option<u64> {
        (offset / PAGE..(offset + len as u64).div_ceil(PAGE)).find(|p| self.stalled.contains(p))
    }
}

impl PageSource for StallingSource {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn extent(&self, offset: u64, max_len: u64) -> Result<Extent, SourceError> {
        self.inner.extent(offset, max_len)
    }

    fn read_into(&self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        if let Some(page) = self.stalls(offset, buf.len()) {
            let _ = self.reached.send(page);
            self.release
                .recv()
                .map_err(|_| SourceError("the test went away".into()))?;
            self.returned.lock().push(page);
        }
        self.inner.read_into(offset, buf)
    }

    fn read_resident(&self, offset: u64, buf: &mut [u8]) -> Result<bool, SourceError> {
        if self.stalls(offset, buf.len()).is_some() {
            return Ok(false);
        }
        self.inner.read_into(offset, buf).map(|()| true)
    }
}

struct Setup {
    guest: Arc<Guest>,
    engine: Engine,
    source: Arc<StallingSource>,
    reached: Receiver<u64>,
    release: Sender<()>,
}

fn setup(pages: u64, stalled: &[u64], config: EngineConfig) -> Setup {
    let (inner, _dir) = image_source(pages * PAGE);
    let (reached_tx, reached) = unbounded();
    let (release, release_rx) = bounded(0);
    let source = Arc::new(StallingSource {
        inner,
        stalled: stalled.iter().copied().collect(),
        reached: reached_tx,
        release: release_rx,
        reads: AtomicU64::new(0),
        returned: Mutex::default(),
    });
    let (guest, uffd) = Guest::new(pages, PageSize::Base4K);
    let engine =
        Engine::start(uffd, guest.layout(PageSize::Base4K), source.clone(), config).unwrap();
    Setup {
        guest,
        engine,
        source,
        reached,
        release,
    }
}

fn expect_page(guest: &Guest, page: u64) {
    let bytes = guest.page_bytes(page);
    let want: Vec<u8> = (page * PAGE..(page + 1) * PAGE).map(pattern).collect();
    assert!(bytes == want, "page {page} differs from the snapshot");
}

#[test]
fn a_stalled_read_holds_up_its_own_page_only() {
    let pages = 64;
    let s = setup(pages, &[7], EngineConfig::default());
    let stalled = {
        let guest = s.guest.clone();
        std::thread::spawn(move || expect_page(&guest, 7))
    };
    assert_eq!(s.reached.recv_timeout(test_support::TIMEOUT), Ok(7));
    // The read of page 7 is held: every other page is served meanwhile, by the readers.
    for page in (0..pages).filter(|&p| p != 7) {
        expect_page(&s.guest, page);
    }
    assert!(
        s.source.returned.lock().is_empty(),
        "the stall was held throughout"
    );
    assert!(!stalled.is_finished());
    s.release.send(()).unwrap();
    stalled.join().unwrap();
    s.engine.settle();
    let m = s.engine.metrics();
    assert_eq!(m.parked, 1, "{m:?}");
    assert_eq!(m.installed_source, pages, "{m:?}");
    assert_eq!((m.read_timeouts, m.retried), (0, 0), "{m:?}");
    s.engine.close(CloseWhen::OwnerGuarantees).unwrap();
}

#[test]
fn a_read_past_its_deadline_is_retried_and_its_late_bytes_dropped() {
    let config = EngineConfig {
        read_deadline: Duration::from_millis(50),
        retry: RetryPolicy {
            max_cycles: 50,
            backoff: Duration::from_millis(1),
            jitter: Duration::from_millis(1),
        },
        ..EngineConfig::default()
    };
    let s = setup(16, &[3], config);
    let waiter = {
        let guest = s.guest.clone();
        std::thread::spawn(move || expect_page(&guest, 3))
    };
    assert_eq!(s.reached.recv_timeout(test_support::TIMEOUT), Ok(3));
    // Held until the deadline has passed and a retry cycle has parked the fault again (a
    // second read of the page has started).
    assert_eq!(s.reached.recv_timeout(test_support::TIMEOUT), Ok(3));
    assert!(s.engine.metrics().read_timeouts >= 1);
    assert!(s.engine.metrics().retried >= 1);
    // Let every read through from now on.
    let release = s.release.clone();
    let opener =
        std::thread::spawn(
            move || {
                while release.send_timeout((), Duration::from_secs(2)).is_ok() {}
            },
        );
    waiter.join().unwrap();
    s.engine.settle();
    let m = s.engine.metrics();
    assert_eq!(m.installed_source, 1, "installed once: {m:?}");
    s.engine.close(CloseWhen::OwnerGuarantees).unwrap();
    opener.join().unwrap();
}

#[test]
fn a_read_that_never_returns_is_fatal_and_serves_no_zeros() {
    let max_cycles = 2;
    let config = EngineConfig {
        read_deadline: Duration::from_millis(20),
        retry: RetryPolicy {
            max_cycles,
            backoff: Duration::from_millis(1),
            jitter: Duration::from_millis(1),
        },
        ..EngineConfig::default()
    };
    let s = setup(16, &[5], config);
    let waiter = {
        let guest = s.guest.clone();
        std::thread::spawn(move || guest.read_byte(5, 0))
    };
    let exit = s
        .engine
        .exits()
        .recv_timeout(test_support::TIMEOUT)
        .expect("the engine gives up on the page");
    let EngineExit::Fatal(fatal) = exit else {
        panic!("expected a fatal exit, got {exit:?}");
    };
    assert_eq!(fatal.page_offset, Some(5 * PAGE), "{fatal}");
    assert_eq!(fatal.errors.len() as u32, max_cycles + 1, "{fatal}");
    assert!(
        fatal.errors.iter().all(|e| e.contains("read deadline")),
        "{fatal}"
    );
    let m = s.engine.metrics();
    assert_eq!((m.installed_source, m.installed_zero), (0, 0), "{m:?}");
    // Unregistering releases the waiting thread (the daemon would kill the VMM instead).
    s.engine.close(CloseWhen::OwnerGuarantees).unwrap();
    waiter.join().unwrap();
    // The stalled fetchers return once the test lets go of the gate.
    drop(s.release);
}
