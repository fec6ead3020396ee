//! The kinds of fault and the counts, shared by the client and the server.

/// What a rule does to the reads it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The next `n` matching reads fail with EIO; later ones are served.
    FailNext(u64),
    /// Every matching read fails with EIO.
    FailAlways,
    /// The next `n` matching reads are short: they return only the bytes before the rule's
    /// range (none for a read starting inside it). The kernel takes a short read of a cached
    /// FUSE file as its end: it zero-fills the rest of the request and shrinks the file's size.
    ShortNext(u64),
    /// Every matching read is held unanswered until [`crate::Injection::release`], then served.
    Stall,
}

/// Counts of reads, for the whole mount ([`crate::FuseMount::counts`]) or one rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadCounts {
    /// Reads that arrived.
    pub reads: u64,
    /// Reads answered with the bytes asked for (stalled ones once released included).
    pub served: u64,
    /// Reads answered with EIO.
    pub failed: u64,
    /// Reads answered short.
    pub shortened: u64,
    /// Reads held by a [`Fault::Stall`] rule (counted when held).
    pub stalled: u64,
}
