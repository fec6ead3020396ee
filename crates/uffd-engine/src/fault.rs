//! A fault the engine has read and owes an answer.

/// What kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum FaultKind {
    /// A read of a missing page.
    Read,
    /// A write to a missing page.
    Write,
    /// A write to a write-protected page.
    WriteProtect,
}

/// A fault read from the uffd, or taken back from the deferred queue: a ticket for a thread
/// of the VMM that sleeps until its page is installed or woken. Every way of finishing it
/// consumes it ([`Fault::finish`]); one dropped unfinished is a bug the debug build asserts on,
/// since its thread would sleep forever.
#[derive(Debug)]
#[must_use = "a fault ends in an install, a wake or a deferral"]
pub(crate) struct Fault {
    /// Page-aligned host address.
    addr: u64,
    kind: FaultKind,
}

/// How a fault ended: how its thread is (or will be) released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finish {
    /// Its page was installed (and woken).
    Installed,
    /// Its page was woken without an install: the thread touches it again and faults anew if
    /// it is still absent.
    Woken,
    /// Its page was made writable, which wakes it (a write-protect fault).
    Unprotected,
    /// It waits in the deferred queue, which serves or wakes it.
    Deferred,
    /// A source failure's wake is scheduled for its page (or already was): that wake
    /// releases it after the backoff.
    WakeScheduled,
    /// The uffd is closing: unregistering the ranges wakes every waiter.
    Closing,
    /// The VMM's memory is gone (ESRCH): no thread is left to release.
    VmmGone,
}

impl Fault {
    pub(crate) fn new(addr: u64, kind: FaultKind) -> Self {
        Fault { addr, kind }
    }

    pub(crate) fn addr(&self) -> u64 {
        self.addr
    }

    pub(crate) fn kind(&self) -> FaultKind {
        self.kind
    }

    /// Ends the ticket; `how` says what releases the thread.
    pub(crate) fn finish(self, how: Finish) {
        let _ = how;
        std::mem::forget(self);
    }
}

impl Drop for Fault {
    fn drop(&mut self) {
        debug_assert!(
            std::thread::panicking(),
            "the {:?} fault at {:#x} was dropped without an install, a wake or a deferral",
            self.kind,
            self.addr
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_fault_is_quiet() {
        Fault::new(0x1000, FaultKind::Read).finish(Finish::Installed);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "dropped without an install, a wake or a deferral")]
    fn a_fault_dropped_unfinished_is_a_bug() {
        let fault = Fault::new(0x2000, FaultKind::Write);
        drop(fault);
    }
}
