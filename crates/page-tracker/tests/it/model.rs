//! The tracker against a plain `Vec` model: random operation sequences, every transition rule,
//! claims, runs, exports and counts.

use page_tracker::{
    Access, Claim, Error, Geometry, PageRange, PageSize, PageState, PageTracker, StateCounts,
    StateSet, WriteMark,
};
use proptest::prelude::*;

#[derive(Debug, Clone, Copy, PartialEq)]
struct ModelPage {
    state: PageState,
    claimed: bool,
}

/// The rules, one page at a time, in the most direct form.
struct Model {
    pages: Vec<ModelPage>,
}

impl Model {
    fn new(n: u64) -> Model {
        Model {
            pages: vec![
                ModelPage {
                    state: PageState::Missing,
                    claimed: false
                };
                n as usize
            ],
        }
    }

    fn len(&self) -> u64 {
        self.pages.len() as u64
    }

    fn page(&mut self, p: u64) -> &mut ModelPage {
        &mut self.pages[p as usize]
    }

    fn state(&self, p: u64) -> PageState {
        self.pages[p as usize].state
    }

    fn remove(&mut self, range: PageRange) {
        for p in range {
            self.page(p).state = PageState::Removed;
        }
    }

    fn claim_run(&mut self, page: u64, window: u64, set: StateSet) -> Option<PageRange> {
        let free_in_set = |m: &Model, p: u64| {
            let pg = m.pages[p as usize];
            !pg.claimed && set.contains(pg.state)
        };
        if !free_in_set(self, page) {
            return None;
        }
        let window_start = page / window * window;
        let window_end = (window_start + window).min(self.len());
        let mut end = page + 1;
        while end < window_end && free_in_set(self, end) {
            end += 1;
        }
        let mut start = page;
        while start > window_start && free_in_set(self, start - 1) {
            start -= 1;
        }
        for p in start..end {
            self.page(p).claimed = true;
        }
        Some(PageRange::new(start, end).unwrap())
    }

    fn release(&mut self, range: PageRange) {
        for p in range {
            assert!(
                self.pages[p as usize].claimed,
                "model released an unclaimed page"
            );
            self.page(p).claimed = false;
        }
    }

    fn install(&mut self, range: PageRange, from: StateSet, to: PageState) -> u64 {
        let mut n = 0;
        for p in range {
            if from.contains(self.state(p)) {
                self.page(p).state = to;
                n += 1;
            }
        }
        n
    }

    fn mark_written(&mut self, p: u64) -> WriteMark {
        match self.state(p) {
            PageState::Clean | PageState::Zero => {
                self.page(p).state = PageState::Dirty;
                WriteMark::Marked
            }
            PageState::Dirty => WriteMark::AlreadyDirty,
            other => WriteMark::NotInstalled(other),
        }
    }

    fn runs(&self, range: PageRange, set: StateSet) -> Vec<PageRange> {
        let mut out: Vec<PageRange> = Vec::new();
        for p in range {
            if set.contains(self.state(p)) {
                match out.last_mut() {
                    Some(last) if last.end() == p => {
                        *last = PageRange::new(last.start(), p + 1).unwrap()
                    }
                    _ => out.push(PageRange::single(p).unwrap()),
                }
            }
        }
        out
    }

    fn counts(&self, range: PageRange) -> StateCounts {
        let mut c = StateCounts::default();
        for p in range {
            match self.state(p) {
                PageState::Missing => c.missing += 1,
                PageState::Clean => c.clean += 1,
                PageState::Zero => c.zero += 1,
                PageState::Removed => c.removed += 1,
                PageState::Dirty => c.dirty += 1,
            }
        }
        c
    }
}

/// One operation; positions are fractions of the tracker, mapped in `apply`, and may point a
/// few pages past the end to exercise the range errors.
#[derive(Debug, Clone)]
enum Op {
    Remove { at: u64, len: u64 },
    Claim { at: u64 },
    ClaimRun { at: u64, window_log2: u32, set: u8 },
    Release { slot: usize },
    Split { slot: usize, at: u64 },
    InstallSource { slot: usize, write: bool },
    InstallZero { slot: usize, write: bool },
    MarkWritten { at: u64 },
    Reset { at: u64, len: u64 },
    ResetAll,
}

fn op() -> impl Strategy<Value = Op> {
    let at = any::<u64>();
    let len = any::<u64>();
    prop_oneof![
        2 => (at, len).prop_map(|(at, len)| Op::Remove { at, len }),
        3 => at.prop_map(|at| Op::Claim { at }),
        4 => (at, 0..10u32, 0..32u8)
            .prop_map(|(at, window_log2, set)| Op::ClaimRun { at, window_log2, set }),
        3 => any::<usize>().prop_map(|slot| Op::Release { slot }),
        2 => (any::<usize>(), any::<u64>()).prop_map(|(slot, at)| Op::Split { slot, at }),
        4 => (any::<usize>(), any::<bool>()).prop_map(|(slot, write)| Op::InstallSource { slot, write }),
        3 => (any::<usize>(), any::<bool>()).prop_map(|(slot, write)| Op::InstallZero { slot, write }),
        3 => at.prop_map(|at| Op::MarkWritten { at }),
        1 => (at, len).prop_map(|(at, len)| Op::Reset { at, len }),
        1 => Just(Op::ResetAll),
    ]
}

fn set_from_bits(bits: u8) -> StateSet {
    PageState::ALL
        .into_iter()
        .filter(|s| bits & (1 << *s as u8) != 0)
        .collect()
}

/// A page index mostly inside the tracker, sometimes just past it.
fn page_at(at: u64, n: u64) -> u64 {
    at % (n + 3)
}

struct Harness<'a> {
    tracker: &'a PageTracker,
    model: Model,
    claims: Vec<Claim<'a>>,
}

impl<'a> Harness<'a> {
    fn out_of_range(&self, range: PageRange) -> bool {
        range.end() > self.model.len()
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let n = self.model.len();
        let t = self.tracker;
        match *op {
            Op::Remove { at, len } => {
                let range = PageRange::with_len(page_at(at, n), len % (n + 2)).unwrap();
                if self.out_of_range(range) {
                    let refused = matches!(t.remove(range), Err(Error::RangeOutOfRange { .. }));
                    prop_assert!(refused);
                } else {
                    t.remove(range).unwrap();
                    self.model.remove(range);
                }
            }
            Op::Claim { at } => {
                let page = page_at(at, n);
                if page >= n {
                    let refused = matches!(t.try_claim(page), Err(Error::PageOutOfRange { .. }));
                    prop_assert!(refused);
                } else {
                    let got = t.try_claim(page).unwrap();
                    let want = self.model.claim_run(page, 1, StateSet::ALL);
                    prop_assert_eq!(got.as_ref().map(Claim::pages), want);
                    self.claims.extend(got);
                }
            }
            Op::ClaimRun {
                at,
                window_log2,
                set,
            } => {
                let page = page_at(at, n);
                let window = 1u64 << window_log2;
                let set = set_from_bits(set);
                if page >= n {
                    prop_assert!(t.try_claim_run(page, window, set).is_err());
                } else {
                    let got = t.try_claim_run(page, window, set).unwrap();
                    let want = self.model.claim_run(page, window, set);
                    prop_assert_eq!(got.as_ref().map(Claim::pages), want);
                    self.claims.extend(got);
                }
            }
            Op::Release { slot } => {
                if !self.claims.is_empty() {
                    let claim = self.claims.swap_remove(slot % self.claims.len());
                    self.model.release(claim.pages());
                    claim.release();
                }
            }
            Op::Split { slot, at } => {
                if !self.claims.is_empty() {
                    let index = slot % self.claims.len();
                    let claim = &mut self.claims[index];
                    let (start, end) = (claim.pages().start(), claim.pages().end());
                    // Mostly inside the claim, sometimes one past either end.
                    let page = (start + at % (end - start + 3)).wrapping_sub(1);
                    if page < start || page > end {
                        let refused =
                            matches!(claim.split_off(page), Err(Error::NotInClaim { .. }));
                        prop_assert!(refused);
                        prop_assert_eq!(claim.pages(), PageRange::new(start, end).unwrap());
                    } else {
                        let rest = claim.split_off(page).unwrap();
                        prop_assert_eq!(claim.pages(), PageRange::new(start, page).unwrap());
                        prop_assert_eq!(rest.pages(), PageRange::new(page, end).unwrap());
                        self.claims.push(rest);
                    }
                }
            }
            Op::InstallSource { slot, write } => {
                if !self.claims.is_empty() {
                    let claim = &self.claims[slot % self.claims.len()];
                    let (access, to) = if write {
                        (Access::Write, PageState::Dirty)
                    } else {
                        (Access::Read, PageState::Clean)
                    };
                    let want = self.model.install(claim.pages(), StateSet::MISSING, to);
                    prop_assert_eq!(claim.install_source(access), want);
                }
            }
            Op::InstallZero { slot, write } => {
                if !self.claims.is_empty() {
                    let claim = &self.claims[slot % self.claims.len()];
                    let (access, to) = if write {
                        (Access::Write, PageState::Dirty)
                    } else {
                        (Access::Read, PageState::Zero)
                    };
                    let from = StateSet::MISSING | StateSet::ZERO | StateSet::REMOVED;
                    let want = self.model.install(claim.pages(), from, to);
                    prop_assert_eq!(claim.install_zero(access), want);
                }
            }
            Op::MarkWritten { at } => {
                let page = page_at(at, n);
                if page >= n {
                    prop_assert!(t.mark_written(page).is_err());
                } else {
                    prop_assert_eq!(t.mark_written(page).unwrap(), self.model.mark_written(page));
                }
            }
            Op::Reset { at, len } => {
                let range = PageRange::with_len(page_at(at, n), len % (n + 2)).unwrap();
                if self.out_of_range(range) {
                    prop_assert!(t.reset_generation(range).is_err());
                } else {
                    let want = self.model.install(range, StateSet::DIRTY, PageState::Clean);
                    prop_assert_eq!(t.reset_generation(range).unwrap(), want);
                }
            }
            Op::ResetAll => {
                let all = PageRange::new(0, n).unwrap();
                let want = self.model.install(all, StateSet::DIRTY, PageState::Clean);
                prop_assert_eq!(t.reset_generation_all(), want);
            }
        }
        Ok(())
    }

    /// Cheap checks after every operation: counts, one runs query and claims over a range.
    fn check_sample(&self, at: u64, len: u64, set: u8) -> Result<(), TestCaseError> {
        let n = self.model.len();
        let t = self.tracker;
        let all = PageRange::new(0, n).unwrap();
        prop_assert_eq!(t.counts(), self.model.counts(all));
        let start = if n == 0 { 0 } else { at % n };
        let range = PageRange::new(start, (start + len).min(n)).unwrap();
        let set = set_from_bits(set);
        let runs: Vec<_> = t.runs(range, set).unwrap().collect();
        prop_assert_eq!(runs, self.model.runs(range, set));
        prop_assert_eq!(t.counts_in(range).unwrap(), self.model.counts(range));
        let claimed = range
            .iter()
            .filter(|&p| self.model.pages[p as usize].claimed)
            .count() as u64;
        prop_assert_eq!(t.claimed_in(range).unwrap(), claimed);
        Ok(())
    }

    /// Every page, every claim bit and both exports.
    fn check_all(&self) -> Result<(), TestCaseError> {
        let n = self.model.len();
        let t = self.tracker;
        for p in 0..n {
            prop_assert_eq!(t.state(p).unwrap(), self.model.state(p), "page {}", p);
            prop_assert_eq!(
                t.is_claimed(p).unwrap(),
                self.model.pages[p as usize].claimed
            );
        }
        let all = PageRange::new(0, n).unwrap();
        prop_assert_eq!(t.dirty_ranges(), self.model.runs(all, StateSet::DIRTY));
        prop_assert_eq!(t.empty_ranges(), self.model.runs(all, StateSet::EMPTY));
        prop_assert!(t.state(n).is_err());
        Ok(())
    }
}

fn run(n: u64, huge: bool, ops: &[(Op, (u64, u64, u8))]) -> Result<(), TestCaseError> {
    let page_size = if huge {
        PageSize::SIZE_2M
    } else {
        PageSize::SIZE_4K
    };
    let geometry = Geometry::with_pages(0x40_0000_0000, n, page_size).unwrap();
    let tracker = PageTracker::new(geometry).unwrap();
    let mut h = Harness {
        tracker: &tracker,
        model: Model::new(n),
        claims: Vec::new(),
    };
    for (op, (at, len, set)) in ops {
        h.apply(op)?;
        h.check_sample(*at, *len, *set)?;
    }
    h.check_all()?;
    // Dropping the remaining claims releases every claim bit.
    h.claims.clear();
    prop_assert_eq!(tracker.claimed_in(geometry.all_pages()).unwrap(), 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Small trackers: words, partial words and claim-bitmap edges.
    #[test]
    fn small_tracker_follows_the_model(
        n in 0..300u64,
        huge in any::<bool>(),
        ops in prop::collection::vec((op(), (any::<u64>(), 0..400u64, 0..32u8)), 1..60),
    ) {
        run(n, huge, &ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Trackers over two or three count chunks (4096 pages), the last one partial.
    #[test]
    fn multi_chunk_tracker_follows_the_model(
        n in 4000..9000u64,
        huge in any::<bool>(),
        ops in prop::collection::vec((op(), (any::<u64>(), 0..9000u64, 0..32u8)), 1..40),
    ) {
        run(n, huge, &ops)?;
    }
}

#[test]
fn a_detached_claim_holds_its_pages_until_reattached_to_its_own_tracker() {
    let geometry = || Geometry::new(0, 64 * 4096, PageSize::new(4096).unwrap()).unwrap();
    let tracker = PageTracker::new(geometry()).unwrap();
    let other = PageTracker::new(geometry()).unwrap();
    let claim = tracker
        .try_claim_run(8, 8, StateSet::MISSING)
        .unwrap()
        .expect("unclaimed");
    let detached = claim.detach();
    assert_eq!(detached.pages(), PageRange::new(8, 16).unwrap());
    assert!(tracker.try_claim(9).unwrap().is_none(), "still claimed");
    let detached = other
        .reattach(detached)
        .expect_err("another tracker refuses it");
    let claim = tracker.reattach(detached).expect("its own tracker");
    assert_eq!(claim.install_source(Access::Read), 8);
    drop(claim);
    assert!(tracker.try_claim(9).unwrap().is_some(), "released on drop");
    assert_eq!(tracker.state(9).unwrap(), PageState::Clean);
}
