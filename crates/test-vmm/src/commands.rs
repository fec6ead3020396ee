//! One typed method per control command (each with a `start_` variant where a test may want
//! the request in flight while it does something else).

use std::process::ExitStatus;
use std::time::Duration;

use crate::control::{
    Command, KvmReport, PageFlags, Reply, Touch, TouchReport, WriteData, from_hex, to_hex,
};
use crate::{Pending, VmmError, VmmProcess};

impl VmmProcess {
    /// Sends `command` without waiting for its answer.
    pub fn start(&self, command: Command) -> Result<Pending<'_, Reply>, VmmError> {
        self.start_as(command, "request", Some)
    }

    /// Sends `command` and waits for its answer.
    pub fn request(&self, command: Command) -> Result<Reply, VmmError> {
        self.start(command)?.wait()
    }

    /// Starts a touch; [`Pending::wait`] gives its report.
    pub fn start_touch(&self, touch: Touch) -> Result<Pending<'_, TouchReport>, VmmError> {
        self.start_as(Command::Touch(touch), "touch", |r| match r {
            Reply::Touched(report) => Some(report),
            _ => None,
        })
    }

    /// Touches pages and waits until every thread is done.
    pub fn touch(&self, touch: Touch) -> Result<TouchReport, VmmError> {
        self.start_touch(touch)?.wait()
    }

    /// Starts hashing every 4 KiB block of the range from `threads` threads.
    pub fn start_hash(
        &self,
        offset: u64,
        len: u64,
        threads: u32,
    ) -> Result<Pending<'_, Vec<u64>>, VmmError> {
        let command = Command::Hash {
            offset,
            len,
            threads,
        };
        self.start_as(command, "hash", |r| match r {
            Reply::Hashes(hashes) => Some(hashes),
            _ => None,
        })
    }

    /// [`block_hash`](crate::block_hash) of every 4 KiB block of the range.
    pub fn hash(&self, offset: u64, len: u64) -> Result<Vec<u64>, VmmError> {
        self.start_hash(offset, len, 1)?.wait()
    }

    /// [`block_hash`](crate::block_hash) of every 4 KiB block of the range as the
    /// kernel reads it ([`Command::SyscallHash`]: faults raised in kernel mode).
    pub fn syscall_hash(&self, offset: u64, len: u64) -> Result<Vec<u64>, VmmError> {
        self.start_as(
            Command::SyscallHash { offset, len },
            "syscall_hash",
            |r| match r {
                Reply::Hashes(hashes) => Some(hashes),
                _ => None,
            },
        )?
        .wait()
    }

    /// Starts the KVM guest program over the range ([`Command::KvmTouch`]).
    pub fn start_kvm_touch(
        &self,
        offset: u64,
        len: u64,
        vcpus: u32,
        write: Option<u32>,
    ) -> Result<Pending<'_, KvmReport>, VmmError> {
        let command = Command::KvmTouch {
            offset,
            len,
            vcpus,
            write,
        };
        self.start_as(command, "kvm_touch", |r| match r {
            Reply::KvmTouched(report) => Some(report),
            _ => None,
        })
    }

    /// Runs the KVM guest program over the range and waits for the per-block sums.
    pub fn kvm_touch(
        &self,
        offset: u64,
        len: u64,
        vcpus: u32,
        write: Option<u32>,
    ) -> Result<KvmReport, VmmError> {
        self.start_kvm_touch(offset, len, vcpus, write)?.wait()
    }

    /// The bytes of a small range.
    pub fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>, VmmError> {
        let hex = self
            .start_as(Command::Read { offset, len }, "read", |r| match r {
                Reply::Bytes(hex) => Some(hex),
                _ => None,
            })?
            .wait()?;
        from_hex(&hex).ok_or_else(|| VmmError::Protocol(format!("read answered {hex:?}")))
    }

    /// Stores `data` at `offset`.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), VmmError> {
        self.write_data(offset, WriteData::Hex(to_hex(data)))
    }

    /// Stores `len` copies of `byte` at `offset`.
    pub fn fill(&self, offset: u64, len: u64, byte: u8) -> Result<(), VmmError> {
        self.write_data(offset, WriteData::Fill { byte, len })
    }

    fn write_data(&self, offset: u64, data: WriteData) -> Result<(), VmmError> {
        self.start_as(Command::Write { offset, data }, "write", |r| match r {
            Reply::Written(_) => Some(()),
            _ => None,
        })?
        .wait()
    }

    /// Starts `madvise(MADV_DONTNEED)` of the range; it completes once the handler has read
    /// the REMOVE events.
    pub fn start_madvise_dontneed(
        &self,
        offset: u64,
        len: u64,
    ) -> Result<Pending<'_, Duration>, VmmError> {
        let command = Command::MadviseDontneed { offset, len };
        self.start_as(command, "madvise_dontneed", |r| match r {
            Reply::Madvised { elapsed_ns } => Some(Duration::from_nanos(elapsed_ns)),
            _ => None,
        })
    }

    /// `madvise(MADV_DONTNEED)` of the range, as a balloon inflate; the time it took.
    pub fn madvise_dontneed(&self, offset: u64, len: u64) -> Result<Duration, VmmError> {
        self.start_madvise_dontneed(offset, len)?.wait()
    }

    /// The pagemap bits of every 4 KiB block of the range.
    pub fn pagemap(&self, offset: u64, len: u64) -> Result<Vec<PageFlags>, VmmError> {
        self.start_as(Command::Pagemap { offset, len }, "pagemap", |r| match r {
            Reply::Pagemap(flags) => Some(flags),
            _ => None,
        })?
        .wait()
    }

    /// Closes the test VMM's end of the handshake socket (the handler sees POLLHUP).
    pub fn close_socket(&self) -> Result<(), VmmError> {
        self.start_as(Command::CloseSocket, "close_socket", |r| match r {
            Reply::SocketClosed => Some(()),
            _ => None,
        })?
        .wait()
    }

    /// Asks the test VMM to exit and waits for it.
    pub fn exit(&self) -> Result<ExitStatus, VmmError> {
        self.start_as(Command::Exit, "exit", |r| match r {
            Reply::Exiting => Some(()),
            _ => None,
        })?
        .wait()?;
        self.wait()
    }
}
