//! One slow read must not hold up every other fault: the read of one page's block is held by
//! the test FUSE file system (a stalled storage request), and faults on other pages must
//! complete while it is still held; once released, the stalled page arrives exact.
//!
//! It failed while the engine copied with `UFFDIO_COPY` straight from its mapping of the
//! image under the read gate: the stalled read inside the kernel's copy kept every other
//! reader from reading the uffd. Now the stalled fault is parked for a fetcher thread. The
//! waits here are bounded, so a regression fails instead of hanging.

use test_fuse::Fault;
use test_vmm::Touch;
use uffd_engine::EngineConfig;

use crate::common::fuse::{FuseServed, IMAGE, serve_over_fuse};
use crate::common::vmm::{MIB, Pages, TIMEOUT, assert_hashes, hugepages_or_skip, model_image};

const HUGE: u64 = 2 * MIB;

/// Page `stalled`'s read is held; pages `others` (two vmm threads) are then touched and
/// must be served while the read is still held (an ordering fact: the stall's held count is
/// read after the touch reported back). Then the stall is released and page `stalled`
/// arrives exact.
fn other_faults_complete_while_one_read_stalls(
    test: &str,
    pages: Pages,
    regions: Vec<u64>,
    stalled: u64,
    others: std::ops::Range<u64>,
) {
    let Some(f) = serve_over_fuse(test, pages, regions, EngineConfig::default()) else {
        return;
    };
    let stall = f.mount.inject(IMAGE, f.block_of(stalled), Fault::Stall);
    let FuseServed {
        served: s,
        mount: _mount,
        dir: _dir,
    } = f;
    let model = model_image(s.size, s.page);
    let p = s.page;
    let stalled_touch = s.vmm.start_touch(Touch::read(stalled * p, p, 1)).unwrap();
    assert!(
        stall.wait_held(1, TIMEOUT),
        "the read of page {stalled} never reached the storage"
    );
    let len = (others.end - others.start) * p;
    let others_touch = s
        .vmm
        .start_touch(Touch::read(others.start * p, len, 2))
        .unwrap()
        .wait_timeout(TIMEOUT);
    let still_held = stall.held();
    // Released before any assertion, so a failure leaves nothing blocked behind the stall.
    stall.release();
    let report = others_touch.unwrap_or_else(|e| {
        panic!("faults on other pages did not complete while page {stalled}'s read stalled: {e}")
    });
    assert_eq!(
        still_held, 1,
        "the stalled read was answered before the other faults completed"
    );
    assert_eq!(
        report.checksum,
        model.read_checksum(others.start * p, len, 1)
    );
    assert_hashes(
        &s.vmm.hash(others.start * p, len).unwrap(),
        &model,
        others.start * p,
        len,
    );
    stalled_touch
        .wait()
        .expect("the stalled page is served once released");
    assert_hashes(&s.vmm.hash(stalled * p, p).unwrap(), &model, stalled * p, p);
    s.finish();
}

#[test]
fn fuse_other_faults_complete_while_one_read_stalls_4k() {
    other_faults_complete_while_one_read_stalls(
        "fuse-stall-4k",
        Pages::Base,
        vec![4 * MIB],
        5,
        300..332,
    );
}

#[test]
fn fuse_other_faults_complete_while_one_read_stalls_2m() {
    if hugepages_or_skip("fuse_other_faults_complete_while_one_read_stalls_2m", 3) {
        other_faults_complete_while_one_read_stalls(
            "fuse-stall-2m",
            Pages::Huge,
            vec![3 * HUGE],
            0,
            1..3,
        );
    }
}
