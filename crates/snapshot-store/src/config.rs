//! Settings of a store client and of the chunk cache.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Default chunk size: 4 MiB, the fetch unit production handlers use; the sweep the issue asks
/// for has not been run yet.
pub const DEFAULT_CHUNK_SIZE: u64 = 4 << 20;

/// How a [`crate::Store`] talks to its object store.
#[derive(Clone)]
pub struct StoreConfig {
    /// Most requests in flight at once (GETs and PUTs together).
    pub max_connections: usize,
    /// A read that receives no byte for this long is abandoned and retried. Not a deadline on
    /// the whole request: a slow but moving transfer is never cut.
    pub idle_timeout: Duration,
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Attempts per read or write before giving up with a typed error (at least 1).
    pub attempts: u32,
    /// Backoff before the second attempt; doubled for each later one, up to `max_backoff`.
    /// Each wait is drawn uniformly from `[0, backoff]` (full jitter).
    pub backoff: Duration,
    /// Largest backoff.
    pub max_backoff: Duration,
    /// Worker threads of the crate's own tokio runtime.
    pub runtime_threads: usize,
    /// Store-specific settings applied after the environment's, as `object_store` config keys
    /// (`aws_endpoint`, `aws_access_key_id`, `google_service_account`, `azure_storage_account_name`,
    /// `allow_http`, ...). Values are never logged or shown in errors.
    pub options: Vec<(String, String)>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_connections: 16,
            idle_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            attempts: 5,
            backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            runtime_threads: 2,
            options: Vec::new(),
        }
    }
}

impl fmt::Debug for StoreConfig {
    // Option values may be secrets: only their keys are shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<&str> = self.options.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("StoreConfig")
            .field("max_connections", &self.max_connections)
            .field("idle_timeout", &self.idle_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("attempts", &self.attempts)
            .field("backoff", &self.backoff)
            .field("max_backoff", &self.max_backoff)
            .field("runtime_threads", &self.runtime_threads)
            .field("option_keys", &keys)
            .finish()
    }
}

/// Where and how the host's chunk cache keeps fetched data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// The cache directory, shared by every process restoring on this host.
    pub dir: PathBuf,
    /// Fetch unit in bytes: a power of two, at least 4 KiB.
    pub chunk_size: u64,
}

impl CacheConfig {
    /// A cache in `dir` with the [`DEFAULT_CHUNK_SIZE`].
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CacheConfig {
            dir: dir.into(),
            chunk_size: DEFAULT_CHUNK_SIZE,
        }
    }

    /// The same cache with another chunk size.
    pub fn with_chunk_size(mut self, chunk_size: u64) -> Self {
        self.chunk_size = chunk_size;
        self
    }
}
