//! Non-cooperative events with their exact ranges (REMOVE, UNMAP, REMAP), and batched reads:
//! several messages per `read`, bounded by the buffer, faults ahead of queued events.

use std::collections::BTreeSet;
use std::sync::Arc;

use test_support::{Mapping, PAGE, Region, TIMEOUT, spawn};
use uffd_core::{CopyMode, Event, EventBuffer, Features, RegisterMode, ZeropageMode};

use crate::common::{
    PAGE_LEN, assert_complete, new_uffd, next_event, next_fault, pattern, read_batch, readable,
    wait_pending,
};

#[test]
fn remove_event_has_the_exact_range_and_the_range_stays_registered() {
    let region = Region::new(4, Features::EVENT_REMOVE, RegisterMode::MISSING);
    let bytes = pattern(0x1f, 4 * PAGE_LEN);
    assert_complete(
        region
            .uffd
            .copy(region.pages(0, 4), &bytes, CopyMode::empty()),
    );
    let map = Arc::clone(&region.map);
    let madvise = spawn("madvise", move || map.dontneed(1, 2));
    match next_event(&region.uffd) {
        Event::Remove { start, end } => {
            assert_eq!(
                (start, end),
                (region.map.page_addr(1), region.map.page_addr(3))
            );
        }
        other => panic!("expected REMOVE, got {other:?}"),
    }
    madvise.wait().expect("madvise");

    // Zapped but still registered: the next touch is a MISSING fault again.
    let reader = region.spawn_read(2 * PAGE_LEN + 1);
    assert_eq!(next_fault(&region.uffd).address, region.map.page_addr(2));
    assert_complete(region.uffd.zeropage(region.page(2), ZeropageMode::empty()));
    assert_eq!(reader.wait(), 0);
    // The pages outside the advice kept their bytes.
    assert_eq!(region.map.read_bytes(0, PAGE_LEN), bytes[..PAGE_LEN]);
    assert_eq!(
        region.map.read_bytes(3 * PAGE_LEN, PAGE_LEN),
        bytes[3 * PAGE_LEN..]
    );
}

#[test]
fn unmap_event_has_the_exact_range() {
    let region = Region::new(4, Features::EVENT_UNMAP, RegisterMode::MISSING);
    let map = Arc::clone(&region.map);
    // SAFETY: nothing touches pages 1-2 of the mapping while or after they are unmapped.
    let munmap = spawn("munmap", move || unsafe { map.unmap_pages(1, 2) });
    assert!(readable(&region.uffd, TIMEOUT), "no UNMAP event");
    // munmap waits for its event to be read.
    munmap.assert_blocked();
    match next_event(&region.uffd) {
        Event::Unmap { start, end } => {
            assert_eq!(
                (start, end),
                (region.map.page_addr(1), region.map.page_addr(3))
            );
        }
        other => panic!("expected UNMAP, got {other:?}"),
    }
    munmap.wait().expect("munmap");
}

#[test]
fn remap_event_has_from_to_and_len_and_the_registration_moves() {
    let uffd = new_uffd(Features::EVENT_REMAP);
    let map = Mapping::anon(4);
    uffd.register(map.range(), RegisterMode::MISSING)
        .expect("register");
    let target = Mapping::reserve(4);
    let (from, to, len) = (map.addr(), target.addr(), map.len() as u64);

    let mremap = spawn("mremap", move || {
        let mut map = map;
        map.move_to(target).map(|()| map)
    });
    assert!(readable(&uffd, TIMEOUT), "no REMAP event");
    mremap.assert_blocked();
    match next_event(&uffd) {
        Event::Remap {
            from: f,
            to: t,
            len: l,
        } => assert_eq!((f, t, l), (from, to, len)),
        other => panic!("expected REMAP, got {other:?}"),
    }
    let map = Arc::new(mremap.wait().expect("mremap"));
    assert_eq!(map.addr(), to);

    // Faults at the new address reach the same uffd.
    let reader = {
        let map = Arc::clone(&map);
        spawn("read moved", move || map.read(PAGE_LEN + 2))
    };
    assert_eq!(next_fault(&uffd).address, to + PAGE);
    let bytes = pattern(0x2f, PAGE_LEN);
    assert_complete(uffd.copy(map.page(1), &bytes, CopyMode::empty()));
    assert_eq!(reader.wait(), bytes[2]);
    uffd.unregister(map.range()).expect("unregister");
}

#[test]
fn one_read_returns_several_faults_bounded_by_the_buffer() {
    let region = Region::new(4, Features::empty(), RegisterMode::MISSING);
    let readers: Vec<_> = (0..4)
        .map(|i| region.spawn_read(i * PAGE_LEN + i))
        .collect();
    // All four threads are queued on their faults before anything is read.
    wait_pending(&region.uffd, 4);

    let mut buf = EventBuffer::new(3);
    assert_eq!(buf.capacity(), 3);
    let first = read_batch(&region.uffd, &mut buf);
    assert_eq!(first.len(), 3, "a full buffer: {first:?}");
    let second = read_batch(&region.uffd, &mut buf);
    assert_eq!(second.len(), 1, "the rest: {second:?}");

    let addresses: BTreeSet<u64> = first
        .iter()
        .chain(&second)
        .map(|event| match event {
            Event::PageFault(fault) => fault.address,
            other => panic!("expected page faults, got {other:?}"),
        })
        .collect();
    let expected: BTreeSet<u64> = (0..4).map(|i| region.map.page_addr(i)).collect();
    assert_eq!(addresses, expected);

    let bytes = pattern(0x3f, 4 * PAGE_LEN);
    assert_complete(
        region
            .uffd
            .copy(region.pages(0, 4), &bytes, CopyMode::empty()),
    );
    for (i, reader) in readers.into_iter().enumerate() {
        assert_eq!(reader.wait(), bytes[i * PAGE_LEN + i]);
    }
}

#[test]
fn a_batch_returns_faults_ahead_of_the_remove_queued_before_them() {
    let region = Region::new(8, Features::EVENT_REMOVE, RegisterMode::MISSING);
    assert_complete(region.uffd.zeropage(region.page(7), ZeropageMode::empty()));
    let map = Arc::clone(&region.map);
    let madvise = spawn("madvise", move || map.dontneed(7, 1));
    // The REMOVE is queued (nothing else could make the uffd readable)...
    assert!(readable(&region.uffd, TIMEOUT), "no REMOVE event");
    // ... then two faults arrive after it.
    let readers: Vec<_> = (0..2).map(|i| region.spawn_read(i * PAGE_LEN)).collect();
    wait_pending(&region.uffd, 2);

    let mut buf = EventBuffer::new(16);
    let batch = read_batch(&region.uffd, &mut buf);
    assert_eq!(batch.len(), 3, "{batch:?}");
    assert!(
        matches!(batch[0], Event::PageFault(_)) && matches!(batch[1], Event::PageFault(_)),
        "faults first: {batch:?}"
    );
    match batch[2] {
        Event::Remove { start, end } => {
            assert_eq!(
                (start, end),
                (region.map.page_addr(7), region.map.page_addr(7) + PAGE)
            );
        }
        ref other => panic!("expected the REMOVE last, got {other:?}"),
    }
    madvise.wait().expect("madvise");
    assert_complete(
        region
            .uffd
            .zeropage(region.pages(0, 2), ZeropageMode::empty()),
    );
    for reader in readers {
        assert_eq!(reader.wait(), 0);
    }
}
