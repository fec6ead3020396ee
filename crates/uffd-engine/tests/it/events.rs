//! Non-cooperative events other than REMOVE, and the write tracking of zero pages: handled
//! deliberately, never fatal (known failures #16, #30).

use std::sync::Arc;

use crate::common::{Guest, PAGE, image_source, pattern};
use test_support::Mapping;
use uffd_core::{Features, PageSize};
use uffd_engine::{CloseWhen, Engine, EngineConfig};

/// #30: munmap of part of the guest (UNMAP) marks it removed and the engine serves on; a
/// REMAP of the whole region moves the layout and faults at the new address are served.
#[test]
fn kf30_unmap_and_remap_are_handled_not_fatal() {
    let features = Features::EVENT_REMOVE | Features::EVENT_UNMAP | Features::EVENT_REMAP;
    let (guest, uffd) = Guest::with_features(64, PageSize::Base4K, features);
    let (source, _dir) = image_source(64 * PAGE);
    let engine = Engine::start(
        uffd,
        guest.layout(PageSize::Base4K),
        source,
        EngineConfig::default(),
    )
    .unwrap();
    assert_eq!(guest.read_byte(1, 0), pattern(PAGE));

    // Move the whole region elsewhere (REMAP), then touch pages at the new address. A
    // destination elsewhere, so the kernel really moves it (same-size mremap in place raises
    // no event).
    let mut guest = Arc::into_inner(guest).expect("the test holds the only reference");
    guest
        .map
        .move_to(Mapping::reserve(64))
        .expect("mremap onto the reservation");
    assert_eq!(
        guest.read_byte(1, 0),
        pattern(PAGE),
        "the installed page moved with the mapping"
    );
    assert_eq!(
        guest.read_byte(40, 0),
        pattern(40 * PAGE),
        "a missing page at the new address is served"
    );
    // Unmap part of it (UNMAP): not fatal, and the rest is still served.
    // SAFETY: no other thread touches the guest's memory in this test.
    unsafe { guest.map.unmap_pages(8, 8) }.expect("munmap");
    assert_eq!(guest.read_byte(50, 0), pattern(50 * PAGE));
    engine.settle();
    assert!(
        engine.exits().try_recv().is_err(),
        "an event was treated as fatal"
    );
    assert!(engine.metrics().other_events >= 1);
    assert_eq!(
        engine.tracker().state(8).unwrap(),
        page_tracker::PageState::Removed
    );
    engine.close(CloseWhen::OwnerGuarantees).unwrap();
    // The guest's drop unmaps what is left of the moved mapping.
}

/// #16: a zero page installed for a freed page and then written must be tracked dirty (one
/// COPY of zeros with MODE_WP, never ZEROPAGE then WRITEPROTECT).
#[test]
fn kf16_a_written_zero_page_is_dirty() {
    let (guest, uffd) = Guest::new(16, PageSize::Base4K);
    let (source, _dir) = image_source(16 * PAGE);
    let config = EngineConfig {
        dirty_tracking: true,
        ..EngineConfig::default()
    };
    let engine = Engine::start(uffd, guest.layout(PageSize::Base4K), source, config).unwrap();
    guest.dontneed(4, 2);
    assert_eq!(guest.read_byte(4, 0), 0);
    guest.write_byte(4, 10, 9);
    guest.write_byte(5, 10, 9); // a write fault straight onto a freed page
    let sets = engine.page_sets().unwrap();
    assert_eq!(sets.dirty, vec![4 * PAGE..6 * PAGE]);
    assert_eq!(guest.read_byte(4, 10), 9);
    assert_eq!(guest.read_byte(4, 11), 0);
    engine.close(CloseWhen::OwnerGuarantees).unwrap();
}
