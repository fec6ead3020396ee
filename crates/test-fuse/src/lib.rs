#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod binary;
mod protocol;
pub mod server;
mod types;

pub use binary::{SERVER_ENV, server_binary};
pub use types::{Fault, ReadCounts};

/// A mount could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The backing directory is not a readable directory.
    #[error("the backing directory {path} cannot be used: {source}")]
    Backing {
        /// The directory given.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The server process could not be started.
    #[error("starting the FUSE server {binary}: {source}")]
    Spawn {
        /// The server's executable.
        binary: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The server could not mount (its reason, e.g. `mount(2)` or `/dev/fuse` failing).
    #[error("mounting FUSE on {path}: {reason}")]
    Mount {
        /// The mount point given.
        path: PathBuf,
        /// The server's words.
        reason: String,
    },
}

/// How the file system is mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountOptions {
    /// The readahead the kernel is asked to use, in bytes (at least one byte; the kernel
    /// rounds to pages). Default 4096: a page fault on a mapping reads that page alone.
    pub max_readahead: u32,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            max_readahead: 4096,
        }
    }
}

/// Whether this process can mount FUSE here (root, `/dev/fuse` openable); if not, reports
/// `test` as skipped with the reason.
pub fn fuse_or_skip(test: &str) -> bool {
    if !rustix::process::geteuid().is_root() {
        test_support::skip(test, "mounting FUSE without fusermount needs root");
        return false;
    }
    let device = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse");
    match device {
        Ok(_) => true,
        Err(e) => {
            test_support::skip(test, &format!("/dev/fuse cannot be opened: {e}"));
            false
        }
    }
}

/// The server process and its command pipe: one command, one answer line, at a time.
struct Server {
    child: Child,
    io: Mutex<Option<(ChildStdin, BufReader<ChildStdout>)>>,
}

impl Server {
    /// Sends `command`, returns the answer line.
    ///
    /// # Panics
    ///
    /// If the server is gone or answers with an error: a test cannot go on without its
    /// storage.
    fn ask(&self, command: &str) -> String {
        self.try_ask(command)
            .unwrap_or_else(|e| panic!("the FUSE server, asked {command:?}: {e}"))
    }

    /// [`Server::ask`], with what went wrong instead of a panic.
    fn try_ask(&self, command: &str) -> Result<String, String> {
        let mut io = self.io.lock().unwrap_or_else(|p| p.into_inner());
        let (stdin, stdout) = io.as_mut().ok_or("the mount was dropped")?;
        let mut line = String::new();
        let sent = writeln!(stdin, "{command}").and_then(|()| stdin.flush());
        match sent.and_then(|()| stdout.read_line(&mut line)) {
            Ok(n) if n > 0 && !line.starts_with("error") => Ok(line.trim_end().to_string()),
            Ok(_) => Err(format!("answered {line:?}")),
            Err(e) => Err(format!("gone: {e}")),
        }
    }
}

/// A mounted pass-through file system, served by a `test-fuse-server` process; unmounted on
/// drop (held reads are served first).
///
/// Drop it before removing the directories it uses (declare it after the test's `TestDir`).
pub struct FuseMount {
    mountpoint: PathBuf,
    backing: PathBuf,
    server: Arc<Server>,
}

impl std::fmt::Debug for FuseMount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FuseMount")
            .field("mountpoint", &self.mountpoint)
            .field("backing", &self.backing)
            .finish()
    }
}

impl FuseMount {
    /// Mounts the files of `backing` on `mountpoint` (an existing, empty directory) with the
    /// default [`MountOptions`].
    ///
    /// # Errors
    ///
    /// [`MountError`] naming the directory or the server that failed.
    pub fn mount(backing: &Path, mountpoint: &Path) -> Result<FuseMount, MountError> {
        FuseMount::mount_with(backing, mountpoint, MountOptions::default())
    }

    /// [`FuseMount::mount`] with `options`.
    ///
    /// # Errors
    ///
    /// [`MountError`] naming the directory or the server that failed.
    pub fn mount_with(
        backing: &Path,
        mountpoint: &Path,
        options: MountOptions,
    ) -> Result<FuseMount, MountError> {
        let backing_error = |source| MountError::Backing {
            path: backing.to_path_buf(),
            source,
        };
        let backing = backing.canonicalize().map_err(backing_error)?;
        std::fs::read_dir(&backing).map_err(backing_error)?;
        let binary = server_binary();
        let spawn_error = |source| MountError::Spawn {
            binary: binary.to_path_buf(),
            source,
        };
        let mut child = Command::new(binary)
            .arg(&backing)
            .arg(mountpoint)
            .arg(options.max_readahead.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(spawn_error)?;
        let stdin = child.stdin.take().expect("piped stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut ready = String::new();
        stdout.read_line(&mut ready).map_err(spawn_error)?;
        if ready.trim_end() != "ready" {
            let _ = child.kill();
            let _ = child.wait();
            return Err(MountError::Mount {
                path: mountpoint.to_path_buf(),
                reason: ready.trim_end().to_string(),
            });
        }
        Ok(FuseMount {
            mountpoint: mountpoint.to_path_buf(),
            backing,
            server: Arc::new(Server {
                child,
                io: Mutex::new(Some((stdin, stdout))),
            }),
        })
    }

    /// The path of file `name` through the mount.
    pub fn path(&self, name: &str) -> PathBuf {
        self.mountpoint.join(name)
    }

    /// The path of file `name` in the backing directory (write the test's files there).
    pub fn backing_path(&self, name: &str) -> PathBuf {
        self.backing.join(name)
    }

    /// Installs a rule: `fault` acts on reads of file `name` overlapping the byte `range`.
    /// Rules are tried in installation order; the first active one that matches acts.
    ///
    /// # Panics
    ///
    /// If `name` holds whitespace or the server is gone.
    pub fn inject(&self, name: &str, range: Range<u64>, fault: Fault) -> Injection {
        assert!(
            !name.is_empty() && !name.contains(char::is_whitespace),
            "file name {name:?}: one word"
        );
        let answer = self.server.ask(&format!(
            "inject {name} {} {} {}",
            range.start,
            range.end,
            protocol::fault_words(fault)
        ));
        let id = answer
            .strip_prefix("ok ")
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("the FUSE server answered inject with {answer:?}"));
        Injection {
            server: self.server.clone(),
            id,
            file: name.to_string(),
            range,
            fault,
        }
    }

    /// Every read the mount answered so far, whatever rule met it.
    pub fn counts(&self) -> ReadCounts {
        parse_counts(&self.server.ask("totals"))
    }
}

fn parse_counts(answer: &str) -> ReadCounts {
    protocol::parse_counts(answer)
        .unwrap_or_else(|| panic!("the FUSE server answered counts with {answer:?}"))
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        // `quit`, or end of input: the server serves what it holds, unmounts and exits.
        let io = self
            .server
            .io
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some((mut stdin, _)) = io {
            let _ = writeln!(stdin, "quit");
        }
        let pid = rustix::process::Pid::from_child(&self.server.child);
        if !binary::exited_within(pid, test_support::TIMEOUT) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
        // Reaps the server (its `Child` is only reaped here, never elsewhere).
        let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
    }
}

/// A rule installed with [`FuseMount::inject`]: its counts, a bounded wait for held reads,
/// and the release of a stall. Dropping the handle leaves the rule in place.
#[derive(Clone)]
pub struct Injection {
    server: Arc<Server>,
    id: u64,
    file: String,
    range: Range<u64>,
    fault: Fault,
}

impl std::fmt::Debug for Injection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let counts = self.server.try_ask(&format!("counts {}", self.id));
        f.debug_struct("Injection")
            .field("file", &self.file)
            .field("range", &self.range)
            .field("fault", &self.fault)
            .field("counts", &counts)
            .finish()
    }
}

impl Injection {
    /// The reads this rule matched, and what it did to them.
    pub fn counts(&self) -> ReadCounts {
        parse_counts(&self.server.ask(&format!("counts {}", self.id)))
    }

    /// The byte ranges of the reads this rule matched, in arrival order.
    pub fn matched(&self) -> Vec<Range<u64>> {
        let answer = self.server.ask(&format!("matched {}", self.id));
        protocol::parse_ranges(&answer)
            .unwrap_or_else(|| panic!("the FUSE server answered matched with {answer:?}"))
    }

    /// How many reads are held by this rule right now.
    pub fn held(&self) -> usize {
        let answer = self.server.ask(&format!("held {}", self.id));
        answer
            .parse()
            .unwrap_or_else(|_| panic!("the FUSE server answered held with {answer:?}"))
    }

    /// Waits until at least `n` reads are held by this rule (a stall has really caught a
    /// read), at most `timeout`. Returns whether they are.
    pub fn wait_held(&self, n: usize, timeout: Duration) -> bool {
        let millis = timeout.as_millis();
        self.server
            .ask(&format!("wait-held {} {n} {millis}", self.id))
            .as_str()
            == "1"
    }

    /// Turns the rule off and serves every read it holds. Later reads pass through.
    pub fn release(&self) {
        self.server.ask(&format!("release {}", self.id));
    }

    /// Whether the rule still acts (a `FailNext` or `ShortNext` with a count left, a
    /// `FailAlways`, or a stall not yet released).
    pub fn is_active(&self) -> bool {
        self.server.ask(&format!("active {}", self.id)).as_str() == "1"
    }
}
