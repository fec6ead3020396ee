//! Snapshot headers and diff mappings across generations (skeleton; filled by issue 4).
