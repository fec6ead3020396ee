//! From flags to a checked configuration with the snapshot opened: every problem an error
//! naming its flag or file (exit code 1).

use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use snapshot_format::{LayeredSource, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE};
use snapshot_store::{RemoteSource, StoreStats};

use super::cli::{
    FaultAround, MetricsAddr, OnFatal, OnSignal, ParentFiles, PrefetchMode, ServeArgs,
};
use snapshot_format::working_set;
use uffd_engine::{EngineConfig, PageSource};
use uffd_handshake::PeerPolicy;

/// Default block size of a plain memory file.
pub(crate) const DEFAULT_BLOCK_SIZE: u64 = 4096;

/// A flag or file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    /// A flag's value is wrong.
    #[error("{flag}: {message}")]
    Flag {
        /// The flag, as typed (`--readers`).
        flag: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A file named by a flag is unusable.
    #[error("{flag} {}: {message}", path.display())]
    File {
        /// The flag.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    pub(crate) fn flag(flag: &'static str, message: impl Into<String>) -> Self {
        ConfigError::Flag {
            flag,
            message: message.into(),
        }
    }

    pub(crate) fn file(flag: &'static str, path: &Path, message: impl Into<String>) -> Self {
        ConfigError::File {
            flag,
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// The snapshot being served.
pub(crate) struct Snapshot {
    /// Its bytes, as the engine reads them.
    pub(crate) source: Arc<dyn PageSource>,
    /// Where they come from.
    pub(crate) origin: Origin,
    /// For logs: what it is.
    pub(crate) description: String,
}

/// Where a snapshot's bytes come from.
#[derive(Debug)]
pub(crate) enum Origin {
    /// Files on this host (`--memory-file`, `--snapshot-dir`).
    Local(Arc<LayeredSource>),
    /// Object storage through the host's chunk cache (`--snapshot-url`).
    Remote(Arc<RemoteSource>),
}

impl Snapshot {
    /// A snapshot of files on this host.
    fn local(source: LayeredSource, description: String) -> Self {
        let source = Arc::new(source);
        Snapshot {
            source: source.clone(),
            origin: Origin::Local(source),
            description,
        }
    }

    /// The files, when the snapshot is local (the next generation links or copies them).
    pub(crate) fn local_source(&self) -> Option<&LayeredSource> {
        match &self.origin {
            Origin::Local(source) => Some(source),
            Origin::Remote(_) => None,
        }
    }

    /// Waits until every chunk transfer under way has ended (none for a local snapshot).
    pub(crate) fn wait_fetches(&self) {
        if let Origin::Remote(remote) = &self.origin {
            remote.wait_fetches();
        }
    }

    /// The store's figures so far, when the snapshot is remote.
    pub(crate) fn store_stats(&self) -> Option<StoreStats> {
        match &self.origin {
            Origin::Local(_) => None,
            Origin::Remote(remote) => Some(remote.store().stats()),
        }
    }
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("origin", &self.origin)
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

/// Everything `serve` needs, checked.
#[derive(Debug)]
pub(crate) struct ServeConfig {
    pub(crate) socket: PathBuf,
    pub(crate) socket_group: Option<u32>,
    pub(crate) snapshot: Snapshot,
    pub(crate) engine: EngineConfig,
    pub(crate) prefetch: PrefetchMode,
    /// The working set to replay (with `--prefetch working-set`).
    pub(crate) working_set: Vec<Range<u64>>,
    pub(crate) record_working_set: Option<PathBuf>,
    pub(crate) next_generation: Option<PathBuf>,
    pub(crate) parent_files: ParentFiles,
    pub(crate) on_fatal: OnFatal,
    pub(crate) on_signal: OnSignal,
    /// `None`: wait forever.
    pub(crate) accept_timeout: Option<Duration>,
    pub(crate) handshake_timeout: Duration,
    pub(crate) policy: PeerPolicy,
    /// `--fault-around`, resolved to pages when a VMM's page size is known.
    pub(crate) fault_around: FaultAround,
    pub(crate) control: Option<PathBuf>,
    pub(crate) control_idle_timeout: Duration,
    /// `--metrics`.
    pub(crate) metrics: Option<MetricsAddr>,
    pub(crate) stats_json: Option<PathBuf>,
    pub(crate) keep_listening: bool,
    /// VMMs served at once (1 without `--keep-listening`).
    pub(crate) max_vmms: usize,
    /// Test hook: the source fails for good after this many reads.
    #[cfg(feature = "test-hooks")]
    pub(crate) fail_source_after: Option<u64>,
}

impl ServeConfig {
    /// Checks the flags and opens the snapshot and the working set.
    pub(crate) fn from_args(args: &ServeArgs) -> Result<Self, ConfigError> {
        if args.readers == 0 || args.readers > 256 {
            return Err(ConfigError::flag("--readers", "must be between 1 and 256"));
        }
        if args.fetchers == 0 || args.fetchers > 256 {
            return Err(ConfigError::flag("--fetchers", "must be between 1 and 256"));
        }
        if args.read_deadline.is_zero() {
            return Err(ConfigError::flag("--read-deadline", "must be above 0"));
        }
        if args.handshake_timeout.is_zero() {
            return Err(ConfigError::flag("--handshake-timeout", "must be above 0"));
        }
        let (snapshot, default_working_set) = open_snapshot(args)?;
        let image_size = snapshot.source.size();
        let working_set_path = args.working_set.clone().or(default_working_set);
        let working_set = match (args.prefetch, &working_set_path, &snapshot.origin) {
            (PrefetchMode::WorkingSet, Some(path), _) => working_set::read(path, image_size)
                .map_err(|e| ConfigError::flag("--working-set", e.to_string()))?,
            (PrefetchMode::WorkingSet, None, Origin::Remote(remote)) => {
                crate::store_flags::stored_working_set(remote)?
            }
            // A local snapshot always has a default path: not reached.
            (PrefetchMode::WorkingSet, None, Origin::Local(_)) => {
                return Err(ConfigError::flag(
                    "--working-set",
                    "no working set to replay",
                ));
            }
            _ if args.working_set.is_some() => {
                return Err(ConfigError::flag(
                    "--working-set",
                    "is replayed only with --prefetch working-set",
                ));
            }
            _ => Vec::new(),
        };
        let record_working_set = match &args.record_working_set {
            Some(None) => Some(working_set_path.ok_or_else(|| {
                ConfigError::flag(
                    "--record-working-set",
                    "give a FILE: the snapshot is in object storage, there is no directory \
                     beside it to write to",
                )
            })?),
            Some(Some(path)) => Some(path.clone()),
            None => None,
        };
        if let Some(path) = &record_working_set {
            check_parent_dir("--record-working-set", path)?;
        }
        if let Some(path) = &args.stats_json {
            check_parent_dir("--stats-json", path)?;
        }
        if let Some(dir) = &args.next_generation {
            if snapshot.local_source().is_none() {
                return Err(ConfigError::flag(
                    "--next-generation",
                    "not supported with --snapshot-url yet: writing the next generation \
                     needs the parent's data files on this host (pull the snapshot with \
                     `uffd-handler snapshot pull` and serve it with --snapshot-dir)",
                ));
            }
            prepare_dir("--next-generation", dir)?;
        }
        let engine = EngineConfig {
            readers: args.readers,
            fetchers: args.fetchers,
            read_deadline: args.read_deadline,
            // Set per VMM once its page size is known (`Daemon::serve_vmm`).
            fault_around_pages: 1,
            dirty_tracking: args.dirty_tracking,
            record_working_set: record_working_set.is_some(),
            ..EngineConfig::default()
        };
        let policy = if args.allow_uid.is_empty() {
            PeerPolicy::own_uid_and_root()
        } else {
            PeerPolicy::uids(args.allow_uid.iter().copied())
        };
        Ok(ServeConfig {
            socket: args.socket.clone(),
            socket_group: args.socket_group,
            snapshot,
            engine,
            prefetch: args.prefetch,
            working_set,
            record_working_set,
            next_generation: args.next_generation.clone(),
            parent_files: args.parent_files,
            on_fatal: args.on_fatal,
            on_signal: args.on_signal,
            accept_timeout: (!args.accept_timeout.is_zero()).then_some(args.accept_timeout),
            handshake_timeout: args.handshake_timeout,
            policy,
            fault_around: args.fault_around,
            control: args.control.clone(),
            control_idle_timeout: args.control_idle_timeout,
            metrics: args.metrics.clone(),
            stats_json: args.stats_json.clone(),
            keep_listening: args.keep_listening,
            max_vmms: max_vmms(args)?,
            #[cfg(feature = "test-hooks")]
            fail_source_after: args.fail_source_after,
        })
    }
}

/// Opens the snapshot; also returns the default working-set path beside it (none for a
/// snapshot in object storage: its working set is an object beside its header).
fn open_snapshot(args: &ServeArgs) -> Result<(Snapshot, Option<PathBuf>), ConfigError> {
    match (&args.memory_file, &args.snapshot_dir, &args.snapshot_url) {
        (None, None, Some(url)) => {
            if args.block_size.is_some() {
                return Err(ConfigError::flag(
                    "--block-size",
                    "applies to --memory-file only (a snapshot's header has its own)",
                ));
            }
            Ok((crate::store_flags::open_remote(args, url)?, None))
        }
        (Some(file), None, None) => {
            let block_size = args.block_size.unwrap_or(DEFAULT_BLOCK_SIZE);
            if !block_size.is_power_of_two()
                || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size)
            {
                return Err(ConfigError::flag(
                    "--block-size",
                    format!(
                        "{block_size} is not a power of two between {MIN_BLOCK_SIZE} and \
                         {MAX_BLOCK_SIZE}"
                    ),
                ));
            }
            let metadata = fs::metadata(file)
                .map_err(|e| ConfigError::file("--memory-file", file, e.to_string()))?;
            if !metadata.is_file() {
                return Err(ConfigError::file(
                    "--memory-file",
                    file,
                    "not a regular file",
                ));
            }
            if metadata.len() == 0 || metadata.len() % block_size != 0 {
                return Err(ConfigError::file(
                    "--memory-file",
                    file,
                    format!(
                        "its length {} is not a non-zero multiple of the block size {block_size} \
                         (--block-size)",
                        metadata.len()
                    ),
                ));
            }
            let source = LayeredSource::open_memory_file(file, block_size)
                .map_err(|e| ConfigError::file("--memory-file", file, e.to_string()))?;
            let mut default_ws = file.as_os_str().to_owned();
            default_ws.push(".working-set");
            let snapshot = Snapshot::local(source, format!("memory file {}", file.display()));
            Ok((snapshot, Some(default_ws.into())))
        }
        (None, Some(dir), None) => {
            if args.block_size.is_some() {
                return Err(ConfigError::flag(
                    "--block-size",
                    "applies to --memory-file only (a snapshot directory's header has its own)",
                ));
            }
            if !dir.is_dir() {
                return Err(ConfigError::file("--snapshot-dir", dir, "not a directory"));
            }
            let source = LayeredSource::open_dir(dir)
                .map_err(|e| ConfigError::file("--snapshot-dir", dir, e.to_string()))?;
            let generation = source.header().metadata().generation;
            let description = format!(
                "snapshot directory {} (generation {generation})",
                dir.display()
            );
            Ok((
                Snapshot::local(source, description),
                Some(dir.join("working-set")),
            ))
        }
        _ => Err(ConfigError::flag(
            "--memory-file/--snapshot-dir/--snapshot-url",
            "give exactly one",
        )),
    }
}

fn check_parent_dir(flag: &'static str, path: &Path) -> Result<(), ConfigError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if parent.is_dir() {
        Ok(())
    } else {
        Err(ConfigError::file(
            flag,
            path,
            format!("its directory {} does not exist", parent.display()),
        ))
    }
}

/// Creates `dir` if missing and checks it is a writable directory.
fn prepare_dir(flag: &'static str, dir: &Path) -> Result<(), ConfigError> {
    fs::create_dir_all(dir).map_err(|e| ConfigError::file(flag, dir, e.to_string()))?;
    if !dir.is_dir() {
        return Err(ConfigError::file(flag, dir, "not a directory"));
    }
    let probe = dir.join(format!(".uffd-handler-probe-{}", std::process::id()));
    fs::write(&probe, b"")
        .and_then(|()| fs::remove_file(&probe))
        .map_err(|e| ConfigError::file(flag, dir, format!("not writable: {e}")))
}

/// `--max-vmms` by default 16 with `--keep-listening`, 1 without, and 1 when each VMM writes
/// the same files (`--next-generation`, `--record-working-set`): two at once would overwrite
/// each other's.
fn max_vmms(args: &ServeArgs) -> Result<usize, ConfigError> {
    const DEFAULT_MAX_VMMS: usize = 16;
    let writes_files = args.next_generation.is_some() || args.record_working_set.is_some();
    match args.max_vmms {
        None if !args.keep_listening || writes_files => Ok(1),
        None => Ok(DEFAULT_MAX_VMMS),
        Some(0) => Err(ConfigError::flag("--max-vmms", "must be at least 1")),
        Some(n) if n > 1 && writes_files => Err(ConfigError::flag(
            "--max-vmms",
            format!(
                "{n} VMMs at once would write the same --next-generation or \
                 --record-working-set files; use 1 (the default with these flags)"
            ),
        )),
        Some(n) if n > 1024 => Err(ConfigError::flag("--max-vmms", "must be at most 1024")),
        Some(n) => Ok(n),
    }
}
