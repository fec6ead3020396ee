#![doc = include_str!("../README.md")]

pub mod daemon;
pub mod engine;
mod layout;
pub mod peer;
pub mod protocol;
mod source;

pub use engine::{CloseWhen, Engine, EngineConfig, EngineError, EngineExit, FatalError, PageSets};
pub use layout::{GuestLayout, GuestRegion, LayoutError};
pub use source::{PageSource, SourceError};
