//! `Range` and `PageSize`: misaligned, empty and overflowing ranges are refused with an error
//! that names the values; 4 KiB and 2 MiB alignment rules.

use test_support::HUGE;
use uffd_core::{Error, PageSize, Range, RangeError};

#[test]
fn misaligned_start_is_refused_with_the_values() {
    let err = Range::new(0x7f00_1001, 0x1000, PageSize::Base4K).unwrap_err();
    assert_eq!(
        err,
        RangeError::Misaligned {
            start: 0x7f00_1001,
            len: 0x1000,
            page_size: 4096
        }
    );
    let text = err.to_string();
    for needle in ["0x7f001001", "0x1000", "4096"] {
        assert!(text.contains(needle), "{needle} missing from: {text}");
    }
}

#[test]
fn misaligned_length_is_refused_with_the_values() {
    let err = Range::new(0x7f00_0000, 100, PageSize::Base4K).unwrap_err();
    assert_eq!(
        err,
        RangeError::Misaligned {
            start: 0x7f00_0000,
            len: 100,
            page_size: 4096
        }
    );
    let text = err.to_string();
    assert!(text.contains("0x64"), "{text}");
    assert!(text.contains("0x7f000000"), "{text}");
}

#[test]
fn empty_range_is_refused() {
    let err = Range::new(0x5000, 0, PageSize::Base4K).unwrap_err();
    assert_eq!(err, RangeError::Empty { start: 0x5000 });
    assert!(err.to_string().contains("empty"), "{err}");
    assert!(err.to_string().contains("0x5000"), "{err}");
    assert_eq!(
        Range::pages(0x5000, 0, PageSize::Base4K),
        Err(RangeError::Empty { start: 0x5000 })
    );
}

#[test]
fn overflowing_range_is_refused() {
    let top = u64::MAX - 0xfff; // the last 4 KiB page
    let err = Range::new(top, 0x2000, PageSize::Base4K).unwrap_err();
    assert_eq!(
        err,
        RangeError::Overflow {
            start: top,
            len: 0x2000
        }
    );
    let text = err.to_string();
    assert!(text.contains("overflow"), "{text}");
    assert!(text.contains("0xfffffffffffff000"), "{text}");
    assert!(text.contains("0x2000"), "{text}");
    // Ending exactly at 2^64 cannot be represented either.
    assert!(matches!(
        Range::new(top, 0x1000, PageSize::Base4K),
        Err(RangeError::Overflow { .. })
    ));
    // A page count whose byte length overflows.
    assert!(matches!(
        Range::pages(0, u64::MAX, PageSize::Base4K),
        Err(RangeError::Overflow { .. })
    ));
    // The largest range that fits is fine.
    let r = Range::new(0, top, PageSize::Base4K).unwrap();
    assert_eq!(r.end(), top);
}

#[test]
fn huge_ranges_need_2mib_alignment() {
    let ok = Range::new(HUGE * 3, HUGE * 2, PageSize::Huge2M).unwrap();
    assert_eq!(
        (ok.start(), ok.len(), ok.end()),
        (HUGE * 3, HUGE * 2, HUGE * 5)
    );

    // 4 KiB-aligned is not enough.
    let err = Range::new(HUGE + 0x1000, HUGE, PageSize::Huge2M).unwrap_err();
    assert_eq!(
        err,
        RangeError::Misaligned {
            start: HUGE + 0x1000,
            len: HUGE,
            page_size: HUGE
        }
    );
    assert!(err.to_string().contains("2097152"), "{err}");
    assert!(matches!(
        Range::new(HUGE, 0x1000, PageSize::Huge2M),
        Err(RangeError::Misaligned { .. })
    ));
    // ... though it is for base pages.
    Range::new(HUGE + 0x1000, 0x1000, PageSize::Base4K).unwrap();

    assert_eq!(
        Range::pages(HUGE, 3, PageSize::Huge2M).unwrap().len(),
        3 * HUGE
    );
}

#[test]
fn page_sizes_and_page_containing() {
    assert_eq!(PageSize::Base4K.bytes(), 4096);
    assert_eq!(PageSize::Huge2M.bytes(), HUGE);
    assert_eq!(PageSize::from_bytes(4096), Some(PageSize::Base4K));
    assert_eq!(PageSize::from_bytes(HUGE), Some(PageSize::Huge2M));
    assert_eq!(PageSize::from_bytes(8192), None);
    assert_eq!(PageSize::Huge2M.align_down(HUGE + 0x1234), HUGE);
    assert!(!PageSize::Huge2M.is_aligned(0x1000));

    let page = Range::page_containing(0x20_1234, PageSize::Base4K).unwrap();
    assert_eq!((page.start(), page.len()), (0x20_1000, 0x1000));
    let huge = Range::page_containing(0x20_1234, PageSize::Huge2M).unwrap();
    assert_eq!((huge.start(), huge.len()), (0x20_0000, HUGE));
}

#[test]
fn range_arithmetic() {
    let r = Range::pages(0x10_0000, 4, PageSize::Base4K).unwrap();
    assert!(r.contains(0x10_0000));
    assert!(r.contains(0x10_3fff));
    assert!(!r.contains(0x10_4000));
    assert!(!r.contains(0x0f_ffff));
    assert!(!r.is_empty());

    let rest = r.skip(0x1000).unwrap();
    assert_eq!((rest.start(), rest.len()), (0x10_1000, 0x3000));
    assert_eq!(r.skip(0x4000), None);

    let other = Range::pages(0x10_3000, 4, PageSize::Base4K).unwrap();
    let both = r.intersect(&other).unwrap();
    assert_eq!((both.start(), both.len()), (0x10_3000, 0x1000));
    let apart = Range::pages(0x20_0000, 1, PageSize::Base4K).unwrap();
    assert_eq!(r.intersect(&apart), None);
    assert_eq!(apart.intersect(&r), None);
    let touching = Range::pages(0x10_4000, 1, PageSize::Base4K).unwrap();
    assert_eq!(r.intersect(&touching), None);

    assert_eq!(r.to_string(), "[0x100000, 0x104000)");
}

#[test]
fn range_errors_convert_into_the_crate_error() {
    let err: Error = Range::new(0x1001, 0x1000, PageSize::Base4K)
        .unwrap_err()
        .into();
    assert!(matches!(err, Error::Range(RangeError::Misaligned { .. })));
    assert!(err.to_string().contains("0x1001"), "{err}");
}
