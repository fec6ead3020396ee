//! From a connection to a VMM being served: the handshake on its own thread, the limit on VMMs
//! served at once, adopting the uffd, and the session's engine.

use super::*;

impl Daemon {
    /// Receives the handshake on `conn` on its own thread; the result comes back through the
    /// mailbox.
    pub(super) fn receive_handshake(&mut self, conn: UnixStream) {
        let timeout = self.config.handshake_timeout;
        let image_size = self.source.size();
        let policy = self.config.policy.clone();
        let events = self.events.sender();
        let spawned = std::thread::Builder::new()
            .name("handshake".into())
            .spawn(move || {
                let received = receive_handshake(conn, timeout, image_size, &policy);
                events.send(Message::Handshake(Box::new(received)));
            });
        match spawned {
            Ok(_) => self.handshakes += 1,
            // The connection went with the closure: closed, as for a failed handshake.
            Err(e) => error!(error = %e, "cannot receive a handshake; connection closed"),
        }
    }

    /// Starts serving the VMM of `handshake`; its outcome if its session ended at once (the fd
    /// is not a userfaultfd, the engine could not start). A VMM beyond `--max-vmms` is refused.
    pub(super) fn start_session(&mut self, handshake: Handshake) -> Option<ExitReport> {
        let Handshake {
            layout,
            uffd,
            extra_fd,
            peer,
            watch,
            ..
        } = handshake;
        let pid = peer.pid;
        if self.live.len() >= self.config.max_vmms {
            // Nothing will serve its memory: like a VMM whose engine cannot start, it is
            // killed (or left to its owner), never fed zeros. The others are served on.
            let fate = match self.config.on_fatal {
                OnFatal::Kill => match watch.kill() {
                    Ok(()) => "killed (--on-fatal kill)".to_string(),
                    Err(e) => format!("could not be killed: {e}"),
                },
                OnFatal::Exit => "left to its owner (--on-fatal exit)".to_string(),
            };
            error!(
                pid,
                uid = peer.uid,
                serving = self.live.len(),
                "VMM refused: {} VMMs are being served (--max-vmms {}); it was {fate}",
                self.live.len(),
                self.config.max_vmms,
            );
            return None;
        }
        if extra_fd.is_some() {
            info!("a second fd came with the handshake (guest memory); it is not used");
        }
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
                return Some(ExitReport::new(DaemonExit::Handshake, reason));
            }
        };
        let mut engine_config = self.config.engine.clone();
        engine_config.fault_around_pages =
            self.config.fault_around.pages(layout.page_size().bytes());
        let engine = match Engine::start(uffd, layout, self.source.clone(), engine_config) {
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
                return Some(ExitReport::new(
                    DaemonExit::Fatal,
                    format!("fatal engine error: {reason}; {fate}"),
                ));
            }
        };
        self.sessions += 1;
        let id = self.sessions;
        info!(
            pid,
            uid = peer.uid,
            session = id,
            serving = self.live.len() + 1,
            "serving the VMM"
        );
        let forwarding = self
            .events
            .sender()
            .forward_engine_exits(id, engine.exits().clone());
        // Config refuses --next-generation for a snapshot that is not local.
        let next_generation = self
            .config
            .next_generation
            .clone()
            .zip(self.config.snapshot.local_source())
            .map(|(dir, source)| NextGeneration::new(dir, self.config.parent_files, source));
        let plan = SessionPlan {
            id,
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
            return Some(self.fatal(session, &fatal));
        }
        self.live.push(Live {
            session,
            gone_since: None,
        });
        None
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
}
