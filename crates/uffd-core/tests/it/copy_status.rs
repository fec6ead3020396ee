//! The statuses a COPY meets when the memory changes under it: EAGAIN while a REMOVE is
//! pending, ESRCH once the owning process exited, ENOENT after munmap (in a child process,
//! alone) or unregister.

use std::os::fd::AsFd;
use std::sync::Arc;

use test_support::{BLOCKED, Mapping, PAGE, Region, TIMEOUT, spawn};
use uffd_core::{CopyMode, Event, Features, RegisterMode, Status, Uffd, UffdBuilder};

use crate::common::{
    ChildProc, PAGE_LEN, assert_complete, child_role, new_uffd, next_event, parent_socket, pattern,
    poll_in, readable, recv_byte, send_byte, send_fd,
};

#[test]
fn copy_is_again_while_a_remove_is_pending() {
    let region = Region::new(4, Features::EVENT_REMOVE, RegisterMode::MISSING);
    let bytes = pattern(0x5e, 3 * PAGE_LEN);
    assert_complete(
        region
            .uffd
            .copy(region.pages(0, 3), &bytes, CopyMode::empty()),
    );

    // The balloon frees pages 1-2: madvise blocks until the REMOVE is read.
    let map = Arc::clone(&region.map);
    let madvise = spawn("madvise", move || map.dontneed(1, 2));
    assert!(readable(&region.uffd, TIMEOUT), "the REMOVE never arrived");
    madvise.assert_blocked();

    // Page 3 is missing, but the fill ioctls answer EAGAIN with no progress meanwhile.
    let page = pattern(0x77, PAGE_LEN);
    let outcome = region.uffd.copy(region.page(3), &page, CopyMode::empty());
    assert_eq!(outcome.status, Status::Again, "{outcome:?}");
    assert_eq!(outcome.done, 0);
    let two = pattern(0x78, 2 * PAGE_LEN);
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
        .copy(region.page(1), &pattern(1, PAGE_LEN), CopyMode::empty());
    assert_eq!(outcome.status, Status::Complete, "{outcome:?}");
    let outcome = region
        .uffd
        .copy(region.page(0), &pattern(1, PAGE_LEN), CopyMode::empty());
    assert_eq!(outcome.status, Status::Exists, "{outcome:?}");
    assert_eq!(region.map.read_bytes(0, PAGE_LEN), bytes[..PAGE_LEN]);
    assert_eq!(region.map.read_bytes(3 * PAGE_LEN, PAGE_LEN), page);
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
    let child = ChildProc::spawn(module_path!(), GONE_TEST, "owner");
    let (fd, addr) = child.recv_fd::<8>();
    let uffd = Uffd::adopt(fd, Features::empty()).expect("adopt the child's uffd");
    let base = u64::from_ne_bytes(addr);
    let page =
        |i: u64| uffd_core::Range::pages(base + i * PAGE, 1, uffd_core::PageSize::Base4K).unwrap();

    // While the owner lives, COPY fills its memory.
    let bytes = pattern(0x9d, PAGE_LEN);
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
    let revents = poll_in(&uffd, BLOCKED);
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

const MUNMAP_TEST: &str = "copy_after_munmap_is_no_mapping";

/// Child role: registers memory, unmaps part of it and copies into the hole. Run alone in a
/// child process because the copy aims at addresses given back to the kernel: any mapping made
/// there meanwhile by another test of the same process, if registered with any of its uffds,
/// would be filled (a COPY only checks that the destination is registered, not with which
/// uffd).
fn copy_into_a_hole() {
    let uffd = new_uffd(Features::empty());
    let map = Mapping::anon(4);
    uffd.register(map.range(), RegisterMode::MISSING)
        .expect("register");
    // SAFETY: no other thread touches this mapping.
    unsafe { map.unmap_pages(2, 2) }.expect("munmap");
    let bytes = pattern(0x21, 2 * PAGE_LEN);
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
    assert_eq!(map.read_bytes(0, 2 * PAGE_LEN), bytes);
    uffd.unregister(map.pages(0, 2)).expect("unregister");
}

#[test]
fn copy_after_munmap_is_no_mapping() {
    if child_role().as_deref() == Some("hole") {
        copy_into_a_hole();
        return;
    }
    let child = ChildProc::spawn(module_path!(), MUNMAP_TEST, "hole");
    let (status, output) = child.finish();
    assert!(status.success(), "child failed: {status}\n{output}");
}

#[test]
fn copy_after_unregister_is_no_mapping() {
    let uffd = new_uffd(Features::empty());
    let map = Mapping::anon(2);
    uffd.register(map.range(), RegisterMode::MISSING)
        .expect("register");
    uffd.unregister(map.page(1)).expect("unregister page 1");
    let bytes = pattern(0x22, PAGE_LEN);
    let outcome = uffd.copy(map.page(1), &bytes, CopyMode::empty());
    assert_eq!(outcome.status, Status::NoMapping, "{outcome:?}");
    let outcome = uffd.copy(map.page(0), &bytes, CopyMode::empty());
    assert_eq!(outcome.status, Status::Complete, "{outcome:?}");
    assert_eq!(map.read_bytes(0, PAGE_LEN), bytes);
    uffd.unregister(map.page(0)).expect("unregister page 0");
}
