//! Every byte read back through the store and the cache: cold, warm, across generations.

// Page sets are slices of byte ranges; one range is a set of one.
#![allow(clippy::single_range_in_vec_init)]

use snapshot_store::{CacheConfig, RemoteSource, StoreConfig, push_dir};
use test_support::TestDir;

use crate::common::{self, Match, PAGE, Stack};

const CHUNK: u64 = 64 * 1024;

#[test]
fn cold_cache_fetches_each_chunk_once_and_warm_cache_fetches_nothing() {
    let test = "store_cold_warm";
    let Some(stack) = Stack::start(test) else {
        return;
    };
    let local = TestDir::new(test);
    let memory = common::image(700, 1);
    let header = common::write_base(local.path(), &memory);
    let store = stack.store("cold-warm", StoreConfig::default());
    push_dir(local.path(), &store).unwrap();
    let cache_dir = TestDir::new(&format!("{test}-cache"));
    let cache = CacheConfig::new(cache_dir.path()).with_chunk_size(CHUNK);

    stack.proxy.reset_counts();
    let cold = RemoteSource::open(&store, &cache).unwrap();
    assert_eq!(cold.size(), memory.len() as u64);
    common::assert_same_bytes(local.path(), 48 * 1024, |offset, buf| {
        cold.read_into(offset, buf).unwrap();
    });
    cold.wait_fetches();
    let chunks = common::data_chunks(&header, CHUNK);
    assert!(chunks > 10, "the image spans many chunks ({chunks})");
    assert_eq!(stack.proxy.count(&Match::data_gets()), chunks);
    assert_eq!(store.stats().chunk_fetches, chunks as u64);
    drop(cold);

    // A later restore on the same host: a new client, the same cache directory.
    let warm_store = stack.store("cold-warm", StoreConfig::default());
    stack.proxy.reset_counts();
    let warm = RemoteSource::open(&warm_store, &cache).unwrap();
    common::assert_same_bytes(local.path(), 48 * 1024, |offset, buf| {
        assert!(
            warm.read_resident(offset, buf).unwrap(),
            "{offset:#x} resident"
        );
    });
    common::assert_same_bytes(local.path(), 100 * 1024, |offset, buf| {
        warm.read_into(offset, buf).unwrap();
    });
    assert_eq!(stack.proxy.count(&Match::data_gets()), 0);
    assert_eq!(warm_store.stats().chunk_fetches, 0);
}

#[test]
fn read_resident_never_fetches_and_holes_need_no_fetch() {
    let test = "store_resident";
    let Some(stack) = Stack::start(test) else {
        return;
    };
    let local = TestDir::new(test);
    let memory = common::image(64, 2);
    common::write_base(local.path(), &memory);
    let store = stack.store("resident", StoreConfig::default());
    push_dir(local.path(), &store).unwrap();
    let cache_dir = TestDir::new(&format!("{test}-cache"));
    let source = RemoteSource::open(
        &store,
        &CacheConfig::new(cache_dir.path()).with_chunk_size(CHUNK),
    )
    .unwrap();
    stack.proxy.reset_counts();

    let mut page = vec![0xEEu8; PAGE as usize];
    // Page 3 is a hole (the image's pages n % 5 == 3 are zero): resident without a fetch.
    assert!(source.read_resident(3 * PAGE, &mut page).unwrap());
    assert!(page.iter().all(|&b| b == 0));
    page.fill(0xEE);
    source.read_into(8 * PAGE, &mut page).unwrap();
    assert!(page.iter().all(|&b| b == 0));
    assert_eq!(source.hole_len(3 * PAGE, 100 * PAGE).unwrap(), PAGE);
    assert_eq!(source.hole_len(3 * PAGE + 100, 10).unwrap(), 10);
    assert_eq!(source.hole_len(0, PAGE).unwrap(), 0);
    assert!(source.hole_len(source.size(), PAGE).is_err());
    // Page 0 holds data and nothing is cached: absent, and nothing was asked of the store.
    assert!(!source.read_resident(0, &mut page).unwrap());
    assert_eq!(stack.proxy.count(&Match::data_gets()), 0);

    source.read_into(0, &mut page).unwrap();
    assert_eq!(page, memory[..PAGE as usize]);
    assert_eq!(stack.proxy.count(&Match::data_gets()), 1);
    source.wait_fetches();
    page.fill(0xEE);
    assert!(source.read_resident(0, &mut page).unwrap());
    assert_eq!(page, memory[..PAGE as usize]);
    assert_eq!(stack.proxy.count(&Match::data_gets()), 1);

    let size = source.size();
    assert!(
        source
            .read_into(size - PAGE, &mut vec![0; 2 * PAGE as usize])
            .is_err()
    );
}

#[test]
fn a_diff_generation_reads_over_its_base_in_the_store() {
    let test = "store_diff";
    let Some(stack) = Stack::start(test) else {
        return;
    };
    let local = TestDir::new(test);
    let mut memory = common::image(300, 3);
    let base = common::write_base(local.path(), &memory);
    let store = stack.store("chain", StoreConfig::default());
    let first = push_dir(local.path(), &store).unwrap();
    assert_eq!(first.uploaded.len(), 2, "{first:?}");

    // The guest writes pages 10..20 and 200, frees 50..60; the next pause writes a diff.
    let fresh = common::image(300, 99);
    for page in (10..20).chain([200]) {
        let range = (page * PAGE) as usize..((page + 1) * PAGE) as usize;
        memory[range.clone()].copy_from_slice(&fresh[range]);
    }
    memory[(50 * PAGE) as usize..(60 * PAGE) as usize].fill(0);
    let dirty = [10 * PAGE..20 * PAGE, 200 * PAGE..201 * PAGE];
    let empty = [50 * PAGE..60 * PAGE];
    let next = common::write_next(local.path(), &base, &memory, &dirty, &empty);
    assert_eq!(next.metadata().generation, 1);
    let second = push_dir(local.path(), &store).unwrap();
    assert_eq!(
        second.skipped.len(),
        1,
        "the base's data is already there: {second:?}"
    );

    let cache_dir = TestDir::new(&format!("{test}-cache"));
    let source = RemoteSource::open(
        &store,
        &CacheConfig::new(cache_dir.path()).with_chunk_size(CHUNK),
    )
    .unwrap();
    assert_eq!(source.header(), &next);
    let mut whole = vec![0u8; memory.len()];
    source.read_into(0, &mut whole).unwrap();
    assert!(
        whole == memory,
        "generation 1 read back differs from the guest's memory"
    );
    common::assert_same_bytes(local.path(), 24 * 1024, |offset, buf| {
        source.read_into(offset, buf).unwrap();
    });
    assert_eq!(
        stack.proxy.count(&Match::data_gets()),
        common::data_chunks(&next, CHUNK)
    );
}

#[test]
fn a_read_is_released_when_its_bytes_land_before_the_rest_of_the_chunk() {
    let test = "store_progressive";
    let Some(stack) = Stack::start(test) else {
        return;
    };
    let local = TestDir::new(test);
    let memory = common::image(256, 13);
    common::write_base(local.path(), &memory);
    let config = StoreConfig {
        // Long enough that the held response is never given up on: the read must end first.
        idle_timeout: test_support::TIMEOUT * 2,
        ..StoreConfig::default()
    };
    let store = stack.store("progressive", config);
    push_dir(local.path(), &store).unwrap();
    let cache_dir = TestDir::new(&format!("{test}-cache"));
    // One 1 MiB chunk; the proxy holds its body after 64 KiB until released.
    let source = RemoteSource::open(
        &store,
        &CacheConfig::new(cache_dir.path()).with_chunk_size(1 << 20),
    )
    .unwrap();
    stack.proxy.fail_next(
        Match::data_gets(),
        common::Fault::Hold { after: 64 * 1024 },
        1,
    );

    // Page 1 is in the first 64 KiB of the data object: served while the rest is held.
    let mut page = vec![0u8; PAGE as usize];
    source.read_into(PAGE, &mut page).unwrap();
    assert_eq!(page, memory[PAGE as usize..2 * PAGE as usize]);
    assert!(
        !source.read_resident(PAGE, &mut page).unwrap(),
        "the chunk cannot be complete: the proxy still holds its body"
    );
    assert_eq!(store.stats().chunk_fetches, 0);

    stack.proxy.release();
    source.wait_fetches();
    assert!(source.read_resident(PAGE, &mut page).unwrap());
    let stats = store.stats();
    assert_eq!((stats.chunk_fetches, stats.retries), (1, 0), "{stats:?}");
    assert_eq!(stack.proxy.count(&Match::data_gets()), 1);
    common::assert_same_bytes(local.path(), 40 * 1024, |offset, buf| {
        assert!(source.read_resident(offset, buf).unwrap());
    });
}
