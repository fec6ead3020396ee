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
    source.wait_fetches();
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
                source.wait_fetches();
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

/// The environment variable that turns [`child_restore`] on: `<endpoint> <prefix> <cache dir>
/// <local snapshot dir> <chunk size>`, separated by newlines.
const CHILD_ENV: &str = "SNAPSHOT_STORE_TEST_CHILD";

#[test]
fn three_processes_on_one_cache_fetch_each_chunk_once() {
    let test = "store_three_processes";
    let Some(stack) = Stack::start(test) else {
        return;
    };
    let local = TestDir::new(test);
    let memory = common::image(800, 11);
    let header = common::write_base(local.path(), &memory);
    push_dir(
        local.path(),
        &stack.store("processes", StoreConfig::default()),
    )
    .unwrap();
    let cache_dir = TestDir::new(&format!("{test}-cache"));
    const CHUNK: u64 = 16 * 1024;
    stack.proxy.set_latency(Duration::from_millis(1));
    stack.proxy.reset_counts();

    // Two other processes (this test binary, running only `child_restore`) and this one read
    // the whole image at once through the same cache directory.
    let spec = [
        stack.proxy.endpoint(),
        "processes".into(),
        cache_dir.path().display().to_string(),
        local.path().display().to_string(),
        CHUNK.to_string(),
    ]
    .join("\n");
    let children: Vec<_> = (0..2)
        .map(|_| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--ignored",
                    "--exact",
                    "sharing::child_restore",
                    "--nocapture",
                ])
                .env(CHILD_ENV, &spec)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let store = stack.store("processes", StoreConfig::default());
    let cache = CacheConfig::new(cache_dir.path()).with_chunk_size(CHUNK);
    let source = RemoteSource::open(&store, &cache).unwrap();
    common::assert_same_bytes(local.path(), 24 * 1024, |offset, buf| {
        source.read_into(offset, buf).unwrap();
    });
    source.wait_fetches();
    let mut fetches = store.stats().chunk_fetches;
    for child in children {
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "child failed: {stdout}");
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("child chunk_fetches "))
            .unwrap_or_else(|| panic!("no report from the child: {stdout}"));
        fetches += line.trim().parse::<u64>().unwrap();
    }
    let chunks = common::data_chunks(&header, CHUNK);
    assert_eq!(stack.proxy.count(&Match::data_gets()), chunks);
    assert_eq!(fetches, chunks as u64);
}

/// Not a test by itself: the other process of
/// [`three_processes_on_one_cache_fetch_each_chunk_once`], which runs it with [`CHILD_ENV`].
#[test]
#[ignore = "run by three_processes_on_one_cache_fetch_each_chunk_once in a child process"]
fn child_restore() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        test_support::skip(
            "store_child_restore",
            "runs only as the child of its parent test",
        );
        return;
    };
    let fields: Vec<&str> = spec.lines().collect();
    let [endpoint, prefix, cache_dir, local, chunk] = fields[..] else {
        panic!("bad {CHILD_ENV}: {spec:?}");
    };
    let store = snapshot_store::Store::open(
        &format!("s3://{}/{prefix}", common::server::BUCKET),
        common::s3_config(endpoint, StoreConfig::default()),
    )
    .unwrap();
    let cache = CacheConfig::new(cache_dir).with_chunk_size(chunk.parse().unwrap());
    let source = RemoteSource::open(&store, &cache).unwrap();
    // Backwards, so its misses meet the parent's forward ones.
    let size = source.size();
    let step = 20 * 1024;
    let layered = snapshot_format::LayeredSource::open_dir(std::path::Path::new(local)).unwrap();
    let (mut expected, mut actual) = (vec![0u8; step], vec![0u8; step]);
    let mut end = size;
    while end > 0 {
        let len = (end.min(step as u64)) as usize;
        let offset = end - len as u64;
        layered.read_into(offset, &mut expected[..len]).unwrap();
        source.read_into(offset, &mut actual[..len]).unwrap();
        assert!(
            expected[..len] == actual[..len],
            "bytes at {offset:#x} differ"
        );
        end = offset;
    }
    source.wait_fetches();
    println!("child chunk_fetches {}", store.stats().chunk_fetches);
}
