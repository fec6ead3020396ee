//! Data checksum tables in the header: the native layout, round trips through both codecs,
//! every rule a table must meet (typed errors), counts checked before allocating, native
//! version 1 still read, tables carried across generations, and the writers' tables.
#![allow(clippy::single_range_in_vec_init)]

use std::io::Write as _;

use proptest::prelude::*;
use snapshot_format::{
    DataChecksums, Diff, Error, Header, InvalidHeader, MAX_CHECKSUMS, Mapping, Metadata,
    checksum_unit, write_diff, write_generation_zero,
};
use uuid::Uuid;

use crate::common::{BLOCK, arb_header, build};

const PAGE: u64 = 4096;

/// Rewrites the trailing CRC so a test reaches the checks behind it.
fn fix_crc(bytes: &mut [u8]) {
    let body = bytes.len() - 4;
    let crc = crc32fast::hash(&bytes[..body]);
    bytes[body..].copy_from_slice(&crc.to_le_bytes());
}

/// Three pages: build 1 at storage 0, a zero page, build 2 at storage 2 pages.
fn mapping() -> (Metadata, Vec<Mapping>) {
    (
        Metadata::generation_zero(build(2), PAGE, 3 * PAGE),
        vec![
            Mapping::data(0, PAGE, build(1), 0),
            Mapping::zero(PAGE, PAGE),
            Mapping::data(2 * PAGE, PAGE, build(2), 2 * PAGE),
        ],
    )
}

fn table(n: u8, units: u32) -> DataChecksums {
    DataChecksums::new(
        build(n),
        PAGE,
        (0..units).map(|i| 0x1000 * u32::from(n) + i).collect(),
    )
}

/// [`mapping`] with a table for build 1 (1 unit) and build 2 (3 units).
fn sample() -> Header {
    let (meta, entries) = mapping();
    Header::new_with_checksums(meta, entries, vec![table(1, 1), table(2, 3)]).unwrap()
}

/// The version 1 encoding of a header without tables: no table count, version 1.
fn version_one(header: &Header) -> Vec<u8> {
    assert!(header.checksums().is_empty());
    let mut bytes = header.encode_native();
    bytes[8..10].copy_from_slice(&1u16.to_le_bytes());
    let count_at = bytes.len() - 12;
    bytes.drain(count_at..count_at + 8);
    fix_crc(&mut bytes);
    bytes
}

#[test]
fn tables_are_laid_out_as_documented() {
    let bytes = sample().encode_native();
    let tables = 80 + 3 * 40;
    assert_eq!(bytes.len(), tables + 8 + (32 + 4) + (32 + 3 * 4) + 4);
    assert_eq!(&bytes[tables..tables + 8], &2u64.to_le_bytes());
    let first = &bytes[tables + 8..];
    assert_eq!(&first[..16], build(1).as_bytes());
    assert_eq!(&first[16..24], &PAGE.to_le_bytes());
    assert_eq!(&first[24..32], &1u64.to_le_bytes());
    assert_eq!(&first[32..36], &0x1000u32.to_le_bytes());
    let second = &first[36..];
    assert_eq!(&second[..16], build(2).as_bytes());
    assert_eq!(&second[24..32], &3u64.to_le_bytes());
    assert_eq!(&second[40..44], &0x2002u32.to_le_bytes());
    assert_eq!(Header::decode(&bytes).unwrap(), sample());
}

#[test]
fn the_header_answers_which_builds_have_checksums() {
    let h = sample();
    assert!(h.has_checksums(build(1)) && h.has_checksums(build(2)));
    assert!(!h.has_checksums(build(3)));
    assert_eq!(h.checksums_of(build(2)).unwrap().crcs().len(), 3);
    let (meta, entries) = mapping();
    let bare = Header::new(meta, entries).unwrap();
    assert!(!bare.has_checksums(build(1)));
    assert_eq!(h.clone().without_checksums(), bare);
    assert_eq!(
        bare.clone()
            .with_checksums(table(1, 1))
            .unwrap()
            .checksums()
            .len(),
        1
    );
}

#[test]
fn e2b_drops_the_tables() {
    let h = sample();
    let back = Header::decode(&h.encode_e2b()).unwrap();
    assert!(back.checksums().is_empty());
    assert_eq!(back, h.without_checksums());
}

#[test]
fn native_version_one_still_decodes_without_checksums() {
    let (meta, entries) = mapping();
    let h = Header::new(meta, entries).unwrap();
    let v1 = version_one(&h);
    assert_eq!(v1.len(), 84 + 3 * 40);
    let decoded = Header::decode(&v1).unwrap();
    assert_eq!(decoded, h);
    assert!(!decoded.has_checksums(build(1)));
    // A version 1 header with the table count of version 2 is a length mismatch.
    let mut with_count = h.encode_native();
    with_count[8] = 1;
    fix_crc(&mut with_count);
    assert!(matches!(
        Header::decode_native(&with_count),
        Err(Error::LengthMismatch { .. })
    ));
}

#[test]
fn broken_tables_are_typed_errors() {
    let (meta, entries) = mapping();
    let new = |tables| Header::new_with_checksums(meta, entries.clone(), tables);
    assert_eq!(
        new(vec![table(2, 3), table(1, 1)]),
        Err(InvalidHeader::ChecksumOrder {
            index: 1,
            build: build(1)
        })
    );
    assert!(matches!(
        new(vec![table(1, 1), table(1, 1)]),
        Err(InvalidHeader::ChecksumOrder { index: 1, .. })
    ));
    assert_eq!(
        new(vec![DataChecksums::new(build(1), 512, vec![0; 8])]),
        Err(InvalidHeader::ChecksumUnit {
            build: build(1),
            unit: 512,
            expected: PAGE
        })
    );
    assert_eq!(
        new(vec![table(2, 2)]),
        Err(InvalidHeader::ChecksumsShort {
            build: build(2),
            covered: 2 * PAGE,
            needed: 3 * PAGE
        })
    );
    assert_eq!(
        new(vec![table(1, 1), table(3, 1)]),
        Err(InvalidHeader::ChecksumsUnreferenced { build: build(3) })
    );
    assert_eq!(
        new(vec![DataChecksums::new(Uuid::nil(), PAGE, vec![0])]),
        Err(InvalidHeader::ChecksumsUnreferenced { build: Uuid::nil() })
    );
    // A storage range that does not start on a unit boundary cannot be verified exactly.
    let odd = vec![
        Mapping::data(0, PAGE, build(1), 512),
        Mapping::zero(PAGE, 2 * PAGE),
    ];
    assert_eq!(
        Header::new_with_checksums(meta, odd.clone(), vec![table(1, 2)]),
        Err(InvalidHeader::ChecksumMisaligned {
            index: 0,
            storage_offset: 512,
            unit: PAGE
        })
    );
    // Without checksums the same mapping is fine.
    Header::new(meta, odd).unwrap();
}

#[test]
fn absurd_checksum_counts_fail_before_allocating() {
    let good = sample().encode_native();
    // The first table's count sits 24 bytes into it.
    let count_at = 80 + 3 * 40 + 8 + 24;
    for count in [u64::MAX, MAX_CHECKSUMS + 1, 1 << 40] {
        let mut bytes = good.clone();
        bytes[count_at..count_at + 8].copy_from_slice(&count.to_le_bytes());
        fix_crc(&mut bytes);
        assert!(matches!(
            Header::decode_native(&bytes),
            Err(Error::Invalid(InvalidHeader::TooManyChecksums { .. }))
        ));
    }
    // Within the limit but far more than the bytes present.
    let mut bytes = good.clone();
    bytes[count_at..count_at + 8].copy_from_slice(&MAX_CHECKSUMS.to_le_bytes());
    fix_crc(&mut bytes);
    assert!(matches!(
        Header::decode_native(&bytes),
        Err(Error::LengthMismatch { .. })
    ));
    // A table count far above the bytes present: the walk stops at the end of the input.
    let mut bytes = good.clone();
    bytes[200..208].copy_from_slice(&u64::MAX.to_le_bytes());
    fix_crc(&mut bytes);
    assert!(matches!(
        Header::decode_native(&bytes),
        Err(Error::LengthMismatch { .. })
    ));
    // Trailing bytes after the tables.
    let mut long = good.clone();
    long.insert(long.len() - 4, 0);
    fix_crc(&mut long);
    assert!(matches!(
        Header::decode_native(&long),
        Err(Error::LengthMismatch { .. })
    ));
    for cut in 0..good.len() {
        assert!(
            matches!(
                Header::decode_native(&good[..cut]),
                Err(Error::Truncated { .. } | Error::LengthMismatch { .. })
            ),
            "cut at {cut}"
        );
    }
}

#[test]
fn a_flipped_crc_in_a_table_is_caught_by_the_header_checksum() {
    let good = sample().encode_native();
    let mut bytes = good.clone();
    let last_crc = good.len() - 8;
    bytes[last_crc] ^= 1;
    assert!(matches!(
        Header::decode_native(&bytes),
        Err(Error::ChecksumMismatch { .. })
    ));
}

#[test]
fn generations_carry_the_tables_they_still_reference() {
    let h = sample();
    // Build 7 overwrites page 0: build 1 is no longer referenced, its table goes.
    let diff = Diff::from_page_sets(build(7), PAGE, 3 * PAGE, &[0..PAGE], &[]).unwrap();
    let next = h.next_generation(&diff).unwrap();
    assert_eq!(next.checksums(), &[table(2, 3)]);
    // The zero page overwritten instead: both stay.
    let diff = Diff::from_page_sets(build(7), PAGE, 3 * PAGE, &[PAGE..2 * PAGE], &[]).unwrap();
    assert_eq!(h.next_generation(&diff).unwrap().checksums(), h.checksums());
}

#[test]
fn writers_put_the_data_files_checksums_in_the_header() {
    // Pages 1 and 3 non-zero: generation 0's file holds them back to back.
    let mut memory = vec![0u8; 4 * PAGE as usize];
    memory[PAGE as usize..2 * PAGE as usize].fill(0xAA);
    memory[3 * PAGE as usize..]
        .iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = i as u8);
    let mut data0 = Vec::new();
    let g0 = write_generation_zero(&memory[..], PAGE, build(1), &mut data0).unwrap();
    assert_eq!(data0.len() as u64, 2 * PAGE);
    assert_eq!(g0.checksums(), &[DataChecksums::of(build(1), PAGE, &data0)]);
    assert_eq!(Header::decode(&g0.encode_native()).unwrap(), g0);

    memory[..PAGE as usize].fill(0x55);
    let mut data1 = Vec::new();
    let g1 = write_diff(&memory[..], &g0, build(2), &[0..PAGE], &[], &mut data1).unwrap();
    assert_eq!(
        g1.checksums(),
        &[
            DataChecksums::of(build(1), PAGE, &data0),
            DataChecksums::of(build(2), PAGE, &data1)
        ]
    );
    // A diff with no dirty page writes no data and adds no table; freeing both pages of
    // build 1 drops its table.
    let freed = [PAGE..2 * PAGE, 3 * PAGE..4 * PAGE];
    let g2 = write_diff(
        &memory[..],
        &g1,
        build(3),
        &[],
        &freed,
        &mut std::io::sink(),
    )
    .unwrap();
    assert_eq!(g2.checksums(), &[DataChecksums::of(build(2), PAGE, &data1)]);
    // An all-zero image references no data.
    let zeros = vec![0u8; 2 * PAGE as usize];
    let empty = write_generation_zero(&zeros[..], PAGE, build(4), &mut std::io::sink()).unwrap();
    assert!(empty.checksums().is_empty());
}

#[test]
fn the_writer_checksums_whatever_pieces_it_is_given() {
    // Huge blocks: unit 4 KiB, written in 1 MiB pieces that straddle nothing.
    const HUGE: u64 = 2 << 20;
    let memory: Vec<u8> = (0..2 * HUGE).map(|i| (i % 251) as u8 | 1).collect();
    let mut data = Vec::new();
    let h = write_generation_zero(&memory[..], HUGE, build(1), &mut data).unwrap();
    let table = h.checksums_of(build(1)).unwrap();
    assert_eq!(table.unit(), checksum_unit(HUGE));
    assert_eq!(table, &DataChecksums::of(build(1), 4096, &data));
    assert_eq!(table.covered_len(), data.len() as u64);
    // A writer that takes a few bytes at a time is checksummed the same.
    struct Dribble(Vec<u8>);
    impl std::io::Write for Dribble {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = buf.len().min(1000);
            self.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut dribble = Dribble(Vec::new());
    let again = write_generation_zero(&memory[..], HUGE, build(1), &mut dribble).unwrap();
    dribble.flush().unwrap();
    assert_eq!(dribble.0, data);
    assert_eq!(again, h);
}

/// `header` with a random table for some of its builds: units of [`BLOCK`] bytes covering
/// the build's storage, plus up to 3 more, with random CRCs.
fn arb_checksummed() -> impl Strategy<Value = Header> {
    (arb_header(), any::<u64>(), 0u64..4).prop_map(|(header, seed, extra)| {
        let mut h = header;
        for (i, (b, needed)) in h.storage_extents().into_iter().enumerate() {
            if (seed >> i) & 1 == 0 {
                continue;
            }
            let units = needed / BLOCK + extra;
            let crcs = (0..units)
                .map(|u| (seed ^ u).wrapping_mul(0x9e37_79b9) as u32)
                .collect();
            h = h
                .with_checksums(DataChecksums::new(b, checksum_unit(BLOCK), crcs))
                .unwrap();
        }
        h
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn checksummed_headers_round_trip(header in arb_checksummed()) {
        let bytes = header.encode_native();
        let decoded = Header::decode_native(&bytes).unwrap();
        prop_assert_eq!(&decoded, &header);
        prop_assert_eq!(decoded.encode_native(), bytes);
        let json = serde_json::to_string(&header).unwrap();
        prop_assert_eq!(&serde_json::from_str::<Header>(&json).unwrap(), &header);
        prop_assert_eq!(Header::decode(&header.encode_e2b()).unwrap(), header.without_checksums());
    }

    /// Bytes overwritten past the magic and the CRC fixed: counts and tables see hostile
    /// values; whatever still decodes encodes back to the same bytes.
    #[test]
    fn mutated_checksummed_headers_never_panic(
        header in arb_checksummed(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut bytes = header.encode_native();
        for (at, value) in edits {
            let i = 10 + at.index(bytes.len() - 14);
            bytes[i] = value;
        }
        fix_crc(&mut bytes);
        if let Ok(decoded) = Header::decode_native(&bytes) {
            prop_assert_eq!(decoded.encode_native(), bytes);
        }
    }
}
