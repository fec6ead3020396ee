//! A request in flight.

use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};

use crate::Reply;
use crate::driver::Answer;
use crate::{VmmError, VmmProcess};

/// A request sent and not yet answered.
#[must_use = "a pending request is waited for, or its answer is lost"]
pub struct Pending<'a, T> {
    vmm: &'a VmmProcess,
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

impl<'a, T> Pending<'a, T> {
    pub(super) fn new(
        vmm: &'a VmmProcess,
        id: u64,
        what: &'static str,
        rx: Receiver<Answer>,
        convert: fn(Reply) -> Option<T>,
    ) -> Self {
        Pending {
            vmm,
            id,
            what,
            rx,
            convert,
        }
    }

    /// The request's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether the answer (or the test VMM's exit) has arrived; [`Pending::wait`] then returns at
    /// once.
    pub fn is_done(&self) -> bool {
        !self.rx.is_empty() || self.vmm.output_ended()
    }

    /// Waits (at most the request timeout) for the answer.
    pub fn wait(self) -> Result<T, VmmError> {
        let timeout = self.vmm.request_timeout();
        self.wait_timeout(timeout)
    }

    /// Waits at most `timeout` for the answer. On timeout the request is abandoned (a late
    /// answer is dropped) and the test VMM keeps running: [`VmmProcess::kill`] it if it hangs.
    pub fn wait_timeout(self, timeout: Duration) -> Result<T, VmmError> {
        match self.rx.recv_timeout(timeout) {
            Ok(answer) => self.finish(answer),
            Err(RecvTimeoutError::Timeout) => {
                self.vmm.forget(self.id);
                Err(VmmError::Timeout {
                    request: format!("{} (request {})", self.what, self.id),
                    after: timeout,
                })
            }
            Err(RecvTimeoutError::Disconnected) => Err(self.vmm.exited_error()),
        }
    }

    /// The answer if it has arrived (or the test VMM exited), without waiting; else `self` back.
    pub fn try_wait(self) -> Result<Result<T, VmmError>, Self> {
        match self.rx.try_recv() {
            Ok(answer) => Ok(self.finish(answer)),
            Err(TryRecvError::Empty) => Err(self),
            Err(TryRecvError::Disconnected) => Ok(Err(self.vmm.exited_error())),
        }
    }

    fn finish(&self, answer: Answer) -> Result<T, VmmError> {
        let reply = answer.map_err(VmmError::Remote)?;
        (self.convert)(reply.clone())
            .ok_or_else(|| VmmError::Protocol(format!("{} was answered with {reply:?}", self.what)))
    }
}
