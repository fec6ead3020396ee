//! The one result type of every range operation.

use rustix::io::Errno;

/// How a range operation ended, classified from the kernel's errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// The whole range was done.
    Complete,
    /// EEXIST: a page was already there (a racing install won). The waiter may still need a
    /// `wake`: EEXIST proves the page exists, not that anyone woke the faulting thread.
    Exists,
    /// EAGAIN: a non-cooperative event (REMOVE, UNMAP, REMAP, FORK) is pending and must be read
    /// first, or the operation stopped part-way (see [`Outcome::done`]). Retry the rest later.
    Again,
    /// ESRCH: the registered process's mm is gone; stop serving it.
    Gone,
    /// ENOENT: no mapping (or no registration) covers the range any more.
    NoMapping,
    /// EINVAL: the request is invalid for this range (mode not registered, bad alignment,
    /// an ioctl the range does not support).
    Invalid,
    /// Any other errno.
    Other(Errno),
}

impl Status {
    /// The status an errno means.
    pub fn from_errno(errno: Errno) -> Self {
        match errno {
            Errno::EXIST => Status::Exists,
            Errno::AGAIN => Status::Again,
            Errno::SRCH => Status::Gone,
            Errno::NOENT => Status::NoMapping,
            Errno::INVAL => Status::Invalid,
            other => Status::Other(other),
        }
    }

    /// The errno behind a failed status, `None` for [`Status::Complete`].
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Status::Complete => None,
            Status::Exists => Some(Errno::EXIST),
            Status::Again => Some(Errno::AGAIN),
            Status::Gone => Some(Errno::SRCH),
            Status::NoMapping => Some(Errno::NOENT),
            Status::Invalid => Some(Errno::INVAL),
            Status::Other(e) => Some(*e),
        }
    }
}

/// What a range operation did: bytes asked for, bytes done (a prefix of the range), and why it
/// stopped.
///
/// `done` comes from the kernel's signed progress field, zeroed before the call: a value
/// `<= 0` (nothing done, or a negated errno) reads as 0 and is never cast into a huge count;
/// a value above `requested` is clamped. Operations without a progress field report all or
/// nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[must_use = "an operation's outcome says whether the faulting thread was served"]
pub struct Outcome {
    /// Bytes asked for.
    pub requested: u64,
    /// Bytes done, from the start of the range.
    pub done: u64,
    /// Why it stopped.
    pub status: Status,
}

impl Outcome {
    pub(crate) fn from_progress(requested: u64, result: Result<(), Errno>, field: i64) -> Self {
        match result {
            Ok(()) => Outcome {
                requested,
                done: requested,
                status: Status::Complete,
            },
            Err(errno) => {
                let done = u64::try_from(field).unwrap_or(0).min(requested);
                Outcome {
                    requested,
                    done,
                    status: Status::from_errno(errno),
                }
            }
        }
    }

    pub(crate) fn invalid(requested: u64) -> Self {
        Outcome {
            requested,
            done: 0,
            status: Status::Invalid,
        }
    }

    pub(crate) fn all_or_nothing(requested: u64, result: Result<(), Errno>) -> Self {
        Outcome::from_progress(requested, result, 0)
    }

    /// Whether the whole range was done.
    pub fn is_complete(&self) -> bool {
        self.status == Status::Complete
    }

    /// Whether some but not all of the range was done.
    pub fn is_partial(&self) -> bool {
        self.done > 0 && self.done < self.requested
    }

    /// Bytes not done.
    pub fn remaining(&self) -> u64 {
        self.requested - self.done
    }
}
