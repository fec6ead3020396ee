//! The native header format: E2B's fields plus a magic, a version, an explicit entry count,
//! the data checksum tables and a CRC32, so truncation and corruption are caught before
//! anything is trusted.
//!
//! ```text
//! 0   [8]  magic "UFSNAPHD"
//! 8   u16  native format version (2; version 1 is still read)
//! 10  u16  header version (Metadata::version, 1..=3)
//! 12  u32  reserved, zero
//! 16  u64  block size
//! 24  u64  size
//! 32  u64  generation
//! 40  [16] build UUID
//! 56  [16] base build UUID
//! 72  u64  entry count N
//! 80  N x 40-byte entries: u64 offset, u64 length, [16] build UUID, u64 storage offset
//! ..  u64  checksum table count T                                  (version 2 on)
//! ..  T tables, by ascending build UUID:                            (version 2 on)
//!       [16] build UUID, u64 unit, u64 count C,
//!       C x u32 CRC32 (IEEE) of each unit of that build's data file
//! ..  u32  CRC32 (IEEE) of every byte before it
//! ```
//! All integers little-endian. Version 1 is exactly `84 + 40 N` bytes; version 2 is
//! `92 + 40 N + sum(32 + 4 C)`.

use crate::MAX_ENTRIES;
use crate::checksums::{DataChecksums, MAX_CHECKSUMS};
use crate::codec::{Cursor, ENTRY_LEN, put_entries};
use crate::error::{Error, InvalidHeader, Result};
use crate::model::{Header, Metadata};

/// First eight bytes of a native header.
pub const NATIVE_MAGIC: [u8; 8] = *b"UFSNAPHD";

/// Native format version this crate writes (it reads 1 and 2; 1 has no checksum tables).
pub const NATIVE_VERSION: u16 = 2;

/// Bytes before the entries.
const FIXED_LEN: usize = 80;
/// Bytes after everything else (the CRC).
const TRAILER_LEN: usize = 4;
/// The table count (version 2 on).
const TABLE_COUNT_LEN: usize = 8;
/// A table's build UUID, unit and count.
const TABLE_HEAD_LEN: usize = 32;

impl Header {
    /// Decodes the native format, versions 1 and 2. Checks, in order: length of the fixed part,
    /// magic, version, reserved field, entry count against [`MAX_ENTRIES`], the length the
    /// entry and checksum counts imply against the input's (every count is checked against
    /// the bytes present before anything is allocated), checksum; then validates the header.
    pub fn decode_native(bytes: &[u8]) -> Result<Header> {
        let available = bytes.len() as u64;
        if bytes.len() < FIXED_LEN + TRAILER_LEN {
            return Err(Error::Truncated {
                what: "native header",
                needed: (FIXED_LEN + TRAILER_LEN) as u64,
                available,
            });
        }
        let mut cursor = Cursor::new(bytes);
        let magic: [u8; 8] = cursor.take();
        if magic != NATIVE_MAGIC {
            return Err(Error::BadMagic { found: magic });
        }
        let native_version = cursor.u16();
        if !(1..=NATIVE_VERSION).contains(&native_version) {
            return Err(Error::UnsupportedVersion {
                format: "native header",
                version: u64::from(native_version),
                supported: "1, 2",
            });
        }
        let version = cursor.u16();
        let reserved = cursor.u32();
        if reserved != 0 {
            return Err(Error::ReservedNotZero { value: reserved });
        }
        let metadata = Metadata {
            version,
            block_size: cursor.u64(),
            size: cursor.u64(),
            generation: cursor.u64(),
            build_id: cursor.uuid(),
            base_build_id: cursor.uuid(),
        };
        let count = cursor.u64();
        if count > MAX_ENTRIES {
            return Err(Error::TooManyEntries {
                count,
                limit: MAX_ENTRIES,
            });
        }
        // count <= 2^26, so this cannot overflow.
        let entries_end = FIXED_LEN as u64 + count * ENTRY_LEN as u64;
        let mismatch = |expected: u64| Error::LengthMismatch {
            count,
            expected,
            actual: available,
        };
        let body_len = available - TRAILER_LEN as u64;
        if native_version == 1 {
            if entries_end != body_len {
                return Err(mismatch(entries_end + TRAILER_LEN as u64));
            }
        } else {
            if entries_end + TABLE_COUNT_LEN as u64 > body_len {
                return Err(mismatch(
                    entries_end + (TABLE_COUNT_LEN + TRAILER_LEN) as u64,
                ));
            }
            let tables_end = measure_tables(&bytes[entries_end as usize..body_len as usize])
                .map_err(|needed| match needed {
                    TablesFit::TooMany(count) => Error::Invalid(InvalidHeader::TooManyChecksums {
                        count,
                        limit: MAX_CHECKSUMS,
                    }),
                    TablesFit::Length(len) => mismatch(entries_end + len + TRAILER_LEN as u64),
                })?;
            if entries_end + tables_end != body_len {
                return Err(mismatch(entries_end + tables_end + TRAILER_LEN as u64));
            }
        }
        let (body, crc) = bytes.split_at(body_len as usize);
        let stored = Cursor::new(crc).u32();
        let computed = crc32fast::hash(body);
        if stored != computed {
            return Err(Error::ChecksumMismatch { stored, computed });
        }
        let (entry_bytes, table_bytes) =
            body[FIXED_LEN..].split_at(entries_end as usize - FIXED_LEN);
        let entries = entry_bytes
            .chunks_exact(ENTRY_LEN)
            .map(|chunk| Cursor::new(chunk).entry())
            .collect();
        let tables = if native_version == 1 {
            Vec::new()
        } else {
            read_tables(table_bytes)
        };
        Ok(Header::new_with_checksums(metadata, entries, tables)?)
    }

    /// Encodes the native format (version [`NATIVE_VERSION`]).
    pub fn encode_native(&self) -> Vec<u8> {
        let tables: usize = self
            .checksums()
            .iter()
            .map(|t| TABLE_HEAD_LEN + 4 * t.crcs().len())
            .sum();
        let len = FIXED_LEN + ENTRY_LEN * self.entries().len() + TABLE_COUNT_LEN + tables;
        let mut out = Vec::with_capacity(len + TRAILER_LEN);
        self.encode_native_into(&mut out);
        out
    }

    /// Appends the native encoding to `out`.
    pub fn encode_native_into(&self, out: &mut Vec<u8>) {
        let m = self.metadata();
        let entries = self.entries();
        let start = out.len();
        out.extend_from_slice(&NATIVE_MAGIC);
        out.extend_from_slice(&NATIVE_VERSION.to_le_bytes());
        out.extend_from_slice(&m.version.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&m.block_size.to_le_bytes());
        out.extend_from_slice(&m.size.to_le_bytes());
        out.extend_from_slice(&m.generation.to_le_bytes());
        out.extend_from_slice(m.build_id.as_bytes());
        out.extend_from_slice(m.base_build_id.as_bytes());
        out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
        put_entries(out, entries);
        out.extend_from_slice(&(self.checksums().len() as u64).to_le_bytes());
        for table in self.checksums() {
            out.extend_from_slice(table.build_id().as_bytes());
            out.extend_from_slice(&table.unit().to_le_bytes());
            out.extend_from_slice(&(table.crcs().len() as u64).to_le_bytes());
            out.reserve(4 * table.crcs().len());
            for crc in table.crcs() {
                out.extend_from_slice(&crc.to_le_bytes());
            }
        }
        let crc = crc32fast::hash(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
    }
}

/// Why the checksum tables do not fit the bytes given for them.
enum TablesFit {
    /// More checksums than [`MAX_CHECKSUMS`] (the count so far).
    TooMany(u64),
    /// The tables' counts need at least this many bytes from the table count on.
    Length(u64),
}

/// The length of the table count and tables at the start of `bytes`, walking the counts
/// without allocating; each count is checked against the bytes left before it is used.
fn measure_tables(bytes: &[u8]) -> Result<u64, TablesFit> {
    let mut cursor = Cursor::new(bytes);
    let tables = cursor.u64();
    let mut at = TABLE_COUNT_LEN as u64;
    let mut checksums = 0u64;
    let left = bytes.len() as u64;
    for _ in 0..tables {
        // Each table takes at least TABLE_HEAD_LEN bytes, so this loop ends within
        // `left / TABLE_HEAD_LEN` turns whatever the count says.
        if at + TABLE_HEAD_LEN as u64 > left {
            return Err(TablesFit::Length(at + TABLE_HEAD_LEN as u64));
        }
        let _build: [u8; 16] = cursor.take();
        let _unit = cursor.u64();
        let count = cursor.u64();
        checksums = checksums.saturating_add(count);
        if checksums > MAX_CHECKSUMS {
            return Err(TablesFit::TooMany(checksums));
        }
        // count <= 2^28 here, so neither product nor sum overflows.
        at += TABLE_HEAD_LEN as u64 + 4 * count;
        if at > left {
            return Err(TablesFit::Length(at));
        }
        cursor.skip(4 * count as usize);
    }
    Ok(at)
}

/// Reads the tables [`measure_tables`] has measured.
fn read_tables(bytes: &[u8]) -> Vec<DataChecksums> {
    let mut cursor = Cursor::new(bytes);
    let tables = cursor.u64();
    let mut out = Vec::new();
    for _ in 0..tables {
        let build = cursor.uuid();
        let unit = cursor.u64();
        let count = cursor.u64() as usize;
        let crcs = (0..count).map(|_| cursor.u32()).collect();
        out.push(DataChecksums::new(build, unit, crcs));
    }
    out
}
