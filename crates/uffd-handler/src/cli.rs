//! The `uffd-handler` command line (clap derive). Checks that need the file system live in
//! [`super::config`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use super::exit::EXIT_CODES_HELP;
pub(crate) use crate::parse::{
    FaultAround, MetricsAddr, parse_duration, parse_fault_around, parse_metrics_addr, parse_size,
};

/// `uffd-handler`: serves a microVM's guest memory from a snapshot, lazily, through the
/// userfaultfd a Firecracker-compatible VMM hands over on a Unix socket.
#[derive(Debug, Clone, Parser)]
#[command(name = "uffd-handler", version, after_help = EXIT_CODES_HELP)]
pub(crate) struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: CliCommand,
}

/// The subcommands.
#[derive(Debug, Clone, Subcommand)]
pub(crate) enum CliCommand {
    /// Listen on a socket, accept a VMM's handshake and serve its page faults from a snapshot
    /// until it exits.
    #[command(after_help = EXIT_CODES_HELP)]
    Serve(Box<ServeArgs>),
    /// Copy a snapshot directory to object storage or back (exit 0, or 1 with the reason).
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
}

/// `uffd-handler snapshot ...`.
#[derive(Debug, Clone, Subcommand)]
pub(crate) enum SnapshotCommand {
    /// Upload a snapshot directory (data files, working set, header last: a header in the
    /// store always has its data). Data objects already there with the right length are
    /// skipped.
    Push {
        /// The snapshot directory (`header` plus `<uuid>.data` files).
        dir: PathBuf,
        /// Where to: `s3://bucket/prefix`, `gs://`, `az://`, `http(s)://`, `file://`.
        url: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Download a snapshot from object storage into a directory (created if missing), header
    /// last.
    Pull {
        /// Where from.
        url: String,
        /// The snapshot directory to write.
        dir: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// How to talk to the object store (`--snapshot-url`, `snapshot push`/`pull`).
#[derive(Debug, Clone, Args)]
pub(crate) struct StoreArgs {
    /// An object_store setting, after the store's usual environment (`AWS_*`, `GOOGLE_*`,
    /// `AZURE_*`): `aws_endpoint=http://127.0.0.1:9000`, `aws_allow_http=true`,
    /// `aws_region=...`, ... Repeat for more. Values are never logged.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_store_option)]
    pub store_option: Vec<(String, String)>,
    /// Attempts per store request before it fails (then the engine's own retries, then
    /// fatal).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub store_attempts: u32,
    /// A store read that receives no byte for this long is abandoned and retried (not a
    /// deadline on the whole transfer).
    #[arg(long, value_name = "DURATION", default_value = "5", value_parser = parse_duration)]
    pub store_idle_timeout: Duration,
}

/// `KEY=VALUE` of `--store-option`.
fn parse_store_option(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err("expected KEY=VALUE".to_owned()),
    }
}

/// The flags of `serve`.
#[derive(Debug, Clone, Args)]
#[command(group(
    clap::ArgGroup::new("snapshot")
        .required(true)
        .args(["memory_file", "snapshot_dir", "snapshot_url"])
))]
pub(crate) struct ServeArgs {
    /// The Unix socket the VMM connects to (Firecracker's `mem_backend.backend_path`). Created
    /// with mode 0600; a stale socket there is replaced, any other file is an error.
    #[arg(long, value_name = "PATH")]
    pub socket: PathBuf,
    /// Give the socket to this group with mode 0660 (for a VMM running as another user of
    /// the group).
    #[arg(long, value_name = "GID")]
    pub socket_group: Option<u32>,
    /// Serve a plain memory file (Firecracker's snapshot memory file).
    #[arg(long, value_name = "FILE")]
    pub memory_file: Option<PathBuf>,
    /// Serve a snapshot directory: `header` plus `<uuid>.data` files of every build it
    /// references.
    #[arg(long, value_name = "DIR")]
    pub snapshot_dir: Option<PathBuf>,
    /// Serve a snapshot directory kept in object storage (`s3://bucket/prefix`, `gs://`,
    /// `az://`, `http(s)://`, `file://`), fetched lazily through the host's chunk cache.
    #[arg(long, value_name = "URL")]
    pub snapshot_url: Option<String>,
    /// With `--snapshot-url`: the host's chunk cache, shared by every restore on the host
    /// (created with mode 0700 if missing).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/var/cache/uffd-handler",
        requires = "snapshot_url"
    )]
    pub cache_dir: PathBuf,
    /// With `--snapshot-url`: the fetch unit of the chunk cache (a power of two of at least
    /// 4 KiB; default 4M). A cache directory holds each build at one chunk size.
    #[arg(long, value_name = "BYTES", value_parser = parse_size, requires = "snapshot_url")]
    pub chunk_size: Option<u64>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Block size of a plain memory file's mapping (bytes, or with a K, M or G suffix;
    /// default 4096): the granularity of the diffs written from it. Guests with 4 KiB or
    /// 2 MiB pages work with either 4 KiB or 2 MiB.
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub block_size: Option<u64>,
    /// Threads that read the userfaultfd and serve the faults they read.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub readers: usize,
    /// Threads that read snapshot bytes that are not in the page cache, so that no storage
    /// read holds up a reader. Each stalled read holds one until it returns.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub fetchers: usize,
    /// How long a snapshot read may take before it counts as a failure and the page is
    /// retried (woken after the backoff, read again); the retries are bounded, then fatal.
    #[arg(long, value_name = "DURATION", default_value = "2", value_parser = parse_duration)]
    pub read_deadline: std::time::Duration,
    /// Fault-around window: a read fault installs the aligned window of still-missing pages
    /// around it in one copy. A size (`64K`, `256K`, `1M`), capped at 2 MiB so that one
    /// demand fault copies 2 MiB at most (one page on a 2 MiB-page guest); a plain number is
    /// a page count, as before; `off` is one page.
    #[arg(long, value_name = "BYTES|PAGES", default_value = "off", value_parser = parse_fault_around)]
    pub fault_around: FaultAround,
    /// What to install in the background while the guest runs: nothing, the whole image in
    /// ascending order, or the working set's pages in recorded order and then the rest.
    #[arg(long, value_name = "MODE", default_value = "none")]
    pub prefetch: PrefetchMode,
    /// The working set to replay with `--prefetch working-set` (default: `working-set` in the
    /// snapshot directory, or `<memory file>.working-set`).
    #[arg(long, value_name = "FILE")]
    pub working_set: Option<PathBuf>,
    /// Record the order in which the guest's faults first touched pages and write it to FILE
    /// when the VMM exits (default FILE: as for `--working-set`).
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    pub record_working_set: Option<Option<PathBuf>>,
    /// Track the pages the guest writes (registers write protection), for `snapshot`.
    #[arg(long)]
    pub dirty_tracking: bool,
    /// Where the control socket's `snapshot` writes the next generation (a snapshot
    /// directory, created if missing). Needs `--dirty-tracking`.
    #[arg(long, value_name = "DIR", requires = "dirty_tracking")]
    pub next_generation: Option<PathBuf>,
    /// How the parent generation's data files get into `--next-generation`: hard links
    /// (falling back to a copy across file systems) or copies.
    #[arg(long, value_name = "HOW", default_value = "hardlink")]
    pub parent_files: ParentFiles,
    /// On a fatal engine error (e.g. the snapshot source fails for good): kill the VMM
    /// through its pidfd and exit, or exit leaving it (its faulting threads then stay blocked
    /// until its owner kills it; it is never fed zeros).
    #[arg(long, value_name = "POLICY", default_value = "kill")]
    pub on_fatal: OnFatal,
    /// On SIGTERM, SIGINT or the control socket's `stop`: install every remaining page and
    /// let the VMM run on without a handler, or kill the VMM.
    #[arg(long, value_name = "POLICY", default_value = "graduate")]
    pub on_signal: OnSignal,
    /// How long to wait for a VMM to connect (seconds, or with a ms/s/m suffix; 0: forever).
    #[arg(long, value_name = "DURATION", default_value = "60", value_parser = parse_duration)]
    pub accept_timeout: Duration,
    /// How long a connected VMM may take to send its handshake.
    #[arg(long, value_name = "DURATION", default_value = "5", value_parser = parse_duration)]
    pub handshake_timeout: Duration,
    /// A uid allowed to hand over a userfaultfd (SO_PEERCRED); repeat for more (default: this
    /// process's uid and root).
    #[arg(long, value_name = "UID")]
    pub allow_uid: Vec<u32>,
    /// A control connection that sends no command for this long is closed (at most 16 are
    /// served at once; more are answered with an error and closed).
    #[arg(long, value_name = "DURATION", default_value = "30", value_parser = parse_duration)]
    pub control_idle_timeout: Duration,
    /// A control socket (mode 0600) taking line commands: `stats`, `snapshot`, `stop`.
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// Serve the metrics in the Prometheus text format (OpenMetrics on request) over HTTP at
    /// `/metrics` on ADDR: a Unix socket path (anything with a `/`; mode 0600) or a loopback
    /// `host:port` (`127.0.0.1:9100`, `[::1]:9100`, `localhost:9100`). Other hosts are refused:
    /// the endpoint has no authentication.
    #[arg(long, value_name = "ADDR", value_parser = parse_metrics_addr)]
    pub metrics: Option<MetricsAddr>,
    /// Also write the statistics at exit to FILE, as JSON.
    #[arg(long, value_name = "FILE")]
    pub stats_json: Option<PathBuf>,
    /// Log filter (tracing-subscriber EnvFilter syntax); logs go to stderr.
    #[arg(long, value_name = "FILTER", default_value = "info")]
    pub log: String,
    /// Serve one VMM, then exit (the default).
    #[arg(long, conflicts_with = "keep_listening")]
    pub once: bool,
    /// After a bad handshake or a served VMM, accept the next VMM (until a signal or `stop`).
    #[arg(long)]
    pub keep_listening: bool,
    /// With `--keep-listening`: how many VMMs are served at once, each with its own engine
    /// (default 16; 1 with `--next-generation` or `--record-working-set`, whose files one VMM
    /// at a time writes). A VMM beyond it is refused after its handshake and killed (or left
    /// to its owner, per `--on-fatal`); the others are served on.
    #[arg(long, value_name = "N", requires = "keep_listening")]
    pub max_vmms: Option<usize>,
    /// Test hook: the source fails for good after N successful reads.
    #[cfg(feature = "test-hooks")]
    #[arg(long, value_name = "N", hide = true)]
    pub fail_source_after: Option<u64>,
}

/// `--prefetch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum PrefetchMode {
    /// Demand faults only.
    None,
    /// The whole image, ascending.
    All,
    /// The recorded working set in order, then the rest ascending.
    WorkingSet,
}

/// `--parent-files`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ParentFiles {
    /// Hard links; a copy where the directories are on different file systems.
    Hardlink,
    /// Copies.
    Copy,
}

/// `--on-fatal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OnFatal {
    /// Kill the VMM (SIGKILL through its pidfd), wait for it, then exit.
    Kill,
    /// Exit, leaving the VMM to its owner.
    Exit,
}

/// `--on-signal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OnSignal {
    /// Install every remaining page, unregister, and let the VMM run on.
    Graduate,
    /// Kill the VMM and wait for it.
    Kill,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn next_generation_needs_dirty_tracking() {
        let parse = |extra: &[&str]| {
            let mut args = vec![
                "uffd-handler",
                "serve",
                "--socket",
                "/s",
                "--memory-file",
                "/m",
            ];
            args.extend(extra);
            Cli::try_parse_from(args)
        };
        assert!(parse(&["--next-generation", "/d"]).is_err());
        assert!(parse(&["--next-generation", "/d", "--dirty-tracking"]).is_ok());
        assert!(parse(&["--once", "--keep-listening"]).is_err());
        assert!(parse(&["--fault-around", "16"]).is_ok());
        assert!(parse(&["--fault-around", "64K"]).is_ok());
        assert!(parse(&["--fault-around", "12"]).is_err());
        assert!(parse(&["--metrics", "127.0.0.1:9100"]).is_ok());
        assert!(parse(&["--metrics", "0.0.0.0:9100"]).is_err());
        assert!(parse(&["--snapshot-url", "s3://b/p"]).is_err());
        assert!(parse(&["--store-option", "novalue"]).is_err());
        let serve_args = |cli: Cli| match cli.command {
            CliCommand::Serve(args) => args,
            CliCommand::Snapshot(_) => panic!("not serve"),
        };
        let args = serve_args(parse(&["--record-working-set"]).unwrap());
        assert_eq!(args.record_working_set, Some(None));
        let args = serve_args(parse(&["--record-working-set", "/w"]).unwrap());
        assert_eq!(args.record_working_set, Some(Some(PathBuf::from("/w"))));
        let args = serve_args(parse(&["--store-option", "aws_region=a=b"]).unwrap());
        assert_eq!(
            args.store.store_option,
            vec![("aws_region".to_owned(), "a=b".to_owned())]
        );
    }
}
