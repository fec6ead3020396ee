//! Mappings accessed through raw pointers only, and a registered region that cleans up.

use std::os::fd::BorrowedFd;
use std::sync::{Arc, Mutex};

use rustix::mm::{Advice, MapFlags, MremapFlags, ProtFlags};
use uffd_core::{Features, Ioctls, PageSize, Range, RegisterMode, Uffd};

use super::{HUGE, PAGE, Pending, spawn, uffd};

/// A private mapping this test owns; unmapped on drop. Accessed only through raw pointers
/// (never Rust references), since the kernel changes its contents behind the program's back.
#[derive(Debug)]
pub struct Mapping {
    addr: usize,
    len: usize,
    /// Byte ranges `[start, end)` this test already unmapped: the kernel may have handed those
    /// addresses to another test's mapping since, so they are never touched again.
    holes: Mutex<Vec<(usize, usize)>>,
}

impl Mapping {
    /// `pages` anonymous private read-write 4 KiB pages.
    pub fn anon(pages: usize) -> Self {
        Self::anon_with(
            pages * PAGE,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE,
        )
        .expect("mmap of anonymous memory")
    }

    /// `pages` anonymous pages with no access, to reserve addresses (an `mremap` target).
    pub fn reserve(pages: usize) -> Self {
        Self::anon_with(pages * PAGE, ProtFlags::empty(), MapFlags::PRIVATE)
            .expect("mmap of a reservation")
    }

    /// `huge_pages` anonymous private 2 MiB hugetlb pages.
    pub fn hugetlb(huge_pages: usize) -> rustix::io::Result<Self> {
        Self::anon_with(
            huge_pages * HUGE,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE | MapFlags::HUGETLB | MapFlags::HUGE_2MB,
        )
    }

    fn anon_with(len: usize, prot: ProtFlags, flags: MapFlags) -> rustix::io::Result<Self> {
        // SAFETY: a fresh mapping at an address the kernel picks; it overlaps nothing of ours.
        let ptr = unsafe { rustix::mm::mmap_anonymous(std::ptr::null_mut(), len, prot, flags) }?;
        Ok(Mapping {
            addr: ptr as usize,
            len,
            holes: Mutex::default(),
        })
    }

    /// A read-write `MAP_SHARED` mapping of the first `len` bytes of `fd`.
    pub fn shared(fd: BorrowedFd<'_>, len: usize) -> Self {
        // SAFETY: a fresh mapping at an address the kernel picks; it overlaps nothing of ours.
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
            holes: Mutex::default(),
        }
    }

    /// First address.
    pub fn addr(&self) -> u64 {
        self.addr as u64
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Address of the 4 KiB page `i`.
    pub fn page_addr(&self, i: usize) -> u64 {
        assert!(i * PAGE < self.len, "page {i} outside the mapping");
        (self.addr + i * PAGE) as u64
    }

    /// The whole mapping as a 4 KiB range.
    pub fn range(&self) -> Range {
        Range::new(self.addr(), self.len as u64, PageSize::Base4K).expect("mapping range")
    }

    /// `count` 4 KiB pages from page `first`.
    pub fn pages(&self, first: usize, count: usize) -> Range {
        assert!(
            (first + count) * PAGE <= self.len,
            "pages outside the mapping"
        );
        Range::pages(self.page_addr(first), count as u64, PageSize::Base4K).expect("page range")
    }

    /// The 4 KiB page `i`.
    pub fn page(&self, i: usize) -> Range {
        self.pages(i, 1)
    }

    fn ptr(&self, offset: usize, len: usize) -> *mut u8 {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= self.len),
            "[{offset:#x}, +{len:#x}) outside a mapping of {:#x} bytes",
            self.len
        );
        (self.addr + offset) as *mut u8
    }

    /// Reads one byte (blocks on a userfault if the page is missing and registered).
    pub fn read(&self, offset: usize) -> u8 {
        let ptr = self.ptr(offset, 1);
        // SAFETY: `ptr` lies inside this live read-write mapping (checked above); a volatile
        // read through a raw pointer creates no reference the kernel could invalidate.
        unsafe { ptr.read_volatile() }
    }

    /// Writes one byte (blocks on a userfault if the page is missing or write-protected).
    pub fn write(&self, offset: usize, value: u8) {
        let ptr = self.ptr(offset, 1);
        // SAFETY: as in `read`; the mapping is writable and nothing holds a reference into it.
        unsafe { ptr.write_volatile(value) }
    }

    /// Copies `len` bytes out (every page touched must be present, or this blocks).
    pub fn read_bytes(&self, offset: usize, len: usize) -> Vec<u8> {
        let ptr = self.ptr(offset, len);
        let mut out = vec![0; len];
        // SAFETY: `ptr..ptr+len` lies inside this live mapping (checked above) and cannot
        // overlap the freshly allocated `out`.
        unsafe { std::ptr::copy_nonoverlapping(ptr, out.as_mut_ptr(), len) };
        out
    }

    /// Copies `bytes` in at `offset` (populating the pages touched).
    pub fn write_bytes(&self, offset: usize, bytes: &[u8]) {
        let ptr = self.ptr(offset, bytes.len());
        // SAFETY: as in `read_bytes`, in the other direction; the mapping is writable.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr, bytes.len()) };
    }

    /// `madvise(MADV_DONTNEED)` on `count` pages from page `first` (blocks until a REMOVE
    /// event is read if the range is registered with `EVENT_REMOVE`).
    pub fn dontneed(&self, first: usize, count: usize) -> rustix::io::Result<()> {
        let ptr = self.ptr(first * PAGE, count * PAGE);
        // SAFETY: the pages lie inside this mapping; nothing holds references into it, and
        // dropping their contents is what the test wants.
        unsafe { rustix::mm::madvise(ptr.cast(), count * PAGE, Advice::LinuxDontNeed) }
    }

    /// `munmap` of `count` pages from page `first` (blocks until an UNMAP event is read if the
    /// range is registered with `EVENT_UNMAP`). The pages must not be accessed afterwards, and
    /// the drop leaves them alone: another test may own those addresses by then.
    pub fn unmap_pages(&self, first: usize, count: usize) -> rustix::io::Result<()> {
        let ptr = self.ptr(first * PAGE, count * PAGE);
        self.holes
            .lock()
            .expect("holes")
            .push((first * PAGE, (first + count) * PAGE));
        // SAFETY: the pages lie inside this mapping and nothing holds references into them;
        // callers never touch them again.
        unsafe { rustix::mm::munmap(ptr.cast(), count * PAGE) }
    }

    /// The parts of the mapping not unmapped by [`Mapping::unmap_pages`], as `(offset, len)`.
    fn live_parts(&self) -> Vec<(usize, usize)> {
        let mut holes = self.holes.lock().expect("holes").clone();
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

    /// The still-mapped parts as ranges.
    pub fn live_ranges(&self) -> Vec<Range> {
        self.live_parts()
            .into_iter()
            .map(|(offset, len)| {
                Range::new((self.addr + offset) as u64, len as u64, PageSize::Base4K)
                    .expect("live range")
            })
            .collect()
    }

    /// Moves this mapping onto `target` (same length) with `mremap(MREMAP_MAYMOVE |
    /// MREMAP_FIXED)`; `target`'s reservation is replaced. Blocks until a REMAP event is read if
    /// the mapping is registered with `EVENT_REMAP`.
    pub fn move_to(&mut self, target: Mapping) -> rustix::io::Result<()> {
        assert_eq!(self.len, target.len, "mremap target of another size");
        assert!(
            self.holes.lock().expect("holes").is_empty(),
            "mremap with holes"
        );
        let dst = target.addr as *mut std::ffi::c_void;
        // The reservation is consumed by the move: never unmap it separately.
        std::mem::forget(target);
        // SAFETY: both ranges are mappings this test owns, nothing holds references into
        // either, and `self` is updated to the new address before anyone uses it again.
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
            // SAFETY: this part is still ours (not a hole another test may have reused since)
            // and nothing refers into it any more.
            let _ = unsafe { rustix::mm::munmap(ptr, len) };
        }
    }
}

/// An anonymous mapping registered with its own uffd. On drop it unregisters (waking any
/// thread still blocked on a fault there, which then reads zeros), closes the uffd and, once no
/// thread holds the mapping, unmaps it.
#[derive(Debug)]
pub struct Region {
    /// The uffd the mapping is registered with.
    pub uffd: Uffd,
    /// The mapping (shared with threads that touch it).
    pub map: Arc<Mapping>,
    /// The ioctls the registration reported.
    pub ioctls: Ioctls,
}

impl Region {
    /// `pages` fresh anonymous pages registered with `mode` on a new uffd with `features`.
    pub fn new(pages: usize, features: Features, mode: RegisterMode) -> Self {
        Self::register(Mapping::anon(pages), features, mode)
    }

    /// Registers `map` with `mode` on a new uffd with `features`.
    pub fn register(map: Mapping, features: Features, mode: RegisterMode) -> Self {
        let uffd = uffd(features);
        let ioctls = uffd
            .register(map.range(), mode)
            .unwrap_or_else(|e| panic!("register: {e}"));
        Region {
            uffd,
            map: Arc::new(map),
            ioctls,
        }
    }

    /// The 4 KiB page `i`.
    pub fn page(&self, i: usize) -> Range {
        self.map.page(i)
    }

    /// `count` pages from page `first`.
    pub fn pages(&self, first: usize, count: usize) -> Range {
        self.map.pages(first, count)
    }

    /// A thread that reads byte `offset` (blocking on the fault) and sends it back.
    pub fn spawn_read(&self, offset: usize) -> Pending<u8> {
        let map = Arc::clone(&self.map);
        spawn(&format!("read {offset:#x}"), move || map.read(offset))
    }

    /// A thread that writes `value` at `offset` (blocking on the fault).
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
