//! Faults that could not be finished now (EAGAIN while an event is pending, a short copy, a
//! page another attempt holds) and wakes scheduled after a source failure. Deduplicated per
//! (page, kind); a write supersedes a read; WP faults are kept apart from missing-page faults
//! so a writer is never folded into a read; every entry has a due time, so retries are paced.

use std::collections::HashMap;
use std::time::Instant;

use crate::fault::FaultKind;

impl FaultKind {
    /// Missing-page reads and writes share a slot (a write supersedes a read); WP has its own.
    fn slot(self) -> Slot {
        match self {
            FaultKind::Read | FaultKind::Write => Slot::Missing,
            FaultKind::WriteProtect => Slot::WriteProtect,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Slot {
    Missing,
    WriteProtect,
    RetryWake,
}

/// An entry that came due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// Serve this fault again.
    Fault {
        /// Page-aligned faulting address.
        addr: u64,
        /// Its kind.
        kind: FaultKind,
    },
    /// Wake the waiters of this page (a source-failure backoff ended); the kernel re-delivers
    /// their faults.
    Wake {
        /// Page-aligned address.
        addr: u64,
    },
}

#[derive(Debug, Default)]
pub(crate) struct DeferredQueue {
    entries: HashMap<(u64, Slot), (Due, Instant)>,
}

impl DeferredQueue {
    /// Defers a fault until `due`. An existing entry for the page keeps the earlier due time;
    /// a write replaces a read.
    pub(crate) fn defer(&mut self, addr: u64, kind: FaultKind, due: Instant) {
        let key = (addr, kind.slot());
        match self.entries.get_mut(&key) {
            Some((Due::Fault { kind: old, .. }, at)) => {
                if kind == FaultKind::Write {
                    *old = FaultKind::Write;
                }
                *at = (*at).min(due);
            }
            _ => {
                self.entries.insert(key, (Due::Fault { addr, kind }, due));
            }
        }
    }

    /// Schedules a wake of `addr` at `due`.
    pub(crate) fn schedule_wake(&mut self, addr: u64, due: Instant) {
        self.entries
            .insert((addr, Slot::RetryWake), (Due::Wake { addr }, due));
    }

    /// Whether a retry wake is pending for `addr` (its waiters will be woken; no new attempt
    /// should start meanwhile).
    pub(crate) fn wake_pending(&self, addr: u64) -> bool {
        self.entries.contains_key(&(addr, Slot::RetryWake))
    }

    /// The earliest due time.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.entries.values().map(|(_, at)| *at).min()
    }

    /// Removes and returns every entry due at `now`.
    pub(crate) fn take_due(&mut self, now: Instant, out: &mut Vec<Due>) {
        if self.entries.is_empty() {
            return;
        }
        self.entries.retain(|_, (due, at)| {
            if *at <= now {
                out.push(*due);
                false
            } else {
                true
            }
        });
    }

    /// Removes and returns everything (on stop: each is woken).
    pub(crate) fn drain(&mut self) -> Vec<Due> {
        self.entries.drain().map(|(_, (due, _))| due).collect()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn dedupes_per_page_and_kind_and_a_write_supersedes_a_read() {
        let now = Instant::now();
        let mut q = DeferredQueue::default();
        q.defer(0x1000, FaultKind::Read, now);
        q.defer(0x1000, FaultKind::Read, now);
        q.defer(0x1000, FaultKind::Write, now + Duration::from_secs(1));
        q.defer(0x1000, FaultKind::WriteProtect, now);
        assert_eq!(q.len(), 2);
        let mut due = Vec::new();
        q.take_due(now, &mut due);
        due.sort_by_key(|d| format!("{d:?}"));
        assert_eq!(
            due,
            vec![
                Due::Fault {
                    addr: 0x1000,
                    kind: FaultKind::Write
                },
                Due::Fault {
                    addr: 0x1000,
                    kind: FaultKind::WriteProtect
                }
            ]
        );
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn entries_wait_for_their_due_time() {
        let now = Instant::now();
        let mut q = DeferredQueue::default();
        q.schedule_wake(0x2000, now + Duration::from_millis(5));
        assert!(q.wake_pending(0x2000));
        let mut due = Vec::new();
        q.take_due(now, &mut due);
        assert!(due.is_empty());
        assert_eq!(q.next_due(), Some(now + Duration::from_millis(5)));
        q.take_due(now + Duration::from_millis(5), &mut due);
        assert_eq!(due, vec![Due::Wake { addr: 0x2000 }]);
        assert!(!q.wake_pending(0x2000));
    }
}
