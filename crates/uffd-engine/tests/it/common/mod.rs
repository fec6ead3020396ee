//! Shared pieces of the engine tests: guest memory in this process, snapshot images, and a
//! source that fails on demand.

#![allow(dead_code, unreachable_pub)]

use std::ffi::c_void;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::mm::{MapFlags, ProtFlags};
use snapshot_format::{Chunk, LayeredSource};
use uffd_core::{Features, PageSize, Range, RegisterMode, Uffd, UffdBuilder};
use uffd_engine::{GuestLayout, GuestRegion, PageSource, SourceError};

#[cfg(feature = "test-hooks")]
pub mod parker;
pub mod proc;
pub mod soak;
pub mod vmm;

pub const PAGE: u64 = 4096;

/// Anonymous private guest memory, registered MISSING with its own uffd (the way a VMM does),
/// unmapped on drop. Touched only through raw pointers.
pub struct Guest {
    pub ptr: *mut u8,
    pub len: u64,
    pub page: u64,
}

// SAFETY: the mapping is plain memory owned by this struct; tests touch it only through raw
// pointers, and the kernel serialises faults.
unsafe impl Send for Guest {}
// SAFETY: as above.
unsafe impl Sync for Guest {}

impl Guest {
    /// A guest of `pages` pages of `page_size`, registered MISSING on a new uffd with
    /// EVENT_REMOVE (Firecracker's features). Returns the guest and the uffd for the engine.
    pub fn new(pages: u64, page_size: PageSize) -> (Arc<Guest>, Uffd) {
        Guest::with_features(pages, page_size, Features::EVENT_REMOVE)
    }

    /// As [`Guest::new`], with other uffd features (e.g. UNMAP and REMAP events).
    pub fn with_features(
        pages: u64,
        page_size: PageSize,
        features: Features,
    ) -> (Arc<Guest>, Uffd) {
        let page = page_size.bytes();
        let len = pages * page;
        let mut flags = MapFlags::PRIVATE | MapFlags::NORESERVE;
        if page_size == PageSize::Huge2M {
            flags |= MapFlags::HUGETLB | MapFlags::HUGE_2MB;
        }
        // SAFETY: a fresh anonymous mapping at an address the kernel chooses.
        let ptr = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                len as usize,
                ProtFlags::READ | ProtFlags::WRITE,
                flags,
            )
        }
        .expect("mmap guest memory");
        let uffd = UffdBuilder::new()
            .features(features)
            .create()
            .expect("uffd");
        uffd.register(
            Range::new(ptr as u64, len, page_size).unwrap(),
            RegisterMode::MISSING,
        )
        .expect("register");
        (
            Arc::new(Guest {
                ptr: ptr.cast(),
                len,
                page,
            }),
            uffd,
        )
    }

    pub fn addr(&self) -> u64 {
        self.ptr as u64
    }

    pub fn layout(&self, page_size: PageSize) -> GuestLayout {
        GuestLayout::new(
            vec![GuestRegion {
                host_addr: self.addr(),
                size: self.len,
                offset: 0,
                page_size,
            }],
            self.len,
        )
        .unwrap()
    }

    /// Reads the first byte of page `index` (faulting it in through the handler).
    pub fn read_byte(&self, index: u64, at: u64) -> u8 {
        assert!(index * self.page + at < self.len);
        // SAFETY: inside our mapping; a fault is served by the engine before the read returns.
        unsafe { std::ptr::read_volatile(self.ptr.add((index * self.page + at) as usize)) }
    }

    pub fn write_byte(&self, index: u64, at: u64, value: u8) {
        assert!(index * self.page + at < self.len);
        // SAFETY: as above, for a write.
        unsafe { std::ptr::write_volatile(self.ptr.add((index * self.page + at) as usize), value) }
    }

    /// The bytes of page `index` (faulting it in).
    pub fn page_bytes(&self, index: u64) -> Vec<u8> {
        let mut out = vec![0u8; self.page as usize];
        for (i, b) in out.iter_mut().enumerate() {
            *b = self.read_byte(index, i as u64);
        }
        out
    }

    /// `madvise(MADV_DONTNEED)` of pages `[first, first + count)`: the balloon path. Blocks
    /// until the handler reads the REMOVE.
    pub fn dontneed(&self, first: u64, count: u64) {
        // SAFETY: a range of our own mapping; no Rust reference points into it.
        unsafe {
            rustix::mm::madvise(
                self.ptr.add((first * self.page) as usize).cast::<c_void>(),
                (count * self.page) as usize,
                rustix::mm::Advice::LinuxDontNeed,
            )
        }
        .expect("madvise");
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping this struct created.
        let _ = unsafe { rustix::mm::munmap(self.ptr.cast(), self.len as usize) };
    }
}

/// The deterministic byte of image offset `offset` in the test images (never 0, so a zero
/// page is told apart from a served one).
pub fn pattern(offset: u64) -> u8 {
    ((offset / PAGE).wrapping_mul(31).wrapping_add(offset % 251) % 255 + 1) as u8
}

/// A memory image file of `len` bytes filled with `pattern`, and a source over it.
pub fn image_source(len: u64) -> (Arc<LayeredSource>, PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "uffd-engine-test-{}-{}",
        std::process::id(),
        next_id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("memory");
    let bytes: Vec<u8> = (0..len).map(pattern).collect();
    std::fs::write(&path, bytes).unwrap();
    let source = LayeredSource::open_memory_file(&path, PAGE).expect("open image");
    (Arc::new(source), dir)
}

fn next_id() -> u64 {
    static ID: AtomicU64 = AtomicU64::new(0);
    ID.fetch_add(1, Ordering::Relaxed)
}

/// A source that fails the next `n` reads of one page, then serves from an inner source.
pub struct FlakySource {
    pub inner: Arc<dyn PageSource>,
    pub failing_page: u64,
    pub failures_left: AtomicU64,
    pub reads_of_failing_page: AtomicU64,
}

impl PageSource for FlakySource {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn chunk(&self, offset: u64, max_len: u64) -> Result<Chunk<'_>, SourceError> {
        let covers =
            offset <= self.failing_page * PAGE && self.failing_page * PAGE < offset + max_len;
        if covers {
            self.reads_of_failing_page.fetch_add(1, Ordering::SeqCst);
            let left = self.failures_left.load(Ordering::SeqCst);
            if left > 0 {
                self.failures_left.store(left - 1, Ordering::SeqCst);
                return Err(SourceError(format!("storage timeout #{left}")));
            }
        }
        self.inner.chunk(offset, max_len)
    }
}

/// A source whose `hole` (image byte range) is a zero run, as a snapshot's zero entries are.
pub struct HoleSource {
    pub inner: Arc<dyn PageSource>,
    pub hole: std::ops::Range<u64>,
}

impl PageSource for HoleSource {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn chunk(&self, offset: u64, max_len: u64) -> Result<Chunk<'_>, SourceError> {
        if self.hole.contains(&offset) {
            return Ok(Chunk::Zero(max_len.min(self.hole.end - offset)));
        }
        let max_len = if offset < self.hole.start {
            max_len.min(self.hole.start - offset)
        } else {
            max_len
        };
        self.inner.chunk(offset, max_len)
    }
}
