//! The object-storage flags: `--snapshot-url` opened through the host's chunk cache
//! (`--cache-dir`, `--chunk-size`), the store client's settings (`--store-option`,
//! `--store-attempts`, `--store-idle-timeout`) and the working set stored beside a snapshot.

use std::fs::DirBuilder;
use std::ops::Range;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::Arc;

use snapshot_store::{CacheConfig, DEFAULT_CHUNK_SIZE, RemoteSource, Store, StoreConfig};

use super::cli::{ServeArgs, StoreArgs};
use super::config::{ConfigError, Origin, Snapshot};
use super::remote_source::StoreSource;

/// The store client's settings from the flags.
///
/// # Errors
///
/// `--store-attempts` of 0, `--store-idle-timeout` of 0.
pub(crate) fn store_config(args: &StoreArgs) -> Result<StoreConfig, ConfigError> {
    if args.store_attempts == 0 {
        return Err(ConfigError::flag("--store-attempts", "must be at least 1"));
    }
    if args.store_idle_timeout.is_zero() {
        return Err(ConfigError::flag("--store-idle-timeout", "must be above 0"));
    }
    Ok(StoreConfig {
        attempts: args.store_attempts,
        idle_timeout: args.store_idle_timeout,
        options: args.store_option.clone(),
        ..StoreConfig::default()
    })
}

/// Opens `--snapshot-url`: the store client, the cache directory (created 0700 if missing),
/// the header and the length of every data object it references.
///
/// # Errors
///
/// A flag error naming `--snapshot-url`, `--store-option`, `--cache-dir` or `--chunk-size`
/// with the store's reason (never an option's value).
pub(crate) fn open_remote(args: &ServeArgs, url: &str) -> Result<Snapshot, ConfigError> {
    let store = Store::open(url, store_config(&args.store)?).map_err(|e| match e {
        snapshot_store::StoreError::InvalidOption { .. } => {
            ConfigError::flag("--store-option", e.to_string())
        }
        _ => ConfigError::flag("--snapshot-url", e.to_string()),
    })?;
    let chunk_size = args.chunk_size.unwrap_or(DEFAULT_CHUNK_SIZE);
    if !chunk_size.is_power_of_two() || chunk_size < 4096 {
        return Err(ConfigError::flag(
            "--chunk-size",
            format!("{chunk_size} is not a power of two of at least 4096"),
        ));
    }
    prepare_cache_dir(&args.cache_dir)?;
    let cache = CacheConfig::new(&args.cache_dir).with_chunk_size(chunk_size);
    let remote = RemoteSource::open(&store, &cache)
        .map_err(|e| ConfigError::flag("--snapshot-url", format!("{}: {e}", store.url())))?;
    let remote = Arc::new(remote);
    let description = format!(
        "{} (generation {}) through the chunk cache {}",
        store.url(),
        remote.header().metadata().generation,
        args.cache_dir.display()
    );
    Ok(Snapshot {
        source: Arc::new(StoreSource(remote.clone())),
        origin: Origin::Remote(remote),
        description,
    })
}

/// The working set stored beside the snapshot's header, for `--prefetch working-set`.
///
/// # Errors
///
/// The store has none, it cannot be read, or a line is invalid.
pub(crate) fn stored_working_set(remote: &RemoteSource) -> Result<Vec<Range<u64>>, ConfigError> {
    let flag = "--prefetch working-set";
    match remote.working_set() {
        Ok(Some(ranges)) => Ok(ranges),
        Ok(None) => Err(ConfigError::flag(
            flag,
            format!(
                "{} has no {} object beside its header (give a local --working-set FILE, or \
                 push the snapshot directory with its working set)",
                remote.store().url(),
                snapshot_store::WORKING_SET_OBJECT
            ),
        )),
        Err(e) => Err(ConfigError::flag(flag, e.to_string())),
    }
}

/// Creates the cache directory (and missing parents) with mode 0700: the cache holds guest
/// memory. An existing directory is used as it is.
fn prepare_cache_dir(dir: &Path) -> Result<(), ConfigError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| ConfigError::file("--cache-dir", dir, e.to_string()))?;
    if dir.is_dir() {
        Ok(())
    } else {
        Err(ConfigError::file("--cache-dir", dir, "not a directory"))
    }
}
