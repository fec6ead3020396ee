//! The engine against its baselines, in one run: the raw-ioctl floor (`read` + `UFFDIO_COPY`,
//! no bookkeeping) and a naive single-threaded one-page-per-fault handler (the design of
//! Firecracker's example handler). Figures and analysis: `docs/benchmarks.md`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Guest, IMAGE, PAGE, naive_handler, pin_to, quick, raw_floor_handler, source, unpin};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use snapshot_format::Chunk;
use uffd_core::{CopyMode, PageSize, Range};
use uffd_engine::{CloseWhen, Engine, EngineConfig};

#[derive(Clone, Copy, PartialEq)]
enum Handler {
    Floor,
    Naive,
    Engine,
}

/// Serves `guest` with `handler` while `work` touches it; returns what `work` measured. The
/// last page is the baselines' stop signal and is touched after `work`.
fn serve_while(
    handler: Handler,
    pages: u64,
    config: EngineConfig,
    work: impl FnOnce(&Arc<Guest>) -> Duration,
) -> Duration {
    let (guest, uffd) = Guest::new((pages + 1) * PAGE);
    let stop_addr = guest.addr() + pages * PAGE;
    let base = guest.addr();
    match handler {
        Handler::Engine => {
            let engine = Engine::start(uffd, guest.layout(), source(), config).expect("engine");
            let took = work(&guest);
            engine.close(CloseWhen::OwnerGuarantees).expect("close");
            took
        }
        Handler::Floor | Handler::Naive => {
            let pinned = config.reader_cpus.first().copied();
            let server = std::thread::spawn(move || {
                if let Some(cpu) = pinned {
                    pin_to(cpu);
                }
                match handler {
                    Handler::Floor => raw_floor_handler(&uffd, stop_addr),
                    _ => naive_handler(&uffd, base, &source(), stop_addr),
                }
            });
            let took = work(&guest);
            guest.touch(pages);
            server.join().expect("handler");
            took
        }
    }
}

fn latency(handler: Handler, same_cpu: bool, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(32768);
        let config = if same_cpu {
            EngineConfig {
                readers: 1,
                reader_cpus: vec![0],
                ..EngineConfig::default()
            }
        } else {
            EngineConfig::default()
        };
        total += serve_while(handler, n, config, |guest| {
            if same_cpu {
                pin_to(0);
            }
            let mut spent = Duration::ZERO;
            for page in 0..n {
                let start = Instant::now();
                std::hint::black_box(guest.touch(page));
                spent += start.elapsed();
            }
            unpin();
            spent
        });
        left -= n;
    }
    total
}

fn bench_latency(c: &mut Criterion) {
    let _ = source();
    let mut group = c.benchmark_group("fault_latency_4k");
    quick(&mut group, 4, 20);
    for (same_cpu, place) in [(true, "same_cpu"), (false, "unpinned")] {
        for (handler, name) in [
            (Handler::Floor, "floor_raw"),
            (Handler::Naive, "naive"),
            (Handler::Engine, "engine"),
        ] {
            group.bench_function(format!("{name}/{place}"), |b| {
                b.iter_custom(|n| latency(handler, same_cpu, n))
            });
        }
    }
    group.finish();
}

const TPUT_PAGES: u64 = 16384;

fn two_faulters(handler: Handler, config: EngineConfig) -> Duration {
    serve_while(handler, TPUT_PAGES, config, |guest| {
        let start = Instant::now();
        let halves: Vec<_> = (0..2u64)
            .map(|t| {
                let guest = guest.clone();
                std::thread::spawn(move || {
                    for page in (t * TPUT_PAGES / 2)..((t + 1) * TPUT_PAGES / 2) {
                        std::hint::black_box(guest.touch(page));
                    }
                })
            })
            .collect();
        for h in halves {
            h.join().unwrap();
        }
        start.elapsed()
    })
}

fn bench_throughput(c: &mut Criterion) {
    let _ = source();
    let mut group = c.benchmark_group("faults_2_faulters_shared_uffd");
    quick(&mut group, 5, 10);
    group.throughput(Throughput::Elements(TPUT_PAGES));
    let batch = |event_batch| EngineConfig {
        event_batch,
        ..EngineConfig::default()
    };
    let variants = [
        (Handler::Naive, "naive_1_thread", EngineConfig::default()),
        (Handler::Engine, "engine_2_readers_batch_64", batch(64)),
        (Handler::Engine, "engine_2_readers_batch_1", batch(1)),
        (
            Handler::Engine,
            "engine_2_readers_batch_1_pinned",
            EngineConfig {
                reader_cpus: vec![0, 1],
                ..batch(1)
            },
        ),
    ];
    for (handler, name, config) in variants {
        group.bench_function(name, |b| {
            b.iter_custom(|n| (0..n).map(|_| two_faulters(handler, config.clone())).sum())
        });
    }
    group.finish();
}

const SEQ_BYTES: u64 = 1 << 30;

fn sequential(handler: Handler, fault_around: u64) -> Duration {
    let config = EngineConfig {
        fault_around_pages: fault_around,
        ..EngineConfig::default()
    };
    serve_while(handler, SEQ_BYTES / PAGE, config, |guest| {
        let start = Instant::now();
        for page in 0..SEQ_BYTES / PAGE {
            std::hint::black_box(guest.touch(page));
        }
        start.elapsed()
    })
}

fn bench_sequential(c: &mut Criterion) {
    let _ = source();
    let mut group = c.benchmark_group("sequential_touch_1GiB");
    quick(&mut group, 10, 10);
    group.throughput(Throughput::Bytes(SEQ_BYTES));
    group.bench_function("naive", |b| {
        b.iter_custom(|n| (0..n).map(|_| sequential(Handler::Naive, 1)).sum())
    });
    group.bench_function("engine_no_fault_around", |b| {
        b.iter_custom(|n| (0..n).map(|_| sequential(Handler::Engine, 1)).sum())
    });
    group.bench_function("engine_fault_around_64", |b| {
        b.iter_custom(|n| (0..n).map(|_| sequential(Handler::Engine, 64)).sum())
    });
    group.finish();
}

/// The bulk floor: one thread, 2 MiB `UFFDIO_COPY`s straight from the image mapping.
fn bulk_copy_floor() -> Duration {
    let (guest, uffd) = Guest::new(IMAGE);
    let src = source();
    let start = Instant::now();
    for off in (0..IMAGE).step_by(2 << 20) {
        let Ok(Chunk::Data(bytes)) = src.chunk(off, 2 << 20) else {
            panic!("image hole")
        };
        let dst = Range::new(guest.addr() + off, 2 << 20, PageSize::Base4K).unwrap();
        assert!(uffd.copy(dst, bytes, CopyMode::empty()).is_complete());
    }
    start.elapsed()
}

fn prefetch(workers: usize) -> Duration {
    let (guest, uffd) = Guest::new(IMAGE);
    let config = EngineConfig {
        prefetch_workers: workers,
        ..EngineConfig::default()
    };
    let engine = Engine::start(uffd, guest.layout(), source(), config).expect("engine");
    let start = Instant::now();
    let report = engine.prefetch(std::iter::once(0..IMAGE)).wait(PAGE);
    let took = start.elapsed();
    assert_eq!(report.installed_pages, IMAGE / PAGE);
    engine.close(CloseWhen::OwnerGuarantees).unwrap();
    took
}

fn bench_prefetch(c: &mut Criterion) {
    let _ = source();
    let mut group = c.benchmark_group("prefetch_1GiB");
    quick(&mut group, 10, 10);
    group.throughput(Throughput::Bytes(IMAGE));
    group.bench_function("floor_bulk_copy_2MiB_1_thread", |b| {
        b.iter_custom(|n| (0..n).map(|_| bulk_copy_floor()).sum())
    });
    group.bench_function("engine_1_worker", |b| {
        b.iter_custom(|n| (0..n).map(|_| prefetch(1)).sum())
    });
    group.bench_function("engine_2_workers", |b| {
        b.iter_custom(|n| (0..n).map(|_| prefetch(2)).sum())
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_latency,
    bench_throughput,
    bench_sequential,
    bench_prefetch
);
criterion_main!(benches);
