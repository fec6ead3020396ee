//! Log lines that can repeat once per fault or per chunk, at most once a second each, with a
//! count of those held back: a misbehaving VMM must not fill the disk with one warning.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// One rate-limited log line.
#[derive(Debug)]
pub(crate) struct Throttle {
    last: Mutex<Option<Instant>>,
    held_back: AtomicU64,
}

/// How often a throttled line may be logged.
const EVERY: Duration = Duration::from_secs(1);

impl Throttle {
    pub(crate) const fn new() -> Self {
        Throttle {
            last: Mutex::new(None),
            held_back: AtomicU64::new(0),
        }
    }

    /// `Some(n)` if the line may be logged now, `n` being how many were held back since the
    /// last one; `None` if it is held back.
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = Instant::now();
        let mut last = self.last.lock();
        if last.is_some_and(|at| now.duration_since(at) < EVERY) {
            self.held_back.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.held_back.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_and_the_rest_counted() {
        let throttle = Throttle::new();
        assert_eq!(throttle.allow(), Some(0));
        for _ in 0..5 {
            assert_eq!(throttle.allow(), None);
        }
        *throttle.last.lock() = Some(Instant::now() - EVERY);
        assert_eq!(throttle.allow(), Some(5));
    }
}
