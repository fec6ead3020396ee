//! Page states, sets of states and the kind of access that installs a page.

use std::fmt;
use std::ops::{BitOr, BitOrAssign};

/// The state of one guest page, as the fault handler sees it.
///
/// | state | meaning | installed? |
/// |---|---|---|
/// | `Missing` | never touched since restore; bytes come from the snapshot | no |
/// | `Clean` | installed from the snapshot | yes |
/// | `Zero` | a zero page installed (hole in the snapshot, or after `Removed`) | yes |
/// | `Removed` | the guest freed it; the next touch must read zeros | no |
/// | `Dirty` | written since restore (or since the last generation reset) | yes |
///
/// The discriminants are the tracker's 3-bit codes; they are chosen so the two exports are a
/// single bit test: `Dirty` is the only code with bit 2 set, `Zero` and `Removed` the only ones
/// with bit 1 set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum PageState {
    /// Never touched since restore: the bytes still come from the snapshot.
    Missing = 0,
    /// Installed from the snapshot and not written since.
    Clean = 1,
    /// A zero page is installed.
    Zero = 2,
    /// Freed by the guest (a REMOVE event): absent, and must read as zeros.
    Removed = 3,
    /// Written since restore or since the last generation reset.
    Dirty = 4,
}

impl PageState {
    /// All five states, in code order.
    pub const ALL: [PageState; 5] = [
        PageState::Missing,
        PageState::Clean,
        PageState::Zero,
        PageState::Removed,
        PageState::Dirty,
    ];

    /// The 3-bit code stored in the tracker.
    pub(crate) const fn code(self) -> u64 {
        self as u64
    }

    /// Decodes a 3-bit code. Codes 5..=7 are never stored; should one appear anyway, it reads
    /// as `Dirty`, the answer that makes a snapshot writer keep the page rather than lose it.
    pub(crate) const fn from_code(code: u64) -> PageState {
        match code {
            0 => PageState::Missing,
            1 => PageState::Clean,
            2 => PageState::Zero,
            3 => PageState::Removed,
            _ => PageState::Dirty,
        }
    }

    /// Whether a page in this state is present in guest memory (`Clean`, `Zero`, `Dirty`).
    pub const fn is_installed(self) -> bool {
        matches!(self, PageState::Clean | PageState::Zero | PageState::Dirty)
    }
}

impl fmt::Display for PageState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            PageState::Missing => "missing",
            PageState::Clean => "clean",
            PageState::Zero => "zero",
            PageState::Removed => "removed",
            PageState::Dirty => "dirty",
        };
        f.write_str(name)
    }
}

/// A set of page states, used to select runs of pages and fault-around windows.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct StateSet(u8);

impl StateSet {
    /// No state.
    pub const NONE: StateSet = StateSet(0);
    /// `Missing` only: pages whose bytes still come from the snapshot.
    pub const MISSING: StateSet = StateSet::of(PageState::Missing);
    /// `Clean` only.
    pub const CLEAN: StateSet = StateSet::of(PageState::Clean);
    /// `Zero` only.
    pub const ZERO: StateSet = StateSet::of(PageState::Zero);
    /// `Removed` only.
    pub const REMOVED: StateSet = StateSet::of(PageState::Removed);
    /// `Dirty` only: the pages a diff snapshot must store.
    pub const DIRTY: StateSet = StateSet::of(PageState::Dirty);
    /// `Zero` and `Removed`: the pages a diff snapshot records as explicit zeros.
    pub const EMPTY: StateSet = StateSet::of(PageState::Zero).with(PageState::Removed);
    /// `Missing` and `Removed`: the pages not present in guest memory.
    pub const ABSENT: StateSet = StateSet::of(PageState::Missing).with(PageState::Removed);
    /// `Clean`, `Zero` and `Dirty`: the pages present in guest memory.
    pub const INSTALLED: StateSet = StateSet::of(PageState::Clean)
        .with(PageState::Zero)
        .with(PageState::Dirty);
    /// Every state.
    pub const ALL: StateSet = StateSet(0b1_1111);

    /// The set holding `state` alone.
    pub const fn of(state: PageState) -> StateSet {
        StateSet(1 << state as u8)
    }

    /// This set with `state` added.
    pub const fn with(self, state: PageState) -> StateSet {
        StateSet(self.0 | 1 << state as u8)
    }

    /// Whether `state` is in the set.
    pub const fn contains(self, state: PageState) -> bool {
        self.0 & (1 << state as u8) != 0
    }

    /// Whether the set holds no state.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The states in the set, in code order.
    pub fn iter(self) -> impl Iterator<Item = PageState> {
        PageState::ALL
            .into_iter()
            .filter(move |s| self.contains(*s))
    }
}

impl From<PageState> for StateSet {
    fn from(state: PageState) -> StateSet {
        StateSet::of(state)
    }
}

impl BitOr for StateSet {
    type Output = StateSet;
    fn bitor(self, rhs: StateSet) -> StateSet {
        StateSet(self.0 | rhs.0)
    }
}

impl BitOr<PageState> for StateSet {
    type Output = StateSet;
    fn bitor(self, rhs: PageState) -> StateSet {
        self.with(rhs)
    }
}

impl BitOrAssign for StateSet {
    fn bitor_assign(&mut self, rhs: StateSet) {
        self.0 |= rhs.0;
    }
}

impl FromIterator<PageState> for StateSet {
    fn from_iter<I: IntoIterator<Item = PageState>>(iter: I) -> StateSet {
        iter.into_iter().fold(StateSet::NONE, StateSet::with)
    }
}

impl fmt::Debug for StateSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// The kind of guest access an install serves: a write makes the page `Dirty` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// A read fault (or a prefetch): the page becomes `Clean` or `Zero`.
    Read,
    /// A write fault: the page becomes `Dirty`.
    Write,
}

/// What [`PageTracker::mark_written`](crate::PageTracker::mark_written) found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteMark {
    /// The page was `Clean` or `Zero` and is now `Dirty`.
    Marked,
    /// The page was already `Dirty`; nothing changed.
    AlreadyDirty,
    /// The page is not installed (`Missing` or `Removed`), so it cannot have been written;
    /// nothing changed. A write-protect fault on such a page means the caller's view is stale.
    NotInstalled(PageState),
}

/// The number of pages in each state, over the whole tracker or a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct StateCounts {
    /// Pages in state `Missing`.
    pub missing: u64,
    /// Pages in state `Clean`.
    pub clean: u64,
    /// Pages in state `Zero`.
    pub zero: u64,
    /// Pages in state `Removed`.
    pub removed: u64,
    /// Pages in state `Dirty`.
    pub dirty: u64,
}

impl StateCounts {
    /// The count for one state.
    pub const fn get(&self, state: PageState) -> u64 {
        match state {
            PageState::Missing => self.missing,
            PageState::Clean => self.clean,
            PageState::Zero => self.zero,
            PageState::Removed => self.removed,
            PageState::Dirty => self.dirty,
        }
    }

    /// The summed counts of the states in `set`.
    pub fn sum(&self, set: StateSet) -> u64 {
        set.iter().map(|s| self.get(s)).sum()
    }

    /// All pages counted.
    pub const fn total(&self) -> u64 {
        self.missing + self.clean + self.zero + self.removed + self.dirty
    }

    pub(crate) fn add(&mut self, state: PageState, n: u64) {
        match state {
            PageState::Missing => self.missing += n,
            PageState::Clean => self.clean += n,
            PageState::Zero => self.zero += n,
            PageState::Removed => self.removed += n,
            PageState::Dirty => self.dirty += n,
        }
    }

    pub(crate) fn merge(&mut self, other: &StateCounts) {
        for state in PageState::ALL {
            self.add(state, other.get(state));
        }
    }
}
