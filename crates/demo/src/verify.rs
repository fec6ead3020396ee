//! Checking what the guest sees against the model, block by block.

use indicatif::ProgressBar;
use test_vmm::{GuestModel, VmmError, VmmProcess};

/// Bytes checked per request (the VMM answers one hash per 4 KiB block).
const STEP: u64 = 64 << 20;

fn differing<T: PartialEq>(got: &[T], want: &[T]) -> u64 {
    got.iter().zip(want).filter(|(g, w)| g != w).count() as u64
        + got.len().abs_diff(want.len()) as u64
}

/// Hashes `[offset, offset + len)` in the VMM (faulting every page in) and compares every
/// 4 KiB block with the model; returns the number of blocks that differ.
pub(crate) fn hashes(
    vmm: &VmmProcess,
    model: &GuestModel,
    offset: u64,
    len: u64,
    bar: &ProgressBar,
) -> Result<u64, VmmError> {
    let mut bad = 0;
    let mut at = offset;
    while at < offset + len {
        let n = STEP.min(offset + len - at);
        bad += differing(&vmm.hash(at, n)?, &model.hashes(at, n));
        bar.inc(n);
        at += n;
    }
    Ok(bad)
}

/// Has the KVM guest sum every 4 KiB block of the image through its vCPUs (so the faults come
/// from KVM) and compares with the model; returns the blocks that differ.
pub(crate) fn kvm_sums(
    vmm: &VmmProcess,
    model: &GuestModel,
    vcpus: u32,
    bar: &ProgressBar,
) -> Result<u64, VmmError> {
    let mut bad = 0;
    let mut at = 0;
    while at < model.size() {
        let n = STEP.min(model.size() - at);
        bad += differing(
            &vmm.kvm_touch(at, n, vcpus, None)?.sums,
            &model.kvm_sums(at, n),
        );
        bar.inc(n);
        at += n;
    }
    Ok(bad)
}
