//! Native codec: layout, every bad-input path (allocation bombs included), round trips and
//! fuzz-style proptests.

use proptest::prelude::*;
use snapshot_format::{
    Error, Header, HeaderFormat, InvalidHeader, MAX_ENTRIES, Mapping, Metadata, NATIVE_MAGIC,
};

use crate::common::{arb_header, build};

fn sample() -> Header {
    let meta = Metadata {
        version: 3,
        block_size: 4096,
        size: 0x3000,
        generation: 7,
        build_id: build(2),
        base_build_id: build(1),
    };
    Header::new(
        meta,
        vec![
            Mapping::data(0, 0x1000, build(1), 0),
            Mapping::zero(0x1000, 0x1000),
            Mapping::data(0x2000, 0x1000, build(2), 0x5000),
        ],
    )
    .unwrap()
}

/// Rewrites the trailing CRC so a test reaches the checks behind it.
fn fix_crc(bytes: &mut [u8]) {
    let body = bytes.len() - 4;
    let crc = crc32fast::hash(&bytes[..body]);
    bytes[body..].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn layout_is_as_documented() {
    let bytes = sample().encode_native();
    assert_eq!(bytes.len(), 84 + 3 * 40 + 8);
    assert_eq!(&bytes[..8], b"UFSNAPHD");
    assert_eq!(&bytes[8..10], &2u16.to_le_bytes());
    assert_eq!(&bytes[10..12], &3u16.to_le_bytes());
    assert_eq!(&bytes[12..16], &[0; 4]);
    assert_eq!(&bytes[16..24], &4096u64.to_le_bytes());
    assert_eq!(&bytes[24..32], &0x3000u64.to_le_bytes());
    assert_eq!(&bytes[32..40], &7u64.to_le_bytes());
    assert_eq!(&bytes[40..56], build(2).as_bytes());
    assert_eq!(&bytes[56..72], build(1).as_bytes());
    assert_eq!(&bytes[72..80], &3u64.to_le_bytes());
    // Third entry.
    let e = &bytes[80 + 80..80 + 120];
    assert_eq!(&e[..8], &0x2000u64.to_le_bytes());
    assert_eq!(&e[8..16], &0x1000u64.to_le_bytes());
    assert_eq!(&e[16..32], build(2).as_bytes());
    assert_eq!(&e[32..40], &0x5000u64.to_le_bytes());
    // No checksum tables.
    assert_eq!(&bytes[200..208], &0u64.to_le_bytes());
    let crc = crc32fast::hash(&bytes[..bytes.len() - 4]);
    assert_eq!(&bytes[bytes.len() - 4..], &crc.to_le_bytes());
    assert_eq!(HeaderFormat::detect(&bytes), HeaderFormat::Native);
    assert_eq!(Header::decode(&bytes).unwrap(), sample());
}

#[test]
fn rejects_truncation_anywhere() {
    let bytes = sample().encode_native();
    for cut in 0..bytes.len() {
        let err = Header::decode_native(&bytes[..cut]).unwrap_err();
        assert!(
            matches!(err, Error::Truncated { .. } | Error::LengthMismatch { .. }),
            "cut at {cut}: {err:?}"
        );
    }
}

#[test]
fn rejects_wrong_magic_version_and_reserved() {
    let good = sample().encode_native();
    let mut bytes = good.clone();
    bytes[0] = b'X';
    assert!(matches!(
        Header::decode_native(&bytes),
        Err(Error::BadMagic { found }) if found[0] == b'X'
    ));
    for version in [0u8, 3] {
        let mut bytes = good.clone();
        bytes[8] = version;
        fix_crc(&mut bytes);
        assert!(matches!(
            Header::decode_native(&bytes),
            Err(Error::UnsupportedVersion { version: v, .. }) if v == u64::from(version)
        ));
    }
    let mut bytes = good.clone();
    bytes[10] = 9;
    fix_crc(&mut bytes);
    assert!(matches!(
        Header::decode_native(&bytes),
        Err(Error::Invalid(InvalidHeader::Version { version: 9 }))
    ));
    let mut bytes = good;
    bytes[12] = 1;
    fix_crc(&mut bytes);
    assert!(matches!(
        Header::decode_native(&bytes),
        Err(Error::ReservedNotZero { value: 1 })
    ));
}

#[test]
fn absurd_counts_fail_before_allocating() {
    let mut bytes = sample().encode_native();
    for count in [u64::MAX, MAX_ENTRIES + 1, 1 << 40] {
        bytes[72..80].copy_from_slice(&count.to_le_bytes());
        assert!(matches!(
            Header::decode_native(&bytes),
            Err(Error::TooManyEntries { .. })
        ));
    }
    // Within the limit but far more than the bytes present.
    bytes[72..80].copy_from_slice(&MAX_ENTRIES.to_le_bytes());
    assert!(matches!(
        Header::decode_native(&bytes),
        Err(Error::LengthMismatch { count, .. }) if count == MAX_ENTRIES
    ));
    // Trailing garbage is a length mismatch too.
    let mut long = sample().encode_native();
    long.push(0);
    assert!(matches!(
        Header::decode_native(&long),
        Err(Error::LengthMismatch { .. })
    ));
}

#[test]
fn corruption_is_caught_by_the_checksum() {
    let good = sample().encode_native();
    for at in 16..good.len() {
        let mut bytes = good.clone();
        bytes[at] ^= 0x40;
        let err = Header::decode_native(&bytes).unwrap_err();
        assert!(
            matches!(
                err,
                Error::ChecksumMismatch { .. }
                    | Error::TooManyEntries { .. }
                    | Error::LengthMismatch { .. }
            ),
            "flip at {at}: {err:?}"
        );
    }
}

#[test]
fn entries_are_validated_after_the_checksum() {
    let mut bytes = sample().encode_native();
    // Second entry's offset moved back into the first: an overlap.
    bytes[80 + 40..80 + 48].copy_from_slice(&0u64.to_le_bytes());
    fix_crc(&mut bytes);
    assert!(matches!(
        Header::decode_native(&bytes),
        Err(Error::Invalid(InvalidHeader::Overlap { index: 1, .. }))
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn round_trips(header in arb_header()) {
        let bytes = header.encode_native();
        prop_assert_eq!(Header::decode_native(&bytes).unwrap(), header.clone());
        // Converting through both codecs keeps the header.
        prop_assert_eq!(Header::decode(&Header::decode(&header.encode_e2b()).unwrap().encode_native()).unwrap(), header);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Fuzz: arbitrary bytes, with and without the magic in front, never panic.
    #[test]
    fn arbitrary_bytes_never_panic(mut bytes in prop::collection::vec(any::<u8>(), 0..400), magic: bool) {
        if magic && bytes.len() >= 8 {
            bytes[..8].copy_from_slice(&NATIVE_MAGIC);
        }
        if let Ok(header) = Header::decode_native(&bytes) {
            prop_assert_eq!(header.encode_native(), bytes);
        }
    }

    /// Fuzz past the checksum: a valid header with bytes overwritten and the CRC recomputed, so
    /// count, length and mapping checks see hostile values.
    #[test]
    fn mutated_headers_with_fixed_crc_never_panic(
        header in arb_header(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut bytes = header.encode_native();
        for (at, value) in edits {
            let i = 8 + at.index(bytes.len() - 12);
            bytes[i] = value;
        }
        fix_crc(&mut bytes);
        if let Ok(decoded) = Header::decode_native(&bytes) {
            prop_assert_eq!(decoded.encode_native(), bytes);
        }
    }
}
