//! Checking what the guest sees against the model, block by block.

use indicatif::ProgressBar;
use uffd_handler::peer::{PeerError, PeerProcess, block_hash, kvm_block_sum};

use crate::snapshot::PAGE;

/// Bytes checked per request (the peer answers one hash per 4 KiB block).
const STEP: u64 = 64 << 20;

/// Hashes `[offset, offset + len)` in the peer (faulting every page in) and compares every
/// 4 KiB block with `model`; returns the number of blocks that differ.
pub(crate) fn hashes(
    peer: &PeerProcess,
    model: &[u8],
    offset: u64,
    len: u64,
    bar: &ProgressBar,
) -> Result<u64, PeerError> {
    let mut bad = 0;
    let mut at = offset;
    while at < offset + len {
        let n = STEP.min(offset + len - at);
        let got = peer.hash(at, n)?;
        for (i, hash) in got.iter().enumerate() {
            let start = (at + i as u64 * PAGE) as usize;
            if *hash != block_hash(&model[start..start + PAGE as usize]) {
                bad += 1;
            }
        }
        bar.inc(n);
        at += n;
    }
    Ok(bad)
}

/// Has the KVM guest sum every 4 KiB block of the image through its vCPUs (so the faults come
/// from KVM) and compares with the model; returns the blocks that differ.
pub(crate) fn kvm_sums(
    peer: &PeerProcess,
    model: &[u8],
    vcpus: u32,
    bar: &ProgressBar,
) -> Result<u64, PeerError> {
    let mut bad = 0;
    let size = model.len() as u64;
    let mut at = 0;
    while at < size {
        let n = STEP.min(size - at);
        let report = peer.kvm_touch(at, n, vcpus, None)?;
        for (i, sum) in report.sums.iter().enumerate() {
            let start = (at + i as u64 * PAGE) as usize;
            if *sum != kvm_block_sum(&model[start..start + PAGE as usize]) {
                bad += 1;
            }
        }
        bar.inc(n);
        at += n;
    }
    Ok(bad)
}
