//! `LayeredSource::read_into` of a 4 KiB and a 2 MiB page from a page-cached data file: with
//! checksum verification, with the per-read `fstat` check (data without checksums), and the
//! floor, a plain `pread` of the same bytes with neither; `read_resident` beside them.

use std::collections::HashMap;
use std::fs::File;
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use snapshot_format::{LayeredSource, snapshot_dir, write_generation_zero};
use uuid::Uuid;

/// The data file: 64 MiB, so 4 KiB reads cycle through more than the CPU caches hold.
const FILE_LEN: u64 = 64 << 20;

fn reads(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("snapshot-format-bench-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("bench directory");
    let build = Uuid::from_bytes([1; 16]);
    let path = snapshot_dir::data_path(&dir, build);
    // Every byte non-zero, so generation 0 maps the whole file to itself.
    let image: Vec<u8> = (0..FILE_LEN).map(|i| (i % 251) as u8 | 1).collect();
    let mut file = File::create(&path).expect("data file");
    let header = write_generation_zero(&image[..], 4096, build, &mut file).expect("written");
    drop(image);
    let files = HashMap::from([(build, path.clone())]);
    let verified = LayeredSource::open(header.clone(), &files).expect("open");
    let stat_checked = LayeredSource::open(header.without_checksums(), &files).expect("open");
    let plain = File::open(&path).expect("data file");

    for (name, len) in [("4KiB", 4096u64), ("2MiB", 2 << 20)] {
        let mut group = c.benchmark_group(format!("read_{name}"));
        group.throughput(Throughput::Bytes(len));
        let mut buf = vec![0u8; len as usize];
        let pages = FILE_LEN / len;
        let mut next = 0u64;
        let mut offset = move || {
            next = (next + 1) % pages;
            next * len
        };
        group.bench_function("floor_pread", |b| {
            b.iter(|| plain.read_exact_at(&mut buf, offset()).expect("pread"))
        });
        group.bench_function("read_into_fstat_check", |b| {
            b.iter(|| stat_checked.read_into(offset(), &mut buf).expect("read"))
        });
        group.bench_function("read_into_checksums", |b| {
            b.iter(|| verified.read_into(offset(), &mut buf).expect("read"))
        });
        group.bench_function("read_resident_checksums", |b| {
            b.iter(|| black_box(verified.read_resident(offset(), &mut buf).expect("read")))
        });
        group.finish();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1)).sample_size(30);
    targets = reads
}
criterion_main!(benches);
