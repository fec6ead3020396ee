//! The `PAGEMAP_SCAN` ioctl of `include/uapi/linux/fs.h` (Linux 6.7+), as of Linux 6.18.

use core::mem::{offset_of, size_of};

use crate::ioc::iowr;

/// `_IOWR('f', 16, struct pm_scan_arg)`, issued on `/proc/<pid>/pagemap`.
pub const PAGEMAP_SCAN: u32 = 0xC060_6610;

const _: () = assert!(PAGEMAP_SCAN == iowr(b'f', 16, size_of::<pm_scan_arg>()));

// Page categories.
/// Write protection may be armed on the page (uffd async WP registered).
pub const PAGE_IS_WPALLOWED: u64 = 1 << 0;
/// Written since write protection was last armed.
pub const PAGE_IS_WRITTEN: u64 = 1 << 1;
/// File-backed page.
pub const PAGE_IS_FILE: u64 = 1 << 2;
/// Present in memory.
pub const PAGE_IS_PRESENT: u64 = 1 << 3;
/// Swapped out.
pub const PAGE_IS_SWAPPED: u64 = 1 << 4;
/// Maps the zero page (PFN zero).
pub const PAGE_IS_PFNZERO: u64 = 1 << 5;
/// Mapped by a huge page.
pub const PAGE_IS_HUGE: u64 = 1 << 6;
/// Soft-dirty bit set.
pub const PAGE_IS_SOFT_DIRTY: u64 = 1 << 7;
/// A guard region (`MADV_GUARD_INSTALL`).
pub const PAGE_IS_GUARD: u64 = 1 << 8;

// Flags.
/// Write-protect the pages that match, atomically with reporting them.
pub const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
/// Fail unless the whole range is registered with async WP.
pub const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;
/// Every `PM_SCAN_*` flag.
pub const PM_SCAN_FLAGS: u64 = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC;

/// One run of pages sharing the same categories, written by the kernel into `pm_scan_arg.vec`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct page_region {
    /// Start address.
    pub start: u64,
    /// End address (exclusive).
    pub end: u64,
    /// `PAGE_IS_*` bits, filtered by `return_mask`.
    pub categories: u64,
}

/// Argument of `PAGEMAP_SCAN`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct pm_scan_arg {
    /// `size_of::<pm_scan_arg>()`.
    pub size: u64,
    /// `PM_SCAN_*` flags.
    pub flags: u64,
    /// Start address of the scan.
    pub start: u64,
    /// End address of the scan (exclusive).
    pub end: u64,
    /// Out: where the walk stopped (equals `end` when the scan is complete).
    pub walk_end: u64,
    /// Address of a `page_region` array.
    pub vec: u64,
    /// Length of that array.
    pub vec_len: u64,
    /// Stop after this many matching pages (0: no limit).
    pub max_pages: u64,
    /// Categories whose sense is inverted before matching.
    pub category_inverted: u64,
    /// Categories that must all be set (after inversion).
    pub category_mask: u64,
    /// At least one of these must be set (after inversion); 0 means no constraint.
    pub category_anyof_mask: u64,
    /// Categories reported in `page_region.categories`.
    pub return_mask: u64,
}

const _: () = {
    assert!(size_of::<page_region>() == 24);
    assert!(size_of::<pm_scan_arg>() == 96);
    assert!(offset_of!(pm_scan_arg, walk_end) == 32);
    assert!(offset_of!(pm_scan_arg, return_mask) == 88);
};
