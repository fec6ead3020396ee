//! Where the `test-vmm` executable is, for tests of other crates (cargo gives a test the path
//! of its own package's binaries only).

use std::path::{Path, PathBuf};
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
        test_support::workspace_binary(
            BINARY_ENV,
            Path::new(env!("CARGO_MANIFEST_DIR")),
            "test-vmm",
        )
    })
}
