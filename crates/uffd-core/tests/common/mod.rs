//! Helpers shared by the integration tests: anonymous and shared mappings, a registered region
//! that cleans up after itself, threads that block on faults, event waiting, and child
//! processes (the test binary re-executed with a role) that pass fds over a Unix socket.
//!
//! Every test binary uses a different subset of these helpers.
#![allow(dead_code, unreachable_pub)]

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::mm::{Advice, MapFlags, MremapFlags, ProtFlags};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use uffd_core::{
    Event, EventBuffer, Features, Ioctls, PageFault, PageSize, Range, RegisterMode, Uffd,
    UffdBuilder,
};

/// Base page size.
pub const PAGE: usize = 4096;
/// 2 MiB huge page size.
pub const HUGE: usize = 2 << 20;
/// How long anything that must happen may take before the test fails instead of hanging.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a thread must stay blocked to show that something did NOT happen.
pub const BLOCKED: Duration = Duration::from_millis(100);

/// A page-sized buffer whose every byte depends on `seed` and its offset, so pages and offsets
/// are told apart.
pub fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed ^ (i as u8).wrapping_mul(31) ^ ((i >> 8) as u8))
        .collect()
}

/// A uffd (device then syscall, non-blocking, close-on-exec) with `features`.
pub fn uffd(features: Features) -> Uffd {
    UffdBuilder::new()
        .features(features)
        .create()
        .unwrap_or_else(|e| panic!("creating a uffd with {features:?}: {e}"))
}

/// A private mapping this test owns; unmapped on drop. Accessed only through raw pointers
/// (never Rust references), since the kernel changes its contents behind the program's back.
#[derive(Debug)]
pub struct Mapping {
    addr: usize,
    len: usize,
}

impl Mapping {
    /// `pages` anonymous private read-write 4 KiB pages.
    pub fn anon(pages: usize) -> Self {
        Self::anon_with(
            pages * PAGE,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE,
        )
        .expect("mmap of anonymous memory")
    }

    /// `pages` anonymous pages with no access, to reserve addresses (an `mremap` target).
    pub fn reserve(pages: usize) -> Self {
        Self::anon_with(pages * PAGE, ProtFlags::empty(), MapFlags::PRIVATE)
            .expect("mmap of a reservation")
    }

    /// `huge_pages` anonymous private 2 MiB hugetlb pages.
    pub fn hugetlb(huge_pages: usize) -> rustix::io::Result<Self> {
        Self::anon_with(
            huge_pages * HUGE,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE | MapFlags::HUGETLB | MapFlags::HUGE_2MB,
        )
    }

    fn anon_with(len: usize, prot: ProtFlags, flags: MapFlags) -> rustix::io::Result<Self> {
        // SAFETY: a fresh mapping at an address the kernel picks; it overlaps nothing of ours.
        let ptr = unsafe { rustix::mm::mmap_anonymous(std::ptr::null_mut(), len, prot, flags) }?;
        Ok(Mapping {
            addr: ptr as usize,
            len,
        })
    }

    /// A read-write `MAP_SHARED` mapping of the first `len` bytes of `fd`.
    pub fn shared(fd: BorrowedFd<'_>, len: usize) -> Self {
        // SAFETY: a fresh mapping at an address the kernel picks; it overlaps nothing of ours.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                0,
            )
        }
        .expect("mmap of a shared file");
        Mapping {
            addr: ptr as usize,
            len,
        }
    }

    /// First address.
    pub fn addr(&self) -> u64 {
        self.addr as u64
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Address of the 4 KiB page `i`.
    pub fn page_addr(&self, i: usize) -> u64 {
        assert!(i * PAGE < self.len, "page {i} outside the mapping");
        (self.addr + i * PAGE) as u64
    }

    /// The whole mapping as a 4 KiB range.
    pub fn range(&self) -> Range {
        Range::new(self.addr(), self.len as u64, PageSize::Base4K).expect("mapping range")
    }

    /// `count` 4 KiB pages from page `first`.
    pub fn pages(&self, first: usize, count: usize) -> Range {
        assert!(
            (first + count) * PAGE <= self.len,
            "pages outside the mapping"
        );
        Range::pages(self.page_addr(first), count as u64, PageSize::Base4K).expect("page range")
    }

    /// The 4 KiB page `i`.
    pub fn page(&self, i: usize) -> Range {
        self.pages(i, 1)
    }

    fn ptr(&self, offset: usize, len: usize) -> *mut u8 {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= self.len),
            "[{offset:#x}, +{len:#x}) outside a mapping of {:#x} bytes",
            self.len
        );
        (self.addr + offset) as *mut u8
    }

    /// Reads one byte (blocks on a userfault if the page is missing and registered).
    pub fn read(&self, offset: usize) -> u8 {
        let ptr = self.ptr(offset, 1);
        // SAFETY: `ptr` lies inside this live read-write mapping (checked above); a volatile
        // read through a raw pointer creates no reference the kernel could invalidate.
        unsafe { ptr.read_volatile() }
    }

    /// Writes one byte (blocks on a userfault if the page is missing or write-protected).
    pub fn write(&self, offset: usize, value: u8) {
        let ptr = self.ptr(offset, 1);
        // SAFETY: as in `read`; the mapping is writable and nothing holds a reference into it.
        unsafe { ptr.write_volatile(value) }
    }

    /// Copies `len` bytes out (every page touched must be present, or this blocks).
    pub fn read_bytes(&self, offset: usize, len: usize) -> Vec<u8> {
        let ptr = self.ptr(offset, len);
        let mut out = vec![0; len];
        // SAFETY: `ptr..ptr+len` lies inside this live mapping (checked above) and cannot
        // overlap the freshly allocated `out`.
        unsafe { std::ptr::copy_nonoverlapping(ptr, out.as_mut_ptr(), len) };
        out
    }

    /// Copies `bytes` in at `offset` (populating the pages touched).
    pub fn write_bytes(&self, offset: usize, bytes: &[u8]) {
        let ptr = self.ptr(offset, bytes.len());
        // SAFETY: as in `read_bytes`, in the other direction; the mapping is writable.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr, bytes.len()) };
    }

    /// `madvise(MADV_DONTNEED)` on `count` pages from page `first` (blocks until a REMOVE
    /// event is read if the range is registered with `EVENT_REMOVE`).
    pub fn dontneed(&self, first: usize, count: usize) -> rustix::io::Result<()> {
        let ptr = self.ptr(first * PAGE, count * PAGE);
        // SAFETY: the pages lie inside this mapping; nothing holds references into it, and
        // dropping their contents is what the test wants.
        unsafe { rustix::mm::madvise(ptr.cast(), count * PAGE, Advice::LinuxDontNeed) }
    }

    /// `munmap` of `count` pages from page `first` (blocks until an UNMAP event is read if the
    /// range is registered with `EVENT_UNMAP`). The pages must not be accessed afterwards; the
    /// drop unmaps the whole range again, which is harmless.
    pub fn unmap_pages(&self, first: usize, count: usize) -> rustix::io::Result<()> {
        let ptr = self.ptr(first * PAGE, count * PAGE);
        // SAFETY: the pages lie inside this mapping and nothing holds references into them;
        // callers never touch them again.
        unsafe { rustix::mm::munmap(ptr.cast(), count * PAGE) }
    }

    /// Moves this mapping onto `target` (same length) with `mremap(MREMAP_MAYMOVE |
    /// MREMAP_FIXED)`; `target`'s reservation is replaced. Blocks until a REMAP event is read if
    /// the mapping is registered with `EVENT_REMAP`.
    pub fn move_to(&mut self, target: Mapping) -> rustix::io::Result<()> {
        assert_eq!(self.len, target.len, "mremap target of another size");
        let dst = target.addr as *mut std::ffi::c_void;
        // The reservation is consumed by the move: never unmap it separately.
        std::mem::forget(target);
        // SAFETY: both ranges are mappings this test owns, nothing holds references into
        // either, and `self` is updated to the new address before anyone uses it again.
        let new = unsafe {
            rustix::mm::mremap_fixed(
                self.addr as *mut std::ffi::c_void,
                self.len,
                self.len,
                MremapFlags::MAYMOVE,
                dst,
            )
        }?;
        assert_eq!(new, dst, "mremap moved elsewhere than asked");
        self.addr = new as usize;
        Ok(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the whole mapping is ours and nothing refers into it any more.
        let _ = unsafe { rustix::mm::munmap(self.addr as *mut std::ffi::c_void, self.len) };
    }
}

/// An anonymous mapping registered with its own uffd. On drop it unregisters (waking any
/// thread still blocked on a fault there, which then reads zeros), closes the uffd and, once no
/// thread holds the mapping, unmaps it.
#[derive(Debug)]
pub struct Region {
    /// The uffd the mapping is registered with.
    pub uffd: Uffd,
    /// The mapping (shared with threads that touch it).
    pub map: Arc<Mapping>,
    /// The ioctls the registration reported.
    pub ioctls: Ioctls,
}

impl Region {
    /// `pages` fresh anonymous pages registered with `mode` on a new uffd with `features`.
    pub fn new(pages: usize, features: Features, mode: RegisterMode) -> Self {
        Self::register(Mapping::anon(pages), features, mode)
    }

    /// Registers `map` with `mode` on a new uffd with `features`.
    pub fn register(map: Mapping, features: Features, mode: RegisterMode) -> Self {
        let uffd = uffd(features);
        let ioctls = uffd
            .register(map.range(), mode)
            .unwrap_or_else(|e| panic!("register: {e}"));
        Region {
            uffd,
            map: Arc::new(map),
            ioctls,
        }
    }

    /// The 4 KiB page `i`.
    pub fn page(&self, i: usize) -> Range {
        self.map.page(i)
    }

    /// `count` pages from page `first`.
    pub fn pages(&self, first: usize, count: usize) -> Range {
        self.map.pages(first, count)
    }

    /// A thread that reads byte `offset` (blocking on the fault) and sends it back.
    pub fn spawn_read(&self, offset: usize) -> Pending<u8> {
        let map = Arc::clone(&self.map);
        spawn(&format!("read {offset:#x}"), move || map.read(offset))
    }

    /// A thread that writes `value` at `offset` (blocking on the fault).
    pub fn spawn_write(&self, offset: usize, value: u8) -> Pending<()> {
        let map = Arc::clone(&self.map);
        spawn(&format!("write {offset:#x}"), move || {
            map.write(offset, value)
        })
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        let _ = self.uffd.unregister(self.map.range());
    }
}

/// A thread doing something that may block in the kernel; its result comes back through a
/// channel. Never joined on drop: a thread still blocked is released when its uffd closes.
#[derive(Debug)]
pub struct Pending<T> {
    what: String,
    rx: Receiver<T>,
    handle: Option<JoinHandle<()>>,
}

/// Runs `f` on a new thread named `what`.
pub fn spawn<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> Pending<T> {
    let (tx, rx) = mpsc::channel();
    let handle = thread::Builder::new()
        .name(what.to_string())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .expect("spawn a thread");
    Pending {
        what: what.to_string(),
        rx,
        handle: Some(handle),
    }
}

impl<T> Pending<T> {
    /// Asserts the thread has NOT finished within [`BLOCKED`].
    pub fn assert_blocked(&self) {
        match self.rx.recv_timeout(BLOCKED) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(_) => panic!("{}: finished, but should still be blocked", self.what),
            Err(RecvTimeoutError::Disconnected) => panic!("{}: the thread died", self.what),
        }
    }

    /// Waits (at most [`TIMEOUT`]) for the thread's result.
    pub fn wait(mut self) -> T {
        match self.rx.recv_timeout(TIMEOUT) {
            Ok(value) => {
                if let Some(handle) = self.handle.take() {
                    handle.join().expect("thread panicked after sending");
                }
                value
            }
            Err(RecvTimeoutError::Timeout) => {
                panic!("{}: still blocked after {TIMEOUT:?}", self.what)
            }
            Err(RecvTimeoutError::Disconnected) => {
                if let Some(Err(panic)) = self.handle.take().map(JoinHandle::join) {
                    std::panic::resume_unwind(panic);
                }
                panic!("{}: the thread died without a result", self.what)
            }
        }
    }
}

/// Whether `fd` becomes readable within `timeout`.
pub fn readable(fd: impl AsFd, timeout: Duration) -> bool {
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let timeout = Timespec::try_from(timeout).expect("timeout");
    loop {
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(n) => return n > 0 && fds[0].revents().contains(PollFlags::IN),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => panic!("poll: {e}"),
        }
    }
}

/// Waits (at most [`TIMEOUT`]) until `uffd` has something to read, then reads one batch.
pub fn read_batch(uffd: &Uffd, buf: &mut EventBuffer) -> Vec<Event> {
    assert!(readable(uffd, TIMEOUT), "no uffd event within {TIMEOUT:?}");
    let events: Vec<Event> = uffd.read_events(buf).expect("read_events").collect();
    assert!(
        !events.is_empty(),
        "the uffd was readable but the batch is empty"
    );
    events
}

/// Waits for exactly one event and returns it.
pub fn next_event(uffd: &Uffd) -> Event {
    let mut buf = EventBuffer::new(16);
    let mut events = read_batch(uffd, &mut buf);
    assert_eq!(events.len(), 1, "expected one event, got {events:?}");
    events.pop().expect("one event")
}

/// Waits for exactly one event, which must be a page fault.
pub fn next_fault(uffd: &Uffd) -> PageFault {
    match next_event(uffd) {
        Event::PageFault(fault) => fault,
        other => panic!("expected a page fault, got {other:?}"),
    }
}

/// Asserts nothing is pending (the uffd must be non-blocking).
pub fn assert_no_events(uffd: &Uffd) {
    let mut buf = EventBuffer::new(16);
    let events: Vec<Event> = uffd.read_events(&mut buf).expect("read_events").collect();
    assert!(events.is_empty(), "unexpected events: {events:?}");
}

/// What `/proc/self/fdinfo` says about a uffd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdInfo {
    /// Faults queued and not yet read.
    pub pending: u64,
    /// Faults queued or read but not yet resolved.
    pub total: u64,
    /// The context's feature bits (the kernel's internal "initialized" bit 31 removed).
    pub features: u64,
}

/// Parses `/proc/self/fdinfo/<fd>` of a uffd.
pub fn fdinfo(uffd: &impl std::os::fd::AsRawFd) -> FdInfo {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", uffd.as_raw_fd()))
        .expect("read fdinfo");
    let field = |name: &str| -> &str {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in fdinfo:\n{text}"))
            .trim()
    };
    let api: Vec<&str> = field("API:").split(':').collect();
    assert_eq!(api.len(), 3, "fdinfo API line: {api:?}");
    FdInfo {
        pending: field("pending:").parse().expect("pending"),
        total: field("total:").parse().expect("total"),
        features: u64::from_str_radix(api[1], 16).expect("features") & !(1 << 31),
    }
}

/// Waits (at most [`TIMEOUT`]) until `n` faults are queued unread on `uffd`, as the kernel
/// reports in fdinfo: the way to know several threads all reached their fault.
pub fn wait_pending(uffd: &Uffd, n: u64) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let info = fdinfo(uffd);
        if info.pending == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{n} faults never became pending: {info:?}"
        );
        thread::yield_now();
    }
}

/// Reports a skipped test as `SKIP <test>: <reason>` on the process's stderr, bypassing the
/// test harness's output capture so that a skip is never silent.
pub fn skip(test: &str, reason: &str) {
    let _ = writeln!(std::io::stderr().lock(), "SKIP {test}: {reason}");
}

/// `HugePages_Free` from /proc/meminfo.
pub fn free_hugepages() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("read /proc/meminfo");
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The environment variable that makes a re-executed test binary play a child role.
pub const CHILD_ENV: &str = "UFFD_CORE_TEST_CHILD";

/// The role this process was re-executed to play, if any.
pub fn child_role() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

/// A child process: this test binary re-executed to run only `test` in `role`, with a Unix
/// socket to the parent as its stdin. Killed on drop if still running.
#[derive(Debug)]
pub struct ChildProc {
    child: Option<Child>,
    /// The parent's end of the socket (reads time out after [`TIMEOUT`]).
    pub sock: UnixStream,
}

impl ChildProc {
    /// Spawns the child.
    pub fn spawn(test: &str, role: &str) -> Self {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        ours.set_read_timeout(Some(TIMEOUT)).expect("SO_RCVTIMEO");
        let child = Command::new(std::env::current_exe().expect("current_exe"))
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
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
    pub fn recv_fd<const N: usize>(&self) -> (OwnedFd, [u8; N]) {
        let mut data = [0; N];
        let fd = recv_fd(&self.sock, &mut data);
        (fd, data)
    }

    /// Waits (at most [`TIMEOUT`], else kills it and fails) for the child to exit; its status
    /// and everything it printed.
    pub fn finish(mut self) -> (ExitStatus, String) {
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
        let text = format!(
            "--- child stdout ---\n{}\n--- child stderr ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
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
pub fn parent_socket() -> UnixStream {
    let fd = rustix::io::dup(std::io::stdin()).expect("dup stdin");
    UnixStream::from(fd)
}

/// Sends `fd` and `data` in one message (SCM_RIGHTS).
pub fn send_fd(sock: &UnixStream, fd: BorrowedFd<'_>, data: &[u8]) {
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
pub fn recv_fd(sock: &UnixStream, data: &mut [u8]) -> OwnedFd {
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
pub fn send_byte(mut sock: &UnixStream, byte: u8) {
    sock.write_all(&[byte]).expect("send a byte");
}

/// Receives one byte (times out after [`TIMEOUT`] on the parent's end).
pub fn recv_byte(mut sock: &UnixStream) -> u8 {
    let mut byte = [0];
    sock.read_exact(&mut byte).expect("receive a byte");
    byte[0]
}
