//! Prefetch installs holes too: after a prefetch of the whole image has finished, reading every
//! page of the guest takes no demand fault, holes included (zero pages in bulk: ZEROPAGE for
//! base pages, COPY of zeros for 2 MiB pages, COPY|MODE_WP of zeros under dirty tracking so
//! a write to a hole still shows as dirty).

use std::sync::Arc;

use page_tracker::PageState;
use uffd_core::PageSize;
use uffd_engine::{CloseWhen, Engine, EngineConfig, PageSource};

use crate::common::{Guest, HoleSource, PAGE, image_source, pattern};
use test_support::hugepages_or_skip;

/// Serves `pages` pages of `page_size` whose image pages `hole` (in pages) are a hole, prefetches
/// everything, then reads every page once; returns the guest and the engine for more checks.
fn prefetch_then_read(
    page_size: PageSize,
    pages: u64,
    hole: std::ops::Range<u64>,
    dirty_tracking: bool,
) -> (Arc<Guest>, Engine) {
    let page = page_size.bytes();
    let (guest, uffd) = Guest::new(pages, page_size);
    let (inner, _dir) = image_source(pages * page);
    let source: Arc<dyn PageSource> = Arc::new(HoleSource {
        inner,
        hole: hole.start * page..hole.end * page,
    });
    let config = EngineConfig {
        dirty_tracking,
        ..EngineConfig::default()
    };
    let engine = Engine::start(uffd, guest.layout(page_size), source, config).unwrap();
    let report = engine.prefetch(std::iter::once(0..pages * page)).wait(page);
    assert_eq!(report.zero_pages, hole.end - hole.start, "{report:?}");
    assert_eq!(
        report.installed_pages,
        pages - (hole.end - hole.start),
        "{report:?}"
    );
    engine.settle();
    let faults = engine.metrics().faults;
    for p in 0..pages {
        let want = if hole.contains(&p) {
            0
        } else {
            pattern(p * page + 5)
        };
        assert_eq!(guest.read_byte(p, 5), want, "page {p}");
    }
    assert_eq!(
        engine.metrics().faults,
        faults,
        "a read after prefetch faulted"
    );
    for p in hole {
        assert_eq!(
            engine.tracker().state(p).unwrap(),
            PageState::Zero,
            "page {p}"
        );
    }
    (guest, engine)
}

#[test]
fn holes_are_prefetched_as_zero_pages_4k() {
    let (_guest, engine) = prefetch_then_read(PageSize::Base4K, 512, 100..300, false);
    engine.close(CloseWhen::OwnerGuarantees).unwrap();
}

#[test]
fn holes_are_prefetched_as_zero_pages_2m() {
    if hugepages_or_skip("holes_are_prefetched_as_zero_pages_2m", 6) {
        let (_guest, engine) = prefetch_then_read(PageSize::Huge2M, 6, 2..5, false);
        engine.close(CloseWhen::OwnerGuarantees).unwrap();
    }
}

/// Under dirty tracking the holes are write-protected zero pages: a write to one is a
/// write-protect fault, and the page is exported dirty.
#[test]
fn prefetched_holes_stay_write_tracked() {
    let (guest, engine) = prefetch_then_read(PageSize::Base4K, 256, 16..64, true);
    guest.write_byte(20, 0, 0xab);
    assert_eq!(guest.read_byte(20, 0), 0xab);
    engine.settle();
    let sets = engine.page_sets().unwrap();
    assert_eq!(sets.dirty, vec![20 * PAGE..21 * PAGE]);
    assert!(
        sets.empty.contains(&(16 * PAGE..20 * PAGE)),
        "{:?}",
        sets.empty
    );
    engine.close(CloseWhen::OwnerGuarantees).unwrap();
}
