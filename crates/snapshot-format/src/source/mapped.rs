//! The crate's `unsafe`: mapping a snapshot data file read-only, and asking the kernel which
//! of its pages are in the page cache.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use memmap2::Mmap;

use crate::error::{Error, Result};

/// A read-only shared mapping of a data file: the bytes, and the handle that advises on them.
#[derive(Debug, Clone)]
pub(crate) struct Mapped {
    /// The whole file (clones and slices share the mapping; it is unmapped when the last one
    /// drops).
    pub(crate) bytes: Bytes,
    map: Option<Arc<Mmap>>,
}

/// The owner [`Bytes`] keeps alive.
struct SharedMap(Arc<Mmap>);

impl AsRef<[u8]> for SharedMap {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Mapped {
    /// Whether every page of `[offset, offset + len)` of the file is in the page cache now
    /// (`mincore`, which reads no page and maps nothing). `MADV_POPULATE_READ` would also
    /// map the pages, but cost more than the copy it saves (docs/benchmarks.md).
    pub(crate) fn is_resident(&self, offset: usize, len: usize) -> std::io::Result<bool> {
        let Some(map) = &self.map else {
            return Ok(len == 0);
        };
        let page = rustix::param::page_size();
        let end = offset.saturating_add(len);
        if end > map.len() {
            return Ok(false);
        }
        let start = offset / page * page;
        // The mapping covers whole pages, the last one past the end of the file.
        let span = end.div_ceil(page) * page - start;
        let mut flags = [0u8; 512];
        let mut done = 0;
        while done < span {
            let chunk = (span - done).min(flags.len() * page);
            // SAFETY: `[start + done, start + done + chunk)` lies within the pages of the live
            // mapping `map` (checked against its length above, rounded to whole pages, which the
            // mapping covers); `mincore` reads no byte of it and writes one byte per page, at
            // most `flags.len()` bytes, into `flags`.
            let rc = unsafe {
                libc::mincore(
                    map.as_ptr().add(start + done).cast_mut().cast(),
                    chunk,
                    flags.as_mut_ptr(),
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if flags[..chunk / page].iter().any(|f| f & 1 == 0) {
                return Ok(false);
            }
            done += chunk;
        }
        Ok(true)
    }
}

/// Opens the file at `path` read-only and maps the whole of it shared. The file comes back
/// too, for reads that must not touch the mapping (`pread`).
pub(crate) fn map_read_only(path: &Path) -> Result<(File, Mapped)> {
    let file = File::open(path)
        .map_err(|e| Error::io(format!("opening data file {}", path.display()), e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io(format!("reading the length of {}", path.display()), e))?
        .len();
    if len == 0 {
        // Nothing to map; an empty data file (a diff with no dirty pages) is valid.
        let empty = Mapped {
            bytes: Bytes::new(),
            map: None,
        };
        return Ok((file, empty));
    }
    // SAFETY: `Mmap::map` is unsafe because the mapping aliases the file: if another process
    // writes to it the `&[u8]` we hand out changes underneath, and if it truncates it, touching
    // the lost pages raises SIGBUS. Snapshot data files are immutable once written (writers
    // create new files, never modify a published one), the file is opened read-only, and the
    // mapping is private to this process's reads. Callers check the mapped length against every
    // storage range the header references right after mapping (`LayeredSource::open`), so a
    // file that is already short is an error, not a SIGBUS; only truncation *after* open, which
    // the immutability rule forbids, could still fault. This crate itself never touches the
    // mapping in user space: its reads go through `pread` on the file
    // (`LayeredSource::read_into`); the slices `chunk` hands out are meant for the kernel to
    // read (a `UFFDIO_COPY` source), which reports a lost page as EFAULT, not SIGBUS.
    let map = unsafe { Mmap::map(&file) }
        .map_err(|e| Error::io(format!("mapping data file {}", path.display()), e))?;
    let map = Arc::new(map);
    let mapped = Mapped {
        bytes: Bytes::from_owner(SharedMap(map.clone())),
        map: Some(map),
    };
    Ok((file, mapped))
}
