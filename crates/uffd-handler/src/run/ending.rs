//! How a session ends: the VMM exited, a fatal error, or a graceful stop; then the final
//! statistics.

use super::figures::SessionFigures;
use super::*;

impl Daemon {
    pub(super) fn vmm_exited(&mut self, session: Session) -> ExitReport {
        let pid = session.pid();
        let end = vmm_end(pid, session.pidfd());
        info!(pid, %end, "the VMM is gone");
        let (exit, reason) = if end.is_normal() {
            if end == crate::vmm_exit::VmmEnd::Unknown {
                warn!(
                    pid,
                    "the VMM's exit status cannot be read; counting it as normal"
                );
            }
            (
                DaemonExit::Success,
                format!("the VMM (pid {pid}) {end}; every fault was served"),
            )
        } else {
            (
                DaemonExit::VmmDied,
                format!("the VMM (pid {pid}) {end} while being served"),
            )
        };
        self.end_session(
            session,
            SessionClose::Exited,
            end.to_string(),
            ExitReport::new(exit, reason),
        )
    }

    pub(super) fn fatal(&mut self, session: Session, fatal: &FatalError) -> ExitReport {
        let pid = session.pid();
        error!(pid, error = %fatal, "fatal engine error");
        let (finish, fate) = match self.config.on_fatal {
            OnFatal::Kill => (
                SessionClose::Kill,
                format!("the VMM (pid {pid}) was killed (--on-fatal kill)"),
            ),
            OnFatal::Exit => (
                SessionClose::Abandon,
                format!(
                    "the VMM (pid {pid}) was left running (--on-fatal exit): its faulting threads \
                     stay blocked until its owner kills it"
                ),
            ),
        };
        let reason = format!("fatal engine error: {}; {fate}", condensed(fatal));
        let end = match finish {
            SessionClose::Kill => "killed after a fatal error",
            _ => "left running after a fatal error",
        };
        self.end_session(
            session,
            finish,
            end.into(),
            ExitReport::new(DaemonExit::Fatal, reason),
        )
    }

    pub(super) fn graceful_stop(&mut self, session: Session, why: &str) -> ExitReport {
        let pid = session.pid();
        info!(pid, why, policy = ?self.config.on_signal, "stopping");
        let (finish, fate, end) = match self.config.on_signal {
            OnSignal::Graduate => (
                SessionClose::Graduate {
                    or_else: self.config.on_fatal,
                },
                format!(
                    "every page was installed and the regions unregistered; the VMM (pid {pid}) \
                     runs on without a handler"
                ),
                "graduated (runs on)",
            ),
            OnSignal::Kill => (
                SessionClose::Kill,
                format!("the VMM (pid {pid}) was killed (--on-signal kill)"),
                "killed on stop",
            ),
        };
        let outcome = ExitReport::new(DaemonExit::Success, format!("stopped by {why}: {fate}"));
        self.end_session(session, finish, end.into(), outcome)
    }

    /// Finishes the session, prints the statistics table and keeps them for `--stats-json`.
    pub(super) fn end_session(
        &mut self,
        session: Session,
        how: SessionClose,
        end: String,
        outcome: ExitReport,
    ) -> ExitReport {
        let vmm = session.vmm_stats(Some(end));
        let prefetch_total_pages = session.prefetch_total_pages();
        let prefetch_accuracy = session.prefetch_accuracy();
        let Finished {
            metrics,
            pages,
            prefetch,
            close_error,
        } = session.finish(how);
        let outcome = match close_error {
            Some(e) if outcome.exit == DaemonExit::Success => ExitReport::new(
                DaemonExit::Fatal,
                format!("{}; but closing failed: {e}", outcome.reason),
            ),
            _ => outcome,
        };
        let figures = SessionFigures {
            vmm,
            metrics,
            pages,
            prefetch_running: false,
            prefetch_report: prefetch,
            prefetch_total_pages,
            prefetch_accuracy,
        };
        // A read returns once its own bytes have landed, the rest of its chunk may still be
        // arriving: the final store figures wait for those transfers. Not after a fatal error
        // (a failing store's transfers end only when their retries do), nor while other VMMs
        // are served (their fetches would be waited for too).
        if outcome.exit != DaemonExit::Fatal && self.live.is_empty() {
            self.config.snapshot.wait_fetches();
        }
        let stats = self.stats("finished", Some(figures), Some(&outcome));
        let mut table = Vec::new();
        if stats.write_table(&mut table).is_ok() {
            eprint!("{}", String::from_utf8_lossy(&table));
        }
        self.last_stats = Some(stats);
        outcome
    }
}

/// The fatal error with repeated underlying errors counted rather than repeated.
fn condensed(fatal: &FatalError) -> String {
    let mut runs: Vec<(&str, usize)> = Vec::new();
    for error in &fatal.errors {
        match runs.last_mut() {
            Some((last, n)) if *last == error.as_str() => *n += 1,
            _ => runs.push((error, 1)),
        }
    }
    let errors: Vec<String> = runs
        .into_iter()
        .map(|(e, n)| {
            if n > 1 {
                format!("{e} (x{n})")
            } else {
                e.to_string()
            }
        })
        .collect();
    if errors.is_empty() {
        fatal.reason.clone()
    } else {
        format!("{}: {}", fatal.reason, errors.join("; "))
    }
}
