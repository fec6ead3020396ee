//! Counters per outcome and a latency histogram: relaxed atomics on the hot path, read as a
//! snapshot struct.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Log-linear latency buckets: 4 sub-buckets per power of two of nanoseconds (<= 19% error).
const SUB_BITS: u32 = 2;
const BUCKETS: usize = 64 << SUB_BITS;

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
    (1u64 << msb) + (sub + 1) * step
}

impl Metrics {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub(crate) fn record_latency(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.latency[bucket_of(ns)].fetch_add(1, Relaxed);
        self.stall_ns.fetch_add(ns, Relaxed);
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
        }
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
    }
}
