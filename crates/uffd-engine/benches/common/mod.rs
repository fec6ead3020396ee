//! Shared pieces of the engine benches: guest memory in this process, the snapshot image, and
//! the two baselines (the raw-ioctl floor and a naive one-page-per-fault handler).

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use snapshot_format::{Chunk, LayeredSource};
use test_support::Mapping;
use uffd_core::{
    CopyMode, Event, EventBuffer, PageSize, Range, RegisterMode, Uffd, UffdBuilder, raw,
};
use uffd_engine::{GuestLayout, GuestRegion};

pub(crate) const PAGE: u64 = 4096;
/// The guest size of the bulk benches: 1 GiB.
pub(crate) const IMAGE: u64 = 1 << 30;
/// The image file every bench serves from, in the page cache: 1 GiB plus room for the
/// baselines' stop page.
const IMAGE_FILE: u64 = IMAGE + (2 << 20);

/// Anonymous guest memory (test-support's `Mapping`) registered MISSING on its own uffd;
/// unmapped on drop.
pub(crate) struct Guest {
    map: Mapping,
}

impl Guest {
    pub(crate) fn new(len: u64) -> (Arc<Guest>, Uffd) {
        let map = Mapping::anon((len / PAGE) as usize);
        let uffd = UffdBuilder::new()
            .non_blocking(true)
            .create()
            .expect("uffd");
        uffd.register(
            Range::new(map.addr(), len, PageSize::Base4K).unwrap(),
            RegisterMode::MISSING,
        )
        .expect("register");
        (Arc::new(Guest { map }), uffd)
    }

    /// The first address.
    pub(crate) fn addr(&self) -> u64 {
        self.map.addr()
    }

    pub(crate) fn layout(&self) -> GuestLayout {
        let len = self.map.len() as u64;
        let region = GuestRegion {
            host_addr: self.addr(),
            size: len,
            offset: 0,
            page_size: PageSize::Base4K,
        };
        GuestLayout::new(vec![region], len).unwrap()
    }

    /// Reads one byte of page `index` (the fault is served by whichever handler runs).
    #[inline]
    pub(crate) fn touch(&self, index: u64) -> u8 {
        self.map.read((index * PAGE) as usize)
    }
}

/// The 1 GiB image file (created once per bench run) and a source over it.
pub(crate) fn source() -> Arc<LayeredSource> {
    static SOURCE: OnceLock<Arc<LayeredSource>> = OnceLock::new();
    SOURCE
        .get_or_init(|| {
            let path: PathBuf =
                std::env::temp_dir().join(format!("uffd-engine-bench-{}.img", std::process::id()));
            let block: Vec<u8> = (0..1u64 << 20).map(|i| (i % 251) as u8 + 1).collect();
            let mut file = std::fs::File::create(&path).unwrap();
            for _ in 0..IMAGE_FILE >> 20 {
                std::io::Write::write_all(&mut file, &block).unwrap();
            }
            drop(file);
            let source = LayeredSource::open_memory_file(&path, PAGE).unwrap();
            // The mapping stays valid after unlink; nothing is left behind in /tmp.
            let _ = std::fs::remove_file(&path);
            Arc::new(source)
        })
        .clone()
}

/// The naive baseline, the design of Firecracker's example handler: one thread, poll, read
/// one message, COPY one page from the snapshot mapping. Returns when `stop_addr` is served.
pub(crate) fn naive_handler(uffd: &Uffd, guest_base: u64, source: &LayeredSource, stop_addr: u64) {
    let mut batch = EventBuffer::new(1);
    loop {
        let mut fds = [rustix::event::PollFd::new(
            uffd,
            rustix::event::PollFlags::IN,
        )];
        let _ = rustix::event::poll(&mut fds, None);
        for event in uffd.read_events(&mut batch).expect("read") {
            if let Event::PageFault(fault) = event {
                let dst = Range::page_containing(fault.address, PageSize::Base4K).unwrap();
                let Ok(Chunk::Data(bytes)) = source.chunk(dst.start() - guest_base, PAGE) else {
                    panic!("bench image has no holes")
                };
                let outcome = uffd.copy(dst, bytes, CopyMode::empty());
                assert!(outcome.is_complete(), "{outcome:?}");
                if dst.start() == stop_addr {
                    return;
                }
            }
        }
    }
}

/// The floor: `read(2)` and the raw `UFFDIO_COPY` ioctl, no wrapper, no bookkeeping, from a
/// hot 4 KiB buffer. Blocking read on a non-blocking fd is emulated with poll.
pub(crate) fn raw_floor_handler(uffd: &Uffd, stop_addr: u64) {
    let fd = uffd.as_raw_fd();
    let src = vec![0x5a_u8; PAGE as usize];
    let mut msgs = [raw::uffd_msg::ZEROED; 1];
    loop {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, -1) };
        // SAFETY: reading whole messages into a buffer of plain-integer structs we own.
        let n = unsafe { libc::read(fd, msgs.as_mut_ptr().cast(), size_of_val(&msgs)) };
        if n <= 0 {
            continue;
        }
        if msgs[0].event != raw::UFFD_EVENT_PAGEFAULT {
            continue;
        }
        // SAFETY: `pagefault` is the member for this event code; plain integers.
        let addr = unsafe { msgs[0].arg.pagefault.address } & !(PAGE - 1);
        let mut copy = raw::uffdio_copy {
            dst: addr,
            src: src.as_ptr() as u64,
            len: PAGE,
            mode: 0,
            copy: 0,
        };
        // SAFETY: UFFDIO_COPY takes a `uffdio_copy`; `src` is a live 4 KiB buffer.
        unsafe { libc::ioctl(fd, raw::UFFDIO_COPY as libc::c_ulong, &mut copy) };
        if addr == stop_addr {
            return;
        }
    }
}

/// Pins the calling thread to `cpu`.
pub(crate) fn pin_to(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set).expect("sched_setaffinity");
}

/// Lets the calling thread run anywhere again.
pub(crate) fn unpin() {
    let mut set = rustix::thread::CpuSet::new();
    for cpu in 0..2 {
        set.set(cpu);
    }
    let _ = rustix::thread::sched_setaffinity(None, &set);
}

/// A short criterion configuration: this machine is shared and has two cores.
pub(crate) fn quick(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    secs: u64,
    samples: usize,
) {
    group
        .measurement_time(Duration::from_secs(secs))
        .sample_size(samples)
        .warm_up_time(Duration::from_secs(1));
}
