#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod claim;
mod counts;
mod error;
mod geometry;
mod runs;
mod state;
mod tracker;
mod words;

pub use claim::{Claim, DetachedClaim};
pub use error::{Error, Result};
pub use geometry::{Geometry, PageRange, PageSize};
pub use runs::Runs;
pub use state::{Access, PageState, StateCounts, StateSet, WriteMark};
pub use tracker::PageTracker;
