//! What the test VMM's guest memory should hold: a byte model that follows the commands a test or
//! the demo sends, and predicts the test VMM's answers (hashes, KVM sums, touch checksums).

use crate::control::BLOCK;
use crate::{block_hash, kvm_block_sum, kvm_word, touch_word};

/// The expected bytes of guest memory, by image offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestModel {
    /// The bytes, by image offset.
    pub bytes: Vec<u8>,
    /// The guest's page size (the unit of touches and madvise).
    pub page: u64,
}

impl GuestModel {
    /// A model starting from the snapshot image `bytes`.
    pub fn new(bytes: Vec<u8>, page: u64) -> Self {
        GuestModel { bytes, page }
    }

    /// The image size.
    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// A removed range: zeros.
    pub fn zero(&mut self, offset: u64, len: u64) {
        self.bytes[offset as usize..(offset + len) as usize].fill(0);
    }

    /// Bytes stored by a `write`.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        self.bytes[offset as usize..offset as usize + data.len()].copy_from_slice(data);
    }

    /// What a write touch with `seed` stores: [`touch_word`] at the start of every page.
    pub fn touch_write(&mut self, offset: u64, len: u64, seed: u64) {
        for p in (offset..offset + len).step_by(self.page as usize) {
            self.write(p, &touch_word(seed, p / self.page).to_le_bytes());
        }
    }

    /// What a KVM touch with write `seed` stores: [`kvm_word`] at the start of every block.
    pub fn kvm_write(&mut self, offset: u64, len: u64, seed: u32) {
        for b in (offset..offset + len).step_by(BLOCK as usize) {
            self.write(b, &kvm_word(seed, b).to_le_bytes());
        }
    }

    /// The little-endian word at `offset`.
    pub fn word(&self, offset: u64) -> u64 {
        let o = offset as usize;
        u64::from_le_bytes(self.bytes[o..o + 8].try_into().expect("8 bytes"))
    }

    /// A read touch's checksum over `[offset, offset + len)`, each page read `times` times.
    pub fn read_checksum(&self, offset: u64, len: u64, times: u64) -> u64 {
        (offset..offset + len)
            .step_by(self.page as usize)
            .fold(0u64, |s, o| {
                s.wrapping_add(self.word(o).wrapping_mul(times))
            })
    }

    /// The test VMM's `hash` answer for a range: [`block_hash`] of every block.
    pub fn hashes(&self, offset: u64, len: u64) -> Vec<u64> {
        self.bytes[offset as usize..(offset + len) as usize]
            .chunks_exact(BLOCK as usize)
            .map(block_hash)
            .collect()
    }

    /// The KVM guest's sums of a range's blocks ([`kvm_block_sum`]).
    pub fn kvm_sums(&self, offset: u64, len: u64) -> Vec<u32> {
        self.bytes[offset as usize..(offset + len) as usize]
            .chunks_exact(BLOCK as usize)
            .map(kvm_block_sum)
            .collect()
    }
}

/// Asserts that `got`, the block hashes of `[offset, offset + len)` the test VMM reported,
/// equal `model`'s, naming the first block that differs and whether it holds zeros.
#[track_caller]
pub fn assert_hashes(got: &[u64], model: &GuestModel, offset: u64, len: u64) {
    assert_hashes_in("", got, model, offset, len);
}

/// [`assert_hashes`], the panic message prefixed with `context`.
#[track_caller]
pub fn assert_hashes_in(context: &str, got: &[u64], model: &GuestModel, offset: u64, len: u64) {
    let want = model.hashes(offset, len);
    assert_eq!(got.len(), want.len(), "{context}: number of blocks");
    if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
        let differing = (0..got.len()).filter(|&i| got[i] != want[i]).count();
        let holds = if got[i] == crate::zero_block_hash() {
            "zeros"
        } else {
            "other bytes"
        };
        panic!(
            "{context}: block at image offset {:#x} differs: it holds {holds} ({differing} of {} \
             blocks differ)",
            offset + i as u64 * BLOCK,
            got.len()
        );
    }
}
