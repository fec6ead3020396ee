//! Counters per outcome, a latency histogram, the time to the first fault served and a fault
//! timeline of the first seconds: relaxed atomics on the hot path, read as a snapshot struct.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Log-linear latency buckets: 4 sub-buckets per power of two of nanoseconds (<= 19% error).
const SUB_BITS: u32 = 2;
const BUCKETS: usize = 64 << SUB_BITS;

/// The fault timeline's bucket width.
pub const TIMELINE_BUCKET: Duration = Duration::from_millis(10);
/// Buckets in the fault timeline: the first 5 s after the engine started.
pub const TIMELINE_BUCKETS: usize = 500;
/// `first_served_ns` before any fault was served.
const NOT_YET: u64 = u64::MAX;

#[derive(Debug)]
pub(crate) struct Metrics {
    pub(crate) faults: AtomicU64,
    pub(crate) installed_source: AtomicU64,
    pub(crate) installed_zero: AtomicU64,
    pub(crate) fault_around_pages: AtomicU64,
    pub(crate) already_present: AtomicU64,
    pub(crate) wp_resolved: AtomicU64,
    pub(crate) deferred: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) discarded: AtomicU64,
    pub(crate) fatal: AtomicU64,
    pub(crate) removes: AtomicU64,
    pub(crate) removed_pages: AtomicU64,
    pub(crate) other_events: AtomicU64,
    pub(crate) prefetch_installed: AtomicU64,
    pub(crate) prefetch_skipped: AtomicU64,
    pub(crate) prefetch_deferred: AtomicU64,
    pub(crate) prefetch_bytes: AtomicU64,
    pub(crate) prefetch_zero_pages: AtomicU64,
    pub(crate) parked: AtomicU64,
    pub(crate) read_timeouts: AtomicU64,
    pub(crate) late_reads: AtomicU64,
    /// Sum of the service latencies, in nanoseconds.
    stall_ns: AtomicU64,
    latency: Box<[AtomicU64]>,
    /// When the engine started: the origin of the timeline and of the first fault served.
    started: Instant,
    /// Nanoseconds from `started` to the end of the first fault's service ([`NOT_YET`]).
    first_served_ns: AtomicU64,
    /// Faults served per [`TIMELINE_BUCKET`] since `started`, for the first
    /// [`TIMELINE_BUCKETS`].
    timeline: Box<[AtomicU64]>,
    /// Faults served after the timeline's window.
    timeline_after: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        let zero = || AtomicU64::new(0);
        Metrics {
            faults: zero(),
            installed_source: zero(),
            installed_zero: zero(),
            fault_around_pages: zero(),
            already_present: zero(),
            wp_resolved: zero(),
            deferred: zero(),
            retried: zero(),
            discarded: zero(),
            fatal: zero(),
            removes: zero(),
            removed_pages: zero(),
            other_events: zero(),
            prefetch_installed: zero(),
            prefetch_skipped: zero(),
            prefetch_deferred: zero(),
            prefetch_bytes: zero(),
            prefetch_zero_pages: zero(),
            parked: zero(),
            read_timeouts: zero(),
            late_reads: zero(),
            stall_ns: zero(),
            latency: (0..BUCKETS).map(|_| zero()).collect(),
            started: Instant::now(),
            first_served_ns: AtomicU64::new(NOT_YET),
            timeline: (0..TIMELINE_BUCKETS).map(|_| zero()).collect(),
            timeline_after: zero(),
        }
    }
}

fn bucket_of(ns: u64) -> usize {
    let ns = ns.max(1);
    let msb = 63 - ns.leading_zeros();
    let sub = if msb >= SUB_BITS {
        (ns >> (msb - SUB_BITS)) & ((1 << SUB_BITS) - 1)
    } else {
        0
    };
    ((msb << SUB_BITS) as u64 + sub) as usize
}

/// The upper bound of a bucket in nanoseconds.
fn bucket_upper(bucket: usize) -> u64 {
    let msb = (bucket >> SUB_BITS) as u32;
    let sub = (bucket & ((1 << SUB_BITS) - 1)) as u64;
    if msb < SUB_BITS {
        return 1 << (msb + 1);
    }
    let step = 1u64 << (msb - SUB_BITS);
    (1u64 << msb).saturating_add((sub + 1) * step)
}

impl Metrics {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// Records one fault served in `elapsed`: its latency, the stall time, the timeline's
    /// bucket of now and, for the first, the time to first fault served. Reads the clock once
    /// more for the timeline (a vDSO read).
    pub(crate) fn record_latency(&self, elapsed: Duration) {
        self.record(elapsed, self.started.elapsed());
    }

    fn record(&self, elapsed: Duration, since_start: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.latency[bucket_of(ns)].fetch_add(1, Relaxed);
        self.stall_ns.fetch_add(ns, Relaxed);
        let bucket = since_start.as_nanos() / TIMELINE_BUCKET.as_nanos();
        match self
            .timeline
            .get(usize::try_from(bucket).unwrap_or(usize::MAX))
        {
            Some(count) => count.fetch_add(1, Relaxed),
            None => self.timeline_after.fetch_add(1, Relaxed),
        };
        // A load only once the first is known: no shared write per fault.
        if self.first_served_ns.load(Relaxed) == NOT_YET {
            let at = u64::try_from(since_start.as_nanos()).unwrap_or(NOT_YET - 1);
            self.first_served_ns.fetch_min(at, Relaxed);
        }
    }

    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        let counts: Vec<u64> = self.latency.iter().map(|b| b.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        let quantile = |q: f64| -> Duration {
            if total == 0 {
                return Duration::ZERO;
            }
            let rank = ((total as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (bucket, n) in counts.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    return Duration::from_nanos(bucket_upper(bucket));
                }
            }
            Duration::MAX
        };
        let get = |c: &AtomicU64| c.load(Relaxed);
        let mut timeline = FaultTimeline::default();
        for (slot, count) in timeline.faults.iter_mut().zip(self.timeline.iter()) {
            *slot = get(count);
        }
        timeline.after = get(&self.timeline_after);
        let first = get(&self.first_served_ns);
        MetricsSnapshot {
            faults: get(&self.faults),
            installed_source: get(&self.installed_source),
            installed_zero: get(&self.installed_zero),
            fault_around_pages: get(&self.fault_around_pages),
            already_present: get(&self.already_present),
            wp_resolved: get(&self.wp_resolved),
            deferred: get(&self.deferred),
            retried: get(&self.retried),
            discarded: get(&self.discarded),
            fatal: get(&self.fatal),
            removes: get(&self.removes),
            removed_pages: get(&self.removed_pages),
            other_events: get(&self.other_events),
            prefetch_installed: get(&self.prefetch_installed),
            prefetch_skipped: get(&self.prefetch_skipped),
            prefetch_deferred: get(&self.prefetch_deferred),
            prefetch_bytes: get(&self.prefetch_bytes),
            prefetch_zero_pages: get(&self.prefetch_zero_pages),
            parked: get(&self.parked),
            read_timeouts: get(&self.read_timeouts),
            late_reads: get(&self.late_reads),
            stall_time: Duration::from_nanos(get(&self.stall_ns)),
            latency_samples: total,
            latency_p50: quantile(0.50),
            latency_p99: quantile(0.99),
            latency_max: quantile(1.0),
            latency_buckets: LatencyBuckets::from_counts(&counts),
            first_fault_served: (first != NOT_YET).then(|| Duration::from_nanos(first)),
            timeline,
        }
    }
}

/// The service latency histogram summed into buckets whose bounds are powers of two
/// nanoseconds, from [`LatencyBuckets::FIRST_BOUND_NS`] on (exponential buckets, growth factor
/// 2: Prometheus's native schema 0). The engine keeps 4 sub-buckets per power of two, each
/// holding the latencies from its lower bound up to (not including) its upper one, so these
/// sums are exact: bucket `i` counts the latencies below its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LatencyBuckets {
    /// `counts[i]`: faults whose latency is below `FIRST_BOUND_NS << i` and not below the
    /// previous bound (the first bucket holds everything below its bound); the last bucket
    /// holds everything from `FIRST_BOUND_NS << (LEN - 2)` on (no upper bound).
    pub counts: [u64; LatencyBuckets::LEN],
}

impl LatencyBuckets {
    /// The first bucket's upper bound: 1024 ns.
    pub const FIRST_BOUND_NS: u64 = 1 << 10;
    /// Buckets: bounds 2^10 .. 2^34 ns (about 1 us to 17 s), then one without a bound.
    pub const LEN: usize = 26;

    /// The upper bound of bucket `i` in nanoseconds; `None` for the last (unbounded) one.
    pub fn bound_ns(i: usize) -> Option<u64> {
        (i + 1 < Self::LEN).then(|| Self::FIRST_BOUND_NS << i)
    }

    fn from_counts(counts: &[u64]) -> Self {
        let mut out = LatencyBuckets::default();
        for (bucket, &n) in counts.iter().enumerate() {
            // The engine's bucket holds the values below `bucket_upper`.
            if n == 0 {
                continue;
            }
            let upper = bucket_upper(bucket);
            let i = (0..Self::LEN)
                .find(|&i| Self::bound_ns(i).is_none_or(|bound| upper <= bound))
                .unwrap_or(Self::LEN - 1);
            out.counts[i] += n;
        }
        out
    }
}

/// Faults served per [`TIMELINE_BUCKET`] (10 ms) over the first [`TIMELINE_BUCKETS`] (5 s)
/// after the engine started, and how many came after. The buckets and `after` sum to
/// [`MetricsSnapshot::latency_samples`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultTimeline {
    /// Faults whose service ended in each 10 ms bucket, from the engine's start.
    pub faults: [u64; TIMELINE_BUCKETS],
    /// Faults served after the first 5 s.
    pub after: u64,
}

impl Default for FaultTimeline {
    fn default() -> Self {
        FaultTimeline {
            faults: [0; TIMELINE_BUCKETS],
            after: 0,
        }
    }
}

impl FaultTimeline {
    /// The buckets up to the last one that is not empty (later empty buckets left off).
    pub fn until_last_fault(&self) -> &[u64] {
        let len = self
            .faults
            .iter()
            .rposition(|&n| n > 0)
            .map_or(0, |i| i + 1);
        &self.faults[..len]
    }

    /// Faults counted by the timeline: its buckets and `after`.
    pub fn total(&self) -> u64 {
        self.faults.iter().sum::<u64>() + self.after
    }
}

impl serde::Serialize for FaultTimeline {
    /// `{"bucket_ms": 10, "faults": [...], "after": n}`, trailing empty buckets left off.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("FaultTimeline", 3)?;
        s.serialize_field("bucket_ms", &TIMELINE_BUCKET.as_millis())?;
        s.serialize_field("faults", self.until_last_fault())?;
        s.serialize_field("after", &self.after)?;
        s.end()
    }
}

impl serde::Serialize for LatencyBuckets {
    /// `[{"le_ns": 1024, "count": n}, ..., {"le_ns": null, "count": n}]`, per bucket (not
    /// cumulative).
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(Self::LEN))?;
        for (i, count) in self.counts.iter().enumerate() {
            seq.serialize_element(&encoded::Bucket {
                le_ns: Self::bound_ns(i),
                count: *count,
            })?;
        }
        seq.end()
    }
}

/// One bucket as serialized.
mod encoded {
    #[derive(serde::Serialize)]
    pub(super) struct Bucket {
        pub(super) le_ns: Option<u64>,
        pub(super) count: u64,
    }
}

/// A point-in-time copy of the engine's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct MetricsSnapshot {
    /// Fault messages read (page faults, including duplicates and WP faults).
    pub faults: u64,
    /// Pages installed from the source by demand faults (fault-around included).
    pub installed_source: u64,
    /// Pages installed as zeros (holes, removed pages).
    pub installed_zero: u64,
    /// Of `installed_source`, pages installed around a fault rather than for it.
    pub fault_around_pages: u64,
    /// Faults found already served (EEXIST, or the page installed meanwhile): woken.
    pub already_present: u64,
    /// Write-protect faults resolved (page marked dirty, unprotected).
    pub wp_resolved: u64,
    /// Faults put in the deferred queue (EAGAIN, a short copy, a page in flight).
    pub deferred: u64,
    /// Source failures answered with a wake after backoff (retry cycles).
    pub retried: u64,
    /// Faults that could not be served and were woken without an install (outside the
    /// layout, range unmapped).
    pub discarded: u64,
    /// Fatal errors raised.
    pub fatal: u64,
    /// REMOVE events applied.
    pub removes: u64,
    /// Pages marked removed by them.
    pub removed_pages: u64,
    /// UNMAP, REMAP, FORK and unknown events.
    pub other_events: u64,
    /// Pages installed by prefetch.
    pub prefetch_installed: u64,
    /// Pages prefetch found already installed, removed or claimed.
    pub prefetch_skipped: u64,
    /// Prefetch chunks put back after EAGAIN.
    pub prefetch_deferred: u64,
    /// Bytes installed by prefetch.
    pub prefetch_bytes: u64,
    /// Hole pages prefetch installed as zero pages.
    pub prefetch_zero_pages: u64,
    /// Faults whose bytes were not resident, parked for a fetcher thread while the reader
    /// went on.
    pub parked: u64,
    /// Reads that outlived the read deadline: each a source failure (a retry cycle).
    pub read_timeouts: u64,
    /// Reads that completed after their deadline had passed; their bytes were dropped.
    pub late_reads: u64,
    /// vCPU stall time: the sum of every fault's service latency, how long the guest's
    /// threads waited on the handler in all (a fault's wait in the kernel's queue before it
    /// is read is not included).
    pub stall_time: Duration,
    /// Faults timed (service latency: message read to install done).
    pub latency_samples: u64,
    /// Median service latency (bucket upper bound, <= 19% above the true value).
    pub latency_p50: Duration,
    /// 99th percentile service latency.
    pub latency_p99: Duration,
    /// Largest service latency.
    pub latency_max: Duration,
    /// The service latencies in exponential buckets (powers of two nanoseconds).
    pub latency_buckets: LatencyBuckets,
    /// From the engine's start to the end of the first fault's service (exact, not sampled);
    /// `None` until a fault was served.
    pub first_fault_served: Option<Duration>,
    /// Faults served per 10 ms over the first 5 s.
    pub timeline: FaultTimeline,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_bound_their_values_within_a_quarter() {
        for ns in [1u64, 2, 3, 5, 7, 100, 1000, 4500, 24_000, 1 << 40] {
            let upper = bucket_upper(bucket_of(ns));
            assert!(upper >= ns, "{ns} -> {upper}");
            assert!(upper as f64 <= (ns as f64) * 1.25 + 2.0, "{ns} -> {upper}");
        }
    }

    #[test]
    fn quantiles_follow_recorded_latencies() {
        let m = Metrics::default();
        for _ in 0..99 {
            m.record_latency(Duration::from_nanos(4000));
        }
        m.record_latency(Duration::from_micros(100));
        let s = m.snapshot();
        assert_eq!(s.latency_samples, 100);
        assert!(
            s.latency_p50 >= Duration::from_nanos(4000)
                && s.latency_p50 < Duration::from_nanos(5000)
        );
        assert!(s.latency_max >= Duration::from_micros(100));
        assert_eq!(s.latency_buckets.counts.iter().sum::<u64>(), 100);
        // 4000 ns falls in (2048, 4096]; 100 us in (65536, 131072].
        assert_eq!(s.latency_buckets.counts[2], 99);
        assert_eq!(s.latency_buckets.counts[7], 1);
        assert_eq!(s.timeline.total(), 100);
        assert!(s.first_fault_served.is_some());
    }

    #[test]
    fn a_bucket_holds_the_latencies_below_its_bound() {
        let m = Metrics::default();
        m.record_latency(Duration::from_nanos(1023));
        m.record_latency(Duration::from_nanos(1024));
        m.record_latency(Duration::from_secs(100));
        let b = m.snapshot().latency_buckets;
        assert_eq!(b.counts[0], 1);
        assert_eq!(b.counts[1], 1);
        assert_eq!(b.counts[LatencyBuckets::LEN - 1], 1);
        assert_eq!(LatencyBuckets::bound_ns(LatencyBuckets::LEN - 1), None);
    }

    #[test]
    fn the_timeline_leaves_off_trailing_empty_buckets() {
        let mut t = FaultTimeline::default();
        t.faults[3] = 2;
        t.after = 1;
        assert_eq!(t.until_last_fault(), &[0, 0, 0, 2]);
        assert_eq!(t.total(), 3);
    }
}
