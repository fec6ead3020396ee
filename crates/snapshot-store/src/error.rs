//! The crate's one error type: every failure names the object, range, file or option involved.

use std::io;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

/// Result with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Why a store, cache or transfer operation failed.
///
/// Cloneable (sources are shared) so that every thread waiting on one coalesced fetch receives
/// the same error. Nothing secret is ever part of a message: options are named by key only and
/// URLs are shown without credentials or query.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The snapshot URL cannot be used.
    #[error("store URL {url}: {reason}")]
    InvalidUrl {
        /// The URL, without credentials or query.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A store option was refused (its value is never shown).
    #[error("store option {key:?}: {reason}")]
    InvalidOption {
        /// The option's key.
        key: String,
        /// Why it was refused.
        reason: String,
    },
    /// The store has no such object.
    #[error("object {object} is not in the store")]
    NotFound {
        /// Object name relative to the snapshot prefix (e.g. `header`).
        object: String,
    },
    /// A read kept failing (errors, stalls past the idle timeout, short bodies) until the
    /// attempts ran out. The engine treats this as a source error; it never serves zeros for it.
    #[error("{object} bytes {}..{}: gave up after {attempts} attempts; last: {last}", range.start, range.end)]
    Unavailable {
        /// Object name relative to the snapshot prefix.
        object: String,
        /// Byte range that was asked for (`0..0` for a whole-object read of unknown length).
        range: Range<u64>,
        /// Attempts made.
        attempts: u32,
        /// The last attempt's failure.
        last: String,
    },
    /// A write to the store failed after every attempt.
    #[error("writing {object} to the store: gave up after {attempts} attempts; last: {last}")]
    WriteFailed {
        /// Object name relative to the snapshot prefix.
        object: String,
        /// Attempts made.
        attempts: u32,
        /// The last attempt's failure.
        last: String,
    },
    /// The header object is not a valid snapshot header.
    #[error("header {object}: {source}")]
    Header {
        /// Object name (or local path) of the header.
        object: String,
        /// The decoding or validation error.
        #[source]
        source: Arc<snapshot_format::Error>,
    },
    /// A data object is shorter than the header's mapping needs.
    #[error("data object {object} is {actual} bytes, the header maps {needed}")]
    DataTooShort {
        /// Object name.
        object: String,
        /// Its length in the store.
        actual: u64,
        /// Bytes the header's entries reach into it.
        needed: u64,
    },
    /// A data object is longer than any image may be (its cache is never made).
    #[error(
        "data object {object} is {actual} bytes, more than the {limit} bytes an image may have"
    )]
    DataTooLarge {
        /// Object name.
        object: String,
        /// Its length in the store.
        actual: u64,
        /// [`snapshot_format::MAX_SIZE`].
        limit: u64,
    },
    /// A file of the local chunk cache or of a local snapshot directory failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done (e.g. "writing cache file").
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The failure.
        #[source]
        source: Arc<io::Error>,
    },
    /// A local snapshot directory lacks a data file its header references.
    #[error("snapshot directory {}: no data file for build {build}", dir.display())]
    MissingData {
        /// The directory.
        dir: PathBuf,
        /// The build whose `<uuid>.data` is absent.
        build: uuid::Uuid,
    },
    /// A read asked for bytes outside the image.
    #[error("range {offset:#x}+{len:#x} is outside the image of {size:#x} bytes")]
    OutOfRange {
        /// Start of the read.
        offset: u64,
        /// Its length.
        len: u64,
        /// The image size.
        size: u64,
    },
    /// The working-set object is not a list of ranges inside the image.
    #[error("working set: {0}")]
    WorkingSet(String),
    /// A cache setting is unusable.
    #[error("cache configuration: {0}")]
    InvalidCache(String),
}

impl StoreError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        StoreError::Io {
            what,
            path: path.into(),
            source: Arc::new(source),
        }
    }

    pub(crate) fn header(object: impl Into<String>, source: snapshot_format::Error) -> Self {
        StoreError::Header {
            object: object.into(),
            source: Arc::new(source),
        }
    }
}
