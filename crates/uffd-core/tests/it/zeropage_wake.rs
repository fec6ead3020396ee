//! UFFDIO_ZEROPAGE, and UFFDIO_WAKE releasing a thread that a DONTWAKE install left waiting.

use test_support::{PAGE, Region};
use uffd_core::{CopyMode, Features, RegisterMode, Status, ZeropageMode};

use crate::common::{PAGE_LEN, assert_complete, next_fault, pattern};

#[test]
fn zeropage_maps_zeros_over_the_whole_range() {
    let region = Region::new(4, Features::empty(), RegisterMode::MISSING);
    let outcome = region
        .uffd
        .zeropage(region.pages(0, 3), ZeropageMode::empty());
    assert_eq!(outcome.status, Status::Complete, "{outcome:?}");
    assert_eq!((outcome.requested, outcome.done), (3 * PAGE, 3 * PAGE));
    assert!(
        region
            .map
            .read_bytes(0, 3 * PAGE_LEN)
            .iter()
            .all(|&b| b == 0)
    );

    // Zero pages are present: installing over them is EEXIST, with nothing done.
    let outcome = region
        .uffd
        .copy(region.page(1), &pattern(1, PAGE_LEN), CopyMode::empty());
    assert_eq!(
        (outcome.status, outcome.done),
        (Status::Exists, 0),
        "{outcome:?}"
    );
    let outcome = region
        .uffd
        .zeropage(region.pages(2, 2), ZeropageMode::empty());
    assert_eq!(
        (outcome.status, outcome.done),
        (Status::Exists, 0),
        "{outcome:?}"
    );
    // Writing to a zero page is an ordinary copy-on-write, not a userfault.
    region.map.write(PAGE_LEN + 1, 9);
    assert_eq!(region.map.read(PAGE_LEN + 1), 9);
}

#[test]
fn zeropage_resolves_a_fault() {
    let region = Region::new(2, Features::empty(), RegisterMode::MISSING);
    let reader = region.spawn_read(PAGE_LEN + 33);
    let fault = next_fault(&region.uffd);
    assert_eq!(fault.address, region.map.page_addr(1));
    reader.assert_blocked();
    let outcome = region.uffd.zeropage(region.page(1), ZeropageMode::empty());
    assert_eq!(outcome.status, Status::Complete, "{outcome:?}");
    assert_eq!(reader.wait(), 0);
}

#[test]
fn wake_releases_a_thread_left_waiting_by_dontwake() {
    let region = Region::new(2, Features::empty(), RegisterMode::MISSING);
    let reader = region.spawn_read(99);
    let fault = next_fault(&region.uffd);
    assert_eq!(fault.address, region.map.page_addr(0));

    let bytes = pattern(0x6b, PAGE_LEN);
    let outcome = region.uffd.copy(region.page(0), &bytes, CopyMode::DONTWAKE);
    assert_eq!(outcome.status, Status::Complete, "{outcome:?}");
    assert_eq!(outcome.done, PAGE);
    // The page is there, but nobody woke the reader.
    assert_eq!(region.map.read_bytes(0, PAGE_LEN), bytes);
    reader.assert_blocked();

    let outcome = region.uffd.wake(region.page(0));
    assert_eq!(outcome.status, Status::Complete, "{outcome:?}");
    assert_eq!(outcome.done, PAGE);
    assert_eq!(reader.wait(), bytes[99]);
}

#[test]
fn wake_without_an_install_makes_the_thread_fault_again() {
    let region = Region::new(1, Features::empty(), RegisterMode::MISSING);
    let reader = region.spawn_read(0);
    let first = next_fault(&region.uffd);
    // Woken with the page still missing: it retries the access and faults again.
    assert_complete(region.uffd.wake(region.page(0)));
    let again = next_fault(&region.uffd);
    assert_eq!(again.address, first.address);
    reader.assert_blocked();
    assert_complete(region.uffd.zeropage(region.page(0), ZeropageMode::empty()));
    assert_eq!(reader.wait(), 0);
}

#[test]
fn exists_does_not_wake_the_waiter_so_wake_after_exists() {
    // known-failures #17: EEXIST proves the page is there, not that the faulting thread was
    // woken. Here a racing install went in without waking (DONTWAKE stands in for a waker
    // that lost the race); the handler's own COPY then meets EEXIST and wakes nobody.
    let region = Region::new(1, Features::empty(), RegisterMode::MISSING);
    let reader = region.spawn_read(5);
    next_fault(&region.uffd);
    let bytes = pattern(0x17, PAGE_LEN);
    assert_complete(region.uffd.copy(region.page(0), &bytes, CopyMode::DONTWAKE));
    let outcome = region.uffd.copy(region.page(0), &bytes, CopyMode::empty());
    assert_eq!(
        (outcome.status, outcome.done),
        (Status::Exists, 0),
        "{outcome:?}"
    );
    reader.assert_blocked();
    assert_complete(region.uffd.wake(region.page(0)));
    assert_eq!(reader.wait(), bytes[5]);
}
