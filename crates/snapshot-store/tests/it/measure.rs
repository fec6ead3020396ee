//! Measurements for docs/storage.md, not tests: run by hand with
//! `cargo test --release -p snapshot-store --test it measure -- --ignored --nocapture`.
//! They print figures and assert only that every byte read is right; nothing is timed against
//! a limit.

use std::time::{Duration, Instant};

use snapshot_format::LayeredSource;
use snapshot_store::{CacheConfig, RemoteSource, StoreConfig, push_dir};
use test_support::{MIB, TestDir};

use crate::common::{self, Match, PAGE, Stack};

/// Reads the whole image in `piece`-byte reads, in order, through `read`, and checks each
/// piece with `check` outside the timing; returns the time spent in `read`.
fn sequential(
    size: u64,
    piece: u64,
    mut read: impl FnMut(u64, &mut [u8]),
    mut check: impl FnMut(u64, &[u8]),
) -> Duration {
    let mut buf = vec![0u8; piece as usize];
    let mut spent = Duration::ZERO;
    let mut offset = 0;
    while offset < size {
        let len = piece.min(size - offset) as usize;
        let start = Instant::now();
        read(offset, &mut buf[..len]);
        spent += start.elapsed();
        check(offset, &buf[..len]);
        offset += len as u64;
    }
    spent
}

#[test]
#[ignore = "a measurement, run by hand (see the module's doc)"]
fn measure_sequential_restore_and_page_reads() {
    let test = "store_measure";
    let Some(stack) = Stack::start(test) else {
        return;
    };
    let local = TestDir::new(test);
    let pages = 256 * MIB / PAGE;
    let memory = common::image(pages, 12);
    common::write_base(local.path(), &memory);
    drop(memory);
    push_dir(
        local.path(),
        &stack.store("measure", StoreConfig::default()),
    )
    .unwrap();
    let layered = LayeredSource::open_dir(local.path()).unwrap();
    let size = layered.header().size();
    let mut check = vec![0u8; (2 * MIB) as usize];

    println!(
        "image {} MiB, 4/5 of its pages data; reads of 2 MiB in order",
        size / MIB
    );
    println!("latency | chunk | local file | cold cache | warm cache | data GETs cold/warm");
    for latency_ms in [0u64, 1, 5] {
        for chunk in [MIB, 4 * MIB] {
            stack.proxy.set_latency(Duration::from_millis(latency_ms));
            let local_time = sequential(
                size,
                2 * MIB,
                |offset, buf| layered.read_into(offset, buf).unwrap(),
                |_, _| {},
            );
            let cache_dir = TestDir::new(&format!("{test}-cache"));
            let cache = CacheConfig::new(cache_dir.path()).with_chunk_size(chunk);
            let mut gets = Vec::new();
            let mut times = Vec::new();
            for _pass in ["cold", "warm"] {
                let store = stack.store("measure", StoreConfig::default());
                let source = RemoteSource::open(&store, &cache).unwrap();
                stack.proxy.reset_counts();
                times.push(sequential(
                    size,
                    2 * MIB,
                    |offset, buf| source.read_into(offset, buf).unwrap(),
                    |offset, buf| {
                        let expected = &mut check[..buf.len()];
                        layered.read_into(offset, expected).unwrap();
                        assert!(expected == buf, "bytes at {offset:#x} differ");
                    },
                ));
                // The last chunks may still be landing: the warm pass must find them all.
                source.wait_fetches();
                gets.push(stack.proxy.count(&Match::data_gets()));
            }
            println!(
                "{latency_ms} ms | {} MiB | {:.0} ms | {:.0} ms | {:.0} ms | {}/{}",
                chunk / MIB,
                local_time.as_secs_f64() * 1e3,
                times[0].as_secs_f64() * 1e3,
                times[1].as_secs_f64() * 1e3,
                gets[0],
                gets[1]
            );
        }
    }

    // Demand reads: one page at a time, scattered, on a cold cache: each miss waits for a
    // whole chunk. p50/p99 of the read's latency, beside the same reads from the local file.
    println!("scattered 4 KiB reads, cold cache, 1 MiB chunks: p50 / p99 (local file p50 / p99)");
    for latency_ms in [0u64, 1, 5] {
        stack.proxy.set_latency(Duration::from_millis(latency_ms));
        let cache_dir = TestDir::new(&format!("{test}-pages"));
        let store = stack.store("measure", StoreConfig::default());
        let source = RemoteSource::open(
            &store,
            &CacheConfig::new(cache_dir.path()).with_chunk_size(MIB),
        )
        .unwrap();
        let mut page = vec![0u8; PAGE as usize];
        let (mut remote, mut local_times) = (Vec::new(), Vec::new());
        // A stride of 1 MiB + 1 page: every read is in a chunk not fetched yet.
        for n in 0..200u64 {
            let offset = (n * (MIB + PAGE)) % size;
            let start = Instant::now();
            source.read_into(offset, &mut page).unwrap();
            remote.push(start.elapsed());
            let start = Instant::now();
            layered
                .read_into(offset, &mut check[..PAGE as usize])
                .unwrap();
            local_times.push(start.elapsed());
            assert!(check[..PAGE as usize] == page[..]);
        }
        let pct = |v: &mut Vec<Duration>, p: usize| {
            v.sort();
            v[(v.len() * p / 100).min(v.len() - 1)].as_secs_f64() * 1e3
        };
        println!(
            "{latency_ms} ms | {:.2} ms / {:.2} ms ({:.3} ms / {:.3} ms)",
            pct(&mut remote, 50),
            pct(&mut remote, 99),
            pct(&mut local_times, 50),
            pct(&mut local_times, 99)
        );
    }
}
