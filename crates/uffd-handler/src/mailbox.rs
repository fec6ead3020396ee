//! What the main loop hears from other threads (the engine's exit, control requests,
//! scrapes): a
//! channel plus an eventfd the main loop polls with its other fds.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, unbounded};
use rustix::event::{EventfdFlags, eventfd};

use super::control::ControlRequest;
use super::stats::Stats;
use uffd_engine::EngineExit;
use uffd_handshake::{Handshake, HandshakeError};

/// A message for the main loop.
#[derive(Debug)]
pub(crate) enum Message {
    /// The engine of session `.0` (the daemon's count of VMMs served) stopped serving on its
    /// own. An earlier session's engine may report late; the session number tells.
    Engine(u64, EngineExit),
    /// A control socket command.
    Control(ControlRequest),
    /// A scrape of the metrics endpoint: the statistics of this moment go back on the channel.
    Scrape(Sender<Box<Stats>>),
    /// A connection's handshake, received on its own thread (so a slow or silent client never
    /// holds up the VMMs being served).
    Handshake(Box<Result<Handshake, HandshakeError>>),
}

/// The main loop's end: poll [`Mailbox::as_fd`], then [`Mailbox::drain`].
#[derive(Debug)]
pub(crate) struct Mailbox {
    rx: Receiver<Message>,
    sender: MailboxSender,
}

/// Another thread's end.
#[derive(Debug, Clone)]
pub(crate) struct MailboxSender {
    tx: Sender<Message>,
    wake: Arc<OwnedFd>,
}

impl Mailbox {
    /// A new queue.
    pub(crate) fn new() -> std::io::Result<Self> {
        let wake = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        let (tx, rx) = unbounded();
        Ok(Mailbox {
            rx,
            sender: MailboxSender {
                tx,
                wake: Arc::new(wake),
            },
        })
    }

    /// A sender for another thread.
    pub(crate) fn sender(&self) -> MailboxSender {
        self.sender.clone()
    }

    /// Every event queued so far. Resets the eventfd first, so an event sent after the
    /// drain makes it readable again.
    pub(crate) fn drain(&self) -> Vec<Message> {
        let mut count = [0u8; 8];
        let _ = rustix::io::read(&*self.sender.wake, &mut count);
        self.rx.try_iter().collect()
    }
}

impl AsFd for Mailbox {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sender.wake.as_fd()
    }
}

impl MailboxSender {
    /// Queues `event` and wakes the main loop; false once the main loop is gone.
    pub(crate) fn send(&self, event: Message) -> bool {
        if self.tx.send(event).is_err() {
            return false;
        }
        let _ = rustix::io::write(&*self.wake, &1u64.to_ne_bytes());
        true
    }

    /// Forwards the exit reason of session `session`'s engine (from its channel) to the main
    /// loop, on a thread that ends when the engine's channel closes.
    pub(crate) fn forward_engine_exits(
        &self,
        session: u64,
        exits: Receiver<EngineExit>,
    ) -> std::io::Result<()> {
        let sender = self.clone();
        std::thread::Builder::new()
            .name("engine-exits".into())
            .spawn(move || {
                if let Ok(exit) = exits.recv() {
                    sender.send(Message::Engine(session, exit));
                }
            })
            .map(drop)
    }
}
