//! The engine's two locks, and the only ways to reach the uffd once the engine has started.
//!
//! **The settle barrier** is held shared by every install from its state check to its record,
//! and exclusive by exports and close, which therefore see no install half done. **The read
//! gate** is held exclusive by a reader from its `read(2)` until that batch's REMOVEs are
//! recorded, and shared by an install from its last state check to the end of its COPY: the VMM
//! zaps a removed range as soon as its REMOVE is read, and a COPY into the zapped range
//! succeeds, so an install past its check when a REMOVE is read would put snapshot bytes back
//! into a page the guest has just freed. Neither is ever held across a source fetch or a hook
//! point, so reading events waits for one COPY at most.
//!
//! The order is settle, then gate, and the types make it the only one: [`Settled`] (the settle
//! lock shared, the uffd known open) is the way to wake and write-protect, and its
//! [`Settled::gate`] gives [`Installing`], the only way to COPY or ZEROPAGE. [`Exclusive`] holds
//! both for exports and close; [`Reading`] holds the gate alone, since reading events must
//! never wait on the settle lock (a REMOVE that cannot be read makes every ioctl answer EAGAIN
//! and hangs the madvising thread). No ioctl can follow close: [`Locks::settled`] answers
//! `None` once [`Exclusive::close`] has run.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use uffd_core::{
    CopyMode, Error, EventBuffer, Events, Outcome, Range, Uffd, WriteProtectMode, ZeropageMode,
};

/// The uffd and the locks that guard every use of it.
pub(crate) struct Locks {
    uffd: Uffd,
    settle: RwLock<()>,
    gate: RwLock<()>,
    /// Set under both locks held exclusive, just before the regions are unregistered.
    closed: AtomicBool,
}

impl Locks {
    pub(crate) fn new(uffd: Uffd) -> Self {
        Locks {
            uffd,
            settle: RwLock::new(()),
            gate: RwLock::new(()),
            closed: AtomicBool::new(false),
        }
    }

    /// The settle lock, shared; `None` once the uffd is closed (nothing to do then: closing
    /// unregistered the ranges, which woke every waiter).
    pub(crate) fn settled(&self) -> Option<Settled<'_>> {
        let guard = self.settle.read();
        if self.closed.load(Ordering::Acquire) {
            return None;
        }
        Some(Settled {
            uffd: &self.uffd,
            gate: &self.gate,
            _settle: guard,
        })
    }

    /// Both locks, exclusive: no install is between its state check and its record, and no
    /// REMOVE is being read.
    pub(crate) fn exclusive(&self) -> Exclusive<'_> {
        let settle = self.settle.write();
        let gate = self.gate.write();
        Exclusive {
            locks: self,
            _settle: settle,
            _gate: gate,
        }
    }

    /// Waits until every install in flight has recorded its state.
    pub(crate) fn wait_for_installs(&self) {
        drop(self.settle.write());
    }

    /// The read gate, exclusive, for one `read(2)` and the recording of its REMOVEs.
    pub(crate) fn reading(&self) -> Reading<'_> {
        Reading {
            uffd: &self.uffd,
            _gate: self.gate.write(),
        }
    }

    /// The uffd, to poll for readability (no ioctl).
    pub(crate) fn poll_fd(&self) -> BorrowedFd<'_> {
        self.uffd.as_fd()
    }
}

/// The settle lock held shared, the uffd open.
pub(crate) struct Settled<'l> {
    uffd: &'l Uffd,
    gate: &'l RwLock<()>,
    _settle: RwLockReadGuard<'l, ()>,
}

impl Settled<'_> {
    /// The read gate, shared: from an install's last state check to the end of its COPY.
    pub(crate) fn gate(&self) -> Installing<'_> {
        Installing {
            uffd: self.uffd,
            _gate: self.gate.read(),
        }
    }

    pub(crate) fn wake(&self, range: Range) -> Outcome {
        self.uffd.wake(range)
    }

    pub(crate) fn writeprotect(&self, range: Range, mode: WriteProtectMode) -> Outcome {
        self.uffd.writeprotect(range, mode)
    }
}

/// Both locks held shared, in order: the only way to install.
pub(crate) struct Installing<'s> {
    uffd: &'s Uffd,
    _gate: RwLockReadGuard<'s, ()>,
}

impl Installing<'_> {
    pub(crate) fn copy(&self, dst: Range, src: &[u8], mode: CopyMode) -> Outcome {
        self.uffd.copy(dst, src, mode)
    }

    pub(crate) fn zeropage(&self, dst: Range, mode: ZeropageMode) -> Outcome {
        self.uffd.zeropage(dst, mode)
    }
}

/// Both locks held exclusive.
pub(crate) struct Exclusive<'l> {
    locks: &'l Locks,
    _settle: RwLockWriteGuard<'l, ()>,
    _gate: RwLockWriteGuard<'l, ()>,
}

impl Exclusive<'_> {
    pub(crate) fn writeprotect(&self, range: Range, mode: WriteProtectMode) -> Outcome {
        self.locks.uffd.writeprotect(range, mode)
    }

    /// Marks the uffd closed (no ioctl after this but these unregisters), then unregisters
    /// `ranges`, which wakes every thread still waiting on them. The fd itself closes when the
    /// engine's last reference goes.
    pub(crate) fn close(self, ranges: impl IntoIterator<Item = Range>) {
        self.locks.closed.store(true, Ordering::Release);
        for range in ranges {
            let _ = self.locks.uffd.unregister(range);
        }
    }
}

/// The read gate held exclusive.
pub(crate) struct Reading<'l> {
    uffd: &'l Uffd,
    _gate: RwLockWriteGuard<'l, ()>,
}

impl Reading<'_> {
    pub(crate) fn read_events<'b>(&self, batch: &'b mut EventBuffer) -> Result<Events<'b>, Error> {
        self.uffd.read_events(batch)
    }
}
