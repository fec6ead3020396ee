//! The statistics: the engine's metrics plus the daemon's own (uptime, time to first fault
//! served, prefetch, snapshots), as JSON (the control socket's `stats`, `--stats-json`) and as
//! the table printed to stderr at exit.

mod table;

use std::io;
use std::path::Path;

use page_tracker::StateCounts;
use serde::Serialize;

use super::cli::PrefetchMode;
use super::generation::SnapshotSummary;
use uffd_engine::{MetricsSnapshot, PrefetchReport};

/// Everything the daemon reports.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Stats {
    /// `waiting` (for a VMM), `serving` or `finished`.
    pub state: &'static str,
    /// Since the daemon started, in seconds.
    pub uptime_s: f64,
    /// The VMM being (or last) served.
    pub vmm: Option<VmmStats>,
    /// From the start of serving (the engine's start, right after the handshake) to the end
    /// of the first demand fault's service, in milliseconds.
    pub time_to_first_fault_ms: Option<f64>,
    /// The engine's counters and service latencies.
    pub metrics: Option<MetricsSnapshot>,
    /// Pages by state.
    pub pages: Option<PageCounts>,
    /// Background prefetch.
    pub prefetch: PrefetchStats,
    /// Whether the prefetch guessed right: precision and recall against the pages the guest
    /// touched, or why they are unknown.
    pub prefetch_accuracy: PrefetchAccuracy,
    /// Generations written by `snapshot`.
    pub generations_written: u64,
    /// The last one.
    pub last_snapshot: Option<SnapshotSummary>,
    /// With `--snapshot-url`: what the store client and the chunk cache did since the daemon
    /// started (the daemon's totals, over every VMM it served).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreFigures>,
    /// How the daemon ended (final statistics only).
    pub outcome: Option<OutcomeStats>,
    /// While serving: every VMM being served, oldest first, each with its own statistics (the
    /// top-level fields are the newest one's). Absent between VMMs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sessions: Vec<Stats>,
}

/// The VMM served.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct VmmStats {
    /// The daemon's number for this VMM's session (1 for the first VMM served): the `vmm`
    /// label of the metrics endpoint.
    pub session: u64,
    /// Its pid.
    pub pid: i32,
    /// Its uid.
    pub uid: u32,
    /// Guest memory regions.
    pub regions: usize,
    /// Guest page size in bytes.
    pub page_size: u64,
    /// Guest memory (= snapshot image) size in bytes.
    pub image_size: u64,
    /// How long it has been (or was) served, in seconds.
    pub served_s: f64,
    /// How it ended, if it did.
    pub end: Option<String>,
}

/// Pages by state.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct PageCounts {
    /// Not installed yet.
    pub missing: u64,
    /// Installed from the snapshot, not written.
    pub clean: u64,
    /// Installed as zeros.
    pub zero: u64,
    /// Freed by the guest (balloon), not touched since.
    pub removed: u64,
    /// The pages the tracker holds as written, named for what that means.
    #[serde(flatten)]
    pub written: Written,
}

/// The tracker's written pages, by what is known of them: one JSON field or the other.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Written {
    /// With `--dirty-tracking`: written since restore (or the last snapshot).
    Dirty(u64),
    /// Without it, writes to installed pages are not seen: only the pages whose first touch
    /// was a write (installed writable) are known.
    InstalledByWrite(u64),
}

impl PageCounts {
    /// The tracker's counts, named for whether writes are tracked.
    pub(crate) fn new(c: StateCounts, dirty_tracking: bool) -> Self {
        PageCounts {
            missing: c.missing,
            clean: c.clean,
            zero: c.zero,
            removed: c.removed,
            written: if dirty_tracking {
                Written::Dirty(c.dirty)
            } else {
                Written::InstalledByWrite(c.dirty)
            },
        }
    }
}

/// Prefetch progress.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PrefetchStats {
    /// `--prefetch`.
    pub mode: PrefetchMode,
    /// Still running.
    pub running: bool,
    /// Pages the prefetch order visits (each range's pages; a working-set page is visited
    /// twice, once in the working set and once in the sweep of the rest); 0 without prefetch.
    pub total_pages: u64,
    /// The final report, once done.
    pub report: Option<PrefetchReport>,
}

/// Prefetch precision (the share of prefetched pages the guest used) and recall (the share
/// of the pages the guest touched that prefetch had installed), or why they are unknown.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PrefetchAccuracy {
    /// Prefetched pages the guest touched / pages prefetched.
    pub precision: Option<f64>,
    /// Prefetched pages the guest touched / pages the guest touched.
    pub recall: Option<f64>,
    /// Why they are unknown, when they are.
    pub unknown: Option<String>,
}

impl PrefetchAccuracy {
    /// Unknown, for `reason`.
    pub(crate) fn unknown(reason: impl Into<String>) -> Self {
        PrefetchAccuracy {
            precision: None,
            recall: None,
            unknown: Some(reason.into()),
        }
    }
}

/// The store's figures (snapshot-store's `StoreStats`), in the daemon's JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct StoreFigures {
    /// GET requests sent (every attempt counts; the header and data objects alike).
    pub gets: u64,
    /// Body bytes received by GETs that completed.
    pub bytes_fetched: u64,
    /// Store attempts that failed (each retried, or ending in an error).
    pub retries: u64,
    /// Chunk lookups answered by the host's cache.
    pub chunk_hits: u64,
    /// Chunks this daemon fetched from the store (cache misses).
    pub chunk_fetches: u64,
    /// Chunk misses that waited for this daemon's fetch of the same chunk already under way.
    pub chunks_coalesced: u64,
    /// Chunk misses found fetched by another process once its lock was theirs.
    pub chunks_fetched_elsewhere: u64,
}

impl From<snapshot_store::StoreStats> for StoreFigures {
    fn from(s: snapshot_store::StoreStats) -> Self {
        StoreFigures {
            gets: s.gets,
            bytes_fetched: s.bytes_fetched,
            retries: s.retries,
            chunk_hits: s.chunk_hits,
            chunk_fetches: s.chunk_fetches,
            chunks_coalesced: s.coalesced,
            chunks_fetched_elsewhere: s.fetched_elsewhere,
        }
    }
}

/// The exit code and reason.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct OutcomeStats {
    /// Exit code.
    pub exit_code: u8,
    /// Why.
    pub reason: String,
}

impl Stats {
    /// Writes the statistics as JSON to `path`.
    pub(crate) fn write_json(&self, path: &Path) -> io::Result<()> {
        let mut text = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        text.push(b'\n');
        std::fs::write(path, text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_every_part() {
        let stats = Stats {
            state: "finished",
            uptime_s: 1.5,
            vmm: Some(VmmStats {
                session: 1,
                pid: 7,
                uid: 0,
                regions: 2,
                page_size: 4096,
                image_size: 8 << 20,
                served_s: 1.0,
                end: Some("exited with status 0".into()),
            }),
            time_to_first_fault_ms: Some(1.2),
            metrics: Some(MetricsSnapshot::default()),
            pages: Some(PageCounts::new(StateCounts::default(), false)),
            prefetch: PrefetchStats {
                mode: PrefetchMode::All,
                running: false,
                total_pages: 2048,
                report: Some(PrefetchReport::default()),
            },
            prefetch_accuracy: PrefetchAccuracy::unknown("no idle page tracking"),
            generations_written: 0,
            last_snapshot: None,
            store: Some(StoreFigures {
                gets: 3,
                bytes_fetched: 5 << 20,
                retries: 1,
                chunk_hits: 7,
                chunk_fetches: 2,
                chunks_coalesced: 0,
                chunks_fetched_elsewhere: 0,
            }),
            outcome: Some(OutcomeStats {
                exit_code: 0,
                reason: "done".into(),
            }),
            sessions: Vec::new(),
        };
        let mut out = Vec::new();
        stats.write_table(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        for needle in [
            "8.0 MiB in 2 region(s)",
            "1.2 ms",
            "prefetch",
            "exit",
            "unknown: no idle page tracking",
            "3 GETs, 5.0 MiB fetched, 1 retried",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
        let json = serde_json::to_value(&stats).unwrap();
        assert_eq!(json["prefetch"]["mode"], "all");
        assert_eq!(json["vmm"]["pid"], 7);
        assert_eq!(json["store"]["chunk_fetches"], 2);
    }

    #[test]
    fn the_timeline_line_is_finer_where_a_restore_is_busiest() {
        use table::timeline;
        use uffd_engine::FaultTimeline;
        let mut t = FaultTimeline::default();
        t.faults[0] = 12;
        t.faults[2] = 3;
        t.faults[8] = 1;
        assert_eq!(timeline(&t), "by 10 ms: 12 0 3 0 0 0 0 0 1");
        // 100-199 ms and 300-399 ms summed; 1.5 s in the 1 s stage.
        t.faults[15] = 2;
        t.faults[19] = 3;
        t.faults[35] = 1;
        t.faults[150] = 7;
        t.after = 4;
        assert_eq!(
            timeline(&t),
            "by 10 ms: 12 0 3 0 0 0 0 0 1 0; by 100 ms: 5 0 1 0 0 0 0 0 0; by 1 s: 7; \
             +4 after 5 s"
        );
        assert_eq!(timeline(&FaultTimeline::default()), "none");
    }
}
