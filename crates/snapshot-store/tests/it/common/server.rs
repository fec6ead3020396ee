//! The S3-compatible server the tests run: `s3s-fs` from crates.io, installed by
//! `cargo xtask s3-server` (and by `cargo xtask test`), serving a test directory on loopback.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use test_support::{TIMEOUT, TestDir};

/// The environment variable naming the `s3s-fs` executable (set by `cargo xtask test`).
pub(crate) const S3_SERVER_ENV: &str = "S3_SERVER_BIN";

/// Credentials of the test server (it accepts only these).
pub(crate) const ACCESS_KEY: &str = "uffd-test-access";
pub(crate) const SECRET_KEY: &str = "uffd-test-secret-not-a-real-one";

/// The bucket every test uses.
pub(crate) const BUCKET: &str = "snapshots";

/// The server binary: `$S3_SERVER_BIN`, else where `cargo xtask s3-server` installs it.
pub(crate) fn binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(S3_SERVER_ENV) {
        return Some(PathBuf::from(path));
    }
    let installed =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/tools/s3s-fs/bin/s3s-fs");
    installed.is_file().then_some(installed)
}

/// A running `s3s-fs` over its own directory, killed on drop.
pub(crate) struct S3Server {
    child: Child,
    addr: SocketAddr,
    _root: TestDir,
}

impl S3Server {
    /// Starts the server with [`BUCKET`] created, or `None` (the test reports the skip) when
    /// no binary is installed.
    pub(crate) fn start(test: &str) -> Option<S3Server> {
        let Some(binary) = binary() else {
            test_support::skip(
                test,
                &format!(
                    "no S3 server: ${S3_SERVER_ENV} is unset and target/tools/s3s-fs is not \
                     installed (run `cargo xtask s3-server`)"
                ),
            );
            return None;
        };
        let root = TestDir::new(&format!("{test}-s3"));
        std::fs::create_dir_all(root.path().join(BUCKET)).unwrap();
        // A free port: bound, read, released; the server binds it next (a rare race with
        // another process is answered by the readiness check below failing loudly).
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("finding a free port")
            .port();
        let child = Command::new(&binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let mut server = S3Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _root: root,
        };
        server.wait_ready();
        Some(server)
    }

    /// Where it listens.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        while TcpStream::connect(self.addr).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("s3s-fs exited before listening on {}: {status}", self.addr);
            }
            assert!(
                start.elapsed() < TIMEOUT,
                "s3s-fs did not listen on {} within {TIMEOUT:?}",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
