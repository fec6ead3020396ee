//! Encode and decode of 1 M entries, native and E2B; and writing generation 0 of an image.

mod common;

use std::hint::black_box;
use std::time::Duration;

use common::{PAGE, build, header};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use snapshot_format::{Header, write_generation_zero};

const ENTRIES: usize = 1 << 20;

fn codecs(c: &mut Criterion) {
    let h = header(ENTRIES, 9);
    let native = h.encode_native();
    let e2b = h.encode_e2b();
    let mut group = c.benchmark_group("codec_1M_entries");
    group.throughput(Throughput::Elements(ENTRIES as u64));
    group.bench_function("encode_native", |b| b.iter(|| black_box(h.encode_native())));
    group.bench_function("decode_native", |b| {
        b.iter(|| black_box(Header::decode_native(black_box(&native)).unwrap()))
    });
    group.bench_function("encode_e2b", |b| b.iter(|| black_box(h.encode_e2b())));
    // Into a reused buffer: the format's own cost, without first-touch page faults of a fresh
    // 40 MB allocation.
    let mut buf = Vec::new();
    group.bench_function("encode_native_into_reused_buffer", |b| {
        b.iter(|| {
            buf.clear();
            h.encode_native_into(&mut buf);
            black_box(buf.len())
        })
    });
    group.bench_function("encode_e2b_into_reused_buffer", |b| {
        b.iter(|| {
            buf.clear();
            h.encode_e2b_into(&mut buf);
            black_box(buf.len())
        })
    });
    group.bench_function("decode_e2b", |b| {
        b.iter(|| black_box(Header::decode_e2b(black_box(&e2b)).unwrap()))
    });
    group.finish();
}

fn generation_zero(c: &mut Criterion) {
    // 64 MiB image, every other 64 KiB zero.
    let mut image = vec![0u8; 64 << 20];
    for (i, chunk) in image.chunks_mut(64 << 10).enumerate() {
        if i % 2 == 0 {
            chunk.fill(0x5a);
        }
    }
    let mut group = c.benchmark_group("write_generation_zero");
    group.throughput(Throughput::Bytes(image.len() as u64));
    group.bench_function("64MiB_half_zero_to_sink", |b| {
        b.iter(|| {
            black_box(
                write_generation_zero(&image[..], PAGE, build(1), &mut std::io::sink()).unwrap(),
            )
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1)).sample_size(20);
    targets = codecs, generation_zero
}
criterion_main!(benches);
