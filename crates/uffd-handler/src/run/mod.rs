//! The daemon's lifecycle: bind, accept VMMs, take each one's handshake (on its own thread),
//! serve each with its own engine until it exits (or a fatal error, a signal or `stop`),
//! report.
//!
//! One thread (this one) owns every decision. It polls the signals' signalfd, each VMM's
//! pidfd, the listener, the control socket and an eventfd that engine exits, handshakes and
//! control commands wake.

mod ending;
mod figures;
mod serving;
mod start;

use std::ops::Range;
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
use super::stats::{
    OutcomeStats, PageCounts, PrefetchAccuracy, PrefetchStats, Stats, StoreFigures, VmmStats,
};
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
    /// The VMMs being served, oldest first.
    live: Vec<Live>,
    /// Handshakes being received on their own threads.
    handshakes: usize,
}

/// A VMM being served, and since when its memory is known gone (ESRCH), if it is.
struct Live {
    session: Session,
    gone_since: Option<Instant>,
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
        let source = config.snapshot.source.clone();
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
            live: Vec::new(),
            handshakes: 0,
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

    /// Answers a signal that does not stop the daemon.
    fn answer_signal(&self, signal: Received, stats: &Stats) {
        match signal.action {
            SignalAction::StatsTable => {
                // Several VMMs: one table each.
                let tables = if stats.sessions.is_empty() {
                    std::slice::from_ref(stats)
                } else {
                    &stats.sessions[..]
                };
                let mut text = Vec::new();
                for table in tables {
                    if table.write_table(&mut text).is_err() {
                        return;
                    }
                }
                eprint!("{}", String::from_utf8_lossy(&text));
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

    /// Polls the signals, the events, the control socket, the metrics endpoint, the listener
    /// (if `accepting`) and every VMM's pidfd; accepts control and scrape connections.
    /// Whether the listener has a connection waiting.
    fn wait(&self, accepting: bool, timeout: Option<Duration>) -> bool {
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
        if accepting {
            fds.push(PollFd::new(&self.listener, PollFlags::IN));
            kinds.push(Ready::Listener);
        }
        for pidfd in self.live.iter().filter_map(|l| l.session.pidfd()) {
            fds.push(PollFd::from_borrowed_fd(pidfd, PollFlags::IN));
            kinds.push(Ready::Pidfd);
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
        ready.contains(&Ready::Listener)
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
    /// The VMM socket's listener.
    Listener,
    /// A VMM's pidfd.
    Pidfd,
}
