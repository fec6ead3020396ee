//! The statistics: the engine's metrics plus the daemon's own (uptime, time to first fault
//! served, prefetch, snapshots), as JSON (the control socket's `stats`, `--stats-json`) and as
//! the table printed to stderr at exit.

use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use page_tracker::StateCounts;
use serde::Serialize;

use super::cli::PrefetchMode;
use super::generation::SnapshotSummary;
use uffd_engine::{FaultTimeline, MetricsSnapshot, PrefetchReport};

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
    /// How the daemon ended (final statistics only).
    pub outcome: Option<OutcomeStats>,
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

    /// Writes the readable table.
    pub(crate) fn write_table(&self, out: &mut impl Write) -> io::Result<()> {
        let row =
            |out: &mut dyn Write, name: &str, value: String| writeln!(out, "  {name:<30} {value}");
        writeln!(out, "uffd-handler statistics")?;
        row(out, "uptime", secs(self.uptime_s))?;
        if let Some(vmm) = &self.vmm {
            let end = vmm.end.as_deref().unwrap_or("running");
            row(
                out,
                "VMM",
                format!("pid {} (uid {}), {end}", vmm.pid, vmm.uid),
            )?;
            row(
                out,
                "guest memory",
                format!(
                    "{} in {} region(s), {} pages",
                    bytes(vmm.image_size),
                    vmm.regions,
                    bytes(vmm.page_size)
                ),
            )?;
            row(out, "served for", secs(vmm.served_s))?;
        }
        let first = self
            .time_to_first_fault_ms
            .map_or_else(|| "no fault served".into(), |ms| format!("{ms:.1} ms"));
        row(out, "time to first fault served", first)?;
        if let Some(m) = &self.metrics {
            row(out, "faults read", m.faults.to_string())?;
            row(
                out,
                "pages installed",
                format!(
                    "{} from the snapshot ({} around faults), {} zero",
                    m.installed_source, m.fault_around_pages, m.installed_zero
                ),
            )?;
            row(
                out,
                "faults already served (woken)",
                m.already_present.to_string(),
            )?;
            row(out, "write-protect faults", m.wp_resolved.to_string())?;
            row(
                out,
                "deferred / retried / discarded",
                format!("{} / {} / {}", m.deferred, m.retried, m.discarded),
            )?;
            row(
                out,
                "removes (pages)",
                format!("{} ({})", m.removes, m.removed_pages),
            )?;
            row(out, "other events", m.other_events.to_string())?;
            row(out, "fatal errors", m.fatal.to_string())?;
            row(
                out,
                "service latency p50/p99/max",
                format!(
                    "{} / {} / {} ({} samples)",
                    micros(m.latency_p50),
                    micros(m.latency_p99),
                    micros(m.latency_max),
                    m.latency_samples
                ),
            )?;
            row(
                out,
                "vCPU stall time",
                format!(
                    "{} in all, over {} faults served",
                    secs(m.stall_time.as_secs_f64()),
                    m.latency_samples
                ),
            )?;
            row(out, "faults per 10 ms (first 5 s)", timeline(&m.timeline))?;
        }
        if let Some(p) = &self.pages {
            row(
                out,
                "pages missing/clean/zero",
                format!("{} / {} / {}", p.missing, p.clean, p.zero),
            )?;
            row(out, "pages removed", p.removed.to_string())?;
            let (name, count) = match p.written {
                Written::Dirty(n) => ("pages dirty", n),
                Written::InstalledByWrite(n) => ("pages installed by a write", n),
            };
            row(out, name, count.to_string())?;
        }
        let prefetch = match (&self.prefetch.report, self.prefetch.running) {
            (_, true) => "running".to_string(),
            (Some(r), false) => {
                let elapsed = r.elapsed.as_secs_f64();
                let rate = if elapsed > 0.0 {
                    r.bytes as f64 / elapsed / f64::from(1 << 20)
                } else {
                    0.0
                };
                format!(
                    "{} pages ({}) in {} ({rate:.0} MiB/s), {} holes as zero pages, {} \
                     skipped{}",
                    r.installed_pages,
                    bytes(r.bytes),
                    secs(elapsed),
                    r.zero_pages,
                    r.skipped_pages,
                    if r.stopped { ", stopped early" } else { "" }
                )
            }
            (None, false) => "none".to_string(),
        };
        row(
            out,
            "prefetch",
            format!("{} ({prefetch})", mode_name(self.prefetch.mode)),
        )?;
        let accuracy = &self.prefetch_accuracy;
        let accuracy = match (accuracy.precision, accuracy.recall, &accuracy.unknown) {
            (Some(p), Some(r), _) => format!("{:.1}% / {:.1}%", p * 100.0, r * 100.0),
            (_, _, Some(why)) => format!("unknown: {why}"),
            _ => "unknown".to_string(),
        };
        row(out, "prefetch precision / recall", accuracy)?;
        row(
            out,
            "generations written",
            self.generations_written.to_string(),
        )?;
        if let Some(s) = &self.last_snapshot {
            row(
                out,
                "last snapshot",
                format!(
                    "generation {} in {}: {} dirty, {} empty",
                    s.generation,
                    s.dir.display(),
                    bytes(s.dirty_bytes),
                    bytes(s.empty_bytes)
                ),
            )?;
        }
        if let Some(o) = &self.outcome {
            row(out, "exit", format!("{} ({})", o.exit_code, o.reason))?;
        }
        Ok(())
    }
}

/// The timeline in one line: the faults of each 10 ms bucket up to the last fault, runs of
/// empty buckets shortened (`12 40 3 .x5 1`: five empty buckets), then those after 5 s.
fn timeline(t: &FaultTimeline) -> String {
    let buckets = t.until_last_fault();
    if buckets.is_empty() && t.after == 0 {
        return "none".into();
    }
    let mut parts: Vec<String> = Vec::new();
    let mut empty = 0;
    for &n in buckets {
        if n == 0 {
            empty += 1;
            continue;
        }
        match empty {
            0 => {}
            1 => parts.push("0".into()),
            _ => parts.push(format!(".x{empty}")),
        }
        empty = 0;
        parts.push(n.to_string());
    }
    let mut line = parts.join(" ");
    if t.after > 0 {
        line.push_str(&format!(" (+{} after 5 s)", t.after));
    }
    line
}

fn mode_name(mode: PrefetchMode) -> &'static str {
    match mode {
        PrefetchMode::None => "none",
        PrefetchMode::All => "all",
        PrefetchMode::WorkingSet => "working-set",
    }
}

fn secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

fn micros(d: Duration) -> String {
    format!("{:.1} us", d.as_secs_f64() * 1e6)
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
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
            outcome: Some(OutcomeStats {
                exit_code: 0,
                reason: "done".into(),
            }),
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
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
        let json = serde_json::to_value(&stats).unwrap();
        assert_eq!(json["prefetch"]["mode"], "all");
        assert_eq!(json["vmm"]["pid"], 7);
    }

    #[test]
    fn the_timeline_line_shortens_empty_runs() {
        let mut t = FaultTimeline::default();
        t.faults[0] = 12;
        t.faults[2] = 3;
        t.faults[8] = 1;
        t.after = 4;
        assert_eq!(timeline(&t), "12 0 3 .x5 1 (+4 after 5 s)");
        assert_eq!(timeline(&FaultTimeline::default()), "none");
    }
}
