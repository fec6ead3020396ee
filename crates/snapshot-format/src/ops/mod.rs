//! Operations over mappings: validation, lookup and read plans, diffs, merge and normalise.

pub(crate) mod diff;
pub(crate) mod lookup;
pub(crate) mod merge;
pub(crate) mod normalise;
pub mod ranges;
pub(crate) mod validate;
