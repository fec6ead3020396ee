//! `test-vmm`: behaves towards a page-fault handler exactly as Firecracker does, then obeys
//! JSON-line requests on stdin (see `test_vmm`).

use std::process::ExitCode;

use clap::Parser;
use test_vmm::{VmmArgs, run};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    run(&VmmArgs::parse())
}
