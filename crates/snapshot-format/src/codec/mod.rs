//! Binary codecs: the native format and E2B's uncompressed orchestrator layout.

mod e2b;
mod native;

pub use e2b::{E2B_ENTRY_LEN, E2B_METADATA_LEN};
pub use native::{NATIVE_MAGIC, NATIVE_VERSION};

use uuid::Uuid;

use crate::error::Result;
use crate::model::{Header, Mapping};

/// The two header encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeaderFormat {
    /// This crate's format: magic, version, explicit entry count, data checksum tables, CRC32.
    Native,
    /// E2B's orchestrator layout, versions 1 to 3 (uncompressed): metadata then entries to EOF.
    /// It has no place for data checksums: encoding drops them, decoding gives none.
    E2b,
}

impl HeaderFormat {
    /// The format of an encoded header, told apart by [`NATIVE_MAGIC`]: an E2B header starts
    /// with a small little-endian version number, which can never spell the magic.
    pub fn detect(bytes: &[u8]) -> HeaderFormat {
        if bytes.starts_with(&NATIVE_MAGIC) {
            HeaderFormat::Native
        } else {
            HeaderFormat::E2b
        }
    }
}

impl Header {
    /// Decodes a header in either format (see [`HeaderFormat::detect`]).
    pub fn decode(bytes: &[u8]) -> Result<Header> {
        match HeaderFormat::detect(bytes) {
            HeaderFormat::Native => Header::decode_native(bytes),
            HeaderFormat::E2b => Header::decode_e2b(bytes),
        }
    }

    /// Encodes the header in `format`.
    pub fn encode(&self, format: HeaderFormat) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(format, &mut out);
        out
    }

    /// Appends the header encoded in `format` to `out` (reusing its capacity).
    pub fn encode_into(&self, format: HeaderFormat, out: &mut Vec<u8>) {
        match format {
            HeaderFormat::Native => self.encode_native_into(out),
            HeaderFormat::E2b => self.encode_e2b_into(out),
        }
    }
}

/// Length of one encoded entry in both formats.
const ENTRY_LEN: usize = 40;

/// Little-endian reader over a slice whose length the caller has already checked.
struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes }
    }

    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        if let Some((head, rest)) = self.bytes.split_first_chunk::<N>() {
            out = *head;
            self.bytes = rest;
        }
        out
    }

    /// Skips `n` bytes (all that is left if fewer).
    fn skip(&mut self, n: usize) {
        self.bytes = self.bytes.get(n..).unwrap_or_default();
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }

    fn uuid(&mut self) -> Uuid {
        Uuid::from_bytes(self.take())
    }

    fn entry(&mut self) -> Mapping {
        Mapping {
            offset: self.u64(),
            length: self.u64(),
            build_id: self.uuid(),
            storage_offset: self.u64(),
        }
    }
}

/// Appends entries in the shared 40-byte layout.
fn put_entries(out: &mut Vec<u8>, entries: &[Mapping]) {
    out.reserve(entries.len() * ENTRY_LEN);
    for entry in entries {
        // Assembled on the stack, then appended once: one capacity check per entry.
        let mut raw = [0u8; ENTRY_LEN];
        raw[..8].copy_from_slice(&entry.offset.to_le_bytes());
        raw[8..16].copy_from_slice(&entry.length.to_le_bytes());
        raw[16..32].copy_from_slice(entry.build_id.as_bytes());
        raw[32..].copy_from_slice(&entry.storage_offset.to_le_bytes());
        out.extend_from_slice(&raw);
    }
}
