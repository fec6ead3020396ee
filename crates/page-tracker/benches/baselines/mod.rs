//! Baseline trackers for the benches: the obvious designs, doing the same operations, so the
//! ratio shows what the lock-free nibble table buys.
//!
//! Codes as in `PageState`: 0 Missing, 1 Clean, 2 Zero, 3 Removed, 4 Dirty.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::{Mutex, RwLock};

pub(crate) const MISSING: u8 = 0;
pub(crate) const CLEAN: u8 = 1;
pub(crate) const REMOVED: u8 = 3;
pub(crate) const DIRTY: u8 = 4;
const CLAIMED: u8 = 0x80;

/// One byte per page (state code, claim in bit 7) behind one mutex.
pub(crate) struct MutexTracker {
    pages: Mutex<Vec<u8>>,
}

impl MutexTracker {
    pub(crate) fn new(pages: usize) -> MutexTracker {
        MutexTracker {
            pages: Mutex::new(vec![MISSING; pages]),
        }
    }

    pub(crate) fn state(&self, page: usize) -> u8 {
        self.pages.lock().unwrap()[page] & !CLAIMED
    }

    /// The engine's flow takes the lock twice: claim, fetch outside the lock, install.
    pub(crate) fn try_claim(&self, page: usize) -> bool {
        let mut pages = self.pages.lock().unwrap();
        let byte = &mut pages[page];
        if *byte & CLAIMED != 0 {
            return false;
        }
        *byte |= CLAIMED;
        true
    }

    /// Missing -> Clean/Dirty, and releases the claim.
    pub(crate) fn install_source_and_release(&self, page: usize, to: u8) -> bool {
        let mut pages = self.pages.lock().unwrap();
        let byte = &mut pages[page];
        let installed = *byte & !CLAIMED == MISSING;
        if installed {
            *byte = to;
        } else {
            *byte &= !CLAIMED;
        }
        installed
    }

    pub(crate) fn set(&self, range: Range<usize>, state: u8) {
        self.pages.lock().unwrap()[range].fill(state);
    }

    /// Every page Removed, claims kept (the loop vectorises).
    pub(crate) fn remove(&self, range: Range<usize>) {
        for byte in &mut self.pages.lock().unwrap()[range] {
            *byte = (*byte & CLAIMED) | REMOVED;
        }
    }

    pub(crate) fn dirty_ranges(&self) -> Vec<Range<usize>> {
        let pages = self.pages.lock().unwrap();
        let mut runs = Vec::new();
        let mut start = None;
        for (page, byte) in pages.iter().enumerate() {
            match (byte & !CLAIMED == DIRTY, start) {
                (true, None) => start = Some(page),
                (false, Some(s)) => {
                    runs.push(s..page);
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            runs.push(s..pages.len());
        }
        runs
    }
}

/// A range map (start -> (end, state)) of every page not `Missing`, plus a claim set, behind
/// one reader-writer lock.
pub(crate) struct BTreeTracker {
    inner: RwLock<Ranges>,
}

#[derive(Default)]
struct Ranges {
    states: BTreeMap<u64, (u64, u8)>,
    claims: BTreeSet<u64>,
}

impl Ranges {
    fn state(&self, page: u64) -> u8 {
        match self.states.range(..=page).next_back() {
            Some((_, &(end, state))) if page < end => state,
            _ => MISSING,
        }
    }

    /// Sets `start..end` to `state` (Missing removes), splitting and merging neighbours.
    fn set(&mut self, start: u64, end: u64, state: u8) {
        // Split an interval straddling `start` or `end`.
        for cut in [start, end] {
            if let Some((&s, &(e, st))) = self.states.range(..cut).next_back() {
                if e > cut {
                    self.states.insert(s, (cut, st));
                    self.states.insert(cut, (e, st));
                }
            }
        }
        let inside: Vec<u64> = self.states.range(start..end).map(|(&s, _)| s).collect();
        for s in inside {
            self.states.remove(&s);
        }
        if state == MISSING {
            return;
        }
        let (mut start, mut end) = (start, end);
        if let Some((&s, &(e, st))) = self.states.range(..start).next_back() {
            if e == start && st == state {
                self.states.remove(&s);
                start = s;
            }
        }
        if let Some(&(e, st)) = self.states.get(&end) {
            if st == state {
                self.states.remove(&end);
                end = e;
            }
        }
        self.states.insert(start, (end, state));
    }
}

impl BTreeTracker {
    pub(crate) fn new() -> BTreeTracker {
        BTreeTracker {
            inner: RwLock::new(Ranges::default()),
        }
    }

    pub(crate) fn state(&self, page: u64) -> u8 {
        self.inner.read().unwrap().state(page)
    }

    pub(crate) fn try_claim(&self, page: u64) -> bool {
        self.inner.write().unwrap().claims.insert(page)
    }

    pub(crate) fn install_source_and_release(&self, page: u64, to: u8) -> bool {
        let mut inner = self.inner.write().unwrap();
        inner.claims.remove(&page);
        let installed = inner.state(page) == MISSING;
        if installed {
            inner.set(page, page + 1, to);
        }
        installed
    }

    pub(crate) fn set(&self, range: Range<u64>, state: u8) {
        self.inner
            .write()
            .unwrap()
            .set(range.start, range.end, state);
    }

    pub(crate) fn remove(&self, range: Range<u64>) {
        self.set(range, REMOVED);
    }

    pub(crate) fn dirty_ranges(&self) -> Vec<Range<u64>> {
        let inner = self.inner.read().unwrap();
        let mut runs: Vec<Range<u64>> = Vec::new();
        for (&start, &(end, state)) in &inner.states {
            if state != DIRTY {
                continue;
            }
            match runs.last_mut() {
                Some(last) if last.end == start => last.end = end,
                _ => runs.push(start..end),
            }
        }
        runs
    }
}
