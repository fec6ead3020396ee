//! Bulk population with UFFDIO_COPY into a fresh registered region (no faults), by chunk size,
//! wrapper against the raw ioctl in the same run. Each iteration maps and registers a new
//! 256 MiB region (outside the timing), so population includes allocating the pages.

mod common;

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::Mapping;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use uffd_core::{CopyMode, PageSize, Range, RegisterMode, Uffd, UffdBuilder, raw};

const REGION: usize = 256 << 20;

fn copy_wrapper(uffd: &Uffd, dst: u64, src: &[u8], chunk: usize) {
    for off in (0..REGION).step_by(chunk) {
        let range = Range::new(dst + off as u64, chunk as u64, PageSize::Base4K).expect("range");
        let outcome = uffd.copy(range, &src[off..off + chunk], CopyMode::empty());
        assert!(outcome.is_complete(), "{outcome:?}");
    }
}

fn copy_raw(fd: i32, dst: u64, src: &[u8], chunk: usize) {
    for off in (0..REGION).step_by(chunk) {
        let mut arg = raw::uffdio_copy {
            dst: dst + off as u64,
            src: src[off..].as_ptr() as u64,
            len: chunk as u64,
            mode: 0,
            copy: 0,
        };
        // SAFETY: UFFDIO_COPY takes a `uffdio_copy`; `src[off..off + chunk]` is live memory.
        let rc = unsafe { libc::ioctl(fd, raw::UFFDIO_COPY as libc::c_ulong, &mut arg) };
        assert_eq!(rc, 0, "copy: {}", std::io::Error::last_os_error());
    }
}

fn run(src: &Mapping, chunk: usize, wrapper: bool, iters: u64) -> Duration {
    let uffd = UffdBuilder::new().create().expect("uffd");
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let dst = Mapping::new(REGION);
        let range = Range::new(dst.addr(), REGION as u64, PageSize::Base4K).expect("range");
        uffd.register(range, RegisterMode::MISSING)
            .expect("register");
        let start = Instant::now();
        if wrapper {
            copy_wrapper(&uffd, dst.addr(), src.as_slice(), chunk);
        } else {
            copy_raw(uffd.as_raw_fd(), dst.addr(), src.as_slice(), chunk);
        }
        total += start.elapsed();
    }
    total
}

fn bench_bulk(c: &mut Criterion) {
    let src = Mapping::populated(REGION, 0xa5);
    let mut group = c.benchmark_group("bulk_copy_256MiB");
    group.throughput(Throughput::Bytes(REGION as u64));
    group
        .measurement_time(Duration::from_secs(5))
        .sample_size(10);
    for (chunk, name) in [(4096, "4KiB"), (64 << 10, "64KiB"), (2 << 20, "2MiB")] {
        group.bench_function(format!("raw_ioctl/{name}"), |b| {
            b.iter_custom(|n| run(&src, chunk, false, n))
        });
        group.bench_function(format!("uffd_core/{name}"), |b| {
            b.iter_custom(|n| run(&src, chunk, true, n))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_bulk);
criterion_main!(benches);
