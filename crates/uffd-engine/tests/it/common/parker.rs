//! Parks an engine thread at a named hook point, deterministically, until the test releases it.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, bounded};
use parking_lot::Mutex;
use uffd_engine::{Hook, HookPoint};

/// One parking spot: the first thread to reach `point` for the page at `page_offset` (and,
/// if given, whose name starts with `thread_prefix`) parks there.
pub struct Parker {
    parked: Receiver<()>,
    release: Sender<()>,
}

struct Spot {
    point: HookPoint,
    page_offset: u64,
    thread_prefix: Option<&'static str>,
    armed: Mutex<bool>,
    parked: Sender<()>,
    release: Receiver<()>,
}

impl Parker {
    /// A hook parking the first matching thread, and the handle that waits for and releases it.
    pub fn new(
        point: HookPoint,
        page_offset: u64,
        thread_prefix: Option<&'static str>,
    ) -> (Hook, Parker) {
        let (parked_tx, parked_rx) = bounded(1);
        let (release_tx, release_rx) = bounded(1);
        let spot = Arc::new(Spot {
            point,
            page_offset,
            thread_prefix,
            armed: Mutex::new(true),
            parked: parked_tx,
            release: release_rx,
        });
        let hook: Hook = Arc::new(move |point, page_offset| {
            if point != spot.point || page_offset != spot.page_offset {
                return;
            }
            if let Some(prefix) = spot.thread_prefix
                && !std::thread::current()
                    .name()
                    .unwrap_or("")
                    .starts_with(prefix)
            {
                return;
            }
            {
                let mut armed = spot.armed.lock();
                if !*armed {
                    return;
                }
                *armed = false;
            }
            spot.parked.send(()).unwrap();
            spot.release.recv().unwrap();
        });
        (
            hook,
            Parker {
                parked: parked_rx,
                release: release_tx,
            },
        )
    }

    /// Waits until a thread is parked (fails the test after 10 s).
    pub fn wait_parked(&self) {
        self.parked
            .recv_timeout(Duration::from_secs(10))
            .expect("no thread reached the hook point");
    }

    /// Lets the parked thread go on.
    pub fn release(&self) {
        self.release.send(()).unwrap();
    }
}

/// Combines hooks: each runs in turn.
pub fn all(hooks: Vec<Hook>) -> Hook {
    Arc::new(move |point, offset| {
        for hook in &hooks {
            hook(point, offset);
        }
    })
}
