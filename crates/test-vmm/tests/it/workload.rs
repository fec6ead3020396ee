//! The vmm's workload against a minimal handler on the real kernel, 4 KiB pages: touches from
//! several threads, hashes of every block against a byte model, writes, balloon-style madvise
//! raising REMOVE with the right range and reading zeros afterwards, pagemap bits, and typed
//! errors.

use crate::common::{PAGE, TestHandler, assert_hashes, model_image, start};
use test_vmm::{BLOCK, Command, RemoteErrorKind, Split, Touch, VmmError, WriteData, touch_word};

const MIB: u64 = 1 << 20;
const SEED: u64 = 0xfeed;

/// Three regions of 4, 2 and 2 MiB (8 MiB, 2048 pages).
fn sizes() -> Vec<u64> {
    vec![4 * MIB, 2 * MIB, 2 * MIB]
}

#[test]
fn read_touch_serves_every_page_once() {
    let (_dir, vmm, hs) = start("read-touch", sizes(), false);
    let handler = TestHandler::serve(&hs, SEED, PAGE);
    let model = model_image(SEED, vmm.image_size(), PAGE);
    let size = vmm.image_size();

    let report = vmm.touch(Touch::read(0, size, 4)).unwrap();
    assert_eq!(report.accesses, size / PAGE);
    let checksum = (0..size)
        .step_by(PAGE as usize)
        .fold(0u64, |s, o| s.wrapping_add(model.word(o)));
    assert_eq!(report.checksum, checksum);
    assert_eq!(handler.installed(), size / PAGE, "one COPY per page");
    assert!(vmm.pagemap(0, size).unwrap().iter().all(|f| f.present()));

    let hashes = vmm.start_hash(0, size, 3).unwrap().wait().unwrap();
    assert_hashes(&hashes, &model, 0, size);
    assert_eq!(
        handler.installed(),
        size / PAGE,
        "hashing faulted nothing new"
    );
}

#[test]
fn every_split_touches_every_page() {
    let (_dir, vmm, hs) = start("splits", sizes(), false);
    let _handler = TestHandler::serve(&hs, SEED, PAGE);
    let mut model = model_image(SEED, vmm.image_size(), PAGE);
    let pages = 64;
    let len = pages * PAGE;
    // Several threads faulting the same pages at once.
    let shared = Touch::read(0, len, 4).split(Split::Shared);
    assert_eq!(vmm.touch(shared).unwrap().accesses, 4 * pages);
    // Interleaved writes, over the boundary between region 0 and region 1.
    let offset = 4 * MIB - len / 2;
    let interleaved = Touch::write(offset, len, 3, 7).split(Split::Interleaved);
    let report = vmm.touch(interleaved).unwrap();
    assert_eq!(report.accesses, pages);
    let words = (0..pages).fold(0u64, |s, p| {
        s.wrapping_add(touch_word(7, offset / PAGE + p))
    });
    assert_eq!(report.checksum, words);
    model.touch_write(offset, len, 7);
    // More threads than pages: the extra threads have nothing to do.
    assert_eq!(
        vmm.touch(Touch::write(0, 2 * PAGE, 5, 9)).unwrap().accesses,
        2
    );
    model.touch_write(0, 2 * PAGE, 9);
    assert_hashes(
        &vmm.hash(0, vmm.image_size()).unwrap(),
        &model,
        0,
        vmm.image_size(),
    );
}

#[test]
fn kernel_mode_faults_reach_the_handler() {
    let (_dir, vmm, hs) = start("kernel-faults", sizes(), false);
    let handler = TestHandler::serve(&hs, SEED, PAGE);
    let model = model_image(SEED, vmm.image_size(), PAGE);
    // The kernel reads never-touched pages (write(2) from guest memory): with a user-mode-only
    // uffd this would be EFAULT; Firecracker's uffd delivers these faults, as KVM's.
    let (offset, len) = (4 * MIB - 8 * PAGE, 16 * PAGE);
    assert_hashes(&vmm.syscall_hash(offset, len).unwrap(), &model, offset, len);
    assert_eq!(handler.installed(), len / PAGE);
}

#[test]
fn the_driver_is_shared_by_threads() {
    let (_dir, vmm, hs) = start("shared-driver", sizes(), false);
    let _handler = TestHandler::serve(&hs, SEED, PAGE);
    let model = model_image(SEED, vmm.image_size(), PAGE);
    let part = vmm.image_size() / 8;
    std::thread::scope(|s| {
        for i in 0..8 {
            let (vmm, model) = (&vmm, &model);
            s.spawn(move || {
                let offset = i * part;
                vmm.touch(Touch::read(offset, part, 2)).unwrap();
                assert_hashes(&vmm.hash(offset, part).unwrap(), model, offset, part);
                assert_eq!(
                    vmm.read(offset, 8).unwrap(),
                    model.bytes[offset as usize..][..8]
                );
            });
        }
    });
}

#[test]
fn writes_and_reads_across_regions() {
    let (_dir, vmm, hs) = start("writes", sizes(), false);
    let _handler = TestHandler::serve(&hs, SEED, PAGE);
    let mut model = model_image(SEED, vmm.image_size(), PAGE);

    // Bytes spanning the end of region 1 and the start of region 2, unaligned.
    let offset = 6 * MIB - 3;
    let data: Vec<u8> = (0..10).map(|i| 0xa0 + i).collect();
    vmm.write(offset, &data).unwrap();
    model.write(offset, &data);
    assert_eq!(
        vmm.read(offset - 5, 20).unwrap(),
        model.bytes[(offset - 5) as usize..][..20]
    );

    // A fill of several pages, partly in pages never touched before.
    vmm.fill(PAGE + 100, 3 * PAGE, 0x5a).unwrap();
    model.write(PAGE + 100, &[0x5a; 3 * PAGE as usize]);

    // A write touch keeps the rest of each page as the handler installed it.
    vmm.touch(Touch::write(MIB, MIB, 2, 11)).unwrap();
    model.touch_write(MIB, MIB, 11);
    assert_hashes(
        &vmm.hash(0, vmm.image_size()).unwrap(),
        &model,
        0,
        vmm.image_size(),
    );
}

#[test]
fn madvise_dontneed_raises_remove_and_reads_zeros() {
    let (_dir, vmm, hs) = start("madvise", sizes(), false);
    let handler = TestHandler::serve(&hs, SEED, PAGE);
    let mut model = model_image(SEED, vmm.image_size(), PAGE);
    let size = vmm.image_size();
    vmm.touch(Touch::read(0, size, 2)).unwrap();
    let before = handler.installed();

    // Inside one region: one REMOVE with exactly that range, and the pages are gone.
    let (offset, len) = (MIB + 3 * PAGE, 5 * PAGE);
    vmm.madvise_dontneed(offset, len).unwrap();
    assert_eq!(handler.removes(1), [(offset, len)]);
    model.zero(offset, len);
    let flags = vmm.pagemap(0, size).unwrap();
    for (i, f) in flags.iter().enumerate() {
        let block = i as u64 * BLOCK;
        let removed = block >= offset && block < offset + len;
        assert_eq!(f.present(), !removed, "block at {block:#x}: {f:?}");
        assert!(!f.uffd_wp());
    }

    // Across the boundary between regions 0 and 1: one REMOVE per region.
    let (offset2, len2) = (4 * MIB - 2 * PAGE, 4 * PAGE);
    vmm.madvise_dontneed(offset2, len2).unwrap();
    assert_eq!(
        handler.removes(2),
        [(offset2, 2 * PAGE), (4 * MIB, 2 * PAGE)]
    );
    model.zero(offset2, len2);

    // Reads fault the removed pages again, served as zeros; the rest never faulted again.
    assert_hashes(&vmm.hash(0, size).unwrap(), &model, 0, size);
    assert_eq!(handler.installed(), before + (len + len2) / PAGE);
    assert!(vmm.read(offset, 16).unwrap().iter().all(|&b| b == 0));

    // Writing into a removed page: zeros around the written bytes.
    vmm.write(offset + 8, &[1, 2, 3]).unwrap();
    model.write(offset + 8, &[1, 2, 3]);
    assert_hashes(&vmm.hash(offset, len).unwrap(), &model, offset, len);
}

#[test]
fn errors_are_typed_and_harmless() {
    let (_dir, vmm, hs) = start("errors", sizes(), false);
    let _handler = TestHandler::serve(&hs, SEED, PAGE);
    let size = vmm.image_size();
    let kind = |e: VmmError| match e {
        VmmError::Remote(remote) => remote.kind,
        other => panic!("expected a remote error, got {other}"),
    };
    use RemoteErrorKind::*;
    assert_eq!(
        kind(vmm.touch(Touch::read(size, PAGE, 1)).unwrap_err()),
        OutOfRange
    );
    assert_eq!(
        kind(vmm.touch(Touch::read(0, 0, 1)).unwrap_err()),
        OutOfRange
    );
    assert_eq!(
        kind(vmm.touch(Touch::read(u64::MAX - 10, 20, 1)).unwrap_err()),
        OutOfRange
    );
    assert_eq!(
        kind(vmm.touch(Touch::read(100, PAGE, 1)).unwrap_err()),
        Misaligned
    );
    assert_eq!(
        kind(vmm.touch(Touch::read(0, PAGE, 100_000)).unwrap_err()),
        TooLarge
    );
    assert_eq!(kind(vmm.hash(0, 100).unwrap_err()), Misaligned);
    assert_eq!(
        kind(vmm.pagemap(size - PAGE, 2 * PAGE).unwrap_err()),
        OutOfRange
    );
    assert_eq!(
        kind(vmm.madvise_dontneed(PAGE / 2, PAGE).unwrap_err()),
        Misaligned
    );
    assert_eq!(kind(vmm.read(0, 2 * MIB).unwrap_err()), TooLarge);
    assert_eq!(kind(vmm.write(size - 1, &[1, 2]).unwrap_err()), OutOfRange);
    let bad_hex = Command::Write {
        offset: 0,
        data: WriteData::Hex("zz".into()),
    };
    assert_eq!(kind(vmm.request(bad_hex).unwrap_err()), BadRequest);
    // Still serving.
    assert_eq!(vmm.touch(Touch::read(0, PAGE, 1)).unwrap().accesses, 1);
    assert!(vmm.try_wait().unwrap().is_none());
}
