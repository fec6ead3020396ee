#![doc = include_str!("../README.md")]
//!
//! # Modules at a glance
//!
//! - [`Header`], [`Metadata`], [`Mapping`]: the model; a `Header` is valid by construction.
//! - [`Header::lookup`], [`Header::read_plan`]: resolving logical offsets.
//! - [`Diff`], [`merge`], [`normalise`], [`Header::next_generation`]: generations.
//! - [`Header::encode_native`], [`Header::encode_e2b`], [`Header::decode`]: the codecs.
//! - [`DataChecksums`]: a CRC32 per unit of a data file, carried in native headers.
//! - [`LayeredSource`]: bytes of a page range out of the data files, verified against the
//!   checksums where the header has them; [`LayeredSource::read_resident`] never blocks.
//! - [`write_diff`], [`write_generation_zero`]: producing data files and headers.
//! - [`snapshot_dir`]: the on-disk directory layout the CLI validates.

mod checksums;
mod codec;
mod error;
mod model;
mod ops;
pub mod snapshot_dir;
mod source;
pub mod working_set;
mod writer;

pub use checksums::{DataChecksums, MAX_CHECKSUM_UNIT, MAX_CHECKSUMS, checksum_unit};
pub use codec::{E2B_ENTRY_LEN, E2B_METADATA_LEN, HeaderFormat, NATIVE_MAGIC, NATIVE_VERSION};
pub use error::{Error, InvalidHeader, Result};
pub use model::{DEFAULT_HEADER_VERSION, Header, Mapping, Metadata};
pub use ops::diff::Diff;
pub use ops::lookup::{Location, ReadPlan};
pub use ops::merge::merge;
pub use ops::normalise::normalise;
pub use ops::ranges as page_sets;
pub use source::{Chunk, LayeredSource, Segment};
pub use writer::{MemoryImage, write_diff, write_generation_zero};

/// Largest logical size (guest memory size) a header may describe: 16 TiB.
///
/// Enforced on every header built, so on read and on write alike.
pub const MAX_SIZE: u64 = 1 << 44;

/// Most mapping entries a header may hold (2^26, about 67 million; 2.7 GB in memory).
///
/// Enforced on every header built and checked against a file's length before allocating.
pub const MAX_ENTRIES: u64 = 1 << 26;

/// Smallest block size accepted (bytes).
pub const MIN_BLOCK_SIZE: u64 = 512;

/// Largest block size accepted (bytes): 1 GiB, the largest huge page.
pub const MAX_BLOCK_SIZE: u64 = 1 << 30;
