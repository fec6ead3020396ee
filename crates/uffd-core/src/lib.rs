#![doc = include_str!("../README.md")]

mod create;
mod error;
mod event;
mod flags;
mod outcome;
mod pagemap;
mod range;
mod sys;
mod uffd;

pub use create::{ApiInfo, CreatePolicy, Origin, UffdBuilder};
pub use error::{Error, RangeError};
pub use event::{Event, EventBuffer, Events, PageFault};
pub use flags::{
    ContinueMode, CopyMode, FaultFlags, Features, Ioctls, MoveMode, PoisonMode, RegisterMode,
    WriteProtectMode, ZeropageMode,
};
pub use outcome::{Incomplete, Outcome, Status};
pub use pagemap::PagemapScanner;
pub use range::{PageSize, Range};
pub use rustix::io::Errno;
pub use uffd::Uffd;
pub use uffd_sys as raw;
