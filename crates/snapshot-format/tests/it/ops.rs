//! Lookup, read plans, diffs, merge, normalise and next generation: worked examples, the known
//! failures 34 and 36, and proptests against the naive per-block model.
#![allow(clippy::single_range_in_vec_init, clippy::reversed_empty_ranges)]

use proptest::prelude::*;
use snapshot_format::{
    Diff, Error, Header, InvalidHeader, Location, Mapping, Metadata, merge, normalise,
};
use test_support::PAGE;
use uuid::Uuid;

use crate::common::{
    BLOCK, BlockSource, arb_header, arb_page_set, block_mask, blocks_of, blocks_of_entries, build,
};

fn header(size: u64, entries: Vec<Mapping>) -> Header {
    Header::new(Metadata::generation_zero(build(1), PAGE, size), entries).unwrap()
}

/// [0,2) build 1 @ 0x10000, [2,3) zero, [3,8) build 2 @ 0.
fn parent() -> Header {
    header(
        8 * PAGE,
        vec![
            Mapping::data(0, 2 * PAGE, build(1), 0x10000),
            Mapping::zero(2 * PAGE, PAGE),
            Mapping::data(3 * PAGE, 5 * PAGE, build(2), 0),
        ],
    )
}

#[test]
fn lookup_gives_build_storage_and_remaining_run() {
    let h = parent();
    assert_eq!(
        h.lookup(0),
        Some(Location {
            build_id: build(1),
            storage_offset: 0x10000,
            remaining: 2 * PAGE
        })
    );
    assert_eq!(
        h.lookup(PAGE + 5),
        Some(Location {
            build_id: build(1),
            storage_offset: 0x10000 + PAGE + 5,
            remaining: PAGE - 5
        })
    );
    let zero = h.lookup(2 * PAGE + 100).unwrap();
    assert!(zero.is_zero());
    assert_eq!((zero.storage_offset, zero.remaining), (0, PAGE - 100));
    assert_eq!(
        h.lookup(8 * PAGE - 1),
        Some(Location {
            build_id: build(2),
            storage_offset: 5 * PAGE - 1,
            remaining: 1
        })
    );
    assert_eq!(h.lookup(8 * PAGE), None);
    assert_eq!(h.lookup(u64::MAX), None);
    assert_eq!(h.entry_index(3 * PAGE), Some(2));
}

#[test]
fn lookup_is_exact_when_entries_are_crowded_in_one_region() {
    // 1000 one-page entries, then one entry of a million pages: the index's buckets are sized
    // for the average, so the first bucket holds hundreds of entries.
    let mut entries: Vec<Mapping> = (0..1000)
        .map(|i| Mapping::data(i * PAGE, PAGE, build(1 + (i % 2) as u8), i * PAGE))
        .collect();
    entries.push(Mapping::zero(1000 * PAGE, 1 << 32));
    let h = header(1000 * PAGE + (1 << 32), entries);
    for i in 0..1000 {
        let loc = h.lookup(i * PAGE + 7).unwrap();
        assert_eq!(
            (loc.build_id, loc.storage_offset),
            (build(1 + (i % 2) as u8), i * PAGE + 7)
        );
        assert_eq!(h.entry_index(i * PAGE + PAGE - 1), Some(i as usize));
    }
    assert_eq!(h.entry_index(1000 * PAGE), Some(1000));
    assert_eq!(h.lookup(h.size() - 1).unwrap().remaining, 1);
}

#[test]
fn read_plan_splits_a_range_across_entries() {
    let h = parent();
    let plan: Vec<Mapping> = h.read_plan(PAGE, 3 * PAGE).unwrap().collect();
    assert_eq!(
        plan,
        vec![
            Mapping::data(PAGE, PAGE, build(1), 0x10000 + PAGE),
            Mapping::zero(2 * PAGE, PAGE),
            Mapping::data(3 * PAGE, PAGE, build(2), 0),
        ]
    );
    assert_eq!(h.read_plan(0, 0).unwrap().count(), 0);
    assert!(matches!(
        h.read_plan(7 * PAGE, 2 * PAGE),
        Err(Error::OutOfRange { .. })
    ));
    assert!(matches!(
        h.read_plan(u64::MAX, 2),
        Err(Error::OutOfRange { .. })
    ));
}

#[test]
fn diff_packs_dirty_storage_and_maps_empty_to_zero() {
    let dirty = [5 * PAGE..6 * PAGE, PAGE..3 * PAGE, 2 * PAGE..4 * PAGE];
    let empty = [6 * PAGE..8 * PAGE];
    let diff = Diff::from_page_sets(build(3), PAGE, 8 * PAGE, &dirty, &empty).unwrap();
    assert_eq!(
        diff.entries(),
        &[
            Mapping::data(PAGE, 3 * PAGE, build(3), 0),
            Mapping::data(5 * PAGE, PAGE, build(3), 3 * PAGE),
            Mapping::zero(6 * PAGE, 2 * PAGE),
        ]
    );
    assert_eq!(diff.data_len(), 4 * PAGE);
    // The caller's slices are untouched.
    assert_eq!(dirty[0], 5 * PAGE..6 * PAGE);
}

#[test]
fn diff_rejects_bad_page_sets() {
    let bad = |dirty: &[std::ops::Range<u64>]| {
        Diff::from_page_sets(build(3), PAGE, 8 * PAGE, dirty, &[]).unwrap_err()
    };
    assert!(matches!(
        bad(&[0..100]),
        Error::InvalidRange { set: "dirty", .. }
    ));
    assert!(matches!(bad(&[0..9 * PAGE]), Error::InvalidRange { .. }));
    assert!(matches!(
        Diff::from_page_sets(build(3), PAGE, 8 * PAGE, &[], &[PAGE..0]),
        Err(Error::InvalidRange { set: "empty", .. })
    ));
    assert!(matches!(
        Diff::from_page_sets(Uuid::nil(), PAGE, 8 * PAGE, &[], &[]),
        Err(Error::Invalid(InvalidHeader::NilBuildId))
    ));
    assert!(matches!(
        Diff::from_page_sets(build(3), 3000, 8 * PAGE, &[], &[]),
        Err(Error::Invalid(InvalidHeader::BlockSize { .. }))
    ));
}

#[test]
fn merge_splits_parent_entries_and_shifts_the_right_remainder() {
    let h = parent();
    // Overwrite the middle of build 2's run [3,8): page 5.
    let diff = Diff::from_page_sets(build(3), PAGE, 8 * PAGE, &[5 * PAGE..6 * PAGE], &[]).unwrap();
    let merged = merge(&h, &diff).unwrap();
    assert_eq!(
        merged,
        vec![
            Mapping::data(0, 2 * PAGE, build(1), 0x10000),
            Mapping::zero(2 * PAGE, PAGE),
            Mapping::data(3 * PAGE, 2 * PAGE, build(2), 0),
            Mapping::data(5 * PAGE, PAGE, build(3), 0),
            Mapping::data(6 * PAGE, 2 * PAGE, build(2), 3 * PAGE),
        ]
    );
    let next = h.next_generation(&diff).unwrap();
    assert_eq!(next.entries(), merged.as_slice());
    assert_eq!(next.metadata().generation, 1);
    assert_eq!(next.metadata().build_id, build(3));
    assert_eq!(next.metadata().base_build_id, build(1));
}

#[test]
fn merge_rejects_a_diff_of_another_geometry() {
    let h = parent();
    let diff = Diff::from_page_sets(build(3), PAGE, 16 * PAGE, &[], &[]).unwrap();
    assert!(matches!(
        merge(&h, &diff),
        Err(Error::Incompatible { what: "size", .. })
    ));
    let diff = Diff::from_page_sets(build(3), 2 * PAGE, 8 * PAGE, &[], &[]).unwrap();
    assert!(matches!(
        h.next_generation(&diff),
        Err(Error::Incompatible {
            what: "block size",
            ..
        })
    ));
}

/// Known failure 34: runs of one build joined across a storage gap served wrong bytes, and the
/// caller's mapping was mutated.
#[test]
fn kf34_normalise_joins_only_contiguous_storage_and_leaves_input_alone() {
    let input = vec![
        Mapping::data(0, PAGE, build(1), 0),
        Mapping::data(PAGE, PAGE, build(1), PAGE), // contiguous: joins
        Mapping::data(2 * PAGE, PAGE, build(1), 7 * PAGE), // storage gap: stays apart
        Mapping::data(3 * PAGE, PAGE, build(2), 8 * PAGE), // other build: stays apart
        Mapping::data(4 * PAGE, PAGE, Uuid::nil(), 3), // zero runs join whatever their storage
        Mapping::data(5 * PAGE, PAGE, Uuid::nil(), 99),
    ];
    let before = input.clone();
    let out = normalise(&input);
    assert_eq!(input, before);
    assert_eq!(
        out,
        vec![
            Mapping::data(0, 2 * PAGE, build(1), 0),
            Mapping::data(2 * PAGE, PAGE, build(1), 7 * PAGE),
            Mapping::data(3 * PAGE, PAGE, build(2), 8 * PAGE),
            Mapping::zero(4 * PAGE, 2 * PAGE),
        ]
    );
    // Merging leaves the parent header as it was.
    let h = parent();
    let copy = h.clone();
    let diff = Diff::from_page_sets(build(3), PAGE, 8 * PAGE, &[0..PAGE], &[]).unwrap();
    h.next_generation(&diff).unwrap();
    assert_eq!(h, copy);
}

/// Known failure 36: freed pages came back with the parent's contents.
#[test]
fn kf36_freed_pages_become_zero_entries_and_dirty_wins_over_empty() {
    let h = parent();
    let diff = Diff::from_page_sets(
        build(3),
        PAGE,
        8 * PAGE,
        &[PAGE..2 * PAGE],                  // freed then written again: dirty
        &[0..2 * PAGE, 4 * PAGE..5 * PAGE], // freed
    )
    .unwrap();
    let next = h.next_generation(&diff).unwrap();
    assert!(next.lookup(0).unwrap().is_zero());
    assert_eq!(next.lookup(PAGE).unwrap().build_id, build(3));
    assert!(next.lookup(4 * PAGE).unwrap().is_zero());
    assert_eq!(next.lookup(3 * PAGE).unwrap().build_id, build(2));
}

/// Per-block model of one pause: dirty blocks -> new build at packed storage (rank among dirty
/// blocks), empty-not-dirty -> zero, others keep the parent's source.
fn model_next(
    parent: &[BlockSource],
    new: Uuid,
    dirty: &[bool],
    empty: &[bool],
) -> Vec<BlockSource> {
    let mut rank = 0;
    parent
        .iter()
        .enumerate()
        .map(|(b, &src)| {
            if dirty[b] {
                rank += 1;
                (new, (rank - 1) * BLOCK)
            } else if empty[b] {
                (Uuid::nil(), 0)
            } else {
                src
            }
        })
        .collect()
}

/// True if no two neighbours could be joined.
fn is_normal(entries: &[Mapping]) -> bool {
    entries.windows(2).all(|w| {
        let (a, b) = (&w[0], &w[1]);
        !(a.build_id == b.build_id
            && (a.is_zero() || a.storage_offset + a.length == b.storage_offset))
    })
}

fn arb_case()
-> impl Strategy<Value = (Header, Vec<std::ops::Range<u64>>, Vec<std::ops::Range<u64>>)> {
    arb_header().prop_flat_map(|h| {
        let blocks = h.size() / BLOCK;
        (Just(h), arb_page_set(blocks), arb_page_set(blocks))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn lookup_and_read_plan_match_the_model(h in arb_header(), probe in any::<prop::sample::Index>()) {
        let model = blocks_of(&h);
        for (b, &(build_id, storage)) in model.iter().enumerate() {
            let offset = b as u64 * BLOCK + probe.index(BLOCK as usize) as u64;
            let loc = h.lookup(offset).unwrap();
            prop_assert_eq!(loc.build_id, build_id);
            if !build_id.is_nil() {
                prop_assert_eq!(loc.storage_offset, storage + offset % BLOCK);
            }
            prop_assert!(loc.remaining >= 1);
        }
        // A read plan over everything reproduces the mapping piece by piece.
        let plan: Vec<Mapping> = h.read_plan(0, h.size()).unwrap().collect();
        prop_assert_eq!(blocks_of_entries(BLOCK, h.size(), &plan), model);
    }

    #[test]
    fn next_generation_matches_the_per_block_model((h, dirty, empty) in arb_case()) {
        let blocks = h.size() / BLOCK;
        let new = build(7);
        let diff = Diff::from_page_sets(new, BLOCK, h.size(), &dirty, &empty).unwrap();
        let (dm, em) = (block_mask(blocks, &dirty), block_mask(blocks, &empty));
        let expected = model_next(&blocks_of(&h), new, &dm, &em);

        let merged = merge(&h, &diff).unwrap();
        prop_assert_eq!(blocks_of_entries(BLOCK, h.size(), &merged), expected.clone());

        let next = h.next_generation(&diff).unwrap();
        prop_assert_eq!(blocks_of(&next), expected);
        prop_assert!(is_normal(next.entries()));
        prop_assert_eq!(diff.data_len(), dm.iter().filter(|&&d| d).count() as u64 * BLOCK);
    }

    #[test]
    fn normalise_keeps_every_block_and_is_idempotent(h in arb_header()) {
        let out = normalise(h.entries());
        prop_assert_eq!(blocks_of_entries(BLOCK, h.size(), &out), blocks_of(&h));
        prop_assert!(is_normal(&out));
        prop_assert_eq!(normalise(&out), out.clone());
        prop_assert!(out.len() <= h.entries().len());
    }

    /// Applying two diffs one after the other matches applying them block by block.
    #[test]
    fn chains_of_generations_match_the_model(
        (h, d1, e1) in arb_case(),
        seed in any::<u64>(),
    ) {
        let blocks = h.size() / BLOCK;
        let g1 = h.next_generation(&Diff::from_page_sets(build(7), BLOCK, h.size(), &d1, &e1).unwrap()).unwrap();
        let model1 = model_next(&blocks_of(&h), build(7), &block_mask(blocks, &d1), &block_mask(blocks, &e1));
        // A second, deterministic page set derived from the seed.
        let d2: Vec<_> = (0..blocks).filter(|b| (seed >> (b % 64)) & 1 == 1).map(|b| b * BLOCK..(b + 1) * BLOCK).collect();
        let e2: Vec<_> = (0..blocks).filter(|b| (seed >> ((b + 17) % 64)) & 3 == 0).map(|b| b * BLOCK..(b + 1) * BLOCK).collect();
        let g2 = g1.next_generation(&Diff::from_page_sets(build(8), BLOCK, h.size(), &d2, &e2).unwrap()).unwrap();
        let model2 = model_next(&model1, build(8), &block_mask(blocks, &d2), &block_mask(blocks, &e2));
        prop_assert_eq!(blocks_of(&g2), model2);
        prop_assert_eq!(g2.metadata().generation, h.metadata().generation + 2);
    }
}
