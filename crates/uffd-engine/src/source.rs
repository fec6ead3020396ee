//! Where page bytes come from: the layered snapshot source, a plain memory file, or anything
//! implementing [`PageSource`].

use snapshot_format::LayeredSource;

/// Why a source could not produce bytes. The engine retries these (see the retry policy), so
/// a transient storage error costs a backoff, not the VM.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

/// What the image holds from an offset on, as far as one kind of content reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extent {
    /// This many bytes of data: they must be read.
    Data(u64),
    /// This many bytes that read as zero (a hole in the snapshot): nothing to read.
    Zero(u64),
}

impl Extent {
    /// The extent's length in bytes.
    pub fn len(self) -> u64 {
        match self {
            Extent::Data(n) | Extent::Zero(n) => n,
        }
    }

    /// True for an empty extent (a source never returns one).
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// The extent at `offset` (at most `max_len` bytes) from a snapshot header alone:
    /// consecutive entries of one kind (data of any build, or zeros) merge into one run. For
    /// sources laid out by a [`snapshot_format::Header`], local or remote.
    pub fn in_header(
        header: &snapshot_format::Header,
        offset: u64,
        max_len: u64,
    ) -> Result<Extent, SourceError> {
        let end = offset.saturating_add(max_len).min(header.size());
        let out_of_range = || {
            SourceError(format!(
                "image offset {offset:#x} (+{max_len:#x}) is beyond the snapshot's {:#x} bytes",
                header.size()
            ))
        };
        let first = header.lookup(offset).ok_or_else(out_of_range)?;
        let zero = first.is_zero();
        let mut at = offset + first.remaining;
        while at < end {
            match header.lookup(at) {
                Some(next) if next.is_zero() == zero => at += next.remaining,
                _ => break,
            }
        }
        let len = at.min(end) - offset;
        Ok(if zero {
            Extent::Zero(len)
        } else {
            Extent::Data(len)
        })
    }
}

/// Bytes of the guest's memory image, addressed by image offset.
///
/// The engine reads bytes into its own buffers, outside every lock, and hands the kernel only
/// those buffers: a `UFFDIO_COPY` never reads a file, so storage that fails or stalls under a
/// read costs a retry of that read, never a stalled install or a SIGBUS.
pub trait PageSource: Send + Sync {
    /// The image size in bytes.
    fn size(&self) -> u64;

    /// What the image holds at `offset`: the longest run of one kind starting there, at most
    /// `max_len` bytes, never empty. It reads no data: it is on the fault path, to find holes
    /// that are installed as zeros without a read.
    fn extent(&self, offset: u64, max_len: u64) -> Result<Extent, SourceError>;

    /// Reads `[offset, offset + buf.len())` into `buf` (zeros for holes), waiting for storage
    /// as long as it takes. Called by fetcher, prefetch and graduation threads, never by a
    /// thread that reads the uffd.
    fn read_into(&self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError>;

    /// Reads like [`PageSource::read_into`] only if no storage has to be waited for (the bytes
    /// are in the page cache, or in memory): `Ok(false)` otherwise, with `buf` unspecified.
    /// The threads that read the uffd serve resident bytes inline and hand the rest to the
    /// fetchers.
    ///
    /// The default is a blocking [`PageSource::read_into`], right for sources whose bytes are
    /// always in memory.
    fn read_resident(&self, offset: u64, buf: &mut [u8]) -> Result<bool, SourceError> {
        self.read_into(offset, buf).map(|()| true)
    }

    /// For bulk installs (prefetch): `[offset, offset + len)` as a slice the kernel may copy
    /// from directly, all of it resident now, so the copy waits for no storage and one memory
    /// copy is saved; `None` where the source has no such slice, where some of it is not
    /// resident, or where the bytes must be checked in user space (checksums): the caller
    /// then reads them with [`PageSource::read_into`]. The kernel copying from it must report
    /// a page lost since as an error (EFAULT), never serve it. The default is `None`.
    fn resident_slice(&self, offset: u64, len: u64) -> Result<Option<&[u8]>, SourceError> {
        let _ = (offset, len);
        Ok(None)
    }
}

impl PageSource for LayeredSource {
    fn size(&self) -> u64 {
        self.header().size()
    }

    #[inline]
    fn extent(&self, offset: u64, max_len: u64) -> Result<Extent, SourceError> {
        Extent::in_header(self.header(), offset, max_len)
    }

    /// `pread` of the data files, verified against the header's checksums where it has them:
    /// a truncated or changed file is an error, never SIGBUS or wrong bytes.
    fn read_into(&self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        LayeredSource::read_into(self, offset, buf).map_err(|e| SourceError(e.to_string()))
    }

    /// `preadv2(RWF_NOWAIT)`: the page cache only, verified the same way.
    fn read_resident(&self, offset: u64, buf: &mut [u8]) -> Result<bool, SourceError> {
        LayeredSource::read_resident(self, offset, buf).map_err(|e| SourceError(e.to_string()))
    }

    /// The data file's mapping where `mincore` finds every page cached, for files without
    /// checksums.
    fn resident_slice(&self, offset: u64, len: u64) -> Result<Option<&[u8]>, SourceError> {
        LayeredSource::resident(self, offset, len).map_err(|e| SourceError(e.to_string()))
    }
}
