//! The control protocol between a driver and the `test-vmm` binary: JSON lines over the
//! test VMM's stdin (requests) and stdout (one startup line, then responses); stderr carries logs.
//!
//! Every request carries an `id` its response repeats. The test VMM runs each request on its own
//! thread, so several may be in flight (a touch blocked on a fault while the driver sends a
//! madvise) and responses can come back in any order. Every address is an **image offset**:
//! the test VMM maps it to the address in the region that holds it, and splits ranges that span
//! regions.

use serde::{Deserialize, Serialize};

/// Granularity of [`Command::Hash`] and [`Command::Pagemap`]: one entry per 4 KiB block,
/// whatever the guest's page size.
pub const BLOCK: u64 = 4096;

/// The largest [`Command::Read`] or hex [`WriteData`] the test VMM accepts, in bytes.
pub const MAX_INLINE_BYTES: u64 = 1 << 20;

/// One request line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Chosen by the driver; repeated in the response.
    pub id: u64,
    /// What to do.
    #[serde(flatten)]
    pub command: Command,
}

/// What the test VMM is asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Touch every page (of the guest's page size) of the range from several threads.
    Touch(Touch),
    /// A hash ([`crate::block_hash`]) of every [`BLOCK`] of the range, which reads (and so
    /// faults in) every byte. Offset and length are multiples of [`BLOCK`].
    Hash {
        /// Image offset.
        offset: u64,
        /// Bytes.
        len: u64,
        /// Threads that share the work (0 is taken as 1).
        #[serde(default)]
        threads: u32,
    },
    /// Like [`Command::Hash`], but the kernel reads the bytes: each block is written from
    /// guest memory into a pipe with `write(2)` (as a device model's I/O does), so its faults
    /// are raised in kernel mode. A user-mode-only uffd would fail them (EFAULT); Firecracker's
    /// is not, so they reach the handler as KVM's do.
    SyscallHash {
        /// Image offset.
        offset: u64,
        /// Bytes.
        len: u64,
    },
    /// Runs the KVM guest program (the test VMM must have been started with KVM vCPUs) on
    /// `vcpus` vCPUs, each on a contiguous chunk of the range: with `write`, each 4 KiB block's
    /// first little-endian `u32` becomes [`crate::kvm_word`]`(seed, block offset)`; then
    /// every block is summed by the guest ([`crate::kvm_block_sum`]). Offset and length
    /// are multiples of [`BLOCK`]. Concurrent KVM touches must cover disjoint ranges.
    KvmTouch {
        /// Image offset (= guest-physical address).
        offset: u64,
        /// Bytes.
        len: u64,
        /// vCPUs to use (0 is taken as 1), at most as many as the test VMM has.
        vcpus: u32,
        /// The seed of the words to write first, if any.
        write: Option<u32>,
    },
    /// The bytes of a small range (at most [`MAX_INLINE_BYTES`]), read volatile.
    Read {
        /// Image offset.
        offset: u64,
        /// Bytes.
        len: u64,
    },
    /// Stores bytes, volatile, in ascending order.
    Write {
        /// Image offset.
        offset: u64,
        /// What to store.
        data: WriteData,
    },
    /// `madvise(MADV_DONTNEED)` on the range, as a balloon inflate does: raises
    /// `UFFD_EVENT_REMOVE` (one per region the range spans) and returns once the handler has
    /// read it and the range is zapped. Offset and length are multiples of the page size.
    MadviseDontneed {
        /// Image offset.
        offset: u64,
        /// Bytes.
        len: u64,
    },
    /// The `/proc/self/pagemap` bits of every [`BLOCK`] of the range (does not fault).
    Pagemap {
        /// Image offset.
        offset: u64,
        /// Bytes.
        len: u64,
    },
    /// Closes the handshake socket (the handler sees POLLHUP) while the test VMM lives on.
    CloseSocket,
    /// Answers, then exits with status 0 (in-flight requests die with the process).
    Exit,
}

/// A [`Command::Touch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Touch {
    /// Image offset, a multiple of the page size.
    pub offset: u64,
    /// Bytes, a multiple of the page size.
    pub len: u64,
    /// Threads (0 is taken as 1); they start together behind a barrier.
    pub threads: u32,
    /// Read or write.
    pub access: TouchAccess,
    /// How the pages are shared among the threads.
    #[serde(default)]
    pub split: Split,
}

impl Touch {
    /// Reads of `[offset, offset + len)` from `threads` threads, each on its own chunk.
    pub fn read(offset: u64, len: u64, threads: u32) -> Self {
        Touch {
            offset,
            len,
            threads,
            access: TouchAccess::Read,
            split: Split::Chunks,
        }
    }

    /// Writes of [`crate::touch_word`]`(seed, page)` from `threads` threads, each on its
    /// own chunk.
    pub fn write(offset: u64, len: u64, threads: u32, seed: u64) -> Self {
        Touch {
            access: TouchAccess::Write { seed },
            ..Touch::read(offset, len, threads)
        }
    }

    /// The same touch with another split.
    pub fn split(self, split: Split) -> Self {
        Touch { split, ..self }
    }
}

/// How a touch accesses each page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TouchAccess {
    /// A volatile read of the page's first 8 bytes (a read fault).
    Read,
    /// A volatile store of [`crate::touch_word`]`(seed, page index)` into the page's
    /// first 8 bytes, little-endian (a write fault); the rest of the page keeps what the
    /// handler installed. The page index is the image offset divided by the page size.
    Write {
        /// Chosen by the driver, so its model knows the bytes.
        seed: u64,
    },
}

/// How a touch's pages are shared among its threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Thread `i` of `n` touches the `i`-th of `n` contiguous chunks, in ascending order.
    #[default]
    Chunks,
    /// Thread `i` touches pages `i, i + n, i + 2n, ...`.
    Interleaved,
    /// Every thread touches every page, in ascending order (several threads faulting the
    /// same pages at once).
    Shared,
}

/// What a [`Command::Write`] stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteData {
    /// These bytes, as lowercase hex (at most [`MAX_INLINE_BYTES`] bytes).
    Hex(String),
    /// `len` copies of `byte`.
    Fill {
        /// The byte.
        byte: u8,
        /// How many.
        len: u64,
    },
}

/// One response line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The request's id (0 for a request line that could not be parsed).
    pub id: u64,
    /// The answer, or why there is none.
    pub result: Result<Reply, RemoteError>,
}

/// A successful answer; one variant per command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// [`Command::Touch`] finished.
    Touched(TouchReport),
    /// [`Command::Hash`] and [`Command::SyscallHash`]: one hash per [`BLOCK`].
    Hashes(Vec<u64>),
    /// [`Command::Read`]: the bytes as lowercase hex.
    Bytes(String),
    /// [`Command::KvmTouch`] finished.
    KvmTouched(KvmReport),
    /// [`Command::Write`] stored this many bytes.
    Written(u64),
    /// [`Command::MadviseDontneed`] returned after this many nanoseconds.
    Madvised {
        /// Time spent in `madvise`, including the wait for the handler to read the REMOVE.
        elapsed_ns: u64,
    },
    /// [`Command::Pagemap`]: one entry per [`BLOCK`].
    Pagemap(Vec<PageFlags>),
    /// [`Command::CloseSocket`] done (also when it was already closed).
    SocketClosed,
    /// [`Command::Exit`]: the test VMM exits right after this line.
    Exiting,
}

/// What a [`Command::Touch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TouchReport {
    /// Page accesses made, over all threads (pages × threads for [`Split::Shared`]).
    pub accesses: u64,
    /// From the moment the threads were released together until the last one finished.
    pub elapsed_ns: u64,
    /// Wrapping sum of the first 8 bytes (little-endian `u64`) of every page read, or of every
    /// word written, over all accesses.
    pub checksum: u64,
}

/// What a [`Command::KvmTouch`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvmReport {
    /// The guest's [`crate::kvm_block_sum`] of every 4 KiB block, in order.
    pub sums: Vec<u32>,
    /// From the first vCPU's start until the last one reported done.
    pub elapsed_ns: u64,
}

/// The bits of one `/proc/self/pagemap` entry the tests care about, as one byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PageFlags(pub u8);

impl PageFlags {
    /// Bit 63: the page is present in RAM.
    pub const PRESENT: u8 = 1;
    /// Bit 57: the PTE is userfaultfd write-protected.
    pub const UFFD_WP: u8 = 2;
    /// Bit 62: the page is swapped out.
    pub const SWAPPED: u8 = 4;
    /// Bit 56: the page is mapped exclusively.
    pub const EXCLUSIVE: u8 = 8;
    /// Bit 61: a file page or shared anonymous page.
    pub const FILE: u8 = 16;

    /// Extracts the flags from a raw 64-bit pagemap entry.
    pub fn from_entry(entry: u64) -> Self {
        let bit = |n: u32, flag: u8| if entry >> n & 1 == 1 { flag } else { 0 };
        PageFlags(
            bit(63, Self::PRESENT)
                | bit(57, Self::UFFD_WP)
                | bit(62, Self::SWAPPED)
                | bit(56, Self::EXCLUSIVE)
                | bit(61, Self::FILE),
        )
    }

    /// Present in RAM.
    pub const fn present(self) -> bool {
        self.0 & Self::PRESENT != 0
    }

    /// userfaultfd write-protected.
    pub const fn uffd_wp(self) -> bool {
        self.0 & Self::UFFD_WP != 0
    }
}

/// Why the test VMM could not do what was asked (a typed answer, never a crash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct RemoteError {
    /// The class of failure.
    pub kind: RemoteErrorKind,
    /// Details for a human.
    pub message: String,
}

/// Classes of [`RemoteError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoteErrorKind {
    /// The request line was not a valid request.
    BadRequest,
    /// The range is empty or leaves the memory image.
    OutOfRange,
    /// Offset or length not a multiple of the unit the command needs.
    Misaligned,
    /// More bytes than the command carries inline.
    TooLarge,
    /// A system call failed.
    System,
    /// A workload thread panicked.
    Panicked,
}

impl RemoteError {
    /// An error of `kind`.
    pub fn new(kind: RemoteErrorKind, message: impl Into<String>) -> Self {
        RemoteError {
            kind,
            message: message.into(),
        }
    }
}

/// The first line the test VMM prints: how startup went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Startup {
    /// The handshake was sent; requests are accepted from now on.
    Ready(ReadyInfo),
    /// Startup failed at `stage`; the test VMM exits with status 2.
    Failed {
        /// `args`, `mmap`, `uffd`, `register`, `kvm`, `connect` or `send`.
        stage: String,
        /// The error.
        message: String,
    },
}

/// What a ready test VMM reports about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyInfo {
    /// The test VMM's process id.
    pub pid: u32,
    /// The regions, as sent to the handler (with page size whatever the payload version).
    pub regions: Vec<crate::HandshakeRegion>,
    /// The exact JSON sent.
    pub handshake: String,
    /// The test VMM's own copy of the uffd (its fd number in the test VMM).
    pub uffd_fd: i32,
    /// vCPUs of the KVM guest (0: no KVM guest).
    #[serde(default)]
    pub kvm_vcpus: u32,
}

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// The bytes of a hex string (either case); `None` if it is not hex of whole bytes.
pub fn from_hex(hex: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let hex = hex.as_bytes();
    if hex.len() % 2 != 0 {
        return None;
    }
    hex.chunks_exact(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}
