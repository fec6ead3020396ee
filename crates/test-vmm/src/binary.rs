//! Where the `test-vmm` executable is, for tests of other crates (cargo gives a test the path
//! of its own package's binaries only).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The environment variable that, when set, names the `test-vmm` executable to use.
pub const BINARY_ENV: &str = "TEST_VMM_BIN";

/// The `test-vmm` executable: `$TEST_VMM_BIN` if set; otherwise the one in the running test's
/// target directory, brought up to date first by `cargo build -p test-vmm` when the test runs
/// under cargo (so `cargo test -p <any crate>` works alone and never runs a stale VMM).
///
/// # Panics
///
/// If the build fails or no executable can be found: a test cannot run without its VMM.
pub fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        if let Some(path) = std::env::var_os(BINARY_ENV) {
            return PathBuf::from(path);
        }
        let exe = std::env::current_exe().expect("the test's own path");
        // target/<profile>/deps/<test> -> target/<profile>
        let profile_dir = exe
            .parent()
            .filter(|deps| deps.ends_with("deps"))
            .and_then(Path::parent)
            .unwrap_or_else(|| panic!("{} is not in a cargo target directory", exe.display()));
        let candidate = profile_dir.join("test-vmm");
        if let Some(cargo) = std::env::var_os("CARGO") {
            build(Path::new(&cargo), profile_dir);
        }
        assert!(
            candidate.is_file(),
            "{} does not exist: build it with `cargo build -p test-vmm` or set {BINARY_ENV}",
            candidate.display()
        );
        candidate
    })
}

/// `cargo build -p test-vmm` into the target directory holding `profile_dir`, same profile.
fn build(cargo: &Path, profile_dir: &Path) {
    let target_dir = profile_dir
        .parent()
        .expect("a profile directory has a parent");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => "dev",
    };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "--bin",
            "test-vmm",
            "--profile",
            profile,
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", cargo.display()));
    assert!(
        status.success(),
        "`cargo build -p test-vmm` failed: {status}"
    );
}
