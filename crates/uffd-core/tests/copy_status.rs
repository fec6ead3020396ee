//! The statuses a COPY meets when the memory changes under it: EAGAIN while a REMOVE is
//! pending, ESRCH once the owning process exited, ENOENT after munmap or unregister.

mod common;

use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, MutexGuard};

use common::{
    ChildProc, Mapping, PAGE, Region, assert_complete, child_role, next_event, parent_socket,
    pattern, readable, recv_byte, send_byte, send_fd, spawn,
};
use uffd_core::{CopyMode, Event, Features, RegisterMode, Status, Uffd, UffdBuilder};

/// The munmap test copies into addresses it gave back to the kernel: a mapping another test of
/// this process made meanwhile could sit there (and a COPY through any uffd of the process may
/// fill any registered range of it). The tests of this file that map memory take turns.
static MAPPING_TESTS: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    MAPPING_TESTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[test]
fn copy_is_again_while_a_remove_is_pending() {
    let _turn = one_at_a_time();
    let region = Region::new(4, Features::EVENT_REMOVE, RegisterMode::MISSING);
    let bytes = pattern(0x5e, 3 * PAGE);
    assert_complete(
        region
            .uffd
            .copy(region.pages(0, 3), &bytes, CopyMode::empty()),
    );

    // The balloon frees pages 1-2: madvise blocks until the REMOVE is read.
    let map = Arc::clone(&region.map);
    let madvise = spawn("madvise", move || map.dontneed(1, 2));
    assert!(
        readable(&region.uffd, common::TIMEOUT),
        "the REMOVE never arrived"
    );
    madvise.assert_blocked();

    // Page 3 is missing, but the fill ioctls answer EAGAIN with no progress meanwhile.
    let page = pattern(0x77, PAGE);
    let outcome = region.uffd.copy(region.page(3), &page, CopyMode::empty());
    assert_eq!(outcome.status, Status::Again, "{outcome:?}");
    assert_eq!(outcome.done, 0);
    let two = pattern(0x78, 2 * PAGE);
    let outcome = region
        .uffd
        .copy(region.pages(2, 2), &two, CopyMode::empty());
    assert_eq!(
        (outcome.status, outcome.done),
        (Status::Again, 0),
        "{outcome:?}"
    );

    let outcome = region
        .uffd
        .zeropage(region.page(3), uffd_core::ZeropageMode::empty());
    assert_eq!(
        (outcome.status, outcome.done),
        (Status::Again, 0),
        "{outcome:?}"
    );

    match next_event(&region.uffd) {
        Event::Remove { start, end } => {
            assert_eq!(start, region.map.page_addr(1));
            assert_eq!(end, region.map.page_addr(3));
        }
        other => panic!("expected REMOVE, got {other:?}"),
    }
    madvise.wait().expect("madvise");

    // The event is consumed and the madvising thread is done: the retry goes through.
    let outcome = region.uffd.copy(region.page(3), &page, CopyMode::empty());
    assert_eq!(outcome.status, Status::Complete, "{outcome:?}");
    // The removed pages are missing again (so a COPY can fill them), page 0 is untouched.
    let outcome = region
        .uffd
        .copy(region.page(1), &pattern(1, PAGE), CopyMode::empty());
    assert_eq!(outcome.status, Status::Complete, "{outcome:?}");
    let outcome = region
        .uffd
        .copy(region.page(0), &pattern(1, PAGE), CopyMode::empty());
    assert_eq!(outcome.status, Status::Exists, "{outcome:?}");
    assert_eq!(region.map.read_bytes(0, PAGE), bytes[..PAGE]);
    assert_eq!(region.map.read_bytes(3 * PAGE, PAGE), page);
}

const GONE_TEST: &str = "copy_is_gone_once_the_owner_exited";

/// Child role: owns memory and a uffd registered on it, hands the uffd to the parent, reports
/// what the parent installed, and exits when told.
fn owner_child() {
    let sock = parent_socket();
    let map = Mapping::anon(2);
    let uffd = UffdBuilder::new().create().expect("child: create");
    uffd.register(map.range(), RegisterMode::MISSING)
        .expect("child: register");
    send_fd(&sock, uffd.as_fd(), &map.addr().to_ne_bytes());
    // The parent copied into page 0 of this process: report a byte of it.
    assert_eq!(recv_byte(&sock), b'r');
    send_byte(&sock, map.read(5));
    // Exit when told.
    assert_eq!(recv_byte(&sock), b'x');
}

#[test]
fn copy_is_gone_once_the_owner_exited() {
    if child_role().as_deref() == Some("owner") {
        owner_child();
        return;
    }
    let child = ChildProc::spawn(GONE_TEST, "owner");
    let (fd, addr) = child.recv_fd::<8>();
    let uffd = Uffd::adopt(fd, Features::empty()).expect("adopt the child's uffd");
    let base = u64::from_ne_bytes(addr);
    let page = |i: u64| {
        uffd_core::Range::pages(base + i * PAGE as u64, 1, uffd_core::PageSize::Base4K).unwrap()
    };

    // While the owner lives, COPY fills its memory.
    let bytes = pattern(0x9d, PAGE);
    let outcome = uffd.copy(page(0), &bytes, CopyMode::empty());
    assert_eq!(outcome.status, Status::Complete, "{outcome:?}");
    send_byte(&child.sock, b'r');
    assert_eq!(
        recv_byte(&child.sock),
        bytes[5],
        "the child reads what we copied"
    );

    send_byte(&child.sock, b'x');
    let (status, output) = child.finish();
    assert!(status.success(), "child failed: {status}\n{output}");

    // known-failures #28: the creator's death is not signalled on the uffd (no POLLHUP, not
    // readable); only operations tell.
    let revents = common::poll_in(&uffd, common::BLOCKED);
    assert!(
        revents.is_empty(),
        "poll after the owner exited: {revents:?}"
    );

    // Its mm is gone: ESRCH, no progress.
    let outcome = uffd.copy(page(1), &bytes, CopyMode::empty());
    assert_eq!(outcome.status, Status::Gone, "{outcome:?}");
    assert_eq!(outcome.done, 0);
    let outcome = uffd.zeropage(page(1), uffd_core::ZeropageMode::empty());
    assert_eq!(outcome.status, Status::Gone, "{outcome:?}");
}

#[test]
fn copy_after_munmap_is_no_mapping() {
    let _turn = one_at_a_time();
    let uffd = common::uffd(Features::empty());
    let map = Mapping::anon(4);
    uffd.register(map.range(), RegisterMode::MISSING)
        .expect("register");
    map.unmap_pages(2, 2).expect("munmap");
    let bytes = pattern(0x21, 2 * PAGE);
    let outcome = uffd.copy(map.pages(2, 2), &bytes, CopyMode::empty());
    assert_eq!(outcome.status, Status::NoMapping, "{outcome:?}");
    assert_eq!(outcome.done, 0);
    // A range straddling the end of the mapping is refused as a whole.
    let outcome = uffd.copy(map.pages(1, 2), &bytes, CopyMode::empty());
    assert_eq!(outcome.status, Status::NoMapping, "{outcome:?}");
    assert_eq!(outcome.done, 0);
    // The still-mapped part works.
    let outcome = uffd.copy(map.pages(0, 2), &bytes, CopyMode::empty());
    assert_eq!(outcome.status, Status::Complete, "{outcome:?}");
    uffd.unregister(map.pages(0, 2)).expect("unregister");
}

#[test]
fn copy_after_unregister_is_no_mapping() {
    let _turn = one_at_a_time();
    let uffd = common::uffd(Features::empty());
    let map = Mapping::anon(2);
    uffd.register(map.range(), RegisterMode::MISSING)
        .expect("register");
    uffd.unregister(map.page(1)).expect("unregister page 1");
    let bytes = pattern(0x22, PAGE);
    let outcome = uffd.copy(map.page(1), &bytes, CopyMode::empty());
    assert_eq!(outcome.status, Status::NoMapping, "{outcome:?}");
    let outcome = uffd.copy(map.page(0), &bytes, CopyMode::empty());
    assert_eq!(outcome.status, Status::Complete, "{outcome:?}");
    assert_eq!(map.read_bytes(0, PAGE), bytes);
    uffd.unregister(map.page(0)).expect("unregister page 0");
}
