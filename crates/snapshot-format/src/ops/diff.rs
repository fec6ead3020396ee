//! A diff: the partial mapping one pause adds over its parent.

use std::ops::Range;

use uuid::Uuid;

use crate::error::{InvalidHeader, Result};
use crate::model::Mapping;
use crate::ops::ranges::{coalesce, subtract};
use crate::ops::validate::{Coverage, check_entries_in, check_geometry};

/// The mapping one generation adds over its parent: sorted, non-overlapping, block-aligned
/// entries inside `[0, size)`, with gaps where the parent's mapping stays.
///
/// Entries naming [`Diff::build_id`] point into the new build's data file; nil entries turn
/// their range to zeros (pages the guest freed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diff {
    build_id: Uuid,
    block_size: u64,
    size: u64,
    entries: Vec<Mapping>,
}

impl Diff {
    /// Builds the diff of one pause from its page sets.
    ///
    /// `dirty` and `empty` are byte ranges `start..end` of the logical image, each aligned to
    /// `block_size` and inside `[0, size)`; in any order, and they may overlap or touch (they are
    /// sorted and joined first; the caller's slices are not modified).
    ///
    /// - Dirty ranges map to `build_id`, their storage packed contiguously in ascending offset
    ///   order, so the data file is exactly the dirty bytes back to back ([`Diff::data_len`]).
    /// - Empty ranges (pages freed or zeroed) become explicit zero entries, so the parent's old
    ///   bytes cannot come back; a page both dirty and empty is dirty (its newest bytes were
    ///   written after it was freed).
    pub fn from_page_sets(
        build_id: Uuid,
        block_size: u64,
        size: u64,
        dirty: &[Range<u64>],
        empty: &[Range<u64>],
    ) -> Result<Self> {
        check_geometry(block_size, size)?;
        if build_id.is_nil() {
            return Err(InvalidHeader::NilBuildId.into());
        }
        let dirty = coalesce("dirty", block_size, size, dirty)?;
        let empty = subtract(&coalesce("empty", block_size, size, empty)?, &dirty);

        let mut entries = Vec::with_capacity(dirty.len() + empty.len());
        let mut storage = 0u64;
        let (mut d, mut e) = (dirty.iter().peekable(), empty.iter().peekable());
        loop {
            let take_dirty = match (d.peek(), e.peek()) {
                (Some(dr), Some(er)) => dr.start < er.start,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if take_dirty {
                let Some(r) = d.next() else { break };
                entries.push(Mapping::data(r.start, r.end - r.start, build_id, storage));
                storage += r.end - r.start;
            } else {
                let Some(r) = e.next() else { break };
                entries.push(Mapping::zero(r.start, r.end - r.start));
            }
        }
        Diff::from_entries(build_id, block_size, size, entries)
    }

    /// Wraps entries made elsewhere, checking them as a partial mapping.
    pub fn from_entries(
        build_id: Uuid,
        block_size: u64,
        size: u64,
        entries: Vec<Mapping>,
    ) -> Result<Self> {
        check_geometry(block_size, size)?;
        if build_id.is_nil() {
            return Err(InvalidHeader::NilBuildId.into());
        }
        check_entries_in(block_size, size, &entries, Coverage::Partial)?;
        Ok(Diff {
            build_id,
            block_size,
            size,
            entries,
        })
    }

    /// The new build this diff's data entries point into.
    pub fn build_id(&self) -> Uuid {
        self.build_id
    }

    /// Block size in bytes.
    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    /// Logical size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The entries, sorted by offset.
    pub fn entries(&self) -> &[Mapping] {
        &self.entries
    }

    /// Length of the new build's data file: the furthest storage byte its entries reach.
    pub fn data_len(&self) -> u64 {
        self.entries
            .iter()
            .filter(|e| e.build_id == self.build_id)
            .map(|e| e.storage_offset + e.length)
            .max()
            .unwrap_or(0)
    }
}
