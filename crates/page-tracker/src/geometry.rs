//! Page size, the tracked address range, page ranges, and checked conversions between
//! addresses, offsets and page indices.

use std::fmt;
use std::ops::Range;

use crate::error::{Error, Result};

/// A page size: a power of two of at least 4096 bytes (4 KiB base pages, 2 MiB huge pages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PageSize {
    shift: u32,
}

impl PageSize {
    /// 4 KiB base pages.
    pub const SIZE_4K: PageSize = PageSize { shift: 12 };
    /// 2 MiB huge pages (hugetlbfs or THP).
    pub const SIZE_2M: PageSize = PageSize { shift: 21 };

    /// A page size of `bytes`, which must be a power of two of at least 4096.
    pub const fn new(bytes: u64) -> Result<PageSize> {
        if bytes.is_power_of_two() && bytes >= 4096 {
            Ok(PageSize {
                shift: bytes.trailing_zeros(),
            })
        } else {
            Err(Error::InvalidPageSize(bytes))
        }
    }

    /// The page size in bytes.
    pub const fn bytes(self) -> u64 {
        1 << self.shift
    }

    /// log2 of the page size.
    pub const fn shift(self) -> u32 {
        self.shift
    }

    /// Whether `value` is a multiple of the page size.
    pub const fn is_aligned(self, value: u64) -> bool {
        value & (self.bytes() - 1) == 0
    }

    fn check_aligned(self, value: u64) -> Result<()> {
        if self.is_aligned(value) {
            Ok(())
        } else {
            Err(Error::Misaligned {
                value,
                page_size: self.bytes(),
            })
        }
    }
}

impl fmt::Display for PageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.shift {
            s if s >= 30 => write!(f, "{} GiB", 1u64 << (s - 30)),
            s if s >= 20 => write!(f, "{} MiB", 1u64 << (s - 20)),
            s => write!(f, "{} KiB", 1u64 << (s - 10)),
        }
    }
}

/// A half-open range of page indices, `start..end`, with `start <= end`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PageRange {
    start: u64,
    end: u64,
}

impl PageRange {
    /// The pages `start..end`; an error if `end < start`.
    pub const fn new(start: u64, end: u64) -> Result<PageRange> {
        if start <= end {
            Ok(PageRange { start, end })
        } else {
            Err(Error::InvertedRange { start, end })
        }
    }

    /// `len` pages from `start`; an error if the end overflows.
    pub const fn with_len(start: u64, len: u64) -> Result<PageRange> {
        match start.checked_add(len) {
            Some(end) => Ok(PageRange { start, end }),
            None => Err(Error::Overflow("page range end")),
        }
    }

    /// The single page `page`; an error only for `u64::MAX`.
    pub const fn single(page: u64) -> Result<PageRange> {
        PageRange::with_len(page, 1)
    }

    /// The pages between `a` and `b`, whichever is larger: infallible, for bounds that are
    /// ordered by construction.
    pub(crate) const fn between(a: u64, b: u64) -> PageRange {
        if a <= b {
            PageRange { start: a, end: b }
        } else {
            PageRange { start: b, end: a }
        }
    }

    /// First page.
    pub const fn start(self) -> u64 {
        self.start
    }

    /// One past the last page.
    pub const fn end(self) -> u64 {
        self.end
    }

    /// Number of pages.
    pub const fn len(self) -> u64 {
        self.end - self.start
    }

    /// Whether the range holds no page.
    pub const fn is_empty(self) -> bool {
        self.start == self.end
    }

    /// Whether `page` lies in the range.
    pub const fn contains(self, page: u64) -> bool {
        self.start <= page && page < self.end
    }

    /// The page indices of the range.
    pub fn iter(self) -> Range<u64> {
        self.start..self.end
    }
}

impl fmt::Debug for PageRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}

impl IntoIterator for PageRange {
    type Item = u64;
    type IntoIter = Range<u64>;
    fn into_iter(self) -> Range<u64> {
        self.iter()
    }
}

/// The tracked address range: a page-aligned base address, a page count and a page size.
///
/// Page `i` covers addresses `base + i * page_size ..base + (i + 1) * page_size`. Every
/// conversion is checked: misaligned or out-of-range inputs are errors, never panics or
/// wrapped values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geometry {
    base: u64,
    page_count: u64,
    page_size: PageSize,
}

impl Geometry {
    /// The range of `len` bytes at `base`. Both must be multiples of `page_size`, and
    /// `base + len` must not overflow.
    pub fn new(base: u64, len: u64, page_size: PageSize) -> Result<Geometry> {
        page_size.check_aligned(base)?;
        page_size.check_aligned(len)?;
        base.checked_add(len)
            .ok_or(Error::Overflow("end of the tracked range"))?;
        Ok(Geometry {
            base,
            page_count: len >> page_size.shift(),
            page_size,
        })
    }

    /// `page_count` pages of `page_size` at `base`.
    pub fn with_pages(base: u64, page_count: u64, page_size: PageSize) -> Result<Geometry> {
        let len = page_count
            .checked_mul(page_size.bytes())
            .ok_or(Error::Overflow("length of the tracked range"))?;
        Geometry::new(base, len, page_size)
    }

    /// First tracked address.
    pub const fn base(&self) -> u64 {
        self.base
    }

    /// One past the last tracked address.
    pub const fn end(&self) -> u64 {
        // Cannot overflow: checked in `new`.
        self.base + self.len()
    }

    /// Tracked length in bytes.
    pub const fn len(&self) -> u64 {
        self.page_count << self.page_size.shift()
    }

    /// Whether no page is tracked.
    pub const fn is_empty(&self) -> bool {
        self.page_count == 0
    }

    /// Number of tracked pages.
    pub const fn page_count(&self) -> u64 {
        self.page_count
    }

    /// The page size.
    pub const fn page_size(&self) -> PageSize {
        self.page_size
    }

    /// Every tracked page.
    pub const fn all_pages(&self) -> PageRange {
        PageRange {
            start: 0,
            end: self.page_count,
        }
    }

    /// Checks that `page` is tracked.
    pub const fn check_page(&self, page: u64) -> Result<()> {
        if page < self.page_count {
            Ok(())
        } else {
            Err(Error::PageOutOfRange {
                page,
                page_count: self.page_count,
            })
        }
    }

    /// Checks that every page of `range` is tracked.
    pub const fn check_range(&self, range: PageRange) -> Result<()> {
        if range.end <= self.page_count {
            Ok(())
        } else {
            Err(Error::RangeOutOfRange {
                start: range.start,
                end: range.end,
                page_count: self.page_count,
            })
        }
    }

    fn check_addr(&self, addr: u64) -> Result<u64> {
        if addr >= self.base && addr < self.end() {
            Ok(addr - self.base)
        } else {
            Err(Error::AddressOutOfRange {
                addr,
                start: self.base,
                end: self.end(),
            })
        }
    }

    /// The page holding `addr` (any address inside the page, as a fault reports it).
    pub fn page_containing(&self, addr: u64) -> Result<u64> {
        Ok(self.check_addr(addr)? >> self.page_size.shift())
    }

    /// The page starting at `addr`, which must be page-aligned.
    pub fn page_at(&self, addr: u64) -> Result<u64> {
        self.page_size.check_aligned(addr)?;
        self.page_containing(addr)
    }

    /// The page starting at byte `offset` from the base, which must be page-aligned.
    pub fn page_at_offset(&self, offset: u64) -> Result<u64> {
        self.page_size.check_aligned(offset)?;
        let addr = self
            .base
            .checked_add(offset)
            .ok_or(Error::Overflow("address of an offset"))?;
        self.page_containing(addr)
    }

    /// The address of the first byte of `page`.
    pub fn page_addr(&self, page: u64) -> Result<u64> {
        Ok(self.base + self.page_offset(page)?)
    }

    /// The offset from the base of the first byte of `page`.
    pub fn page_offset(&self, page: u64) -> Result<u64> {
        self.check_page(page)?;
        Ok(page << self.page_size.shift())
    }

    /// The pages of the `len` bytes at `addr`, e.g. a REMOVE event's range. Both must be
    /// page-aligned and the whole span tracked.
    pub fn pages_of(&self, addr: u64, len: u64) -> Result<PageRange> {
        self.page_size.check_aligned(addr)?;
        self.page_size.check_aligned(len)?;
        let end = addr
            .checked_add(len)
            .ok_or(Error::Overflow("end of an address range"))?;
        if addr < self.base || end > self.end() {
            let bad = if addr < self.base { addr } else { end };
            return Err(Error::AddressOutOfRange {
                addr: bad,
                start: self.base,
                end: self.end(),
            });
        }
        let shift = self.page_size.shift();
        Ok(PageRange {
            start: (addr - self.base) >> shift,
            end: (end - self.base) >> shift,
        })
    }

    /// The addresses covered by `pages`.
    pub fn addr_range(&self, pages: PageRange) -> Result<Range<u64>> {
        let offsets = self.offset_range(pages)?;
        Ok(self.base + offsets.start..self.base + offsets.end)
    }

    /// The byte offsets from the base covered by `pages`.
    pub fn offset_range(&self, pages: PageRange) -> Result<Range<u64>> {
        self.check_range(pages)?;
        let shift = self.page_size.shift();
        Ok(pages.start << shift..pages.end << shift)
    }
}
