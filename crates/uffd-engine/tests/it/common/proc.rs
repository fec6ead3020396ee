//! What the kernel says about a uffd and a thread, read from /proc: how tests know a fault or
//! an event is queued without sleeping.

use std::time::{Duration, Instant};

/// Faults queued on the uffd and not yet read (`pending:` in fdinfo).
pub fn pending_faults(uffd_fd: i32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{uffd_fd}")).unwrap();
    let mut words = text.split_whitespace();
    while let Some(word) = words.next() {
        if word == "pending:" {
            return words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        }
    }
    panic!("no pending: line in the uffd's fdinfo:\n{text}")
}

/// Where thread `tid` of this process sleeps in the kernel.
pub fn wchan(tid: i32) -> String {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/wchan")).unwrap_or_default()
}

/// The calling thread's id.
pub fn gettid() -> i32 {
    rustix::thread::gettid().as_raw_nonzero().get()
}

/// Polls a kernel-side condition until it holds (fails after 10 s). The condition is read
/// from the kernel, so this observes a state rather than guessing a delay.
pub fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}
