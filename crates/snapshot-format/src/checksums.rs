//! Data checksums: a CRC32 per fixed unit of a build's data file, carried in the native header
//! and checked on every read of that file, so a byte that changed on disk is never served.
//!
//! The unit is `min(block_size, 4096)` bytes of the data file. Every data entry starts and ends
//! on a block boundary in storage too (the writers pack whole blocks), so with the unit dividing
//! the block size, every page-aligned read of 4 KiB or 2 MiB covers whole units: a fault's
//! read is verified exactly, with no neighbouring bytes read only to check them. A smaller unit
//! would cost header size for no gain (pages are never read in smaller pieces); a larger one
//! would make a 4 KiB fault read and hash more than its page.

use std::io::{self, Write};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::MAX_SIZE;

/// Largest checksum unit in bytes: a 4 KiB page.
pub const MAX_CHECKSUM_UNIT: u64 = 4096;

/// Most checksums a header may carry over all its tables: 2^28 (1 GiB of CRCs, covering
/// 1 TiB of data at 4 KiB units). Checked against a file's length before allocating.
pub const MAX_CHECKSUMS: u64 = 1 << 28;

/// The checksum unit of a header with `block_size`: `min(block_size, 4096)` bytes.
pub fn checksum_unit(block_size: u64) -> u64 {
    block_size.min(MAX_CHECKSUM_UNIT)
}

/// The CRC32 (IEEE) of each consecutive `unit`-byte piece of one build's data file.
///
/// A [`crate::Header`] carries one table per referenced build whose writer computed one
/// (native headers from version 2 on); E2B headers and plain memory files have none.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DataChecksums {
    build_id: Uuid,
    unit: u64,
    crcs: Vec<u32>,
}

impl DataChecksums {
    /// The table of `build_id`'s data file: `crcs[i]` is the CRC32 of bytes
    /// `[i * unit, (i + 1) * unit)`. Checked against a header when attached to it.
    pub fn new(build_id: Uuid, unit: u64, crcs: Vec<u32>) -> Self {
        DataChecksums {
            build_id,
            unit,
            crcs,
        }
    }

    /// The table of `data`, a whole data file, cut into `unit`-byte pieces (a last piece
    /// shorter than `unit` gets the CRC of what there is; [`crate::LayeredSource::open`] then
    /// refuses the file, which is not the length the table describes).
    pub fn of(build_id: Uuid, unit: u64, data: &[u8]) -> Self {
        let crcs = data
            .chunks(unit.max(1) as usize)
            .map(crc32fast::hash)
            .collect();
        DataChecksums::new(build_id, unit, crcs)
    }

    /// The build whose data file the table describes.
    pub fn build_id(&self) -> Uuid {
        self.build_id
    }

    /// Bytes per checksum.
    pub fn unit(&self) -> u64 {
        self.unit
    }

    /// One CRC32 per unit, in file order.
    pub fn crcs(&self) -> &[u32] {
        &self.crcs
    }

    /// Length of the data file the table describes: units times unit length (saturating).
    pub fn covered_len(&self) -> u64 {
        (self.crcs.len() as u64).saturating_mul(self.unit)
    }

    /// Checks `bytes`, read from the data file at `file_offset`; both are whole units (the
    /// caller aligns them). The first unit that differs, as (its file offset, expected, found).
    pub(crate) fn verify(&self, file_offset: u64, bytes: &[u8]) -> Result<(), Mismatch> {
        let unit = self.unit.max(1);
        let first = (file_offset / unit) as usize;
        for (i, piece) in bytes.chunks(unit as usize).enumerate() {
            let found = crc32fast::hash(piece);
            let expected = self.crcs.get(first + i).copied();
            if expected != Some(found) {
                return Err(Mismatch {
                    file_offset: file_offset + i as u64 * unit,
                    expected,
                    found,
                });
            }
        }
        Ok(())
    }
}

/// A unit whose bytes do not match the table (`expected` is `None` past the table's end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mismatch {
    pub(crate) file_offset: u64,
    pub(crate) expected: Option<u32>,
    pub(crate) found: u32,
}

/// Whether a data file of `len` bytes fits the limits a table is held to.
pub(crate) fn covered_len_ok(len: u64) -> bool {
    len <= MAX_SIZE
}

/// A writer that passes bytes through to `inner` and computes the checksum table of them as
/// they go: the writers' way to checksum a data file without reading it back.
pub(crate) struct ChecksummingWriter<'a, W: Write + ?Sized> {
    inner: &'a mut W,
    unit: usize,
    hasher: crc32fast::Hasher,
    in_unit: usize,
    crcs: Vec<u32>,
}

impl<'a, W: Write + ?Sized> ChecksummingWriter<'a, W> {
    pub(crate) fn new(inner: &'a mut W, unit: u64) -> Self {
        ChecksummingWriter {
            inner,
            unit: unit.max(1) as usize,
            hasher: crc32fast::Hasher::new(),
            in_unit: 0,
            crcs: Vec::new(),
        }
    }

    /// Checksums computed so far.
    pub(crate) fn count(&self) -> u64 {
        self.crcs.len() as u64
    }

    /// The table of everything written (a trailing partial unit gets its own CRC).
    pub(crate) fn finish(mut self, build_id: Uuid) -> DataChecksums {
        if self.in_unit > 0 {
            let hasher = std::mem::take(&mut self.hasher);
            self.crcs.push(hasher.finalize());
        }
        DataChecksums::new(build_id, self.unit as u64, self.crcs)
    }

    fn hash(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let take = (self.unit - self.in_unit).min(bytes.len());
            let (head, rest) = bytes.split_at(take);
            if take == self.unit {
                // A whole unit at once: the one-shot hash skips the hasher's state copies.
                self.crcs.push(crc32fast::hash(head));
            } else {
                self.hasher.update(head);
                self.in_unit += take;
                if self.in_unit == self.unit {
                    let hasher = std::mem::take(&mut self.hasher);
                    self.crcs.push(hasher.finalize());
                    self.in_unit = 0;
                }
            }
            bytes = rest;
        }
    }
}

impl<W: Write + ?Sized> Write for ChecksummingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
