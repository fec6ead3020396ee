//! Resolving logical offsets: single lookups for the fault path and read plans for ranges.

use uuid::Uuid;

use crate::error::{Error, Result};
use crate::model::{Header, Mapping};

/// Where the byte at a logical offset lives, and how far that run continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// The build whose data file holds the byte; nil means it reads as zero.
    pub build_id: Uuid,
    /// Offset of the byte in that build's data file (0 for zero runs).
    pub storage_offset: u64,
    /// Bytes from the looked-up offset to the end of its entry (at least 1).
    pub remaining: u64,
}

impl Location {
    /// True when the byte reads as zero (no I/O needed).
    pub fn is_zero(&self) -> bool {
        self.build_id.is_nil()
    }
}

/// A bucket index over a full mapping, so a lookup touches two cache lines instead of the
/// ~20 a plain binary search over a million entries does.
///
/// The image is cut into `2^shift`-byte buckets, at most two per entry; `first[k]` is the entry
/// containing bucket `k`'s first byte, so the entry containing any offset of bucket `k` lies in
/// `first[k]..=first[k + 1]`: usually one or two entries, searched by binary search when more.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LookupIndex {
    shift: u32,
    /// One per bucket, plus the last entry's index as a sentinel.
    first: Vec<u32>,
}

impl LookupIndex {
    /// Builds the index of a validated full mapping. Linear in entries plus buckets.
    pub(crate) fn build(block_size: u64, size: u64, entries: &[Mapping]) -> Self {
        if entries.is_empty() {
            return LookupIndex::default();
        }
        // Smallest power-of-two bucket (at least a block) giving <= 2 buckets per entry.
        let mut shift = block_size.trailing_zeros();
        while (size >> shift) > 2 * entries.len() as u64 {
            shift += 1;
        }
        let buckets = size.div_ceil(1 << shift) as usize;
        let mut first = Vec::with_capacity(buckets + 1);
        let mut entry = 0usize;
        for bucket in 0..buckets as u64 {
            let start = bucket << shift;
            while entries[entry].end() <= start {
                entry += 1;
            }
            // Entries are capped at 2^26, so indexes fit in u32.
            first.push(entry as u32);
        }
        first.push((entries.len() - 1) as u32);
        LookupIndex { shift, first }
    }

    /// Index of the entry containing `offset`, which must be below the size.
    #[inline]
    fn find(&self, entries: &[Mapping], offset: u64) -> Option<usize> {
        let bucket = (offset >> self.shift) as usize;
        let lo = *self.first.get(bucket)? as usize;
        let hi = *self.first.get(bucket + 1)? as usize;
        if entries.get(lo)?.end() > offset {
            return Some(lo);
        }
        // In lo+1..=hi: the last entry there starting at or before `offset`.
        let candidates = entries.get(lo + 1..=hi)?;
        let i = candidates.partition_point(|e| e.offset <= offset);
        Some(lo + i)
    }
}

impl Header {
    /// Index of the entry containing logical `offset`, or `None` past the size.
    ///
    /// A bucket index narrows the search to a few entries; no allocation.
    #[inline]
    pub fn entry_index(&self, offset: u64) -> Option<usize> {
        if offset >= self.size() {
            return None;
        }
        self.index().find(self.entries(), offset)
    }

    /// Resolves logical `offset`: its build (nil for zero), storage offset, and the run left in
    /// its entry. `None` past the size. The fault path's call: binary search, no allocation.
    #[inline]
    pub fn lookup(&self, offset: u64) -> Option<Location> {
        let entry = self.entries().get(self.entry_index(offset)?)?;
        let into = offset - entry.offset;
        let storage_offset = if entry.is_zero() {
            0
        } else {
            entry.storage_offset + into
        };
        Some(Location {
            build_id: entry.build_id,
            storage_offset,
            remaining: entry.length - into,
        })
    }

    /// Splits `[offset, offset + length)` across the entries it touches.
    ///
    /// Each item is a [`Mapping`] clipped to the range, with its storage offset shifted to
    /// match. Errors with [`Error::OutOfRange`] if the range leaves `[0, size)`.
    pub fn read_plan(&self, offset: u64, length: u64) -> Result<ReadPlan<'_>> {
        let size = self.size();
        let end = offset
            .checked_add(length)
            .filter(|&end| end <= size)
            .ok_or(Error::OutOfRange {
                offset,
                length,
                size,
            })?;
        let index = if length == 0 {
            self.entries().len()
        } else {
            self.entry_index(offset).unwrap_or(self.entries().len())
        };
        Ok(ReadPlan {
            entries: self.entries(),
            index,
            position: offset,
            end,
        })
    }
}

/// Iterator over the pieces of a logical range, from [`Header::read_plan`].
#[derive(Debug, Clone)]
pub struct ReadPlan<'a> {
    entries: &'a [Mapping],
    index: usize,
    position: u64,
    end: u64,
}

impl Iterator for ReadPlan<'_> {
    type Item = Mapping;

    fn next(&mut self) -> Option<Mapping> {
        if self.position >= self.end {
            return None;
        }
        let entry = self.entries.get(self.index)?;
        let into = self.position - entry.offset;
        let length = (entry.end() - self.position).min(self.end - self.position);
        let piece = if entry.is_zero() {
            Mapping::zero(self.position, length)
        } else {
            Mapping::data(
                self.position,
                length,
                entry.build_id,
                entry.storage_offset + into,
            )
        };
        self.position += length;
        self.index += 1;
        Some(piece)
    }
}
