//! The statistics the daemon reports (live over the control socket, and at the end): built
//! in one place.

use super::*;

impl Daemon {
    pub(super) fn session_stats(&self, session: &Session, state: &'static str) -> Stats {
        let (metrics, pages) = session.live();
        let figures = SessionFigures {
            vmm: session.vmm_stats(None),
            metrics,
            pages,
            prefetch_running: session.prefetch_running(),
            prefetch_report: session.prefetch_report(),
            prefetch_total_pages: session.prefetch_total_pages(),
            prefetch_accuracy: session.prefetch_accuracy(),
        };
        self.stats(state, Some(figures), None)
    }

    pub(super) fn stats_without_vmm(&self, state: &'static str) -> Stats {
        self.stats(state, None, None)
    }

    /// The one place statistics are assembled: the daemon's own figures, a session's if one is
    /// (or was) being served, and the outcome once the daemon has ended.
    pub(super) fn stats(
        &self,
        state: &'static str,
        session: Option<SessionFigures>,
        outcome: Option<&ExitReport>,
    ) -> Stats {
        let (vmm, metrics, pages, running, report, total_pages, accuracy) = match session {
            Some(s) => (
                Some(s.vmm),
                Some(s.metrics),
                Some(s.pages),
                s.prefetch_running,
                s.prefetch_report,
                s.prefetch_total_pages,
                s.prefetch_accuracy,
            ),
            None => (
                None,
                None,
                None,
                false,
                None,
                0,
                PrefetchAccuracy::unknown("no VMM has been served"),
            ),
        };
        let first_fault = metrics.and_then(|m| m.first_fault_served);
        Stats {
            state,
            uptime_s: self.started.elapsed().as_secs_f64(),
            vmm,
            time_to_first_fault_ms: first_fault.map(|d| d.as_secs_f64() * 1e3),
            metrics,
            pages,
            prefetch: PrefetchStats {
                mode: self.config.prefetch,
                running,
                total_pages,
                report,
            },
            prefetch_accuracy: accuracy,
            generations_written: self.generations_written,
            last_snapshot: self.last_snapshot.clone(),
            store: self.config.snapshot.store_stats().map(StoreFigures::from),
            outcome: outcome.map(|o| OutcomeStats {
                exit_code: o.exit.code(),
                reason: o.reason.clone(),
            }),
            sessions: Vec::new(),
        }
    }
}

/// What a session contributes to the statistics.
pub(super) struct SessionFigures {
    pub(super) vmm: VmmStats,
    pub(super) metrics: MetricsSnapshot,
    pub(super) pages: PageCounts,
    pub(super) prefetch_running: bool,
    pub(super) prefetch_report: Option<PrefetchReport>,
    pub(super) prefetch_total_pages: u64,
    pub(super) prefetch_accuracy: PrefetchAccuracy,
}
