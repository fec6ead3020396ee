//! Merging a diff over its parent's mapping, and building the next generation's header.

use std::collections::HashSet;

use uuid::Uuid;

use crate::error::{Error, Result};
use crate::model::{Header, Mapping};
use crate::ops::diff::Diff;
use crate::ops::normalise::normalise;

/// Lays `diff` over `parent`: the diff wins wherever it has an entry; parent entries the diff
/// covers partly are split, and a right-hand remainder's storage offset is shifted by the part cut
/// off. The result covers `[0, size)` like the parent. Adjacent runs are not joined (see
/// [`normalise`]). Linear in the two lengths; neither input is modified. Entries carry no
/// checksums: [`Header::next_generation`] is the way to a header that keeps the parent's.
pub fn merge(parent: &Header, diff: &Diff) -> Result<Vec<Mapping>> {
    for (what, p, d) in [
        ("block size", parent.block_size(), diff.block_size()),
        ("size", parent.size(), diff.size()),
    ] {
        if p != d {
            return Err(Error::Incompatible {
                what,
                parent: p,
                diff: d,
            });
        }
    }
    let parent_entries = parent.entries();
    let mut out = Vec::with_capacity(parent_entries.len() + 2 * diff.entries().len());
    let mut next_parent = 0usize;
    let mut position = 0u64;
    for overlay in diff.entries() {
        copy_parent(
            parent_entries,
            &mut next_parent,
            position,
            overlay.offset,
            &mut out,
        );
        out.push(*overlay);
        position = overlay.end();
    }
    copy_parent(
        parent_entries,
        &mut next_parent,
        position,
        parent.size(),
        &mut out,
    );
    Ok(out)
}

/// Appends the parent's mapping of `[start, end)`, clipping the entries at both ends.
/// `next` is a cursor into `parent` that only moves forward across calls.
fn copy_parent(parent: &[Mapping], next: &mut usize, start: u64, end: u64, out: &mut Vec<Mapping>) {
    if start >= end {
        return;
    }
    while parent.get(*next).is_some_and(|e| e.end() <= start) {
        *next += 1;
    }
    let mut index = *next;
    while let Some(entry) = parent.get(index) {
        if entry.offset >= end {
            break;
        }
        let from = entry.offset.max(start);
        let to = entry.end().min(end);
        out.push(if entry.is_zero() {
            Mapping::zero(from, to - from)
        } else {
            Mapping::data(
                from,
                to - from,
                entry.build_id,
                entry.storage_offset + (from - entry.offset),
            )
        });
        if entry.end() > end {
            // The rest of this entry may still show after the next overlay.
            break;
        }
        index += 1;
    }
    *next = index;
}

impl Header {
    /// The header of the generation `diff` creates over `self`: generation + 1, owned by the
    /// diff's build, same base build, mapping = [`merge`] then [`normalise`].
    ///
    /// The checksum tables of the builds the new mapping still references come along; those of
    /// builds it no longer references are dropped. The diff's own build has none yet: its
    /// writer adds it ([`Header::with_checksums`]; [`crate::write_diff`] does).
    pub fn next_generation(&self, diff: &Diff) -> Result<Header> {
        let merged = normalise(&merge(self, diff)?);
        let metadata = self.metadata().next_generation(diff.build_id());
        if self.checksums().is_empty() {
            return Ok(Header::new(metadata, merged)?);
        }
        let referenced: HashSet<Uuid> = merged
            .iter()
            .filter(|e| !e.is_zero())
            .map(|e| e.build_id)
            .collect();
        let tables = self
            .checksums()
            .iter()
            .filter(|t| referenced.contains(&t.build_id()))
            .cloned()
            .collect();
        Ok(Header::new_with_checksums(metadata, merged, tables)?)
    }
}
