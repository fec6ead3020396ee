//! FORK events: a process owning registered memory (this test binary re-executed) forks; the
//! handler (this process) gets `Event::Fork` with a new uffd that serves the grandchild's
//! faults. Dropping a batch without taking its FORK fd closes it, releasing the grandchild.

use std::os::fd::AsFd;

use test_support::{Mapping, TIMEOUT};
use uffd_core::{CopyMode, Event, EventBuffer, Features, RegisterMode, Status, Uffd, UffdBuilder};

use crate::common::{
    ChildProc, PAGE_LEN, assert_no_events, child_role, next_event, next_fault, parent_socket,
    pattern, readable, recv_byte, send_byte, send_fd,
};

const FORK_TEST: &str = "fork_event_carries_a_uffd_serving_the_grandchild";
const DROP_TEST: &str = "dropping_an_unread_fork_event_closes_its_fd";

/// Child role: registers a page on an EVENT_FORK uffd, hands the uffd to the parent, forks;
/// the grandchild reads the page (served through the FORK uffd) and exits with the byte it
/// read, which the child reports to the parent.
fn forking_owner() {
    let sock = parent_socket();
    let map = Mapping::anon(1);
    let uffd = UffdBuilder::new()
        .features(Features::EVENT_FORK)
        .create()
        .expect("child: create");
    uffd.register(map.range(), RegisterMode::MISSING)
        .expect("child: register");
    send_fd(&sock, uffd.as_fd(), &map.addr().to_ne_bytes());

    // SAFETY: the forked process only reads its copy of `map` (a volatile load) and calls
    // `_exit`: no allocation, no locks, nothing that other threads of this process might have
    // held at the fork. fork blocks here until the parent reads the FORK event.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let byte = map.read(PAGE_LEN - 1);
        // SAFETY: `_exit` ends the forked process at once, running nothing of the parent's.
        unsafe { libc::_exit(i32::from(byte)) };
    }
    assert!(pid > 0, "fork failed");
    let mut status = 0;
    // SAFETY: waits for the process just forked; `status` is a live out-parameter.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid, "waitpid");
    assert!(
        libc::WIFEXITED(status),
        "grandchild did not exit: {status:#x}"
    );
    let code = u8::try_from(libc::WEXITSTATUS(status)).expect("exit code");
    send_byte(&sock, code);
    // The parent confirms before this process (the memory's owner) exits.
    assert_eq!(recv_byte(&sock), b'x');
}

#[test]
fn fork_event_carries_a_uffd_serving_the_grandchild() {
    if child_role().as_deref() == Some("forking-owner") {
        forking_owner();
        return;
    }
    let child = ChildProc::spawn(module_path!(), FORK_TEST, "forking-owner");
    let (fd, addr) = child.recv_fd::<8>();
    let addr = u64::from_ne_bytes(addr);
    let uffd = Uffd::adopt(fd, Features::EVENT_FORK).expect("adopt");

    let fork_uffd = match next_event(&uffd) {
        Event::Fork { uffd } => uffd,
        other => panic!("expected FORK, got {other:?}"),
    };
    let fork_uffd = Uffd::adopt(fork_uffd, Features::EVENT_FORK).expect("the FORK fd is a uffd");
    assert_ne!(
        std::os::fd::AsRawFd::as_raw_fd(&fork_uffd),
        std::os::fd::AsRawFd::as_raw_fd(&uffd)
    );

    // The grandchild's fault arrives on the new uffd, at the same address.
    let fault = next_fault(&fork_uffd);
    assert_eq!(fault.address, addr);
    let bytes = pattern(0x5a, PAGE_LEN);
    let page = uffd_core::Range::pages(addr, 1, uffd_core::PageSize::Base4K).unwrap();
    let outcome = fork_uffd.copy(page, &bytes, CopyMode::empty());
    assert_eq!(outcome.status, Status::Complete, "{outcome:?}");
    assert_eq!(
        recv_byte(&child.sock),
        bytes[PAGE_LEN - 1],
        "the grandchild read what was copied through the FORK uffd"
    );
    // Nothing reached the original uffd.
    assert_no_events(&uffd);

    send_byte(&child.sock, b'x');
    let (status, output) = child.finish();
    assert!(status.success(), "child failed: {status}\n{output}");
}

#[test]
fn dropping_an_unread_fork_event_closes_its_fd() {
    if child_role().as_deref() == Some("forking-owner") {
        forking_owner();
        return;
    }
    let child = ChildProc::spawn(module_path!(), DROP_TEST, "forking-owner");
    let (fd, _addr) = child.recv_fd::<8>();
    let uffd = Uffd::adopt(fd, Features::EVENT_FORK).expect("adopt");

    let mut buf = EventBuffer::new(4);
    assert!(readable(&uffd, TIMEOUT), "no FORK event");
    let events = uffd.read_events(&mut buf).expect("read_events");
    assert_eq!(events.len(), 1);
    // Dropped without taking the FORK event: its fd must be closed, which drops the
    // grandchild's registration; its fault then reads zeros instead of waiting forever.
    drop(events);
    assert_eq!(recv_byte(&child.sock), 0, "the grandchild read a zero page");

    send_byte(&child.sock, b'x');
    let (status, output) = child.finish();
    assert!(status.success(), "child failed: {status}\n{output}");
}
