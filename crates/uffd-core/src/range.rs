//! Page sizes and checked, page-aligned address ranges.

use crate::error::RangeError;

/// The page size of a registered range: base pages or 2 MiB hugetlbfs pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PageSize {
    /// 4 KiB base pages.
    #[default]
    Base4K,
    /// 2 MiB huge pages (hugetlbfs, `MAP_HUGETLB`).
    Huge2M,
}

impl PageSize {
    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            PageSize::Base4K => 4096,
            PageSize::Huge2M => 2 << 20,
        }
    }

    /// The page size with this many bytes, if it is one of the supported ones.
    pub const fn from_bytes(bytes: u64) -> Option<Self> {
        match bytes {
            4096 => Some(PageSize::Base4K),
            0x20_0000 => Some(PageSize::Huge2M),
            _ => None,
        }
    }

    /// `addr` rounded down to the start of its page.
    pub const fn align_down(self, addr: u64) -> u64 {
        addr & !(self.bytes() - 1)
    }

    /// Whether `value` is a multiple of the page size.
    pub const fn is_aligned(self, value: u64) -> bool {
        value & (self.bytes() - 1) == 0
    }
}

/// A non-empty, page-aligned address range `[start, start + len)` that does not overflow.
///
/// Addresses are `u64` because they usually name memory of another process (the VMM that
/// registered the range), never memory this process dereferences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Range {
    start: u64,
    len: u64,
}

impl Range {
    /// A range of `len` bytes at `start`, both aligned to `page_size`.
    ///
    /// # Errors
    ///
    /// [`RangeError::Empty`] for `len` 0, [`RangeError::Misaligned`] when `start` or `len` is
    /// not a multiple of the page size, [`RangeError::Overflow`] when `start + len` does not
    /// fit in 64 bits.
    pub const fn new(start: u64, len: u64, page_size: PageSize) -> Result<Self, RangeError> {
        if len == 0 {
            return Err(RangeError::Empty { start });
        }
        if !page_size.is_aligned(start) || !page_size.is_aligned(len) {
            return Err(RangeError::Misaligned {
                start,
                len,
                page_size: page_size.bytes(),
            });
        }
        if start.checked_add(len).is_none() {
            return Err(RangeError::Overflow { start, len });
        }
        Ok(Range { start, len })
    }

    /// The one page containing `addr` (the address a fault reports may be unaligned).
    ///
    /// # Errors
    ///
    /// [`RangeError::Overflow`] for the last page of the 64-bit address space.
    pub const fn page_containing(addr: u64, page_size: PageSize) -> Result<Self, RangeError> {
        Range::new(page_size.align_down(addr), page_size.bytes(), page_size)
    }

    /// `pages` pages of `page_size` starting at `start`.
    ///
    /// # Errors
    ///
    /// As [`Range::new`]; [`RangeError::Overflow`] also when `pages` pages overflow 64 bits.
    pub const fn pages(start: u64, pages: u64, page_size: PageSize) -> Result<Self, RangeError> {
        match pages.checked_mul(page_size.bytes()) {
            Some(len) => Range::new(start, len, page_size),
            None => Err(RangeError::Overflow {
                start,
                len: u64::MAX,
            }),
        }
    }

    /// The local mapping `bytes` as a range (for memory this process registered itself).
    ///
    /// # Errors
    ///
    /// As [`Range::new`]: the slice must be whole, non-empty pages.
    pub fn of_slice(bytes: &[u8], page_size: PageSize) -> Result<Self, RangeError> {
        Range::new(bytes.as_ptr() as u64, bytes.len() as u64, page_size)
    }

    /// First address.
    pub const fn start(&self) -> u64 {
        self.start
    }

    /// Length in bytes.
    pub const fn len(&self) -> u64 {
        self.len
    }

    /// Always false: a `Range` is never empty. Present for API symmetry with slices.
    pub const fn is_empty(&self) -> bool {
        false
    }

    /// One past the last address.
    pub const fn end(&self) -> u64 {
        self.start + self.len
    }

    /// Whether `addr` lies inside the range.
    pub const fn contains(&self, addr: u64) -> bool {
        addr >= self.start && addr - self.start < self.len
    }

    /// The part of the range after its first `bytes` bytes, if any is left.
    ///
    /// Used to resume an operation after partial progress; `bytes` must keep the alignment the
    /// kernel reports progress in (whole pages), which it always does.
    pub const fn skip(&self, bytes: u64) -> Option<Self> {
        if bytes >= self.len {
            return None;
        }
        Some(Range {
            start: self.start + bytes,
            len: self.len - bytes,
        })
    }

    /// The overlap of two ranges, if they overlap.
    pub fn intersect(&self, other: &Range) -> Option<Self> {
        let start = self.start.max(other.start);
        let end = self.end().min(other.end());
        // Lazily: for disjoint ranges `end - start` would underflow.
        (start < end).then(|| Range {
            start,
            len: end - start,
        })
    }

    pub(crate) fn raw(&self) -> uffd_sys::uffdio_range {
        uffd_sys::uffdio_range {
            start: self.start,
            len: self.len,
        }
    }
}

impl core::fmt::Display for Range {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "[{:#x}, {:#x})", self.start, self.end())
    }
}
