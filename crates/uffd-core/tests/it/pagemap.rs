//! WP_ASYNC + PAGEMAP_SCAN: the kernel resolves write-protect faults itself and the scan
//! reports exactly the pages written, coalesced, re-protecting them atomically when asked.

use test_support::{Mapping, Region};
use uffd_core::{
    Error, Features, PageSize, PagemapScanner, Range, RegisterMode, Status, WriteProtectMode,
};

use crate::common::{PAGE_LEN, assert_complete, assert_no_events, pattern};

const PAGES: usize = 16;

/// A populated mapping registered WP on a WP_ASYNC uffd and write-protected as a whole.
fn armed_region() -> Region {
    let map = Mapping::anon(PAGES);
    map.write_bytes(0, &pattern(0x70, PAGES * PAGE_LEN));
    let region = Region::register(
        map,
        Features::WP_ASYNC | Features::PAGEFAULT_FLAG_WP,
        RegisterMode::WP,
    );
    let outcome = region
        .uffd
        .writeprotect(region.map.range(), WriteProtectMode::WP);
    assert_eq!(outcome.status, Status::Complete, "{outcome:?}");
    region
}

fn scan(scanner: &mut PagemapScanner, region: &Region, reprotect: bool) -> Vec<Range> {
    let mut out = Vec::new();
    scanner
        .written(region.map.range(), PageSize::Base4K, reprotect, &mut out)
        .unwrap_or_else(|e| panic!("PAGEMAP_SCAN: {e}"));
    out
}

#[test]
fn scan_reports_exactly_the_written_pages() {
    let region = armed_region();
    let mut scanner = PagemapScanner::open(None).expect("open /proc/self/pagemap");
    assert_eq!(
        scan(&mut scanner, &region, false),
        [],
        "nothing written yet"
    );

    // Writes never block: the kernel resolves the WP faults and queues nothing.
    for page in [1, 2, 3, 7, 12, 15] {
        region.map.write(page * PAGE_LEN + 5, 0xee);
    }
    assert_no_events(&region.uffd);
    let expected = [
        region.pages(1, 3),
        region.pages(7, 1),
        region.pages(12, 1),
        region.pages(15, 1),
    ];

    // Without re-protecting, a scan only looks: the next scan sees the same.
    assert_eq!(scan(&mut scanner, &region, false), expected);
    assert_eq!(scan(&mut scanner, &region, false), expected);

    // With re-protecting, the written set is reported once...
    assert_eq!(scan(&mut scanner, &region, true), expected);
    assert_eq!(scan(&mut scanner, &region, true), [], "re-protected");
    // ... and a new write is reported by the next scan.
    region.map.write(5 * PAGE_LEN, 1);
    region.map.write(6 * PAGE_LEN + 4095, 1);
    assert_eq!(scan(&mut scanner, &region, true), [region.pages(5, 2)]);
    assert_eq!(scan(&mut scanner, &region, true), []);

    // Every write landed.
    for page in [1, 2, 3, 7, 12, 15] {
        assert_eq!(region.map.read(page * PAGE_LEN + 5), 0xee);
    }
    assert_eq!(region.map.read(6 * PAGE_LEN + 4095), 1);
}

#[test]
fn scan_appends_and_covers_only_the_asked_range() {
    let region = armed_region();
    let mut scanner = PagemapScanner::open(Some(std::process::id())).expect("open by pid");
    for page in [0, 4, 5, 6, 15] {
        region.map.write(page * PAGE_LEN, 2);
    }
    let mut out = vec![region.pages(0, 1)]; // kept: the scanner appends
    scanner
        .written(region.pages(4, 8), PageSize::Base4K, true, &mut out)
        .expect("scan");
    assert_eq!(out, [region.pages(0, 1), region.pages(4, 3)]);
    // Pages outside the scanned range were neither reported nor re-protected.
    let mut out = Vec::new();
    scanner
        .written(region.map.range(), PageSize::Base4K, false, &mut out)
        .expect("scan");
    assert_eq!(out, [region.pages(0, 1), region.pages(15, 1)]);
}

#[test]
fn reprotect_needs_a_wp_async_registration() {
    // A plain mapping has no WP_ASYNC registration: PM_SCAN_CHECK_WPASYNC makes the kernel
    // refuse to re-protect it (EPERM).
    let map = Mapping::anon(2);
    map.write(0, 1);
    let mut scanner = PagemapScanner::open(None).expect("open");
    let mut out = Vec::new();
    match scanner.written(map.range(), PageSize::Base4K, true, &mut out) {
        Err(Error::PagemapScan { range, errno }) => {
            assert_eq!(range, map.range());
            assert_eq!(errno, uffd_core::Errno::PERM);
        }
        other => panic!("expected a PAGEMAP_SCAN error, got {other:?}"),
    }
}

#[test]
fn scan_resumes_when_the_region_buffer_fills() {
    // Every other page written: more separate runs than the scanner's 512-region buffer.
    const MANY: usize = 1300;
    let map = Mapping::anon(MANY);
    map.write_bytes(0, &vec![1; MANY * PAGE_LEN]);
    let region = Region::register(
        map,
        Features::WP_ASYNC | Features::PAGEFAULT_FLAG_WP,
        RegisterMode::WP,
    );
    assert_complete(
        region
            .uffd
            .writeprotect(region.map.range(), WriteProtectMode::WP),
    );
    for page in (0..MANY).step_by(2) {
        region.map.write(page * PAGE_LEN, 2);
    }
    let expected: Vec<Range> = (0..MANY).step_by(2).map(|p| region.pages(p, 1)).collect();
    let mut scanner = PagemapScanner::open(None).expect("open");
    assert_eq!(scan(&mut scanner, &region, true), expected);
    assert_eq!(scan(&mut scanner, &region, true), []);
    // A contiguous run crossing no boundary of ours comes back as one range.
    for page in 100..700 {
        region.map.write(page * PAGE_LEN, 3);
    }
    assert_eq!(scan(&mut scanner, &region, false), [region.pages(100, 600)]);
}
