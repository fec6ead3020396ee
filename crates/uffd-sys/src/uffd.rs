//! `include/uapi/linux/userfaultfd.h` as of Linux 6.18.

use core::mem::{offset_of, size_of};

use crate::ioc::{io, ior, iowr};

/// The API version `UFFDIO_API` must be called with.
pub const UFFD_API: u64 = 0xAA;
/// The ioctl type byte of every `UFFDIO_*` request.
pub const UFFDIO: u8 = 0xAA;
/// The ioctl type byte of `/dev/userfaultfd` requests.
pub const USERFAULTFD_IOC: u8 = 0xAA;
/// `userfaultfd(2)` / `USERFAULTFD_IOC_NEW` flag: only faults raised by user-mode accesses.
pub const UFFD_USER_MODE_ONLY: u32 = 1;

// ioctl command numbers (the `nr` byte), also the bit positions in the `ioctls` masks.
/// Command number of `UFFDIO_REGISTER`.
pub const _UFFDIO_REGISTER: u32 = 0x00;
/// Command number of `UFFDIO_UNREGISTER`.
pub const _UFFDIO_UNREGISTER: u32 = 0x01;
/// Command number of `UFFDIO_WAKE`.
pub const _UFFDIO_WAKE: u32 = 0x02;
/// Command number of `UFFDIO_COPY`.
pub const _UFFDIO_COPY: u32 = 0x03;
/// Command number of `UFFDIO_ZEROPAGE`.
pub const _UFFDIO_ZEROPAGE: u32 = 0x04;
/// Command number of `UFFDIO_MOVE`.
pub const _UFFDIO_MOVE: u32 = 0x05;
/// Command number of `UFFDIO_WRITEPROTECT`.
pub const _UFFDIO_WRITEPROTECT: u32 = 0x06;
/// Command number of `UFFDIO_CONTINUE`.
pub const _UFFDIO_CONTINUE: u32 = 0x07;
/// Command number of `UFFDIO_POISON`.
pub const _UFFDIO_POISON: u32 = 0x08;
/// Command number of `UFFDIO_API`.
pub const _UFFDIO_API: u32 = 0x3F;

// Request numbers, written out so a wrong direction or size cannot hide behind a macro
// (one VMM shipped UFFDIO_WAKE as _IOW); each is checked against the encoding below.
/// `_IOWR(UFFDIO, _UFFDIO_API, struct uffdio_api)`.
pub const UFFDIO_API: u32 = 0xC018_AA3F;
/// `_IOWR(UFFDIO, _UFFDIO_REGISTER, struct uffdio_register)`.
pub const UFFDIO_REGISTER: u32 = 0xC020_AA00;
/// `_IOR(UFFDIO, _UFFDIO_UNREGISTER, struct uffdio_range)`.
pub const UFFDIO_UNREGISTER: u32 = 0x8010_AA01;
/// `_IOR(UFFDIO, _UFFDIO_WAKE, struct uffdio_range)`.
pub const UFFDIO_WAKE: u32 = 0x8010_AA02;
/// `_IOWR(UFFDIO, _UFFDIO_COPY, struct uffdio_copy)`.
pub const UFFDIO_COPY: u32 = 0xC028_AA03;
/// `_IOWR(UFFDIO, _UFFDIO_ZEROPAGE, struct uffdio_zeropage)`.
pub const UFFDIO_ZEROPAGE: u32 = 0xC020_AA04;
/// `_IOWR(UFFDIO, _UFFDIO_MOVE, struct uffdio_move)`.
pub const UFFDIO_MOVE: u32 = 0xC028_AA05;
/// `_IOWR(UFFDIO, _UFFDIO_WRITEPROTECT, struct uffdio_writeprotect)`.
pub const UFFDIO_WRITEPROTECT: u32 = 0xC018_AA06;
/// `_IOWR(UFFDIO, _UFFDIO_CONTINUE, struct uffdio_continue)`.
pub const UFFDIO_CONTINUE: u32 = 0xC020_AA07;
/// `_IOWR(UFFDIO, _UFFDIO_POISON, struct uffdio_poison)`.
pub const UFFDIO_POISON: u32 = 0xC020_AA08;
/// `_IO(USERFAULTFD_IOC, 0x00)` on `/dev/userfaultfd`: returns a new userfaultfd.
pub const USERFAULTFD_IOC_NEW: u32 = 0x0000_AA00;

const _: () = {
    assert!(UFFDIO_API == iowr(UFFDIO, _UFFDIO_API as u8, size_of::<uffdio_api>()));
    assert!(UFFDIO_REGISTER == iowr(UFFDIO, _UFFDIO_REGISTER as u8, size_of::<uffdio_register>()));
    assert!(UFFDIO_UNREGISTER == ior(UFFDIO, _UFFDIO_UNREGISTER as u8, size_of::<uffdio_range>()));
    assert!(UFFDIO_WAKE == ior(UFFDIO, _UFFDIO_WAKE as u8, size_of::<uffdio_range>()));
    assert!(UFFDIO_COPY == iowr(UFFDIO, _UFFDIO_COPY as u8, size_of::<uffdio_copy>()));
    assert!(UFFDIO_ZEROPAGE == iowr(UFFDIO, _UFFDIO_ZEROPAGE as u8, size_of::<uffdio_zeropage>()));
    assert!(UFFDIO_MOVE == iowr(UFFDIO, _UFFDIO_MOVE as u8, size_of::<uffdio_move>()));
    assert!(
        UFFDIO_WRITEPROTECT
            == iowr(
                UFFDIO,
                _UFFDIO_WRITEPROTECT as u8,
                size_of::<uffdio_writeprotect>()
            )
    );
    assert!(UFFDIO_CONTINUE == iowr(UFFDIO, _UFFDIO_CONTINUE as u8, size_of::<uffdio_continue>()));
    assert!(UFFDIO_POISON == iowr(UFFDIO, _UFFDIO_POISON as u8, size_of::<uffdio_poison>()));
    assert!(USERFAULTFD_IOC_NEW == io(USERFAULTFD_IOC, 0x00));
};

// Events (`uffd_msg.event`).
/// A page fault; `arg.pagefault` is valid.
pub const UFFD_EVENT_PAGEFAULT: u8 = 0x12;
/// The registered process forked; `arg.fork.ufd` is a new uffd installed in the reader.
pub const UFFD_EVENT_FORK: u8 = 0x13;
/// `mremap` moved a registered range; `arg.remap` is valid.
pub const UFFD_EVENT_REMAP: u8 = 0x14;
/// `madvise(DONTNEED/REMOVE)` zaps a registered range; `arg.remove` is valid.
pub const UFFD_EVENT_REMOVE: u8 = 0x15;
/// `munmap` of a registered range; `arg.remove` is valid.
pub const UFFD_EVENT_UNMAP: u8 = 0x16;

// Page-fault flags (`uffd_msg.arg.pagefault.flags`).
/// The fault was a write access.
pub const UFFD_PAGEFAULT_FLAG_WRITE: u64 = 1 << 0;
/// The fault was a write to a write-protected page.
pub const UFFD_PAGEFAULT_FLAG_WP: u64 = 1 << 1;
/// A minor fault: the page is in the page cache but not mapped.
pub const UFFD_PAGEFAULT_FLAG_MINOR: u64 = 1 << 2;

// Features (`uffdio_api.features`).
/// Write-protect faults are reported (`UFFD_PAGEFAULT_FLAG_WP`).
pub const UFFD_FEATURE_PAGEFAULT_FLAG_WP: u64 = 1 << 0;
/// `UFFD_EVENT_FORK` is delivered.
pub const UFFD_FEATURE_EVENT_FORK: u64 = 1 << 1;
/// `UFFD_EVENT_REMAP` is delivered.
pub const UFFD_FEATURE_EVENT_REMAP: u64 = 1 << 2;
/// `UFFD_EVENT_REMOVE` is delivered.
pub const UFFD_FEATURE_EVENT_REMOVE: u64 = 1 << 3;
/// MISSING registration on hugetlbfs.
pub const UFFD_FEATURE_MISSING_HUGETLBFS: u64 = 1 << 4;
/// MISSING registration on shmem.
pub const UFFD_FEATURE_MISSING_SHMEM: u64 = 1 << 5;
/// `UFFD_EVENT_UNMAP` is delivered.
pub const UFFD_FEATURE_EVENT_UNMAP: u64 = 1 << 6;
/// Faults raise SIGBUS instead of being queued.
pub const UFFD_FEATURE_SIGBUS: u64 = 1 << 7;
/// `arg.pagefault.feat.ptid` carries the faulting thread id.
pub const UFFD_FEATURE_THREAD_ID: u64 = 1 << 8;
/// MINOR registration on hugetlbfs.
pub const UFFD_FEATURE_MINOR_HUGETLBFS: u64 = 1 << 9;
/// MINOR registration on shmem.
pub const UFFD_FEATURE_MINOR_SHMEM: u64 = 1 << 10;
/// Fault addresses are not rounded down to the page.
pub const UFFD_FEATURE_EXACT_ADDRESS: u64 = 1 << 11;
/// WP registration on hugetlbfs and shmem.
pub const UFFD_FEATURE_WP_HUGETLBFS_SHMEM: u64 = 1 << 12;
/// WP applies to unpopulated PTEs too.
pub const UFFD_FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
/// `UFFDIO_POISON` is available.
pub const UFFD_FEATURE_POISON: u64 = 1 << 14;
/// WP faults are resolved by the kernel; written pages are read with `PAGEMAP_SCAN`.
pub const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
/// `UFFDIO_MOVE` is available.
pub const UFFD_FEATURE_MOVE: u64 = 1 << 16;

/// Every feature bit Linux 6.18 defines.
pub const UFFD_API_FEATURES: u64 = UFFD_FEATURE_PAGEFAULT_FLAG_WP
    | UFFD_FEATURE_EVENT_FORK
    | UFFD_FEATURE_EVENT_REMAP
    | UFFD_FEATURE_EVENT_REMOVE
    | UFFD_FEATURE_MISSING_HUGETLBFS
    | UFFD_FEATURE_MISSING_SHMEM
    | UFFD_FEATURE_EVENT_UNMAP
    | UFFD_FEATURE_SIGBUS
    | UFFD_FEATURE_THREAD_ID
    | UFFD_FEATURE_MINOR_HUGETLBFS
    | UFFD_FEATURE_MINOR_SHMEM
    | UFFD_FEATURE_EXACT_ADDRESS
    | UFFD_FEATURE_WP_HUGETLBFS_SHMEM
    | UFFD_FEATURE_WP_UNPOPULATED
    | UFFD_FEATURE_POISON
    | UFFD_FEATURE_WP_ASYNC
    | UFFD_FEATURE_MOVE;

/// Register modes `UFFDIO_API` users may request.
pub const UFFD_API_REGISTER_MODES: u64 =
    UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP | UFFDIO_REGISTER_MODE_MINOR;
/// ioctls valid on the uffd itself, as reported in `uffdio_api.ioctls`.
pub const UFFD_API_IOCTLS: u64 =
    (1 << _UFFDIO_REGISTER) | (1 << _UFFDIO_UNREGISTER) | (1 << _UFFDIO_API);
/// Every range ioctl, as reported in `uffdio_register.ioctls`.
pub const UFFD_API_RANGE_IOCTLS: u64 = (1 << _UFFDIO_WAKE)
    | (1 << _UFFDIO_COPY)
    | (1 << _UFFDIO_ZEROPAGE)
    | (1 << _UFFDIO_MOVE)
    | (1 << _UFFDIO_WRITEPROTECT)
    | (1 << _UFFDIO_CONTINUE)
    | (1 << _UFFDIO_POISON);
/// Range ioctls of a hugetlbfs range (no ZEROPAGE, no MOVE).
pub const UFFD_API_RANGE_IOCTLS_BASIC: u64 = (1 << _UFFDIO_WAKE)
    | (1 << _UFFDIO_COPY)
    | (1 << _UFFDIO_WRITEPROTECT)
    | (1 << _UFFDIO_CONTINUE)
    | (1 << _UFFDIO_POISON);

// Register modes and per-ioctl mode bits.
/// Register for faults on missing pages.
pub const UFFDIO_REGISTER_MODE_MISSING: u64 = 1 << 0;
/// Register for write-protect faults.
pub const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
/// Register for minor faults (page cache present, PTE missing).
pub const UFFDIO_REGISTER_MODE_MINOR: u64 = 1 << 2;
/// `UFFDIO_COPY`: do not wake the faulting threads.
pub const UFFDIO_COPY_MODE_DONTWAKE: u64 = 1 << 0;
/// `UFFDIO_COPY`: install the pages write-protected.
pub const UFFDIO_COPY_MODE_WP: u64 = 1 << 1;
/// `UFFDIO_ZEROPAGE`: do not wake the faulting threads.
pub const UFFDIO_ZEROPAGE_MODE_DONTWAKE: u64 = 1 << 0;
/// `UFFDIO_WRITEPROTECT`: protect (without it: unprotect).
pub const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1 << 0;
/// `UFFDIO_WRITEPROTECT`: do not wake the faulting threads.
pub const UFFDIO_WRITEPROTECT_MODE_DONTWAKE: u64 = 1 << 1;
/// `UFFDIO_CONTINUE`: do not wake the faulting threads.
pub const UFFDIO_CONTINUE_MODE_DONTWAKE: u64 = 1 << 0;
/// `UFFDIO_CONTINUE`: map the pages write-protected.
pub const UFFDIO_CONTINUE_MODE_WP: u64 = 1 << 1;
/// `UFFDIO_POISON`: do not wake the faulting threads.
pub const UFFDIO_POISON_MODE_DONTWAKE: u64 = 1 << 0;
/// `UFFDIO_MOVE`: do not wake the faulting threads.
pub const UFFDIO_MOVE_MODE_DONTWAKE: u64 = 1 << 0;
/// `UFFDIO_MOVE`: holes in the source are skipped instead of failing with ENOENT.
pub const UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES: u64 = 1 << 1;

/// Argument of `UFFDIO_API`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct uffdio_api {
    /// In: `UFFD_API`.
    pub api: u64,
    /// In: requested features. Out: supported features.
    pub features: u64,
    /// Out: bit mask of ioctls valid on the fd (bit = command number).
    pub ioctls: u64,
}

/// An address range in the registered process.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct uffdio_range {
    /// Start address.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
}

/// Argument of `UFFDIO_REGISTER`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct uffdio_register {
    /// The range to register.
    pub range: uffdio_range,
    /// `UFFDIO_REGISTER_MODE_*` bits.
    pub mode: u64,
    /// Out: bit mask of range ioctls valid on the range.
    pub ioctls: u64,
}

/// Argument of `UFFDIO_COPY`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct uffdio_copy {
    /// Destination address in the registered process.
    pub dst: u64,
    /// Source address in the caller.
    pub src: u64,
    /// Length in bytes.
    pub len: u64,
    /// `UFFDIO_COPY_MODE_*` bits.
    pub mode: u64,
    /// Out: bytes copied, or a negated errno (signed on purpose).
    pub copy: i64,
}

/// Argument of `UFFDIO_ZEROPAGE`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct uffdio_zeropage {
    /// The range to map zero pages into.
    pub range: uffdio_range,
    /// `UFFDIO_ZEROPAGE_MODE_*` bits.
    pub mode: u64,
    /// Out: bytes mapped, or a negated errno.
    pub zeropage: i64,
}

/// Argument of `UFFDIO_WRITEPROTECT`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct uffdio_writeprotect {
    /// The range to (un)protect.
    pub range: uffdio_range,
    /// `UFFDIO_WRITEPROTECT_MODE_*` bits.
    pub mode: u64,
}

/// Argument of `UFFDIO_CONTINUE`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct uffdio_continue {
    /// The range to map from the page cache.
    pub range: uffdio_range,
    /// `UFFDIO_CONTINUE_MODE_*` bits.
    pub mode: u64,
    /// Out: bytes mapped, or a negated errno.
    pub mapped: i64,
}

/// Argument of `UFFDIO_POISON`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct uffdio_poison {
    /// The range to poison.
    pub range: uffdio_range,
    /// `UFFDIO_POISON_MODE_*` bits.
    pub mode: u64,
    /// Out: bytes poisoned, or a negated errno.
    pub updated: i64,
}

/// Argument of `UFFDIO_MOVE`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct uffdio_move {
    /// Destination address.
    pub dst: u64,
    /// Source address, in the same mm as the destination.
    pub src: u64,
    /// Length in bytes.
    pub len: u64,
    /// `UFFDIO_MOVE_MODE_*` bits.
    pub mode: u64,
    /// Out: bytes moved, or a negated errno.
    pub move_: i64,
}

/// `uffd_msg.arg.pagefault.feat`.
#[repr(C)]
#[derive(Clone, Copy)]
pub union uffd_pagefault_feat {
    /// The faulting thread id, with `UFFD_FEATURE_THREAD_ID`.
    pub ptid: u32,
}

/// `uffd_msg.arg.pagefault`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct uffd_msg_pagefault {
    /// `UFFD_PAGEFAULT_FLAG_*` bits.
    pub flags: u64,
    /// The faulting address (page aligned unless `UFFD_FEATURE_EXACT_ADDRESS`).
    pub address: u64,
    /// Feature-dependent extra data.
    pub feat: uffd_pagefault_feat,
}

/// `uffd_msg.arg.fork`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct uffd_msg_fork {
    /// The child's new uffd, already installed in the reading process.
    pub ufd: u32,
}

/// `uffd_msg.arg.remap`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct uffd_msg_remap {
    /// Old start address.
    pub from: u64,
    /// New start address.
    pub to: u64,
    /// Length in bytes.
    pub len: u64,
}

/// `uffd_msg.arg.remove`, also used by `UFFD_EVENT_UNMAP`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct uffd_msg_remove {
    /// Start address.
    pub start: u64,
    /// End address (exclusive).
    pub end: u64,
}

/// `uffd_msg.arg.reserved`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct uffd_msg_reserved {
    /// Reserved.
    pub reserved1: u64,
    /// Reserved.
    pub reserved2: u64,
    /// Reserved.
    pub reserved3: u64,
}

/// `uffd_msg.arg`: which member is valid depends on `uffd_msg.event`.
#[repr(C)]
#[derive(Clone, Copy)]
pub union uffd_msg_arg {
    /// `UFFD_EVENT_PAGEFAULT`.
    pub pagefault: uffd_msg_pagefault,
    /// `UFFD_EVENT_FORK`.
    pub fork: uffd_msg_fork,
    /// `UFFD_EVENT_REMAP`.
    pub remap: uffd_msg_remap,
    /// `UFFD_EVENT_REMOVE` and `UFFD_EVENT_UNMAP`.
    pub remove: uffd_msg_remove,
    /// Raw view of the 24 bytes.
    pub reserved: uffd_msg_reserved,
}

/// One message read from a userfaultfd; `read(2)` returns whole multiples of 32 bytes.
///
/// The kernel declares it `__packed` (alignment 1). Every field already sits at its natural
/// alignment, so this definition keeps the kernel's size and offsets but aligns to 8, which
/// lets callers take references to fields; a buffer of these is valid for `read(2)`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct uffd_msg {
    /// `UFFD_EVENT_*`.
    pub event: u8,
    /// Reserved.
    pub reserved1: u8,
    /// Reserved.
    pub reserved2: u16,
    /// Reserved.
    pub reserved3: u32,
    /// Event-specific data.
    pub arg: uffd_msg_arg,
}

impl uffd_msg {
    /// An all-zero message, for initialising read buffers.
    pub const ZEROED: Self = Self {
        event: 0,
        reserved1: 0,
        reserved2: 0,
        reserved3: 0,
        arg: uffd_msg_arg {
            reserved: uffd_msg_reserved {
                reserved1: 0,
                reserved2: 0,
                reserved3: 0,
            },
        },
    };
}

impl core::fmt::Debug for uffd_msg {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // SAFETY: every member of the union is plain integers covering the same initialised
        // 24 bytes, so reading the reserved view is always valid.
        let raw = unsafe { self.arg.reserved };
        f.debug_struct("uffd_msg")
            .field("event", &self.event)
            .field("arg", &raw)
            .finish()
    }
}

const _: () = {
    assert!(size_of::<uffdio_api>() == 24);
    assert!(size_of::<uffdio_range>() == 16);
    assert!(size_of::<uffdio_register>() == 32);
    assert!(offset_of!(uffdio_register, mode) == 16);
    assert!(offset_of!(uffdio_register, ioctls) == 24);
    assert!(size_of::<uffdio_copy>() == 40);
    assert!(offset_of!(uffdio_copy, copy) == 32);
    assert!(size_of::<uffdio_zeropage>() == 32);
    assert!(offset_of!(uffdio_zeropage, zeropage) == 24);
    assert!(size_of::<uffdio_writeprotect>() == 24);
    assert!(size_of::<uffdio_continue>() == 32);
    assert!(offset_of!(uffdio_continue, mapped) == 24);
    assert!(size_of::<uffdio_poison>() == 32);
    assert!(offset_of!(uffdio_poison, updated) == 24);
    assert!(size_of::<uffdio_move>() == 40);
    assert!(offset_of!(uffdio_move, move_) == 32);
    assert!(size_of::<uffd_msg>() == 32);
    assert!(offset_of!(uffd_msg, arg) == 8);
    assert!(size_of::<uffd_msg_arg>() == 24);
    assert!(offset_of!(uffd_msg_pagefault, address) == 8);
    assert!(offset_of!(uffd_msg_pagefault, feat) == 16);
    assert!(offset_of!(uffd_msg_remap, len) == 16);
    assert!(offset_of!(uffd_msg_remove, end) == 8);
};
