//! Memory for userfaultfd tests: mappings this process owns, accessed through raw pointers
//! only, and an anonymous mapping registered with its own uffd that cleans up after itself.
//!
//! The kernel changes registered memory behind the program's back (a COPY fills a page, a
//! REMOVE zaps it), so no Rust reference into a [`Mapping`] is ever handed out: every access
//! is a volatile load or store, or a byte copy, through a pointer checked against the
//! mapping's bounds and against the parts already unmapped.
//!
//! Offsets, lengths and page indices are `usize` (they index this process's memory); the
//! addresses and [`Range`]s handed to a uffd are `u64`, as uffd-core takes them.

use std::os::fd::BorrowedFd;
use std::sync::{Arc, Mutex, MutexGuard};

use rustix::mm::{Advice, MapFlags, MremapFlags, ProtFlags};
use uffd_core::{Features, Ioctls, PageSize, Range, RegisterMode, Uffd, UffdBuilder};

use crate::threads::{Pending, spawn};

/// [`crate::PAGE`] as a byte count of this process's memory.
const PAGE_LEN: usize = crate::PAGE as usize;
/// [`crate::HUGE`] as a byte count of this process's memory.
const HUGE_LEN: usize = crate::HUGE as usize;

/// A mapping this test owns, unmapped on drop.
///
/// All accessors take `&self`, so one mapping can be shared (in an `Arc`) with the threads
/// that fault on it. Accesses panic if they reach outside the mapping, into a part given back
/// with [`Mapping::unmap_pages`], or into a mapping made with no access
/// ([`Mapping::reserve`]).
#[derive(Debug)]
pub struct Mapping {
    addr: usize,
    len: usize,
    /// Whether the pages are readable and writable (a reservation is neither).
    accessible: bool,
    /// Byte ranges `[start, end)` already unmapped: the kernel may have handed those addresses
    /// to another mapping since, so they are never touched again, nor unmapped on drop.
    holes: Mutex<Vec<(usize, usize)>>,
}

impl Mapping {
    /// `pages` anonymous private read-write 4 KiB pages.
    ///
    /// # Panics
    ///
    /// If `mmap` fails.
    pub fn anon(pages: usize) -> Self {
        Self::anon_with(
            pages * PAGE_LEN,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE,
        )
        .expect("mmap of anonymous memory")
    }

    /// `pages` anonymous 4 KiB pages with no access, reserving addresses for
    /// [`Mapping::move_to`]. Any access to them panics.
    ///
    /// # Panics
    ///
    /// If `mmap` fails.
    pub fn reserve(pages: usize) -> Self {
        Self::anon_with(pages * PAGE_LEN, ProtFlags::empty(), MapFlags::PRIVATE)
            .expect("mmap of a reservation")
    }

    /// `huge_pages` anonymous private read-write 2 MiB hugetlb pages.
    ///
    /// # Errors
    ///
    /// The `mmap` error: `ENOMEM` when too few hugepages are free (see
    /// [`crate::hugepages_or_skip`]).
    pub fn hugetlb(huge_pages: usize) -> rustix::io::Result<Self> {
        Self::anon_with(
            huge_pages * HUGE_LEN,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE | MapFlags::HUGETLB | MapFlags::HUGE_2MB,
        )
    }

    fn anon_with(len: usize, prot: ProtFlags, flags: MapFlags) -> rustix::io::Result<Self> {
        // SAFETY: a new mapping at an address the kernel chooses (no MAP_FIXED), so it
        // replaces nothing this process uses.
        let ptr = unsafe { rustix::mm::mmap_anonymous(std::ptr::null_mut(), len, prot, flags) }?;
        Ok(Mapping {
            addr: ptr as usize,
            len,
            accessible: !prot.is_empty(),
            holes: Mutex::default(),
        })
    }

    /// A read-write `MAP_SHARED` mapping of the first `len` bytes of `fd` (a memfd, say, for
    /// MINOR faults).
    ///
    /// # Panics
    ///
    /// If `mmap` fails.
    pub fn shared(fd: BorrowedFd<'_>, len: usize) -> Self {
        // SAFETY: a new mapping at an address the kernel chooses (no MAP_FIXED), so it
        // replaces nothing this process uses.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                0,
            )
        }
        .expect("mmap of a shared file");
        Mapping {
            addr: ptr as usize,
            len,
            accessible: true,
            holes: Mutex::default(),
        }
    }

    /// The first address.
    pub fn addr(&self) -> u64 {
        self.addr as u64
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is zero bytes long (never, for one made by this module).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The address of the 4 KiB page `i`.
    ///
    /// # Panics
    ///
    /// If page `i` is outside the mapping.
    pub fn page_addr(&self, i: usize) -> u64 {
        assert!(i * PAGE_LEN < self.len, "page {i} outside the mapping");
        (self.addr + i * PAGE_LEN) as u64
    }

    /// The whole mapping as a 4 KiB range.
    ///
    /// # Panics
    ///
    /// If the mapping is not a whole number of 4 KiB pages (it always is).
    pub fn range(&self) -> Range {
        Range::new(self.addr(), self.len as u64, PageSize::Base4K).expect("mapping range")
    }

    /// `count` 4 KiB pages from page `first`, as a range.
    ///
    /// # Panics
    ///
    /// If the pages are not all inside the mapping, or `count` is 0.
    pub fn pages(&self, first: usize, count: usize) -> Range {
        assert!(
            (first + count) * PAGE_LEN <= self.len,
            "pages {first}..{} outside a mapping of {} pages",
            first + count,
            self.len / PAGE_LEN
        );
        Range::pages(self.page_addr(first), count as u64, PageSize::Base4K).expect("page range")
    }

    /// The 4 KiB page `i`, as a range.
    ///
    /// # Panics
    ///
    /// If page `i` is outside the mapping.
    pub fn page(&self, i: usize) -> Range {
        self.pages(i, 1)
    }

    fn holes(&self) -> MutexGuard<'_, Vec<(usize, usize)>> {
        // A panic while the lock was held left the list whole (every update is one push).
        self.holes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A pointer to `[offset, offset + len)`, which must be inside the mapping, accessible,
    /// and not unmapped.
    fn ptr(&self, offset: usize, len: usize) -> *mut u8 {
        let end = match offset.checked_add(len) {
            Some(end) if end <= self.len => end,
            _ => panic!(
                "[{offset:#x}, +{len:#x}) outside a mapping of {:#x} bytes",
                self.len
            ),
        };
        assert!(
            self.accessible,
            "[{offset:#x}, +{len:#x}) is in a reservation with no access"
        );
        if let Some(&(start, stop)) = self
            .holes()
            .iter()
            .find(|&&(start, stop)| offset < stop && start < end)
        {
            panic!("[{offset:#x}, +{len:#x}) touches [{start:#x}, {stop:#x}), already unmapped");
        }
        (self.addr + offset) as *mut u8
    }

    /// Reads one byte; blocks on a userfault if the page is missing and registered.
    ///
    /// # Panics
    ///
    /// If the byte is outside the mapping, unmapped, or in a reservation.
    pub fn read(&self, offset: usize) -> u8 {
        let ptr = self.ptr(offset, 1);
        // SAFETY: `ptr` is inside this mapping, which is readable and still mapped there
        // (checked by `ptr`; `unmap_pages`'s contract rules out an unmap racing this access,
        // and the mapping outlives `&self`). A volatile load through a raw pointer creates no
        // reference for the kernel's changes to invalidate.
        unsafe { ptr.read_volatile() }
    }

    /// Writes one byte; blocks on a userfault if the page is missing or write-protected and
    /// registered.
    ///
    /// # Panics
    ///
    /// If the byte is outside the mapping, unmapped, or in a reservation.
    pub fn write(&self, offset: usize, value: u8) {
        let ptr = self.ptr(offset, 1);
        // SAFETY: as in `read`; the mapping is writable, and no Rust reference into it exists.
        unsafe { ptr.write_volatile(value) }
    }

    /// Copies `len` bytes out; every page touched must be present, or this blocks on its
    /// fault.
    ///
    /// # Panics
    ///
    /// If the bytes are not all inside the mapping, or some are unmapped or in a reservation.
    pub fn read_bytes(&self, offset: usize, len: usize) -> Vec<u8> {
        let ptr = self.ptr(offset, len);
        let mut out = vec![0; len];
        // SAFETY: `ptr..ptr + len` is readable and mapped (as in `read`), and cannot overlap
        // `out`, a fresh heap allocation.
        unsafe { std::ptr::copy_nonoverlapping(ptr, out.as_mut_ptr(), len) };
        out
    }

    /// Copies `bytes` in at `offset`, populating the pages touched (or faulting on them, if
    /// registered).
    ///
    /// # Panics
    ///
    /// If the bytes are not all inside the mapping, or some are unmapped or in a reservation.
    pub fn write_bytes(&self, offset: usize, bytes: &[u8]) {
        let ptr = self.ptr(offset, bytes.len());
        // SAFETY: as in `read_bytes`, in the other direction; the mapping is writable, and
        // `bytes` is a Rust slice, so it cannot lie in this mapping, to which no reference
        // is ever handed out.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr, bytes.len()) };
    }

    /// `madvise(MADV_DONTNEED)` on `count` pages from page `first`: their contents are
    /// dropped. Blocks until the REMOVE event is read if the range is registered with a uffd
    /// that has `EVENT_REMOVE`.
    ///
    /// # Errors
    ///
    /// The `madvise` error.
    ///
    /// # Panics
    ///
    /// If the pages are not all inside the mapping, or some are unmapped or in a reservation.
    pub fn dontneed(&self, first: usize, count: usize) -> rustix::io::Result<()> {
        let ptr = self.ptr(first * PAGE_LEN, count * PAGE_LEN);
        // SAFETY: the pages are mapped and ours (checked by `ptr`), and no Rust reference
        // into them exists; dropping their contents is what the caller asked for, and later
        // accesses read zeros or fault, both of which the accessors handle.
        unsafe { rustix::mm::madvise(ptr.cast(), count * PAGE_LEN, Advice::LinuxDontNeed) }
    }

    /// `munmap` of `count` pages from page `first`. Blocks until the UNMAP event is read if
    /// the range is registered with a uffd that has `EVENT_UNMAP`.
    ///
    /// The pages become a hole: accessors panic on them from now on, and neither the drop
    /// nor [`Mapping::live_ranges`] includes them (another mapping may own those addresses
    /// by then).
    ///
    /// # Safety
    ///
    /// No other thread may be accessing these pages through this mapping (with `read`,
    /// `write`, `read_bytes`, `write_bytes` or `dontneed`) while the call runs: such an
    /// access passed its check before the pages were unmapped and may land in whatever is
    /// mapped there next.
    ///
    /// # Errors
    ///
    /// The `munmap` error (the pages are a hole even then).
    ///
    /// # Panics
    ///
    /// If the pages are not all inside the mapping, or some are already unmapped.
    pub unsafe fn unmap_pages(&self, first: usize, count: usize) -> rustix::io::Result<()> {
        let (offset, len) = (first * PAGE_LEN, count * PAGE_LEN);
        let ptr = {
            let mut holes = self.holes();
            assert!(
                offset + len <= self.len,
                "pages {first}..{} outside the mapping",
                first + count
            );
            assert!(
                holes.iter().all(|&(s, e)| offset + len <= s || e <= offset),
                "pages {first}..{} already unmapped",
                first + count
            );
            holes.push((offset, offset + len));
            (self.addr + offset) as *mut std::ffi::c_void
        };
        // SAFETY: the pages are inside this mapping and were not unmapped before (checked
        // above); they are a hole from now on, so no accessor of this mapping reaches them
        // again, and the caller guarantees none is reaching them now.
        unsafe { rustix::mm::munmap(ptr, len) }
    }

    /// The parts not unmapped by [`Mapping::unmap_pages`], as `(offset, len)`.
    fn live_parts(&self) -> Vec<(usize, usize)> {
        let mut holes = self.holes().clone();
        holes.sort_unstable();
        let mut parts = Vec::new();
        let mut at = 0;
        for (start, end) in holes {
            if start > at {
                parts.push((at, start - at));
            }
            at = at.max(end);
        }
        if at < self.len {
            parts.push((at, self.len - at));
        }
        parts
    }

    /// The still-mapped parts as 4 KiB ranges, in address order.
    ///
    /// # Panics
    ///
    /// Never for a mapping made by this module (every part is whole pages).
    pub fn live_ranges(&self) -> Vec<Range> {
        self.live_parts()
            .into_iter()
            .map(|(offset, len)| {
                Range::new((self.addr + offset) as u64, len as u64, PageSize::Base4K)
                    .expect("live range")
            })
            .collect()
    }

    /// Moves this mapping onto `target`'s addresses with `mremap(MREMAP_MAYMOVE |
    /// MREMAP_FIXED)`, replacing the reservation. Blocks until the REMAP event is read if the
    /// mapping is registered with a uffd that has `EVENT_REMAP`.
    ///
    /// # Errors
    ///
    /// The `mremap` error; `target`'s addresses are then left reserved but no longer owned
    /// by anyone (a leak, not a hazard).
    ///
    /// # Panics
    ///
    /// If the two mappings differ in length, or this one has holes.
    pub fn move_to(&mut self, target: Mapping) -> rustix::io::Result<()> {
        assert_eq!(self.len, target.len, "mremap target of another size");
        assert!(self.holes().is_empty(), "mremap of a mapping with holes");
        let dst = target.addr as *mut std::ffi::c_void;
        // The move consumes the reservation: it must not be unmapped separately.
        std::mem::forget(target);
        // SAFETY: both ranges are whole mappings this process owns, no Rust reference points
        // into either (`&mut self` excludes any access through this mapping meanwhile), and
        // `self` takes the new address before anything uses it again.
        let new = unsafe {
            rustix::mm::mremap_fixed(
                self.addr as *mut std::ffi::c_void,
                self.len,
                self.len,
                MremapFlags::MAYMOVE,
                dst,
            )
        }?;
        assert_eq!(new, dst, "mremap moved elsewhere than asked");
        self.addr = new as usize;
        Ok(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        for (offset, len) in self.live_parts() {
            let ptr = (self.addr + offset) as *mut std::ffi::c_void;
            // SAFETY: this part is still ours (not a hole that another mapping may own by
            // now), and `&mut self` means no access through this mapping is under way.
            let _ = unsafe { rustix::mm::munmap(ptr, len) };
        }
    }
}

/// A mapping registered with its own uffd.
///
/// On drop it unregisters the mapping's live parts (waking any thread still blocked on a
/// fault there, which then reads zeros), then closes the uffd; the mapping itself is unmapped
/// once no thread holds it any more.
#[derive(Debug)]
pub struct Region {
    /// The uffd the mapping is registered with.
    pub uffd: Uffd,
    /// The mapping, shared with the threads that touch it.
    pub map: Arc<Mapping>,
    /// The ioctls the registration reported valid on the mapping.
    pub ioctls: Ioctls,
}

impl Region {
    /// `pages` fresh anonymous 4 KiB pages, registered with `mode` on a new uffd with
    /// `features`.
    ///
    /// # Panics
    ///
    /// If the mapping, the uffd or the registration fails.
    pub fn new(pages: usize, features: Features, mode: RegisterMode) -> Self {
        Self::register(Mapping::anon(pages), features, mode)
    }

    /// Registers `map` with `mode` on a new uffd with `features` (non-blocking, close-on-exec,
    /// created through `/dev/userfaultfd` or else the syscall).
    ///
    /// # Panics
    ///
    /// If the uffd cannot be created or the registration fails.
    pub fn register(map: Mapping, features: Features, mode: RegisterMode) -> Self {
        let uffd = UffdBuilder::new()
            .features(features)
            .create()
            .unwrap_or_else(|e| panic!("creating a uffd with {features:?}: {e}"));
        Self::register_on(uffd, map, mode)
    }

    /// Registers `map` with `mode` on `uffd`, which the region then owns.
    ///
    /// # Panics
    ///
    /// If the registration fails.
    pub fn register_on(uffd: Uffd, map: Mapping, mode: RegisterMode) -> Self {
        let ioctls = uffd
            .register(map.range(), mode)
            .unwrap_or_else(|e| panic!("register: {e}"));
        Region {
            uffd,
            map: Arc::new(map),
            ioctls,
        }
    }

    /// The 4 KiB page `i`, as a range.
    ///
    /// # Panics
    ///
    /// If page `i` is outside the mapping.
    pub fn page(&self, i: usize) -> Range {
        self.map.page(i)
    }

    /// `count` 4 KiB pages from page `first`, as a range.
    ///
    /// # Panics
    ///
    /// If the pages are not all inside the mapping, or `count` is 0.
    pub fn pages(&self, first: usize, count: usize) -> Range {
        self.map.pages(first, count)
    }

    /// A thread that reads the byte at `offset` (blocking on its fault) and sends it back.
    pub fn spawn_read(&self, offset: usize) -> Pending<u8> {
        let map = Arc::clone(&self.map);
        spawn(&format!("read {offset:#x}"), move || map.read(offset))
    }

    /// A thread that writes `value` at `offset` (blocking on its fault).
    pub fn spawn_write(&self, offset: usize, value: u8) -> Pending<()> {
        let map = Arc::clone(&self.map);
        spawn(&format!("write {offset:#x}"), move || {
            map.write(offset, value)
        })
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        for range in self.map.live_ranges() {
            let _ = self.uffd.unregister(range);
        }
    }
}
