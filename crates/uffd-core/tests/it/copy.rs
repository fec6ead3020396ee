//! UFFDIO_COPY on the real kernel: full copies, a fault served from another thread, partial
//! progress, EEXIST, and a length mismatch caught before the kernel.

use test_support::{PAGE, Region};
use uffd_core::{CopyMode, Errno, Features, Ioctls, Outcome, RegisterMode, Status};

use crate::common::{PAGE_LEN, assert_complete, next_fault, pattern};

#[test]
fn full_copy_of_several_pages_is_read_back() {
    let region = Region::new(8, Features::empty(), RegisterMode::MISSING);
    assert!(
        region
            .ioctls
            .contains(Ioctls::COPY | Ioctls::ZEROPAGE | Ioctls::WAKE),
        "{:?}",
        region.ioctls
    );
    let bytes = pattern(0xa5, 4 * PAGE_LEN);
    let outcome = region
        .uffd
        .copy(region.pages(2, 4), &bytes, CopyMode::empty());
    assert_eq!(outcome.status, Status::Complete, "{outcome:?}");
    assert_eq!(outcome.requested, 4 * PAGE);
    assert_eq!(outcome.done, 4 * PAGE);
    assert_complete(outcome);
    assert!(!outcome.is_partial());
    assert_eq!(outcome.remaining(), 0);
    assert_eq!(region.map.read_bytes(2 * PAGE_LEN, 4 * PAGE_LEN), bytes);
    // The pages outside the copy are still missing: a read there faults.
    let reader = region.spawn_read(PAGE_LEN);
    let fault = next_fault(&region.uffd);
    assert_eq!(fault.address, region.map.page_addr(1));
    reader.assert_blocked();
    let zeros = vec![0; PAGE_LEN];
    let outcome = region.uffd.copy(region.page(1), &zeros, CopyMode::empty());
    assert_eq!(outcome.status, Status::Complete);
    assert_eq!(reader.wait(), 0);
}

#[test]
fn read_fault_is_served_by_copy_from_another_thread() {
    let region = Region::new(4, Features::empty(), RegisterMode::MISSING);
    let reader = region.spawn_read(3 * PAGE_LEN + 100);

    let fault = next_fault(&region.uffd);
    assert_eq!(
        fault.address,
        region.map.page_addr(3),
        "page-aligned address"
    );
    assert!(
        !fault.is_write() && !fault.is_wp() && !fault.is_minor(),
        "{fault:?}"
    );
    assert_eq!(fault.thread_id, None, "THREAD_ID was not negotiated");
    // The reader waits for the handler.
    reader.assert_blocked();

    let bytes = pattern(0x42, PAGE_LEN);
    let outcome = region.uffd.copy(region.page(3), &bytes, CopyMode::empty());
    assert_eq!(outcome.status, Status::Complete, "{outcome:?}");
    assert_eq!(outcome.done, PAGE);
    assert_eq!(reader.wait(), bytes[100]);
}

#[test]
fn write_fault_is_flagged_and_the_write_lands_after_copy() {
    let region = Region::new(2, Features::THREAD_ID, RegisterMode::MISSING);
    let writer = region.spawn_write(PAGE_LEN + 7, 0xee);
    let fault = next_fault(&region.uffd);
    assert_eq!(fault.address, region.map.page_addr(1));
    assert!(fault.is_write() && !fault.is_wp(), "{fault:?}");
    let tid = fault.thread_id.expect("THREAD_ID negotiated");
    assert_ne!(tid, 0);
    writer.assert_blocked();
    let bytes = pattern(0x01, PAGE_LEN);
    assert_eq!(
        region
            .uffd
            .copy(region.page(1), &bytes, CopyMode::empty())
            .status,
        Status::Complete
    );
    writer.wait();
    let mut expected = bytes;
    expected[7] = 0xee;
    assert_eq!(region.map.read_bytes(PAGE_LEN, PAGE_LEN), expected);
}

#[test]
fn partial_copy_reports_again_with_the_prefix_then_exists() {
    let region = Region::new(4, Features::empty(), RegisterMode::MISSING);
    let old = pattern(0x10, PAGE_LEN);
    assert_complete(region.uffd.copy(region.page(2), &old, CopyMode::empty()));

    // Pages 0 and 1 go in, page 2 is in the way: the kernel reports the prefix as EAGAIN.
    let new = pattern(0x20, 4 * PAGE_LEN);
    let outcome = region
        .uffd
        .copy(region.pages(0, 4), &new, CopyMode::empty());
    assert_eq!(outcome.status, Status::Again, "{outcome:?}");
    assert_eq!(outcome.requested, 4 * PAGE);
    assert_eq!(outcome.done, 2 * PAGE);
    assert!(outcome.is_partial());
    assert_eq!(outcome.remaining(), 2 * PAGE);
    // As a `Result`, the partial copy is an error that keeps the numbers.
    let err = outcome
        .into_result()
        .expect_err("a partial copy is an error");
    assert_eq!(
        (err.requested, err.done, err.status, err.remaining()),
        (4 * PAGE, 2 * PAGE, Status::Again, 2 * PAGE)
    );
    assert_eq!(err.errno(), Some(Errno::AGAIN));
    assert_eq!(Outcome::from(err), outcome);
    let err = uffd_core::Error::from(err);
    assert!(
        err.to_string()
            .starts_with("range operation stopped after 8192 of 16384 bytes: retry later"),
        "{err}"
    );

    // Retrying the rest stops at once on the present page: EEXIST, nothing done (the kernel's
    // -EEXIST in the progress field is not read as a count).
    let done = usize::try_from(outcome.done).unwrap();
    let rest = region.pages(0, 4).skip(outcome.done).unwrap();
    assert_eq!(rest, region.pages(2, 2));
    let outcome = region.uffd.copy(rest, &new[done..], CopyMode::empty());
    assert_eq!(outcome.status, Status::Exists, "{outcome:?}");
    assert_eq!(outcome.done, 0);
    assert!(!outcome.is_partial());

    // Then only the last page is left.
    let outcome = region
        .uffd
        .copy(region.page(3), &new[3 * PAGE_LEN..], CopyMode::empty());
    assert_eq!(outcome.status, Status::Complete, "{outcome:?}");

    assert_eq!(region.map.read_bytes(0, 2 * PAGE_LEN), new[..2 * PAGE_LEN]);
    assert_eq!(
        region.map.read_bytes(2 * PAGE_LEN, PAGE_LEN),
        old,
        "page 2 untouched"
    );
    assert_eq!(
        region.map.read_bytes(3 * PAGE_LEN, PAGE_LEN),
        new[3 * PAGE_LEN..]
    );
}

#[test]
fn copy_onto_a_present_page_is_exists() {
    let region = Region::new(1, Features::empty(), RegisterMode::MISSING);
    let first = pattern(0x33, PAGE_LEN);
    assert_complete(region.uffd.copy(region.page(0), &first, CopyMode::empty()));
    let outcome = region
        .uffd
        .copy(region.page(0), &pattern(0x44, PAGE_LEN), CopyMode::empty());
    assert_eq!(outcome.status, Status::Exists, "{outcome:?}");
    assert_eq!(outcome.status.errno(), Some(uffd_core::Errno::EXIST));
    assert_eq!(outcome.done, 0);
    assert_eq!(
        region.map.read_bytes(0, PAGE_LEN),
        first,
        "the first copy won"
    );
}

#[test]
fn length_mismatch_is_invalid_without_a_kernel_call() {
    let region = Region::new(2, Features::empty(), RegisterMode::MISSING);
    for src in [vec![0x55; 100], vec![0x55; 2 * PAGE_LEN], Vec::new()] {
        let outcome = region.uffd.copy(region.page(0), &src, CopyMode::empty());
        assert_eq!(
            outcome.status,
            Status::Invalid,
            "src of {} bytes",
            src.len()
        );
        assert_eq!((outcome.requested, outcome.done), (PAGE, 0));
    }
    // Nothing was installed: a correct copy still goes in.
    let bytes = pattern(0x66, PAGE_LEN);
    assert_complete(region.uffd.copy(region.page(0), &bytes, CopyMode::empty()));
    assert_eq!(region.map.read_bytes(0, PAGE_LEN), bytes);
}
