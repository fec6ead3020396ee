//! The driver side: spawn a `test-vmm` process, send it requests, wait for answers with a
//! timeout, watch it die.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::process::{Child, ChildStdin, Command as Process, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{RecvTimeoutError, Sender};
use parking_lot::Mutex;
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::process::{Pid, PidfdFlags, Signal};
use uffd_core::PageSize;

use crate::control::{Command, ReadyInfo, RemoteError, Reply, Request, Response, Startup};
use crate::{HandshakeRegion, Pending, VmmConfig, VmmError};

/// Lines of the test VMM's stderr kept for error messages.
const STDERR_TAIL: usize = 64;

/// One request's answer as the test VMM sent it.
pub(super) type Answer = Result<Reply, RemoteError>;

/// What the reader thread shares with the driver.
#[derive(Default)]
struct Shared {
    /// Waiters by request id; `None` once the test VMM's stdout closed (it exited).
    pending: Mutex<Option<HashMap<u64, Sender<Answer>>>>,
    stderr: Mutex<VecDeque<String>>,
}

impl Shared {
    fn stderr_tail(&self) -> String {
        self.stderr
            .lock()
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A running `test-vmm` process. Every method may be called from several threads at once;
/// dropping it kills and reaps the process.
pub struct VmmProcess {
    child: Mutex<Child>,
    pidfd: OwnedFd,
    stdin: Mutex<Option<ChildStdin>>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
    info: ReadyInfo,
    page_size: PageSize,
    timeout: Duration,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for VmmProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmmProcess")
            .field("pid", &self.info.pid)
            .field("regions", &self.info.regions)
            .finish_non_exhaustive()
    }
}

impl VmmProcess {
    /// Starts the test VMM and waits (at most the request timeout) until it reports that it sent
    /// the handshake, or why it could not.
    pub fn spawn(config: VmmConfig) -> Result<VmmProcess, VmmError> {
        let args = config.args();
        args.validate().map_err(VmmError::Config)?;
        let mut child = Process::new(&config.binary)
            .args(args.to_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| VmmError::Spawn {
                binary: config.binary.clone(),
                source,
            })?;
        let pid = child.id();
        // The child cannot be reaped before this (only `child.wait` would), so the pid is its.
        let pidfd = i32::try_from(pid)
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| VmmError::Protocol(format!("pid {pid}")))
            .and_then(|p| rustix::process::pidfd_open(p, PidfdFlags::empty()).map_err(io));
        let pidfd = match pidfd {
            Ok(fd) => fd,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        let shared = Arc::new(Shared {
            pending: Mutex::new(Some(HashMap::new())),
            ..Shared::default()
        });
        let (startup_tx, startup_rx) = crossbeam_channel::bounded(1);
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let spawned = spawn_thread("vmm-stdout", {
            let shared = Arc::clone(&shared);
            move || read_stdout(BufReader::new(stdout), &shared, startup_tx)
        })
        .and_then(|reader| {
            let shared = Arc::clone(&shared);
            let log = match &config.log_file {
                Some(path) => Some(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .map_err(VmmError::Io)?,
                ),
                None => None,
            };
            let logger = spawn_thread("vmm-stderr", move || {
                read_stderr(BufReader::new(stderr), &shared, pid, log)
            })?;
            Ok(vec![reader, logger])
        });
        let threads = match spawned {
            Ok(threads) => threads,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        let mut vmm = VmmProcess {
            stdin: Mutex::new(child.stdin.take()),
            child: Mutex::new(child),
            pidfd,
            shared,
            next_id: AtomicU64::new(1),
            info: ReadyInfo {
                pid,
                regions: Vec::new(),
                handshake: String::new(),
                uffd_fd: -1,
                kvm_vcpus: 0,
            },
            page_size: config.page_size,
            timeout: config.request_timeout,
            threads,
        };
        match startup_rx.recv_timeout(config.request_timeout) {
            Ok(Startup::Ready(info)) => {
                vmm.info = info;
                Ok(vmm)
            }
            Ok(Startup::Failed { stage, message }) => {
                let _ = vmm.wait();
                Err(VmmError::Startup {
                    stage,
                    message,
                    stderr: vmm.finish_stderr(),
                })
            }
            Err(RecvTimeoutError::Timeout) => {
                let _ = vmm.kill();
                Err(VmmError::Timeout {
                    request: "startup".into(),
                    after: config.request_timeout,
                })
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = vmm.wait().ok();
                Err(VmmError::Exited {
                    status,
                    stderr: vmm.finish_stderr(),
                })
            }
        }
    }

    /// The test VMM's process id.
    pub fn pid(&self) -> u32 {
        self.info.pid
    }

    /// What the test VMM reported when ready: its regions and the handshake it sent.
    pub fn info(&self) -> &ReadyInfo {
        &self.info
    }

    /// The regions, as sent to the handler.
    pub fn regions(&self) -> &[HandshakeRegion] {
        &self.info.regions
    }

    /// The memory image's size (the regions' sizes summed).
    pub fn image_size(&self) -> u64 {
        self.info.regions.iter().map(|r| r.size).sum()
    }

    /// The guest's page size.
    pub fn page_size(&self) -> PageSize {
        self.page_size
    }

    /// The longest the driver waits for an answer or an exit.
    pub fn request_timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether the test VMM's output has ended (it exited): no answer will come any more.
    pub(super) fn output_ended(&self) -> bool {
        self.shared.pending.lock().is_none()
    }

    /// The last lines the test VMM wrote to stderr.
    pub fn stderr_tail(&self) -> String {
        self.shared.stderr_tail()
    }

    /// Sends SIGKILL (a no-op once the test VMM is gone).
    pub fn kill(&self) -> Result<(), VmmError> {
        match rustix::process::pidfd_send_signal(&self.pidfd, Signal::KILL) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(e) => Err(io(e)),
        }
    }

    /// The exit status if the test VMM has exited (reaping it), without waiting.
    pub fn try_wait(&self) -> Result<Option<ExitStatus>, VmmError> {
        self.child.lock().try_wait().map_err(VmmError::Io)
    }

    /// Waits (at most the request timeout) for the test VMM to exit.
    pub fn wait(&self) -> Result<ExitStatus, VmmError> {
        self.wait_timeout(self.timeout)
    }

    /// Waits at most `timeout` for the test VMM to exit.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<ExitStatus, VmmError> {
        let timespec = Timespec::try_from(timeout).unwrap_or(Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        });
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            let mut fds = [PollFd::new(&self.pidfd, PollFlags::IN)];
            match rustix::event::poll(&mut fds, Some(&timespec)) {
                Ok(0) => {
                    return Err(VmmError::Timeout {
                        request: "exit".into(),
                        after: timeout,
                    });
                }
                Ok(_) | Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(io(e)),
            }
        }
    }

    /// Sends `command`; its answer will be converted by `convert` (`None`: the wrong reply).
    pub(super) fn start_as<T>(
        &self,
        command: Command,
        what: &'static str,
        convert: fn(Reply) -> Option<T>,
    ) -> Result<Pending<'_, T>, VmmError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = crossbeam_channel::bounded(1);
        match self.shared.pending.lock().as_mut() {
            Some(pending) => pending.insert(id, tx),
            None => return Err(self.exited_error()),
        };
        let mut line = serde_json::to_string(&Request { id, command }).expect("serialisable");
        line.push('\n');
        let sent = match self.stdin.lock().as_mut() {
            Some(stdin) => stdin
                .write_all(line.as_bytes())
                .and_then(|()| stdin.flush()),
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        };
        if sent.is_err() {
            self.forget(id);
            return Err(self.exited_error());
        }
        Ok(Pending::new(self, id, what, rx, convert))
    }

    /// Abandons request `id` (a late answer is dropped).
    pub(super) fn forget(&self, id: u64) {
        if let Some(pending) = self.shared.pending.lock().as_mut() {
            pending.remove(&id);
        }
    }

    /// The error for a test VMM whose output ended: its exit status once it is reaped.
    pub(super) fn exited_error(&self) -> VmmError {
        let status = self.wait().ok();
        VmmError::Exited {
            status,
            stderr: self.stderr_tail(),
        }
    }

    /// After the test VMM exited: every line of its stderr.
    fn finish_stderr(&mut self) -> String {
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        self.stderr_tail()
    }
}

impl Drop for VmmProcess {
    fn drop(&mut self) {
        let _ = self.kill();
        drop(self.stdin.lock().take());
        if self.wait().is_ok() {
            for thread in self.threads.drain(..) {
                let _ = thread.join();
            }
        }
    }
}

fn io(e: rustix::io::Errno) -> VmmError {
    VmmError::Io(e.into())
}

fn spawn_thread(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, VmmError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(VmmError::Io)
}

/// The test VMM's stdout: the startup line, then responses routed to their waiters. At the end
/// (the test VMM exited), every waiter is released.
fn read_stdout(stdout: impl BufRead, shared: &Shared, startup: Sender<Startup>) {
    let mut lines = stdout.lines();
    if let Some(Ok(line)) = lines.next() {
        match serde_json::from_str(&line) {
            Ok(first) => {
                let _ = startup.send(first);
            }
            Err(e) => eprintln!("test-vmm driver: bad startup line {line:?}: {e}"),
        }
    }
    drop(startup);
    for line in lines {
        let Ok(line) = line else { break };
        let response: Response = match serde_json::from_str(&line) {
            Ok(response) => response,
            Err(e) => {
                eprintln!("test-vmm driver: bad response line {line:?}: {e}");
                continue;
            }
        };
        let waiter = shared
            .pending
            .lock()
            .as_mut()
            .and_then(|p| p.remove(&response.id));
        if let Some(waiter) = waiter {
            let _ = waiter.send(response.result);
        }
    }
    shared.pending.lock().take();
}

/// The test VMM's stderr: written to `log`, or echoed (prefixed with its pid); the last lines
/// kept for error messages.
fn read_stderr(stderr: impl BufRead, shared: &Shared, pid: u32, mut log: Option<std::fs::File>) {
    for line in stderr.lines() {
        let Ok(line) = line else { break };
        match &mut log {
            Some(file) => {
                use std::io::Write as _;
                let _ = writeln!(file, "{line}");
            }
            None => eprintln!("[test-vmm {pid}] {line}"),
        }
        let mut tail = shared.stderr.lock();
        if tail.len() == STDERR_TAIL {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}
