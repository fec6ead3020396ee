//! Registration: the ioctls a range reports, EBUSY when another uffd owns the range, modes the
//! memory cannot take, and what unregistering or closing does to a thread waiting on a fault
//! (it is woken and reads zeros, silently).

use std::sync::Arc;

use test_support::{Mapping, Region, spawn};
use uffd_core::{Errno, Error, Features, Ioctls, RegisterMode};

use crate::common::{PAGE_LEN, assert_complete, new_uffd, next_fault, pattern};

#[test]
fn a_range_owned_by_another_uffd_is_busy() {
    let region = Region::new(2, Features::empty(), RegisterMode::MISSING);
    let other = new_uffd(Features::empty());
    let range = region.map.range();
    match other.register(range, RegisterMode::MISSING) {
        Err(err @ Error::Register { .. }) => {
            let Error::Register {
                range: r,
                mode,
                errno,
            } = &err
            else {
                unreachable!()
            };
            assert_eq!(
                (*r, *mode, *errno),
                (range, RegisterMode::MISSING, Errno::BUSY)
            );
            assert!(err.to_string().contains(&range.to_string()), "{err}");
        }
        other => panic!("expected EBUSY, got {other:?}"),
    }
    // Registering again through the owner is fine.
    region
        .uffd
        .register(range, RegisterMode::MISSING)
        .expect("re-register by the owner");
}

#[test]
fn anonymous_memory_cannot_be_registered_minor() {
    let uffd = new_uffd(Features::MINOR_SHMEM);
    let map = Mapping::anon(1);
    match uffd.register(map.range(), RegisterMode::MINOR) {
        Err(Error::Register { errno, .. }) => assert_eq!(errno, Errno::INVAL),
        other => panic!("expected EINVAL, got {other:?}"),
    }
}

#[test]
fn registration_reports_the_ranges_ioctls() {
    let region = Region::new(
        1,
        Features::empty(),
        RegisterMode::MISSING | RegisterMode::WP,
    );
    let want = Ioctls::WAKE
        | Ioctls::COPY
        | Ioctls::ZEROPAGE
        | Ioctls::WRITEPROTECT
        | Ioctls::MOVE
        | Ioctls::POISON;
    assert!(region.ioctls.contains(want), "{:?}", region.ioctls);
    // The fd-level ioctls are not range ioctls.
    assert!(
        !region.ioctls.contains(Ioctls::REGISTER),
        "{:?}",
        region.ioctls
    );
}

#[test]
fn unregister_wakes_a_waiting_thread_which_reads_zeros() {
    let region = Region::new(1, Features::empty(), RegisterMode::MISSING);
    let reader = region.spawn_read(PAGE_LEN - 1);
    next_fault(&region.uffd);
    reader.assert_blocked();
    region.uffd.unregister(region.page(0)).expect("unregister");
    assert_eq!(reader.wait(), 0);
}

#[test]
fn closing_the_uffd_wakes_a_waiting_thread_which_reads_zeros() {
    let map = Arc::new(Mapping::anon(1));
    let uffd = new_uffd(Features::empty());
    uffd.register(map.range(), RegisterMode::MISSING)
        .expect("register");
    let reader = {
        let map = Arc::clone(&map);
        spawn("read", move || map.read(0))
    };
    next_fault(&uffd);
    reader.assert_blocked();
    // Closing the last reference (without unregistering) drops the registration.
    drop(uffd);
    assert_eq!(reader.wait(), 0);
}

#[test]
fn any_uffd_of_the_mm_can_fill_a_range_registered_with_another() {
    // The kernel checks only that the destination is registered, not with which uffd: a COPY
    // through one uffd fills a range another uffd of the same process owns (tests sharing a
    // process must therefore never copy into addresses they gave back).
    let region = Region::new(1, Features::empty(), RegisterMode::MISSING);
    let other = new_uffd(Features::empty());
    let bytes = pattern(0x0c, PAGE_LEN);
    assert_complete(other.copy(region.page(0), &bytes, uffd_core::CopyMode::empty()));
    assert_eq!(region.map.read_bytes(0, PAGE_LEN), bytes);
    // An unregistered range is refused.
    let plain = Mapping::anon(1);
    let outcome = other.copy(plain.page(0), &bytes, uffd_core::CopyMode::empty());
    assert_eq!(outcome.status, uffd_core::Status::NoMapping, "{outcome:?}");
}
