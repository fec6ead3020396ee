//! UFFDIO_CONTINUE: a MINOR fault on a second mapping of a filled memfd is resolved by mapping
//! the page cache's page, whose bytes the faulting thread then reads.

use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::MemfdFlags;
use test_support::{Mapping, PAGE, Region};
use uffd_core::{ContinueMode, Errno, Features, Ioctls, RegisterMode, Status};

use crate::common::{PAGE_LEN, assert_no_events, next_fault, pattern};

const PAGES: usize = 4;

/// A memfd of `PAGES` pages, all but the last filled through a first mapping (kept), and a
/// second mapping registered MINOR.
fn setup() -> (OwnedFd, Mapping, Region, Vec<u8>) {
    let memfd = rustix::fs::memfd_create("uffd-minor", MemfdFlags::CLOEXEC).expect("memfd");
    rustix::fs::ftruncate(&memfd, (PAGES * PAGE_LEN) as u64).expect("ftruncate");
    let writer = Mapping::shared(memfd.as_fd(), PAGES * PAGE_LEN);
    let bytes = pattern(0x8c, (PAGES - 1) * PAGE_LEN);
    writer.write_bytes(0, &bytes);
    let region = Region::register(
        Mapping::shared(memfd.as_fd(), PAGES * PAGE_LEN),
        Features::MINOR_SHMEM,
        RegisterMode::MINOR,
    );
    assert!(
        region.ioctls.contains(Ioctls::CONTINUE),
        "{:?}",
        region.ioctls
    );
    (memfd, writer, region, bytes)
}

#[test]
fn continue_resolves_a_minor_fault_with_the_memfds_bytes() {
    let (_memfd, writer, region, bytes) = setup();
    let reader = region.spawn_read(2 * PAGE_LEN + 17);
    let fault = next_fault(&region.uffd);
    assert_eq!(fault.address, region.map.page_addr(2));
    assert!(fault.is_minor(), "{fault:?}");
    assert!(!fault.is_write() && !fault.is_wp(), "{fault:?}");
    reader.assert_blocked();

    let outcome = region
        .uffd
        .continue_minor(region.page(2), ContinueMode::empty());
    assert_eq!(outcome.status, Status::Complete, "{outcome:?}");
    assert_eq!(outcome.done, PAGE);
    assert_eq!(reader.wait(), bytes[2 * PAGE_LEN + 17]);
    assert_eq!(
        region.map.read_bytes(2 * PAGE_LEN, PAGE_LEN),
        bytes[2 * PAGE_LEN..3 * PAGE_LEN]
    );

    // Mapped now: a second CONTINUE finds it there.
    let outcome = region
        .uffd
        .continue_minor(region.page(2), ContinueMode::empty());
    assert_eq!(
        (outcome.status, outcome.done),
        (Status::Exists, 0),
        "{outcome:?}"
    );

    // Both mappings share the page: a write through the registered one shows in the other.
    region.map.write(2 * PAGE_LEN + 1, 0x99);
    assert_eq!(writer.read(2 * PAGE_LEN + 1), 0x99);
}

#[test]
fn continue_maps_several_pages_ahead_of_faults() {
    let (_memfd, _writer, region, bytes) = setup();
    let outcome = region
        .uffd
        .continue_minor(region.pages(0, 2), ContinueMode::empty());
    assert_eq!(outcome.status, Status::Complete, "{outcome:?}");
    assert_eq!(outcome.done, 2 * PAGE);
    // Present now, so reading them raises no fault.
    assert_eq!(
        region.map.read_bytes(0, 2 * PAGE_LEN),
        bytes[..2 * PAGE_LEN]
    );
    assert_no_events(&region.uffd);
}

#[test]
fn continue_on_a_hole_in_the_page_cache_fails() {
    let (_memfd, _writer, region, _bytes) = setup();
    // The last page was never written: no page-cache page to map.
    let outcome = region
        .uffd
        .continue_minor(region.page(PAGES - 1), ContinueMode::empty());
    assert_eq!(outcome.status, Status::Other(Errno::FAULT), "{outcome:?}");
    assert_eq!(outcome.done, 0);
}
