//! Batched event reading: many `uffd_msg` per `read(2)` into a caller-owned buffer.

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};

use rustix::io::Errno;
use uffd_sys as sys;

use crate::{Error, FaultFlags, Features, Uffd};

/// A page fault waiting to be resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageFault {
    /// The faulting address (page aligned unless `EXACT_ADDRESS` was enabled).
    pub address: u64,
    /// Write / WP / minor flags; unknown bits are kept.
    pub flags: FaultFlags,
    /// The faulting thread, only when `THREAD_ID` was enabled.
    pub thread_id: Option<u32>,
}

impl PageFault {
    /// A write access (to a missing or a write-protected page).
    pub fn is_write(&self) -> bool {
        self.flags.contains(FaultFlags::WRITE)
    }

    /// A write to a write-protected page (the page is present).
    pub fn is_wp(&self) -> bool {
        self.flags.contains(FaultFlags::WP)
    }

    /// A minor fault (page-cache page present, PTE missing).
    pub fn is_minor(&self) -> bool {
        self.flags.contains(FaultFlags::MINOR)
    }
}

/// One message from the userfaultfd.
#[derive(Debug)]
pub enum Event {
    /// A thread waits on a fault.
    PageFault(PageFault),
    /// The registered process forked; the child's memory is served through `uffd`, which the
    /// kernel installed in this process. Dropping it closes it.
    Fork {
        /// The child's userfaultfd.
        uffd: OwnedFd,
    },
    /// `mremap` moved `len` bytes from `from` to `to`; the registration moved with them.
    Remap {
        /// Old start.
        from: u64,
        /// New start.
        to: u64,
        /// Length.
        len: u64,
    },
    /// `[start, end)` is being zapped (`MADV_DONTNEED`, `MADV_REMOVE`): it stays registered,
    /// and its next touch must read zeros. The madvising thread resumes once this is read.
    Remove {
        /// Start address.
        start: u64,
        /// End address (exclusive).
        end: u64,
    },
    /// `[start, end)` was unmapped.
    Unmap {
        /// Start address.
        start: u64,
        /// End address (exclusive).
        end: u64,
    },
    /// An event code this crate does not know; surfaced, not fatal.
    Unknown {
        /// The `uffd_msg.event` byte.
        code: u8,
        /// The 24 argument bytes as three words.
        arg: [u64; 3],
    },
}

/// A reusable buffer for [`Uffd::read_events`]; no allocation per event or per read.
pub struct EventBuffer {
    msgs: Box<[sys::uffd_msg]>,
}

impl EventBuffer {
    /// A buffer for up to `capacity` messages per read (at least 1).
    pub fn new(capacity: usize) -> Self {
        EventBuffer {
            msgs: vec![sys::uffd_msg::ZEROED; capacity.max(1)].into_boxed_slice(),
        }
    }

    /// Messages one read can return.
    pub fn capacity(&self) -> usize {
        self.msgs.len()
    }
}

impl std::fmt::Debug for EventBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBuffer")
            .field("capacity", &self.capacity())
            .finish()
    }
}

/// The events of one read, decoded lazily. Dropping it early closes the fds of any FORK
/// events not yet taken, so none leak.
pub struct Events<'a> {
    msgs: &'a [sys::uffd_msg],
    next: usize,
    thread_id: bool,
}

impl Events<'_> {
    /// Messages in this batch (taken or not).
    pub fn len(&self) -> usize {
        self.msgs.len()
    }

    /// Whether the read found nothing pending.
    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }
}

impl Iterator for Events<'_> {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        let msg = self.msgs.get(self.next)?;
        self.next += 1;
        Some(decode(msg, self.thread_id))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.msgs.len() - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Events<'_> {}

impl Drop for Events<'_> {
    fn drop(&mut self) {
        for event in self.by_ref() {
            drop(event);
        }
    }
}

fn decode(msg: &sys::uffd_msg, thread_id: bool) -> Event {
    // SAFETY (for each union read below): every member of `uffd_msg_arg` is plain integers
    // over the same 24 initialised bytes, so any member is valid to read; the event code picks
    // the one that carries meaning.
    match msg.event {
        sys::UFFD_EVENT_PAGEFAULT => {
            // SAFETY: see above.
            let pf = unsafe { msg.arg.pagefault };
            // SAFETY: see above.
            let ptid = unsafe { pf.feat.ptid };
            Event::PageFault(PageFault {
                address: pf.address,
                flags: FaultFlags::from_bits_retain(pf.flags),
                thread_id: thread_id.then_some(ptid),
            })
        }
        sys::UFFD_EVENT_FORK => {
            // SAFETY: see above.
            let raw = unsafe { msg.arg.fork.ufd };
            // The kernel writes an `int` fd into this `__u32` field: reinterpret the bits.
            let raw = i32::from_ne_bytes(raw.to_ne_bytes());
            // SAFETY: for a FORK event the kernel installs a new fd in the reading process and
            // hands it over in this message; it is read exactly once (the iterator advances),
            // so this is its only owner.
            let uffd = unsafe { OwnedFd::from_raw_fd(raw) };
            Event::Fork { uffd }
        }
        sys::UFFD_EVENT_REMAP => {
            // SAFETY: see above.
            let r = unsafe { msg.arg.remap };
            Event::Remap {
                from: r.from,
                to: r.to,
                len: r.len,
            }
        }
        sys::UFFD_EVENT_REMOVE | sys::UFFD_EVENT_UNMAP => {
            // SAFETY: see above.
            let r = unsafe { msg.arg.remove };
            if msg.event == sys::UFFD_EVENT_REMOVE {
                Event::Remove {
                    start: r.start,
                    end: r.end,
                }
            } else {
                Event::Unmap {
                    start: r.start,
                    end: r.end,
                }
            }
        }
        code => {
            // SAFETY: see above.
            let r = unsafe { msg.arg.reserved };
            Event::Unknown {
                code,
                arg: [r.reserved1, r.reserved2, r.reserved3],
            }
        }
    }
}

impl Uffd {
    /// Reads every pending message that fits in `buf` with one `read(2)`.
    ///
    /// On a non-blocking fd, nothing pending is an empty batch; a blocking fd waits for at
    /// least one message. Page faults are returned before queued non-cooperative events, so a
    /// batch may show a fault ahead of the REMOVE that preceded it: apply the batch's REMOVEs
    /// first.
    ///
    /// # Errors
    ///
    /// [`Error::Read`] when `read(2)` fails (other than `EAGAIN`, an empty batch, and `EINTR`,
    /// retried); [`Error::ShortRead`] when it returns a partial message.
    ///
    /// # References
    ///
    /// - [userfaultfd(2)][userfaultfd], on reading `struct uffd_msg`
    /// - [Userfaultfd][kernel-userfaultfd] in the kernel's admin guide, on the non-cooperative
    ///   events
    ///
    /// [userfaultfd]: https://man7.org/linux/man-pages/man2/userfaultfd.2.html
    /// [kernel-userfaultfd]: https://docs.kernel.org/admin-guide/mm/userfaultfd.html
    pub fn read_events<'a>(&self, buf: &'a mut EventBuffer) -> Result<Events<'a>, Error> {
        let thread_id = self.features().contains(Features::THREAD_ID);
        let bytes = loop {
            match rustix::io::read(self.as_fd(), as_uninit_bytes(&mut buf.msgs)) {
                Ok((filled, _)) => break filled.len(),
                Err(Errno::AGAIN) => break 0,
                Err(Errno::INTR) => continue,
                Err(errno) => return Err(Error::Read(errno)),
            }
        };
        let size = size_of::<sys::uffd_msg>();
        if bytes % size != 0 {
            return Err(Error::ShortRead(bytes));
        }
        Ok(Events {
            msgs: &buf.msgs[..bytes / size],
            next: 0,
            thread_id,
        })
    }
}

fn as_uninit_bytes(msgs: &mut [sys::uffd_msg]) -> &mut [MaybeUninit<u8>] {
    let len = size_of_val(msgs);
    // SAFETY: `uffd_msg` is plain integers (and unions of them) with no padding that matters
    // and no invalid bit patterns, so its memory may be viewed, and overwritten, as bytes; the
    // slice covers exactly the same memory with the same exclusive borrow.
    unsafe { std::slice::from_raw_parts_mut(msgs.as_mut_ptr().cast(), len) }
}
