//! The test VMM's guest memory: anonymous private mappings, one per region, with unmapped address
//! space between them, addressed by image offset. The only module of the test VMM with `unsafe`:
//! every access to guest bytes is a volatile load or store checked against the mappings first.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use rustix::mm::{Advice, MapFlags, ProtFlags};
use rustix::pipe::PipeFlags;

use crate::control::{BLOCK, PageFlags, RemoteError, RemoteErrorKind};
use crate::pattern::{HASH_START, hash_step};

const HUGE: u64 = 2 << 20;

/// One region's mapping.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MappedRegion {
    /// Start address in this process.
    pub(crate) addr: usize,
    /// Length in bytes.
    pub(crate) size: u64,
    /// Where its bytes start in the memory image.
    pub(crate) offset: u64,
}

/// Guest memory, mapped for the life of the process (never unmapped, so every address it
/// hands out stays valid).
#[derive(Debug)]
pub(crate) struct GuestMemory {
    regions: Vec<MappedRegion>,
    page_size: u64,
    image_size: u64,
}

impl GuestMemory {
    /// Maps regions of `sizes` bytes as Firecracker does (`MAP_PRIVATE|MAP_ANONYMOUS|
    /// MAP_NORESERVE`, plus `MAP_HUGETLB|MAP_HUGE_2MB` for `hugetlb`), `gap` bytes of unmapped
    /// address space apart, each start aligned to 2 MiB. Sizes are multiples of `page_size`.
    pub(crate) fn map(sizes: &[u64], page_size: u64, hugetlb: bool, gap: u64) -> io::Result<Self> {
        let align = HUGE.max(page_size);
        let gap = gap.next_multiple_of(align);
        let spans: u64 = sizes.iter().map(|s| s.next_multiple_of(align)).sum();
        let total = spans + gap * (sizes.len() as u64).saturating_sub(1) + align;
        let total =
            usize::try_from(total).map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
        // SAFETY: a fresh inaccessible reservation at an address the kernel picks; it overlaps
        // nothing this process uses.
        let reserved = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                total,
                ProtFlags::empty(),
                MapFlags::PRIVATE | MapFlags::NORESERVE,
            )
        }?;
        let start = reserved.expose_provenance();
        let mut next = (start as u64).next_multiple_of(align);
        let mut flags = MapFlags::PRIVATE | MapFlags::NORESERVE | MapFlags::FIXED;
        if hugetlb {
            flags |= MapFlags::HUGETLB | MapFlags::HUGE_2MB;
        }
        let mut regions = Vec::with_capacity(sizes.len());
        let mut offset = 0;
        let mut mapped_end = start as u64;
        for &size in sizes {
            // Unmap whatever of the reservation lies before this region (slack or gap).
            unmap(mapped_end, next)?;
            let len = usize::try_from(size).expect("fits: part of the reservation");
            let at = std::ptr::with_exposed_provenance_mut(next as usize);
            // SAFETY: `[next, next + size)` lies inside the reservation made above, which only
            // this function uses; MAP_FIXED replaces that part of it.
            unsafe {
                rustix::mm::mmap_anonymous(at, len, ProtFlags::READ | ProtFlags::WRITE, flags)
            }?;
            regions.push(MappedRegion {
                addr: next as usize,
                size,
                offset,
            });
            offset += size;
            mapped_end = next + size;
            next = (next + size).next_multiple_of(align) + gap;
        }
        unmap(mapped_end, start as u64 + total as u64)?;
        Ok(GuestMemory {
            regions,
            page_size,
            image_size: offset,
        })
    }

    /// The regions in image order.
    pub(crate) fn regions(&self) -> &[MappedRegion] {
        &self.regions
    }

    /// The guest's page size in bytes.
    pub(crate) fn page_size(&self) -> u64 {
        self.page_size
    }

    /// Checks that `[offset, offset + len)` is non-empty, inside the image, and that both ends
    /// are multiples of `unit`.
    pub(crate) fn check(&self, offset: u64, len: u64, unit: u64) -> Result<(), RemoteError> {
        let end = offset.checked_add(len);
        if len == 0 || end.is_none_or(|end| end > self.image_size) {
            return Err(RemoteError::new(
                RemoteErrorKind::OutOfRange,
                format!(
                    "range at offset {offset:#x} of {len:#x} bytes is empty or leaves the \
                     {:#x}-byte image",
                    self.image_size
                ),
            ));
        }
        if offset % unit != 0 || len % unit != 0 {
            return Err(RemoteError::new(
                RemoteErrorKind::Misaligned,
                format!("offset {offset:#x} or length {len:#x} is not a multiple of {unit:#x}"),
            ));
        }
        Ok(())
    }

    /// The pieces `(address, length)` of `[offset, offset + len)`, one per region it spans.
    /// Panics unless the range lies inside the image: every unsafe access relies on this.
    fn pieces(&self, offset: u64, len: u64) -> impl Iterator<Item = (usize, usize)> + '_ {
        let end = offset.checked_add(len).expect("range overflows");
        assert!(
            end <= self.image_size,
            "[{offset:#x}, {end:#x}) leaves the image"
        );
        self.regions.iter().filter_map(move |r| {
            let from = offset.max(r.offset);
            let to = end.min(r.offset + r.size);
            (from < to).then(|| {
                let addr = r.addr + usize::try_from(from - r.offset).expect("inside a mapping");
                (addr, usize::try_from(to - from).expect("inside a mapping"))
            })
        })
    }

    /// The address of image offset `offset`, where `[offset, offset + len)` lies inside one
    /// region; panics otherwise.
    fn address(&self, offset: u64, len: u64) -> usize {
        let mut pieces = self.pieces(offset, len);
        match (pieces.next(), pieces.next()) {
            (Some((addr, n)), None) if n as u64 == len => addr,
            _ => panic!("[{offset:#x}, +{len:#x}) is not inside one region"),
        }
    }

    /// The little-endian word at `offset` (a multiple of 8), read volatile.
    pub(crate) fn load_word(&self, offset: u64) -> u64 {
        assert!(offset % 8 == 0, "unaligned word at {offset:#x}");
        let ptr = std::ptr::with_exposed_provenance::<u64>(self.address(offset, 8));
        // SAFETY: the 8 aligned bytes lie inside a live read-write mapping of this process
        // (checked by `address`); guest memory is never turned into references, only accessed
        // volatile, since the handler changes it behind the program's back.
        u64::from_le(unsafe { ptr.read_volatile() })
    }

    /// Stores `word` little-endian at `offset` (a multiple of 8), volatile.
    pub(crate) fn store_word(&self, offset: u64, word: u64) {
        assert!(offset % 8 == 0, "unaligned word at {offset:#x}");
        let ptr = std::ptr::with_exposed_provenance_mut::<u64>(self.address(offset, 8));
        // SAFETY: as in `load_word`; the mapping is writable.
        unsafe { ptr.write_volatile(word.to_le()) }
    }

    /// [`crate::block_hash`] of the [`BLOCK`] at `offset` (a multiple of [`BLOCK`]).
    pub(crate) fn hash_block(&self, offset: u64) -> u64 {
        assert!(offset % BLOCK == 0, "unaligned block at {offset:#x}");
        let base = std::ptr::with_exposed_provenance::<u64>(self.address(offset, BLOCK));
        (0..BLOCK as usize / 8).fold(HASH_START, |h, i| {
            // SAFETY: word `i` of the block lies inside a live mapping (checked by `address`
            // for the whole block); read volatile as in `load_word`.
            hash_step(h, u64::from_le(unsafe { base.add(i).read_volatile() }))
        })
    }

    /// [`crate::block_hash`] of each [`BLOCK`] of the range as the kernel reads it:
    /// `write(2)` from guest memory into a pipe, then read back here.
    pub(crate) fn hash_via_kernel(&self, offset: u64, len: u64) -> io::Result<Vec<u64>> {
        let (out, into) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC)?;
        let mut block = vec![0u8; BLOCK as usize];
        let mut hashes = Vec::with_capacity((len / BLOCK) as usize);
        for at in (offset..offset + len).step_by(BLOCK as usize) {
            let base = std::ptr::with_exposed_provenance::<u8>(self.address(at, BLOCK));
            let mut sent = 0;
            while sent < block.len() {
                // SAFETY: the rest of the block lies inside a live mapping (checked by
                // `address`); the kernel only reads it. A block fits in an empty pipe (64 KiB).
                let n = unsafe {
                    libc::write(into.as_raw_fd(), base.add(sent).cast(), block.len() - sent)
                };
                match n {
                    n if n >= 0 => sent += n as usize,
                    _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
                    _ => return Err(io::Error::last_os_error()),
                }
            }
            let mut got = 0;
            while got < block.len() {
                got += rustix::io::read(&out, &mut block[got..])?;
            }
            hashes.push(crate::block_hash(&block));
        }
        Ok(hashes)
    }

    /// Copies the bytes at `offset` into `buf`, volatile.
    pub(crate) fn read(&self, offset: u64, buf: &mut [u8]) {
        let pieces = self.pieces(offset, buf.len() as u64);
        let mut out = buf.iter_mut();
        for (addr, len) in pieces {
            let base = std::ptr::with_exposed_provenance::<u8>(addr);
            for (i, byte) in out.by_ref().take(len).enumerate() {
                // SAFETY: byte `i` of a piece `pieces` found inside a live mapping.
                *byte = unsafe { base.add(i).read_volatile() };
            }
        }
    }

    /// Stores `data` at `offset`, volatile, in ascending order.
    pub(crate) fn write(&self, offset: u64, data: &[u8]) {
        let mut bytes = data.iter();
        for (addr, len) in self.pieces(offset, data.len() as u64) {
            let base = std::ptr::with_exposed_provenance_mut::<u8>(addr);
            for (i, byte) in bytes.by_ref().take(len).enumerate() {
                // SAFETY: byte `i` of a piece `pieces` found inside a live writable mapping.
                unsafe { base.add(i).write_volatile(*byte) };
            }
        }
    }

    /// Stores `len` copies of `byte` at `offset`, volatile, in ascending order.
    pub(crate) fn fill(&self, offset: u64, len: u64, byte: u8) {
        for (addr, len) in self.pieces(offset, len) {
            let base = std::ptr::with_exposed_provenance_mut::<u8>(addr);
            for i in 0..len {
                // SAFETY: byte `i` of a piece `pieces` found inside a live writable mapping.
                unsafe { base.add(i).write_volatile(byte) };
            }
        }
    }

    /// `madvise(MADV_DONTNEED)` on every piece of the range, as a balloon does: each raises a
    /// `UFFD_EVENT_REMOVE` and blocks until the handler reads it.
    pub(crate) fn madvise_dontneed(&self, offset: u64, len: u64) -> io::Result<()> {
        for (addr, len) in self.pieces(offset, len) {
            let ptr = std::ptr::with_exposed_provenance_mut(addr);
            // SAFETY: the piece lies inside a private anonymous mapping of guest memory, which
            // this process only accesses through volatile loads and stores of raw pointers: no
            // reference to its bytes exists that zapping them could invalidate.
            unsafe { rustix::mm::madvise(ptr, len, Advice::LinuxDontNeed) }?;
        }
        Ok(())
    }

    /// The pagemap flags of every [`BLOCK`] of the range (reading pagemap does not fault).
    pub(crate) fn pagemap(&self, offset: u64, len: u64) -> io::Result<Vec<PageFlags>> {
        let file = std::fs::File::open("/proc/self/pagemap")?;
        let mut flags = Vec::with_capacity((len / BLOCK) as usize);
        for (addr, len) in self.pieces(offset, len) {
            let mut raw = vec![0u8; len / BLOCK as usize * 8];
            file.read_exact_at(&mut raw, addr as u64 / BLOCK * 8)?;
            flags.extend(raw.chunks_exact(8).map(|e| {
                PageFlags::from_entry(u64::from_ne_bytes(e.try_into().expect("8 bytes")))
            }));
        }
        Ok(flags)
    }
}

/// Unmaps `[from, to)` of the reservation, if non-empty.
fn unmap(from: u64, to: u64) -> io::Result<()> {
    if from < to {
        let ptr = std::ptr::with_exposed_provenance_mut(from as usize);
        // SAFETY: `[from, to)` is an unused part of the reservation `GuestMemory::map` made; no
        // pointer into it is kept.
        unsafe { rustix::mm::munmap(ptr, (to - from) as usize) }?;
    }
    Ok(())
}
