//! Feature, mode and ioctl bit sets. Unknown bits from the kernel are kept, never dropped.

use uffd_sys as sys;

bitflags::bitflags! {
    /// `UFFD_FEATURE_*` bits.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Features: u64 {
        /// Write-protect faults are reported.
        const PAGEFAULT_FLAG_WP = sys::UFFD_FEATURE_PAGEFAULT_FLAG_WP;
        /// FORK events.
        const EVENT_FORK = sys::UFFD_FEATURE_EVENT_FORK;
        /// REMAP events.
        const EVENT_REMAP = sys::UFFD_FEATURE_EVENT_REMAP;
        /// REMOVE events (balloon `madvise(MADV_DONTNEED)`).
        const EVENT_REMOVE = sys::UFFD_FEATURE_EVENT_REMOVE;
        /// MISSING on hugetlbfs.
        const MISSING_HUGETLBFS = sys::UFFD_FEATURE_MISSING_HUGETLBFS;
        /// MISSING on shmem.
        const MISSING_SHMEM = sys::UFFD_FEATURE_MISSING_SHMEM;
        /// UNMAP events.
        const EVENT_UNMAP = sys::UFFD_FEATURE_EVENT_UNMAP;
        /// SIGBUS instead of queued faults.
        const SIGBUS = sys::UFFD_FEATURE_SIGBUS;
        /// Fault messages carry the thread id.
        const THREAD_ID = sys::UFFD_FEATURE_THREAD_ID;
        /// MINOR on hugetlbfs.
        const MINOR_HUGETLBFS = sys::UFFD_FEATURE_MINOR_HUGETLBFS;
        /// MINOR on shmem.
        const MINOR_SHMEM = sys::UFFD_FEATURE_MINOR_SHMEM;
        /// Unrounded fault addresses.
        const EXACT_ADDRESS = sys::UFFD_FEATURE_EXACT_ADDRESS;
        /// WP on hugetlbfs and shmem.
        const WP_HUGETLBFS_SHMEM = sys::UFFD_FEATURE_WP_HUGETLBFS_SHMEM;
        /// WP on unpopulated PTEs.
        const WP_UNPOPULATED = sys::UFFD_FEATURE_WP_UNPOPULATED;
        /// UFFDIO_POISON.
        const POISON = sys::UFFD_FEATURE_POISON;
        /// WP faults resolved by the kernel; read the written set with PAGEMAP_SCAN.
        const WP_ASYNC = sys::UFFD_FEATURE_WP_ASYNC;
        /// UFFDIO_MOVE.
        const MOVE = sys::UFFD_FEATURE_MOVE;
    }

    /// `UFFDIO_REGISTER_MODE_*` bits.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct RegisterMode: u64 {
        /// Faults on missing pages.
        const MISSING = sys::UFFDIO_REGISTER_MODE_MISSING;
        /// Write-protect faults.
        const WP = sys::UFFDIO_REGISTER_MODE_WP;
        /// Minor faults (page cache present, PTE missing).
        const MINOR = sys::UFFDIO_REGISTER_MODE_MINOR;
    }

    /// The ioctls valid on an fd or a registered range (bit = command number).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Ioctls: u64 {
        /// UFFDIO_REGISTER.
        const REGISTER = 1 << sys::_UFFDIO_REGISTER;
        /// UFFDIO_UNREGISTER.
        const UNREGISTER = 1 << sys::_UFFDIO_UNREGISTER;
        /// UFFDIO_WAKE.
        const WAKE = 1 << sys::_UFFDIO_WAKE;
        /// UFFDIO_COPY.
        const COPY = 1 << sys::_UFFDIO_COPY;
        /// UFFDIO_ZEROPAGE (not on hugetlbfs).
        const ZEROPAGE = 1 << sys::_UFFDIO_ZEROPAGE;
        /// UFFDIO_MOVE.
        const MOVE = 1 << sys::_UFFDIO_MOVE;
        /// UFFDIO_WRITEPROTECT.
        const WRITEPROTECT = 1 << sys::_UFFDIO_WRITEPROTECT;
        /// UFFDIO_CONTINUE.
        const CONTINUE = 1 << sys::_UFFDIO_CONTINUE;
        /// UFFDIO_POISON.
        const POISON = 1 << sys::_UFFDIO_POISON;
        /// UFFDIO_API.
        const API = 1 << sys::_UFFDIO_API;
    }

    /// `UFFDIO_COPY_MODE_*` bits.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct CopyMode: u64 {
        /// Do not wake the faulting threads (wake later with `wake`).
        const DONTWAKE = sys::UFFDIO_COPY_MODE_DONTWAKE;
        /// Install write-protected (the range must be registered MISSING|WP).
        const WP = sys::UFFDIO_COPY_MODE_WP;
    }

    /// `UFFDIO_ZEROPAGE_MODE_*` bits.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct ZeropageMode: u64 {
        /// Do not wake the faulting threads.
        const DONTWAKE = sys::UFFDIO_ZEROPAGE_MODE_DONTWAKE;
    }

    /// `UFFDIO_WRITEPROTECT_MODE_*` bits. Without `WP` the range is unprotected.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct WriteProtectMode: u64 {
        /// Protect (without it: unprotect and wake).
        const WP = sys::UFFDIO_WRITEPROTECT_MODE_WP;
        /// Do not wake the faulting threads.
        const DONTWAKE = sys::UFFDIO_WRITEPROTECT_MODE_DONTWAKE;
    }

    /// `UFFDIO_CONTINUE_MODE_*` bits.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct ContinueMode: u64 {
        /// Do not wake the faulting threads.
        const DONTWAKE = sys::UFFDIO_CONTINUE_MODE_DONTWAKE;
        /// Map write-protected.
        const WP = sys::UFFDIO_CONTINUE_MODE_WP;
    }

    /// `UFFDIO_POISON_MODE_*` bits.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct PoisonMode: u64 {
        /// Do not wake the faulting threads.
        const DONTWAKE = sys::UFFDIO_POISON_MODE_DONTWAKE;
    }

    /// `UFFDIO_MOVE_MODE_*` bits.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct MoveMode: u64 {
        /// Do not wake the faulting threads.
        const DONTWAKE = sys::UFFDIO_MOVE_MODE_DONTWAKE;
        /// Skip holes in the source instead of failing with ENOENT.
        const ALLOW_SRC_HOLES = sys::UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES;
    }

    /// `UFFD_PAGEFAULT_FLAG_*` bits of a fault message.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct FaultFlags: u64 {
        /// A write access.
        const WRITE = sys::UFFD_PAGEFAULT_FLAG_WRITE;
        /// A write to a write-protected page.
        const WP = sys::UFFD_PAGEFAULT_FLAG_WP;
        /// A minor fault.
        const MINOR = sys::UFFD_PAGEFAULT_FLAG_MINOR;
    }
}
