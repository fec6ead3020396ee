//! hugetlbfs 2 MiB pages: COPY of whole huge pages (including serving a fault), 4 KiB-only
//! ranges refused, ZEROPAGE not supported. Skipped, with a reason, without free hugepages.

use test_support::{HUGE, Mapping, PAGE, Region, free_hugepages, hugepages_or_skip};
use uffd_core::{
    CopyMode, Features, Ioctls, PageSize, Range, RangeError, RegisterMode, Status, ZeropageMode,
};

use crate::common::{HUGE_LEN, PAGE_LEN, next_fault, pattern};

const HUGE_PAGES: u64 = 2;

#[test]
fn hugetlb_copy_of_2mib_pages() {
    if !hugepages_or_skip("hugetlb::hugetlb_copy_of_2mib_pages", HUGE_PAGES) {
        return;
    }
    let map = match Mapping::hugetlb(HUGE_PAGES as usize) {
        Ok(map) => map,
        Err(e) => panic!(
            "MAP_HUGETLB of {HUGE_PAGES} pages with {} free: {e}",
            free_hugepages()
        ),
    };
    let region = Region::register(map, Features::MISSING_HUGETLBFS, RegisterMode::MISSING);
    assert!(
        region.ioctls.contains(Ioctls::COPY | Ioctls::WAKE),
        "{:?}",
        region.ioctls
    );
    assert!(
        !region.ioctls.contains(Ioctls::ZEROPAGE),
        "hugetlbfs has no ZEROPAGE: {:?}",
        region.ioctls
    );
    let base = region.map.addr();
    let huge = |i: u64| Range::new(base + i * HUGE, HUGE, PageSize::Huge2M).unwrap();

    // A 4 KiB-aligned start is refused for huge pages before the kernel sees it...
    assert!(matches!(
        Range::new(base + PAGE, HUGE, PageSize::Huge2M),
        Err(RangeError::Misaligned { page_size, .. }) if page_size == HUGE
    ));
    // ... and a 4 KiB range reaching the kernel is EINVAL there.
    let small = Range::new(base + HUGE, PAGE, PageSize::Base4K).unwrap();
    let outcome = region
        .uffd
        .copy(small, &pattern(1, PAGE_LEN), CopyMode::empty());
    assert_eq!(
        (outcome.status, outcome.done),
        (Status::Invalid, 0),
        "{outcome:?}"
    );
    // ZEROPAGE is not supported on hugetlbfs.
    let outcome = region.uffd.zeropage(huge(1), ZeropageMode::empty());
    assert_eq!(
        (outcome.status, outcome.done),
        (Status::Invalid, 0),
        "{outcome:?}"
    );

    // A whole 2 MiB page goes in.
    let bytes = pattern(0x6e, HUGE_LEN);
    let outcome = region.uffd.copy(huge(0), &bytes, CopyMode::empty());
    assert_eq!(outcome.status, Status::Complete, "{outcome:?}");
    assert_eq!((outcome.requested, outcome.done), (HUGE, HUGE));
    assert!(
        region.map.read_bytes(0, HUGE_LEN) == bytes,
        "2 MiB read back differ"
    );

    // A fault anywhere in the second huge page is served by copying the whole page.
    let offset = HUGE_LEN + 5 * PAGE_LEN + 123;
    let reader = region.spawn_read(offset);
    let fault = next_fault(&region.uffd);
    assert!(huge(1).contains(fault.address), "{:#x}", fault.address);
    let page = Range::page_containing(fault.address, PageSize::Huge2M).unwrap();
    assert_eq!(page, huge(1));
    reader.assert_blocked();
    let second = pattern(0x7e, HUGE_LEN);
    let outcome = region.uffd.copy(page, &second, CopyMode::empty());
    assert_eq!(outcome.status, Status::Complete, "{outcome:?}");
    assert_eq!(reader.wait(), second[offset - HUGE_LEN]);

    // Present now: EEXIST.
    let outcome = region.uffd.copy(huge(1), &second, CopyMode::empty());
    assert_eq!(
        (outcome.status, outcome.done),
        (Status::Exists, 0),
        "{outcome:?}"
    );
}
