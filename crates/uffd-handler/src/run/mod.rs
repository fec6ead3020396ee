//! The daemon's lifecycle: bind, accept a VMM within the deadline, take its handshake, serve
//! it until it exits (or a fatal error, a signal or `stop`), report.
//!
//! One thread (this one) owns every decision. It polls the stop signals' signalfd, the VMM's
//! pidfd, the control socket and an eventfd that the engine's exit and control commands wake.

mod ending;
mod figures;

use std::ops::Range;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use tracing::{error, info, warn};
use uffd_core::{Features, Uffd};

use super::cli::{OnFatal, OnSignal, PrefetchMode};
use super::config::ServeConfig;
use super::control::{ControlCommand, ControlRequest, ControlSocket};
use super::endpoint::MetricsEndpoint;
use super::exit::{DaemonExit, ExitReport};
use super::generation::{NextGeneration, SnapshotSummary};
use super::mailbox::{Mailbox, Message};
use super::session::{Finished, Session, SessionClose, SessionPlan};
use super::signals::{Received, SignalAction, StopSignals};
use super::stats::{OutcomeStats, PageCounts, PrefetchAccuracy, PrefetchStats, Stats, VmmStats};
use super::vmm_exit::vmm_end;
use uffd_engine::PageSource;
use uffd_engine::{Engine, EngineExit, FatalError, MetricsSnapshot, PrefetchReport};
use uffd_handshake::{AcceptError, Handshake, HandshakeListener, receive_handshake};

/// How long to wait for the VMM's pidfd after its memory was found gone (ESRCH).
const GONE_GRACE: Duration = Duration::from_secs(10);

/// The daemon between VMMs and around them.
pub(crate) struct Daemon {
    config: ServeConfig,
    started: Instant,
    listener: HandshakeListener,
    control: Option<ControlSocket>,
    metrics: Option<MetricsEndpoint>,
    signals: StopSignals,
    events: Mailbox,
    source: Arc<dyn PageSource>,
    generations_written: u64,
    /// VMMs whose engine started (numbers the sessions).
    sessions: u64,
    last_snapshot: Option<SnapshotSummary>,
    /// The final statistics of the last VMM served.
    last_stats: Option<Stats>,
}

/// What woke the main loop while a VMM is awaited.
enum Awaited {
    Connection(UnixStream),
    Done(ExitReport),
}

impl Daemon {
    /// Binds the sockets. Call before any thread starts (the control socket's bind narrows
    /// the process umask for a moment).
    ///
    /// The VMM socket and the metrics endpoint are listening before the control socket is
    /// bound, so a control socket that accepts connections means the daemon is ready for the
    /// VMM and for scrapes. (The VMM socket's file
    /// appears a moment before it listens: a VMM connecting in that moment is refused.)
    pub(crate) fn new(config: ServeConfig, signals: StopSignals) -> Result<Daemon, ExitReport> {
        let usage = |message: String| ExitReport::new(DaemonExit::Usage, message);
        let listener = HandshakeListener::bind(&config.socket, config.socket_group)
            .map_err(|e| usage(format!("--socket: {e}")))?;
        let metrics = match &config.metrics {
            Some(addr) => Some(
                MetricsEndpoint::bind(addr, config.control_idle_timeout)
                    .map_err(|e| usage(e.to_string()))?,
            ),
            None => None,
        };
        let control = match &config.control {
            Some(path) => Some(
                ControlSocket::bind(path, config.control_idle_timeout)
                    .map_err(|e| usage(e.to_string()))?,
            ),
            None => None,
        };
        let events = Mailbox::new().map_err(|e| usage(format!("cannot create an eventfd: {e}")))?;
        let source: Arc<dyn PageSource> = config.snapshot.source.clone();
        #[cfg(feature = "test-hooks")]
        let source: Arc<dyn PageSource> = match config.fail_source_after {
            Some(n) => {
                warn!(
                    reads = n,
                    "test hook: the source fails for good after {n} reads"
                );
                Arc::new(super::fail_source::FailingSource::new(source, n))
            }
            None => source,
        };
        info!(
            snapshot = %config.snapshot.description,
            socket = %config.socket.display(),
            "ready: waiting for a VMM"
        );
        Ok(Daemon {
            config,
            started: Instant::now(),
            listener,
            control,
            metrics,
            signals,
            events,
            source,
            generations_written: 0,
            sessions: 0,
            last_snapshot: None,
            last_stats: None,
        })
    }

    /// Serves VMMs until the mode says stop; the outcome of the last.
    pub(crate) fn run(mut self) -> ExitReport {
        let outcome = self.serve_all();
        if let Some(path) = &self.config.stats_json {
            let mut stats = self
                .last_stats
                .take()
                .unwrap_or_else(|| self.stats_without_vmm("finished"));
            stats.uptime_s = self.started.elapsed().as_secs_f64();
            stats.outcome = Some(OutcomeStats {
                exit_code: outcome.exit.code(),
                reason: outcome.reason.clone(),
            });
            if let Err(e) = stats.write_json(path) {
                error!(path = %path.display(), error = %e, "cannot write --stats-json");
            }
        }
        outcome
    }

    fn serve_all(&mut self) -> ExitReport {
        let mut deadline = self.accept_deadline();
        // The last failed handshake since a VMM was last served: a connection that never
        // completes a handshake (a port scanner, a stray client) does not consume `--once`,
        // and does not restart the accept timeout either.
        let mut failed: Option<String> = None;
        loop {
            let conn = match self.await_vmm(deadline, failed.as_deref()) {
                Awaited::Connection(conn) => conn,
                Awaited::Done(outcome) => return outcome,
            };
            let image_size = self.source.size();
            let handshake = receive_handshake(
                conn,
                self.config.handshake_timeout,
                image_size,
                &self.config.policy,
            );
            let outcome = match handshake {
                Ok(handshake) => match self.serve_vmm(handshake) {
                    (outcome, true) => return outcome,
                    (outcome, false) => outcome,
                },
                Err(e) => {
                    if let Some(json) = e.raw_json() {
                        error!(error = %e, json, "bad handshake; connection closed");
                    } else {
                        error!(error = %e, "bad handshake; connection closed");
                    }
                    failed = Some(format!("handshake failed: {e}"));
                    info!("waiting for the next connection (a failed handshake serves no VMM)");
                    continue;
                }
            };
            if !self.config.keep_listening {
                return outcome;
            }
            info!(outcome = %outcome.reason, "--keep-listening: waiting for the next VMM");
            failed = None;
            deadline = self.accept_deadline();
        }
    }

    /// When waiting for a VMM from now on ends (`--accept-timeout`; `None`: never).
    fn accept_deadline(&self) -> Option<Instant> {
        self.config.accept_timeout.map(|t| Instant::now() + t)
    }

    /// Waits until `deadline` for a VMM to connect, answering signals and control commands
    /// meanwhile. At the deadline the daemon exits: 2 if a handshake failed meanwhile
    /// (`failed`), else 5.
    fn await_vmm(&mut self, deadline: Option<Instant>, failed: Option<&str>) -> Awaited {
        let waited = deadline
            .zip(self.config.accept_timeout)
            .and_then(|(d, t)| d.checked_sub(t))
            .unwrap_or_else(Instant::now);
        loop {
            while let Some(signal) = self.signals.take() {
                if signal.action == SignalAction::Stop {
                    return Awaited::Done(ExitReport::new(
                        DaemonExit::Success,
                        format!("stopped by {} while waiting for a VMM", signal.name),
                    ));
                }
                let stats = self.stats_without_vmm("waiting");
                self.answer_signal(signal, &stats);
            }
            for event in self.events.drain() {
                match event {
                    Message::Control(request) => {
                        if let Some(outcome) = self.control_while_waiting(request) {
                            return Awaited::Done(outcome);
                        }
                    }
                    Message::Scrape(reply) => {
                        let _ = reply.send(Box::new(self.stats_while_waiting()));
                    }
                    Message::Engine(session, exit) => {
                        info!(session, ?exit, "a finished session's engine exit ignored");
                    }
                }
            }
            let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let ready = self.wait(Some(self.listener.as_fd()), timeout);
            if ready.contains(&Ready::Extra) {
                match self.listener.accept(Duration::ZERO) {
                    Ok(conn) => return Awaited::Connection(conn),
                    Err(AcceptError::Timeout { .. }) => {}
                    Err(e) => {
                        return Awaited::Done(ExitReport::new(DaemonExit::Usage, e.to_string()));
                    }
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                let report = match failed {
                    Some(failure) => ExitReport::new(
                        DaemonExit::Handshake,
                        format!(
                            "{failure}; no VMM completed a handshake on {} within \
                             --accept-timeout",
                            self.config.socket.display()
                        ),
                    ),
                    None => ExitReport::new(
                        DaemonExit::AcceptTimeout,
                        format!(
                            "no VMM connected to {} within {:.1?} (--accept-timeout)",
                            self.config.socket.display(),
                            waited.elapsed()
                        ),
                    ),
                };
                return Awaited::Done(report);
            }
        }
    }

    fn control_while_waiting(&mut self, request: ControlRequest) -> Option<ExitReport> {
        match request.command {
            ControlCommand::Stats => {
                request.answer(&self.stats_while_waiting());
                None
            }
            ControlCommand::Snapshot => {
                request.fail("no VMM is being served");
                None
            }
            // Already answered by the connection's thread.
            ControlCommand::Stop => {
                drop(request);
                Some(ExitReport::new(
                    DaemonExit::Success,
                    "stopped by the control socket's stop while waiting for a VMM",
                ))
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

    /// Serves one VMM; the outcome, and whether the daemon must stop (not just this VMM).
    fn serve_vmm(&mut self, handshake: Handshake) -> (ExitReport, bool) {
        let Handshake {
            layout,
            uffd,
            extra_fd,
            peer,
            watch,
            ..
        } = handshake;
        if extra_fd.is_some() {
            info!("a second fd came with the handshake (guest memory); it is not used");
        }
        let pid = peer.pid;
        let uffd = match Uffd::adopt(uffd, Features::EVENT_REMOVE) {
            Ok(uffd) => {
                if uffd.was_blocking() {
                    warn!(
                        pid,
                        "the VMM's userfaultfd was blocking; it is made non-blocking (the flag \
                         is shared with the VMM's copy)"
                    );
                }
                if !uffd.features().contains(Features::EVENT_REMOVE) {
                    warn!(
                        pid,
                        features = ?uffd.features(),
                        "the VMM did not enable UFFD_FEATURE_EVENT_REMOVE: memory the guest \
                         frees through the balloon is not reported, so a freed page touched \
                         again cannot be served as zeros"
                    );
                }
                uffd
            }
            Err(e) => {
                error!(pid, error = %e, "the VMM's fd is not a userfaultfd");
                let reason =
                    format!("handshake failed: the VMM (pid {pid}) sent no userfaultfd: {e}");
                return (ExitReport::new(DaemonExit::Handshake, reason), false);
            }
        };
        let mut engine_config = self.config.engine.clone();
        engine_config.fault_around_pages =
            self.config.fault_around.pages(layout.page_size().bytes());
        let started = Engine::start(uffd, layout, self.source.clone(), engine_config);
        let engine = match started {
            Ok(engine) => engine,
            Err(e) => {
                // Nothing serves the VMM's memory: it would hang on its first fault.
                let reason = format!("the engine could not start: {e}");
                error!(pid, %reason);
                let fate = match self.config.on_fatal {
                    OnFatal::Kill => match watch.kill() {
                        Ok(()) => format!("the VMM (pid {pid}) was killed"),
                        Err(e) => format!("the VMM (pid {pid}) could not be killed: {e}"),
                    },
                    OnFatal::Exit => format!("the VMM (pid {pid}) was left to its owner"),
                };
                return (
                    ExitReport::new(
                        DaemonExit::Fatal,
                        format!("fatal engine error: {reason}; {fate}"),
                    ),
                    true,
                );
            }
        };
        self.sessions += 1;
        info!(
            pid,
            uid = peer.uid,
            session = self.sessions,
            "serving the VMM"
        );
        let forwarding = self
            .events
            .sender()
            .forward_engine_exits(self.sessions, engine.exits().clone());
        let next_generation = self.config.next_generation.clone().map(|dir| {
            NextGeneration::new(dir, self.config.parent_files, &self.config.snapshot.source)
        });
        let plan = SessionPlan {
            id: self.sessions,
            prefetch_mode: self.config.prefetch,
            prefetch: self.prefetch_order(),
            next_generation,
            record_working_set: self.config.record_working_set.clone(),
        };
        let session = Session::new(engine, watch, peer, plan);
        if let Err(e) = forwarding {
            let fatal = FatalError {
                page_offset: None,
                reason: format!("cannot watch the engine: {e}"),
                errors: Vec::new(),
            };
            return (self.fatal(session, &fatal), true);
        }
        self.serve_session(session)
    }

    fn prefetch_order(&self) -> Option<Vec<Range<u64>>> {
        let all = 0..self.source.size();
        match self.config.prefetch {
            PrefetchMode::None => None,
            PrefetchMode::All => Some(vec![all]),
            PrefetchMode::WorkingSet => {
                let mut order = self.config.working_set.clone();
                order.push(all);
                Some(order)
            }
        }
    }

    fn serve_session(&mut self, mut session: Session) -> (ExitReport, bool) {
        let mut gone_since: Option<Instant> = None;
        loop {
            for event in self.events.drain() {
                match event {
                    Message::Engine(id, exit) if id != self.sessions => {
                        info!(
                            session = id,
                            ?exit,
                            "a finished session's engine exit ignored"
                        );
                    }
                    Message::Engine(_, EngineExit::Fatal(fatal)) => {
                        return (self.fatal(session, &fatal), true);
                    }
                    Message::Engine(_, EngineExit::VmmGone) => {
                        info!(pid = session.pid(), "the VMM's memory is gone (ESRCH)");
                        gone_since.get_or_insert_with(Instant::now);
                    }
                    Message::Control(request) => match request.command {
                        ControlCommand::Stats => {
                            let stats = self.session_stats(&session, "serving");
                            request.answer(&stats);
                        }
                        ControlCommand::Snapshot => self.snapshot(&mut session, request),
                        ControlCommand::Stop => {
                            drop(request);
                            return (
                                self.graceful_stop(session, "the control socket's stop"),
                                true,
                            );
                        }
                    },
                    Message::Scrape(reply) => {
                        let _ = reply.send(Box::new(self.session_stats(&session, "serving")));
                    }
                }
            }
            while let Some(signal) = self.signals.take() {
                if signal.action == SignalAction::Stop {
                    return (self.graceful_stop(session, signal.name), true);
                }
                let stats = self.session_stats(&session, "serving");
                self.answer_signal(signal, &stats);
            }
            if session.vmm_exited() {
                return (self.vmm_exited(session), false);
            }
            if let Some(since) = gone_since {
                // ESRCH: the memory is gone, the process is on its way out.
                if session.pidfd().is_none() || since.elapsed() >= GONE_GRACE {
                    return (self.vmm_exited(session), false);
                }
            }
            let timeout = match gone_since {
                Some(since) => Some(GONE_GRACE.saturating_sub(since.elapsed())),
                None => session.sample_first_fault(),
            };
            // A session without a pidfd learns of the VMM's end only from the engine.
            let pidfd = session.pidfd();
            self.wait(pidfd, timeout);
        }
    }

    /// Answers a signal that does not stop the daemon.
    fn answer_signal(&self, signal: Received, stats: &Stats) {
        match signal.action {
            SignalAction::StatsTable => {
                let mut table = Vec::new();
                if stats.write_table(&mut table).is_ok() {
                    eprint!("{}", String::from_utf8_lossy(&table));
                }
            }
            SignalAction::StatsJson => match serde_json::to_string(stats) {
                Ok(line) => eprintln!("{line}"),
                Err(e) => error!(error = %e, "cannot encode the statistics"),
            },
            SignalAction::Ignore => info!(
                signal = signal.name,
                "ignored: the daemon logs to stderr, there is nothing to reopen"
            ),
            SignalAction::Stop => {}
        }
    }

    /// Polls the signals, the events, the control socket and `extra`; accepts control
    /// connections. Returns which of them are ready.
    fn wait(&self, extra: Option<BorrowedFd<'_>>, timeout: Option<Duration>) -> Vec<Ready> {
        let mut fds = vec![
            PollFd::new(&self.signals, PollFlags::IN),
            PollFd::new(&self.events, PollFlags::IN),
        ];
        let mut kinds = vec![Ready::Signal, Ready::Mailbox];
        if let Some(control) = &self.control {
            fds.push(PollFd::new(control, PollFlags::IN));
            kinds.push(Ready::Control);
        }
        if let Some(metrics) = &self.metrics {
            fds.push(PollFd::new(metrics, PollFlags::IN));
            kinds.push(Ready::Metrics);
        }
        if let Some(fd) = extra {
            fds.push(PollFd::from_borrowed_fd(fd, PollFlags::IN));
            kinds.push(Ready::Extra);
        }
        let timeout = timeout
            .map(|t| Timespec::try_from(t.min(Duration::from_secs(86_400))).expect("a day fits"));
        if let Err(e) = poll(&mut fds, timeout.as_ref())
            && e != rustix::io::Errno::INTR
        {
            warn!(error = %e, "poll failed");
        }
        let ready: Vec<Ready> = fds
            .iter()
            .zip(kinds)
            .filter(|(fd, _)| !fd.revents().is_empty())
            .map(|(_, kind)| kind)
            .collect();
        if ready.contains(&Ready::Control)
            && let Some(control) = &self.control
        {
            control.accept_pending(&self.events.sender());
        }
        if ready.contains(&Ready::Metrics)
            && let Some(metrics) = &self.metrics
        {
            metrics.accept_pending(&self.events.sender());
        }
        ready
    }

    fn snapshot(&mut self, session: &mut Session, request: ControlRequest) {
        match session.snapshot() {
            None => request.fail("no --next-generation directory was given"),
            Some(Ok(summary)) => {
                self.generations_written += 1;
                self.last_snapshot = Some(summary.clone());
                request.answer(&summary);
            }
            Some(Err(e)) => {
                error!(error = %e, "snapshot failed");
                request.fail(&e.to_string());
            }
        }
    }
}

/// Which polled fd was ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ready {
    Signal,
    Mailbox,
    Control,
    /// The metrics endpoint.
    Metrics,
    /// The listener or the VMM's pidfd.
    Extra,
}
