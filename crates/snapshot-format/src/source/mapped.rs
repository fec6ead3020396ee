//! The crate's one `unsafe`: mapping a snapshot data file read-only.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use memmap2::{Advice, Mmap};

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
    /// Makes `[offset, offset + len)` of the mapping resident (`MADV_POPULATE_READ`): a page the
    /// file lost is an error here, where touching it would raise SIGBUS.
    pub(crate) fn populate(&self, offset: usize, len: usize) -> std::io::Result<()> {
        match &self.map {
            Some(map) => map.advise_range(Advice::PopulateRead, offset, len),
            None => Ok(()),
        }
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
