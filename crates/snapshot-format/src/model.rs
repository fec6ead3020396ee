//! The model: header metadata, mapping entries, and the validated [`Header`].

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::checksums::DataChecksums;
use crate::error::{InvalidHeader, Result};
use crate::ops::lookup::LookupIndex;
use crate::ops::validate::{Coverage, check_checksums, check_entries, check_metadata};

/// Header version written by default; E2B's orchestrator uses 1 to 3 for the same layout.
pub const DEFAULT_HEADER_VERSION: u16 = 3;

/// What a header says about the image as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Metadata {
    /// Header version, 1 to 3 (the E2B layout's version field; kept by the native codec too).
    pub version: u16,
    /// Granularity of the mapping in bytes: every entry is aligned to it.
    pub block_size: u64,
    /// Logical size in bytes: the guest memory file the header describes.
    pub size: u64,
    /// 0 for a full image, parent's + 1 for each diff.
    pub generation: u64,
    /// The build (snapshot) this header belongs to; its data file holds this generation's bytes.
    pub build_id: Uuid,
    /// The build of generation 0 of this chain (equal to `build_id` at generation 0).
    pub base_build_id: Uuid,
}

impl Metadata {
    /// Metadata of generation 0 of a new chain: its own base.
    pub fn generation_zero(build_id: Uuid, block_size: u64, size: u64) -> Self {
        Metadata {
            version: DEFAULT_HEADER_VERSION,
            block_size,
            size,
            generation: 0,
            build_id,
            base_build_id: build_id,
        }
    }

    /// Metadata of the next generation, owned by `build_id`; the base build stays.
    pub fn next_generation(&self, build_id: Uuid) -> Self {
        Metadata {
            generation: self.generation.saturating_add(1),
            build_id,
            ..*self
        }
    }

    /// Number of blocks in the image.
    pub fn block_count(&self) -> u64 {
        self.size.checked_div(self.block_size).unwrap_or(0)
    }
}

/// One run of the logical image: `[offset, offset + length)` lives in build `build_id`'s data
/// file at `storage_offset`, or reads as zeros when `build_id` is nil.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Mapping {
    /// Logical start in bytes (guest memory-file offset).
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
    /// The build whose data file holds the bytes; nil means zero-fill, no I/O.
    pub build_id: Uuid,
    /// Where the run starts in that build's data file (ignored for zero runs).
    pub storage_offset: u64,
}

impl Mapping {
    /// A run of `build_id`'s data starting at `storage_offset`.
    pub fn data(offset: u64, length: u64, build_id: Uuid, storage_offset: u64) -> Self {
        Mapping {
            offset,
            length,
            build_id,
            storage_offset,
        }
    }

    /// A zero-fill run.
    pub fn zero(offset: u64, length: u64) -> Self {
        Mapping {
            offset,
            length,
            build_id: Uuid::nil(),
            storage_offset: 0,
        }
    }

    /// True for a zero-fill run (nil build).
    pub fn is_zero(&self) -> bool {
        self.build_id.is_nil()
    }

    /// End of the logical run (saturating; validated entries never overflow).
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.length)
    }
}

/// A validated snapshot header: metadata plus a mapping that covers `[0, size)` exactly with
/// sorted, non-overlapping, block-aligned entries, within [`crate::MAX_SIZE`] and
/// [`crate::MAX_ENTRIES`].
///
/// It may carry a [`DataChecksums`] table for each build it references (see
/// [`Header::new_with_checksums`]): sorted by build, one per build, with the unit of
/// [`crate::checksum_unit`], covering every storage range of that build at unit-aligned offsets.
///
/// Every constructor checks these rules, so a `Header` that exists can be encoded and read back,
/// and lookups need no further checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "UncheckedHeader")]
pub struct Header {
    metadata: Metadata,
    entries: Vec<Mapping>,
    /// Sorted by build id, one per build; empty for E2B headers and native version 1.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    checksums: Vec<DataChecksums>,
    /// Derived from `entries`; speeds up lookups.
    #[serde(skip)]
    index: LookupIndex,
}

/// The JSON shape of a header before validation.
#[derive(Deserialize)]
struct UncheckedHeader {
    metadata: Metadata,
    entries: Vec<Mapping>,
    #[serde(default)]
    checksums: Vec<DataChecksums>,
}

impl TryFrom<UncheckedHeader> for Header {
    type Error = InvalidHeader;

    fn try_from(raw: UncheckedHeader) -> Result<Self, InvalidHeader> {
        Header::new_with_checksums(raw.metadata, raw.entries, raw.checksums)
    }
}

impl Header {
    /// Validates `entries` against `metadata` and builds the header.
    pub fn new(metadata: Metadata, entries: Vec<Mapping>) -> Result<Self, InvalidHeader> {
        Header::new_with_checksums(metadata, entries, Vec::new())
    }

    /// [`Header::new`] with a checksum table per build that has one. The tables must be sorted
    /// by build id with no build twice, each for a build the entries reference, with the unit
    /// [`crate::checksum_unit`]`(block_size)`, and cover every storage range of their build,
    /// which must start on a unit boundary; at most [`crate::MAX_CHECKSUMS`] in all.
    pub fn new_with_checksums(
        metadata: Metadata,
        entries: Vec<Mapping>,
        checksums: Vec<DataChecksums>,
    ) -> Result<Self, InvalidHeader> {
        check_metadata(&metadata)?;
        check_entries(&metadata, &entries, Coverage::Full)?;
        check_checksums(metadata.block_size, &entries, &checksums)?;
        let index = LookupIndex::build(metadata.block_size, metadata.size, &entries);
        Ok(Header {
            metadata,
            entries,
            checksums,
            index,
        })
    }

    /// This header with `table` attached (replacing any table of the same build), checked as
    /// [`Header::new_with_checksums`] checks it.
    pub fn with_checksums(self, table: DataChecksums) -> Result<Self, InvalidHeader> {
        let Header {
            metadata,
            entries,
            mut checksums,
            ..
        } = self;
        match checksums.binary_search_by_key(&table.build_id(), DataChecksums::build_id) {
            Ok(at) => checksums[at] = table,
            Err(at) => checksums.insert(at, table),
        }
        Header::new_with_checksums(metadata, entries, checksums)
    }

    /// The checksum tables, sorted by build id (empty for E2B and native version 1 headers).
    pub fn checksums(&self) -> &[DataChecksums] {
        &self.checksums
    }

    /// The checksum table of `build`'s data file, if the header carries one.
    pub fn checksums_of(&self, build: Uuid) -> Option<&DataChecksums> {
        self.checksums
            .binary_search_by_key(&build, DataChecksums::build_id)
            .ok()
            .and_then(|at| self.checksums.get(at))
    }

    /// True when the header carries a checksum table for `build`'s data file, so its bytes
    /// are verified on read (statistics say "checksums: none" when no build has one).
    pub fn has_checksums(&self, build: Uuid) -> bool {
        self.checksums_of(build).is_some()
    }

    /// This header without its checksum tables (what an E2B round trip gives).
    pub fn without_checksums(self) -> Self {
        Header {
            checksums: Vec::new(),
            ..self
        }
    }

    /// Generation 0 of a plain memory image (a Firecracker memory file with no header): one entry
    /// maps all of `[0, size)` to `build_id`'s file at the same offsets (all zeros if `size` is 0).
    pub fn full_image(build_id: Uuid, block_size: u64, size: u64) -> Result<Self, InvalidHeader> {
        let entries = if size == 0 {
            Vec::new()
        } else {
            vec![Mapping::data(0, size, build_id, 0)]
        };
        Header::new(
            Metadata::generation_zero(build_id, block_size, size),
            entries,
        )
    }

    /// The metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The mapping entries, sorted by offset, covering `[0, size)`.
    pub fn entries(&self) -> &[Mapping] {
        &self.entries
    }

    /// Logical size in bytes.
    pub fn size(&self) -> u64 {
        self.metadata.size
    }

    /// Block size in bytes.
    pub fn block_size(&self) -> u64 {
        self.metadata.block_size
    }

    /// Distinct non-nil builds the mapping references, in first-reference order.
    pub fn builds(&self) -> Vec<Uuid> {
        self.storage_extents()
            .into_iter()
            .map(|(build, _)| build)
            .collect()
    }

    pub(crate) fn index(&self) -> &LookupIndex {
        &self.index
    }

    /// Takes the header apart (its checksum tables, if any, are dropped; see
    /// [`Header::checksums`]).
    pub fn into_parts(self) -> (Metadata, Vec<Mapping>) {
        (self.metadata, self.entries)
    }
}
