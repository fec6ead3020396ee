//! In-flight claims: so two workers never install the same page, and fault-around can take a
//! run of pages at once. Installs go through the claim guard.

use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::geometry::PageRange;
use crate::state::{Access, PageState, StateSet};
use crate::tracker::PageTracker;
use crate::words::{CLAIM_BITS, bit_mask, claim_slot};

/// The states [`Claim::install_zero`] installs into: a hole in the snapshot (`Missing`), a
/// freed page, and a zero page that may have been zapped since.
const ZERO_INSTALLABLE: StateSet = StateSet::MISSING
    .with(PageState::Zero)
    .with(PageState::Removed);

impl PageTracker {
    /// Claims `page` whatever its state, or `None` if another claim holds it.
    #[inline]
    pub fn try_claim(&self, page: u64) -> Result<Option<Claim<'_>>> {
        self.geometry().check_page(page)?;
        Ok(self.claim_one(page).then(|| Claim {
            tracker: self,
            pages: PageRange::between(page, page + 1),
        }))
    }

    /// Fault-around: claims the maximal run of unclaimed pages in `set` that contains `page`
    /// and lies inside the `window`-page aligned window around it (clipped to the tracker).
    ///
    /// `window` must be a power of two (1 claims `page` alone). Returns `None` if `page`
    /// itself is claimed or not in `set`. The run is taken outward from `page`, so a page
    /// claimed or in another state elsewhere in the window only shortens it; after claiming,
    /// the states are read again and the run trimmed to pages still in `set`.
    ///
    /// A claim does not freeze the states: a [`remove`](PageTracker::remove) may still turn
    /// a claimed page `Removed`, which the installs then respect.
    pub fn try_claim_run(
        &self,
        page: u64,
        window: u64,
        set: StateSet,
    ) -> Result<Option<Claim<'_>>> {
        self.geometry().check_page(page)?;
        if !window.is_power_of_two() {
            return Err(Error::InvalidWindow(window));
        }
        let window_start = page & !(window - 1);
        let window_end = window_start.saturating_add(window).min(self.page_count());
        let in_set = |p: u64| self.state(p).is_ok_and(|s| set.contains(s));

        if !in_set(page) {
            return Ok(None);
        }
        // From here on the guard releases whatever it covers on every return.
        let Some(mut claim) = self.try_claim(page)? else {
            return Ok(None);
        };
        if !in_set(page) {
            return Ok(None);
        }
        // Upward: candidates from the states, claim the free prefix, re-read, trim.
        let limit = self.find(page + 1, window_end, set, false);
        let claimed_end = self.claim_prefix(page + 1, limit);
        let end = self.find(page + 1, claimed_end, set, false);
        self.release_bits(end, claimed_end);
        claim.pages = PageRange::between(page, end);
        // Downward, the same.
        let limit = self.rfind(window_start, page, set, false);
        let claimed_start = self.claim_suffix(limit, page);
        let start = self.rfind(claimed_start, page, set, false);
        self.release_bits(claimed_start, start);
        claim.pages = PageRange::between(start, end);
        Ok(Some(claim))
    }

    /// Whether a claim holds `page`.
    pub fn is_claimed(&self, page: u64) -> Result<bool> {
        self.geometry().check_page(page)?;
        let (index, bit) = claim_slot(page);
        Ok(self
            .claims
            .get(index)
            .is_some_and(|w| w.load(Ordering::Acquire) & 1 << bit != 0))
    }

    /// How many pages of `range` are claimed.
    pub fn claimed_in(&self, range: PageRange) -> Result<u64> {
        self.geometry().check_range(range)?;
        let mut count = 0;
        self.for_each_claim_word(range.start(), range.end(), |word, mask| {
            count += u64::from((word.load(Ordering::Acquire) & mask).count_ones());
            true
        });
        Ok(count)
    }

    /// Calls `f(word, mask)` for each claim word overlapping `from..to`, ascending, with the
    /// mask of the bits in range, while `f` returns true.
    fn for_each_claim_word(
        &self,
        from: u64,
        to: u64,
        mut f: impl FnMut(&std::sync::atomic::AtomicU64, u64) -> bool,
    ) {
        let mut page = from;
        while page < to {
            let (index, bit) = claim_slot(page);
            let word_end = (page - u64::from(bit) + CLAIM_BITS).min(to);
            let mask = bit_mask(bit, bit + (word_end - page) as u32);
            match self.claims.get(index) {
                Some(word) if f(word, mask) => page = word_end,
                _ => return,
            }
        }
    }

    /// Claims the single, bounds-checked `page`: one atomic OR.
    #[inline]
    fn claim_one(&self, page: u64) -> bool {
        let (index, bit) = claim_slot(page);
        self.claims
            .get(index)
            .is_some_and(|w| w.fetch_or(1 << bit, Ordering::AcqRel) & 1 << bit == 0)
    }

    /// Releases the single `page`: one atomic AND.
    #[inline]
    fn release_one(&self, page: u64) {
        let (index, bit) = claim_slot(page);
        if let Some(word) = self.claims.get(index) {
            // Release: the next claimer sees the states this owner installed.
            word.fetch_and(!(1 << bit), Ordering::Release);
        }
    }

    /// Claims the longest unclaimed prefix of `from..to`; returns its end.
    fn claim_prefix(&self, from: u64, to: u64) -> u64 {
        let mut end = from;
        self.for_each_claim_word(from, to, |word, mask| {
            let lo = mask.trailing_zeros();
            let wanted = mask.count_ones();
            let mut old = word.load(Ordering::Acquire);
            loop {
                let free = (!(old >> lo)).trailing_ones().min(wanted);
                if free == 0 {
                    return false;
                }
                let new = old | bit_mask(lo, lo + free);
                match word.compare_exchange_weak(old, new, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => {
                        end += u64::from(free);
                        return free == wanted;
                    }
                    Err(current) => old = current,
                }
            }
        });
        end
    }

    /// Claims the longest unclaimed suffix of `from..to`; returns its start.
    fn claim_suffix(&self, from: u64, to: u64) -> u64 {
        let mut start = to;
        while start > from {
            let (index, bit) = claim_slot(start - 1);
            let hi = bit + 1;
            let wanted = (u64::from(hi)).min(start - from) as u32;
            let Some(word) = self.claims.get(index) else {
                break;
            };
            let mut old = word.load(Ordering::Acquire);
            let free = loop {
                let free = (!(old << (64 - hi))).leading_ones().min(wanted);
                if free == 0 {
                    break 0;
                }
                let new = old | bit_mask(hi - free, hi);
                match word.compare_exchange_weak(old, new, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => break free,
                    Err(current) => old = current,
                }
            };
            start -= u64::from(free);
            if free < wanted {
                break;
            }
        }
        start
    }

    /// Releases the claim bits of `from..to`.
    fn release_bits(&self, from: u64, to: u64) {
        self.for_each_claim_word(from, to, |word, mask| {
            // Release: the next claimer sees the states this owner installed.
            word.fetch_and(!mask, Ordering::Release);
            true
        });
    }
}

/// An in-flight claim on a run of pages: while it lives no other claim covers them. The
/// installs are its methods, so only a claim holder installs; dropping it releases the pages.
///
/// A claim does not stop [`PageTracker::remove`], [`PageTracker::mark_written`] or
/// [`PageTracker::reset_generation`]: the installs check the current state and never
/// overwrite what those did.
#[derive(Debug)]
#[must_use = "dropping a claim releases it at once"]
pub struct Claim<'a> {
    tracker: &'a PageTracker,
    pages: PageRange,
}

impl<'a> Claim<'a> {
    /// The claimed pages.
    pub fn pages(&self) -> PageRange {
        self.pages
    }

    /// Records an install of snapshot bytes: each claimed page still `Missing` becomes
    /// `Clean` (`Dirty` for a write). Any other state is left alone: an install never
    /// downgrades, nor resurrects a `Removed` page. Returns how many pages were installed;
    /// for a one-page claim, 1 means it happened.
    #[inline]
    pub fn install_source(&self, access: Access) -> u64 {
        let to = match access {
            Access::Read => PageState::Clean,
            Access::Write => PageState::Dirty,
        };
        self.install(StateSet::MISSING, to)
    }

    /// Records an install of zeros: each claimed page `Missing` (a hole in the snapshot),
    /// `Removed` or `Zero` becomes `Zero` (`Dirty` for a write). `Clean` and `Dirty` pages
    /// are left alone. Returns how many pages were installed (a `Zero` page read again
    /// counts: its zero page may have been zapped and reinstalled).
    #[inline]
    pub fn install_zero(&self, access: Access) -> u64 {
        let to = match access {
            Access::Read => PageState::Zero,
            Access::Write => PageState::Dirty,
        };
        self.install(ZERO_INSTALLABLE, to)
    }

    #[inline]
    fn install(&self, from: StateSet, to: PageState) -> u64 {
        if self.pages.len() == 1 {
            self.tracker.transition_one(self.pages.start(), from, to)
        } else {
            self.tracker.transition(self.pages, from, to)
        }
    }

    /// Splits the claim at `page`: this claim keeps `start..page` and the returned one holds
    /// `page..end` (either may be empty). For a partial copy: record the installed prefix,
    /// then retry or release the rest.
    pub fn split_off(&mut self, page: u64) -> Result<Claim<'a>> {
        let (start, end) = (self.pages.start(), self.pages.end());
        if page < start || page > end {
            return Err(Error::NotInClaim { page, start, end });
        }
        self.pages = PageRange::new(start, page)?;
        Ok(Claim {
            tracker: self.tracker,
            pages: PageRange::new(page, end)?,
        })
    }

    /// Releases the claim (the same as dropping it).
    pub fn release(self) {}

    /// Detaches the claim from its borrow of the tracker, to hand it to another thread (a
    /// fault parked while its bytes are fetched). The pages stay claimed until
    /// [`PageTracker::reattach`] gives the claim back and it is dropped.
    pub fn detach(self) -> DetachedClaim {
        let detached = DetachedClaim {
            tracker: tracker_id(self.tracker),
            pages: self.pages,
        };
        std::mem::forget(self);
        detached
    }
}

/// A claim that left its tracker's borrow ([`Claim::detach`]): it holds its pages until it
/// is reattached to the same tracker. Dropping one without reattaching leaves the pages
/// claimed for good (every later attempt on them would be deferred forever), which the debug
/// build asserts on.
#[derive(Debug)]
#[must_use = "a detached claim holds its pages until it is reattached"]
pub struct DetachedClaim {
    tracker: usize,
    pages: PageRange,
}

impl DetachedClaim {
    /// The claimed pages.
    pub fn pages(&self) -> PageRange {
        self.pages
    }
}

impl Drop for DetachedClaim {
    fn drop(&mut self) {
        debug_assert!(
            std::thread::panicking(),
            "the detached claim on pages {:?} was dropped without being reattached",
            self.pages
        );
    }
}

/// A tracker's identity: its address, stable while any claim on it lives (a claim borrows it).
fn tracker_id(tracker: &PageTracker) -> usize {
    std::ptr::from_ref(tracker) as usize
}

impl PageTracker {
    /// Takes back a claim [`Claim::detach`]ed from this tracker. A claim from another tracker
    /// is handed back unchanged as the error.
    pub fn reattach(
        &self,
        detached: DetachedClaim,
    ) -> std::result::Result<Claim<'_>, DetachedClaim> {
        if detached.tracker != tracker_id(self) {
            return Err(detached);
        }
        let claim = Claim {
            tracker: self,
            pages: detached.pages,
        };
        std::mem::forget(detached);
        Ok(claim)
    }
}

impl Drop for Claim<'_> {
    #[inline]
    fn drop(&mut self) {
        if self.pages.len() == 1 {
            self.tracker.release_one(self.pages.start());
        } else {
            self.tracker
                .release_bits(self.pages.start(), self.pages.end());
        }
    }
}
