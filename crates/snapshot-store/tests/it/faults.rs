//! Through the proxy's faults: resets, truncated bodies, 503s and stalls are retried and
//! every byte still comes out right; a store that stays down is a typed error, never zeros.

use std::time::Duration;

use snapshot_store::{CacheConfig, RemoteSource, StoreConfig, StoreError, push_dir};
use test_support::TestDir;

use crate::common::{self, Fault, Match, PAGE, Stack};

const CHUNK: u64 = 256 * 1024;

/// A pushed snapshot, a source on a fresh cache, and the local copy to compare with.
struct Setup {
    stack: Stack,
    local: TestDir,
    _cache: TestDir,
    source: RemoteSource,
}

fn setup(test: &str, config: StoreConfig) -> Option<Setup> {
    let stack = Stack::start(test)?;
    let local = TestDir::new(test);
    common::write_base(local.path(), &common::image(300, 6));
    let store = stack.store("faults", config);
    push_dir(local.path(), &store).unwrap();
    let cache = TestDir::new(&format!("{test}-cache"));
    let source = RemoteSource::open(
        &store,
        &CacheConfig::new(cache.path()).with_chunk_size(CHUNK),
    )
    .unwrap();
    stack.proxy.reset_counts();
    Some(Setup {
        stack,
        local,
        _cache: cache,
        source,
    })
}

/// Reads every byte, and checks how many GETs and retries the faults cost.
fn read_all_after(setup: &Setup, faults: usize) {
    common::assert_same_bytes(setup.local.path(), 64 * 1024, |offset, buf| {
        setup.source.read_into(offset, buf).unwrap();
    });
    // Reads end when their bytes land; faults later in a chunk are retried after.
    setup.source.wait_fetches();
    let chunks = common::data_chunks(setup.source.header(), CHUNK);
    assert_eq!(
        setup.stack.proxy.count(&Match::data_gets()),
        chunks + faults,
        "each fault costs one more GET"
    );
    assert_eq!(setup.source.store().stats().retries, faults as u64);
}

#[test]
fn resets_are_retried() {
    let Some(setup) = setup("store_resets", common::quick_config()) else {
        return;
    };
    let proxy = &setup.stack.proxy;
    proxy.fail_next(Match::data_gets(), Fault::Reset, 2);
    proxy.fail_next(Match::data_gets(), Fault::ResetMidBody { after: 10_000 }, 2);
    read_all_after(&setup, 4);
}

#[test]
fn truncated_bodies_are_retried() {
    let Some(setup) = setup("store_truncated", common::quick_config()) else {
        return;
    };
    let proxy = &setup.stack.proxy;
    proxy.fail_next(Match::data_gets(), Fault::Truncate { body: 0 }, 1);
    proxy.fail_next(Match::data_gets(), Fault::Truncate { body: 5_000 }, 2);
    read_all_after(&setup, 3);
}

#[test]
fn unavailable_answers_are_retried() {
    let Some(setup) = setup("store_503", common::quick_config()) else {
        return;
    };
    setup
        .stack
        .proxy
        .fail_next(Match::data_gets(), Fault::Unavailable, 3);
    read_all_after(&setup, 3);
}

#[test]
fn a_stall_past_the_idle_timeout_becomes_a_retry() {
    let config = StoreConfig {
        idle_timeout: Duration::from_millis(300),
        ..common::quick_config()
    };
    let Some(setup) = setup("store_stall", config) else {
        return;
    };
    // Ten times the idle timeout: only giving up on the silent connection ends the read early.
    setup.stack.proxy.fail_next(
        Match::data_gets(),
        Fault::Stall {
            after: 20_000,
            pause: Duration::from_secs(3),
        },
        1,
    );
    read_all_after(&setup, 1);
}

#[test]
fn slow_but_moving_reads_are_not_cut() {
    // A 5 ms added latency on every request with a 300 ms idle timeout: no retry at all.
    let config = StoreConfig {
        idle_timeout: Duration::from_millis(300),
        ..common::quick_config()
    };
    let Some(setup) = setup("store_latency", config) else {
        return;
    };
    setup.stack.proxy.set_latency(Duration::from_millis(5));
    read_all_after(&setup, 0);
}

#[test]
fn a_store_that_stays_down_is_a_typed_error_never_zeros() {
    let config = common::quick_config();
    let attempts = config.attempts;
    let Some(setup) = setup("store_down", config) else {
        return;
    };
    let proxy = &setup.stack.proxy;
    proxy.fail_always(Match::data_gets(), Fault::Reset);
    let mut page = vec![0xEEu8; PAGE as usize];
    let error = setup.source.read_into(0, &mut page).unwrap_err();
    match &error {
        StoreError::Unavailable {
            object,
            range,
            attempts: made,
            ..
        } => {
            assert!(object.ends_with(".data"), "{error}");
            assert_eq!(range.clone(), 0..CHUNK);
            assert_eq!(*made, attempts);
        }
        other => panic!("expected Unavailable, got {other}"),
    }
    assert_eq!(proxy.count(&Match::data_gets()), attempts as usize);
    assert!(page.iter().all(|&b| b == 0xEE), "nothing was handed out");
    // The failure left nothing behind in the cache: the chunk is still absent...
    assert!(!setup.source.read_resident(0, &mut page).unwrap());

    // ...and once the store is back, the same source serves the right bytes.
    proxy.heal();
    proxy.reset_counts();
    common::assert_same_bytes(setup.local.path(), 64 * 1024, |offset, buf| {
        setup.source.read_into(offset, buf).unwrap();
    });
}
