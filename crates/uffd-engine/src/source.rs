//! Where page bytes come from: the layered snapshot source, a plain memory file, or anything
//! implementing [`PageSource`].

use snapshot_format::{Chunk, LayeredSource};

/// Why a source could not produce bytes. The engine retries these (see the retry policy), so
/// a transient storage error costs a backoff, not the VM.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

/// Bytes of the guest's memory image, addressed by image offset.
///
/// `chunk` is on the fault path: it returns the longest single piece starting at `offset`
/// (at most `max_len` bytes) without allocating, either a slice to copy from or a zero run.
/// A range crossing pieces takes several calls.
pub trait PageSource: Send + Sync {
    /// The image size in bytes.
    fn size(&self) -> u64;

    /// The piece of the image starting at `offset`, at most `max_len` bytes, never empty.
    ///
    /// The engine hands `Data` slices to the kernel only (a `UFFDIO_COPY` source), never reads
    /// them itself: a slice of a file mapping whose file lost those bytes makes the COPY fail
    /// with EFAULT, which the engine retries as a source error.
    fn chunk(&self, offset: u64, max_len: u64) -> Result<Chunk<'_>, SourceError>;

    /// Copies `[offset, offset + buf.len())` into `buf` (zeros for zero runs): the bytes of
    /// a page that spans pieces, and of graduation's sweep.
    ///
    /// The default copies from [`PageSource::chunk`]'s slices; a source over file mappings must
    /// override it with reads that report a lost byte as an error (`pread`), since touching a
    /// mapping whose file was truncated raises SIGBUS.
    fn read_into(&self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        copy_from_chunks(self, offset, buf)
    }
}

impl PageSource for LayeredSource {
    fn size(&self) -> u64 {
        self.header().size()
    }

    #[inline]
    fn chunk(&self, offset: u64, max_len: u64) -> Result<Chunk<'_>, SourceError> {
        LayeredSource::chunk(self, offset, max_len).map_err(|e| SourceError(e.to_string()))
    }

    /// `pread` of the data files: a truncated file is an error, never SIGBUS.
    fn read_into(&self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        LayeredSource::read_into(self, offset, buf).map_err(|e| SourceError(e.to_string()))
    }
}

/// Copies `[offset, offset + buf.len())` of `source` into `buf` from its chunks, zero-filling
/// zero runs: [`PageSource::read_into`]'s default.
fn copy_from_chunks<S: PageSource + ?Sized>(
    source: &S,
    offset: u64,
    buf: &mut [u8],
) -> Result<(), SourceError> {
    let mut done = 0usize;
    while done < buf.len() {
        let rest = &mut buf[done..];
        let piece = source.chunk(offset + done as u64, rest.len() as u64)?;
        let len = (piece.len() as usize).min(rest.len());
        if len == 0 {
            return Err(SourceError(format!(
                "source returned an empty piece at {:#x}",
                offset + done as u64
            )));
        }
        match piece {
            Chunk::Zero(_) => rest[..len].fill(0),
            Chunk::Data(bytes) => rest[..len].copy_from_slice(&bytes[..len]),
        }
        done += len;
    }
    Ok(())
}
