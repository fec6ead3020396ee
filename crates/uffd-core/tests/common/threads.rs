//! Threads that may block in the kernel, observed through channels with bounded waits.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::{self, JoinHandle};

use super::{BLOCKED, TIMEOUT};

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
