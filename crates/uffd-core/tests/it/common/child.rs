//! Child processes (this test binary re-executed in a role) and fd passing over their socket.

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, ExitStatus, Stdio};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use test_support::TIMEOUT;

/// The environment variable that makes a re-executed test binary play a child role.
pub(crate) const CHILD_ENV: &str = "UFFD_CORE_TEST_CHILD";

/// The role this process was re-executed to play, if any.
pub(crate) fn child_role() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

/// The name the test harness knows test `name` of module `module` by (pass
/// `module_path!()`): its path inside the test binary, without the binary's crate name, which
/// is what `--exact` matches.
pub(crate) fn test_path(module: &str, name: &str) -> String {
    match module.split_once("::") {
        Some((_crate, path)) => format!("{path}::{name}"),
        None => name.to_string(),
    }
}

/// A child process: this test binary re-executed to run only one test in `role`, with a Unix
/// socket to the parent as its stdin. Killed on drop if still running.
#[derive(Debug)]
pub(crate) struct ChildProc {
    child: Option<Child>,
    /// The parent's end of the socket (reads time out after [`TIMEOUT`]).
    pub(crate) sock: UnixStream,
}

impl ChildProc {
    /// Spawns the child, running test `name` of `module` (the caller's `module_path!()`)
    /// alone.
    pub(crate) fn spawn(module: &str, name: &str, role: &str) -> Self {
        let test = test_path(module, name);
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        ours.set_read_timeout(Some(TIMEOUT)).expect("SO_RCVTIMEO");
        let child = Command::new(std::env::current_exe().expect("current_exe"))
            .args([&test, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, role)
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("re-execute the test binary");
        ChildProc {
            child: Some(child),
            sock: ours,
        }
    }

    /// Receives an fd and `N` bytes of data from the child.
    pub(crate) fn recv_fd<const N: usize>(&self) -> (OwnedFd, [u8; N]) {
        let mut data = [0; N];
        let fd = recv_fd(&self.sock, &mut data);
        (fd, data)
    }

    /// Waits (at most [`TIMEOUT`], else kills it and fails) for the child to exit; its status
    /// and everything it printed.
    pub(crate) fn finish(mut self) -> (ExitStatus, String) {
        // The child's end of the socket closes when it (and any process it forked) exits.
        let mut sink = [0; 64];
        loop {
            match (&self.sock).read(&mut sink) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => panic!("the child did not exit within {TIMEOUT:?} ({e}); killing it"),
            }
        }
        let child = self.child.take().expect("child");
        let out = child.wait_with_output().expect("wait for the child");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let text = format!(
            "--- child stdout ---\n{stdout}\n--- child stderr ---\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // A test path that matches nothing would make the child pass without running a
        // thing: it must have run exactly its one test.
        assert!(
            stdout.contains("running 1 test"),
            "the child did not run exactly one test\n{text}"
        );
        (out.status, text)
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// In a child: its socket to the parent (its stdin).
pub(crate) fn parent_socket() -> UnixStream {
    let fd = rustix::io::dup(std::io::stdin()).expect("dup stdin");
    UnixStream::from(fd)
}

/// Sends `fd` and `data` in one message (SCM_RIGHTS).
pub(crate) fn send_fd(sock: &UnixStream, fd: BorrowedFd<'_>, data: &[u8]) {
    let fds = [fd];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
    let sent = rustix::net::sendmsg(
        sock,
        &[IoSlice::new(data)],
        &mut control,
        SendFlags::empty(),
    )
    .expect("sendmsg");
    assert_eq!(sent, data.len());
}

/// Receives one fd and exactly `data.len()` bytes (SCM_RIGHTS).
pub(crate) fn recv_fd(sock: &UnixStream, data: &mut [u8]) -> OwnedFd {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = rustix::net::recvmsg(
        sock,
        &mut [IoSliceMut::new(data)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .expect("recvmsg from the child (did it die?)");
    assert!(
        !msg.flags.contains(ReturnFlags::CTRUNC),
        "control truncated"
    );
    assert_eq!(msg.bytes, data.len(), "short message from the child");
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = message
            && let Some(fd) = fds.next()
        {
            return fd;
        }
    }
    panic!("the child's message carried no fd");
}

/// Sends one byte.
pub(crate) fn send_byte(mut sock: &UnixStream, byte: u8) {
    sock.write_all(&[byte]).expect("send a byte");
}

/// Receives one byte (times out after [`TIMEOUT`] on the parent's end).
pub(crate) fn recv_byte(mut sock: &UnixStream) -> u8 {
    let mut byte = [0];
    sock.read_exact(&mut byte).expect("receive a byte");
    byte[0]
}
