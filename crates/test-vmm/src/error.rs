//! What can go wrong when driving a test VMM.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use crate::RemoteError;

/// An error of the driver API.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// The configuration is invalid (checked before spawning).
    #[error("bad test VMM configuration: {0}")]
    Config(String),
    /// The binary could not be started.
    #[error("cannot start {}: {source}", binary.display())]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The test VMM started but failed before sending its handshake.
    #[error("the test VMM failed at {stage}: {message}\n{stderr}")]
    Startup {
        /// `args`, `mmap`, `uffd`, `register`, `connect` or `send`.
        stage: String,
        /// Its error (for `connect`: ENOENT without a socket, ECONNREFUSED without a listener).
        message: String,
        /// Its stderr.
        stderr: String,
    },
    /// The test VMM answered the request with an error.
    #[error("the test VMM refused: {0}")]
    Remote(#[from] RemoteError),
    /// No answer in time (the handler may be dead or stuck: the test VMM's touch hangs, as a
    /// Firecracker guest would). The test VMM keeps running.
    #[error("no answer to {request} within {after:?}")]
    Timeout {
        /// What was asked.
        request: String,
        /// How long the driver waited.
        after: Duration,
    },
    /// The test VMM exited (or was killed) before answering.
    #[error("the test VMM exited ({status:?}) before answering\n{stderr}")]
    Exited {
        /// Its exit status, if it could be reaped in time.
        status: Option<ExitStatus>,
        /// The last lines of its stderr.
        stderr: String,
    },
    /// The test VMM said something the driver did not expect.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A system call of the driver failed.
    #[error("driver I/O: {0}")]
    Io(#[from] std::io::Error),
}
