//! The data extents of a sparse file, for serving its holes as zero runs.

use std::fs::File;
use std::io;
use std::ops::Range;

use rustix::fs::SeekFrom;
use uuid::Uuid;

use crate::model::Mapping;

/// The byte ranges of `file` (of length `len`) that hold data, by `SEEK_DATA`/`SEEK_HOLE`,
/// widened to `block` boundaries and merged; in order. A file system that does not track
/// holes reports the whole file as one extent.
pub(super) fn data_extents(file: &File, len: u64, block: u64) -> io::Result<Vec<Range<u64>>> {
    let mut extents: Vec<Range<u64>> = Vec::new();
    let mut at = 0;
    while at < len {
        let start = match rustix::fs::seek(file, SeekFrom::Data(at)) {
            Ok(start) => start,
            // No data at or after `at`: the rest is a hole.
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e.into()),
        };
        if start >= len {
            break;
        }
        let end = rustix::fs::seek(file, SeekFrom::Hole(start))?.min(len);
        let widened = start / block * block..end.div_ceil(block).saturating_mul(block).min(len);
        match extents.last_mut() {
            Some(last) if last.end >= widened.start => last.end = last.end.max(widened.end),
            _ => extents.push(widened),
        }
        at = end.max(start + 1);
    }
    Ok(extents)
}

/// The mapping of a file of `len` bytes of build `build` stored in place: `extents` map to the
/// same offsets of the file, the gaps between them are zero runs.
pub(super) fn mappings(extents: &[Range<u64>], len: u64, build: Uuid) -> Vec<Mapping> {
    let mut entries = Vec::with_capacity(extents.len() * 2 + 1);
    let mut at = 0;
    for extent in extents {
        if extent.start > at {
            entries.push(Mapping::zero(at, extent.start - at));
        }
        entries.push(Mapping::data(
            extent.start,
            extent.end - extent.start,
            build,
            extent.start,
        ));
        at = extent.end;
    }
    if at < len {
        entries.push(Mapping::zero(at, len - at));
    }
    entries
}
