//! E2B interop codec: headers written byte by byte from the layout description, every bad-input
//! path, round trips and a fuzz-style proptest over arbitrary bytes.

use proptest::prelude::*;
use snapshot_format::{Error, Header, HeaderFormat, InvalidHeader, Mapping, Metadata};
use uuid::Uuid;

use crate::common::arb_header;

/// One 40-byte entry: u64 offset, u64 length, 16-byte build UUID, u64 storage offset.
type RawEntry = (u64, u64, [u8; 16], u64);

/// The layout, field by field: u64 version, u64 block size, u64 size, u64 generation, 16-byte
/// build UUID, 16-byte base build UUID, then 40-byte entries to end of file. Little-endian.
fn e2b_bytes(
    version: u64,
    block: u64,
    size: u64,
    generation: u64,
    entries: &[RawEntry],
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&block.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(&[0xb1; 16]);
    out.extend_from_slice(&[0xba; 16]);
    assert_eq!(out.len(), 64);
    for &(offset, length, build, storage) in entries {
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&length.to_le_bytes());
        out.extend_from_slice(&build);
        out.extend_from_slice(&storage.to_le_bytes());
    }
    out
}

const B: [u8; 16] = [0xb1; 16];
const NIL: [u8; 16] = [0; 16];

fn good_entries() -> Vec<RawEntry> {
    vec![
        (0, 0x2000, B, 0x1000),
        (0x2000, 0x1000, NIL, 0),
        (0x3000, 0x1000, [0xba; 16], 0),
    ]
}

#[test]
fn decodes_a_handwritten_header_for_each_version() {
    for version in 1..=3u64 {
        let bytes = e2b_bytes(version, 4096, 0x4000, 2, &good_entries());
        let header = Header::decode_e2b(&bytes).unwrap();
        assert_eq!(
            *header.metadata(),
            Metadata {
                version: version as u16,
                block_size: 4096,
                size: 0x4000,
                generation: 2,
                build_id: Uuid::from_bytes(B),
                base_build_id: Uuid::from_bytes([0xba; 16]),
            }
        );
        assert_eq!(
            header.entries(),
            &[
                Mapping::data(0, 0x2000, Uuid::from_bytes(B), 0x1000),
                Mapping::zero(0x2000, 0x1000),
                Mapping::data(0x3000, 0x1000, Uuid::from_bytes([0xba; 16]), 0),
            ]
        );
        // Writing gives back the same bytes, and auto-detection picks E2B.
        assert_eq!(header.encode_e2b(), bytes);
        assert_eq!(HeaderFormat::detect(&bytes), HeaderFormat::E2b);
        assert_eq!(Header::decode(&bytes).unwrap(), header);
    }
}

#[test]
fn version_uses_only_the_low_16_bits() {
    let bytes = e2b_bytes(0xdead_0000_0000_0002, 4096, 0x4000, 0, &good_entries());
    assert_eq!(Header::decode_e2b(&bytes).unwrap().metadata().version, 2);
}

#[test]
fn rejects_unknown_versions() {
    for version in [0u64, 4, 0xffff, 0x1_0000] {
        let bytes = e2b_bytes(version, 4096, 0x4000, 0, &good_entries());
        match Header::decode_e2b(&bytes) {
            Err(Error::UnsupportedVersion { version: v, .. }) => assert_eq!(v, version & 0xffff),
            other => panic!("version {version}: {other:?}"),
        }
    }
}

#[test]
fn rejects_truncated_metadata_and_partial_entries() {
    let bytes = e2b_bytes(3, 4096, 0x4000, 0, &good_entries());
    for cut in [0, 1, 63] {
        assert!(matches!(
            Header::decode_e2b(&bytes[..cut]),
            Err(Error::Truncated { needed: 64, .. })
        ));
    }
    assert!(matches!(
        Header::decode_e2b(&bytes[..bytes.len() - 1]),
        Err(Error::PartialEntry { trailing: 39 })
    ));
    assert!(matches!(
        Header::decode_e2b(&bytes[..64 + 8]),
        Err(Error::PartialEntry { trailing: 8 })
    ));
}

fn invalid(bytes: &[u8]) -> InvalidHeader {
    match Header::decode_e2b(bytes) {
        Err(Error::Invalid(why)) => why,
        other => panic!("expected an invalid-header error, got {other:?}"),
    }
}

#[test]
fn rejects_bad_mappings_with_named_errors() {
    let size = 0x4000;
    let case = |entries: &[RawEntry]| invalid(&e2b_bytes(3, 4096, size, 0, entries));
    assert_eq!(
        case(&[(0, 0x2000, B, 0), (0x1000, 0x3000, B, 0)]),
        InvalidHeader::Overlap {
            index: 1,
            offset: 0x1000,
            previous_end: 0x2000
        }
    );
    assert_eq!(
        case(&[(0, 0x1000, B, 0), (0x2000, 0x2000, B, 0)]),
        InvalidHeader::Gap {
            index: 1,
            expected: 0x1000,
            offset: 0x2000
        }
    );
    assert!(matches!(
        case(&[(0, 0x4000, B, 0), (0x4000, 0x1000, B, 0)]),
        InvalidHeader::PastSize { index: 1, .. }
    ));
    assert!(matches!(
        case(&[(0x1000, u64::MAX - 0xfff, B, 0)]),
        InvalidHeader::Gap { index: 0, .. }
    ));
    assert!(matches!(
        case(&[(0, u64::MAX - 0xfff, B, 0)]),
        InvalidHeader::PastSize { index: 0, .. }
    ));
    assert!(matches!(
        case(&[(0, 0x1800, B, 0), (0x1800, 0x2800, B, 0)]),
        InvalidHeader::Misaligned { index: 0, .. }
    ));
    assert_eq!(
        case(&[(0, 0x3000, B, 0)]),
        InvalidHeader::Incomplete {
            covered: 0x3000,
            size
        }
    );
    assert!(matches!(
        case(&[(0, 0, B, 0), (0, 0x4000, B, 0)]),
        InvalidHeader::EmptyEntry { index: 0, .. }
    ));
    assert!(matches!(
        case(&[(0, 0x4000, B, u64::MAX)]),
        InvalidHeader::StorageOverflow { index: 0, .. }
    ));
    assert!(matches!(
        case(&[]),
        InvalidHeader::Incomplete { covered: 0, .. }
    ));
}

#[test]
fn rejects_bad_metadata() {
    let one = |block, size| invalid(&e2b_bytes(3, block, size, 0, &[(0, size, B, 0)]));
    assert!(matches!(one(0, 0x4000), InvalidHeader::BlockSize { .. }));
    assert!(matches!(one(3000, 0x4000), InvalidHeader::BlockSize { .. }));
    assert!(matches!(
        one(1 << 31, 1 << 31),
        InvalidHeader::BlockSize { .. }
    ));
    assert!(matches!(
        one(4096, 1 << 50),
        InvalidHeader::SizeTooLarge { .. }
    ));
    assert!(matches!(
        invalid(&e2b_bytes(3, 4096, 0x4100, 0, &[(0, 0x4000, B, 0)])),
        InvalidHeader::SizeNotAligned { .. }
    ));
    let mut nil_build = e2b_bytes(3, 4096, 0x1000, 0, &[(0, 0x1000, NIL, 0)]);
    nil_build[32..48].fill(0);
    assert_eq!(invalid(&nil_build), InvalidHeader::NilBuildId);
}

#[test]
fn an_empty_image_has_no_entries() {
    let header = Header::decode_e2b(&e2b_bytes(3, 4096, 0, 0, &[])).unwrap();
    assert!(header.entries().is_empty());
    assert_eq!(header.lookup(0), None);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn round_trips(header in arb_header()) {
        let bytes = header.encode_e2b();
        prop_assert_eq!(bytes.len(), 64 + 40 * header.entries().len());
        prop_assert_eq!(Header::decode_e2b(&bytes).unwrap(), header);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Fuzz: arbitrary bytes never panic, and whatever decodes re-encodes to a header that
    /// decodes to itself.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(header) = Header::decode_e2b(&bytes) {
            prop_assert_eq!(Header::decode_e2b(&header.encode_e2b()).unwrap(), header);
        }
    }

    /// Fuzz closer to valid input: a valid header with a few bytes overwritten.
    #[test]
    fn mutated_headers_never_panic(
        header in arb_header(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = header.encode_e2b();
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        let _ = Header::decode_e2b(&bytes);
        let _ = Header::decode_e2b(&bytes[..cut.index(bytes.len() + 1)]);
    }
}
