//! Reading page bytes with `pread` (never through the mapping, so a lost page is an error and
//! not SIGBUS), verified against the header's data checksums where it has them; blocking, or
//! only from the page cache.

use std::fs::File;
use std::io::{self, IoSliceMut};
use std::os::unix::fs::FileExt;

use rustix::io::{Errno, ReadWriteFlags};

use crate::checksums::DataChecksums;
use crate::error::{Error, Result};
use crate::source::{BuildFile, LayeredSource, Piece};

/// Whether a read may wait for storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// `pread`: waits for the disk.
    Block,
    /// `preadv2(RWF_NOWAIT)`: only what the page cache holds.
    Never,
}

impl LayeredSource {
    /// Copies `[offset, offset + buf.len())` into `buf` (zeros where the mapping says zero).
    ///
    /// Reads the data files with `pread`, never through the mapping: a file truncated or
    /// failing underneath is an [`Error::Io`] naming it (a short read is `UnexpectedEof`),
    /// where touching the mapping would raise SIGBUS.
    ///
    /// Bytes of a build with a checksum table are verified, every unit of them, before this
    /// returns: a unit that does not match is [`Error::DataChecksumMismatch`] (a read not
    /// aligned to units reads the units covering it and verifies them whole). Bytes of a build
    /// without one (E2B headers, plain memory files) come only from a file still as it was
    /// when opened (size and modification time, one `fstat` per piece): [`Error::FileChanged`]
    /// otherwise. On an error, `buf` holds no bytes to use.
    pub fn read_into(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.fill(offset, buf, Wait::Block).map(|_| ())
    }

    /// [`LayeredSource::read_into`] that never waits for storage: fills `buf` only from the
    /// page cache (`preadv2` with `RWF_NOWAIT`), verified the same way.
    ///
    /// `Ok(true)`: `buf` holds the bytes. `Ok(false)`: some piece is not in the page cache
    /// (`EAGAIN`, or a read cut short before the end of the file) or the file system cannot
    /// tell without waiting (`EOPNOTSUPP`); `buf` is then partly filled, and the caller reads
    /// with `read_into` where blocking is fine. A miss may start readahead of the missing
    /// pages, so a later call can succeed. Errors are `read_into`'s; the end of a file
    /// before the bytes the header places there is [`Error::Io`] (`UnexpectedEof`), as for
    /// `read_into`.
    ///
    /// A file system without page-cache-only reads (FUSE answers `EOPNOTSUPP`) makes every
    /// read of its files `Ok(false)`, except where its pages are memory (tmpfs, ramfs), which
    /// is read as is: see [`LayeredSource::can_read_resident`].
    pub fn read_resident(&self, offset: u64, buf: &mut [u8]) -> Result<bool> {
        self.fill(offset, buf, Wait::Never)
    }

    /// False when some data file's file system cannot answer a page-cache-only read (found
    /// at open with a one-byte `RWF_NOWAIT` read; FUSE cannot) and does not keep its pages in
    /// memory (tmpfs and ramfs do, and are read as is): [`LayeredSource::read_resident`]
    /// of its bytes is then always `Ok(false)`, and a caller may as well read with
    /// [`LayeredSource::read_into`] at once.
    pub fn can_read_resident(&self) -> bool {
        self.files.iter().all(|f| f.nowait || f.in_memory)
    }

    /// Fills `buf` piece by piece; false as soon as a piece would block.
    fn fill(&self, offset: u64, buf: &mut [u8], wait: Wait) -> Result<bool> {
        let (length, size) = (buf.len() as u64, self.header.size());
        if offset.checked_add(length).is_none_or(|end| end > size) {
            return Err(Error::OutOfRange {
                offset,
                length,
                size,
            });
        }
        let mut done = 0usize;
        while done < buf.len() {
            let rest = &mut buf[done..];
            let at = offset + done as u64;
            done += match self.locate(at, rest.len() as u64)? {
                Piece::Zero(len) => {
                    rest[..len as usize].fill(0);
                    len as usize
                }
                Piece::File(file, range) => {
                    let len = range.len();
                    let out = &mut rest[..len];
                    if !self.read_piece(file, out, range.start as u64, at, wait)? {
                        return Ok(false);
                    }
                    len
                }
            };
        }
        Ok(true)
    }

    /// Reads `out.len()` bytes of `file` at `file_offset` (image offset `at`, for errors),
    /// verified against its checksums, or checked unchanged when it has none.
    fn read_piece(
        &self,
        file: &BuildFile,
        out: &mut [u8],
        file_offset: u64,
        at: u64,
        wait: Wait,
    ) -> Result<bool> {
        if wait == Wait::Never && !file.nowait && !file.in_memory {
            return Ok(false);
        }
        let Some(table) = file.table.and_then(|i| self.header.checksums().get(i)) else {
            file.check_unchanged()?;
            return read_at(file, out, file_offset, at, wait);
        };
        let unit = table.unit().max(1);
        let end = file_offset + out.len() as u64;
        let (first, last) = (file_offset / unit * unit, end.div_ceil(unit) * unit);
        if first == file_offset && last == end {
            if !read_at(file, out, file_offset, at, wait)? {
                return Ok(false);
            }
            return verify(file, table, file_offset, out, at).map(|()| true);
        }
        // Part of a unit: read the units covering it, so every byte served was verified.
        let mut covering = vec![0u8; (last - first) as usize];
        if !read_at(file, &mut covering, first, at, wait)? {
            return Ok(false);
        }
        verify(file, table, first, &covering, at)?;
        let from = (file_offset - first) as usize;
        out.copy_from_slice(&covering[from..from + out.len()]);
        Ok(true)
    }
}

/// Checks `bytes`, read at `file_offset` of `file`, against `table`.
fn verify(
    file: &BuildFile,
    table: &DataChecksums,
    file_offset: u64,
    bytes: &[u8],
    at: u64,
) -> Result<()> {
    let Err(mismatch) = table.verify(file_offset, bytes) else {
        return Ok(());
    };
    match mismatch.expected {
        Some(expected) => Err(Error::DataChecksumMismatch {
            build: file.build_id,
            path: file.path.clone(),
            file_offset: mismatch.file_offset,
            expected,
            found: mismatch.found,
        }),
        // The header's checks keep every storage range inside its table; this keeps a
        // broken invariant an error.
        None => Err(Error::OutOfRange {
            offset: at,
            length: bytes.len() as u64,
            size: table.covered_len(),
        }),
    }
}

/// Fills `out` from `file` at `offset`: true when filled, false when `wait` is
/// [`Wait::Never`] and the page cache does not hold it all.
fn read_at(file: &BuildFile, out: &mut [u8], offset: u64, at: u64, wait: Wait) -> Result<bool> {
    let len = out.len();
    let context = || {
        format!(
            "reading {len} bytes at {offset:#x} of data file {} (image offset {at:#x})",
            file.path.display()
        )
    };
    // A file in memory (tmpfs) never waits for storage: read it whatever `wait` says.
    if wait == Wait::Block || file.in_memory {
        return file
            .file
            .read_exact_at(out, offset)
            .map(|()| true)
            .map_err(|e| Error::io(context(), e));
    }
    let mut got = 0usize;
    while got < out.len() {
        let mut slices = [IoSliceMut::new(&mut out[got..])];
        match rustix::io::preadv2(
            &*file.file,
            &mut slices,
            offset + got as u64,
            ReadWriteFlags::NOWAIT,
        ) {
            Ok(0) => {
                let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "the file ends here");
                return Err(Error::io(context(), eof));
            }
            // A short read: the next call tells a page cache miss (EAGAIN) from the end.
            Ok(n) => got += n,
            Err(Errno::INTR) => {}
            // Not cached, or no way to ask without waiting (old kernels, some file systems).
            Err(Errno::AGAIN | Errno::OPNOTSUPP | Errno::NOSYS) => return Ok(false),
            Err(e) => return Err(Error::io(context(), e.into())),
        }
    }
    Ok(true)
}

/// Whether `file` lives on a file system whose pages are memory (tmpfs, ramfs): reading it
/// never waits for storage, though it answers no page-cache-only read.
pub(super) fn in_memory(file: &File) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    rustix::fs::fstatfs(file).is_ok_and(|fs| {
        // `f_type`'s integer type differs between architectures.
        #[allow(clippy::unnecessary_cast)]
        let kind = fs.f_type as i64;
        kind == TMPFS_MAGIC || kind == RAMFS_MAGIC
    })
}

/// Whether `file` (of `len` bytes) answers a page-cache-only read: false only for
/// `EOPNOTSUPP`/`ENOSYS` (a file system or kernel without `RWF_NOWAIT`). An empty file has
/// nothing to read and counts as answering.
pub(super) fn answers_nowait(file: &File, len: u64) -> bool {
    if len == 0 {
        return true;
    }
    let mut byte = [0u8];
    !matches!(
        rustix::io::preadv2(
            file,
            &mut [IoSliceMut::new(&mut byte)],
            0,
            ReadWriteFlags::NOWAIT
        ),
        Err(Errno::OPNOTSUPP | Errno::NOSYS)
    )
}
