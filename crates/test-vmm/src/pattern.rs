//! Pure functions the test VMM and a driver's model share: the block hash and the word a write
//! touch stores.

use crate::control::BLOCK;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a over the little-endian 64-bit words of `bytes` (one step per word, not per byte).
///
/// This is the hash [`Command::Hash`](crate::Command::Hash) reports per [`BLOCK`];
/// `bytes.len()` must be a multiple of 8.
pub fn block_hash(bytes: &[u8]) -> u64 {
    assert!(bytes.len() % 8 == 0, "hashing {} bytes", bytes.len());
    bytes.chunks_exact(8).fold(FNV_OFFSET, |h, w| {
        hash_step(h, u64::from_le_bytes(w.try_into().expect("8 bytes")))
    })
}

/// The hash of a [`BLOCK`] of zeros.
pub fn zero_block_hash() -> u64 {
    block_hash(&[0; BLOCK as usize])
}

/// One step of [`block_hash`]; the test VMM hashes guest memory word by word with it.
pub(crate) const fn hash_step(h: u64, word: u64) -> u64 {
    (h ^ word).wrapping_mul(FNV_PRIME)
}

/// The start value of [`block_hash`].
pub(crate) const HASH_START: u64 = FNV_OFFSET;

/// The word a write touch with `seed` stores at the start of page `page` (the image offset
/// divided by the page size): splitmix64 of `seed` and `page`, so pages and seeds differ.
pub const fn touch_word(seed: u64, page: u64) -> u64 {
    let mut z = seed
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(page)
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The word the KVM guest writes at the start of the 4 KiB block at image offset
/// `block_offset`: `seed + block_offset / 4096`, wrapping.
pub const fn kvm_word(seed: u32, block_offset: u64) -> u32 {
    seed.wrapping_add((block_offset / BLOCK) as u32)
}

/// The KVM guest's checksum of a block: the wrapping sum of its little-endian `u32` words.
pub fn kvm_block_sum(bytes: &[u8]) -> u32 {
    bytes.chunks_exact(4).fold(0u32, |s, w| {
        s.wrapping_add(u32::from_le_bytes(w.try_into().expect("4 bytes")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_hash_is_fnv1a_over_words() {
        assert_eq!(block_hash(&[]), FNV_OFFSET);
        let mut bytes = [0u8; 16];
        bytes[0] = 1;
        let expected = hash_step(hash_step(FNV_OFFSET, 1), 0);
        assert_eq!(block_hash(&bytes), expected);
        assert_ne!(block_hash(&bytes), zero_block_hash());
    }

    #[test]
    fn kvm_functions() {
        assert_eq!(kvm_word(10, 3 * BLOCK), 13);
        assert_eq!(kvm_word(u32::MAX, BLOCK), 0);
        let mut block = [0u8; 16];
        block[0] = 1;
        block[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        block[8] = 2;
        assert_eq!(kvm_block_sum(&block), 2);
    }

    #[test]
    fn touch_words_differ_by_page_and_seed() {
        assert_ne!(touch_word(1, 0), touch_word(1, 1));
        assert_ne!(touch_word(1, 0), touch_word(2, 0));
        assert_ne!(touch_word(0, 0), 0);
    }
}
