//! Executables of other workspace packages for tests (cargo gives a test the path of its own
//! package's binaries only): named by an environment variable, or built on demand.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The executable `bin` of the package whose manifest directory is `manifest_dir`: the path
/// in `$env` if set; otherwise the one in the running test's target directory, brought up to
/// date first by `cargo build --bin <bin>` (same profile) when the test runs under cargo, so
/// `cargo test -p <any crate>` works alone and never runs a stale executable.
///
/// # Panics
///
/// If the build fails or no executable can be found: the test cannot run without it.
pub fn workspace_binary(env: &str, manifest_dir: &Path, bin: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/<test> -> target/<profile>
    let profile_dir = exe
        .parent()
        .filter(|deps| deps.ends_with("deps"))
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("{} is not in a cargo target directory", exe.display()));
    if let Some(cargo) = std::env::var_os("CARGO") {
        build(Path::new(&cargo), profile_dir, manifest_dir, bin);
    }
    let candidate = profile_dir.join(bin);
    assert!(
        candidate.is_file(),
        "{} does not exist: build it with `cargo build --bin {bin}` or set {env}",
        candidate.display()
    );
    candidate
}

/// `cargo build --bin <bin>` into the target directory holding `profile_dir`, same profile.
fn build(cargo: &Path, profile_dir: &Path, manifest_dir: &Path, bin: &str) {
    let target_dir = profile_dir
        .parent()
        .expect("a profile directory has a parent");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    let status = Command::new(cargo)
        .args(["build", "--quiet", "--bin", bin, "--profile", profile])
        .arg("--manifest-path")
        .arg(manifest_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", cargo.display()));
    assert!(
        status.success(),
        "`cargo build --bin {bin}` failed: {status}"
    );
}
