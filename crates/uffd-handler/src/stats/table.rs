//! The statistics as the readable table printed to stderr (at exit, and on SIGUSR1).

use std::io::{self, Write};
use std::time::Duration;

use super::{PrefetchMode, Stats, Written};
use uffd_engine::FaultTimeline;

impl Stats {
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
                     skipped, {} unreadable (left to demand){}",
                    r.installed_pages,
                    bytes(r.bytes),
                    secs(elapsed),
                    r.zero_pages,
                    r.skipped_pages,
                    r.failed_pages,
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
        if let Some(s) = &self.store {
            row(
                out,
                "object store",
                format!(
                    "{} GETs, {} fetched, {} retried",
                    s.gets,
                    bytes(s.bytes_fetched),
                    s.retries
                ),
            )?;
            row(
                out,
                "chunk cache",
                format!(
                    "{} hits, {} fetched, {} coalesced, {} fetched by another process",
                    s.chunk_hits, s.chunk_fetches, s.chunks_coalesced, s.chunks_fetched_elsewhere
                ),
            )?;
        }
        if let Some(o) = &self.outcome {
            row(out, "exit", format!("{} ({})", o.exit_code, o.reason))?;
        }
        Ok(())
    }
}

/// The timeline in one short line, finer where a restore is busiest: the first 100 ms by
/// 10 ms, then to 1 s by 100 ms, then to 5 s by 1 s, each stage's buckets summed from the
/// 10 ms ones and the line cut after the last fault; then the faults after 5 s.
/// `by 10 ms: 12 40 3 0 0 1 0 0 0 0; by 100 ms: 5 0 2; +4 after 5 s`.
pub(super) fn timeline(t: &FaultTimeline) -> String {
    let ten_ms = &t.faults;
    // (label, buckets of 10 ms each stage's bucket sums, the stage's range of 10 ms buckets)
    let stages: [(&str, usize, std::ops::Range<usize>); 3] = [
        ("10 ms", 1, 0..10),
        ("100 ms", 10, 10..100),
        ("1 s", 100, 100..ten_ms.len()),
    ];
    let mut sums: Vec<(&str, Vec<u64>)> = stages
        .iter()
        .map(|(label, width, range)| {
            let sums = ten_ms[range.clone()]
                .chunks(*width)
                .map(|c| c.iter().sum())
                .collect();
            (*label, sums)
        })
        .collect();
    // Cut after the last fault: later stages empty, trailing empty buckets of the last.
    while sums.last().is_some_and(|(_, s)| s.iter().all(|&n| n == 0)) {
        sums.pop();
    }
    if let Some((_, last)) = sums.last_mut() {
        let len = last.iter().rposition(|&n| n > 0).map_or(0, |i| i + 1);
        last.truncate(len);
    }
    let mut parts: Vec<String> = sums
        .iter()
        .map(|(label, s)| {
            let counts: Vec<String> = s.iter().map(u64::to_string).collect();
            format!("by {label}: {}", counts.join(" "))
        })
        .collect();
    if t.after > 0 {
        parts.push(format!("+{} after 5 s", t.after));
    }
    if parts.is_empty() {
        return "none".into();
    }
    parts.join("; ")
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
