//! The layered source: bytes of any logical range, served from `mmap`ed build data files or
//! read with `pread` and verified against the header's data checksums.

mod mapped;
mod read;
mod sparse;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::model::{Header, Metadata};

/// Marks an entry with no file (a zero run) in `LayeredSource::entry_file`.
const NO_FILE: u32 = u32::MAX;

/// One piece of a logical range, from [`LayeredSource::bytes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Bytes viewed in place in a build's mapped data file (zero-copy; keeps the map alive).
    Data(Bytes),
    /// A run of this many zero bytes (no I/O).
    Zero(u64),
}

impl Segment {
    /// Length of the piece in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Segment::Data(bytes) => bytes.len() as u64,
            Segment::Zero(len) => *len,
        }
    }

    /// True for a zero-length piece (never produced by [`LayeredSource::bytes`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The first piece of a range, borrowed, from [`LayeredSource::chunk`]: the fault path's view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk<'a> {
    /// Bytes in a build's mapped data file.
    Data(&'a [u8]),
    /// A run of this many zero bytes.
    Zero(u64),
}

impl Chunk<'_> {
    /// Length of the piece in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Chunk::Data(bytes) => bytes.len() as u64,
            Chunk::Zero(len) => *len,
        }
    }

    /// True for a zero-length piece (never produced by [`LayeredSource::chunk`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A header plus the data files of every build it references, each mapped read-only once.
#[derive(Debug, Clone)]
pub struct LayeredSource {
    header: Header,
    /// Mapped files, one per referenced build.
    files: Vec<BuildFile>,
    /// For each header entry, its file's index in `files`, or `NO_FILE` for zero runs; saves a
    /// UUID hash lookup per fault.
    entry_file: Vec<u32>,
}

#[derive(Debug, Clone)]
struct BuildFile {
    build_id: Uuid,
    path: PathBuf,
    /// The open file, for `pread` and for checking it is unchanged.
    file: Arc<File>,
    /// Its size and modification time when opened.
    opened: FileStamp,
    /// The file's mapping: its bytes, and which of its pages are cached.
    map: mapped::Mapped,
    /// Index of its checksum table in the header's, if it has one: its reads are verified
    /// against it instead of checking the file is unchanged.
    table: Option<usize>,
    /// Whether its file system answers page-cache-only reads (`RWF_NOWAIT`; tmpfs does not).
    nowait: bool,
    /// Whether its file system keeps its pages in memory (tmpfs, ramfs): reads never wait.
    in_memory: bool,
}

/// What identifies a file's contents cheaply: its size and modification time (`fstat` of
/// the open file, so a file replaced by a rename keeps its old, intact identity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    size: u64,
    mtime: (i64, i64),
}

impl FileStamp {
    fn of(file: &File) -> std::io::Result<FileStamp> {
        use std::os::unix::fs::MetadataExt as _;
        let meta = file.metadata()?;
        Ok(FileStamp {
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
        })
    }
}

impl BuildFile {
    /// An error unless the file is as it was when opened (one `fstat`).
    fn check_unchanged(&self) -> Result<()> {
        let now = FileStamp::of(&self.file)
            .map_err(|e| Error::io(format!("checking data file {}", self.path.display()), e))?;
        if now == self.opened {
            return Ok(());
        }
        Err(Error::FileChanged {
            path: self.path.clone(),
            detail: format!(
                "size {} -> {}, mtime {}.{:09} -> {}.{:09}",
                self.opened.size,
                now.size,
                self.opened.mtime.0,
                self.opened.mtime.1,
                now.mtime.0,
                now.mtime.1
            ),
        })
    }
}

impl LayeredSource {
    /// Maps the data file of every build `header` references (`files`: build UUID -> path;
    /// extra builds are ignored) and checks each is long enough for the storage ranges placed in
    /// it: [`Error::MissingBuildFile`] or [`Error::DataFileTooShort`] otherwise. A file with a
    /// checksum table must be exactly as long as the table describes: [`Error::DataFileLength`]
    /// otherwise (it was truncated or extended since it was written).
    pub fn open(header: Header, files: &HashMap<Uuid, PathBuf>) -> Result<Self> {
        let mut mapped = Vec::new();
        let mut file_index: HashMap<Uuid, u32> = HashMap::new();
        for (build, needed) in header.storage_extents() {
            let path = files.get(&build).ok_or(Error::MissingBuildFile { build })?;
            let (file, map) = mapped::map_read_only(path)?;
            let actual = map.bytes.len() as u64;
            if actual < needed {
                return Err(Error::DataFileTooShort {
                    build,
                    path: path.clone(),
                    needed,
                    actual,
                });
            }
            let table = header
                .checksums()
                .binary_search_by_key(&build, crate::DataChecksums::build_id)
                .ok();
            if let Some(checksums) = table.and_then(|at| header.checksums().get(at))
                && checksums.covered_len() != actual
            {
                return Err(Error::DataFileLength {
                    build,
                    path: path.clone(),
                    expected: checksums.covered_len(),
                    actual,
                });
            }
            // Entries are capped at 2^26, so build indexes fit in u32 below NO_FILE.
            file_index.insert(build, mapped.len() as u32);
            let nowait = read::answers_nowait(&file, actual);
            let in_memory = read::in_memory(&file);
            let opened = FileStamp::of(&file)
                .map_err(|e| Error::io(format!("inspecting data file {}", path.display()), e))?;
            mapped.push(BuildFile {
                build_id: build,
                path: path.clone(),
                file: Arc::new(file),
                opened,
                map,
                table,
                nowait,
                in_memory,
            });
        }
        let entry_file = header
            .entries()
            .iter()
            .map(|e| file_index.get(&e.build_id).copied().unwrap_or(NO_FILE))
            .collect();
        Ok(LayeredSource {
            header,
            files: mapped,
            entry_file,
        })
    }

    /// Serves a plain memory file (a Firecracker snapshot memory file, no header) as generation
    /// 0 of a fresh build: its data extents map to the file itself, its holes (found with
    /// `SEEK_DATA`/`SEEK_HOLE`, widened to whole blocks) are zero runs, so a sparse file's holes
    /// are served without a read and without filling the page cache. A file system without
    /// hole reporting shows the whole file as data. The length must be a multiple of
    /// `block_size`.
    pub fn open_memory_file(path: &Path, block_size: u64) -> Result<Self> {
        let context = || format!("finding the data and holes of {}", path.display());
        let file = File::open(path).map_err(|e| Error::io(context(), e))?;
        let len = file.metadata().map_err(|e| Error::io(context(), e))?.len();
        let build = Uuid::new_v4();
        // Checks the geometry (length a multiple of the block size) before any seek.
        Header::full_image(build, block_size, len)?;
        let extents =
            sparse::data_extents(&file, len, block_size).map_err(|e| Error::io(context(), e))?;
        let header = Header::new(
            Metadata::generation_zero(build, block_size, len),
            sparse::mappings(&extents, len, build),
        )?;
        LayeredSource::open(header, &HashMap::from([(build, path.to_path_buf())]))
    }

    /// The header being served.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Data file path of `build`, if the header references it.
    pub fn data_path(&self, build: Uuid) -> Option<&Path> {
        self.files
            .iter()
            .find(|f| f.build_id == build)
            .map(|f| f.path.as_path())
    }

    /// The longest piece starting at `offset` that is one run, at most `max_len` bytes: a slice
    /// of the mapped file or a zero marker. No allocation; the fault path calls it in a loop
    /// until its page range is filled (a range crossing entries takes several calls).
    ///
    /// Errors with [`Error::OutOfRange`] if `offset` is at or past the size or `max_len` is 0.
    ///
    /// A data piece comes only from a file still as it was when opened (size and modification
    /// time, one `fstat`): [`Error::FileChanged`] otherwise, so bytes of a file rewritten or
    /// truncated underneath are never handed out. The slice is not checked against the data
    /// checksums (that would mean reading the mapping here, where a lost page raises SIGBUS):
    /// a caller that must serve only verified bytes reads with [`LayeredSource::read_into`]
    /// or [`LayeredSource::read_resident`].
    #[inline]
    pub fn chunk(&self, offset: u64, max_len: u64) -> Result<Chunk<'_>> {
        Ok(match self.locate(offset, max_len)? {
            Piece::Zero(len) => Chunk::Zero(len),
            Piece::File(file, range) => {
                file.check_unchanged()?;
                Chunk::Data(&file.map.bytes[range])
            }
        })
    }

    /// The bytes of `[offset, offset + len)` as one slice of a data file's mapping whose pages
    /// are all in the page cache now (`mincore`), for the kernel to copy from directly in bulk
    /// installs, without a read into a buffer first; the file is checked unchanged first.
    /// `None` when the range is not one piece of one data file, when a page of it is not in
    /// the page cache (read it with [`LayeredSource::read_into`], which waits for storage
    /// outside the caller's locks), or when the file has checksums (its bytes must be read
    /// and verified). A page evicted between this answer and the copy is read by the kernel
    /// inside the copy; one the file lost since makes the copy fail with EFAULT.
    pub fn resident(&self, offset: u64, len: u64) -> Result<Option<&[u8]>> {
        let Piece::File(file, range) = self.locate(offset, len)? else {
            return Ok(None);
        };
        if range.len() as u64 != len || file.table.is_some() {
            return Ok(None);
        }
        file.check_unchanged()?;
        let resident = file
            .map
            .is_resident(range.start, range.len())
            .map_err(|e| {
                Error::io(
                    format!(
                        "asking which of {len} bytes at {:#x} of data file {} are cached (image \
                     offset {offset:#x})",
                        range.start,
                        file.path.display()
                    ),
                    e,
                )
            })?;
        Ok(resident.then(|| &file.map.bytes[range]))
    }

    /// The bytes of `[offset, offset + length)` as pieces in order: zero-copy views of the
    /// mapped files and zero runs. [`Error::OutOfRange`] if the range leaves `[0, size)`.
    pub fn bytes(&self, offset: u64, length: u64) -> Result<Vec<Segment>> {
        self.header.read_plan(offset, length)?;
        let mut segments = Vec::new();
        let (mut position, end) = (offset, offset + length);
        while position < end {
            let segment = match self.locate(position, end - position)? {
                Piece::Zero(len) => Segment::Zero(len),
                Piece::File(file, range) => {
                    file.check_unchanged()?;
                    Segment::Data(file.map.bytes.slice(range))
                }
            };
            position += segment.len();
            segments.push(segment);
        }
        Ok(segments)
    }

    /// Resolves the run at `offset` (at most `max_len` bytes) to a zero run or a checked byte
    /// range of a mapped file.
    #[inline]
    fn locate(&self, offset: u64, max_len: u64) -> Result<Piece<'_>> {
        let out_of_range = || Error::OutOfRange {
            offset,
            length: max_len,
            size: self.header.size(),
        };
        if max_len == 0 {
            return Err(out_of_range());
        }
        let index = self.header.entry_index(offset).ok_or_else(out_of_range)?;
        let entry = self.header.entries().get(index).ok_or_else(out_of_range)?;
        let into = offset - entry.offset;
        let len = (entry.length - into).min(max_len);
        let file = match self.entry_file.get(index) {
            Some(&NO_FILE) | None => return Ok(Piece::Zero(len)),
            Some(&file) => self.files.get(file as usize).ok_or_else(out_of_range)?,
        };
        // Checked at open: storage_offset + length <= file length, so the range is in bounds;
        // the check here keeps a broken invariant an error instead of a panic.
        let start = (entry.storage_offset + into) as usize;
        let range = start..start + len as usize;
        if range.end > file.map.bytes.len() {
            return Err(out_of_range());
        }
        Ok(Piece::File(file, range))
    }
}

/// A resolved run: zeros, or a byte range of one mapped file.
enum Piece<'a> {
    Zero(u64),
    File(&'a BuildFile, std::ops::Range<usize>),
}
