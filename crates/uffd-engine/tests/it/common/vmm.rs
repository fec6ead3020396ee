//! The engine serving a VMM process: `test-vmm` owns the guest memory and the uffd as
//! Firecracker does, hands them over through the real handshake server, and the engine serves
//! it from an image file. Plus a byte model of the guest memory and the hugepage check.
//!
//! Included by the `engine_peer*` and `engine_soak` tests as `#[path = "common/vmm.rs"] mod
//! vmm;` beside `mod common;`.

#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use snapshot_format::LayeredSource;
use test_vmm::{BLOCK, VmmConfig, VmmProcess};
use uffd_core::{Features, PageSize, Uffd};
use uffd_engine::{CloseWhen, Engine, EngineConfig, PageSource};
use uffd_handshake::{HandshakeListener, PeerPolicy, PeerWatch, open_pidfd, receive_handshake};

use crate::common::pattern;

pub use test_support::{MIB, TIMEOUT, TestDir, hugepages_or_skip};

/// The guest's page size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pages {
    /// 4 KiB anonymous pages.
    Base,
    /// 2 MiB hugetlbfs pages.
    Huge,
}

impl Pages {
    /// Bytes per page.
    pub fn bytes(self) -> u64 {
        self.size().bytes()
    }

    /// As a uffd page size.
    pub fn size(self) -> PageSize {
        match self {
            Pages::Base => PageSize::Base4K,
            Pages::Huge => PageSize::Huge2M,
        }
    }
}

/// A vmm served by the engine. Fields drop in order: the vmm is killed and reaped first,
/// then the engine stops.
pub struct Served {
    /// The VMM.
    pub vmm: VmmProcess,
    /// The engine serving it.
    pub engine: Engine,
    /// The vmm's liveness (holds the handshake connection open, as a v1.12+ VMM expects).
    pub watch: PeerWatch,
    /// The guest's page size in bytes.
    pub page: u64,
    /// The image size in bytes.
    pub size: u64,
    /// The socket and the image file.
    pub dir: TestDir,
}

impl Served {
    /// The guest's pages.
    pub fn pages(&self) -> u64 {
        self.size / self.page
    }

    /// Asserts the engine never stopped on its own, then closes it the owner's way: kill the
    /// vmm through its pidfd, wait for it, unregister, close.
    pub fn finish(self) {
        if let Ok(exit) = self.engine.exits().try_recv() {
            panic!("the engine stopped serving: {exit:?}");
        }
        assert_eq!(self.engine.metrics().fatal, 0);
        let pid = i32::try_from(self.vmm.pid()).expect("pid");
        let pidfd = open_pidfd(pid).expect("pidfd of the vmm");
        self.engine
            .close(CloseWhen::KillVmm { pidfd })
            .expect("close");
        drop(self.vmm);
    }
}

/// The image bytes ([`pattern`]) of `size` bytes, computed once per size.
pub fn image_bytes(size: u64) -> Arc<Vec<u8>> {
    static CACHE: Mutex<Vec<Arc<Vec<u8>>>> = Mutex::new(Vec::new());
    let mut cache = CACHE.lock().expect("image cache");
    if let Some(image) = cache.iter().find(|i| i.len() as u64 == size) {
        return image.clone();
    }
    let image = Arc::new((0..size).map(pattern).collect::<Vec<u8>>());
    cache.push(image.clone());
    image
}

/// A memory image file of `size` bytes filled with [`pattern`] in `dir`, and a source over it.
pub fn image_in(dir: &TestDir, size: u64) -> Arc<LayeredSource> {
    let path = dir.join("memory");
    std::fs::write(&path, &**image_bytes(size)).expect("write the image");
    Arc::new(LayeredSource::open_memory_file(&path, BLOCK).expect("open the image"))
}

/// Spawns a vmm with `regions` of `pages`, accepts its handshake, and starts the engine on
/// an image of the vmm's size.
pub fn serve(test: &str, pages: Pages, regions: Vec<u64>, config: EngineConfig) -> Served {
    serve_with(test, pages, regions, config, |s| s)
}

/// [`serve`] with the image source wrapped by `wrap` (a failing source, a recorder).
pub fn serve_with(
    test: &str,
    pages: Pages,
    regions: Vec<u64>,
    config: EngineConfig,
    wrap: impl FnOnce(Arc<dyn PageSource>) -> Arc<dyn PageSource>,
) -> Served {
    serve_from(test, pages, regions, config, |dir, size| {
        wrap(image_in(dir, size))
    })
}

/// [`serve`] with the source made by `open` from the test directory and the image size
/// (e.g. an image read through a FUSE mount).
pub fn serve_from(
    test: &str,
    pages: Pages,
    regions: Vec<u64>,
    config: EngineConfig,
    open: impl FnOnce(&TestDir, u64) -> Arc<dyn PageSource>,
) -> Served {
    let dir = TestDir::new(test);
    let socket = dir.join("h.sock");
    let listener = HandshakeListener::bind(&socket, None).expect("bind the handshake socket");
    let mut vmm_config = VmmConfig::new(test_vmm::binary(), &socket, regions).timeout(TIMEOUT);
    if pages == Pages::Huge {
        vmm_config = vmm_config.hugetlb();
    }
    let vmm = VmmProcess::spawn(vmm_config).expect("spawn the vmm");
    let size = vmm.image_size();
    let conn = listener.accept(TIMEOUT).expect("the vmm connects");
    let handshake =
        receive_handshake(conn, TIMEOUT, size, &PeerPolicy::any()).expect("the handshake");
    assert_eq!(handshake.layout.page_size(), pages.size());
    assert_eq!(
        u32::try_from(handshake.peer.pid).ok(),
        Some(vmm.pid()),
        "the handshake came from the vmm"
    );
    let uffd = Uffd::adopt(handshake.uffd, Features::EVENT_REMOVE).expect("adopt the uffd");
    let source = open(&dir, size);
    let engine = Engine::start(uffd, handshake.layout, source, config).expect("start the engine");
    Served {
        vmm,
        engine,
        watch: handshake.watch,
        page: pages.bytes(),
        size,
        dir,
    }
}

/// Whether the vmm's pidfd says it exited within `timeout`.
pub fn exited_within(watch: &PeerWatch, timeout: Duration) -> bool {
    watch.pidfd().is_some_and(|fd| {
        let mut fds = [rustix::event::PollFd::new(
            &fd,
            rustix::event::PollFlags::IN,
        )];
        let timeout = rustix::event::Timespec::try_from(timeout).expect("timeout");
        matches!(rustix::event::poll(&mut fds, Some(&timeout)), Ok(n) if n > 0)
    })
}

/// The expected bytes of guest memory.
pub use test_vmm::GuestModel as Model;

/// The snapshot image ([`pattern`]) of `size` bytes.
pub fn model_image(size: u64, page: u64) -> Model {
    Model::new(image_bytes(size).to_vec(), page)
}

pub use test_vmm::{assert_hashes, assert_hashes_in};

/// Asserts the engine reported the VMM gone (ESRCH) once and nothing fatal, then closes it.
pub fn assert_vmm_gone_and_close(s: Served) {
    let exit = s
        .engine
        .exits()
        .recv_timeout(TIMEOUT)
        .expect("no exit signal after ESRCH");
    assert_eq!(exit, uffd_engine::EngineExit::VmmGone);
    assert!(s.engine.exits().try_recv().is_err(), "one exit signal");
    let m = s.engine.metrics();
    assert_eq!(m.fatal, 0, "{m:?}");
    // The VMM is gone: nothing can fault on its memory any more.
    s.engine
        .close(uffd_engine::CloseWhen::OwnerGuarantees)
        .expect("close");
}
