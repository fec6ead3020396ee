//! A real S3-compatible server for tests: `s3s-fs` (installed by `cargo xtask s3-server`,
//! named by `$S3_SERVER_BIN` under `cargo xtask test`) serving a test directory on loopback,
//! with fixed test credentials and one bucket.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{TIMEOUT, TestDir, skip};

/// The environment variable naming the `s3s-fs` executable (set by `cargo xtask test`).
pub const S3_SERVER_ENV: &str = "S3_SERVER_BIN";
/// The access key the server accepts.
pub const ACCESS_KEY: &str = "uffd-test-access";
/// The secret key the server accepts (a test value, not a secret).
pub const SECRET_KEY: &str = "uffd-test-secret-not-a-real-one";
/// The bucket the server starts with.
pub const BUCKET: &str = "snapshots";

/// The server binary: `$S3_SERVER_BIN`, else where `cargo xtask s3-server` installs it.
pub fn binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(S3_SERVER_ENV) {
        return Some(PathBuf::from(path));
    }
    let installed =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/tools/s3s-fs/bin/s3s-fs");
    installed.is_file().then_some(installed)
}

/// A running `s3s-fs` over its own directory, killed on drop.
pub struct S3Server {
    child: Child,
    addr: SocketAddr,
    _root: TestDir,
}

impl S3Server {
    /// Starts the server with [`BUCKET`] created, or `None` after reporting the skip of
    /// `test` when no binary is installed.
    pub fn start(test: &str) -> Option<S3Server> {
        let Some(binary) = binary() else {
            skip(
                test,
                &format!(
                    "no S3 server: ${S3_SERVER_ENV} is unset and target/tools/s3s-fs is not \
                     installed (run `cargo xtask s3-server`)"
                ),
            );
            return None;
        };
        let root = TestDir::new(&format!("{test}-s3"));
        std::fs::create_dir_all(root.path().join(BUCKET)).expect("creating the bucket");
        // A free port: bound, read, released; the server binds it next (a rare race with
        // another process makes the readiness check below fail loudly).
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
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its endpoint URL (`http://127.0.0.1:PORT`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The `object_store` options that reach it: endpoint, credentials, region, plain HTTP.
    pub fn options(&self) -> Vec<(String, String)> {
        [
            ("aws_endpoint", self.endpoint().as_str()),
            ("aws_access_key_id", ACCESS_KEY),
            ("aws_secret_access_key", SECRET_KEY),
            ("aws_region", "us-east-1"),
            ("aws_allow_http", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// Kills the server and waits for it: from now on every connection is refused.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
            // A bounded poll for a port another process opens.
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
