//! `uffd-handler snapshot push DIR URL` and `snapshot pull URL DIR`: a snapshot directory to
//! object storage and back, header last either way (see snapshot-store's `push_dir` and
//! `pull_dir`).

use std::path::Path;
use std::process::ExitCode;

use snapshot_store::{Store, pull_dir, push_dir};

use super::cli::{SnapshotCommand, StoreArgs};
use super::exit::DaemonExit;
use super::store_flags::store_config;

/// Runs the command: exit 0 with a summary on stdout, or 1 with the reason on stderr.
pub(crate) fn run(command: &SnapshotCommand) -> ExitCode {
    let outcome = match command {
        SnapshotCommand::Push { dir, url, store } => push(dir, url, store),
        SnapshotCommand::Pull { url, dir, store } => pull(url, dir, store),
    };
    match outcome {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            eprintln!("uffd-handler snapshot: {reason}");
            ExitCode::from(DaemonExit::Usage.code())
        }
    }
}

fn open(url: &str, args: &StoreArgs) -> Result<Store, String> {
    let config = store_config(args).map_err(|e| e.to_string())?;
    Store::open(url, config).map_err(|e| e.to_string())
}

fn push(dir: &Path, url: &str, args: &StoreArgs) -> Result<String, String> {
    if !dir.is_dir() {
        return Err(format!("{}: not a directory", dir.display()));
    }
    let store = open(url, args)?;
    let report = push_dir(dir, &store).map_err(|e| format!("pushing {}: {e}", dir.display()))?;
    Ok(format!(
        "pushed {} to {}: {} object(s) uploaded ({}), {} already there",
        dir.display(),
        store.url(),
        report.uploaded.len(),
        report.uploaded.join(", "),
        report.skipped.len()
    ))
}

fn pull(url: &str, dir: &Path, args: &StoreArgs) -> Result<String, String> {
    let store = open(url, args)?;
    pull_dir(&store, dir).map_err(|e| format!("pulling into {}: {e}", dir.display()))?;
    let stats = store.stats();
    Ok(format!(
        "pulled {} into {}: {} bytes in {} GET(s), {} retried",
        store.url(),
        dir.display(),
        stats.bytes_fetched,
        stats.gets,
        stats.retries
    ))
}
