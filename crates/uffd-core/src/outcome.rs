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

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let meaning = match self {
            Status::Complete => return f.write_str("complete"),
            Status::Exists => "a page is already installed",
            Status::Again => "retry later (an event is pending, or the operation stopped part-way)",
            Status::Gone => "the registered process has exited",
            Status::NoMapping => "no registered mapping covers the range",
            Status::Invalid => "invalid for this range",
            Status::Other(errno) => return write!(f, "{errno}"),
        };
        match self.errno() {
            Some(errno) => write!(f, "{meaning}: {errno}"),
            None => f.write_str(meaning),
        }
    }
}

/// What a range operation did: bytes asked for, bytes done (a prefix of the range), and why it
/// stopped.
///
/// To treat anything short of the whole range as an error, use [`Outcome::into_result`] and
/// `?`; to act on each status (wake after [`Status::Exists`], retry the rest after
/// [`Status::Again`]), match on [`Outcome::status`].
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
        self.requested.saturating_sub(self.done)
    }

    /// `Ok` if the whole range was done, else the outcome as an [`Incomplete`] error, so that
    /// `?` can pass it on.
    ///
    /// # Errors
    ///
    /// [`Incomplete`], with the bytes requested and done and the [`Status`], whenever the
    /// status is not [`Status::Complete`] (or, for an outcome built by hand, fewer bytes were
    /// done than requested). A [`Status::Exists`] is an error here too: the page is there, but
    /// the faulting thread may still need a [`wake`](crate::Uffd::wake).
    ///
    /// # Examples
    ///
    /// ```
    /// use uffd_core::{CopyMode, PageSize, Range, RegisterMode, Status, UffdBuilder};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # // SAFETY: a new private mapping at an address the kernel chooses; it replaces nothing.
    /// # let addr = unsafe {
    /// #     rustix::mm::mmap_anonymous(
    /// #         std::ptr::null_mut(),
    /// #         4096,
    /// #         rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
    /// #         rustix::mm::MapFlags::PRIVATE,
    /// #     )?
    /// # } as u64;
    /// // One page of fresh anonymous memory at `addr`, registered for missing-page faults.
    /// let uffd = UffdBuilder::new().create()?;
    /// let page = Range::pages(addr, 1, PageSize::Base4K)?;
    /// uffd.register(page, RegisterMode::MISSING)?;
    ///
    /// uffd.copy(page, &[7; 4096], CopyMode::empty()).into_result()?;
    ///
    /// // The page is there now: a second copy does nothing, and says why.
    /// let err = uffd.copy(page, &[8; 4096], CopyMode::empty()).into_result().unwrap_err();
    /// assert_eq!((err.status, err.requested, err.done), (Status::Exists, 4096, 0));
    /// # uffd.unregister(page)?;
    /// # // SAFETY: the mapping is this example's, and nothing refers into it any more.
    /// # unsafe { rustix::mm::munmap(addr as *mut std::ffi::c_void, 4096)? };
    /// # Ok(())
    /// # }
    /// ```
    pub fn into_result(self) -> Result<(), Incomplete> {
        if self.status == Status::Complete && self.done >= self.requested {
            Ok(())
        } else {
            Err(Incomplete {
                requested: self.requested,
                done: self.done,
                status: self.status,
            })
        }
    }
}

/// A range operation that did not do the whole range: the error of [`Outcome::into_result`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("range operation stopped after {done} of {requested} bytes: {status}")]
pub struct Incomplete {
    /// Bytes asked for.
    pub requested: u64,
    /// Bytes done, from the start of the range.
    pub done: u64,
    /// Why it stopped.
    pub status: Status,
}

impl Incomplete {
    /// The errno behind the status (`None` only for an outcome built by hand that claims
    /// [`Status::Complete`] with bytes missing).
    pub fn errno(&self) -> Option<Errno> {
        self.status.errno()
    }

    /// Bytes not done.
    pub fn remaining(&self) -> u64 {
        self.requested.saturating_sub(self.done)
    }
}

impl From<Incomplete> for Outcome {
    fn from(err: Incomplete) -> Outcome {
        Outcome {
            requested: err.requested,
            done: err.done,
            status: err.status,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(requested: u64, done: u64, status: Status) -> Outcome {
        Outcome {
            requested,
            done,
            status,
        }
    }

    #[test]
    fn into_result_is_ok_only_for_the_whole_range() {
        assert_eq!(outcome(8192, 8192, Status::Complete).into_result(), Ok(()));
        for (done, status) in [
            (0, Status::Exists),
            (4096, Status::Again),
            (0, Status::Gone),
            (0, Status::NoMapping),
            (0, Status::Invalid),
            (0, Status::Other(Errno::NOMEM)),
            // Built by hand: complete in name only.
            (4096, Status::Complete),
        ] {
            let err = outcome(8192, done, status).into_result().unwrap_err();
            assert_eq!((err.requested, err.done, err.status), (8192, done, status));
            assert_eq!(err.errno(), status.errno());
            assert_eq!(err.remaining(), 8192 - done);
        }
    }

    #[test]
    fn incomplete_names_the_bytes_and_the_errno() {
        let err = outcome(8192, 4096, Status::Again)
            .into_result()
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("range operation stopped after 4096 of 8192 bytes: retry later"),
            "{text}"
        );
        assert!(text.contains(&Errno::AGAIN.to_string()), "{text}");
        assert_eq!(Status::Complete.to_string(), "complete");
        assert_eq!(
            Status::Other(Errno::NOMEM).to_string(),
            Errno::NOMEM.to_string()
        );
    }

    #[test]
    fn remaining_never_underflows() {
        assert_eq!(outcome(4096, 8192, Status::Complete).remaining(), 0);
    }
}
