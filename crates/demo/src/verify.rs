//! Checking what the guest sees against the model, block by block.

use indicatif::ProgressBar;
use uffd_handler::peer::{GuestModel, PeerError, PeerProcess};

/// Bytes checked per request (the peer answers one hash per 4 KiB block).
const STEP: u64 = 64 << 20;

fn differing<T: PartialEq>(got: &[T], want: &[T]) -> u64 {
    got.iter().zip(want).filter(|(g, w)| g != w).count() as u64
        + got.len().abs_diff(want.len()) as u64
}

/// Hashes `[offset, offset + len)` in the peer (faulting every page in) and compares every
/// 4 KiB block with the model; returns the number of blocks that differ.
pub(crate) fn hashes(
    peer: &PeerProcess,
    model: &GuestModel,
    offset: u64,
    len: u64,
    bar: &ProgressBar,
) -> Result<u64, PeerError> {
    let mut bad = 0;
    let mut at = offset;
    while at < offset + len {
        let n = STEP.min(offset + len - at);
        bad += differing(&peer.hash(at, n)?, &model.hashes(at, n));
        bar.inc(n);
        at += n;
    }
    Ok(bad)
}

/// Has the KVM guest sum every 4 KiB block of the image through its vCPUs (so the faults come
/// from KVM) and compares with the model; returns the blocks that differ.
pub(crate) fn kvm_sums(
    peer: &PeerProcess,
    model: &GuestModel,
    vcpus: u32,
    bar: &ProgressBar,
) -> Result<u64, PeerError> {
    let mut bad = 0;
    let mut at = 0;
    while at < model.size() {
        let n = STEP.min(model.size() - at);
        bad += differing(
            &peer.kvm_touch(at, n, vcpus, None)?.sums,
            &model.kvm_sums(at, n),
        );
        bar.inc(n);
        at += n;
    }
    Ok(bad)
}
