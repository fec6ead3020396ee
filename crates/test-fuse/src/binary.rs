//! Finding the server's executable (built on demand under cargo), and a bounded wait for it
//! to exit.

use std::path::{Path, PathBuf};
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
        test_support::workspace_binary(
            SERVER_ENV,
            Path::new(env!("CARGO_MANIFEST_DIR")),
            "test-fuse-server",
        )
    })
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
