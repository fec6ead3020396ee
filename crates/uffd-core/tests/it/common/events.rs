//! Waiting for and reading uffd events, and the kernel's own view of a uffd (fdinfo).

use std::os::fd::AsFd;
use std::thread;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use uffd_core::{Event, EventBuffer, Outcome, PageFault, Status, Uffd};

use test_support::TIMEOUT;

/// Whether `fd` becomes readable within `timeout`.
pub(crate) fn readable(fd: impl AsFd, timeout: Duration) -> bool {
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

pub(crate) use test_support::poll_in;

/// Waits (at most [`TIMEOUT`]) until `uffd` has something to read, then reads one batch.
pub(crate) fn read_batch(uffd: &Uffd, buf: &mut EventBuffer) -> Vec<Event> {
    assert!(readable(uffd, TIMEOUT), "no uffd event within {TIMEOUT:?}");
    let events: Vec<Event> = uffd.read_events(buf).expect("read_events").collect();
    assert!(
        !events.is_empty(),
        "the uffd was readable but the batch is empty"
    );
    events
}

/// Waits for exactly one event and returns it.
pub(crate) fn next_event(uffd: &Uffd) -> Event {
    let mut buf = EventBuffer::new(16);
    let mut events = read_batch(uffd, &mut buf);
    assert_eq!(events.len(), 1, "expected one event, got {events:?}");
    events.pop().expect("one event")
}

/// Waits for exactly one event, which must be a page fault.
pub(crate) fn next_fault(uffd: &Uffd) -> PageFault {
    match next_event(uffd) {
        Event::PageFault(fault) => fault,
        other => panic!("expected a page fault, got {other:?}"),
    }
}

/// Asserts nothing is pending (the uffd must be non-blocking).
pub(crate) fn assert_no_events(uffd: &Uffd) {
    let mut buf = EventBuffer::new(16);
    let events: Vec<Event> = uffd.read_events(&mut buf).expect("read_events").collect();
    assert!(events.is_empty(), "unexpected events: {events:?}");
}

/// What `/proc/self/fdinfo` says about a uffd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FdInfo {
    /// Faults queued and not yet read.
    pub(crate) pending: u64,
    /// Faults queued or read but not yet resolved.
    pub(crate) total: u64,
    /// The context's feature bits (the kernel's internal "initialized" bit 31 removed).
    pub(crate) features: u64,
}

/// Parses `/proc/self/fdinfo/<fd>` of a uffd.
pub(crate) fn fdinfo(uffd: &impl std::os::fd::AsRawFd) -> FdInfo {
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
pub(crate) fn wait_pending(uffd: &Uffd, n: u64) {
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

/// Asserts an operation did the whole range, showing the outcome if not.
#[track_caller]
pub(crate) fn assert_complete(outcome: Outcome) {
    assert!(
        outcome.status == Status::Complete && outcome.done == outcome.requested,
        "expected a complete operation, got {outcome:?}"
    );
}
