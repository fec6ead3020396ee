//! The statistics the daemon reports (live over the control socket, and at the end): built
//! in one place.

use super::*;

impl Daemon {
    pub(super) fn session_stats(&self, session: &Session, state: &'static str) -> Stats {
        let (metrics, pages) = session.live();
        let figures = SessionFigures {
            vmm: session.vmm_stats(None),
            first_fault: session.first_fault(),
            metrics,
            pages,
            prefetch_running: session.prefetch_running(),
            prefetch_report: session.prefetch_report(),
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
        let (vmm, first_fault, metrics, pages, running, report) = match session {
            Some(s) => (
                Some(s.vmm),
                s.first_fault,
                Some(s.metrics),
                Some(s.pages),
                s.prefetch_running,
                s.prefetch_report,
            ),
            None => (None, None, None, None, false, None),
        };
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
                report,
            },
            generations_written: self.generations_written,
            last_snapshot: self.last_snapshot.clone(),
            outcome: outcome.map(|o| OutcomeStats {
                exit_code: o.exit.code(),
                reason: o.reason.clone(),
            }),
        }
    }
}

/// What a session contributes to the statistics.
pub(super) struct SessionFigures {
    pub(super) vmm: VmmStats,
    pub(super) first_fault: Option<Duration>,
    pub(super) metrics: MetricsSnapshot,
    pub(super) pages: PageCounts,
    pub(super) prefetch_running: bool,
    pub(super) prefetch_report: Option<PrefetchReport>,
}
