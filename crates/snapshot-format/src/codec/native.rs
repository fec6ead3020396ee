//! The native header format: E2B's fields plus a magic, a version, an explicit entry count and
//! a CRC32, so truncation and corruption are caught before anything is trusted.
//!
//! ```text
//! 0   [8]  magic "UFSNAPHD"
//! 8   u16  native format version (1)
//! 10  u16  header version (Metadata::version, 1..=3)
//! 12  u32  reserved, zero
//! 16  u64  block size
//! 24  u64  size
//! 32  u64  generation
//! 40  [16] build UUID
//! 56  [16] base build UUID
//! 72  u64  entry count N
//! 80  N x 40-byte entries: u64 offset, u64 length, [16] build UUID, u64 storage offset
//! ..  u32  CRC32 (IEEE) of every byte before it
//! ```
//! All integers little-endian. The file is exactly `84 + 40 N` bytes.

use crate::MAX_ENTRIES;
use crate::codec::{Cursor, ENTRY_LEN, put_entries};
use crate::error::{Error, Result};
use crate::model::{Header, Metadata};

/// First eight bytes of a native header.
pub const NATIVE_MAGIC: [u8; 8] = *b"UFSNAPHD";

/// Native format version this crate reads and writes.
pub const NATIVE_VERSION: u16 = 1;

/// Bytes before the entries.
const FIXED_LEN: usize = 80;
/// Bytes after the entries (the CRC).
const TRAILER_LEN: usize = 4;

impl Header {
    /// Decodes the native format. Checks, in order: length of the fixed part, magic, version,
    /// reserved field, entry count against [`MAX_ENTRIES`] and against the input's length
    /// (before allocating), checksum; then validates the header.
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
        if native_version != NATIVE_VERSION {
            return Err(Error::UnsupportedVersion {
                format: "native header",
                version: u64::from(native_version),
                supported: "1",
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
        let expected = (FIXED_LEN + TRAILER_LEN) as u64 + count * ENTRY_LEN as u64;
        if expected != available {
            return Err(Error::LengthMismatch {
                count,
                expected,
                actual: available,
            });
        }
        let (body, crc) = bytes.split_at(bytes.len() - TRAILER_LEN);
        let stored = Cursor::new(crc).u32();
        let computed = crc32fast::hash(body);
        if stored != computed {
            return Err(Error::ChecksumMismatch { stored, computed });
        }
        let entries = body[FIXED_LEN..]
            .chunks_exact(ENTRY_LEN)
            .map(|chunk| Cursor::new(chunk).entry())
            .collect();
        Ok(Header::new(metadata, entries)?)
    }

    /// Encodes the native format.
    pub fn encode_native(&self) -> Vec<u8> {
        let len = FIXED_LEN + ENTRY_LEN * self.entries().len() + TRAILER_LEN;
        let mut out = Vec::with_capacity(len);
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
        let crc = crc32fast::hash(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
    }
}
