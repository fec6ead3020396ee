//! The vmm with 2 MiB hugetlbfs pages (`MAP_HUGETLB|MAP_HUGE_2MB`): the payload declares
//! 2 MiB, faults are served in whole huge pages, madvise removes whole huge pages and they read
//! zeros afterwards. Skipped, with the reason, without enough free hugepages.

use crate::common::{HUGE, TestHandler, assert_hashes, free_hugepages, model_image, skip, start};
use test_vmm::{BLOCK, Touch};

/// Regions of 4 and 2 MiB: 3 huge pages.
const HUGE_PAGES: u64 = 3;

#[test]
fn hugetlb_touch_hash_madvise_pagemap() {
    let free = free_hugepages();
    if free < HUGE_PAGES {
        skip(
            "hugetlb_touch_hash_madvise_pagemap",
            &format!(
                "HugePages_Free is {free}, the test needs {HUGE_PAGES} \
                 (reserve them: echo 64 > /proc/sys/vm/nr_hugepages)"
            ),
        );
        return;
    }
    let (_dir, vmm, hs) = start("hugetlb", vec![2 * HUGE, HUGE], true);
    for r in &hs.regions {
        assert_eq!((r.page_size, r.page_size_kib), (Some(HUGE), Some(HUGE)));
        assert_eq!(r.base_host_virt_addr % HUGE, 0);
    }
    let handler = TestHandler::serve(&hs, 3, HUGE);
    let mut model = model_image(3, vmm.image_size(), HUGE);
    let size = vmm.image_size();

    // Two threads per huge page: every page faults once and is installed whole.
    let report = vmm.touch(Touch::read(0, size, 2)).unwrap();
    assert_eq!(report.accesses, HUGE_PAGES);
    assert_eq!(handler.installed(), HUGE_PAGES);
    assert!(vmm.pagemap(0, size).unwrap().iter().all(|f| f.present()));
    vmm.touch(Touch::write(HUGE, HUGE, 1, 5)).unwrap();
    model.touch_write(HUGE, HUGE, 5);
    assert_hashes(&vmm.hash(0, size).unwrap(), &model, 0, size);

    // A balloon removes the second huge page; it reads zeros afterwards.
    vmm.madvise_dontneed(HUGE, HUGE).unwrap();
    assert_eq!(handler.removes(1), [(HUGE, HUGE)]);
    model.zero(HUGE, HUGE);
    let flags = vmm.pagemap(0, size).unwrap();
    for (i, f) in flags.iter().enumerate() {
        let removed = (HUGE..2 * HUGE).contains(&(i as u64 * BLOCK));
        assert_eq!(f.present(), !removed, "block {i}: {f:?}");
    }
    assert_hashes(
        &vmm.start_hash(0, size, 2).unwrap().wait().unwrap(),
        &model,
        0,
        size,
    );
    assert_eq!(handler.installed(), HUGE_PAGES + 1);
}
