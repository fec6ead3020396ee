//! UFFDIO_MOVE: anonymous pages move from a populated source to a registered destination,
//! leaving holes behind.

use test_support::{Mapping, Region};
use uffd_core::{Features, Ioctls, MoveMode, RegisterMode, Status};

use crate::common::{PAGE_LEN, assert_complete, next_fault, pattern};

const PAGES: usize = 4;

fn setup() -> (Mapping, Region, Vec<u8>) {
    let src = Mapping::anon(PAGES);
    let bytes = pattern(0xc3, PAGES * PAGE_LEN);
    src.write_bytes(0, &bytes);
    let dst = Region::new(PAGES, Features::MOVE, RegisterMode::MISSING);
    assert!(dst.ioctls.contains(Ioctls::MOVE), "{:?}", dst.ioctls);
    (src, dst, bytes)
}

#[test]
fn move_takes_the_pages_and_leaves_holes() {
    let (src, dst, bytes) = setup();
    let outcome = dst
        .uffd
        .move_pages(dst.pages(0, PAGES), src.addr(), MoveMode::empty());
    assert_eq!(outcome.status, Status::Complete, "{outcome:?}");
    assert_eq!(
        (outcome.requested, outcome.done),
        ((PAGES * PAGE_LEN) as u64, (PAGES * PAGE_LEN) as u64)
    );
    assert_eq!(dst.map.read_bytes(0, PAGES * PAGE_LEN), bytes);
    // The source (not registered) faults in fresh zero pages.
    assert!(src.read_bytes(0, PAGES * PAGE_LEN).iter().all(|&b| b == 0));
}

#[test]
fn move_resolves_a_fault() {
    let (src, dst, bytes) = setup();
    let reader = dst.spawn_read(2 * PAGE_LEN + 9);
    let fault = next_fault(&dst.uffd);
    assert_eq!(fault.address, dst.map.page_addr(2));
    reader.assert_blocked();
    let outcome = dst
        .uffd
        .move_pages(dst.page(2), src.page_addr(1), MoveMode::empty());
    assert_eq!(outcome.status, Status::Complete, "{outcome:?}");
    assert_eq!(reader.wait(), bytes[PAGE_LEN + 9]);
}

#[test]
fn move_onto_a_present_page_or_from_a_hole_fails() {
    let (src, dst, bytes) = setup();
    assert_complete(
        dst.uffd
            .move_pages(dst.page(0), src.page_addr(0), MoveMode::empty()),
    );
    // Destination present: EEXIST, nothing moved.
    let outcome = dst
        .uffd
        .move_pages(dst.page(0), src.page_addr(1), MoveMode::empty());
    assert_eq!(
        (outcome.status, outcome.done),
        (Status::Exists, 0),
        "{outcome:?}"
    );
    // Source now a hole: ENOENT...
    let outcome = dst
        .uffd
        .move_pages(dst.page(1), src.page_addr(0), MoveMode::empty());
    assert_eq!(
        (outcome.status, outcome.done),
        (Status::NoMapping, 0),
        "{outcome:?}"
    );
    // ... unless holes are allowed, which skips it.
    let outcome = dst
        .uffd
        .move_pages(dst.pages(1, 2), src.page_addr(0), MoveMode::ALLOW_SRC_HOLES);
    assert_eq!(outcome.status, Status::Complete, "{outcome:?}");
    assert_eq!(
        dst.map.read_bytes(2 * PAGE_LEN, PAGE_LEN),
        bytes[PAGE_LEN..2 * PAGE_LEN]
    );
    assert_eq!(dst.map.read_bytes(0, PAGE_LEN), bytes[..PAGE_LEN]);
    // The skipped page is still missing: a COPY fills it.
    let outcome = dst.uffd.copy(
        dst.page(1),
        &pattern(7, PAGE_LEN),
        uffd_core::CopyMode::empty(),
    );
    assert_eq!(outcome.status, Status::Complete, "{outcome:?}");
}
