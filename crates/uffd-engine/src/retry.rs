//! Source failures: retry cycles counted per page, a backoff with jitter before the faulting
//! threads are woken to fault again, and escalation after the bound.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant, SystemTime};

/// How source failures are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Failed cycles a page may have before the engine gives up: it reports
    /// [`EngineExit::Fatal`](crate::EngineExit::Fatal) and wakes the faulting threads.
    pub max_cycles: u32,
    /// Wait after a page's first failure before waking its faulting threads; it doubles with
    /// each further failed cycle of the page (up to 64 times), so a storage outage is waited
    /// out with few reads rather than hammered.
    pub backoff: Duration,
    /// Up to this much is added to each backoff, at random, so pages do not retry in lockstep.
    pub jitter: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_cycles: 5,
            backoff: Duration::from_millis(20),
            jitter: Duration::from_millis(10),
        }
    }
}

/// What to do after a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Wake the page's waiters at this time.
    RetryAt(Instant),
    /// The bound is exceeded: every error this page met, in order.
    GiveUp(Vec<String>),
}

#[derive(Debug, Default)]
pub(crate) struct RetryTable {
    pages: HashMap<u64, Vec<String>>,
}

impl RetryTable {
    /// Records one failed cycle of image page `page` (an index, not an offset). One attempt per page is in
    /// flight at a time (the tracker's claim), so N threads faulting one page count once.
    pub(crate) fn failed(
        &mut self,
        page: u64,
        error: String,
        policy: &RetryPolicy,
        now: Instant,
    ) -> Verdict {
        let errors = self.pages.entry(page).or_default();
        errors.push(error);
        if errors.len() as u32 > policy.max_cycles {
            let errors = self.pages.remove(&page).unwrap_or_default();
            return Verdict::GiveUp(errors);
        }
        let doubling = (errors.len() as u32 - 1).min(6);
        Verdict::RetryAt(now + policy.backoff * (1 << doubling) + jitter(policy.jitter))
    }

    /// Clears the page's retry state after a successful install.
    pub(crate) fn succeeded(&mut self, page: u64) {
        self.pages.remove(&page);
    }

    /// Failed cycles recorded for the page.
    pub(crate) fn cycles(&self, page: u64) -> u32 {
        self.pages.get(&page).map_or(0, |e| e.len() as u32)
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }
}

/// A random duration in `[0, max]`, so that pages (and daemons) do not retry in lockstep.
/// Seeded by the standard library's per-process random hash keys and the clock: spread, not
/// cryptographic strength, is what a backoff needs.
pub(crate) fn jitter(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let mut hasher = RandomState::new().build_hasher();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    hasher.write_u128(now.as_nanos());
    let bound = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX - 1);
    Duration::from_nanos(hasher.finish() % (bound + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gives_up_after_the_bound_with_every_error_and_clears_on_success() {
        let policy = RetryPolicy {
            max_cycles: 2,
            backoff: Duration::from_millis(1),
            jitter: Duration::ZERO,
        };
        let now = Instant::now();
        let mut t = RetryTable::default();
        assert_eq!(
            t.failed(7, "a".into(), &policy, now),
            Verdict::RetryAt(now + policy.backoff)
        );
        assert_eq!(
            t.failed(7, "b".into(), &policy, now),
            Verdict::RetryAt(now + policy.backoff * 2),
            "the backoff doubles per failed cycle"
        );
        assert_eq!(t.cycles(7), 2);
        assert_eq!(
            t.failed(7, "c".into(), &policy, now),
            Verdict::GiveUp(vec!["a".into(), "b".into(), "c".into()])
        );
        assert!(t.is_empty());
        let _ = t.failed(8, "x".into(), &policy, now);
        t.succeeded(8);
        assert_eq!(t.cycles(8), 0);
    }

    #[test]
    fn jitter_stays_within_its_bound() {
        let policy = RetryPolicy {
            max_cycles: 100,
            backoff: Duration::ZERO,
            jitter: Duration::from_micros(50),
        };
        let now = Instant::now();
        let mut t = RetryTable::default();
        for page in 0..50 {
            match t.failed(page, String::new(), &policy, now) {
                Verdict::RetryAt(at) => assert!(at - now <= policy.jitter),
                Verdict::GiveUp(_) => unreachable!(),
            }
        }
    }

    #[test]
    fn jitter_is_spread_not_constant() {
        let max = Duration::from_millis(10);
        let draws: std::collections::HashSet<Duration> = (0..64).map(|_| jitter(max)).collect();
        assert!(draws.iter().all(|d| *d <= max));
        // 64 draws from 10,000,001 values: all equal only if the source were constant.
        assert!(draws.len() > 32, "{} distinct draws of 64", draws.len());
    }
}
