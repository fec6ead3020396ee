//! The main loop: every VMM being served, the listener, signals and control commands, until
//! the daemon is told to stop or (without `--keep-listening`) its one VMM's session ends.

use super::*;

/// Handshakes received at once on their own threads; further connections wait in the
/// listener's backlog, so a flood of silent clients costs a few threads, not one each.
const MAX_HANDSHAKES_IN_FLIGHT: usize = 4;

impl Daemon {
    pub(super) fn serve_all(&mut self) -> ExitReport {
        // Waiting for a VMM ends here (`--accept-timeout`), while none is served or shaking
        // hands.
        let mut deadline = self.accept_deadline();
        // The last failed handshake since a VMM was last served: a connection that never
        // completes a handshake (a port scanner, a stray client) does not consume `--once`,
        // and does not restart the accept timeout either.
        let mut failed: Option<String> = None;
        loop {
            while let Some(signal) = self.signals.take() {
                if signal.action == SignalAction::Stop {
                    return self.stop_all(signal.name);
                }
                let stats = self.current_stats();
                self.answer_signal(signal, &stats);
            }
            for event in self.events.drain() {
                let ended = match event {
                    Message::Engine(id, exit) => self.engine_exited(id, exit),
                    Message::Control(request) => match self.control(request) {
                        Some(stopped) => return stopped,
                        None => None,
                    },
                    Message::Scrape(reply) => {
                        let _ = reply.send(Box::new(self.current_stats()));
                        None
                    }
                    Message::Handshake(received) => {
                        self.handshakes -= 1;
                        match *received {
                            Ok(handshake) => self.start_session(handshake),
                            Err(e) => {
                                if let Some(json) = e.raw_json() {
                                    error!(error = %e, json, "bad handshake; connection closed");
                                } else {
                                    error!(error = %e, "bad handshake; connection closed");
                                }
                                failed = Some(format!("handshake failed: {e}"));
                                info!(
                                    "waiting for the next connection (a failed handshake serves \
                                     no VMM)"
                                );
                                None
                            }
                        }
                    }
                };
                if let Some(outcome) = ended {
                    if let Some(last) = self.after_session(outcome) {
                        return last;
                    }
                    failed = None;
                    deadline = self.accept_deadline();
                }
            }
            while let Some(outcome) = self.end_exited_vmm() {
                if let Some(last) = self.after_session(outcome) {
                    return last;
                }
                failed = None;
                deadline = self.accept_deadline();
            }
            let waiting = self.live.is_empty() && self.handshakes == 0;
            if waiting && deadline.is_some_and(|d| Instant::now() >= d) {
                return self.accept_timed_out(failed.as_deref());
            }
            let accepting = if self.config.keep_listening {
                self.handshakes < MAX_HANDSHAKES_IN_FLIGHT
            } else {
                waiting
            };
            let mut timeout = if waiting {
                deadline.map(|d| d.saturating_duration_since(Instant::now()))
            } else {
                None
            };
            for live in &mut self.live {
                let next = match live.gone_since {
                    Some(since) => Some(GONE_GRACE.saturating_sub(since.elapsed())),
                    None => live.session.sample_first_fault(),
                };
                timeout = match (timeout, next) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            if self.wait(accepting, timeout) {
                match self.listener.accept(Duration::ZERO) {
                    Ok(conn) => self.receive_handshake(conn),
                    Err(AcceptError::Timeout { .. }) => {}
                    Err(e) => {
                        let stopped = self.stop_all("an accept error");
                        return ExitReport::new(
                            DaemonExit::Usage,
                            format!("{e}; {}", stopped.reason),
                        );
                    }
                }
            }
        }
    }

    /// When waiting for a VMM from now on ends (`--accept-timeout`; `None`: never).
    fn accept_deadline(&self) -> Option<Instant> {
        self.config.accept_timeout.map(|t| Instant::now() + t)
    }

    /// The outcome at the accept deadline: 2 if a handshake failed meanwhile (`failed`),
    /// else 5.
    fn accept_timed_out(&self, failed: Option<&str>) -> ExitReport {
        match failed {
            Some(failure) => ExitReport::new(
                DaemonExit::Handshake,
                format!(
                    "{failure}; no VMM completed a handshake on {} within --accept-timeout",
                    self.config.socket.display()
                ),
            ),
            None => ExitReport::new(
                DaemonExit::AcceptTimeout,
                format!(
                    "no VMM connected to {} within {:.1?} (--accept-timeout)",
                    self.config.socket.display(),
                    self.config.accept_timeout.unwrap_or_default()
                ),
            ),
        }
    }

    /// After a VMM's session ended with `outcome`: the daemon's outcome if it must stop now
    /// (without `--keep-listening`), else `None` and the next VMM is awaited.
    fn after_session(&mut self, outcome: ExitReport) -> Option<ExitReport> {
        if !self.config.keep_listening {
            return Some(outcome);
        }
        info!(
            outcome = %outcome.reason,
            serving = self.live.len(),
            "--keep-listening: a VMM's session ended; serving the others and waiting for the next"
        );
        None
    }

    /// Session `id`'s engine stopped on its own: a fatal error ends that session (its outcome);
    /// a VMM gone (ESRCH) starts its grace period.
    fn engine_exited(&mut self, id: u64, exit: EngineExit) -> Option<ExitReport> {
        let Some(index) = self.live.iter().position(|l| l.session.id() == id) else {
            info!(
                session = id,
                ?exit,
                "a finished session's engine exit ignored"
            );
            return None;
        };
        match exit {
            EngineExit::Fatal(fatal) => {
                let live = self.live.remove(index);
                Some(self.fatal(live.session, &fatal))
            }
            EngineExit::VmmGone => {
                let live = &mut self.live[index];
                info!(
                    session = id,
                    pid = live.session.pid(),
                    "the VMM's memory is gone (ESRCH)"
                );
                live.gone_since.get_or_insert_with(Instant::now);
                None
            }
        }
    }

    /// Ends the session of one VMM that has exited (its pidfd readable, or its memory gone for
    /// the grace period): its outcome, or `None` if every VMM is still there.
    fn end_exited_vmm(&mut self) -> Option<ExitReport> {
        let index = self.live.iter().position(|l| {
            l.session.vmm_exited()
                || l.gone_since.is_some_and(|since| {
                    // ESRCH: the memory is gone, the process is on its way out.
                    l.session.pidfd().is_none() || since.elapsed() >= GONE_GRACE
                })
        })?;
        let live = self.live.remove(index);
        Some(self.vmm_exited(live.session))
    }

    /// Answers a control command; the daemon's outcome if it says stop.
    fn control(&mut self, request: ControlRequest) -> Option<ExitReport> {
        match request.command {
            ControlCommand::Stats => {
                request.answer(&self.current_stats());
                None
            }
            ControlCommand::Snapshot => {
                match self.live.len() {
                    _ if self.config.next_generation.is_none() => {
                        request.fail("no --next-generation directory was given")
                    }
                    0 => request.fail("no VMM is being served"),
                    // `--next-generation` serves one VMM at a time (`--max-vmms` 1).
                    1 => {
                        let mut live = self.live.remove(0);
                        self.snapshot(&mut live.session, request);
                        self.live.insert(0, live);
                    }
                    n => request.fail(&format!(
                        "{n} VMMs are being served; a snapshot is of one VMM"
                    )),
                }
                None
            }
            // Already answered by the connection's thread.
            ControlCommand::Stop => {
                drop(request);
                Some(self.stop_all("the control socket's stop"))
            }
        }
    }

    /// Stops serving every VMM gracefully (`--on-signal`), oldest first; the daemon's outcome:
    /// the first that did not succeed, or the last.
    fn stop_all(&mut self, why: &str) -> ExitReport {
        if self.live.is_empty() {
            return ExitReport::new(
                DaemonExit::Success,
                format!("stopped by {why} while waiting for a VMM"),
            );
        }
        let mut outcomes = Vec::new();
        for live in std::mem::take(&mut self.live) {
            outcomes.push(self.graceful_stop(live.session, why));
        }
        if outcomes.len() == 1 {
            return outcomes.remove(0);
        }
        let exit = outcomes
            .iter()
            .map(|o| o.exit)
            .find(|e| *e != DaemonExit::Success)
            .unwrap_or(DaemonExit::Success);
        let reasons: Vec<&str> = outcomes.iter().map(|o| o.reason.as_str()).collect();
        ExitReport::new(
            exit,
            format!("{} VMMs: {}", outcomes.len(), reasons.join("; ")),
        )
    }

    /// The statistics of this moment: the newest VMM's at the top level (what a client of one
    /// VMM reads), every VMM being served in `sessions`; between VMMs, the last one's final
    /// figures.
    pub(super) fn current_stats(&mut self) -> Stats {
        let mut sessions: Vec<Stats> = self
            .live
            .iter()
            .map(|l| self.session_stats(&l.session, "serving"))
            .collect();
        match sessions.last() {
            None => self.stats_while_waiting(),
            Some(newest) => {
                let mut stats = newest.clone();
                stats.sessions = std::mem::take(&mut sessions);
                stats
            }
        }
    }

    /// The statistics between VMMs: the last VMM's final ones, if one was served.
    fn stats_while_waiting(&self) -> Stats {
        self.last_stats
            .clone()
            .map(|mut s| {
                s.state = "waiting";
                s.uptime_s = self.started.elapsed().as_secs_f64();
                s
            })
            .unwrap_or_else(|| self.stats_without_vmm("waiting"))
    }
}
