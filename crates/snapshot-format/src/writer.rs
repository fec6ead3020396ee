//! Writing snapshots: a diff's compact data file plus its header, or generation 0 of a full
//! memory image.

use std::fs::File;
use std::io::{self, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;

use uuid::Uuid;

use crate::MAX_ENTRIES;
use crate::checksums::{ChecksummingWriter, DataChecksums, MAX_CHECKSUMS, checksum_unit};
use crate::error::{Error, InvalidHeader, Result};
use crate::model::{Header, Mapping, Metadata};
use crate::ops::diff::Diff;
use crate::ops::normalise::continues;
use crate::ops::validate::check_geometry;

/// Bytes read from an image per I/O call.
const WINDOW: usize = 1 << 20;

/// A guest memory image to read pages from: a byte slice, or a file read with `pread`.
pub trait MemoryImage {
    /// Length of the image in bytes.
    fn size(&self) -> io::Result<u64>;

    /// Fills `buf` from the image at `offset`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl MemoryImage for [u8] {
    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let src = self
            .get(start..)
            .and_then(|rest| rest.get(..buf.len()))
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

impl MemoryImage for File {
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
}

/// Writes the diff of one pause and returns the next generation's header.
///
/// The data file (to `data`) holds exactly the `dirty` ranges of `image`, back to back in
/// ascending offset order; the header is `parent` merged with [`Diff::from_page_sets`]`(build_id,
/// .., dirty, empty)`: dirty ranges point into the new file, empty ranges become zero entries,
/// dirty wins over empty. Page sets are byte ranges aligned to the block size (any order;
/// see [`Diff::from_page_sets`]). `image` must be exactly `parent.size()` bytes.
///
/// The header is built, and so checked against every limit a reader enforces, before any data
/// is written. Encoding and storing it is the caller's (see [`crate::snapshot_dir`]).
///
/// The header carries the checksums of the new data file (computed as it is written, one
/// CRC32 per [`crate::checksum_unit`]) and keeps those of the parent's builds it still
/// references ([`Header::next_generation`]).
pub fn write_diff<I, W>(
    image: &I,
    parent: &Header,
    build_id: Uuid,
    dirty: &[Range<u64>],
    empty: &[Range<u64>],
    data: &mut W,
) -> Result<Header>
where
    I: MemoryImage + ?Sized,
    W: Write + ?Sized,
{
    let actual = image
        .size()
        .map_err(|e| Error::io("reading the memory image's length", e))?;
    if actual != parent.size() {
        return Err(Error::ImageSize {
            expected: parent.size(),
            actual,
        });
    }
    let diff = Diff::from_page_sets(build_id, parent.block_size(), parent.size(), dirty, empty)?;
    let header = parent.next_generation(&diff)?;
    let unit = checksum_unit(parent.block_size());
    // The new table's length is known now: a header no reader would accept is refused before
    // any byte is written.
    let kept: u64 = header
        .checksums()
        .iter()
        .map(|t| t.crcs().len() as u64)
        .sum();
    let count = kept.saturating_add(diff.data_len().div_ceil(unit));
    if count > MAX_CHECKSUMS {
        return Err(too_many_checksums(count));
    }
    let mut data = ChecksummingWriter::new(data, unit);
    let mut buf = vec![0u8; WINDOW.min(diff.data_len() as usize)];
    for entry in diff.entries().iter().filter(|e| e.build_id == build_id) {
        let mut done = 0u64;
        while done < entry.length {
            let len = (entry.length - done).min(buf.len() as u64) as usize;
            let offset = entry.offset + done;
            image
                .read_exact_at(&mut buf[..len], offset)
                .map_err(|e| Error::io(format!("reading the memory image at {offset:#x}"), e))?;
            data.write_all(&buf[..len])
                .map_err(|e| Error::io("writing the diff data file", e))?;
            done += len as u64;
        }
    }
    with_table(header, data.finish(build_id))
}

fn too_many_checksums(count: u64) -> Error {
    InvalidHeader::TooManyChecksums {
        count,
        limit: MAX_CHECKSUMS,
    }
    .into()
}

/// `header` with the checksum table of its own build's new data file, when it references it
/// (a diff with no dirty page, or an all-zero image, writes no data and needs no table).
fn with_table(header: Header, table: DataChecksums) -> Result<Header> {
    if table.crcs().is_empty() {
        return Ok(header);
    }
    Ok(header.with_checksums(table)?)
}

/// Writes generation 0 of build `build_id` from a full memory image (a Firecracker memory
/// file) and returns its header.
///
/// All-zero blocks become zero entries; the data file (to `data`) holds only the non-zero
/// blocks, back to back in ascending offset order. The image's length must be a multiple of
/// `block_size` and within [`crate::MAX_SIZE`]. Memory use is bounded (1 MiB buffers) whatever
/// the block size. Data goes out one block at a time: give a `BufWriter` when `data` is a file.
/// The header carries the data file's checksums, computed as it is written; an image with
/// more non-zero data than [`crate::MAX_CHECKSUMS`] units (1 TiB at 4 KiB) is refused as soon
/// as the writer gets there.
pub fn write_generation_zero<I, W>(
    image: &I,
    block_size: u64,
    build_id: Uuid,
    data: &mut W,
) -> Result<Header>
where
    I: MemoryImage + ?Sized,
    W: Write + ?Sized,
{
    let size = image
        .size()
        .map_err(|e| Error::io("reading the memory image's length", e))?;
    let metadata = Metadata::generation_zero(build_id, block_size, size);
    // Check the geometry before reading anything, so a bad size costs no I/O.
    check_geometry(block_size, size)?;
    if build_id.is_nil() {
        return Err(InvalidHeader::NilBuildId.into());
    }

    // A block is read in pieces of at most WINDOW bytes; the pieces of a block before its first
    // non-zero byte are all zero, so they need not be kept: zeros are written in their place.
    let piece_len = block_size.min(WINDOW as u64) as usize;
    let mut data = ChecksummingWriter::new(data, checksum_unit(block_size));
    let mut window = vec![0u8; (WINDOW as u64).min(size) as usize];
    let zeros = vec![0u8; piece_len];
    let mut entries: Vec<Mapping> = Vec::new();
    let mut storage = 0u64;
    let mut block = BlockScan::default();
    let mut position = 0u64;
    let mut scanned = 0u64;
    while position < size {
        let len = (size - position).min(window.len() as u64) as usize;
        let buf = &mut window[..len];
        image
            .read_exact_at(buf, position)
            .map_err(|e| Error::io(format!("reading the memory image at {position:#x}"), e))?;
        for piece in buf.chunks(piece_len) {
            if !block.non_zero && is_zero(piece) {
                block.zero_prefix += piece.len() as u64;
            } else {
                if !block.non_zero {
                    block.non_zero = true;
                    write_zeros(&mut data, &zeros, block.zero_prefix)?;
                }
                data.write_all(piece)
                    .map_err(|e| Error::io("writing the generation 0 data file", e))?;
            }
            block.seen += piece.len() as u64;
            scanned += piece.len() as u64;
            if block.seen == block_size {
                let offset = scanned - block_size;
                let entry = if block.non_zero {
                    storage += block_size;
                    Mapping::data(offset, block_size, build_id, storage - block_size)
                } else {
                    Mapping::zero(offset, block_size)
                };
                push_joined(&mut entries, entry);
                if data.count() > MAX_CHECKSUMS {
                    return Err(too_many_checksums(data.count()));
                }
                if entries.len() as u64 > MAX_ENTRIES {
                    // Stop early rather than build a mapping no reader would accept.
                    return Err(InvalidHeader::TooManyEntries {
                        count: entries.len() as u64,
                        limit: MAX_ENTRIES,
                    }
                    .into());
                }
                block = BlockScan::default();
            }
        }
        position += len as u64;
    }
    let header = Header::new(metadata, entries)?;
    with_table(header, data.finish(build_id))
}

/// Progress through the current block.
#[derive(Default)]
struct BlockScan {
    /// Bytes of the block seen so far.
    seen: u64,
    /// Leading bytes known to be zero and not yet written.
    zero_prefix: u64,
    /// Whether a non-zero byte was seen (the block is being written).
    non_zero: bool,
}

fn write_zeros<W: Write + ?Sized>(data: &mut W, zeros: &[u8], mut len: u64) -> Result<()> {
    while len > 0 {
        let n = len.min(zeros.len() as u64) as usize;
        data.write_all(&zeros[..n])
            .map_err(|e| Error::io("writing the generation 0 data file", e))?;
        len -= n as u64;
    }
    Ok(())
}

/// Appends `entry`, extending the last entry instead when it simply continues it.
fn push_joined(entries: &mut Vec<Mapping>, entry: Mapping) {
    match entries.last_mut() {
        Some(last) if continues(last, &entry) => last.length += entry.length,
        _ => entries.push(entry),
    }
}

/// True if every byte is zero. Folds 64-byte chunks so the compiler can vectorise.
fn is_zero(bytes: &[u8]) -> bool {
    let mut chunks = bytes.chunks_exact(64);
    let whole = chunks
        .by_ref()
        .all(|chunk| chunk.iter().fold(0u8, |acc, &b| acc | b) == 0);
    whole && chunks.remainder().iter().all(|&b| b == 0)
}
