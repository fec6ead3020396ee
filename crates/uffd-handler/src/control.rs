//! The control socket: a Unix stream socket (mode 0600, this uid and root only) taking one
//! command per line and answering each with one JSON line.
//!
//! | command | answer |
//! |---|---|
//! | `stats` | the statistics ([`super::stats::Stats`]) |
//! | `snapshot` | a [`super::generation::SnapshotSummary`] once generation N+1 is written |
//! | `stop` | `{"stopping":true}` at once, then a graceful stop per `--on-signal` |
//!
//! Any failure is `{"error":"..."}`. Each connection has its own thread, which hands the
//! command to the main loop and writes back its answer.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_channel::{Sender, bounded};
use tracing::{debug, info, warn};

use super::mailbox::{MailboxSender, Message};
pub(crate) use crate::parse::ControlCommand;
use rustix::net::SocketFlags;
use uffd_handshake::{BoundSocket, peer_credentials};

/// Longest command line accepted.
const MAX_LINE: u64 = 4096;

/// A command on its way to the main loop, with where to send the answer line.
#[derive(Debug)]
pub(crate) struct ControlRequest {
    /// What was asked.
    pub(crate) command: ControlCommand,
    /// Where the JSON answer goes.
    pub(crate) reply: Sender<String>,
}

impl ControlRequest {
    /// Answers with `value` as one JSON line.
    pub(crate) fn answer(self, value: &impl serde::Serialize) {
        let line = serde_json::to_string(value)
            .unwrap_or_else(|e| error_line(&format!("cannot encode the answer: {e}")));
        let _ = self.reply.send(line);
    }

    /// Answers with an error.
    pub(crate) fn fail(self, message: &str) {
        let _ = self.reply.send(error_line(message));
    }
}

fn error_line(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

/// Why the control socket could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("--control {}: {message}", path.display())]
pub(crate) struct ControlError {
    /// The path.
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
}

/// The listening control socket; its file is removed on drop (if it is still ours).
#[derive(Debug)]
pub(crate) struct ControlSocket {
    socket: BoundSocket,
    /// Connections being served now.
    active: Arc<AtomicUsize>,
    idle_timeout: Duration,
}

/// Control connections served at once; more are refused with an error line.
pub(crate) const MAX_CONTROL_CONNECTIONS: usize = 16;

impl ControlSocket {
    /// Binds `path` reachable by this uid only, created with mode 0600 in place; a socket
    /// another daemon listens on, or another user's, is never replaced.
    pub(crate) fn bind(path: &Path, idle_timeout: Duration) -> Result<Self, ControlError> {
        let fail = |message: String| ControlError {
            path: path.to_path_buf(),
            message,
        };
        let socket = BoundSocket::bind(path, 0o600, None).map_err(|e| fail(e.to_string()))?;
        rustix::net::listen(&socket, 16).map_err(|e| fail(format!("listening: {e}")))?;
        info!(path = %path.display(), "control socket listening");
        Ok(ControlSocket {
            socket,
            active: Arc::default(),
            idle_timeout,
        })
    }

    /// Accepts every pending connection, each served on its own thread.
    pub(crate) fn accept_pending(&self, events: &MailboxSender) {
        loop {
            let accepted = rustix::net::accept_with(&self.socket, SocketFlags::CLOEXEC)
                .map(UnixStream::from)
                .map_err(std::io::Error::from);
            match accepted {
                Ok(mut conn) => {
                    // Counted here, released by the connection's thread when it ends.
                    if self.active.fetch_add(1, Ordering::AcqRel) >= MAX_CONTROL_CONNECTIONS {
                        self.active.fetch_sub(1, Ordering::AcqRel);
                        let busy = error_line(&format!(
                            "too many control connections ({MAX_CONTROL_CONNECTIONS} are served \
                             at once); try again"
                        ));
                        let _ = conn.set_nonblocking(true);
                        let _ = send_line(&mut conn, &busy);
                        continue;
                    }
                    let events = events.clone();
                    let active = self.active.clone();
                    let idle_timeout = self.idle_timeout;
                    let spawned = std::thread::Builder::new()
                        .name("control-conn".into())
                        .spawn(move || {
                            serve_connection(conn, &events, idle_timeout);
                            active.fetch_sub(1, Ordering::AcqRel);
                        });
                    if let Err(e) = spawned {
                        self.active.fetch_sub(1, Ordering::AcqRel);
                        warn!(error = %e, "cannot serve a control connection");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    warn!(error = %e, "accepting a control connection failed");
                    return;
                }
            }
        }
    }
}

impl AsFd for ControlSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

fn serve_connection(conn: UnixStream, events: &MailboxSender, idle_timeout: Duration) {
    let own = rustix::process::geteuid().as_raw();
    match peer_credentials(&conn) {
        Ok(peer) if peer.uid == own || peer.uid == 0 => {}
        Ok(peer) => {
            warn!(
                uid = peer.uid,
                pid = peer.pid,
                "control connection from another uid refused"
            );
            return;
        }
        Err(e) => {
            warn!(error = %e, "control connection without credentials refused");
            return;
        }
    }
    let _ = conn.set_nonblocking(false);
    // An idle connection is closed: it holds one of the few connection slots.
    let _ = conn.set_read_timeout((!idle_timeout.is_zero()).then_some(idle_timeout));
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut lines = BufReader::new(conn);
    loop {
        let mut line = String::new();
        match (&mut lines).take(MAX_LINE).read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let command = match ControlCommand::parse(&line) {
            Ok(Some(command)) => command,
            Ok(None) => continue,
            Err(message) => {
                if send_line(&mut out, &error_line(&message)).is_err() {
                    return;
                }
                continue;
            }
        };
        debug!(?command, "control command");
        if command == ControlCommand::Stop {
            // Answered before the main loop hears of it: once it does, the process may exit.
            let _ = send_line(
                &mut out,
                &serde_json::json!({ "stopping": true }).to_string(),
            );
            let (reply, _) = bounded(1);
            events.send(Message::Control(ControlRequest { command, reply }));
            continue;
        }
        let (reply, answer) = bounded(1);
        let sent = events.send(Message::Control(ControlRequest { command, reply }));
        let answer = match sent.then(|| answer.recv().ok()).flatten() {
            Some(answer) => answer,
            None => error_line("the daemon is exiting"),
        };
        if send_line(&mut out, &answer).is_err() {
            return;
        }
    }
}

/// Writes `line` and its newline with one `write(2)`, so a client that reads once gets a whole
/// line (formatting machinery writes in pieces).
fn send_line(out: &mut UnixStream, line: &str) -> std::io::Result<()> {
    let mut whole = String::with_capacity(line.len() + 1);
    whole.push_str(line);
    whole.push('\n');
    out.write_all(whole.as_bytes())
}
