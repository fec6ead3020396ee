//! The statistics of one moment in the Prometheus and OpenMetrics text formats, written by
//! `prometheus-client` through a [`Collector`] that reads the figures the main loop took at
//! scrape time (the same [`Stats`] the control socket's `stats` answers): nothing is counted
//! twice, and a scrape and a `stats` of a quiescent VMM agree.
//!
//! Every per-VMM metric carries a `vmm` label, the daemon's session number, so one daemon
//! serving several VMMs stays unambiguous; `uffd_vmm_info` maps it to the VMM's pid and uid.
//! docs/daemon.md lists every metric with its unit and meaning.

use std::collections::{HashMap, HashSet};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use super::families::{Families, Fmt};
use crate::stats::{Stats, StoreFigures, Written};
use uffd_engine::{MetricsSnapshot, TIMELINE_BUCKET};

/// Which text format a scrape gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// Prometheus text 0.0.4 (the default).
    Prometheus,
    /// OpenMetrics 1.0 text (asked for with `Accept: application/openmetrics-text`).
    OpenMetrics,
}

impl Format {
    /// The `Content-Type` of the answer.
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// `stats` in `format`: with several VMMs served, each family once, with every VMM's series.
pub(crate) fn render(mut stats: Stats, format: Format) -> Result<String, std::fmt::Error> {
    if stats.sessions.is_empty() {
        return render_one(stats, format);
    }
    let sessions = std::mem::take(&mut stats.sessions);
    let texts = sessions
        .into_iter()
        .map(|mut session| {
            // The daemon's own figures of one moment, the same in every VMM's text.
            session.uptime_s = stats.uptime_s;
            session.generations_written = stats.generations_written;
            session.store = stats.store;
            render_one(session, format)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(merge_families(&texts))
}

/// Expositions of one VMM each, merged: every family once (its `# HELP`, `# TYPE` and `# UNIT`
/// from the first text that has it), followed by the series of every text; a series that
/// several texts repeat (the daemon's own, without a `vmm` label) once; `# EOF` last if the
/// format has it. `prometheus-client` writes a family per collector, and a family written
/// twice is refused by Prometheus' parsers.
fn merge_families(texts: &[String]) -> String {
    struct Family<'a> {
        header: Vec<&'a str>,
        series: Vec<&'a str>,
        seen: HashSet<&'a str>,
    }
    let mut order: Vec<&str> = Vec::new();
    let mut families: HashMap<&str, Family<'_>> = HashMap::new();
    let mut eof = false;
    for text in texts {
        let mut current: Option<&str> = None;
        let mut first_header = false;
        for line in text.lines() {
            if line == "# EOF" {
                eof = true;
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or_default();
                first_header = !families.contains_key(name);
                let family = families.entry(name).or_insert_with(|| {
                    order.push(name);
                    Family {
                        header: Vec::new(),
                        series: Vec::new(),
                        seen: HashSet::new(),
                    }
                });
                if first_header {
                    family.header.push(line);
                }
                current = Some(name);
            } else if let Some(family) = current.and_then(|name| families.get_mut(name)) {
                if line.starts_with('#') {
                    if first_header {
                        family.header.push(line);
                    }
                } else if family.seen.insert(line) {
                    family.series.push(line);
                }
            }
        }
    }
    let mut merged = String::new();
    for name in order {
        let family = &families[name];
        for line in family.header.iter().chain(&family.series) {
            merged.push_str(line);
            merged.push('\n');
        }
    }
    if eof {
        merged.push_str("# EOF\n");
    }
    merged
}

/// One [`Stats`] (one VMM's, or the daemon's between VMMs) in `format`.
fn render_one(stats: Stats, format: Format) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("uffd");
    registry.register_collector(Box::new(StatsCollector { stats }));
    let mut text = String::new();
    match format {
        Format::Prometheus => {
            prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)?
        }
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut text, &registry)?,
    }
    Ok(text)
}

/// Encodes one [`Stats`] at scrape time.
#[derive(Debug)]
struct StatsCollector {
    stats: Stats,
}

impl Collector for StatsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Fmt {
        let s = &self.stats;
        {
            let uptime = ConstGauge::new(s.uptime_s);
            let family = encoder.encode_descriptor(
                "daemon_uptime",
                "Time since the daemon started",
                Some(&Unit::Seconds),
                uptime.metric_type(),
            )?;
            uptime.encode(family)?;
            let written = ConstCounter::new(s.generations_written);
            let family = encoder.encode_descriptor(
                "generations_written",
                "Snapshot generations written by the control socket's snapshot",
                None,
                written.metric_type(),
            )?;
            written.encode(family)?;
        }
        if let Some(store) = &s.store {
            encode_store(&mut encoder, store)?;
        }
        let Some(vmm) = &s.vmm else {
            return Ok(());
        };
        {
            let labels = [
                ("vmm", vmm.session.to_string()),
                ("pid", vmm.pid.to_string()),
                ("uid", vmm.uid.to_string()),
            ];
            let mut family = encoder.encode_descriptor(
                "vmm",
                "The VMM a vmm label stands for: its pid and uid",
                None,
                MetricType::Info,
            )?;
            family.encode_info(&labels)?;
        }
        let mut f = Families {
            encoder,
            vmm: [("vmm", vmm.session.to_string())],
        };
        f.gauge(
            "vmm_serving",
            "1 while the VMM is served, 0 once its session ended",
            None,
            i64::from(vmm.end.is_none()),
        )?;
        f.gauge(
            "guest_memory",
            "Guest memory (the snapshot image) size",
            Some(&Unit::Bytes),
            vmm.image_size,
        )?;
        f.gauge(
            "guest_page_size",
            "Guest page size",
            Some(&Unit::Bytes),
            vmm.page_size,
        )?;
        f.gauge(
            "vmm_served",
            "How long the VMM has been (or was) served",
            Some(&Unit::Seconds),
            vmm.served_s,
        )?;
        if let Some(ms) = s.time_to_first_fault_ms {
            f.gauge(
                "first_fault_served",
                "From the start of serving to the end of the first fault's service",
                Some(&Unit::Seconds),
                ms / 1e3,
            )?;
        }
        if let Some(m) = &s.metrics {
            encode_engine(&mut f, m, s.prefetch.total_pages)?;
        }
        if let Some(p) = &s.pages {
            let written = match p.written {
                Written::Dirty(n) => ("dirty".to_string(), n),
                Written::InstalledByWrite(n) => ("installed_by_write".to_string(), n),
            };
            f.labelled_gauges(
                "pages",
                "Guest pages by state (dirty with --dirty-tracking, installed_by_write without)",
                "state",
                &[
                    ("missing".to_string(), p.missing),
                    ("clean".to_string(), p.clean),
                    ("zero".to_string(), p.zero),
                    ("removed".to_string(), p.removed),
                    written,
                ],
            )?;
        }
        f.gauge(
            "prefetch_running",
            "1 while the background prefetch runs",
            None,
            i64::from(s.prefetch.running),
        )?;
        let accuracy = &s.prefetch_accuracy;
        if let (Some(precision), Some(recall)) = (accuracy.precision, accuracy.recall) {
            f.gauge(
                "prefetch_precision",
                "Prefetched pages the guest touched over pages prefetched",
                Some(&Unit::Ratios),
                precision,
            )?;
            f.gauge(
                "prefetch_recall",
                "Prefetched pages the guest touched over pages the guest touched",
                Some(&Unit::Ratios),
                recall,
            )?;
        }
        Ok(())
    }
}

/// The engine's counters, latency histogram and timeline.
/// The store client's and the chunk cache's figures (`--snapshot-url`): the daemon's own, no
/// `vmm` label.
fn encode_store(encoder: &mut DescriptorEncoder<'_>, s: &StoreFigures) -> Fmt {
    let counters: [(&str, &str, Option<&Unit>, u64); 3] = [
        (
            "store_gets",
            "GET requests sent to the object store (every attempt)",
            None,
            s.gets,
        ),
        (
            "store_fetched",
            "Body bytes received from the object store",
            Some(&Unit::Bytes),
            s.bytes_fetched,
        ),
        (
            "store_retries",
            "Object store attempts that failed (retried, or ending in an error)",
            None,
            s.retries,
        ),
    ];
    for (name, help, unit, value) in counters {
        let counter = ConstCounter::new(value);
        let family = encoder.encode_descriptor(name, help, unit, counter.metric_type())?;
        counter.encode(family)?;
    }
    let mut family = encoder.encode_descriptor(
        "chunk_cache_lookups",
        "Chunk lookups of the host's cache, by result: hit, fetched (a miss this daemon \
         fetched), coalesced (a miss that waited for a fetch under way), elsewhere (a miss \
         another process had fetched)",
        None,
        MetricType::Counter,
    )?;
    for (result, count) in [
        ("hit", s.chunk_hits),
        ("fetched", s.chunk_fetches),
        ("coalesced", s.chunks_coalesced),
        ("elsewhere", s.chunks_fetched_elsewhere),
    ] {
        ConstCounter::new(count).encode(family.encode_family(&[("result", result)])?)?;
    }
    Ok(())
}

fn encode_engine(f: &mut Families<'_>, m: &MetricsSnapshot, prefetch_total: u64) -> Fmt {
    f.counter(
        "fault_messages",
        "Page-fault messages read from the userfaultfd (duplicates and write-protect faults \
         included)",
        None,
        m.faults,
    )?;
    f.labelled_counters(
        "fault_outcomes",
        "What became of the faults read, by outcome (a deferred fault is counted again when \
         it is served; not a partition of fault_messages)",
        "outcome",
        &[
            (
                "installed_source",
                m.installed_source.saturating_sub(m.fault_around_pages),
            ),
            ("installed_zero", m.installed_zero),
            ("already_present", m.already_present),
            ("write_protect_resolved", m.wp_resolved),
            ("deferred", m.deferred),
            ("retried", m.retried),
            ("discarded", m.discarded),
        ],
    )?;
    f.counter(
        "fault_around_pages",
        "Pages installed from the snapshot around a fault rather than for it",
        None,
        m.fault_around_pages,
    )?;
    f.counter(
        "retries",
        "Source failures answered with a wake after backoff (retry cycles)",
        None,
        m.retried,
    )?;
    f.counter(
        "parked_faults",
        "Faults whose bytes were not resident, handed to a fetcher thread",
        None,
        m.parked,
    )?;
    f.counter(
        "read_timeouts",
        "Snapshot reads that outlived the read deadline (each a retry cycle)",
        None,
        m.read_timeouts,
    )?;
    f.counter(
        "late_reads",
        "Snapshot reads that returned after their deadline; their bytes were dropped",
        None,
        m.late_reads,
    )?;
    f.counter("fatal_errors", "Fatal engine errors raised", None, m.fatal)?;
    f.counter(
        "removes",
        "UFFD_EVENT_REMOVE events applied (memory the guest gave back)",
        None,
        m.removes,
    )?;
    f.counter(
        "removed_pages",
        "Pages marked removed by REMOVE events",
        None,
        m.removed_pages,
    )?;
    f.counter(
        "other_events",
        "UNMAP, REMAP, FORK and unknown userfaultfd events",
        None,
        m.other_events,
    )?;
    f.latency_histogram(m)?;
    f.seconds_counter(
        "vcpu_stall",
        "vCPU stall time: the sum of every fault's service latency",
        m.stall_time.as_secs_f64(),
    )?;
    f.labelled_counters(
        "prefetch_pages",
        "Pages the prefetch visited, by result: installed from the snapshot, holes installed \
         as zero pages, skipped (already there, removed, in flight, unreadable)",
        "result",
        &[
            ("installed", m.prefetch_installed),
            ("zero", m.prefetch_zero_pages),
            ("skipped", m.prefetch_skipped),
        ],
    )?;
    f.gauge(
        "prefetch_total_pages",
        "Pages the prefetch order visits in all (0 without prefetch); prefetch_pages summed \
         over results reaches it when the prefetch is done",
        None,
        prefetch_total,
    )?;
    f.counter(
        "prefetch",
        "Bytes the prefetch installed from the snapshot",
        Some(&Unit::Bytes),
        m.prefetch_bytes,
    )?;
    f.counter(
        "prefetch_deferred_chunks",
        "Prefetch chunks put back after EAGAIN (an event was pending)",
        None,
        m.prefetch_deferred,
    )?;
    let bucket_ms = TIMELINE_BUCKET.as_millis();
    let timeline: Vec<(String, u64)> = m
        .timeline
        .until_last_fault()
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(i, &n)| ((i as u128 * bucket_ms).to_string(), n))
        .collect();
    f.labelled_gauges(
        "fault_timeline_faults",
        "Faults served in the 10 ms bucket starting start_ms after serving began, over the \
         first 5 s (empty buckets left off)",
        "start_ms",
        &timeline,
    )?;
    f.gauge(
        "fault_timeline_after_faults",
        "Faults served after the timeline's first 5 s",
        None,
        m.timeline.after,
    )
}
