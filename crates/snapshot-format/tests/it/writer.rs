//! Writers: generation 0 from a full image, diffs over it, limits enforced on write, and a
//! proptest that what is written reads back byte for byte.
#![allow(clippy::single_range_in_vec_init)]

use std::collections::HashMap;
use std::fs;
use std::io;

use proptest::prelude::*;
use snapshot_format::{
    Error, Header, InvalidHeader, LayeredSource, MAX_CHECKSUMS, MAX_SIZE, MemoryImage,
    snapshot_dir, write_diff, write_generation_zero,
};
use test_support::{HUGE, PAGE, TestDir};

use crate::common::{block_mask, build};

fn page(n: u64) -> std::ops::Range<usize> {
    (n * PAGE) as usize..((n + 1) * PAGE) as usize
}

#[test]
fn generation_zero_stores_only_non_zero_blocks() {
    let mut memory = vec![0u8; 8 * PAGE as usize];
    memory[page(1)].fill(1);
    memory[page(2)].fill(2);
    memory[page(6).start + 100] = 6; // one byte makes the block non-zero
    let mut data = Vec::new();
    let h = write_generation_zero(&memory[..], PAGE, build(1), &mut data).unwrap();
    assert_eq!(data.len() as u64, 3 * PAGE);
    assert_eq!(&data[..PAGE as usize], &memory[page(1)]);
    assert_eq!(&data[2 * PAGE as usize..], &memory[page(6)]);
    let shape: Vec<(u64, u64, bool)> = h
        .entries()
        .iter()
        .map(|e| (e.offset / PAGE, e.length / PAGE, e.is_zero()))
        .collect();
    assert_eq!(
        shape,
        vec![
            (0, 1, true),
            (1, 2, false),
            (3, 3, true),
            (6, 1, false),
            (7, 1, true)
        ]
    );
    assert_eq!(h.lookup(6 * PAGE).unwrap().storage_offset, 2 * PAGE);
    assert_eq!(
        (h.metadata().generation, h.metadata().base_build_id),
        (0, build(1))
    );
}

#[test]
fn generation_zero_handles_blocks_larger_than_its_buffer() {
    // 2 MiB blocks are scanned in 1 MiB pieces: a non-zero byte in the second piece must still
    // store the whole block, leading zeros included.
    let mut memory = vec![0u8; 3 * HUGE as usize];
    memory[(HUGE + (3 << 19)) as usize] = 0xAB;
    let mut data = Vec::new();
    let h = write_generation_zero(&memory[..], HUGE, build(1), &mut data).unwrap();
    assert_eq!(data.len() as u64, HUGE);
    assert_eq!(data.as_slice(), &memory[HUGE as usize..2 * HUGE as usize]);
    assert_eq!(h.entries().len(), 3);
}

#[test]
fn writers_read_from_files_too() {
    let dir = TestDir::new("writer-file");
    let path = dir.join("mem");
    let mut memory = vec![0u8; 4 * PAGE as usize];
    memory[page(3)].fill(9);
    fs::write(&path, &memory).unwrap();
    let file = fs::File::open(&path).unwrap();
    let mut data = Vec::new();
    let h = write_generation_zero(&file, PAGE, build(1), &mut data).unwrap();
    assert_eq!(data, memory[page(3)].to_vec());
    let mut diff = Vec::new();
    let next = write_diff(&file, &h, build(2), &[0..PAGE], &[], &mut diff).unwrap();
    assert_eq!(diff, vec![0u8; PAGE as usize]);
    assert_eq!(next.lookup(0).unwrap().build_id, build(2));
}

/// An image that claims any size and reads as zeros: exercises limits without the memory.
struct Claimed(u64);

impl MemoryImage for Claimed {
    fn size(&self) -> io::Result<u64> {
        Ok(self.0)
    }

    fn read_exact_at(&self, buf: &mut [u8], _offset: u64) -> io::Result<()> {
        buf.fill(0);
        Ok(())
    }
}

/// Known failure 35: a size cap enforced on read only made snapshots unrestorable.
#[test]
fn kf35_write_enforces_the_read_limits() {
    let mut data = Vec::new();
    match write_generation_zero(&Claimed(MAX_SIZE + PAGE), PAGE, build(1), &mut data) {
        Err(Error::Invalid(InvalidHeader::SizeTooLarge { .. })) => {}
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        write_generation_zero(&Claimed(PAGE + 1), PAGE, build(1), &mut data),
        Err(Error::Invalid(InvalidHeader::SizeNotAligned { .. }))
    ));
    assert!(matches!(
        write_generation_zero(&Claimed(PAGE), 1000, build(1), &mut data),
        Err(Error::Invalid(InvalidHeader::BlockSize { .. }))
    ));
    assert!(data.is_empty(), "nothing written for a rejected image");
    // Every header a writer returns decodes again in both formats.
    let h = write_generation_zero(&Claimed(64 * PAGE), PAGE, build(1), &mut data).unwrap();
    assert_eq!(Header::decode(&h.encode_native()).unwrap(), h);
    assert_eq!(Header::decode(&h.encode_e2b()).unwrap(), h);
    assert!(matches!(
        Header::full_image(build(1), PAGE, MAX_SIZE + PAGE),
        Err(InvalidHeader::SizeTooLarge { .. })
    ));
}

/// A diff whose checksum table would pass [`MAX_CHECKSUMS`] is refused before a byte is read
/// or written (2 TiB dirty at 4 KiB units is 2^29 checksums).
#[test]
fn write_diff_refuses_more_checksums_than_a_reader_accepts_before_writing() {
    let size = 2u64 << 40;
    let h = Header::full_image(build(1), PAGE, size).unwrap();
    let mut data = Vec::new();
    assert!(matches!(
        write_diff(&Claimed(size), &h, build(2), &[0..size], &[], &mut data),
        Err(Error::Invalid(InvalidHeader::TooManyChecksums { count, limit }))
            if count == 1 << 29 && limit == MAX_CHECKSUMS
    ));
    assert!(data.is_empty());
}

#[test]
fn write_diff_rejects_an_image_of_the_wrong_size() {
    let h = Header::full_image(build(1), PAGE, 4 * PAGE).unwrap();
    let memory = vec![0u8; 3 * PAGE as usize];
    let mut data = Vec::new();
    assert!(matches!(
        write_diff(&memory[..], &h, build(2), &[], &[], &mut data),
        Err(Error::ImageSize { expected, actual }) if expected == 4 * PAGE && actual == 3 * PAGE
    ));
}

/// Reads every byte of a header's image from in-memory data files.
fn render(h: &Header, files: &HashMap<uuid::Uuid, Vec<u8>>) -> Vec<u8> {
    let mut out = vec![0u8; h.size() as usize];
    for e in h.entries() {
        if !e.is_zero() {
            let src = &files[&e.build_id]
                [e.storage_offset as usize..(e.storage_offset + e.length) as usize];
            out[e.offset as usize..(e.offset + e.length) as usize].copy_from_slice(src);
        }
    }
    out
}

/// Random memory of `blocks` 512-byte blocks, about half of them zero.
fn arb_memory() -> impl Strategy<Value = Vec<u8>> {
    (1usize..32).prop_flat_map(|blocks| {
        prop::collection::vec(prop::option::of(any::<u8>()), blocks).prop_map(|fills| {
            fills
                .into_iter()
                .flat_map(|f| {
                    let mut block = vec![0u8; 512];
                    if let Some(v) = f {
                        block[usize::from(v) % 512] = v | 1;
                    }
                    block
                })
                .collect()
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Generation 0 then a diff: each generation reads back exactly its memory, and the data
    /// files are exactly the non-zero blocks and the dirty blocks.
    #[test]
    fn written_generations_read_back(
        memory in arb_memory(),
        writes in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        frees in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
    ) {
        const B: u64 = 512;
        let blocks = memory.len() / B as usize;
        let mut files = HashMap::new();
        let mut data = Vec::new();
        let g0 = write_generation_zero(&memory[..], B, build(1), &mut data).unwrap();
        let non_zero = memory.chunks(B as usize).filter(|c| c.iter().any(|&b| b != 0)).count();
        prop_assert_eq!(data.len(), non_zero * B as usize);
        files.insert(build(1), data);
        prop_assert_eq!(render(&g0, &files), memory.clone());

        // Pause 2: free some blocks (zeroed), then write some (dirty), the guest's order.
        let mut next = memory.clone();
        let mut empty = Vec::new();
        for f in frees {
            let b = f.index(blocks) as u64;
            next[(b * B) as usize..((b + 1) * B) as usize].fill(0);
            empty.push(b * B..(b + 1) * B);
        }
        let mut dirty = Vec::new();
        for (at, v) in writes {
            let i = at.index(next.len());
            next[i] = v;
            let b = i as u64 / B;
            dirty.push(b * B..(b + 1) * B);
        }
        let mut data = Vec::new();
        let g1 = write_diff(&next[..], &g0, build(2), &dirty, &empty, &mut data).unwrap();
        let dirty_blocks = block_mask(blocks as u64, &dirty).iter().filter(|&&d| d).count();
        prop_assert_eq!(data.len(), dirty_blocks * B as usize);
        files.insert(build(2), data);
        prop_assert_eq!(render(&g1, &files), next);
    }
}

#[test]
fn written_generations_serve_through_the_layered_source() {
    let dir = TestDir::new("writer-source");
    let mut memory = vec![0u8; 8 * PAGE as usize];
    memory[page(2)].fill(2);
    memory[page(5)].fill(5);
    let mut f = fs::File::create(snapshot_dir::data_path(dir.path(), build(1))).unwrap();
    let g0 = write_generation_zero(&memory[..], PAGE, build(1), &mut f).unwrap();
    memory[page(2)].fill(0);
    memory[page(7)].fill(7);
    let mut f = fs::File::create(snapshot_dir::data_path(dir.path(), build(2))).unwrap();
    let g1 = write_diff(
        &memory[..],
        &g0,
        build(2),
        &[7 * PAGE..8 * PAGE],
        &[2 * PAGE..3 * PAGE],
        &mut f,
    )
    .unwrap();
    drop(f);
    let source = LayeredSource::open(g1, &snapshot_dir::data_files(dir.path()).unwrap()).unwrap();
    let mut all = vec![0xEEu8; memory.len()];
    source.read_into(0, &mut all).unwrap();
    assert_eq!(all, memory);
}
