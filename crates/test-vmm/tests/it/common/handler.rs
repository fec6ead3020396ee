//! A minimal handler for the vmm tests: serves faults by COPY from the image (zeros for
//! removed pages), applies each batch's REMOVEs first, logs REMOVEs as image ranges.

use std::collections::HashSet;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use rustix::event::{EventfdFlags, PollFd, PollFlags, Timespec};
use uffd_core::{CopyMode, Event, EventBuffer, Features, PageSize, Range, Status, Uffd};

use super::{Handshake, WireRegion, image_bytes};

/// The serving thread and what it observed.
pub struct TestHandler {
    /// The adopted uffd.
    pub uffd: Arc<Uffd>,
    stop: Arc<OwnedFd>,
    ping: Arc<OwnedFd>,
    pong: Receiver<()>,
    thread: Option<JoinHandle<()>>,
    removes: Receiver<(u64, u64)>,
    installed: Arc<AtomicU64>,
}

struct Served {
    uffd: Arc<Uffd>,
    regions: Vec<WireRegion>,
    page: u64,
    seed: u64,
    removed: Mutex<HashSet<u64>>,
    removes: Sender<(u64, u64)>,
    installed: Arc<AtomicU64>,
    pong: Sender<()>,
}

impl TestHandler {
    /// Adopts the handshake's uffd and serves it from the image with `seed`; `page` is the
    /// page size in bytes.
    pub fn serve(handshake: &Handshake, seed: u64, page: u64) -> Self {
        assert_eq!(handshake.fds.len(), 1, "exactly one fd");
        let fd = handshake.fds[0].try_clone().expect("dup the uffd");
        let uffd = Arc::new(Uffd::adopt(fd, Features::EVENT_REMOVE).expect("adopt"));
        let stop = Arc::new(rustix::event::eventfd(0, EventfdFlags::CLOEXEC).expect("eventfd"));
        let (tx, removes) = crossbeam_channel::unbounded();
        let installed = Arc::new(AtomicU64::new(0));
        let ping = Arc::new(rustix::event::eventfd(0, EventfdFlags::CLOEXEC).expect("eventfd"));
        let (pong_tx, pong) = crossbeam_channel::unbounded();
        let served = Served {
            uffd: Arc::clone(&uffd),
            regions: handshake.regions.clone(),
            page,
            seed,
            removed: Mutex::default(),
            removes: tx,
            installed: Arc::clone(&installed),
            pong: pong_tx,
        };
        let (stop2, ping2) = (Arc::clone(&stop), Arc::clone(&ping));
        let thread = std::thread::spawn(move || served.run(&stop2, &ping2));
        TestHandler {
            uffd,
            stop,
            ping,
            pong,
            thread: Some(thread),
            removes,
            installed,
        }
    }

    /// The next `n` REMOVEs, as image ranges `(offset, len)`, waiting for each (the handler
    /// logs one just after reading it, which is also what lets the madvise return, so the log
    /// may lag the madvise's answer), then checks that no other was logged.
    pub fn removes(&self, n: usize) -> Vec<(u64, u64)> {
        let got: Vec<(u64, u64)> = (0..n)
            .map(|i| {
                self.removes
                    .recv_timeout(super::TIMEOUT)
                    .unwrap_or_else(|e| panic!("REMOVE {i} of {n} not seen: {e}"))
            })
            .collect();
        let extra: Vec<(u64, u64)> = self.removes.try_iter().collect();
        assert!(
            extra.is_empty(),
            "unexpected REMOVEs {extra:?} after {got:?}"
        );
        got
    }

    /// Pages installed by COPY so far, counting every COPY that woke a thread before this
    /// call (the serving thread answers a ping only between batches).
    pub fn installed(&self) -> u64 {
        rustix::io::write(&*self.ping, &1u64.to_ne_bytes()).expect("ping");
        self.pong
            .recv_timeout(super::TIMEOUT)
            .expect("the handler answers pings");
        self.installed.load(Ordering::SeqCst)
    }
}

impl Drop for TestHandler {
    fn drop(&mut self) {
        let _ = rustix::io::write(&*self.stop, &1u64.to_ne_bytes());
        if let Some(thread) = self.thread.take() {
            let result = thread.join();
            if !std::thread::panicking() {
                result.expect("the test handler panicked");
            }
        }
    }
}

impl Served {
    fn offset_of(&self, addr: u64) -> u64 {
        let r = self
            .regions
            .iter()
            .find(|r| addr >= r.base_host_virt_addr && addr < r.base_host_virt_addr + r.size)
            .unwrap_or_else(|| panic!("address {addr:#x} is in no region"));
        r.offset + (addr - r.base_host_virt_addr)
    }

    fn run(&self, stop: &OwnedFd, ping: &OwnedFd) {
        let mut buf = EventBuffer::new(64);
        let mut retry: Vec<u64> = Vec::new();
        let size = PageSize::from_bytes(self.page).expect("page size");
        loop {
            // With faults to retry after EAGAIN, come back soon even if nothing new arrives.
            let pace = Timespec::try_from(Duration::from_millis(1)).unwrap();
            let mut fds = [
                PollFd::new(&*self.uffd, PollFlags::IN),
                PollFd::new(stop, PollFlags::IN),
                PollFd::new(ping, PollFlags::IN),
            ];
            match rustix::event::poll(&mut fds, (!retry.is_empty()).then_some(&pace)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => panic!("poll: {e}"),
            }
            if fds[1].revents().contains(PollFlags::IN) {
                return;
            }
            if fds[2].revents().contains(PollFlags::IN) {
                let mut count = [0; 8];
                rustix::io::read(ping, &mut count).expect("read the ping");
                for _ in 0..u64::from_ne_bytes(count) {
                    let _ = self.pong.send(());
                }
            }
            let events: Vec<Event> = self.uffd.read_events(&mut buf).expect("read").collect();
            for event in &events {
                if let Event::Remove { start, end } = event {
                    let offset = self.offset_of(*start);
                    let mut removed = self.removed.lock().unwrap();
                    removed.extend((offset..offset + (end - start)).step_by(self.page as usize));
                    let _ = self.removes.send((offset, end - start));
                }
            }
            let faults = events.iter().filter_map(|e| match e {
                Event::PageFault(f) => Some(size.align_down(f.address)),
                _ => None,
            });
            let todo: Vec<u64> = retry.drain(..).chain(faults).collect();
            for addr in todo {
                let offset = self.offset_of(addr);
                let bytes = if self.removed.lock().unwrap().contains(&offset) {
                    vec![0; self.page as usize]
                } else {
                    image_bytes(self.seed, offset, self.page)
                };
                let range = Range::new(addr, self.page, size).unwrap();
                let outcome = self.uffd.copy(range, &bytes, CopyMode::empty());
                match outcome.status {
                    Status::Complete => {
                        self.installed.fetch_add(1, Ordering::SeqCst);
                    }
                    Status::Exists => {
                        let _ = self.uffd.wake(range);
                    }
                    Status::Again => retry.push(addr),
                    Status::Gone => return,
                    _ => panic!("COPY at {addr:#x}: {outcome:?}"),
                }
            }
        }
    }
}
