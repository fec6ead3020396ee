//! Page sizes, address and offset conversions, and every bad input as a typed error.

use page_tracker::{Error, Geometry, PageRange, PageSize, PageTracker, StateSet};
use proptest::prelude::*;

#[test]
fn page_sizes_are_powers_of_two_of_at_least_4k() {
    assert_eq!(PageSize::new(4096).unwrap(), PageSize::SIZE_4K);
    assert_eq!(PageSize::new(2 << 20).unwrap(), PageSize::SIZE_2M);
    assert_eq!(PageSize::SIZE_2M.bytes(), 2 << 20);
    assert_eq!(PageSize::new(1 << 30).unwrap().shift(), 30);
    for bad in [0, 1, 2048, 4095, 4097, 6144, u64::MAX] {
        assert_eq!(PageSize::new(bad), Err(Error::InvalidPageSize(bad)));
    }
    assert_eq!(PageSize::SIZE_2M.to_string(), "2 MiB");
    assert_eq!(PageSize::SIZE_4K.to_string(), "4 KiB");
}

#[test]
fn geometry_rejects_misaligned_and_overflowing_ranges() {
    let ps = PageSize::SIZE_4K;
    assert!(matches!(
        Geometry::new(0x1001, 4096, ps),
        Err(Error::Misaligned { value: 0x1001, .. })
    ));
    assert!(matches!(
        Geometry::new(0x1000, 100, ps),
        Err(Error::Misaligned { value: 100, .. })
    ));
    assert!(matches!(
        Geometry::new(u64::MAX - 4095, 8192, ps),
        Err(Error::Overflow(_))
    ));
    assert!(matches!(
        Geometry::with_pages(0, u64::MAX / 2, ps),
        Err(Error::Overflow(_))
    ));
    // The very top of the address space is fine as long as the end does not overflow.
    let top = Geometry::new(u64::MAX - 8191, 4096, ps).unwrap();
    assert_eq!(top.end(), u64::MAX - 4095);
    assert_eq!(top.page_containing(u64::MAX - 4096).unwrap(), 0);
    assert!(top.page_containing(u64::MAX).is_err());
    assert!(matches!(
        Geometry::new(u64::MAX - 8191, 8192, ps),
        Err(Error::Overflow(_))
    ));
    // Misaligned for 2 MiB pages though aligned for 4 KiB.
    assert!(Geometry::new(0x1000, 2 << 20, PageSize::SIZE_2M).is_err());
}

#[test]
fn an_empty_tracker_has_no_pages_and_refuses_every_page() {
    let tracker = PageTracker::new(Geometry::new(0, 0, PageSize::SIZE_4K).unwrap()).unwrap();
    assert_eq!(tracker.page_count(), 0);
    assert!(tracker.state(0).is_err());
    assert!(tracker.try_claim(0).is_err());
    assert_eq!(tracker.dirty_ranges(), []);
    assert_eq!(tracker.counts().total(), 0);
    tracker.remove(PageRange::new(0, 0).unwrap()).unwrap();
}

#[test]
fn two_mib_pages_convert_through_their_own_size() {
    let g = Geometry::new(0x4000_0000, 1 << 30, PageSize::SIZE_2M).unwrap();
    assert_eq!(g.page_count(), 512);
    assert_eq!(g.page_containing(0x4000_0000 + (3 << 21) + 17).unwrap(), 3);
    assert_eq!(g.page_addr(3).unwrap(), 0x4000_0000 + (3 << 21));
    assert!(matches!(
        g.page_at(0x4000_1000),
        Err(Error::Misaligned { .. })
    ));
    assert_eq!(
        g.pages_of(0x4000_0000 + (2 << 21), 2 << 21).unwrap(),
        PageRange::new(2, 4).unwrap()
    );
    let tracker = PageTracker::new(g).unwrap();
    tracker.remove(PageRange::new(2, 4).unwrap()).unwrap();
    assert_eq!(tracker.counts().removed, 2);
}

#[test]
fn out_of_range_inputs_are_errors_on_every_method() {
    let tracker =
        PageTracker::new(Geometry::with_pages(0, 100, PageSize::SIZE_4K).unwrap()).unwrap();
    let past = PageRange::new(90, 101).unwrap();
    assert_eq!(
        tracker.remove(past),
        Err(Error::RangeOutOfRange {
            start: 90,
            end: 101,
            page_count: 100
        })
    );
    assert!(tracker.reset_generation(past).is_err());
    assert!(tracker.runs(past, StateSet::ALL).is_err());
    assert!(tracker.counts_in(past).is_err());
    assert!(tracker.claimed_in(past).is_err());
    assert_eq!(
        tracker.state(100),
        Err(Error::PageOutOfRange {
            page: 100,
            page_count: 100
        })
    );
    assert!(tracker.state(u64::MAX).is_err());
    assert!(tracker.mark_written(u64::MAX).is_err());
    assert!(tracker.is_claimed(100).is_err());
    assert!(tracker.try_claim(u64::MAX).is_err());
    assert!(tracker.try_claim_run(u64::MAX, 16, StateSet::ALL).is_err());
    assert_eq!(
        tracker.try_claim_run(5, 3, StateSet::ALL).err(),
        Some(Error::InvalidWindow(3))
    );
    assert_eq!(
        tracker.try_claim_run(5, 0, StateSet::ALL).err(),
        Some(Error::InvalidWindow(0))
    );
    // Nothing changed.
    assert_eq!(tracker.counts().missing, 100);
    assert_eq!(
        tracker.claimed_in(tracker.geometry().all_pages()).unwrap(),
        0
    );
}

#[test]
fn huge_windows_clip_to_the_tracker() {
    let tracker =
        PageTracker::new(Geometry::with_pages(0, 100, PageSize::SIZE_4K).unwrap()).unwrap();
    let claim = tracker
        .try_claim_run(99, 1 << 63, StateSet::MISSING)
        .unwrap()
        .unwrap();
    assert_eq!(claim.pages(), PageRange::new(0, 100).unwrap());
}

#[test]
fn page_ranges_reject_inversion_and_overflow() {
    assert_eq!(
        PageRange::new(5, 4),
        Err(Error::InvertedRange { start: 5, end: 4 })
    );
    assert!(PageRange::with_len(u64::MAX, 1).is_err());
    assert!(PageRange::single(u64::MAX).is_err());
    let r = PageRange::new(3, 7).unwrap();
    assert_eq!((r.len(), r.contains(3), r.contains(7)), (4, true, false));
    assert_eq!(r.iter().collect::<Vec<_>>(), [3, 4, 5, 6]);
}

fn page_size() -> impl Strategy<Value = PageSize> {
    (12u32..=30).prop_map(|shift| PageSize::new(1 << shift).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Conversions agree with plain arithmetic when in range, and are errors (never panics or
    /// wrapped values) otherwise, including at the top of the address space.
    #[test]
    fn conversions_match_arithmetic_or_fail_cleanly(
        ps in page_size(),
        base_page in prop_oneof![0..1_000_000u64, Just(u64::MAX >> 12)],
        pages in 0..100_000u64,
        addr in prop_oneof![any::<u64>(), 0..(1u64 << 40)],
        len in prop_oneof![any::<u64>(), 0..(1u64 << 32)],
    ) {
        let shift = ps.shift();
        let base = base_page.checked_shl(shift).filter(|b| b >> shift == base_page);
        let Some(base) = base else { return Ok(()) };
        let Ok(g) = Geometry::with_pages(base, pages, ps) else {
            // Only an overflowing end is refused.
            prop_assert!(pages.checked_mul(ps.bytes()).and_then(|l| base.checked_add(l)).is_none());
            return Ok(());
        };
        let end = base + (pages << shift);
        prop_assert_eq!(g.end(), end);
        let inside = addr >= base && addr < end;
        match g.page_containing(addr) {
            Ok(page) => {
                prop_assert!(inside);
                prop_assert_eq!(page, (addr - base) >> shift);
                let start = g.page_addr(page).unwrap();
                prop_assert!(start <= addr && addr - start < ps.bytes());
                prop_assert_eq!(g.page_offset(page).unwrap(), start - base);
                prop_assert_eq!(g.page_at_offset(start - base).unwrap(), page);
            }
            Err(e) => {
                prop_assert!(!inside);
                let out_of_range = matches!(e, Error::AddressOutOfRange { .. });
                prop_assert!(out_of_range);
            }
        }
        match g.page_at(addr) {
            Ok(page) => prop_assert_eq!(g.page_addr(page).unwrap(), addr),
            Err(_) => prop_assert!(!inside || !ps.is_aligned(addr)),
        }
        match g.pages_of(addr, len) {
            Ok(range) => {
                prop_assert!(ps.is_aligned(addr) && ps.is_aligned(len));
                prop_assert!(addr >= base && addr + len <= end);
                prop_assert_eq!(range.len(), len >> shift);
                prop_assert_eq!(g.addr_range(range).unwrap(), addr..addr + len);
            }
            Err(_) => prop_assert!(
                !ps.is_aligned(addr)
                    || !ps.is_aligned(len)
                    || addr < base
                    || addr.checked_add(len).is_none_or(|e| e > end)
            ),
        }
        prop_assert!(g.page_addr(pages).is_err());
    }
}
