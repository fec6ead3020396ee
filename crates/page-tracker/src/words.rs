//! Bit-level encoding of the two tables, and SWAR helpers that work on 16 page states at once.
//!
//! The state table packs one 4-bit lane per page into `u64` words (16 pages per word); a lane
//! holds a 3-bit [`PageState`] code and its top bit is always 0, so per-lane arithmetic never
//! carries into the next lane. The claim table is a plain bitmap, 64 pages per word.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::state::{PageState, StateSet};

/// Pages per state word.
pub(crate) const STATE_LANES: u64 = 16;
/// Pages per claim word.
pub(crate) const CLAIM_BITS: u64 = 64;

/// Bit 0 of every lane.
const LOW: u64 = 0x1111_1111_1111_1111;

/// `code` repeated in every lane.
pub(crate) const fn splat(code: u64) -> u64 {
    code * LOW
}

/// Index of the state word holding `page`, and the page's lane in it.
pub(crate) const fn state_slot(page: u64) -> (usize, u32) {
    ((page / STATE_LANES) as usize, (page % STATE_LANES) as u32)
}

/// Index of the claim word holding `page`, and the page's bit in it.
pub(crate) const fn claim_slot(page: u64) -> (usize, u32) {
    ((page / CLAIM_BITS) as usize, (page % CLAIM_BITS) as u32)
}

/// The state in `lane` of `word`.
pub(crate) const fn lane_state(word: u64, lane: u32) -> PageState {
    PageState::from_code((word >> (lane * 4)) & 0b111)
}

/// All-ones lanes for lanes `lo..hi` (`lo < hi <= 16`).
pub(crate) const fn lane_mask(lo: u32, hi: u32) -> u64 {
    bit_mask(lo * 4, hi * 4)
}

/// Ones in bits `lo..hi` (`lo < hi <= 64`).
pub(crate) const fn bit_mask(lo: u32, hi: u32) -> u64 {
    (u64::MAX >> (64 - (hi - lo))) << lo
}

/// Widens a mask holding bit 3 of some lanes into whole lanes.
const fn widen_top(top: u64) -> u64 {
    (top >> 3) * 0xF
}

/// All-ones lanes where `word` holds `state`.
pub(crate) const fn lanes_equal(word: u64, state: PageState) -> u64 {
    // Lanes of `diff` are 0..=7; adding 7 sets a lane's bit 3 exactly when it is non-zero,
    // and never carries out of the lane.
    let diff = word ^ splat(state.code());
    let nonzero = (diff + splat(7)) & splat(8);
    widen_top(!nonzero & splat(8))
}

/// All-ones lanes where `word` holds a state of `set`.
#[inline]
pub(crate) fn lanes_in(word: u64, set: StateSet) -> u64 {
    match set {
        // The exports hit one code bit each (see `PageState`).
        StateSet::DIRTY => widen_top((word & splat(0b100)) << 1),
        StateSet::EMPTY => widen_top((word & splat(0b010)) << 2),
        _ => set.iter().fold(0, |acc, s| acc | lanes_equal(word, s)),
    }
}

/// Per-state lane counters over many words, without a popcount instruction (baseline
/// x86-64 has none, and a software popcount per state per word was the whole cost).
///
/// Each word adds a 0/1 indicator per lane (bit 0 of each lane) into one accumulator per
/// state; a lane's 4 bits hold 15 words' worth before it must be flushed into the totals.
#[derive(Default)]
pub(crate) struct LaneHistogram {
    pending: [u64; 4],
    pending_words: u32,
    /// Lanes counted in `Clean`, `Zero`, `Removed`, `Dirty`; `Missing` is the rest.
    totals: [u64; 4],
    lanes: u64,
}

impl LaneHistogram {
    /// Counts the lanes of `word` selected by the lane mask `mask`.
    #[inline]
    pub(crate) fn add(&mut self, word: u64, mask: u64) {
        add_indicators(&mut self.pending, word, mask & LOW);
        self.lanes += lane_count(mask);
        self.pending_words += 1;
        if self.pending_words == 15 {
            self.flush();
        }
    }

    /// Counts every lane of `words`, each read with `order`: a tight loop, flushing every
    /// 15 words.
    pub(crate) fn add_words(&mut self, words: &[AtomicU64], order: Ordering) {
        self.flush();
        for block in words.chunks(15) {
            let mut pending = [0u64; 4];
            for word in block {
                add_indicators(&mut pending, word.load(order), LOW);
            }
            for (total, lanes) in self.totals.iter_mut().zip(pending) {
                *total += sum_lanes(lanes);
            }
        }
        self.lanes += words.len() as u64 * STATE_LANES;
    }

    fn flush(&mut self) {
        for (total, pending) in self.totals.iter_mut().zip(&mut self.pending) {
            *total += sum_lanes(*pending);
            *pending = 0;
        }
        self.pending_words = 0;
    }

    /// The counts of `Missing`, `Clean`, `Zero`, `Removed`, `Dirty`, in that order.
    pub(crate) fn finish(mut self) -> [u64; 5] {
        self.flush();
        let [clean, zero, removed, dirty] = self.totals;
        let missing = self.lanes - clean - zero - removed - dirty;
        [missing, clean, zero, removed, dirty]
    }
}

/// Adds the 0/1 indicator of each state but `Missing` for the lanes `live` (bit 0 of each
/// selected lane) of `word`. Codes 5..=7 (never stored) count as `Dirty`, as
/// [`PageState::from_code`] reads them.
#[inline(always)]
fn add_indicators(pending: &mut [u64; 4], word: u64, live: u64) {
    let b0 = word & live;
    let b1 = (word >> 1) & live;
    let b2 = (word >> 2) & live;
    let not_dirty = live & !b2;
    pending[0] += b0 & !b1 & not_dirty;
    pending[1] += !b0 & b1 & not_dirty;
    pending[2] += b0 & b1 & not_dirty;
    pending[3] += b2;
}

/// Sum of the 16 lanes of `x` (each at most 15).
const fn sum_lanes(x: u64) -> u64 {
    let bytes = (x & 0x0F0F_0F0F_0F0F_0F0F) + ((x >> 4) & 0x0F0F_0F0F_0F0F_0F0F);
    // Each byte is at most 30, so the sum (at most 240) fits the top byte.
    bytes.wrapping_mul(0x0101_0101_0101_0101) >> 56
}

/// `word` with the lanes of `mask` set to `state`.
pub(crate) const fn replace_lanes(word: u64, mask: u64, state: PageState) -> u64 {
    (word & !mask) | (splat(state.code()) & mask)
}

/// Number of whole lanes in a lane mask (no popcount: baseline x86-64 lacks it).
#[inline]
pub(crate) const fn lane_count(mask: u64) -> u64 {
    sum_lanes(mask & LOW)
}

/// Index of the lowest lane set in a non-zero lane mask.
pub(crate) const fn first_lane(mask: u64) -> u32 {
    mask.trailing_zeros() / 4
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_lanes(word: u64, set: StateSet) -> u64 {
        (0..16)
            .filter(|&lane| set.contains(lane_state(word, lane)))
            .fold(0, |acc, lane| acc | 0xF << (lane * 4))
    }

    /// Every combination of codes over 4 neighbouring lanes (repeated over the word at each
    /// rotation), then pseudo-random words.
    fn sample_words() -> impl Iterator<Item = u64> {
        let patterns = (0..5u64.pow(4)).flat_map(|n| {
            let word = (0..4).fold(0u64, |w, i| w | (n / 5u64.pow(i) % 5) << (i * 4));
            (0..4).map(move |r| (word * 0x0001_0001_0001_0001).rotate_left(r * 4))
        });
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let random = (0..4096).map(move |_| {
            (0..16).fold(0u64, |w, lane| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                w | ((seed >> 33) % 5) << (lane * 4)
            })
        });
        patterns.chain(random)
    }

    #[test]
    fn lanes_in_matches_a_lane_by_lane_decode_for_every_set() {
        for word in sample_words() {
            for bits in 0..32u8 {
                let set: StateSet = PageState::ALL
                    .into_iter()
                    .filter(|s| bits & (1 << *s as u8) != 0)
                    .collect();
                assert_eq!(
                    lanes_in(word, set),
                    naive_lanes(word, set),
                    "{word:#x} {set:?}"
                );
            }
        }
    }

    #[test]
    fn lane_histogram_matches_a_lane_by_lane_count() {
        for word in sample_words() {
            for (lo, hi) in [(0, 16), (0, 1), (5, 9), (15, 16)] {
                let mut want = [0u64; 5];
                let mut histogram = LaneHistogram::default();
                // 40 words: crosses the 15-word flush twice.
                for _ in 0..40 {
                    for lane in lo..hi {
                        want[lane_state(word, lane) as usize] += 1;
                    }
                    histogram.add(word, lane_mask(lo, hi));
                }
                assert_eq!(histogram.finish(), want, "{word:#x}");
            }
        }
    }

    #[test]
    fn masks_cover_exactly_the_requested_lanes_and_bits() {
        assert_eq!(lane_mask(0, 16), u64::MAX);
        assert_eq!(lane_mask(1, 2), 0xF0);
        assert_eq!(lane_mask(15, 16), 0xF << 60);
        assert_eq!(bit_mask(0, 64), u64::MAX);
        assert_eq!(bit_mask(63, 64), 1 << 63);
        assert_eq!(bit_mask(3, 5), 0b11000);
    }

    #[test]
    fn replace_then_read_back_each_lane() {
        let word = splat(PageState::Clean.code());
        let mask = lane_mask(3, 5);
        let new = replace_lanes(word, mask, PageState::Removed);
        for lane in 0..16 {
            let want = if (3..5).contains(&lane) {
                PageState::Removed
            } else {
                PageState::Clean
            };
            assert_eq!(lane_state(new, lane), want);
        }
        assert_eq!(lane_count(mask), 2);
        assert_eq!(first_lane(mask), 3);
    }
}
