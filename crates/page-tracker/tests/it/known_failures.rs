//! The tracker's share of `known-failures.md` items 1-5, one deterministic test each. The
//! handler owns the locking half of each; these pin the state rules it relies on.

use page_tracker::{
    Access, Geometry, PageRange, PageSize, PageState, PageTracker, StateSet, WriteMark,
};

fn tracker(pages: u64) -> PageTracker {
    PageTracker::new(Geometry::with_pages(0, pages, PageSize::SIZE_4K).unwrap()).unwrap()
}

fn range(start: u64, end: u64) -> PageRange {
    PageRange::new(start, end).unwrap()
}

/// Item 1: a worker claimed a Missing page and fetched its snapshot bytes; a REMOVE landed
/// before it recorded the install. Re-checking inside the lock sees Removed, and the install
/// records nothing (had it been a blind store, the page would read stale snapshot bytes).
#[test]
fn item1_install_after_a_remove_of_the_claimed_page_installs_nothing() {
    let t = tracker(64);
    let claim = t.try_claim(7).unwrap().unwrap();
    t.remove(range(0, 64)).unwrap();
    assert_eq!(t.state(7).unwrap(), PageState::Removed);
    assert_eq!(claim.install_source(Access::Read), 0);
    assert_eq!(claim.install_source(Access::Write), 0);
    assert_eq!(t.state(7).unwrap(), PageState::Removed);
    // The next touch serves zeros.
    assert_eq!(claim.install_zero(Access::Read), 1);
    assert_eq!(t.state(7).unwrap(), PageState::Zero);
}

/// Item 2: the REMOVE batch must never wait on an in-flight worker. `remove` takes no lock and
/// succeeds on claimed pages, leaving the claims to their owners.
#[test]
fn item2_remove_succeeds_on_claimed_pages_and_leaves_the_claims() {
    let t = tracker(256);
    let run = t.try_claim_run(40, 64, StateSet::MISSING).unwrap().unwrap();
    assert_eq!(run.pages(), range(0, 64));
    t.remove(range(0, 256)).unwrap();
    assert_eq!(t.counts_in(range(0, 256)).unwrap().removed, 256);
    // Still claimed: nobody else may install them until the owner lets go.
    assert_eq!(t.claimed_in(range(0, 256)).unwrap(), 64);
    assert!(t.try_claim(10).unwrap().is_none());
    drop(run);
    assert_eq!(t.claimed_in(range(0, 256)).unwrap(), 0);
    assert!(t.try_claim(10).unwrap().is_some());
}

/// Item 4: prefetch must never resurrect a freed page with stale snapshot bytes. Source bytes
/// go only into Missing pages, whatever the claimed run holds.
#[test]
fn item4_source_installs_go_into_missing_pages_only() {
    let t = tracker(16);
    // One page in each state: 0 Missing, 1 Clean, 2 Zero, 3 Removed, 4 Dirty.
    let one = |p| t.try_claim(p).unwrap().unwrap();
    one(1).install_source(Access::Read);
    one(2).install_zero(Access::Read);
    t.remove(range(3, 4)).unwrap();
    one(4).install_source(Access::Write);
    let before: Vec<_> = (0..5).map(|p| t.state(p).unwrap()).collect();
    assert_eq!(before, PageState::ALL);

    // A prefetch claiming by state never takes the freed page...
    let prefetch = t.try_claim_run(0, 16, StateSet::MISSING).unwrap().unwrap();
    assert_eq!(prefetch.pages(), range(0, 1));
    drop(prefetch);
    // ...and a claim over all of them installs into page 0 alone.
    let all = t.try_claim_run(0, 8, StateSet::ALL).unwrap().unwrap();
    assert_eq!(all.pages(), range(0, 8));
    assert_eq!(all.install_source(Access::Read), 4); // pages 0, 5, 6, 7
    let after: Vec<_> = (0..5).map(|p| t.state(p).unwrap()).collect();
    assert_eq!(
        after,
        [
            PageState::Clean,
            PageState::Clean,
            PageState::Zero,
            PageState::Removed,
            PageState::Dirty
        ]
    );
}

/// Item 5: an installer suspended between its copy and its bookkeeping must not overwrite a
/// write promotion that happened meanwhile: installs never downgrade.
#[test]
fn item5_a_late_install_never_downgrades_a_written_page() {
    let t = tracker(16);
    // A zero page, claimed for a re-install (it may have been zapped)...
    t.try_claim(3).unwrap().unwrap().install_zero(Access::Read);
    let late = t.try_claim(3).unwrap().unwrap();
    // ...is written meanwhile (a write-protect fault).
    assert_eq!(t.mark_written(3).unwrap(), WriteMark::Marked);
    // The late installer records nothing: the page stays Dirty and is exported.
    assert_eq!(late.install_zero(Access::Read), 0);
    assert_eq!(late.install_source(Access::Read), 0);
    drop(late);
    assert_eq!(t.state(3).unwrap(), PageState::Dirty);
    assert_eq!(t.dirty_ranges(), [range(3, 4)]);
    // And a write fault never lands on a freed page.
    t.remove(range(3, 4)).unwrap();
    assert_eq!(
        t.mark_written(3).unwrap(),
        WriteMark::NotInstalled(PageState::Removed)
    );
    assert_eq!(
        t.mark_written(9).unwrap(),
        WriteMark::NotInstalled(PageState::Missing)
    );
}

/// Item 36's tracker half: after a REMOVE the exports list the page as empty, not dirty; and
/// a page written after a zero install is dirty, not empty.
#[test]
fn exports_keep_dirty_and_empty_apart() {
    let t = tracker(32);
    t.remove(range(0, 8)).unwrap();
    let claim = t.try_claim(2).unwrap().unwrap();
    claim.install_zero(Access::Write);
    drop(claim);
    assert_eq!(t.dirty_ranges(), [range(2, 3)]);
    assert_eq!(t.empty_ranges(), [range(0, 2), range(3, 8)]);
    assert_eq!(t.reset_generation_all(), 1);
    assert_eq!(t.state(2).unwrap(), PageState::Clean);
}
