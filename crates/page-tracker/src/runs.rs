//! Runs of pages in a set of states, and the two exports a snapshot writer needs.

use std::iter::FusedIterator;
use std::sync::atomic::Ordering;

use crate::error::Result;
use crate::geometry::PageRange;
use crate::state::StateSet;
use crate::tracker::PageTracker;
use crate::words::{STATE_LANES, first_lane, lane_mask, lanes_in, splat, state_slot};

impl PageTracker {
    /// The first page in `from..to` whose membership in `set` equals `member`, or `to`.
    /// The caller has checked `to <= page_count`.
    pub(crate) fn find(&self, from: u64, to: u64, set: StateSet, member: bool) -> u64 {
        // Monomorphised per matcher so the export scans run a tight loop. A matcher may set
        // any bit of a matching lane: only the lane index of the lowest one is used.
        const DIRTY_BIT: u64 = splat(0b100);
        const EMPTY_BIT: u64 = splat(0b010);
        match (set, member) {
            (StateSet::DIRTY, true) => self.find_by(from, to, |w| w & DIRTY_BIT),
            (StateSet::DIRTY, false) => self.find_by(from, to, |w| !w & DIRTY_BIT),
            (StateSet::EMPTY, true) => self.find_by(from, to, |w| w & EMPTY_BIT),
            (StateSet::EMPTY, false) => self.find_by(from, to, |w| !w & EMPTY_BIT),
            (_, true) => self.find_by(from, to, |w| lanes_in(w, set)),
            (_, false) => self.find_by(from, to, |w| !lanes_in(w, set)),
        }
    }

    /// The first page in `from..to` whose lane has a bit set in `hits(word)`, or `to`.
    #[inline(always)]
    fn find_by(&self, from: u64, to: u64, hits: impl Fn(u64) -> u64) -> u64 {
        if from >= to {
            return to;
        }
        let (first, lo) = state_slot(from);
        let (last, hi) = state_slot(to - 1);
        let page_of =
            |index: usize, found: u64| index as u64 * STATE_LANES + u64::from(first_lane(found));
        let hits_at = |index: usize| {
            self.states
                .get(index)
                .map_or(0, |w| hits(w.load(Ordering::Acquire)))
        };
        let tail = lane_mask(0, hi + 1);
        let head = lane_mask(lo, 16) & if first == last { tail } else { u64::MAX };
        let found = hits_at(first) & head;
        if found != 0 {
            return page_of(first, found);
        }
        if first == last {
            return to;
        }
        if let Some(middle) = self.states.get(first + 1..last) {
            for (i, word) in middle.iter().enumerate() {
                let found = hits(word.load(Ordering::Acquire));
                if found != 0 {
                    return page_of(first + 1 + i, found);
                }
            }
        }
        let found = hits_at(last) & tail;
        if found != 0 {
            return page_of(last, found);
        }
        to
    }

    /// One past the last page in `from..to` whose membership in `set` equals `member`, or
    /// `from` when there is none. The caller has checked `to <= page_count`.
    pub(crate) fn rfind(&self, from: u64, to: u64, set: StateSet, member: bool) -> u64 {
        if from >= to {
            return from;
        }
        let (first, lo) = state_slot(from);
        let (last, hi) = state_slot(to - 1);
        let Some(words) = self.states.get(first..=last) else {
            return from;
        };
        for (i, word) in words.iter().enumerate().rev() {
            let lanes = lanes_in(word.load(Ordering::Acquire), set);
            let mut found = if member { lanes } else { !lanes };
            if i == 0 {
                found &= lane_mask(lo, 16);
            }
            if i == words.len() - 1 {
                found &= lane_mask(0, hi + 1);
            }
            if found != 0 {
                let last_lane = (63 - found.leading_zeros()) / 4;
                return (first + i) as u64 * STATE_LANES + u64::from(last_lane) + 1;
            }
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
