//! The engine serving a separate VMM process (`test-vmm`, which owns the guest memory and the
//! uffd as Firecracker does and hands them over through the real handshake server): every
//! byte, balloon removes, fault-around, prefetch and graduation (source retries:
//! `vmm_retry`, dirty tracking: `vmm_dirty`, ESRCH: `vmm_exit`). Each for
//! 4 KiB pages and, where enough hugepages are free, 2 MiB pages (else a `SKIP` line).

use crate::common::vmm::{
    MIB, Pages, Served, assert_hashes, hugepages_or_skip, model_image, serve,
};
use test_vmm::{BLOCK, Split, Touch};
use uffd_engine::{CloseWhen, EngineConfig};

const HUGE: u64 = 2 * MIB;

/// Whether the blocks of `[first, first + count)` pages are all present (or all absent).
fn present(s: &Served, first: u64, count: u64) -> Vec<bool> {
    let flags = s.vmm.pagemap(first * s.page, count * s.page).unwrap();
    let per_page = (s.page / BLOCK) as usize;
    flags
        .chunks(per_page)
        .map(|c| {
            assert!(c.iter().all(|f| f.present() == c[0].present()), "{c:?}");
            c[0].present()
        })
        .collect()
}

// ---- every byte served ----------------------------------------------------------------

fn every_byte_served(test: &str, pages: Pages, regions: Vec<u64>) {
    let s = serve(test, pages, regions, EngineConfig::default());
    let model = model_image(s.size, s.page);
    let n = s.pages();
    // Four threads faulting the same pages at once: duplicates of pages in flight.
    let shared = n.min(64) * s.page;
    let report = s
        .vmm
        .touch(Touch::read(0, shared, 4).split(Split::Shared))
        .unwrap();
    assert_eq!(report.accesses, 4 * shared / s.page);
    assert_eq!(report.checksum, model.read_checksum(0, shared, 4));
    // The whole image from four threads, each its own chunk.
    let report = s.vmm.touch(Touch::read(0, s.size, 4)).unwrap();
    assert_eq!(report.accesses, n);
    assert_eq!(report.checksum, model.read_checksum(0, s.size, 1));
    let hashes = s.vmm.start_hash(0, s.size, 4).unwrap().wait().unwrap();
    assert_hashes(&hashes, &model, 0, s.size);
    assert!(present(&s, 0, n).iter().all(|&p| p));
    s.engine.settle();
    let m = s.engine.metrics();
    assert_eq!(m.installed_source, n, "one install per page: {m:?}");
    assert_eq!(m.installed_zero, 0, "{m:?}");
    s.finish();
}

#[test]
fn every_byte_served_4k() {
    every_byte_served("every-4k", Pages::Base, vec![4 * MIB, 2 * MIB, 2 * MIB]);
}

#[test]
fn every_byte_served_2m() {
    if hugepages_or_skip("every_byte_served_2m", 3) {
        every_byte_served("every-2m", Pages::Huge, vec![2 * HUGE, HUGE]);
    }
}

// ---- balloon ---------------------------------------------------------------------------

/// Touches the first `touched` pages, removes `removes` (page ranges, touched or not, some
/// across region boundaries), then reads everything: zeros in the removed ranges, image bytes
/// elsewhere; then writes into a removed page.
fn balloon(test: &str, pages: Pages, regions: Vec<u64>, touched: u64, removes: &[(u64, u64)]) {
    let s = serve(test, pages, regions.clone(), EngineConfig::default());
    let mut model = model_image(s.size, s.page);
    let (p, n) = (s.page, s.pages());
    s.vmm.touch(Touch::read(0, touched * p, 4)).unwrap();
    let mut removed = vec![false; n as usize];
    let mut events = 0;
    for &(first, count) in removes {
        s.vmm.madvise_dontneed(first * p, count * p).unwrap();
        model.zero(first * p, count * p);
        removed[first as usize..(first + count) as usize].fill(true);
        let mut start = 0;
        for &size in &regions {
            let (lo, hi) = (start / p, (start + size) / p);
            events += u64::from(first < hi && lo < first + count);
            start += size;
        }
    }
    let flags = present(&s, 0, n);
    for page in 0..n {
        let expect = page < touched && !removed[page as usize];
        assert_eq!(flags[page as usize], expect, "page {page} present");
    }
    let report = s.vmm.touch(Touch::read(0, s.size, 4)).unwrap();
    assert_eq!(report.checksum, model.read_checksum(0, s.size, 1));
    assert_hashes(
        &s.vmm.start_hash(0, s.size, 2).unwrap().wait().unwrap(),
        &model,
        0,
        s.size,
    );
    s.engine.settle();
    let m = s.engine.metrics();
    let zeroed = removed.iter().filter(|&&r| r).count() as u64;
    let untouched_removed = (touched..n).filter(|&q| removed[q as usize]).count() as u64;
    assert_eq!(m.removes, events, "REMOVE events: {m:?}");
    assert_eq!(m.installed_zero, zeroed, "{m:?}");
    assert_eq!(m.installed_source, n - untouched_removed, "{m:?}");

    // A write into a removed page: zeros around it; removed again, then written while absent.
    let (first, _) = removes[0];
    s.vmm.write(first * p + 8, &[1, 2, 3]).unwrap();
    model.write(first * p + 8, &[1, 2, 3]);
    s.vmm.madvise_dontneed(first * p, p).unwrap();
    model.zero(first * p, p);
    s.vmm.write(first * p + p - 2, &[7, 7]).unwrap();
    model.write(first * p + p - 2, &[7, 7]);
    assert_hashes(&s.vmm.hash(0, s.size).unwrap(), &model, 0, s.size);
    s.finish();
}

#[test]
fn balloon_4k() {
    // Regions: pages 0..1024, 1024..1536, 1536..2048; the first 1024 touched.
    let removes = [(10, 10), (1500, 10), (1020, 8), (1530, 10), (2047, 1)];
    balloon(
        "balloon-4k",
        Pages::Base,
        vec![4 * MIB, 2 * MIB, 2 * MIB],
        1024,
        &removes,
    );
}

#[test]
fn balloon_2m() {
    if hugepages_or_skip("balloon_2m", 4) {
        // Regions: pages 0..2, 2, 3; pages 0 and 1 touched.
        let removes = [(1, 1), (3, 1), (1, 2)];
        balloon(
            "balloon-2m",
            Pages::Huge,
            vec![2 * HUGE, HUGE, HUGE],
            2,
            &removes,
        );
    }
}

// ---- fault-around ----------------------------------------------------------------------

/// Read faults install their aligned window of still-Missing pages, never past the region
/// holding the fault (the window may cross into another region of the image, which lives
/// elsewhere in the VMM's address space). Each step: (page touched, pages expected present
/// afterwards as a range).
fn fault_around(
    test: &str,
    pages: Pages,
    regions: Vec<u64>,
    window: u64,
    steps: &[(u64, u64, u64)],
) {
    let config = EngineConfig {
        fault_around_pages: window,
        ..EngineConfig::default()
    };
    let s = serve(test, pages, regions, config);
    let model = model_image(s.size, s.page);
    let (p, n) = (s.page, s.pages());
    let mut expect = vec![false; n as usize];
    let mut installed = 0;
    for (i, &(page, from, to)) in steps.iter().enumerate() {
        let report = s.vmm.touch(Touch::read(page * p, p, 1)).unwrap();
        assert_eq!(report.checksum, model.word(page * p), "page {page}");
        expect[from as usize..to as usize].fill(true);
        installed += to - from;
        s.engine.settle();
        assert_eq!(present(&s, 0, n), expect, "after touching page {page}");
        s.engine.settle();
        let m = s.engine.metrics();
        assert_eq!(m.faults, i as u64 + 1, "one fault per step: {m:?}");
        assert_eq!(m.installed_source, installed, "{m:?}");
        assert_eq!(m.fault_around_pages, installed - (i as u64 + 1), "{m:?}");
    }
    // The installed pages hold the image's bytes and fault no more.
    let faults = s.engine.metrics().faults;
    for (page, _) in expect.iter().enumerate().filter(|(_, p)| **p) {
        let offset = page as u64 * p;
        assert_hashes(&s.vmm.hash(offset, p).unwrap(), &model, offset, p);
    }
    s.engine.settle();
    assert_eq!(s.engine.metrics().faults, faults);
    assert_hashes(&s.vmm.hash(0, s.size).unwrap(), &model, 0, s.size);
    s.finish();
}

#[test]
fn fault_around_4k() {
    // Regions: pages 0..256, 256..266 (ten pages, so the 16-page window 256..272 spans
    // regions 1 and 2), 266..522.
    let steps = [
        (5, 0, 16),
        (260, 256, 266),
        (268, 266, 272),
        (300, 288, 304),
    ];
    fault_around(
        "around-4k",
        Pages::Base,
        vec![MIB, 10 * 4096, MIB],
        16,
        &steps,
    );
}

#[test]
fn fault_around_2m() {
    if hugepages_or_skip("fault_around_2m", 5) {
        // Regions: page 0, pages 1..5; the 4-page window 0..4 spans both.
        let steps = [(0, 0, 1), (2, 1, 4), (4, 4, 5)];
        fault_around("around-2m", Pages::Huge, vec![HUGE, 4 * HUGE], 4, &steps);
    }
}

// ---- prefetch and graduation ------------------------------------------------------------

/// Some pages removed, some read, some written; prefetch of the image in two spans, upper
/// half first: Missing pages installed, every other page skipped and counted; only the removed
/// pages fault afterwards.
fn prefetch(test: &str, pages: Pages, regions: Vec<u64>, chunk: u64, plan: [(u64, u64); 3]) {
    let config = EngineConfig {
        prefetch_chunk_pages: chunk,
        ..EngineConfig::default()
    };
    let s = serve(test, pages, regions, config);
    let mut model = model_image(s.size, s.page);
    let (p, n) = (s.page, s.pages());
    let [(rm, rm_count), (read, read_count), (write, write_count)] = plan;
    s.vmm.madvise_dontneed(rm * p, rm_count * p).unwrap();
    model.zero(rm * p, rm_count * p);
    s.vmm
        .touch(Touch::read(read * p, read_count * p, 2))
        .unwrap();
    s.vmm
        .touch(Touch::write(write * p, write_count * p, 2, 9))
        .unwrap();
    model.touch_write(write * p, write_count * p, 9);
    let half = n / 2 * p;
    let report = s.engine.prefetch([half..s.size, 0..half]).wait(s.page);
    let others = rm_count + read_count + write_count;
    assert_eq!(report.installed_pages, n - others, "{report:?}");
    assert_eq!(report.skipped_pages, others, "{report:?}");
    assert_eq!(report.bytes, (n - others) * p);
    assert!(!report.stopped);
    s.engine.settle();
    let m = s.engine.metrics();
    assert_eq!(m.prefetch_installed, n - others, "{m:?}");
    let flags = present(&s, 0, n);
    for page in 0..n {
        assert_eq!(
            flags[page as usize],
            !(rm..rm + rm_count).contains(&page),
            "page {page}"
        );
    }
    let faults = m.faults;
    assert_hashes(
        &s.vmm.start_hash(0, s.size, 2).unwrap().wait().unwrap(),
        &model,
        0,
        s.size,
    );
    s.engine.settle();
    assert_eq!(
        s.engine.metrics().faults - faults,
        rm_count,
        "only removed pages fault"
    );

    s.finish();
}

/// Graduation straight after some removes, reads and writes: every Missing page populated,
/// the regions unregistered, then the vmm runs with no handler at all and every byte must
/// still be right (a page left Missing would read zeros, a removed one must).
fn graduation(test: &str, pages: Pages, regions: Vec<u64>, plan: [(u64, u64); 3]) {
    let config = EngineConfig {
        prefetch_chunk_pages: 4,
        ..EngineConfig::default()
    };
    let s = serve(test, pages, regions, config);
    let mut model = model_image(s.size, s.page);
    let p = s.page;
    let [(rm, rm_count), (read, read_count), (write, write_count)] = plan;
    s.vmm.madvise_dontneed(rm * p, rm_count * p).unwrap();
    model.zero(rm * p, rm_count * p);
    s.vmm
        .touch(Touch::read(read * p, read_count * p, 2))
        .unwrap();
    s.vmm
        .touch(Touch::write(write * p, write_count * p, 2, 3))
        .unwrap();
    model.touch_write(write * p, write_count * p, 3);
    let Served {
        vmm, engine, size, ..
    } = s;
    engine.close(CloseWhen::Graduate).expect("graduate");
    let flags = vmm.pagemap(0, size).unwrap();
    for (i, f) in flags.iter().enumerate() {
        let page = i as u64 * BLOCK / p;
        let removed = (rm..rm + rm_count).contains(&page);
        assert_eq!(f.present(), !removed, "block {i} (page {page}) present");
    }
    assert_hashes(
        &vmm.start_hash(0, size, 2).unwrap().wait().unwrap(),
        &model,
        0,
        size,
    );
}

#[test]
fn prefetch_4k() {
    // Regions: pages 0..1024, 1024..1034 (ten pages: prefetch chunks span regions 1 and 2),
    // 1034..1546.
    prefetch(
        "prefetch-4k",
        Pages::Base,
        vec![4 * MIB, 10 * 4096, 2 * MIB],
        64,
        [(100, 50), (0, 10), (1040, 5)],
    );
}

#[test]
fn graduation_4k() {
    // Regions: pages 0..3, 3..13, 13..45: prefetch chunks of 4 span them.
    graduation(
        "graduation-4k",
        Pages::Base,
        vec![3 * 4096, 10 * 4096, 32 * 4096],
        [(20, 3), (1, 1), (11, 4)],
    );
}

#[test]
fn graduation_2m() {
    if hugepages_or_skip("graduation_2m", 8) {
        // Regions: page 0, pages 1..3, 3..7 (a 2 MiB prefetch COPY is one page at most).
        graduation(
            "graduation-2m",
            Pages::Huge,
            vec![HUGE, 2 * HUGE, 4 * HUGE],
            [(5, 1), (0, 1), (1, 1)],
        );
    }
}

#[test]
fn prefetch_2m() {
    if hugepages_or_skip("prefetch_2m", 7) {
        // Regions: page 0, pages 1..5, 5..7 (a 2 MiB prefetch COPY is one page at most).
        prefetch(
            "prefetch-2m",
            Pages::Huge,
            vec![HUGE, 4 * HUGE, 2 * HUGE],
            4,
            [(2, 1), (0, 1), (6, 1)],
        );
    }
}
