//! Shared pieces of the uffd-core benches: guest-like memory and thread placement.

#![allow(dead_code)]

use std::ffi::c_void;

use rustix::mm::{MapFlags, ProtFlags};

/// An anonymous private mapping, unmapped on drop (the "guest memory" of a bench).
pub(crate) struct Mapping {
    /// First byte.
    pub(crate) ptr: *mut u8,
    /// Length in bytes.
    pub(crate) len: usize,
}

// SAFETY: the mapping is plain memory owned by this struct; threads only touch it through
// raw pointers in ways each bench documents.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// A fresh, unpopulated mapping of `len` bytes.
    pub(crate) fn new(len: usize) -> Self {
        // SAFETY: a fresh anonymous mapping at an address the kernel chooses; nothing aliases it.
        let ptr = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE | MapFlags::NORESERVE,
            )
        }
        .expect("mmap");
        Mapping {
            ptr: ptr.cast(),
            len,
        }
    }

    /// A mapping with every page written (a populated copy source).
    pub(crate) fn populated(len: usize, byte: u8) -> Self {
        let m = Mapping::new(len);
        // SAFETY: the mapping is `len` writable bytes owned by `m`.
        unsafe { std::ptr::write_bytes(m.ptr, byte, len) };
        m
    }

    /// Start address.
    pub(crate) fn addr(&self) -> u64 {
        self.ptr as u64
    }

    /// Drops the pages of the first `len` bytes (they read as missing again).
    pub(crate) fn discard_first(&self, len: usize) {
        assert!(len <= self.len);
        // SAFETY: MADV_DONTNEED on our own mapping; no Rust reference points into it.
        unsafe {
            rustix::mm::madvise(
                self.ptr.cast::<c_void>(),
                len,
                rustix::mm::Advice::LinuxDontNeed,
            )
        }
        .expect("madvise");
    }

    /// The bytes (for a populated source).
    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: `len` initialised bytes, alive as long as `self`; benches only read a
        // populated source through this.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping this struct created.
        let _ = unsafe { rustix::mm::munmap(self.ptr.cast(), self.len) };
    }
}

/// Pins the calling thread to one CPU.
pub(crate) fn pin_to(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set).expect("sched_setaffinity");
}

/// Lets the calling thread run on every CPU again.
pub(crate) fn unpin() {
    let mut set = rustix::thread::CpuSet::new();
    for cpu in 0..rustix::thread::CpuSet::MAX_CPU.min(64) {
        set.set(cpu);
    }
    let _ = rustix::thread::sched_setaffinity(None, &set);
}
