//! The final table: what the restores did and whether every byte was right.

use std::time::Duration;

use serde_json::Value;

use crate::snapshot::Snapshot;

/// What the demo measured.
#[derive(Default)]
pub(crate) struct Report {
    pub(crate) snapshot_entries: usize,
    pub(crate) snapshot_built: Duration,
    pub(crate) kvm: bool,
    pub(crate) first_fault: Duration,
    pub(crate) first_fault_touch: Duration,
    pub(crate) restore_verified: Duration,
    pub(crate) bad_blocks_restore: u64,
    pub(crate) balloon_bytes: u64,
    pub(crate) written_bytes: u64,
    pub(crate) bad_blocks_after_writes: u64,
    pub(crate) snapshot_answer: Option<Value>,
    pub(crate) snapshot_time: Duration,
    pub(crate) stats_live: Option<Value>,
    pub(crate) stats_restore1: Option<Value>,
    pub(crate) daemon1_exit: Option<i32>,
    pub(crate) bad_blocks_gen2: u64,
    pub(crate) restore2_verified: Duration,
    pub(crate) stats_restore2: Option<Value>,
    pub(crate) daemon2_exit: Option<i32>,
}

fn u(v: Option<&Value>, path: &[&str]) -> u64 {
    let mut v = v;
    for key in path {
        v = v.and_then(|x| x.get(*key));
    }
    v.and_then(Value::as_u64).unwrap_or(0)
}

/// A serialized `Duration` (`{"secs", "nanos"}`) at `path`.
fn d(v: Option<&Value>, path: &[&str]) -> Duration {
    let mut v = v;
    for key in path {
        v = v.and_then(|x| x.get(*key));
    }
    Duration::new(u(v, &["secs"]), u(v, &["nanos"]) as u32)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

fn verdict(bad: u64) -> String {
    if bad == 0 {
        "every byte verified".into()
    } else {
        format!("{bad} blocks WRONG")
    }
}

impl Report {
    pub(crate) fn snapshot(&mut self, snap: &Snapshot, took: Duration) {
        self.snapshot_entries = snap.header.entries().len();
        self.snapshot_built = took;
    }

    pub(crate) fn all_verified(&self) -> bool {
        self.bad_blocks_restore == 0
            && self.bad_blocks_after_writes == 0
            && self.bad_blocks_gen2 == 0
            && self.daemon1_exit == Some(0)
            && self.daemon2_exit == Some(0)
    }

    pub(crate) fn print(&self, size: u64) {
        let s1 = self.stats_restore1.as_ref();
        let m1 = s1.and_then(|s| s.get("metrics"));
        let m2 = self.stats_restore2.as_ref().and_then(|s| s.get("metrics"));
        let prefetch = s1
            .and_then(|s| s.get("prefetch"))
            .and_then(|p| p.get("report"));
        let prefetch_bytes = u(prefetch, &["bytes"]);
        let prefetch_time = d(prefetch, &["elapsed"]);
        let snap = self.snapshot_answer.as_ref();
        let row = |name: &str, value: String| println!("  {name:<38} {value}");
        println!();
        println!(
            "uffd-handler demo: {} guest, {}",
            mib(size),
            if self.kvm {
                "KVM guest (2 vCPUs)"
            } else {
                "process VMM"
            }
        );
        println!("  {:-<38} {:-<44}", "", "");
        row(
            "snapshot (gen 1 over gen 0)",
            format!(
                "{} entries, built in {:.2?}",
                self.snapshot_entries, self.snapshot_built
            ),
        );
        row(
            "time to first fault served",
            format!(
                "{:.2?} from VMM start ({:.1?} the fault itself)",
                self.first_fault, self.first_fault_touch
            ),
        );
        row(
            "restore to verified",
            format!(
                "{:.2?}: {}",
                self.restore_verified,
                verdict(self.bad_blocks_restore)
            ),
        );
        row(
            "faults (restore 1)",
            format!(
                "{} faults read: pages {} from snapshot ({} by fault-around), {} zero; {} already present, {} WP",
                u(m1, &["faults"]),
                u(m1, &["installed_source"]),
                u(m1, &["fault_around_pages"]),
                u(m1, &["installed_zero"]),
                u(m1, &["already_present"]),
                u(m1, &["wp_resolved"]),
            ),
        );
        row(
            "  deferred / retried / fatal",
            format!(
                "{} / {} / {}",
                u(m1, &["deferred"]),
                u(m1, &["retried"]),
                u(m1, &["fatal"])
            ),
        );
        row(
            "service latency p50 / p99 / max",
            format!(
                "{:.1?} / {:.1?} / {:.1?}",
                d(m1, &["latency_p50"]),
                d(m1, &["latency_p99"]),
                d(m1, &["latency_max"])
            ),
        );
        row(
            "vCPU stall time (sum of waits)",
            format!(
                "{:.1?} over {} faults",
                d(m1, &["stall_time"]),
                u(m1, &["latency_samples"])
            ),
        );
        let bw = if prefetch_time.is_zero() {
            0.0
        } else {
            prefetch_bytes as f64 / prefetch_time.as_secs_f64() / 1e9
        };
        row(
            "prefetch",
            format!(
                "{} installed in {:.2?} ({bw:.2} GB/s)",
                mib(prefetch_bytes),
                prefetch_time
            ),
        );
        row("prefetch precision / recall", accuracy(s1));
        row("faults per 10 ms (first 5 s)", timeline(m1));
        row(
            "balloon: given back, then read",
            format!(
                "{} in {} REMOVE events: zeros",
                mib(self.balloon_bytes),
                u(m1, &["removes"])
            ),
        );
        row("guest writes", mib(self.written_bytes));
        row(
            "after balloon + writes",
            verdict(self.bad_blocks_after_writes),
        );
        row(
            "pages dirtied (exported)",
            format!(
                "{} dirty, {} empty",
                mib(u(snap, &["dirty_bytes"])),
                mib(u(snap, &["empty_bytes"]))
            ),
        );
        row(
            "diff size (generation 2)",
            format!(
                "{} data file, written in {:.2?}",
                mib(u(snap, &["diff_file_bytes"])),
                self.snapshot_time
            ),
        );
        row(
            "restore of gen 2 to verified",
            format!(
                "{:.2?}: {}",
                self.restore2_verified,
                verdict(self.bad_blocks_gen2)
            ),
        );
        row(
            "faults (restore 2, demand only)",
            format!(
                "{} faults read: pages {} from snapshot, {} zero; p50 {:.1?}, p99 {:.1?}",
                u(m2, &["faults"]),
                u(m2, &["installed_source"]),
                u(m2, &["installed_zero"]),
                d(m2, &["latency_p50"]),
                d(m2, &["latency_p99"]),
            ),
        );
        row(
            "daemon exit codes",
            format!(
                "{}, {}",
                exit_code(self.daemon1_exit),
                exit_code(self.daemon2_exit)
            ),
        );
        println!();
        println!(
            "  {}",
            if self.all_verified() {
                "RESULT: every byte verified in every restore"
            } else {
                "RESULT: FAILED"
            }
        );
    }
}

/// Prefetch precision and recall from the daemon's statistics, or why they are unknown.
fn accuracy(stats: Option<&Value>) -> String {
    let a = stats.and_then(|s| s.get("prefetch_accuracy"));
    let figure = |key: &str| a.and_then(|a| a.get(key)).and_then(Value::as_f64);
    match (figure("precision"), figure("recall")) {
        (Some(p), Some(r)) => format!("{:.1}% / {:.1}%", p * 100.0, r * 100.0),
        _ => {
            let why = a
                .and_then(|a| a.get("unknown"))
                .and_then(Value::as_str)
                .unwrap_or("no statistics");
            format!("unknown: {why}")
        }
    }
}

/// The fault timeline's busiest bucket and its spread, from the daemon's statistics.
fn timeline(metrics: Option<&Value>) -> String {
    let t = metrics.and_then(|m| m.get("timeline"));
    let faults: Vec<u64> = t
        .and_then(|t| t.get("faults"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    let after = u(t, &["after"]);
    let Some((busiest, peak)) = faults.iter().enumerate().max_by_key(|&(_, n)| *n) else {
        return "no fault".into();
    };
    format!(
        "{} in the first {} ms, peak {peak} at {}-{} ms; {after} after 5 s",
        faults.iter().sum::<u64>(),
        faults.len() * 10,
        busiest * 10,
        busiest * 10 + 10
    )
}

/// An exit code as a number, or what ended the process instead.
fn exit_code(code: Option<i32>) -> String {
    code.map_or_else(|| "killed by a signal".to_string(), |c| c.to_string())
}
