#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod claim;
mod config;
mod deferred;
mod engine;
mod error;
mod fault;
mod fetch;
mod graduate;
mod hooks;
mod layout;
mod locks;
mod metrics;
mod prefetch;
mod reader;
mod retry;
mod serve;
mod shared;
mod source;
mod throttle;
mod time;

pub use config::EngineConfig;
pub use engine::{CloseRefused, CloseWhen, Engine, PageSets};
pub use error::{EngineError, EngineExit, FatalError};
#[cfg(feature = "test-hooks")]
pub use hooks::Hook;
pub use hooks::HookPoint;
pub use layout::{GuestLayout, GuestRegion, LayoutError};
pub use metrics::{
    FaultTimeline, LatencyBuckets, MetricsSnapshot, TIMELINE_BUCKET, TIMELINE_BUCKETS,
};
pub use prefetch::{PrefetchHandle, PrefetchReport};
pub use retry::RetryPolicy;
pub use source::{Extent, PageSource, SourceError};
