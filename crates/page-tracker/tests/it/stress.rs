//! Threads race claims, installs, removes, writes and generation resets on overlapping pages.
//! Afterwards no page is in an impossible state, no install overwrote a later remove or
//! write, no two claims ever held one page, and every claim was released.
//!
//! Runs ~1.5 s in all; `PAGE_TRACKER_STRESS_SECS` sets the duration, `UFFD_SOAK` makes it
//! 30 s, and `PAGE_TRACKER_STRESS_SEED` replays the seed a failed run printed.

use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use page_tracker::{
    Access, Claim, Geometry, PageRange, PageSize, PageState, PageTracker, StateSet, WriteMark,
};

/// Pages `0..GROUP`: installs and writes, no remove or reset. A write must survive.
const WRITES: u64 = 0;
/// Pages `GROUP..2*GROUP`: installs, writes and removes. Nothing comes back from the source
/// after a remove.
const REMOVES: u64 = 1;
/// Pages `2*GROUP..3*GROUP`: installs, writes and generation resets.
const RESETS: u64 = 2;
const GROUP: u64 = 512;
const PAGES: u64 = 3 * GROUP;
const WORKERS: usize = 4;
/// Pages per group the threads work on.
const HOT: u64 = 96;

fn duration() -> Duration {
    let secs = std::env::var("PAGE_TRACKER_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(if std::env::var_os("UFFD_SOAK").is_some() {
            30.0
        } else {
            1.5
        });
    Duration::from_secs_f64(secs)
}

/// The environment variable that fixes the first round's seed (hex with `0x`, or decimal).
const SEED_ENV: &str = "PAGE_TRACKER_STRESS_SEED";

/// The first round's seed: [`SEED_ENV`] if set, else the clock. The thread schedule is not
/// replayed, so a seed only brings back the same operations, not the same interleaving.
fn seed() -> u64 {
    match std::env::var(SEED_ENV) {
        Ok(text) => {
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("{SEED_ENV}={text}: {e}"))
        }
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    }
}

/// xorshift64*: a dependency-free per-thread generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the threads learned, for the checks.
struct Shared {
    tracker: PageTracker,
    /// Claim holders per page, counted by the test: more than one is a broken claim.
    holders: Vec<AtomicU32>,
    /// Set once a remove of the page has returned.
    removed: Vec<AtomicBool>,
    /// Set once a write to the page was recorded (write group only).
    written: Vec<AtomicBool>,
    /// Set once the page was seen in a state other than `Missing`.
    left_missing: Vec<AtomicBool>,
    stop: AtomicBool,
    ops: AtomicU64,
    installs: AtomicU64,
    refused_after_remove: AtomicU64,
}

fn flags(n: u64) -> Vec<AtomicBool> {
    (0..n).map(|_| AtomicBool::new(false)).collect()
}

impl Shared {
    fn hold(&self, claim: &Claim<'_>) {
        for p in claim.pages() {
            let before = self.holders[p as usize].fetch_add(1, SeqCst);
            assert_eq!(before, 0, "page {p} claimed twice");
        }
    }

    fn unhold(&self, claim: Claim<'_>) {
        for p in claim.pages() {
            self.holders[p as usize].fetch_sub(1, SeqCst);
        }
        claim.release();
    }

    fn worker(&self, seed: u64) {
        let t = &self.tracker;
        let mut rng = Rng(seed | 1);
        while !self.stop.load(SeqCst) {
            self.ops.fetch_add(1, SeqCst);
            let group = rng.below(3);
            // Crowd the threads onto the first pages of the group so they collide.
            let page = group * GROUP + rng.below(HOT);
            match rng.below(10) {
                0..=3 => self.claim_and_install(&mut rng, group, page),
                4..=5 if group == WRITES => {
                    // Each page is written once per round, so a lost write cannot be
                    // hidden by a later one; the flag claims that one write.
                    if !self.written[page as usize].swap(true, SeqCst) {
                        match t.mark_written(page).unwrap() {
                            WriteMark::Marked | WriteMark::AlreadyDirty => {}
                            WriteMark::NotInstalled(PageState::Missing) => {
                                self.written[page as usize].store(false, SeqCst);
                            }
                            other => panic!("page {page}: {other:?} with no remove"),
                        }
                    }
                }
                4..=5 => {
                    t.mark_written(page).unwrap();
                }
                6..=7 if group == REMOVES && rng.below(4) == 0 => {
                    // Each page is removed once per round (a later remove would hide an
                    // install that overwrote an earlier one), spread over the round.
                    let end = (page + 1 + rng.below(12)).min((REMOVES + 1) * GROUP);
                    let end = (page..end)
                        .find(|&p| self.removed[p as usize].load(SeqCst))
                        .unwrap_or(end);
                    let range = PageRange::new(page, end).unwrap();
                    t.remove(range).unwrap();
                    for p in range {
                        self.removed[p as usize].store(true, SeqCst);
                    }
                }
                6..=7 if group == RESETS => {
                    let start = RESETS * GROUP + rng.below(HOT);
                    t.reset_generation(PageRange::with_len(start, 32).unwrap())
                        .unwrap();
                }
                _ => {
                    // The flag first, then the state. A flag seen set was stored after a
                    // state other than `Missing` was written to this page's word (by the
                    // thread that stored it, in program order); the SeqCst load synchronises
                    // with that store, so the state load below must return that write or a
                    // later one of the same word, and no transition leads back to `Missing`.
                    // Read the other way round, an install and its flag could both land
                    // between the two loads: an old `Missing` beside a new flag, which is no
                    // regression.
                    let was_installed = self.left_missing[page as usize].load(SeqCst);
                    let state = t.state(page).unwrap();
                    if state != PageState::Missing {
                        self.left_missing[page as usize].store(true, SeqCst);
                    } else {
                        assert!(!was_installed, "page {page} back to Missing");
                    }
                }
            }
        }
    }

    fn claim_and_install(&self, rng: &mut Rng, group: u64, page: u64) {
        let t = &self.tracker;
        let claim = if rng.below(2) == 0 {
            t.try_claim(page).unwrap()
        } else {
            let set = if rng.below(2) == 0 {
                StateSet::MISSING
            } else {
                StateSet::ABSENT
            };
            t.try_claim_run(page, 16, set).unwrap()
        };
        let Some(claim) = claim else { return };
        self.hold(&claim);
        // Where a remove already returned, nothing may come from the source.
        let not_removed = claim
            .pages()
            .into_iter()
            .filter(|&p| !self.removed[p as usize].load(SeqCst))
            .count() as u64;
        // Writes only on single pages, so the test knows which page was written.
        let single = claim.pages().len() == 1;
        let access = if single && rng.below(3) == 0 {
            Access::Write
        } else {
            Access::Read
        };
        if rng.below(8) == 0 {
            std::thread::yield_now(); // widen the window between claim and install
        }
        let installed = if rng.below(4) == 0 {
            claim.install_zero(access)
        } else {
            let installed = claim.install_source(access);
            assert!(
                installed <= not_removed,
                "installed {installed} pages from the source into {:?}, {not_removed} not removed",
                claim.pages()
            );
            if group == REMOVES && installed < not_removed {
                self.refused_after_remove.fetch_add(1, SeqCst);
            }
            installed
        };
        if installed > 0 {
            self.installs.fetch_add(1, SeqCst);
            for p in claim.pages() {
                self.left_missing[p as usize].store(true, SeqCst);
            }
            // A write install is a write too, and must survive.
            if group == WRITES && access == Access::Write {
                self.written[page as usize].store(true, SeqCst);
            }
        }
        self.unhold(claim);
    }
}

#[test]
fn racing_threads_leave_every_page_consistent() {
    // Rounds on fresh trackers: once a group's pages are installed, the install-versus-remove
    // races are over, so start again with every page `Missing`.
    let total = duration() * 2 / 3;
    let began = std::time::Instant::now();
    let mut seed = seed() | 1;
    eprintln!("stress seed {seed:#x} ({SEED_ENV}={seed:#x} replays it), {total:?}");
    let (mut rounds, mut ops, mut installs, mut refused) = (0, 0, 0, 0);
    while rounds == 0 || began.elapsed() < total {
        let shared = round(seed, Duration::from_millis(10));
        ops += shared.ops.load(SeqCst);
        installs += shared.installs.load(SeqCst);
        refused += shared.refused_after_remove.load(SeqCst);
        rounds += 1;
        seed = Rng(seed).next() | 1;
    }
    eprintln!(
        "{rounds} rounds, {ops} ops, {installs} installs, \
         {refused} source installs refused after a remove"
    );
    assert!(installs > 100, "the threads barely ran");
}

/// One round: the threads race for `length`, then every invariant is checked.
fn round(seed: u64, length: Duration) -> Shared {
    let geometry = Geometry::with_pages(0, PAGES, PageSize::SIZE_4K).unwrap();
    let shared = Shared {
        tracker: PageTracker::new(geometry).unwrap(),
        holders: (0..PAGES).map(|_| AtomicU32::new(0)).collect(),
        removed: flags(PAGES),
        written: flags(PAGES),
        left_missing: flags(PAGES),
        stop: AtomicBool::new(false),
        ops: AtomicU64::new(0),
        installs: AtomicU64::new(0),
        refused_after_remove: AtomicU64::new(0),
    };
    let start = Barrier::new(WORKERS + 2);
    std::thread::scope(|s| {
        for i in 0..WORKERS {
            let (shared, start) = (&shared, &start);
            s.spawn(move || {
                start.wait();
                shared.worker(
                    seed.wrapping_add(i as u64)
                        .wrapping_mul(0x9E37_79B9_7F4A_7C15),
                );
            });
        }
        // A reader exporting and counting while the pages change.
        s.spawn(|| {
            start.wait();
            while !shared.stop.load(SeqCst) {
                assert_eq!(shared.tracker.counts().total(), PAGES);
                for run in shared.tracker.dirty_ranges() {
                    assert!(!run.is_empty() && run.end() <= PAGES);
                }
            }
        });
        start.wait();
        std::thread::sleep(length);
        shared.stop.store(true, SeqCst);
    });
    check(&shared, geometry);
    shared
}

fn check(shared: &Shared, geometry: Geometry) {
    let t = &shared.tracker;
    // Every claim was released.
    assert_eq!(t.claimed_in(geometry.all_pages()).unwrap(), 0);
    assert!(shared.holders.iter().all(|h| h.load(SeqCst) == 0));

    let states: Vec<PageState> = (0..PAGES).map(|p| t.state(p).unwrap()).collect();
    // The counts agree with the pages (so no lane holds an impossible code: those would not
    // be counted in any state).
    let mut want = page_tracker::StateCounts::default();
    for s in &states {
        match s {
            PageState::Missing => want.missing += 1,
            PageState::Clean => want.clean += 1,
            PageState::Zero => want.zero += 1,
            PageState::Removed => want.removed += 1,
            PageState::Dirty => want.dirty += 1,
        }
    }
    assert_eq!(t.counts(), want);
    assert_eq!(t.counts().total(), PAGES);

    for (p, &state) in states.iter().enumerate() {
        let group = p as u64 / GROUP;
        if shared.left_missing[p].load(SeqCst) {
            assert_ne!(state, PageState::Missing, "page {p} back to Missing");
        }
        // A recorded write survives every racing install.
        if group == WRITES && shared.written[p].load(SeqCst) {
            assert_eq!(state, PageState::Dirty, "page {p}: a write was lost");
        }
        // After a remove only zeros (or a write over them) can have been installed.
        if group == REMOVES && shared.removed[p].load(SeqCst) {
            assert!(
                matches!(
                    state,
                    PageState::Removed | PageState::Zero | PageState::Dirty
                ),
                "page {p}: {state} after a remove"
            );
        }
        if group != REMOVES {
            assert_ne!(state, PageState::Removed, "page {p} removed by no one");
        }
    }
    let dirty: Vec<u64> = t.dirty_ranges().into_iter().flatten().collect();
    let want_dirty: Vec<u64> = (0..PAGES)
        .filter(|&p| states[p as usize] == PageState::Dirty)
        .collect();
    assert_eq!(dirty, want_dirty);
}

/// Threads own interleaved pages of the same few state words and cycle them through every
/// transition; each page has one owner, so any change its owner did not make is an update
/// lost to another thread's transition on a neighbouring page.
#[test]
fn neighbours_sharing_a_word_never_lose_each_others_transitions() {
    const OWNERS: u64 = 4;
    const PAGES: u64 = 64; // four state words, every word shared by all owners
    let geometry = Geometry::with_pages(0, PAGES, PageSize::SIZE_4K).unwrap();
    let tracker = PageTracker::new(geometry).unwrap();
    let stop = AtomicBool::new(false);
    let cycles = AtomicU64::new(0);
    let start = Barrier::new(OWNERS as usize + 1);
    std::thread::scope(|s| {
        for owner in 0..OWNERS {
            let (tracker, stop, cycles, start) = (&tracker, &stop, &cycles, &start);
            s.spawn(move || {
                start.wait();
                let mine: Vec<u64> = (owner..PAGES).step_by(OWNERS as usize).collect();
                let expect = |p: u64, want: PageState| {
                    assert_eq!(tracker.state(p).unwrap(), want, "page {p} of owner {owner}");
                };
                for &p in &mine {
                    let claim = tracker
                        .try_claim(p)
                        .unwrap()
                        .expect("only the owner claims");
                    assert_eq!(claim.install_source(Access::Read), 1);
                    drop(claim);
                    expect(p, PageState::Clean);
                }
                while !stop.load(SeqCst) {
                    for &p in &mine {
                        assert_eq!(tracker.mark_written(p).unwrap(), WriteMark::Marked);
                        expect(p, PageState::Dirty);
                        let single = PageRange::single(p).unwrap();
                        assert_eq!(tracker.reset_generation(single).unwrap(), 1);
                        expect(p, PageState::Clean);
                        tracker.remove(single).unwrap();
                        expect(p, PageState::Removed);
                        let claim = tracker
                            .try_claim(p)
                            .unwrap()
                            .expect("only the owner claims");
                        assert_eq!(claim.install_source(Access::Read), 0);
                        assert_eq!(claim.install_zero(Access::Read), 1);
                        drop(claim);
                        expect(p, PageState::Zero);
                        assert_eq!(tracker.mark_written(p).unwrap(), WriteMark::Marked);
                        assert_eq!(tracker.reset_generation(single).unwrap(), 1);
                        expect(p, PageState::Clean);
                    }
                    cycles.fetch_add(1, SeqCst);
                }
            });
        }
        start.wait();
        std::thread::sleep(duration() / 3);
        stop.store(true, SeqCst);
    });
    assert!(cycles.load(SeqCst) > 0);
    assert_eq!(tracker.claimed_in(geometry.all_pages()).unwrap(), 0);
    assert_eq!(tracker.counts().clean, PAGES);
}
