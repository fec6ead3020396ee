//! Finding the server's executable (built on demand under cargo), and a bounded wait for it
//! to exit.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::process::{Pid, PidfdFlags};

/// The environment variable naming the server's executable, to use instead of finding it.
pub const SERVER_ENV: &str = "TEST_FUSE_SERVER_BIN";

/// The `test-fuse-server` executable: [`SERVER_ENV`] if set, else the one in the running
/// test's target directory, built first (`cargo build --bin test-fuse-server`, same profile)
/// when running under cargo, so `cargo test -p <any crate>` works alone and never runs a
/// stale server.
///
/// # Panics
///
/// If the build fails or no executable can be found: a test cannot run without its storage.
pub fn server_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        if let Some(path) = std::env::var_os(SERVER_ENV) {
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
            build(Path::new(&cargo), profile_dir);
        }
        let candidate = profile_dir.join("test-fuse-server");
        assert!(
            candidate.is_file(),
            "{} does not exist: build it with `cargo build -p test-fuse` or set {SERVER_ENV}",
            candidate.display()
        );
        candidate
    })
}

/// `cargo build --bin test-fuse-server` into the target directory holding `profile_dir`.
fn build(cargo: &Path, profile_dir: &Path) {
    let target_dir = profile_dir
        .parent()
        .expect("a profile directory has a parent");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "--bin",
            "test-fuse-server",
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
        "`cargo build --bin test-fuse-server` failed: {status}"
    );
}

/// Whether process `pid` (a child not yet reaped) exits within `timeout`.
pub(crate) fn exited_within(pid: Pid, timeout: Duration) -> bool {
    let Ok(pidfd) = rustix::process::pidfd_open(pid, PidfdFlags::empty()) else {
        return true;
    };
    let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
    let Ok(timeout) = Timespec::try_from(timeout) else {
        return false;
    };
    loop {
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(n) => return n > 0,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return false,
        }
    }
}
