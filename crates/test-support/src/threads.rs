//! Threads that may block in the kernel (on a userfault, an `munmap` waiting for its event),
//! observed through a channel with bounded waits so that a test fails instead of hanging.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::TIMEOUT;

/// How long a thread must stay blocked to show that something did NOT happen.
pub const BLOCKED: Duration = Duration::from_millis(100);

/// A thread doing something that may block in the kernel; its result comes back through a
/// channel.
///
/// Never joined on drop: a thread still blocked on a fault is released when the uffd it
/// waits on unregisters the range or closes (it then reads zeros), and a test that drops a
/// `Pending` without waiting does not want its result.
#[derive(Debug)]
pub struct Pending<T> {
    what: String,
    rx: Receiver<T>,
    handle: Option<JoinHandle<()>>,
}

/// Runs `f` on a new thread named `what` (the name also appears in every failure message).
///
/// # Panics
///
/// If the thread cannot be spawned.
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
    ///
    /// # Panics
    ///
    /// If the thread finished or died within [`BLOCKED`].
    #[track_caller]
    pub fn assert_blocked(&self) {
        match self.rx.recv_timeout(BLOCKED) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(_) => panic!("{}: finished, but should still be blocked", self.what),
            Err(RecvTimeoutError::Disconnected) => panic!("{}: the thread died", self.what),
        }
    }

    /// Waits (at most [`TIMEOUT`]) for the thread's result.
    ///
    /// # Panics
    ///
    /// If the thread is still running after [`TIMEOUT`]; if it panicked, with its panic.
    #[track_caller]
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
