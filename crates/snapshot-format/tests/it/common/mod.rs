//! Helpers shared by the integration tests: strategies for valid headers and page sets, and a
//! naive per-block model of where each block's bytes come from.

use std::ops::Range;

use proptest::prelude::*;
use snapshot_format::{Header, Mapping, Metadata};
use uuid::Uuid;

/// Small block size keeps generated images tiny.
pub(crate) const BLOCK: u64 = 512;

/// Fixed, recognisable build ids.
pub(crate) fn build(n: u8) -> Uuid {
    Uuid::from_bytes([n; 16])
}

/// Where one block's bytes come from: nil build = zero (storage then 0).
pub(crate) type BlockSource = (Uuid, u64);

/// The naive model: resolves every block of `header` one by one through its entries (a linear
/// scan, independent of the crate's binary search).
pub(crate) fn blocks_of(header: &Header) -> Vec<BlockSource> {
    blocks_of_entries(header.block_size(), header.size(), header.entries())
}

/// [`blocks_of`] over raw entries covering `[0, size)`.
pub(crate) fn blocks_of_entries(block: u64, size: u64, entries: &[Mapping]) -> Vec<BlockSource> {
    (0..size / block)
        .map(|b| {
            let offset = b * block;
            let e = entries
                .iter()
                .find(|e| e.offset <= offset && offset < e.offset + e.length)
                .expect("entries cover every block");
            if e.is_zero() {
                (Uuid::nil(), 0)
            } else {
                (e.build_id, e.storage_offset + (offset - e.offset))
            }
        })
        .collect()
}

/// A valid header over `blocks` blocks of [`BLOCK`] bytes: random runs, each zero or one of
/// builds 1..=3 at a random block-aligned storage offset.
pub(crate) fn arb_header() -> impl Strategy<Value = Header> {
    (1u64..48).prop_flat_map(|blocks| {
        prop::collection::vec((1u64..6, 0u8..4, 0u64..64), 1..24).prop_map(move |runs| {
            let mut entries = Vec::new();
            let mut at = 0u64;
            for (len, which, storage) in runs {
                if at == blocks {
                    break;
                }
                let len = len.min(blocks - at);
                entries.push(if which == 0 {
                    Mapping::zero(at * BLOCK, len * BLOCK)
                } else {
                    Mapping::data(at * BLOCK, len * BLOCK, build(which), storage * BLOCK)
                });
                at += len;
            }
            if at < blocks {
                entries.push(Mapping::zero(at * BLOCK, (blocks - at) * BLOCK));
            }
            let meta = Metadata {
                version: 3,
                block_size: BLOCK,
                size: blocks * BLOCK,
                generation: 4,
                build_id: build(9),
                base_build_id: build(1),
            };
            Header::new(meta, entries).expect("generated header is valid")
        })
    })
}

/// Random block ranges (as byte ranges) inside `blocks` blocks: unsorted, may overlap or be empty.
pub(crate) fn arb_page_set(blocks: u64) -> impl Strategy<Value = Vec<Range<u64>>> {
    prop::collection::vec((0..=blocks, 0u64..6), 0..8).prop_map(move |v| {
        v.into_iter()
            .map(|(start, len)| start * BLOCK..(start + len).min(blocks) * BLOCK)
            .map(|r| r.start.min(r.end)..r.end)
            .collect()
    })
}

/// Expands byte ranges into a per-block membership vector.
pub(crate) fn block_mask(blocks: u64, set: &[Range<u64>]) -> Vec<bool> {
    let mut mask = vec![false; blocks as usize];
    for r in set {
        for b in r.start / BLOCK..r.end / BLOCK {
            mask[b as usize] = true;
        }
    }
    mask
}
