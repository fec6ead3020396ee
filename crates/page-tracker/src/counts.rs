//! Per-state page counts: a per-chunk cache refreshed only where pages changed.
//!
//! Exact counters updated on every transition are not possible here: [`PageTracker::remove`]
//! writes whole state words blindly (that is what keeps it at `memset` speed) and so never
//! learns the states it replaced. Instead every transition flags the 4096-page chunk it touched
//! as stale, and a count recounts only the stale chunks (one SWAR pass over 256 words each) and
//! reuses the cached counts of the others.
//!
//! Why a count never keeps a stale chunk's old figures: a writer changes a state word *then*
//! checks the chunk's flag (both `SeqCst`, or a `SeqCst` fence between a blind store and the
//! check); a count clears the flag *then* rereads the words (`SeqCst`). If the writer saw the
//! flag still set, its check precedes the clear in the single `SeqCst` order, so the reread
//! sees the write; if it saw the flag clear, it sets it again and the next count rereads.
//!
//! [`PageTracker::remove`]: crate::PageTracker::remove

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::error::{Error, Result};
use crate::geometry::PageRange;
use crate::state::{PageState, StateCounts};
use crate::words::{LaneHistogram, lane_mask, state_slot};

/// Pages per count chunk: 256 state words, a few hundred nanoseconds to recount.
pub(crate) const CHUNK_PAGES: u64 = 4096;

/// The cached counts of one chunk; `u16` is enough for 4096 pages.
#[derive(Clone, Copy, Default)]
struct ChunkCounts([u16; 5]);

pub(crate) struct CountCache {
    /// One flag per chunk: set when a page of the chunk may have changed since its recount.
    stale: Box<[AtomicBool]>,
    /// Counts of each chunk as of its last recount. The lock serialises counts only; page
    /// reads and transitions never take it.
    cached: Mutex<Box<[ChunkCounts]>>,
}

impl CountCache {
    /// A cache for `page_count` pages, all `Missing`.
    pub(crate) fn new(page_count: u64) -> Result<CountCache> {
        let chunks = page_count.div_ceil(CHUNK_PAGES);
        let len = usize::try_from(chunks).map_err(|_| Error::OutOfMemory(page_count))?;
        let mut stale = Vec::new();
        stale
            .try_reserve_exact(len)
            .map_err(|_| Error::OutOfMemory(page_count))?;
        stale.resize_with(len, || AtomicBool::new(false));
        let mut cached = Vec::new();
        cached
            .try_reserve_exact(len)
            .map_err(|_| Error::OutOfMemory(page_count))?;
        cached.extend((0..chunks).map(|chunk| {
            let pages = (page_count - chunk * CHUNK_PAGES).min(CHUNK_PAGES);
            // At most 4096, so it fits.
            let mut counts = [0u16; 5];
            counts[PageState::Missing as usize] = pages as u16;
            ChunkCounts(counts)
        }));
        Ok(CountCache {
            stale: stale.into_boxed_slice(),
            cached: Mutex::new(cached.into_boxed_slice()),
        })
    }

    /// Flags the chunk of `page` stale. Call after the state word changed, with the change
    /// `SeqCst` or followed by a `SeqCst` fence (see the module docs).
    #[inline]
    pub(crate) fn mark(&self, page: u64) {
        if let Some(flag) = self.stale.get((page / CHUNK_PAGES) as usize) {
            // Load first: a flag already set costs no write to a shared cache line.
            if !flag.load(Ordering::SeqCst) {
                flag.store(true, Ordering::SeqCst);
            }
        }
    }

    /// Flags every chunk overlapping `range` stale (same contract as [`CountCache::mark`]).
    pub(crate) fn mark_range(&self, range: PageRange) {
        if range.is_empty() {
            return;
        }
        let first = range.start() / CHUNK_PAGES;
        let last = (range.end() - 1) / CHUNK_PAGES;
        for chunk in first..=last {
            self.mark(chunk * CHUNK_PAGES);
        }
    }

    /// Counts the states in `range`, recounting the stale chunks it covers whole.
    pub(crate) fn count(&self, states: &[AtomicU64], range: PageRange) -> StateCounts {
        let mut total = StateCounts::default();
        if range.is_empty() {
            return total;
        }
        let mut cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
        let mut page = range.start();
        while page < range.end() {
            let chunk = page / CHUNK_PAGES;
            let chunk_start = chunk * CHUNK_PAGES;
            let chunk_end = (chunk_start + CHUNK_PAGES).min(range.end());
            let whole = page == chunk_start && chunk_end - chunk_start == CHUNK_PAGES;
            let span = PageRange::new(page, chunk_end).unwrap_or_default();
            match (
                whole,
                cached.get_mut(chunk as usize),
                self.stale.get(chunk as usize),
            ) {
                (true, Some(entry), Some(flag)) => {
                    if flag.load(Ordering::SeqCst) {
                        flag.store(false, Ordering::SeqCst);
                        let fresh = scan(states, span);
                        // At most 4096 each, so they fit.
                        *entry = ChunkCounts(PageState::ALL.map(|s| fresh.get(s) as u16));
                    }
                    for state in PageState::ALL {
                        total.add(state, u64::from(entry.0[state as usize]));
                    }
                }
                _ => total.merge(&scan(states, span)),
            }
            page = chunk_end;
        }
        total
    }
}

/// Counts the states in `range` by reading every word (`SeqCst`, see the module docs).
pub(crate) fn scan(states: &[AtomicU64], range: PageRange) -> StateCounts {
    let mut histogram = LaneHistogram::default();
    if !range.is_empty() {
        let (first, lo) = state_slot(range.start());
        let (last, hi) = state_slot(range.end() - 1);
        let load = |index: usize| states.get(index).map_or(0, |w| w.load(Ordering::SeqCst));
        if first == last {
            histogram.add(load(first), lane_mask(lo, hi + 1));
        } else {
            histogram.add(load(first), lane_mask(lo, 16));
            if let Some(middle) = states.get(first + 1..last) {
                histogram.add_words(middle, Ordering::SeqCst);
            }
            histogram.add(load(last), lane_mask(0, hi + 1));
        }
    }
    let totals = histogram.finish();
    let mut counts = StateCounts::default();
    for state in PageState::ALL {
        counts.add(state, totals[state as usize]);
    }
    counts
}
