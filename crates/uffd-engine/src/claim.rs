//! Shaping page claims: the fault-around window of a demand fault, clipped to its region, and
//! narrowed to one page when the window cannot be installed whole.

use page_tracker::{Claim, PageState, StateSet};

use crate::fault::FaultKind;
use crate::shared::Shared;

/// The claim a fault of `kind` on image page `page` serves: the aligned fault-around window
/// of still-Missing pages for a read of a Missing page, else the page alone. `None` when
/// another attempt holds the page.
pub(crate) fn for_fault<'t>(shared: &'t Shared, kind: FaultKind, page: u64) -> Option<Claim<'t>> {
    let tracker = &shared.tracker;
    let window = shared.config.fault_around_pages;
    if kind == FaultKind::Read
        && window > 1
        && tracker.state(page).ok() == Some(PageState::Missing)
        && let Ok(Some(run)) = tracker.try_claim_run(page, window, StateSet::MISSING)
    {
        return Some(clip_to_region(shared, run, page));
    }
    tracker.try_claim(page).ok().flatten()
}

/// Clips a run claim to the region holding `page` (a window may span two regions of the
/// image whose host ranges are apart: no COPY covers both). The pages cut off are released.
pub(crate) fn clip_to_region<'t>(shared: &Shared, mut claim: Claim<'t>, page: u64) -> Claim<'t> {
    let Some((first, end)) = shared.region_pages(page) else {
        return claim;
    };
    if claim.pages().end() > end {
        let _beyond = claim.split_off(end);
    }
    if claim.pages().start() < first
        && let Ok(rest) = claim.split_off(first)
    {
        claim = rest;
    }
    claim
}

/// Shrinks a run claim to its one page `page`, releasing the rest.
pub(crate) fn narrow(mut claim: Claim<'_>, page: u64) -> Claim<'_> {
    if claim.pages().len() == 1 {
        return claim;
    }
    let Ok(mut single) = claim.split_off(page) else {
        return claim;
    };
    drop(claim);
    let _rest = single.split_off(page + 1);
    single
}
