//! The `uffd-handler` daemon: a Firecracker-compatible userfaultfd page server for lazy
//! snapshot restore (see `docs/daemon.md` for the operator's guide).
//!
//! `uffd-handler serve` binds the socket Firecracker's `Uffd` memory backend connects to,
//! accepts one VMM within `--accept-timeout`, validates its handshake against the snapshot,
//! adopts the userfaultfd and serves it with the engine (`uffd-engine`) until the VMM exits. Then
//! it closes the uffd (never before: closing turns every untouched page into a silent zero
//! page), writes the working set if asked, prints the statistics and exits with a documented
//! code (`DaemonExit`, `EXIT_CODES_HELP`).
//!
//! With `--keep-listening` it serves VMMs concurrently, each with its own engine, up to
//! `--max-vmms`, until told to stop.
//!
//! While serving it answers a control socket (`stats`, `snapshot`, `stop`); `snapshot` writes
//! the next generation of the snapshot (a compact diff plus header) from the VMM's memory.
//! SIGTERM and SIGINT stop it gracefully per `--on-signal`; a fatal engine error kills the VMM
//! or leaves it per `--on-fatal`.

mod cli;
mod config;
mod control;
mod endpoint;
mod exit;
#[cfg(feature = "test-hooks")]
mod fail_source;
mod generation;
mod mailbox;
mod parse;
mod prefetch_accuracy;
mod remote_source;
mod run;
mod session;
mod signals;
mod stats;
mod store_flags;
mod transfer;
mod vmm_exit;
mod vmm_memory;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use cli::{Cli, CliCommand, ServeArgs};

use exit::{DaemonExit, ExitReport};

/// Parses the command line (a usage error exits 1, help and version 0) and runs the
/// subcommand.
fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            let code = if e.use_stderr() {
                DaemonExit::Usage.code()
            } else {
                0
            };
            return ExitCode::from(code);
        }
    };
    match cli.command {
        CliCommand::Serve(args) => serve(&args).exit.into(),
        CliCommand::Snapshot(command) => transfer::run(&command),
    }
}

/// Runs `serve`: sets up logging and signals, checks the flags, serves, and prints the
/// outcome as the last line on stderr.
fn serve(args: &ServeArgs) -> ExitReport {
    let outcome = match start_and_serve(args) {
        Ok(outcome) | Err(outcome) => outcome,
    };
    eprintln!("{outcome}");
    outcome
}

fn start_and_serve(args: &ServeArgs) -> Result<ExitReport, ExitReport> {
    let usage = |message: String| ExitReport::new(DaemonExit::Usage, message);
    let filter =
        EnvFilter::try_new(&args.log).map_err(|e| usage(format!("--log {:?}: {e}", args.log)))?;
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(filter)
        .try_init();
    // Before any thread starts, so every thread inherits the blocked mask.
    let signals = signals::StopSignals::install()
        .map_err(|e| usage(format!("cannot set up SIGTERM/SIGINT handling: {e}")))?;
    let config = config::ServeConfig::from_args(args).map_err(|e| usage(e.to_string()))?;
    let daemon = run::Daemon::new(config, signals)?;
    Ok(daemon.run())
}
