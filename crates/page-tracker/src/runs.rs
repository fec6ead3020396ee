//! Runs of pages in a set of states, and the two exports a snapshot writer needs.

use std::iter::FusedIterator;
use std::sync::atomic::Ordering;

use crate::error::Result;
use crate::geometry::PageRange;
use crate::state::StateSet;
use crate::tracker::PageTracker;
use crate::words::{STATE_LANES, first_lane, lane_mask, lanes_in, state_slot};

impl PageTracker {
    /// The first page in `from..to` whose membership in `set` equals `member`, or `to`.
    /// Sixteen pages per step. The caller has checked `to <= page_count`.
    pub(crate) fn find(&self, from: u64, to: u64, set: StateSet, member: bool) -> u64 {
        let mut page = from;
        while page < to {
            let (index, lane) = state_slot(page);
            let word_end = (page - u64::from(lane) + STATE_LANES).min(to);
            let span = lane_mask(lane, lane + (word_end - page) as u32);
            let Some(word) = self.states.get(index) else {
                return to;
            };
            let lanes = lanes_in(word.load(Ordering::Acquire), set);
            let hits = if member { lanes } else { !lanes } & span;
            if hits != 0 {
                return page - u64::from(lane) + u64::from(first_lane(hits));
            }
            page = word_end;
        }
        to
    }

    /// One past the last page in `from..to` whose membership in `set` equals `member`, or
    /// `from` when there is none. The caller has checked `to <= page_count`.
    pub(crate) fn rfind(&self, from: u64, to: u64, set: StateSet, member: bool) -> u64 {
        let mut page = to;
        while page > from {
            let (index, lane) = state_slot(page - 1);
            let word_start = (page - 1 - u64::from(lane)).max(from);
            let lo = (word_start % STATE_LANES) as u32;
            let span = lane_mask(lo, lane + 1);
            let Some(word) = self.states.get(index) else {
                return from;
            };
            let lanes = lanes_in(word.load(Ordering::Acquire), set);
            let hits = if member { lanes } else { !lanes } & span;
            if hits != 0 {
                let last_lane = (63 - hits.leading_zeros()) / 4;
                return page - 1 - u64::from(lane) + u64::from(last_lane) + 1;
            }
            page = word_start;
        }
        from
    }

    /// The maximal runs of pages of `range` whose state is in `set`, in ascending order.
    ///
    /// Lazy and lock-free: each page is read once as the iterator passes it, so with
    /// concurrent transitions every reported page held a state of `set` when it was read, but
    /// the runs are not one point-in-time picture.
    pub fn runs(&self, range: PageRange, set: StateSet) -> Result<Runs<'_>> {
        self.geometry().check_range(range)?;
        Ok(Runs {
            tracker: self,
            next: range.start(),
            end: range.end(),
            set,
        })
    }

    /// The dirty set: sorted, coalesced ranges of `Dirty` pages over the whole tracker.
    pub fn dirty_ranges(&self) -> Vec<PageRange> {
        self.all_runs(StateSet::DIRTY)
    }

    /// The empty set: sorted, coalesced ranges of `Zero` and `Removed` pages over the whole
    /// tracker (a diff records them as explicit zeros).
    pub fn empty_ranges(&self) -> Vec<PageRange> {
        self.all_runs(StateSet::EMPTY)
    }

    fn all_runs(&self, set: StateSet) -> Vec<PageRange> {
        Runs {
            tracker: self,
            next: 0,
            end: self.page_count(),
            set,
        }
        .collect()
    }
}

/// Iterator over the maximal runs of pages in a set of states; see [`PageTracker::runs`].
#[derive(Debug, Clone)]
pub struct Runs<'a> {
    tracker: &'a PageTracker,
    next: u64,
    end: u64,
    set: StateSet,
}

impl Iterator for Runs<'_> {
    type Item = PageRange;

    fn next(&mut self) -> Option<PageRange> {
        let start = self.tracker.find(self.next, self.end, self.set, true);
        if start >= self.end {
            self.next = self.end;
            return None;
        }
        let stop = self.tracker.find(start + 1, self.end, self.set, false);
        self.next = stop;
        PageRange::new(start, stop).ok()
    }
}

impl FusedIterator for Runs<'_> {}
