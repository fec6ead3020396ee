//! The `uffd-handler` daemon as the demo runs it: a child process, its sockets, its control
//! commands.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running daemon.
pub(crate) struct Daemon {
    child: Child,
    pub(crate) socket: PathBuf,
    control: PathBuf,
    pub(crate) stats_json: PathBuf,
}

impl Daemon {
    /// Starts `binary serve` on `snapshot_dir` with `extra` flags; returns once the socket exists.
    pub(crate) fn start(
        binary: &Path,
        work: &Path,
        name: &str,
        snapshot_dir: &Path,
        extra: &[&str],
    ) -> Result<Daemon, String> {
        let socket = work.join(format!("{name}.sock"));
        let control = work.join(format!("{name}.control"));
        let stats_json = work.join(format!("{name}.stats.json"));
        let log =
            std::fs::File::create(work.join(format!("{name}.log"))).map_err(|e| e.to_string())?;
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .arg("--socket")
            .arg(&socket)
            .arg("--snapshot-dir")
            .arg(snapshot_dir)
            .arg("--control")
            .arg(&control)
            .arg("--stats-json")
            .arg(&stats_json)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let mut daemon = Daemon {
            child,
            socket,
            control,
            stats_json,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(daemon.socket.exists() && daemon.control.exists()) {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                return Err(format!(
                    "the daemon exited at start-up ({status}); see {name}.log"
                ));
            }
            if Instant::now() > deadline {
                return Err("the daemon did not create its sockets within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(daemon)
    }

    /// Sends one control command; returns its JSON answer.
    pub(crate) fn control(&self, command: &str) -> Result<serde_json::Value, String> {
        let mut stream =
            UnixStream::connect(&self.control).map_err(|e| format!("control socket: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .map_err(|e| e.to_string())?;
        writeln!(stream, "{command}").map_err(|e| e.to_string())?;
        let mut line = String::new();
        BufReader::new(stream)
            .read_line(&mut line)
            .map_err(|e| format!("control answer: {e}"))?;
        serde_json::from_str(&line).map_err(|e| format!("control answer {line:?}: {e}"))
    }

    /// Waits for the daemon to exit (it does once its VMM has).
    pub(crate) fn wait(mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return Err("the daemon did not exit after its VMM".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The statistics the daemon wrote at exit.
    pub(crate) fn read_stats(path: &Path) -> Result<serde_json::Value, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
