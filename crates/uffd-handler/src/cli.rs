//! The `uffd-handler` command line (clap derive). Checks that need the file system live in
//! [`super::config`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use super::exit::EXIT_CODES_HELP;

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
}

/// The flags of `serve`.
#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("snapshot").required(true).args(["memory_file", "snapshot_dir"])))]
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
    /// Block size of a plain memory file's mapping (bytes, or with a K, M or G suffix;
    /// default 4096): the granularity of the diffs written from it. Guests with 4 KiB or
    /// 2 MiB pages work with either 4 KiB or 2 MiB.
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub block_size: Option<u64>,
    /// Threads that read the userfaultfd and serve the faults they read.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub readers: usize,
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
    /// Test hook: the source fails for good after N successful reads.
    #[cfg(feature = "test-hooks")]
    #[arg(long, value_name = "N", hide = true)]
    pub fail_source_after: Option<u64>,
}

/// `--fault-around`: the window a read fault installs around itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultAround {
    /// One page per fault (`off`, or `1`).
    Off,
    /// A window of this many bytes (`64K`, `256K`, `1M`: a size with a suffix).
    Bytes(u64),
    /// A window of this many pages (a plain number: 4, 16, 64; the flag's older form).
    Pages(u64),
}

/// The largest fault-around window: one 2 MiB copy inside a demand fault. On a 2 MiB-page
/// guest every window is therefore one page.
pub(crate) const FAULT_AROUND_MAX_BYTES: u64 = 2 << 20;

impl FaultAround {
    /// The window in pages of `page_size` bytes: a power of two, at least 1, at most
    /// [`FAULT_AROUND_MAX_BYTES`].
    pub(crate) fn pages(self, page_size: u64) -> u64 {
        let bytes = match self {
            FaultAround::Off => return 1,
            FaultAround::Bytes(bytes) => bytes,
            FaultAround::Pages(pages) => pages.saturating_mul(page_size),
        };
        let pages = (bytes.min(FAULT_AROUND_MAX_BYTES) / page_size.max(1)).max(1);
        // Round down to a power of two: windows are aligned.
        1 << pages.ilog2()
    }
}

/// Parses `--fault-around`: `off`, a page count (a plain number) or a size with a suffix.
pub(crate) fn parse_fault_around(s: &str) -> Result<FaultAround, String> {
    let s = s.trim();
    if s == "off" {
        return Ok(FaultAround::Off);
    }
    let has_suffix = s.ends_with(['K', 'k', 'M', 'm', 'G', 'g']);
    let n = parse_size(s)?;
    match (has_suffix, n) {
        (_, 0) => Err(format!("{s:?}: the window must not be empty (say `off`)")),
        (false, 1) => Ok(FaultAround::Off),
        (false, pages) if pages.is_power_of_two() => Ok(FaultAround::Pages(pages)),
        (false, _) => Err(format!("{s:?}: a page count must be a power of two")),
        (true, bytes) if bytes.is_power_of_two() && bytes >= 4096 => Ok(FaultAround::Bytes(bytes)),
        (true, _) => Err(format!(
            "{s:?}: a window in bytes must be a power of two of at least 4K"
        )),
    }
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

/// Parses `30`, `2.5`, `500ms`, `10s` or `2m`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 30, 2.5, 500ms, 10s, 2m)"))?;
    Duration::try_from_secs_f64(value * scale)
        .map_err(|_| format!("{text:?} is not a non-negative duration"))
}

/// A size in bytes with an optional K, M or G suffix (powers of 1024).
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let (digits, shift) = match s.as_bytes().last() {
        Some(b'K' | b'k') => (&s[..s.len() - 1], 10),
        Some(b'M' | b'm') => (&s[..s.len() - 1], 20),
        Some(b'G' | b'g') => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    let n: u64 = digits.parse().map_err(|e| format!("bad size {s:?}: {e}"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("size {s:?} overflows"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_and_without_units() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
    }

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
        let cli = parse(&["--record-working-set"]).unwrap();
        let CliCommand::Serve(args) = cli.command;
        assert_eq!(args.record_working_set, Some(None));
        let cli = parse(&["--record-working-set", "/w"]).unwrap();
        let CliCommand::Serve(args) = cli.command;
        assert_eq!(args.record_working_set, Some(Some(PathBuf::from("/w"))));
    }

    #[test]
    fn fault_around_in_bytes_or_pages_capped_at_2m() {
        let at = |s: &str, page: u64| parse_fault_around(s).unwrap().pages(page);
        assert_eq!(at("off", 4096), 1);
        assert_eq!(at("1", 4096), 1);
        assert_eq!(at("64K", 4096), 16);
        assert_eq!(at("16", 4096), 16);
        assert_eq!(at("64", 4096), 64);
        assert_eq!(at("4M", 4096), 512, "capped at 2 MiB");
        // A 2 MiB-page guest: every window is one page (the old `64` meant 128 MiB there).
        assert_eq!(at("64", 2 << 20), 1);
        assert_eq!(at("64K", 2 << 20), 1);
        for bad in ["0", "3", "12K", "1K", "x", ""] {
            assert!(parse_fault_around(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn sizes_with_suffixes() {
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("12"), Ok(12));
        assert!(parse_size("x").is_err());
        assert!(parse_size("99999999999G").is_err());
    }
}
