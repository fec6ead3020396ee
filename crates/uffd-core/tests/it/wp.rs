//! Write protection: COPY|MODE_WP installs protected and a write raises a WP fault;
//! MODE_WP without WP registered is EINVAL; WRITEPROTECT on an empty PTE protects nothing
//! without WP_UNPOPULATED.

use test_support::{PAGE, Region};
use uffd_core::{CopyMode, Features, Ioctls, RegisterMode, Status, WriteProtectMode};

use crate::common::{PAGE_LEN, assert_complete, assert_no_events, next_fault, pattern};

#[test]
fn write_to_a_page_installed_with_mode_wp_raises_a_wp_fault() {
    let region = Region::new(
        2,
        Features::PAGEFAULT_FLAG_WP,
        RegisterMode::MISSING | RegisterMode::WP,
    );
    assert!(region.ioctls.contains(Ioctls::WRITEPROTECT | Ioctls::COPY));
    let bytes = pattern(0x2d, PAGE_LEN);
    let outcome = region.uffd.copy(region.page(1), &bytes, CopyMode::WP);
    assert_eq!(outcome.status, Status::Complete, "{outcome:?}");
    // Reading a protected page is fine.
    assert_eq!(region.map.read_bytes(PAGE_LEN, PAGE_LEN), bytes);

    let writer = region.spawn_write(PAGE_LEN + 10, 0xfe);
    let fault = next_fault(&region.uffd);
    assert_eq!(fault.address, region.map.page_addr(1));
    assert!(fault.is_wp(), "{fault:?}");
    assert!(fault.is_write(), "{fault:?}");
    assert!(!fault.is_minor(), "{fault:?}");
    writer.assert_blocked();
    assert_eq!(
        region.map.read(PAGE_LEN + 10),
        bytes[10],
        "the write has not landed"
    );

    // Unprotecting wakes the writer; its write lands.
    let outcome = region
        .uffd
        .writeprotect(region.page(1), WriteProtectMode::empty());
    assert_eq!(outcome.status, Status::Complete, "{outcome:?}");
    assert_eq!(outcome.done, PAGE);
    writer.wait();
    assert_eq!(region.map.read(PAGE_LEN + 10), 0xfe);
    // Unprotected now: a second write does not fault.
    region.map.write(PAGE_LEN + 11, 0xfd);
    assert_no_events(&region.uffd);
}

#[test]
fn writeprotect_dontwake_leaves_the_writer_waiting() {
    let region = Region::new(
        1,
        Features::PAGEFAULT_FLAG_WP,
        RegisterMode::MISSING | RegisterMode::WP,
    );
    let bytes = pattern(0x2e, PAGE_LEN);
    assert_complete(region.uffd.copy(region.page(0), &bytes, CopyMode::WP));
    let writer = region.spawn_write(3, 0x01);
    assert!(next_fault(&region.uffd).is_wp());
    let outcome = region
        .uffd
        .writeprotect(region.page(0), WriteProtectMode::DONTWAKE);
    assert_eq!(outcome.status, Status::Complete, "{outcome:?}");
    writer.assert_blocked();
    assert_complete(region.uffd.wake(region.page(0)));
    writer.wait();
    assert_eq!(region.map.read(3), 0x01);
}

#[test]
fn copy_mode_wp_on_a_missing_only_range_is_invalid() {
    // known-failures #13: EINVAL on the first fault.
    let region = Region::new(1, Features::PAGEFAULT_FLAG_WP, RegisterMode::MISSING);
    let bytes = pattern(0x3d, PAGE_LEN);
    let outcome = region.uffd.copy(region.page(0), &bytes, CopyMode::WP);
    assert_eq!(outcome.status, Status::Invalid, "{outcome:?}");
    assert_eq!(outcome.done, 0);
    // Nothing was installed: a plain copy still goes in.
    let outcome = region.uffd.copy(region.page(0), &bytes, CopyMode::empty());
    assert_eq!(outcome.status, Status::Complete, "{outcome:?}");
}

#[test]
fn writeprotect_on_an_empty_pte_protects_nothing_without_wp_unpopulated() {
    // known-failures #15: arming WP before the page exists is lost.
    let region = Region::new(
        1,
        Features::PAGEFAULT_FLAG_WP,
        RegisterMode::MISSING | RegisterMode::WP,
    );
    assert!(!region.uffd.features().contains(Features::WP_UNPOPULATED));
    let outcome = region
        .uffd
        .writeprotect(region.page(0), WriteProtectMode::WP);
    assert_eq!(
        outcome.status,
        Status::Complete,
        "the kernel accepts it silently"
    );

    // A plain COPY later installs the page writable: the write goes through, no WP fault.
    let bytes = pattern(0x4d, PAGE_LEN);
    assert_complete(region.uffd.copy(region.page(0), &bytes, CopyMode::empty()));
    region.spawn_write(8, 0xab).wait();
    assert_eq!(region.map.read(8), 0xab);
    assert_no_events(&region.uffd);
}

#[test]
fn writeprotect_on_an_empty_pte_holds_with_wp_unpopulated() {
    // The contrast: with WP_UNPOPULATED the empty PTE keeps a marker, so the kernel's own fill
    // of the page (WP registered, MISSING not) comes up protected and the write faults.
    let region = Region::new(
        1,
        Features::PAGEFAULT_FLAG_WP | Features::WP_UNPOPULATED,
        RegisterMode::WP,
    );
    let outcome = region
        .uffd
        .writeprotect(region.page(0), WriteProtectMode::WP);
    assert_eq!(outcome.status, Status::Complete, "{outcome:?}");
    let writer = region.spawn_write(8, 0xac);
    let fault = next_fault(&region.uffd);
    assert_eq!(fault.address, region.map.page_addr(0));
    assert!(fault.is_write() && fault.is_wp(), "{fault:?}");
    writer.assert_blocked();
    assert_complete(
        region
            .uffd
            .writeprotect(region.page(0), WriteProtectMode::empty()),
    );
    writer.wait();
    let mut expected = vec![0; PAGE_LEN];
    expected[8] = 0xac;
    assert_eq!(region.map.read_bytes(0, PAGE_LEN), expected);
}

#[test]
fn without_wp_unpopulated_a_wp_only_empty_page_fills_writable() {
    let region = Region::new(1, Features::PAGEFAULT_FLAG_WP, RegisterMode::WP);
    assert_complete(
        region
            .uffd
            .writeprotect(region.page(0), WriteProtectMode::WP),
    );
    region.spawn_write(8, 0xad).wait();
    assert_eq!(region.map.read(8), 0xad);
    assert_no_events(&region.uffd);
}
