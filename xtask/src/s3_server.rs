//! The S3-compatible server snapshot-store's tests run against: `s3s-fs` from crates.io,
//! installed once under `target/tools/s3s-fs` with `cargo install --locked` (pinned version)
//! and found there again by later runs.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Pinned: 0.15 and later need a newer rustc than the project's toolchain.
const VERSION: &str = "0.14.1";

/// The environment variable the tests read the binary's path from.
pub(crate) const ENV: &str = "S3_SERVER_BIN";

/// Installs the server if it is not installed at the pinned version; returns its path.
pub(crate) fn ensure(root: &Path) -> Result<PathBuf, String> {
    let tools = root.join("target").join("tools");
    let install_root = tools.join("s3s-fs");
    let binary = install_root.join("bin").join("s3s-fs");
    if installed_version(&binary).as_deref() == Some(VERSION) {
        return Ok(binary);
    }
    eprintln!("xtask: installing s3s-fs {VERSION} (the S3 server of the store tests)");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args([
            "install",
            "--locked",
            "--force",
            "s3s-fs",
            "--version",
            VERSION,
        ])
        .args(["--features", "binary", "--root"])
        .arg(&install_root)
        .arg("--target-dir")
        .arg(tools.join("build"))
        .status()
        .map_err(|e| format!("cannot run {cargo}: {e}"))?;
    if !status.success() {
        return Err(format!("`cargo install s3s-fs` failed: {status}"));
    }
    Ok(binary)
}

/// The version `binary --version` reports (`s3s-fs 0.14.1`), if it runs.
fn installed_version(binary: &Path) -> Option<String> {
    let output = Command::new(binary).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace().nth(1).map(str::to_owned)
}
