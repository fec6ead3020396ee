//! Shared pieces of the engine tests: guest memory in this process, snapshot images, and a
//! source that fails on demand.

// Shared by two test targets (it, races), each using a different part.
#![allow(dead_code, unreachable_pub, unused_imports)]

use std::ffi::c_void;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use snapshot_format::LayeredSource;
use test_support::Mapping;
use uffd_core::{Features, PageSize, Range, RegisterMode, Uffd, UffdBuilder};
use uffd_engine::{Extent, GuestLayout, GuestRegion, PageSource, SourceError};

pub mod fuse;
#[cfg(feature = "test-hooks")]
pub mod parker;
pub mod proc;
pub mod soak;
pub mod vmm;

pub const PAGE: u64 = 4096;

/// Anonymous private guest memory (test-support's [`Mapping`]), registered MISSING with its
/// own uffd the way a VMM does; unmapped on drop.
pub struct Guest {
    pub map: Mapping,
    pub page: u64,
}

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
        let map = match page_size {
            PageSize::Huge2M => {
                Mapping::hugetlb(pages as usize).expect("mmap hugetlb guest memory")
            }
            _ => Mapping::anon(pages as usize),
        };
        let uffd = UffdBuilder::new()
            .features(features)
            .create()
            .expect("uffd");
        uffd.register(
            Range::new(map.addr(), map.len() as u64, page_size).unwrap(),
            RegisterMode::MISSING,
        )
        .expect("register");
        let page = page_size.bytes();
        (Arc::new(Guest { map, page }), uffd)
    }

    pub fn addr(&self) -> u64 {
        self.map.addr()
    }

    pub fn len(&self) -> u64 {
        self.map.len() as u64
    }

    pub fn layout(&self, page_size: PageSize) -> GuestLayout {
        GuestLayout::new(
            vec![GuestRegion {
                host_addr: self.addr(),
                size: self.len(),
                offset: 0,
                page_size,
            }],
            self.len(),
        )
        .unwrap()
    }

    /// Reads byte `at` of page `index` (faulting it in through the handler).
    pub fn read_byte(&self, index: u64, at: u64) -> u8 {
        self.map.read((index * self.page + at) as usize)
    }

    pub fn write_byte(&self, index: u64, at: u64, value: u8) {
        self.map.write((index * self.page + at) as usize, value);
    }

    /// The bytes of page `index` (faulting it in).
    pub fn page_bytes(&self, index: u64) -> Vec<u8> {
        self.map
            .read_bytes((index * self.page) as usize, self.page as usize)
    }

    /// `madvise(MADV_DONTNEED)` of pages `[first, first + count)`: the balloon path. Blocks
    /// until the handler reads the REMOVE.
    pub fn dontneed(&self, first: u64, count: u64) {
        // test-support counts 4 KiB pages.
        self.map
            .dontneed(
                (first * self.page / PAGE) as usize,
                (count * self.page / PAGE) as usize,
            )
            .expect("madvise");
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

    fn extent(&self, offset: u64, max_len: u64) -> Result<Extent, SourceError> {
        self.inner.extent(offset, max_len)
    }

    fn read_into(&self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        let covers = offset <= self.failing_page * PAGE
            && self.failing_page * PAGE < offset + buf.len() as u64;
        if covers {
            self.reads_of_failing_page.fetch_add(1, Ordering::SeqCst);
            let left = self.failures_left.load(Ordering::SeqCst);
            if left > 0 {
                self.failures_left.store(left - 1, Ordering::SeqCst);
                return Err(SourceError(format!("storage timeout #{left}")));
            }
        }
        self.inner.read_into(offset, buf)
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

    fn extent(&self, offset: u64, max_len: u64) -> Result<Extent, SourceError> {
        if self.hole.contains(&offset) {
            return Ok(Extent::Zero(max_len.min(self.hole.end - offset)));
        }
        let max_len = if offset < self.hole.start {
            max_len.min(self.hole.start - offset)
        } else {
            max_len
        };
        self.inner.extent(offset, max_len)
    }

    fn read_into(&self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        self.inner.read_into(offset, buf)?;
        let end = offset + buf.len() as u64;
        let (lo, hi) = (self.hole.start.max(offset), self.hole.end.min(end));
        if lo < hi {
            buf[(lo - offset) as usize..(hi - offset) as usize].fill(0);
        }
        Ok(())
    }
}
