//! The crate's error type: every bad input is a typed error, never a panic.

/// Why a tracker operation or a conversion was refused.
///
/// The tracker's state is unchanged whenever one of these is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The page size is not a power of two of at least 4096 bytes.
    #[error("page size {0} is not a power of two of at least 4096 bytes")]
    InvalidPageSize(u64),

    /// An address or offset is not a multiple of the page size.
    #[error("address or offset {value:#x} is not aligned to the page size {page_size:#x}")]
    Misaligned {
        /// The offending address or offset.
        value: u64,
        /// The page size it had to be a multiple of.
        page_size: u64,
    },

    /// An address lies outside the tracked address range.
    #[error("address {addr:#x} is outside the tracked range {start:#x}..{end:#x}")]
    AddressOutOfRange {
        /// The offending address.
        addr: u64,
        /// First tracked address.
        start: u64,
        /// One past the last tracked address.
        end: u64,
    },

    /// A page index is not below the tracker's page count.
    #[error("page {page} is outside the tracked range of {page_count} pages")]
    PageOutOfRange {
        /// The offending page index.
        page: u64,
        /// Number of tracked pages.
        page_count: u64,
    },

    /// A page range reaches past the tracker's page count.
    #[error("pages {start}..{end} reach past the tracked range of {page_count} pages")]
    RangeOutOfRange {
        /// First page of the range.
        start: u64,
        /// One past the last page of the range.
        end: u64,
        /// Number of tracked pages.
        page_count: u64,
    },

    /// A range whose end lies before its start.
    #[error("range {start}..{end} ends before it starts")]
    InvertedRange {
        /// Start of the range.
        start: u64,
        /// End of the range.
        end: u64,
    },

    /// An address or size computation does not fit in 64 bits.
    #[error("arithmetic overflow computing {0}")]
    Overflow(&'static str),

    /// A claim split at a page outside the claim.
    #[error("cannot split the claim {start}..{end} at page {page}")]
    NotInClaim {
        /// The requested split point.
        page: u64,
        /// First page of the claim.
        start: u64,
        /// One past the last page of the claim.
        end: u64,
    },

    /// A fault-around window that is not a power of two number of pages.
    #[error("window of {0} pages is not a power of two")]
    InvalidWindow(u64),

    /// The state table for this many pages cannot be allocated.
    #[error("cannot allocate the state table for {0} pages")]
    OutOfMemory(u64),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
