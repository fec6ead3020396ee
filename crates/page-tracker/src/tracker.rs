//! The tracker: the state table, reads, and the transitions that need no claim.

use std::sync::atomic::{AtomicU64, Ordering, fence};

use crate::counts::CountCache;
use crate::error::{Error, Result};
use crate::geometry::{Geometry, PageRange};
use crate::state::{PageState, StateCounts, StateSet, WriteMark};
use crate::words::{
    CLAIM_BITS, STATE_LANES, lane_count, lane_mask, lane_state, lanes_in, replace_lanes, splat,
    state_slot,
};

/// Lock-free per-page state over a tracked address range.
///
/// One 4-bit lane per page in a table of `AtomicU64` words (16 pages per word), plus one
/// claim bit per page in a separate bitmap: 0.625 bytes per page, 10 MiB for a 64 GiB guest
/// of 4 KiB pages. Reads are a single atomic load; transitions are compare-and-swap loops
/// that check the current state, except [`remove`](PageTracker::remove), which turns any
/// state into `Removed` and so can store whole words blindly. Claims live apart from the
/// states precisely so that this blind store leaves them alone.
///
/// All methods take `&self`; share the tracker between threads with `Arc` or a scope.
pub struct PageTracker {
    geometry: Geometry,
    /// Page states, 16 lanes per word; page `i` is lane `i % 16` of word `i / 16`.
    pub(crate) states: Box<[AtomicU64]>,
    /// Claim bits, 64 per word; page `i` is bit `i % 64` of word `i / 64`.
    pub(crate) claims: Box<[AtomicU64]>,
    pub(crate) counts: CountCache,
}

impl std::fmt::Debug for PageTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageTracker")
            .field("geometry", &self.geometry)
            .finish_non_exhaustive()
    }
}

/// A boxed slice of `len` zeroed words, or an error instead of an allocation abort.
fn zeroed_words(len: u64, page_count: u64) -> Result<Box<[AtomicU64]>> {
    let len = usize::try_from(len).map_err(|_| Error::OutOfMemory(page_count))?;
    let mut words = Vec::new();
    words
        .try_reserve_exact(len)
        .map_err(|_| Error::OutOfMemory(page_count))?;
    words.resize_with(len, || AtomicU64::new(0));
    Ok(words.into_boxed_slice())
}

impl PageTracker {
    /// A tracker over `geometry` with every page `Missing` and unclaimed.
    pub fn new(geometry: Geometry) -> Result<PageTracker> {
        let pages = geometry.page_count();
        // Page indices are used as `usize` word indices after a bounds check, so the page
        // count itself must fit (it always does on 64-bit targets).
        usize::try_from(pages).map_err(|_| Error::OutOfMemory(pages))?;
        Ok(PageTracker {
            geometry,
            states: zeroed_words(pages.div_ceil(STATE_LANES), pages)?,
            claims: zeroed_words(pages.div_ceil(CLAIM_BITS), pages)?,
            counts: CountCache::new(pages)?,
        })
    }

    /// The tracked address range and page size.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// Number of tracked pages.
    pub fn page_count(&self) -> u64 {
        self.geometry.page_count()
    }

    /// The state word holding an already bounds-checked `page`.
    #[inline]
    pub(crate) fn state_word(&self, page: u64) -> Option<(&AtomicU64, u32)> {
        let (index, lane) = state_slot(page);
        self.states.get(index).map(|word| (word, lane))
    }

    /// The state of `page`: one atomic load, no lock.
    #[inline]
    pub fn state(&self, page: u64) -> Result<PageState> {
        self.geometry.check_page(page)?;
        match self.state_word(page) {
            Some((word, lane)) => Ok(lane_state(word.load(Ordering::Acquire), lane)),
            None => Err(Error::PageOutOfRange {
                page,
                page_count: self.page_count(),
            }),
        }
    }

    /// A REMOVE: every page of `range` becomes `Removed`, whatever its state, claimed or not.
    ///
    /// Claims are left in place for their owners to release; an owner's later install finds
    /// `Removed` and installs nothing from the source. Words wholly inside the range are
    /// stored without reading them (the reason claims live in their own bitmap); the partial
    /// words at the edges are updated with compare-and-swap to spare their neighbours.
    pub fn remove(&self, range: PageRange) -> Result<()> {
        self.geometry.check_range(range)?;
        if range.is_empty() {
            return Ok(());
        }
        let removed = splat(PageState::Removed.code());
        let (first, lo) = state_slot(range.start());
        let (last, hi) = state_slot(range.end() - 1);
        if first == last {
            self.update_word(first, lane_mask(lo, hi + 1), removed);
        } else {
            self.update_word(first, lane_mask(lo, 16), removed);
            if let Some(middle) = self.states.get(first + 1..last) {
                // Unrolled by hand: LLVM does not unroll atomic stores, and one store per
                // loop iteration caps this at one word per cycle.
                let mut quads = middle.chunks_exact(8);
                for quad in &mut quads {
                    for word in quad {
                        word.store(removed, Ordering::Release);
                    }
                }
                for word in quads.remainder() {
                    word.store(removed, Ordering::Release);
                }
            }
            self.update_word(last, lane_mask(0, hi + 1), removed);
        }
        // Order the plain stores before the stale-flag checks (see `counts`).
        fence(Ordering::SeqCst);
        self.counts.mark_range(range);
        Ok(())
    }

    /// Replaces the lanes `mask` of word `index` with those of `value`, atomically.
    fn update_word(&self, index: usize, mask: u64, value: u64) {
        if let Some(word) = self.states.get(index) {
            let mut old = word.load(Ordering::Acquire);
            loop {
                let new = (old & !mask) | (value & mask);
                match word.compare_exchange_weak(old, new, Ordering::SeqCst, Ordering::Acquire) {
                    Ok(_) => break,
                    Err(current) => old = current,
                }
            }
        }
    }

    /// Moves every page of `range` whose state is in `from` to `to`, one compare-and-swap per
    /// word, and returns how many pages matched (a page already in `to` counts, unchanged).
    /// The caller has checked `range`.
    pub(crate) fn transition(&self, range: PageRange, from: StateSet, to: PageState) -> u64 {
        let mut matched = 0;
        let mut page = range.start();
        while page < range.end() {
            let (index, lane) = state_slot(page);
            let word_end = (page - u64::from(lane) + STATE_LANES).min(range.end());
            let span = lane_mask(lane, lane + (word_end - page) as u32);
            if let Some(word) = self.states.get(index) {
                let mut old = word.load(Ordering::Acquire);
                loop {
                    let hits = lanes_in(old, from) & span;
                    let new = replace_lanes(old, hits, to);
                    if new == old {
                        matched += lane_count(hits);
                        break;
                    }
                    match word.compare_exchange_weak(old, new, Ordering::SeqCst, Ordering::Acquire)
                    {
                        Ok(_) => {
                            matched += lane_count(hits);
                            self.counts.mark(page);
                            break;
                        }
                        Err(current) => old = current,
                    }
                }
            }
            page = word_end;
        }
        matched
    }

    /// [`transition`](PageTracker::transition) of the single, bounds-checked `page`: returns
    /// 1 if its state was in `from` (and is now `to`), else 0.
    #[inline]
    pub(crate) fn transition_one(&self, page: u64, from: StateSet, to: PageState) -> u64 {
        let Some((word, lane)) = self.state_word(page) else {
            return 0;
        };
        let mut old = word.load(Ordering::Acquire);
        loop {
            if !from.contains(lane_state(old, lane)) {
                return 0;
            }
            let new = replace_lanes(old, lane_mask(lane, lane + 1), to);
            if new == old {
                return 1;
            }
            match word.compare_exchange_weak(old, new, Ordering::SeqCst, Ordering::Acquire) {
                Ok(_) => {
                    self.counts.mark(page);
                    return 1;
                }
                Err(current) => old = current,
            }
        }
    }

    /// A write-protect fault: `Clean` or `Zero` becomes `Dirty`. Never from `Missing` or
    /// `Removed`: those are reported, not changed.
    #[inline]
    pub fn mark_written(&self, page: u64) -> Result<WriteMark> {
        self.geometry.check_page(page)?;
        let Some((word, lane)) = self.state_word(page) else {
            return Err(Error::PageOutOfRange {
                page,
                page_count: self.page_count(),
            });
        };
        let lanes = lane_mask(lane, lane + 1);
        let mut old = word.load(Ordering::Acquire);
        loop {
            let state = lane_state(old, lane);
            match state {
                PageState::Dirty => return Ok(WriteMark::AlreadyDirty),
                PageState::Missing | PageState::Removed => {
                    return Ok(WriteMark::NotInstalled(state));
                }
                PageState::Clean | PageState::Zero => {}
            }
            let new = replace_lanes(old, lanes, PageState::Dirty);
            match word.compare_exchange_weak(old, new, Ordering::SeqCst, Ordering::Acquire) {
                Ok(_) => {
                    self.counts.mark(page);
                    return Ok(WriteMark::Marked);
                }
                Err(current) => old = current,
            }
        }
    }

    /// Starts a new generation over `range` after its diff was exported: every `Dirty` page
    /// becomes `Clean`. Returns how many pages were reset.
    ///
    /// Words holding no `Dirty` page are only read, so a sparse dirty set costs little more
    /// than a scan.
    pub fn reset_generation(&self, range: PageRange) -> Result<u64> {
        self.geometry.check_range(range)?;
        Ok(self.transition(range, StateSet::DIRTY, PageState::Clean))
    }

    /// [`reset_generation`](PageTracker::reset_generation) over every page.
    pub fn reset_generation_all(&self) -> u64 {
        self.transition(self.geometry.all_pages(), StateSet::DIRTY, PageState::Clean)
    }

    /// The number of pages in each state over the whole tracker.
    ///
    /// Only the 4096-page chunks changed since the previous count are re-read. Exact when no
    /// transition runs concurrently; otherwise each page is counted in a state it held during
    /// the call.
    pub fn counts(&self) -> StateCounts {
        self.counts.count(&self.states, self.geometry.all_pages())
    }

    /// The number of pages in each state within `range` (see [`PageTracker::counts`]).
    pub fn counts_in(&self, range: PageRange) -> Result<StateCounts> {
        self.geometry.check_range(range)?;
        Ok(self.counts.count(&self.states, range))
    }
}
