#![doc = include_str!("../README.md")]
//!
//! # Modules at a glance
//!
//! - [`Store`]: a blocking client of one snapshot location (`s3://`, `gs://`, `az://`,
//!   `http(s)://`, `file://`) with bounded connections, an idle timeout per read and
//!   jittered retries.
//! - [`RemoteSource`]: a generation's bytes through the host's chunk cache
//!   ([`CacheConfig`]), the reads the engine's fault path calls.
//! - [`push_dir`], [`pull_dir`]: a snapshot directory to the store and back, header last.

#![forbid(unsafe_code)]

mod cache;
mod config;
mod error;
mod fetch;
mod location;
mod remote;
mod store;
mod transfer;

pub use config::{CacheConfig, DEFAULT_CHUNK_SIZE, StoreConfig};
pub use error::{Result, StoreError};
pub use remote::{RemoteSource, WORKING_SET_OBJECT, data_object};
pub use store::{Store, StoreStats};
pub use transfer::{MAX_SINGLE_PUT, PushReport, pull_dir, push_dir};
