//! Error types: every way outside input or a caller's request can be wrong, named.

use std::io;
use std::path::PathBuf;

use uuid::Uuid;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong reading, writing or serving a snapshot.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input ends before a fixed-size part is complete.
    #[error("{what} truncated: need {needed} bytes, have {available}")]
    Truncated {
        /// Which part was cut short.
        what: &'static str,
        /// Bytes the part needs.
        needed: u64,
        /// Bytes present.
        available: u64,
    },
    /// A native header does not start with [`crate::NATIVE_MAGIC`].
    #[error("bad magic {found:02x?}: not a native snapshot header")]
    BadMagic {
        /// The first eight bytes found.
        found: [u8; 8],
    },
    /// A header carries a version this crate cannot read.
    #[error("unsupported {format} version {version} (supported: {supported})")]
    UnsupportedVersion {
        /// Which format or field the version belongs to.
        format: &'static str,
        /// The version found.
        version: u64,
        /// The versions understood.
        supported: &'static str,
    },
    /// A reserved field of a native header is not zero.
    #[error("reserved native header field is {value:#x}, expected 0")]
    ReservedNotZero {
        /// The value found.
        value: u32,
    },
    /// An entry count above [`crate::MAX_ENTRIES`] (checked before allocating).
    #[error("entry count {count} exceeds the limit of {limit}")]
    TooManyEntries {
        /// The count claimed or implied.
        count: u64,
        /// The limit.
        limit: u64,
    },
    /// A native header's length disagrees with its entry count (and, from version 2 on, the
    /// counts of its checksum tables).
    #[error(
        "native header is {actual} bytes, but {count} entries and the tables after them need \
         exactly {expected}"
    )]
    LengthMismatch {
        /// The entry count claimed.
        count: u64,
        /// The length that count implies.
        expected: u64,
        /// The length present.
        actual: u64,
    },
    /// An E2B header ends inside a 40-byte entry.
    #[error("E2B header ends {trailing} bytes into a 40-byte entry")]
    PartialEntry {
        /// Bytes after the last whole entry.
        trailing: u64,
    },
    /// A native header's CRC32 does not match its contents.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// The checksum stored in the header.
        stored: u32,
        /// The checksum of the bytes present.
        computed: u32,
    },
    /// Bytes read from a data file do not match the checksum its header gives for them: the
    /// file changed or storage returned wrong bytes. None of them is served.
    #[error(
        "data file {} of build {build}: bytes at {file_offset:#x} have CRC32 {found:#010x}, \
         the header says {expected:#010x}; not served",
        path.display()
    )]
    DataChecksumMismatch {
        /// The build.
        build: Uuid,
        /// Its data file.
        path: PathBuf,
        /// Offset in the data file of the first unit that differs.
        file_offset: u64,
        /// The checksum the header stores for that unit.
        expected: u32,
        /// The checksum of the bytes read.
        found: u32,
    },
    /// A data file with checksums is not the length its checksum table describes (it was
    /// truncated or extended after it was written).
    #[error(
        "data file {} of build {build} is {actual} bytes, its checksums describe {expected}",
        path.display()
    )]
    DataFileLength {
        /// The build.
        build: Uuid,
        /// Its data file.
        path: PathBuf,
        /// Bytes the checksum table covers.
        expected: u64,
        /// The file's length.
        actual: u64,
    },
    /// The metadata or the mapping breaks a structural rule.
    #[error("invalid header: {0}")]
    Invalid(#[from] InvalidHeader),
    /// A page set passed to the diff builder is malformed.
    #[error("invalid {set} page range {start:#x}..{end:#x}: {reason}")]
    InvalidRange {
        /// `"dirty"` or `"empty"`.
        set: &'static str,
        /// Range start in bytes.
        start: u64,
        /// Range end in bytes.
        end: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A diff does not fit the header it is merged over.
    #[error("diff does not fit its parent: {what} is {diff} in the diff, {parent} in the parent")]
    Incompatible {
        /// The field that differs.
        what: &'static str,
        /// The parent's value.
        parent: u64,
        /// The diff's value.
        diff: u64,
    },
    /// The header references a build for which no data file was given.
    #[error("build {build} is referenced by the header but has no data file")]
    MissingBuildFile {
        /// The build without a file.
        build: Uuid,
    },
    /// A data file is shorter than the storage ranges the header places in it.
    #[error("data file {} of build {build} is {actual} bytes, the header needs {needed}", path.display())]
    DataFileTooShort {
        /// The build.
        build: Uuid,
        /// Its data file.
        path: PathBuf,
        /// Bytes the header's storage ranges reach.
        needed: u64,
        /// The file's length.
        actual: u64,
    },
    /// A build's data is shorter than the storage ranges the header places in it (checked from
    /// lengths alone, by [`crate::Header::validate_storage`]).
    #[error("build {build} has {actual} bytes of data, the header needs {needed}")]
    StorageOutOfFile {
        /// The build.
        build: Uuid,
        /// Bytes the header's storage ranges reach.
        needed: u64,
        /// The length given for its data.
        actual: u64,
    },
    /// A logical range lies outside `[0, size)`.
    #[error("range {offset:#x}+{length:#x} lies outside the {size:#x}-byte image")]
    OutOfRange {
        /// Range start.
        offset: u64,
        /// Range length.
        length: u64,
        /// The image size.
        size: u64,
    },
    /// A memory image's length differs from the header's size.
    #[error("memory image is {actual} bytes, expected {expected}")]
    ImageSize {
        /// The size the header describes.
        expected: u64,
        /// The image's length.
        actual: u64,
    },
    /// A data file changed after it was opened (written, truncated, extended): its bytes can
    /// no longer be trusted, and none is served from it.
    #[error("data file {} changed since it was opened ({detail}); its bytes are not served", path.display())]
    FileChanged {
        /// The file.
        path: std::path::PathBuf,
        /// What changed: size or modification time, before and after.
        detail: String,
    },
    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path where there is one.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// A structural rule of the metadata or the mapping that a header breaks.
///
/// `index` fields name the offending entry's position in the mapping.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidHeader {
    /// The metadata's header version is outside 1..=3.
    #[error("header version {version} is not one of 1, 2, 3")]
    Version {
        /// The version found.
        version: u16,
    },
    /// The header's (or diff's) own build id is nil, which is reserved for zero-fill.
    #[error("build id is nil; nil is reserved for zero-fill entries")]
    NilBuildId,
    /// The block size is not a power of two within the allowed range.
    #[error(
        "block size {block_size} is not a power of two in {}..={}",
        crate::MIN_BLOCK_SIZE,
        crate::MAX_BLOCK_SIZE
    )]
    BlockSize {
        /// The block size found.
        block_size: u64,
    },
    /// The logical size is above [`crate::MAX_SIZE`].
    #[error("size {size} exceeds the limit of {limit}")]
    SizeTooLarge {
        /// The size found.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The logical size is not a whole number of blocks.
    #[error("size {size} is not a multiple of the block size {block_size}")]
    SizeNotAligned {
        /// The size found.
        size: u64,
        /// The block size.
        block_size: u64,
    },
    /// More entries than [`crate::MAX_ENTRIES`].
    #[error("{count} entries exceed the limit of {limit}")]
    TooManyEntries {
        /// The number of entries.
        count: u64,
        /// The limit.
        limit: u64,
    },
    /// An entry of length zero.
    #[error("entry {index} at {offset:#x} is empty")]
    EmptyEntry {
        /// Entry position.
        index: usize,
        /// Its logical offset.
        offset: u64,
    },
    /// An entry's offset or length is not a multiple of the block size.
    #[error(
        "entry {index} ({offset:#x}+{length:#x}) is not aligned to the block size {block_size}"
    )]
    Misaligned {
        /// Entry position.
        index: usize,
        /// Its logical offset.
        offset: u64,
        /// Its length.
        length: u64,
        /// The block size.
        block_size: u64,
    },
    /// An entry starts before the previous one ends (overlap, or out of order).
    #[error(
        "entry {index} starts at {offset:#x}, before the previous entry ends at {previous_end:#x}"
    )]
    Overlap {
        /// Entry position.
        index: usize,
        /// Its logical offset.
        offset: u64,
        /// Where the previous entry ends.
        previous_end: u64,
    },
    /// A full mapping leaves `[expected, offset)` uncovered.
    #[error("gap before entry {index}: {expected:#x}..{offset:#x} is not covered")]
    Gap {
        /// Entry position.
        index: usize,
        /// Where the entry should have started.
        expected: u64,
        /// Where it starts.
        offset: u64,
    },
    /// An entry runs past the logical size (or past `u64::MAX`).
    #[error("entry {index} ({offset:#x}+{length:#x}) runs past the size {size:#x}")]
    PastSize {
        /// Entry position.
        index: usize,
        /// Its logical offset.
        offset: u64,
        /// Its length.
        length: u64,
        /// The logical size.
        size: u64,
    },
    /// A full mapping stops before the logical size.
    #[error("mapping covers only {covered:#x} of {size:#x} bytes")]
    Incomplete {
        /// Where coverage stops.
        covered: u64,
        /// The logical size.
        size: u64,
    },
    /// Checksum tables out of build order, or one build's table twice.
    #[error("checksum table {index} (build {build}) is not after the previous one in build order")]
    ChecksumOrder {
        /// Table position.
        index: usize,
        /// Its build.
        build: Uuid,
    },
    /// A checksum table's unit is not the header's (`min(block size, 4096)`).
    #[error("checksum table of build {build} has unit {unit}, the header's unit is {expected}")]
    ChecksumUnit {
        /// The table's build.
        build: Uuid,
        /// The unit found.
        unit: u64,
        /// The unit the block size implies.
        expected: u64,
    },
    /// More checksums in all than [`crate::MAX_CHECKSUMS`].
    #[error("{count} checksums exceed the limit of {limit}")]
    TooManyChecksums {
        /// The number of checksums (so far).
        count: u64,
        /// The limit.
        limit: u64,
    },
    /// A data entry of a checksummed build starts in storage off a unit boundary.
    #[error(
        "entry {index}: storage offset {storage_offset:#x} is not a multiple of the checksum unit {unit}"
    )]
    ChecksumMisaligned {
        /// Entry position.
        index: usize,
        /// Its storage offset.
        storage_offset: u64,
        /// The checksum unit.
        unit: u64,
    },
    /// A checksum table covers less of its data file than the entries use.
    #[error("checksums of build {build} cover {covered} bytes, the entries use {needed}")]
    ChecksumsShort {
        /// The build.
        build: Uuid,
        /// Bytes the table covers.
        covered: u64,
        /// Bytes the entries' storage ranges reach.
        needed: u64,
    },
    /// A checksum table for a build no entry references (nil included).
    #[error("checksum table of build {build}, which no entry references")]
    ChecksumsUnreferenced {
        /// The build.
        build: Uuid,
    },
    /// An entry's storage range runs past `u64::MAX`.
    #[error("entry {index}: storage offset {storage_offset:#x} + length {length:#x} overflows")]
    StorageOverflow {
        /// Entry position.
        index: usize,
        /// Its storage offset.
        storage_offset: u64,
        /// Its length.
        length: u64,
    },
}
