//! What happens to a read: the rules a test installs ([`Fault`] over a byte range of one file)
//! and the server's handle on each ([`Injection`]) to count, wait for and release what they
//! did.
//!
//! A rule matches a read that *overlaps* its range, not only one inside it: the kernel reads
//! a FUSE file in requests of its own choosing (a page for a fault with the mount's small
//! readahead, more for readahead), so "the read that would bring byte X into the page cache"
//! is the read overlapping X. The first matching rule, in the order they were installed, acts.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use fuser::{Errno, ReplyData};

use crate::{Fault, ReadCounts};

/// A read held by a stall: answered when its rule is released.
struct Held {
    reply: ReplyData,
    file: Arc<File>,
    offset: u64,
    size: u32,
}

struct RuleState {
    fault: Fault,
    /// What is left of a `FailNext` or `ShortNext` count.
    left: u64,
    active: bool,
    counts: ReadCounts,
    /// The byte ranges of the reads this rule matched, in arrival order.
    matched: Vec<Range<u64>>,
    held: Vec<Held>,
}

struct Rule {
    /// The mount's totals, which a release adds its served reads to.
    totals: Arc<Mutex<ReadCounts>>,
    file: String,
    range: Range<u64>,
    state: Mutex<RuleState>,
    changed: Condvar,
}

impl Rule {
    fn state(&self) -> MutexGuard<'_, RuleState> {
        lock(&self.state)
    }
}

/// The server's handle on one rule: its counts, a bounded wait for held reads, and the release
/// of a stall.
#[derive(Clone)]
pub(crate) struct Injection {
    rule: Arc<Rule>,
}

impl std::fmt::Debug for Injection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.rule.state();
        f.debug_struct("Injection")
            .field("file", &self.rule.file)
            .field("range", &self.rule.range)
            .field("fault", &state.fault)
            .field("active", &state.active)
            .field("counts", &state.counts)
            .finish()
    }
}

impl Injection {
    /// The reads this rule matched, and what it did to them.
    pub(crate) fn counts(&self) -> ReadCounts {
        self.rule.state().counts
    }

    /// The byte ranges of the reads this rule matched, in arrival order.
    pub(crate) fn matched(&self) -> Vec<Range<u64>> {
        self.rule.state().matched.clone()
    }

    /// How many reads are held by this rule right now.
    pub(crate) fn held(&self) -> usize {
        self.rule.state().held.len()
    }

    /// Waits until at least `n` reads are held by this rule (a stall has really caught a
    /// read), at most `timeout`. Returns whether they are.
    pub(crate) fn wait_held(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.rule.state();
        while state.held.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .rule
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
        true
    }

    /// Turns the rule off and serves every read it holds. Later reads pass through.
    pub(crate) fn release(&self) {
        let held = {
            let mut state = self.rule.state();
            state.active = false;
            std::mem::take(&mut state.held)
        };
        let served = held.len() as u64;
        for read in held {
            answer(read.reply, &read.file, read.offset, read.size, None);
        }
        self.rule.state().counts.served += served;
        lock(&self.rule.totals).served += served;
        self.rule.changed.notify_all();
    }

    /// Whether the rule still acts (a `FailNext` or `ShortNext` with a count left, a
    /// `FailAlways`, or a stall not yet released).
    pub(crate) fn is_active(&self) -> bool {
        self.rule.state().active
    }
}

/// What the server does with one read, decided under the rules' locks.
pub(crate) enum Verdict {
    Serve,
    Fail,
    /// Serve only this many bytes.
    Short(u32),
    /// Held by a stall: the reply is kept.
    Held,
}

/// The rules of one mount, in installation order.
#[derive(Default)]
pub(crate) struct Rules {
    rules: Mutex<Vec<Arc<Rule>>>,
    /// Every read of the mount, whatever rule met it.
    pub(crate) totals: Arc<Mutex<ReadCounts>>,
}

/// Locks `mutex`; a panic while it was held left counters only, still usable.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Rules {
    pub(crate) fn add(&self, file: &str, range: Range<u64>, fault: Fault) -> Injection {
        let left = match fault {
            Fault::FailNext(n) | Fault::ShortNext(n) => n,
            Fault::FailAlways | Fault::Stall => 0,
        };
        let active = !matches!(fault, Fault::FailNext(0) | Fault::ShortNext(0));
        let rule = Arc::new(Rule {
            totals: self.totals.clone(),
            file: file.to_string(),
            range,
            state: Mutex::new(RuleState {
                fault,
                left,
                active,
                counts: ReadCounts::default(),
                matched: Vec::new(),
                held: Vec::new(),
            }),
            changed: Condvar::new(),
        });
        self.lock().push(rule.clone());
        Injection { rule }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Arc<Rule>>> {
        lock(&self.rules)
    }

    /// Applies the first active rule of `file` overlapping `[offset, offset + size)`. A held
    /// read's reply is taken; otherwise `reply` comes back with the verdict.
    pub(crate) fn apply(
        &self,
        file: &str,
        read: (&Arc<File>, u64, u32),
        reply: ReplyData,
    ) -> (Verdict, Option<ReplyData>) {
        let (handle, offset, size) = read;
        let span = offset..offset + u64::from(size);
        let rules = self.lock().clone();
        for rule in rules {
            if rule.file != file || rule.range.start >= span.end || span.start >= rule.range.end {
                continue;
            }
            let mut state = rule.state();
            if !state.active {
                continue;
            }
            state.counts.reads += 1;
            state.matched.push(span.clone());
            let verdict = match state.fault {
                Fault::FailNext(_) | Fault::ShortNext(_) => {
                    state.left -= 1;
                    state.active = state.left > 0;
                    if matches!(state.fault, Fault::FailNext(_)) {
                        state.counts.failed += 1;
                        Verdict::Fail
                    } else {
                        state.counts.shortened += 1;
                        Verdict::Short(short_len(&span, &rule.range))
                    }
                }
                Fault::FailAlways => {
                    state.counts.failed += 1;
                    Verdict::Fail
                }
                Fault::Stall => {
                    state.counts.stalled += 1;
                    state.held.push(Held {
                        reply,
                        file: handle.clone(),
                        offset,
                        size,
                    });
                    drop(state);
                    rule.changed.notify_all();
                    return (Verdict::Held, None);
                }
            };
            drop(state);
            rule.changed.notify_all();
            return (verdict, Some(reply));
        }
        (Verdict::Serve, Some(reply))
    }

    /// Releases every rule (serving what stalls hold): the mount is going away.
    pub(crate) fn release_all(&self) {
        let rules = self.lock().clone();
        for rule in rules {
            Injection { rule }.release();
        }
    }
}

/// The bytes of a read that lie before `range`.
fn short_len(span: &Range<u64>, range: &Range<u64>) -> u32 {
    u32::try_from(
        range
            .start
            .saturating_sub(span.start)
            .min(span.end - span.start),
    )
    .unwrap_or(u32::MAX)
}

/// Answers a read with the backing file's bytes (at most `limit` of them): EIO if the backing
/// file itself cannot be read. Returns how many bytes were sent, or `None` for an error.
pub(crate) fn answer(
    reply: ReplyData,
    file: &File,
    offset: u64,
    size: u32,
    limit: Option<u32>,
) -> Option<usize> {
    let want = limit.map_or(size, |l| l.min(size)) as usize;
    let mut buf = vec![0u8; want];
    let mut filled = 0;
    while filled < want {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => {
                reply.error(Errno::EIO);
                return None;
            }
        }
    }
    reply.data(&buf[..filled]);
    Some(filled)
}
