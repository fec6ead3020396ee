//! Header builders shared by the benches.
#![allow(dead_code)]

use snapshot_format::{Header, Mapping, Metadata};
use uuid::Uuid;

/// Block size used throughout.
pub(crate) const PAGE: u64 = 4096;

/// A tiny deterministic PRNG (xorshift64*), so runs are repeatable without extra crates.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub(crate) fn build(n: u8) -> Uuid {
    Uuid::from_bytes([n; 16])
}

/// A header of exactly `count` entries with runs of 1-8 pages, cycling through zero and four
/// builds with storage offsets that never join, so normalise keeps every entry.
pub(crate) fn header(count: usize, seed: u64) -> Header {
    let mut rng = Rng::new(seed);
    let mut entries = Vec::with_capacity(count);
    let mut at = 0u64;
    for i in 0..count {
        let len = (1 + rng.below(8)) * PAGE;
        let which = (i % 5) as u8;
        entries.push(if which == 0 {
            Mapping::zero(at, len)
        } else {
            Mapping::data(at, len, build(which), at + PAGE)
        });
        at += len;
    }
    Header::new(Metadata::generation_zero(build(1), PAGE, at), entries).expect("valid")
}

/// `count` random offsets inside `header`.
pub(crate) fn offsets(header: &Header, count: usize, seed: u64) -> Vec<u64> {
    let mut rng = Rng::new(seed);
    (0..count).map(|_| rng.below(header.size())).collect()
}
