//! Shared by the daemon's tests: a snapshot image and its byte model, the `uffd-handler`
//! binary as a child process (stderr captured, exit awaited with a deadline), its control
//! socket, and `test-vmm` processes as the VMM.
#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::process::{Pid, PidfdFlags, Signal};
use test_vmm::{VmmConfig, VmmError, VmmProcess, touch_word};

/// The daemon binary built with this package.
pub const DAEMON_BIN: &str = env!("CARGO_BIN_EXE_uffd-handler");
pub use test_support::{HUGE, MIB, PAGE, TIMEOUT, TestDir, free_hugepages, skip};

/// The expected bytes of guest memory.
pub use test_vmm::GuestModel as Model;

/// A snapshot image of `size` bytes: pseudo-random words, with every 8th 64 KiB run of
/// zeros (holes the snapshot stores as zero blocks).
pub fn model_image(seed: u64, size: u64, page: u64) -> Model {
    let mut bytes = Vec::with_capacity(size as usize);
    for i in 0..size / 8 {
        let offset = i * 8;
        let word = if (offset / (64 << 10)) % 8 == 7 {
            0
        } else {
            touch_word(seed ^ 0x5eed, i)
        };
        bytes.extend_from_slice(&word.to_le_bytes());
    }
    Model::new(bytes, page)
}

pub use test_vmm::assert_hashes;

/// Hashes the whole guest memory from several threads and checks every byte.
#[track_caller]
pub fn verify_all(vmm: &VmmProcess, model: &Model) {
    let size = model.size();
    let hashes = vmm
        .start_hash(0, size, 4)
        .expect("start hash")
        .wait()
        .expect("hash every block");
    assert_hashes(&hashes, model, 0, size);
}

/// [`verify_all`], and on failure the serving daemon's live statistics in the message.
#[track_caller]
pub fn verify(daemon: &Daemon, vmm: &VmmProcess, model: &Model) {
    let size = model.size();
    match vmm
        .start_hash(0, size, 4)
        .and_then(|pending| pending.wait())
    {
        Ok(hashes) => assert_hashes(&hashes, model, 0, size),
        Err(e) => panic!(
            "hashing every block failed: {e}\nthe daemon's statistics: {}",
            daemon.control("stats")
        ),
    }
}

/// A running `uffd-handler serve`; killed on drop.
pub struct Daemon {
    child: Child,
    pidfd: OwnedFd,
    pub socket: PathBuf,
    pub control: Option<PathBuf>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Daemon {
    /// Starts `uffd-handler serve --socket <dir>/vmm.sock <args>` (with `--control
    /// <dir>/control.sock` unless `args` name one) and waits until the socket exists.
    pub fn start(dir: &TestDir, args: &[&str]) -> Daemon {
        Daemon::start_at(dir, "vmm.sock", args)
    }

    /// As [`Daemon::start`], with another socket name.
    pub fn start_at(dir: &TestDir, socket: &str, args: &[&str]) -> Daemon {
        let daemon = Daemon::spawn(dir, socket, args);
        daemon.wait_for_socket();
        daemon
    }

    /// Starts the daemon without waiting for anything.
    pub fn spawn(dir: &TestDir, socket: &str, args: &[&str]) -> Daemon {
        let socket = dir.join(socket);
        let control = dir.join(&format!(
            "{}.control",
            socket.file_name().unwrap().to_str().unwrap()
        ));
        let mut command = Command::new(DAEMON_BIN);
        command.arg("serve").arg("--socket").arg(&socket);
        let control = if args.contains(&"--control") {
            None
        } else {
            command.arg("--control").arg(&control);
            Some(control)
        };
        command.args(args);
        if !args.contains(&"--log") {
            command.args(["--log", "info,uffd_handler=debug"]);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn uffd-handler");
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
        let pidfd = rustix::process::pidfd_open(pid, PidfdFlags::empty()).expect("pidfd");
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let reader = {
            let stderr = stderr.clone();
            let pipe = child.stderr.take().unwrap();
            let pid = child.id();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    eprintln!("[uffd-handler {pid}] {line}");
                    stderr.lock().unwrap().push_back(line);
                }
            })
        };
        Daemon {
            child,
            pidfd,
            socket,
            control,
            stderr,
            reader: Some(reader),
        }
    }

    /// Waits until the daemon is ready for a VMM: its control socket (bound after the VMM
    /// socket listens) accepts a connection; without one, until the VMM socket exists and
    /// the daemon's "ready" log line is out.
    pub fn wait_for_socket(&self) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let ready = match &self.control {
                Some(control) => UnixStream::connect(control).is_ok(),
                None => self.socket.exists() && self.stderr().contains("ready: waiting for a VMM"),
            };
            if ready {
                return;
            }
            assert!(
                !self.exited(Duration::ZERO),
                "the daemon exited before listening:\n{}",
                self.stderr()
            );
            assert!(Instant::now() < deadline, "not ready within {TIMEOUT:?}");
            // Not synchronisation: a bounded poll for a socket another process creates.
            self.exited(Duration::from_millis(5));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the daemon wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap()
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Whether the daemon exits within `timeout`.
    pub fn exited(&self, timeout: Duration) -> bool {
        let mut fds = [PollFd::new(&self.pidfd, PollFlags::IN)];
        let timeout = Timespec::try_from(timeout).unwrap();
        loop {
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                Ok(n) => return n > 0,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => panic!("poll: {e}"),
            }
        }
    }

    /// Waits (at most `timeout`) for the daemon to exit: its status and its whole stderr.
    pub fn wait(mut self, timeout: Duration) -> (ExitStatus, String) {
        assert!(
            self.exited(timeout),
            "the daemon did not exit within {timeout:?}:\n{}",
            self.stderr()
        );
        let status = self.child.wait().expect("reap the daemon");
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        (status, self.stderr())
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: Signal) {
        rustix::process::pidfd_send_signal(&self.pidfd, signal).expect("signal the daemon");
    }

    /// Sends one control command and returns the JSON answer.
    pub fn control(&self, command: &str) -> serde_json::Value {
        let path = self.control.as_ref().expect("a control socket");
        let mut conn = UnixStream::connect(path).expect("connect to the control socket");
        conn.set_read_timeout(Some(TIMEOUT)).unwrap();
        writeln!(conn, "{command}").unwrap();
        let mut line = String::new();
        BufReader::new(conn)
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("no answer to {command:?}: {e}\n{}", self.stderr()));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = rustix::process::pidfd_send_signal(&self.pidfd, Signal::KILL);
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// The exit code, or a panic naming the signal that killed the process.
#[track_caller]
pub fn exit_code(status: ExitStatus, stderr: &str) -> i32 {
    match status.code() {
        Some(code) => code,
        None => panic!("killed by signal {:?}:\n{stderr}", status.signal()),
    }
}

/// A vmm (4 KiB pages unless `hugetlb`) connected to the daemon's socket.
pub fn start_vmm(daemon: &Daemon, regions: Vec<u64>, hugetlb: bool) -> VmmProcess {
    VmmProcess::spawn(vmm_config(daemon, regions, hugetlb))
        .unwrap_or_else(|e| panic!("spawn the vmm: {e}\n{}", daemon.stderr()))
}

/// The configuration [`vmm`] uses.
pub fn vmm_config(daemon: &Daemon, regions: Vec<u64>, hugetlb: bool) -> VmmConfig {
    let config = VmmConfig::new(test_vmm::binary(), &daemon.socket, regions).timeout(TIMEOUT);
    if hugetlb { config.hugetlb() } else { config }
}

/// A KVM vmm, or `None` (after a SKIP line) where /dev/kvm is unusable.
pub fn kvm_vmm(test: &str, daemon: &Daemon, regions: Vec<u64>, vcpus: u32) -> Option<VmmProcess> {
    let mut config = vmm_config(daemon, regions, false);
    config.kvm_vcpus = vcpus;
    match VmmProcess::spawn(config) {
        Ok(vmm) => Some(vmm),
        Err(VmmError::Startup { stage, message, .. }) if stage == "kvm" => {
            skip(test, &format!("no usable KVM: {message}"));
            None
        }
        Err(e) => panic!("spawn the KVM vmm: {e}"),
    }
}
