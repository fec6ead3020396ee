//! One fault's round trip: a thread touches a missing page; a serving thread reads the fault
//! and answers it with a 4 KiB COPY. Wrapper (`Uffd::read_events` + `Uffd::copy`) against a
//! baseline that calls `read(2)` and the raw ioctl with no wrapper, in the same run, for two
//! placements: both threads pinned to CPU 0, and unpinned.

mod common;

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Mapping, pin_to, unpin};
use criterion::{Criterion, criterion_group, criterion_main};
use uffd_core::{
    CopyMode, Event, EventBuffer, PageSize, Range, RegisterMode, Uffd, UffdBuilder, raw,
};

const PAGE: usize = 4096;
const REGION_PAGES: usize = 16384; // 64 MiB, discarded and re-faulted in rounds
/// The page after the measured region: its fault tells the handler to return.
const SENTINEL: usize = REGION_PAGES;

#[derive(Clone, Copy, PartialEq)]
enum Server {
    Wrapper,
    Raw,
}

#[derive(Clone, Copy)]
enum Placement {
    SameCpu,
    Unpinned,
}

fn serve_wrapper(uffd: &Uffd, src: &[u8], sentinel: u64) {
    let mut batch = EventBuffer::new(16);
    loop {
        for event in uffd.read_events(&mut batch).expect("read") {
            if let Event::PageFault(fault) = event {
                let dst = Range::page_containing(fault.address, PageSize::Base4K).expect("range");
                let outcome = uffd.copy(dst, src, CopyMode::empty());
                assert!(outcome.is_complete(), "{outcome:?}");
                if dst.start() == sentinel {
                    return;
                }
            }
        }
    }
}

fn serve_raw(fd: i32, src: &[u8], sentinel: u64) {
    let mut msgs = [raw::uffd_msg::ZEROED; 16];
    loop {
        // SAFETY: reading whole messages into a buffer of plain-integer structs we own.
        let n = unsafe { libc::read(fd, msgs.as_mut_ptr().cast(), size_of_val(&msgs)) };
        assert!(n > 0, "read: {}", std::io::Error::last_os_error());
        for msg in &msgs[..n as usize / size_of::<raw::uffd_msg>()] {
            if msg.event == raw::UFFD_EVENT_PAGEFAULT {
                // SAFETY: `pagefault` is the member for this event code; plain integers.
                let addr = unsafe { msg.arg.pagefault.address } & !(PAGE as u64 - 1);
                let mut copy = raw::uffdio_copy {
                    dst: addr,
                    src: src.as_ptr() as u64,
                    len: PAGE as u64,
                    mode: 0,
                    copy: 0,
                };
                // SAFETY: UFFDIO_COPY takes a `uffdio_copy`; `src` is a live 4 KiB buffer.
                let rc = unsafe { libc::ioctl(fd, raw::UFFDIO_COPY as libc::c_ulong, &mut copy) };
                assert_eq!(rc, 0, "copy: {}", std::io::Error::last_os_error());
                if addr == sentinel {
                    return;
                }
            }
        }
    }
}

/// Touches `iters` pages one by one and returns the time spent in the touches alone.
fn run(server: Server, placement: Placement, iters: u64) -> Duration {
    let guest = Arc::new(Mapping::new((REGION_PAGES + 1) * PAGE));
    let sentinel = guest.addr() + (SENTINEL * PAGE) as u64;
    let uffd = Arc::new(
        UffdBuilder::new()
            .non_blocking(false)
            .create()
            .expect("uffd"),
    );
    let range = Range::new(guest.addr(), guest.len as u64, PageSize::Base4K).expect("range");
    uffd.register(range, RegisterMode::MISSING)
        .expect("register");
    if let Placement::SameCpu = placement {
        pin_to(0);
    }
    let handler = {
        let uffd = uffd.clone();
        std::thread::spawn(move || {
            if let Placement::SameCpu = placement {
                pin_to(0);
            }
            let src = vec![0x5a_u8; PAGE];
            match server {
                Server::Wrapper => serve_wrapper(&uffd, &src, sentinel),
                Server::Raw => serve_raw(uffd.as_raw_fd(), &src, sentinel),
            }
        })
    };
    let mut total = Duration::ZERO;
    let mut next = 0;
    for _ in 0..iters {
        if next == REGION_PAGES {
            guest.discard_first(REGION_PAGES * PAGE);
            next = 0;
        }
        // SAFETY: a read of a byte inside our own registered mapping; the fault is served by
        // the handler thread before the read completes.
        let page = unsafe { guest.ptr.add(next * PAGE) };
        let start = Instant::now();
        // SAFETY: as above.
        let byte = unsafe { std::ptr::read_volatile(page) };
        total += start.elapsed();
        assert_eq!(byte, 0x5a);
        next += 1;
    }
    // Release the handler: the sentinel page's fault makes it return.
    // SAFETY: as above; the sentinel page is inside the registered mapping.
    unsafe { std::ptr::read_volatile(guest.ptr.add(SENTINEL * PAGE)) };
    handler.join().expect("handler");
    unpin();
    total
}

fn bench_roundtrip(c: &mut Criterion) {
    let mut group = c.benchmark_group("fault_roundtrip_4k");
    group
        .measurement_time(Duration::from_secs(4))
        .sample_size(30);
    for (placement, pname) in [
        (Placement::SameCpu, "same_cpu"),
        (Placement::Unpinned, "unpinned"),
    ] {
        for (server, sname) in [(Server::Raw, "raw_ioctl"), (Server::Wrapper, "uffd_core")] {
            group.bench_function(format!("{sname}/{pname}"), |b| {
                b.iter_custom(|iters| run(server, placement, iters))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_roundtrip);
criterion_main!(benches);
