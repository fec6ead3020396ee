//! One cache directory shared: by threads of one source (misses coalesced in the process) and
//! by two sources with their own files and clients, as two daemons on one host would be
//! (misses serialised by the per-chunk locks).

use std::sync::Barrier;
use std::time::Duration;

use snapshot_store::{CacheConfig, RemoteSource, StoreConfig, push_dir};
use test_support::TestDir;

use crate::common::{self, Match, PAGE, Stack};

#[test]
fn concurrent_misses_on_one_chunk_share_one_get() {
    let test = "store_coalesce";
    let Some(stack) = Stack::start(test) else {
        return;
    };
    let local = TestDir::new(test);
    let memory = common::image(256, 4);
    common::write_base(local.path(), &memory);
    let store = stack.store("coalesce", StoreConfig::default());
    push_dir(local.path(), &store).unwrap();
    let cache_dir = TestDir::new(&format!("{test}-cache"));
    // One chunk holds the whole data object.
    let cache = CacheConfig::new(cache_dir.path()).with_chunk_size(1 << 20);
    let source = RemoteSource::open(&store, &cache).unwrap();
    // The latency keeps the first fetch in flight while the other threads miss.
    stack.proxy.set_latency(Duration::from_millis(300));
    stack.proxy.reset_counts();

    const THREADS: u64 = 8;
    let start = Barrier::new(THREADS as usize);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (source, start, memory) = (&source, &start, &memory);
            s.spawn(move || {
                // Distinct data pages of the same chunk (page 3 is a hole, page 5n+1 is not).
                let page = 5 * t + 1;
                let mut buf = vec![0u8; PAGE as usize];
                start.wait();
                source.read_into(page * PAGE, &mut buf).unwrap();
                assert_eq!(
                    buf,
                    memory[(page * PAGE) as usize..((page + 1) * PAGE) as usize]
                );
            });
        }
    });
    assert_eq!(stack.proxy.count(&Match::data_gets()), 1);
    let stats = store.stats();
    assert_eq!(stats.chunk_fetches, 1);
    assert_eq!(stats.coalesced + stats.chunk_hits, THREADS - 1, "{stats:?}");
}

#[test]
fn two_sources_on_one_cache_fetch_each_chunk_once() {
    let test = "store_two_sources";
    let Some(stack) = Stack::start(test) else {
        return;
    };
    let local = TestDir::new(test);
    let memory = common::image(600, 5);
    let header = common::write_base(local.path(), &memory);
    let config = StoreConfig::default();
    push_dir(local.path(), &stack.store("shared", config.clone())).unwrap();
    let cache_dir = TestDir::new(&format!("{test}-cache"));
    let cache = CacheConfig::new(cache_dir.path()).with_chunk_size(32 * 1024);
    stack.proxy.set_latency(Duration::from_millis(2));
    stack.proxy.reset_counts();

    // Two clients and two sources, each with its own cache file handles: as two daemons.
    let stores = [
        stack.store("shared", config.clone()),
        stack.store("shared", config),
    ];
    let sources: Vec<RemoteSource> = stores
        .iter()
        .map(|store| RemoteSource::open(store, &cache).unwrap())
        .collect();
    let start = Barrier::new(2);
    std::thread::scope(|s| {
        for (n, source) in sources.iter().enumerate() {
            let (start, local) = (&start, local.path());
            s.spawn(move || {
                start.wait();
                // One reads forwards, the other in a different piece size: their misses meet.
                let step = if n == 0 { 40 * 1024 } else { 56 * 1024 };
                common::assert_same_bytes(local, step, |offset, buf| {
                    source.read_into(offset, buf).unwrap();
                });
            });
        }
    });
    let chunks = common::data_chunks(&header, 32 * 1024);
    assert_eq!(stack.proxy.count(&Match::data_gets()), chunks);
    let (a, b) = (stores[0].stats(), stores[1].stats());
    assert_eq!(
        a.chunk_fetches + b.chunk_fetches,
        chunks as u64,
        "{a:?} {b:?}"
    );
}
