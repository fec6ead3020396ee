//! E2B's orchestrator header layout, versions 1 to 3, uncompressed.
//!
//! ```text
//! 0   u64  version   (low 16 bits; 1..=3)
//! 8   u64  block size
//! 16  u64  size
//! 24  u64  generation
//! 32  [16] build UUID
//! 48  [16] base build UUID
//! 64  40-byte entries until end of file, no count:
//!     u64 offset, u64 length, [16] build UUID, u64 build storage offset
//! ```
//! All integers little-endian; UUIDs as their 16 bytes in RFC 4122 order.

use crate::MAX_ENTRIES;
use crate::codec::{Cursor, ENTRY_LEN, put_entries};
use crate::error::{Error, Result};
use crate::model::{Header, Metadata};

/// Length of the E2B metadata block.
pub const E2B_METADATA_LEN: usize = 64;

/// Length of one E2B mapping entry.
pub const E2B_ENTRY_LEN: usize = ENTRY_LEN;

impl Header {
    /// Decodes E2B's uncompressed layout (versions 1 to 3; the version's upper 48 bits are
    /// ignored), then validates it like any header.
    pub fn decode_e2b(bytes: &[u8]) -> Result<Header> {
        let Some((meta, rest)) = bytes.split_at_checked(E2B_METADATA_LEN) else {
            return Err(Error::Truncated {
                what: "E2B metadata block",
                needed: E2B_METADATA_LEN as u64,
                available: bytes.len() as u64,
            });
        };
        let mut cursor = Cursor::new(meta);
        let raw_version = cursor.u64();
        let version = (raw_version & 0xffff) as u16;
        if !(1..=3).contains(&version) {
            return Err(Error::UnsupportedVersion {
                format: "E2B header",
                version: u64::from(version),
                supported: "1, 2, 3",
            });
        }
        let metadata = Metadata {
            version,
            block_size: cursor.u64(),
            size: cursor.u64(),
            generation: cursor.u64(),
            build_id: cursor.uuid(),
            base_build_id: cursor.uuid(),
        };
        let trailing = rest.len() % ENTRY_LEN;
        if trailing != 0 {
            return Err(Error::PartialEntry {
                trailing: trailing as u64,
            });
        }
        let count = (rest.len() / ENTRY_LEN) as u64;
        if count > MAX_ENTRIES {
            return Err(Error::TooManyEntries {
                count,
                limit: MAX_ENTRIES,
            });
        }
        let entries = rest
            .chunks_exact(ENTRY_LEN)
            .map(|chunk| Cursor::new(chunk).entry())
            .collect();
        Ok(Header::new(metadata, entries)?)
    }

    /// Encodes E2B's uncompressed layout with the metadata's version.
    pub fn encode_e2b(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(E2B_METADATA_LEN + ENTRY_LEN * self.entries().len());
        self.encode_e2b_into(&mut out);
        out
    }

    /// Appends the E2B encoding to `out`.
    pub fn encode_e2b_into(&self, out: &mut Vec<u8>) {
        let m = self.metadata();
        out.extend_from_slice(&u64::from(m.version).to_le_bytes());
        out.extend_from_slice(&m.block_size.to_le_bytes());
        out.extend_from_slice(&m.size.to_le_bytes());
        out.extend_from_slice(&m.generation.to_le_bytes());
        out.extend_from_slice(m.build_id.as_bytes());
        out.extend_from_slice(m.base_build_id.as_bytes());
        put_entries(out, self.entries());
    }
}
