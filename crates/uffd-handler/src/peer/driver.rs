//! The driver side: spawn a `vmm-peer` process, send it requests, wait for answers with a
//! timeout, watch it die.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command as Process, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use parking_lot::Mutex;
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::process::{Pid, PidfdFlags, Signal};
use uffd_core::PageSize;

use crate::peer::control::{
    Command, KvmReport, PageFlags, ReadyInfo, RemoteError, Reply, Request, Response, Startup,
    Touch, TouchReport, WriteData, from_hex, to_hex,
};
use crate::peer::error::PeerError;
use crate::peer::{DEFAULT_GAP, HandshakeRegion, PayloadVersion, PeerArgs};

/// Lines of the peer's stderr kept for error messages.
const STDERR_TAIL: usize = 64;

/// One request's answer as the peer sent it.
type Answer = Result<Reply, RemoteError>;

/// How to start a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// The `vmm-peer` binary (tests: `env!("CARGO_BIN_EXE_vmm-peer")`).
    pub binary: PathBuf,
    /// The handler's socket, which must already be listening.
    pub socket: PathBuf,
    /// Region sizes in bytes, in guest-physical order; each a multiple of the page size.
    pub regions: Vec<u64>,
    /// The page size declared to the handler and the unit of touches and madvise.
    pub page_size: PageSize,
    /// Map guest memory with `MAP_HUGETLB|MAP_HUGE_2MB` (needs 2 MiB pages).
    pub hugetlb: bool,
    /// The Firecracker generation whose handshake to send.
    pub payload_version: PayloadVersion,
    /// Keep the socket open after the handshake; `None`: as that generation does.
    pub keep_socket: Option<bool>,
    /// Unmapped address space between regions (rounded up to 2 MiB).
    pub gap: u64,
    /// vCPUs of a KVM guest over the guest memory (0: none; startup then fails at stage
    /// `kvm` where /dev/kvm is unusable).
    pub kvm_vcpus: u32,
    /// The longest the driver waits for startup, for any answer, and for exit.
    pub request_timeout: Duration,
}

impl PeerConfig {
    /// 4 KiB pages, no hugetlb, the v1.12+ payload, a 10 s timeout.
    pub fn new(binary: impl Into<PathBuf>, socket: impl Into<PathBuf>, regions: Vec<u64>) -> Self {
        PeerConfig {
            binary: binary.into(),
            socket: socket.into(),
            regions,
            page_size: PageSize::Base4K,
            hugetlb: false,
            payload_version: PayloadVersion::V1_12,
            keep_socket: None,
            gap: DEFAULT_GAP,
            kvm_vcpus: 0,
            request_timeout: Duration::from_secs(10),
        }
    }

    /// 2 MiB hugetlbfs pages.
    pub fn hugetlb(self) -> Self {
        PeerConfig {
            page_size: PageSize::Huge2M,
            hugetlb: true,
            ..self
        }
    }

    /// Another payload version.
    pub fn payload(self, payload_version: PayloadVersion) -> Self {
        PeerConfig {
            payload_version,
            ..self
        }
    }

    /// Another request timeout.
    pub fn timeout(self, request_timeout: Duration) -> Self {
        PeerConfig {
            request_timeout,
            ..self
        }
    }

    /// The peer's command line.
    pub fn args(&self) -> PeerArgs {
        PeerArgs {
            socket: self.socket.clone(),
            regions: self.regions.clone(),
            page_size: self.page_size.bytes(),
            hugetlb: self.hugetlb,
            payload: self.payload_version,
            keep_socket: self.keep_socket,
            kvm_vcpus: self.kvm_vcpus,
            gap: self.gap,
        }
    }
}

/// What the reader thread shares with the driver.
#[derive(Default)]
struct Shared {
    /// Waiters by request id; `None` once the peer's stdout closed (it exited).
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

/// A running `vmm-peer` process. Every method may be called from several threads at once;
/// dropping it kills and reaps the process.
pub struct PeerProcess {
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

impl std::fmt::Debug for PeerProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerProcess")
            .field("pid", &self.info.pid)
            .field("regions", &self.info.regions)
            .finish_non_exhaustive()
    }
}

impl PeerProcess {
    /// Starts the peer and waits (at most the request timeout) until it reports that it sent
    /// the handshake, or why it could not.
    pub fn spawn(config: PeerConfig) -> Result<PeerProcess, PeerError> {
        let args = config.args();
        args.validate().map_err(PeerError::Config)?;
        let mut child = Process::new(&config.binary)
            .args(args.to_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| PeerError::Spawn {
                binary: config.binary.clone(),
                source,
            })?;
        let pid = child.id();
        // The child cannot be reaped before this (only `child.wait` would), so the pid is its.
        let pidfd = i32::try_from(pid)
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| PeerError::Protocol(format!("pid {pid}")))
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
        let threads = vec![
            spawn_thread("peer-stdout", {
                let shared = Arc::clone(&shared);
                move || read_stdout(BufReader::new(stdout), &shared, startup_tx)
            })?,
            spawn_thread("peer-stderr", {
                let shared = Arc::clone(&shared);
                move || read_stderr(BufReader::new(stderr), &shared, pid)
            })?,
        ];
        let mut peer = PeerProcess {
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
                peer.info = info;
                Ok(peer)
            }
            Ok(Startup::Failed { stage, message }) => {
                let _ = peer.wait();
                Err(PeerError::Startup {
                    stage,
                    message,
                    stderr: peer.finish_stderr(),
                })
            }
            Err(RecvTimeoutError::Timeout) => {
                let _ = peer.kill();
                Err(PeerError::Timeout {
                    request: "startup".into(),
                    after: config.request_timeout,
                })
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = peer.wait().ok();
                Err(PeerError::Exited {
                    status,
                    stderr: peer.finish_stderr(),
                })
            }
        }
    }

    /// The peer's process id.
    pub fn pid(&self) -> u32 {
        self.info.pid
    }

    /// What the peer reported when ready: its regions and the handshake it sent.
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

    /// The last lines the peer wrote to stderr.
    pub fn stderr_tail(&self) -> String {
        self.shared.stderr_tail()
    }

    /// Sends `command` without waiting for its answer.
    pub fn start(&self, command: Command) -> Result<Pending<'_, Reply>, PeerError> {
        self.start_as(command, "request", Some)
    }

    /// Sends `command` and waits for its answer.
    pub fn request(&self, command: Command) -> Result<Reply, PeerError> {
        self.start(command)?.wait()
    }

    /// Starts a touch; [`Pending::wait`] gives its report.
    pub fn start_touch(&self, touch: Touch) -> Result<Pending<'_, TouchReport>, PeerError> {
        self.start_as(Command::Touch(touch), "touch", |r| match r {
            Reply::Touched(report) => Some(report),
            _ => None,
        })
    }

    /// Touches pages and waits until every thread is done.
    pub fn touch(&self, touch: Touch) -> Result<TouchReport, PeerError> {
        self.start_touch(touch)?.wait()
    }

    /// Starts hashing every 4 KiB block of the range from `threads` threads.
    pub fn start_hash(
        &self,
        offset: u64,
        len: u64,
        threads: u32,
    ) -> Result<Pending<'_, Vec<u64>>, PeerError> {
        let command = Command::Hash {
            offset,
            len,
            threads,
        };
        self.start_as(command, "hash", |r| match r {
            Reply::Hashes(hashes) => Some(hashes),
            _ => None,
        })
    }

    /// [`block_hash`](crate::peer::block_hash) of every 4 KiB block of the range.
    pub fn hash(&self, offset: u64, len: u64) -> Result<Vec<u64>, PeerError> {
        self.start_hash(offset, len, 1)?.wait()
    }

    /// [`block_hash`](crate::peer::block_hash) of every 4 KiB block of the range as the
    /// kernel reads it ([`Command::SyscallHash`]: faults raised in kernel mode).
    pub fn syscall_hash(&self, offset: u64, len: u64) -> Result<Vec<u64>, PeerError> {
        self.start_as(
            Command::SyscallHash { offset, len },
            "syscall_hash",
            |r| match r {
                Reply::Hashes(hashes) => Some(hashes),
                _ => None,
            },
        )?
        .wait()
    }

    /// Starts the KVM guest program over the range ([`Command::KvmTouch`]).
    pub fn start_kvm_touch(
        &self,
        offset: u64,
        len: u64,
        vcpus: u32,
        write: Option<u32>,
    ) -> Result<Pending<'_, KvmReport>, PeerError> {
        let command = Command::KvmTouch {
            offset,
            len,
            vcpus,
            write,
        };
        self.start_as(command, "kvm_touch", |r| match r {
            Reply::KvmTouched(report) => Some(report),
            _ => None,
        })
    }

    /// Runs the KVM guest program over the range and waits for the per-block sums.
    pub fn kvm_touch(
        &self,
        offset: u64,
        len: u64,
        vcpus: u32,
        write: Option<u32>,
    ) -> Result<KvmReport, PeerError> {
        self.start_kvm_touch(offset, len, vcpus, write)?.wait()
    }

    /// The bytes of a small range.
    pub fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>, PeerError> {
        let hex = self
            .start_as(Command::Read { offset, len }, "read", |r| match r {
                Reply::Bytes(hex) => Some(hex),
                _ => None,
            })?
            .wait()?;
        from_hex(&hex).ok_or_else(|| PeerError::Protocol(format!("read answered {hex:?}")))
    }

    /// Stores `data` at `offset`.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), PeerError> {
        self.write_data(offset, WriteData::Hex(to_hex(data)))
    }

    /// Stores `len` copies of `byte` at `offset`.
    pub fn fill(&self, offset: u64, len: u64, byte: u8) -> Result<(), PeerError> {
        self.write_data(offset, WriteData::Fill { byte, len })
    }

    fn write_data(&self, offset: u64, data: WriteData) -> Result<(), PeerError> {
        self.start_as(Command::Write { offset, data }, "write", |r| match r {
            Reply::Written(_) => Some(()),
            _ => None,
        })?
        .wait()
    }

    /// Starts `madvise(MADV_DONTNEED)` of the range; it completes once the handler has read
    /// the REMOVE events.
    pub fn start_madvise_dontneed(
        &self,
        offset: u64,
        len: u64,
    ) -> Result<Pending<'_, Duration>, PeerError> {
        let command = Command::MadviseDontneed { offset, len };
        self.start_as(command, "madvise_dontneed", |r| match r {
            Reply::Madvised { elapsed_ns } => Some(Duration::from_nanos(elapsed_ns)),
            _ => None,
        })
    }

    /// `madvise(MADV_DONTNEED)` of the range, as a balloon inflate; the time it took.
    pub fn madvise_dontneed(&self, offset: u64, len: u64) -> Result<Duration, PeerError> {
        self.start_madvise_dontneed(offset, len)?.wait()
    }

    /// The pagemap bits of every 4 KiB block of the range.
    pub fn pagemap(&self, offset: u64, len: u64) -> Result<Vec<PageFlags>, PeerError> {
        self.start_as(Command::Pagemap { offset, len }, "pagemap", |r| match r {
            Reply::Pagemap(flags) => Some(flags),
            _ => None,
        })?
        .wait()
    }

    /// Closes the peer's end of the handshake socket (the handler sees POLLHUP).
    pub fn close_socket(&self) -> Result<(), PeerError> {
        self.start_as(Command::CloseSocket, "close_socket", |r| match r {
            Reply::SocketClosed => Some(()),
            _ => None,
        })?
        .wait()
    }

    /// Asks the peer to exit and waits for it.
    pub fn exit(&self) -> Result<ExitStatus, PeerError> {
        self.start_as(Command::Exit, "exit", |r| match r {
            Reply::Exiting => Some(()),
            _ => None,
        })?
        .wait()?;
        self.wait()
    }

    /// Sends SIGKILL (a no-op once the peer is gone).
    pub fn kill(&self) -> Result<(), PeerError> {
        match rustix::process::pidfd_send_signal(&self.pidfd, Signal::KILL) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(e) => Err(io(e)),
        }
    }

    /// The exit status if the peer has exited (reaping it), without waiting.
    pub fn try_wait(&self) -> Result<Option<ExitStatus>, PeerError> {
        self.child.lock().try_wait().map_err(PeerError::Io)
    }

    /// Waits (at most the request timeout) for the peer to exit.
    pub fn wait(&self) -> Result<ExitStatus, PeerError> {
        self.wait_timeout(self.timeout)
    }

    /// Waits at most `timeout` for the peer to exit.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<ExitStatus, PeerError> {
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
                    return Err(PeerError::Timeout {
                        request: "exit".into(),
                        after: timeout,
                    });
                }
                Ok(_) | Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(io(e)),
            }
        }
    }

    fn start_as<T>(
        &self,
        command: Command,
        what: &'static str,
        convert: fn(Reply) -> Option<T>,
    ) -> Result<Pending<'_, T>, PeerError> {
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
        Ok(Pending {
            peer: self,
            id,
            what,
            rx,
            convert,
        })
    }

    fn forget(&self, id: u64) {
        if let Some(pending) = self.shared.pending.lock().as_mut() {
            pending.remove(&id);
        }
    }

    /// The error for a peer whose output ended: its exit status once it is reaped.
    fn exited_error(&self) -> PeerError {
        let status = self.wait().ok();
        PeerError::Exited {
            status,
            stderr: self.stderr_tail(),
        }
    }

    /// After the peer exited: every line of its stderr.
    fn finish_stderr(&mut self) -> String {
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        self.stderr_tail()
    }
}

impl Drop for PeerProcess {
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

/// A request sent and not yet answered.
#[must_use = "a pending request is waited for, or its answer is lost"]
pub struct Pending<'a, T> {
    peer: &'a PeerProcess,
    id: u64,
    what: &'static str,
    rx: Receiver<Answer>,
    convert: fn(Reply) -> Option<T>,
}

impl<T> std::fmt::Debug for Pending<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("id", &self.id)
            .field("what", &self.what)
            .finish_non_exhaustive()
    }
}

impl<T> Pending<'_, T> {
    /// The request's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether the answer (or the peer's exit) has arrived; [`Pending::wait`] then returns at
    /// once.
    pub fn is_done(&self) -> bool {
        !self.rx.is_empty() || self.peer.shared.pending.lock().is_none()
    }

    /// Waits (at most the request timeout) for the answer.
    pub fn wait(self) -> Result<T, PeerError> {
        let timeout = self.peer.timeout;
        self.wait_timeout(timeout)
    }

    /// Waits at most `timeout` for the answer. On timeout the request is abandoned (a late
    /// answer is dropped) and the peer keeps running: [`PeerProcess::kill`] it if it hangs.
    pub fn wait_timeout(self, timeout: Duration) -> Result<T, PeerError> {
        match self.rx.recv_timeout(timeout) {
            Ok(answer) => self.finish(answer),
            Err(RecvTimeoutError::Timeout) => {
                self.peer.forget(self.id);
                Err(PeerError::Timeout {
                    request: format!("{} (request {})", self.what, self.id),
                    after: timeout,
                })
            }
            Err(RecvTimeoutError::Disconnected) => Err(self.peer.exited_error()),
        }
    }

    /// The answer if it has arrived (or the peer exited), without waiting; else `self` back.
    pub fn try_wait(self) -> Result<Result<T, PeerError>, Self> {
        match self.rx.try_recv() {
            Ok(answer) => Ok(self.finish(answer)),
            Err(TryRecvError::Empty) => Err(self),
            Err(TryRecvError::Disconnected) => Ok(Err(self.peer.exited_error())),
        }
    }

    fn finish(&self, answer: Answer) -> Result<T, PeerError> {
        let reply = answer.map_err(PeerError::Remote)?;
        (self.convert)(reply.clone()).ok_or_else(|| {
            PeerError::Protocol(format!("{} was answered with {reply:?}", self.what))
        })
    }
}

fn io(e: rustix::io::Errno) -> PeerError {
    PeerError::Io(e.into())
}

fn spawn_thread(
    name: &str,
    f: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, PeerError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(PeerError::Io)
}

/// The peer's stdout: the startup line, then responses routed to their waiters. At the end
/// (the peer exited), every waiter is released.
fn read_stdout(stdout: impl BufRead, shared: &Shared, startup: Sender<Startup>) {
    let mut lines = stdout.lines();
    if let Some(Ok(line)) = lines.next() {
        match serde_json::from_str(&line) {
            Ok(first) => {
                let _ = startup.send(first);
            }
            Err(e) => eprintln!("vmm-peer driver: bad startup line {line:?}: {e}"),
        }
    }
    drop(startup);
    for line in lines {
        let Ok(line) = line else { break };
        let response: Response = match serde_json::from_str(&line) {
            Ok(response) => response,
            Err(e) => {
                eprintln!("vmm-peer driver: bad response line {line:?}: {e}");
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

/// The peer's stderr: echoed (prefixed with its pid) and the last lines kept.
fn read_stderr(stderr: impl BufRead, shared: &Shared, pid: u32) {
    for line in stderr.lines() {
        let Ok(line) = line else { break };
        eprintln!("[vmm-peer {pid}] {line}");
        let mut tail = shared.stderr.lock();
        if tail.len() == STDERR_TAIL {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}
