//! Structural rules every header (full mapping) and diff (partial mapping) must meet.

use std::collections::HashMap;

use uuid::Uuid;

use crate::checksums::{DataChecksums, MAX_CHECKSUMS, checksum_unit, covered_len_ok};
use crate::error::{Error, InvalidHeader, Result};
use crate::model::{Header, Metadata};
use crate::{MAX_BLOCK_SIZE, MAX_ENTRIES, MAX_SIZE, MIN_BLOCK_SIZE, Mapping};

/// Whether a mapping must cover `[0, size)` (a header) or may leave gaps (a diff).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coverage {
    /// Every byte of `[0, size)` covered exactly once.
    Full,
    /// Gaps allowed (they keep the parent's mapping).
    Partial,
}

/// Checks the block size and logical size against the crate's limits.
pub(crate) fn check_geometry(block_size: u64, size: u64) -> Result<(), InvalidHeader> {
    if !block_size.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) {
        return Err(InvalidHeader::BlockSize { block_size });
    }
    if size > MAX_SIZE {
        return Err(InvalidHeader::SizeTooLarge {
            size,
            limit: MAX_SIZE,
        });
    }
    if size % block_size != 0 {
        return Err(InvalidHeader::SizeNotAligned { size, block_size });
    }
    Ok(())
}

/// Checks the metadata: version, block size, size.
pub(crate) fn check_metadata(metadata: &Metadata) -> Result<(), InvalidHeader> {
    if !(1..=3).contains(&metadata.version) {
        return Err(InvalidHeader::Version {
            version: metadata.version,
        });
    }
    if metadata.build_id.is_nil() {
        return Err(InvalidHeader::NilBuildId);
    }
    check_geometry(metadata.block_size, metadata.size)
}

/// Checks entries: count, non-empty, aligned, sorted without overlap, inside the size, storage
/// ranges not overflowing, and (for [`Coverage::Full`]) no gaps and complete coverage.
pub(crate) fn check_entries(
    metadata: &Metadata,
    entries: &[Mapping],
    coverage: Coverage,
) -> Result<(), InvalidHeader> {
    check_entries_in(metadata.block_size, metadata.size, entries, coverage)
}

/// [`check_entries`] with the geometry given directly (geometry itself already checked).
pub(crate) fn check_entries_in(
    block_size: u64,
    size: u64,
    entries: &[Mapping],
    coverage: Coverage,
) -> Result<(), InvalidHeader> {
    let count = entries.len() as u64;
    if count > MAX_ENTRIES {
        return Err(InvalidHeader::TooManyEntries {
            count,
            limit: MAX_ENTRIES,
        });
    }
    let mask = block_size - 1;
    let mut covered = 0u64;
    for (index, entry) in entries.iter().enumerate() {
        let Mapping {
            offset,
            length,
            storage_offset,
            ..
        } = *entry;
        if length == 0 {
            return Err(InvalidHeader::EmptyEntry { index, offset });
        }
        if offset & mask != 0 || length & mask != 0 {
            return Err(InvalidHeader::Misaligned {
                index,
                offset,
                length,
                block_size,
            });
        }
        if offset < covered {
            return Err(InvalidHeader::Overlap {
                index,
                offset,
                previous_end: covered,
            });
        }
        if offset > covered && coverage == Coverage::Full {
            return Err(InvalidHeader::Gap {
                index,
                expected: covered,
                offset,
            });
        }
        let end = match offset.checked_add(length) {
            Some(end) if end <= size => end,
            _ => {
                return Err(InvalidHeader::PastSize {
                    index,
                    offset,
                    length,
                    size,
                });
            }
        };
        if !entry.is_zero() && storage_offset.checked_add(length).is_none() {
            return Err(InvalidHeader::StorageOverflow {
                index,
                storage_offset,
                length,
            });
        }
        covered = end;
    }
    if coverage == Coverage::Full && covered != size {
        return Err(InvalidHeader::Incomplete { covered, size });
    }
    Ok(())
}

/// Checks checksum tables against a validated full mapping: sorted by build with no repeats,
/// each for a referenced build, with the header's unit, within [`MAX_CHECKSUMS`] in all, and
/// covering every storage range of its build, which must start on a unit boundary (lengths
/// are whole blocks, so whole units).
pub(crate) fn check_checksums(
    block_size: u64,
    entries: &[Mapping],
    tables: &[DataChecksums],
) -> Result<(), InvalidHeader> {
    if tables.is_empty() {
        return Ok(());
    }
    let unit = checksum_unit(block_size);
    let mut total = 0u64;
    for (index, table) in tables.iter().enumerate() {
        let build = table.build_id();
        if index > 0 && tables[index - 1].build_id() >= build {
            return Err(InvalidHeader::ChecksumOrder { index, build });
        }
        if table.unit() != unit {
            return Err(InvalidHeader::ChecksumUnit {
                build,
                unit: table.unit(),
                expected: unit,
            });
        }
        total = total.saturating_add(table.crcs().len() as u64);
        if total > MAX_CHECKSUMS || !covered_len_ok(table.covered_len()) {
            return Err(InvalidHeader::TooManyChecksums {
                count: total,
                limit: MAX_CHECKSUMS,
            });
        }
    }
    let mut referenced = vec![false; tables.len()];
    for (index, entry) in entries.iter().enumerate() {
        if entry.is_zero() {
            continue;
        }
        let Ok(at) = tables.binary_search_by_key(&entry.build_id, DataChecksums::build_id) else {
            continue;
        };
        referenced[at] = true;
        if entry.storage_offset % unit != 0 {
            return Err(InvalidHeader::ChecksumMisaligned {
                index,
                storage_offset: entry.storage_offset,
                unit,
            });
        }
        // Validated entries: storage_offset + length does not overflow.
        let needed = entry.storage_offset + entry.length;
        let covered = tables[at].covered_len();
        if needed > covered {
            return Err(InvalidHeader::ChecksumsShort {
                build: entry.build_id,
                covered,
                needed,
            });
        }
    }
    if let Some(at) = referenced.iter().position(|r| !r) {
        return Err(InvalidHeader::ChecksumsUnreferenced {
            build: tables[at].build_id(),
        });
    }
    Ok(())
}

impl Header {
    /// Checks every build's storage ranges against its data file length.
    ///
    /// `file_lens` maps build UUID -> data file length in bytes. A referenced build missing from
    /// it is [`Error::MissingBuildFile`]; a length short of the furthest storage byte the mapping
    /// reaches is [`Error::StorageOutOfFile`].
    pub fn validate_storage(&self, file_lens: &HashMap<Uuid, u64>) -> Result<()> {
        for (build, needed) in self.storage_extents() {
            let Some(&actual) = file_lens.get(&build) else {
                return Err(Error::MissingBuildFile { build });
            };
            if actual < needed {
                return Err(Error::StorageOutOfFile {
                    build,
                    needed,
                    actual,
                });
            }
        }
        Ok(())
    }

    /// For each referenced build (first-reference order), the data file length it needs.
    pub fn storage_extents(&self) -> Vec<(Uuid, u64)> {
        // A hash index keeps this linear even for a crafted header naming a million builds.
        let mut extents: Vec<(Uuid, u64)> = Vec::new();
        let mut position: HashMap<Uuid, usize> = HashMap::new();
        for entry in self.entries() {
            if entry.is_zero() {
                continue;
            }
            // Validated: storage_offset + length does not overflow.
            let end = entry.storage_offset + entry.length;
            match position.get(&entry.build_id) {
                Some(&i) => extents[i].1 = extents[i].1.max(end),
                None => {
                    position.insert(entry.build_id, extents.len());
                    extents.push((entry.build_id, end));
                }
            }
        }
        extents
    }
}
