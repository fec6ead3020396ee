//! The driver's side of the vmm's life: requests in flight at once, a touch blocked on a
//! handler that does not serve (a timeout, not a hang), the vmm killed mid-touch (an error,
//! not a hang), a clean exit.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use crate::common::{PAGE, TIMEOUT, poll_in, start};
use rustix::event::PollFlags;
use test_vmm::{Touch, VmmError};
use uffd_core::{CopyMode, Event, EventBuffer, Features, PageSize, Range, Status, Uffd};

const MIB: u64 = 1 << 20;

/// Waits for the next batch of page faults on `uffd` (which nobody else reads); their
/// addresses.
fn next_faults(uffd: &Uffd) -> Vec<u64> {
    assert!(
        poll_in(uffd, TIMEOUT).contains(PollFlags::IN),
        "no fault within {TIMEOUT:?}"
    );
    let mut buf = EventBuffer::new(8);
    let events: Vec<Event> = uffd.read_events(&mut buf).unwrap().collect();
    let faults: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            Event::PageFault(fault) => Some(fault.address),
            _ => None,
        })
        .collect();
    assert!(
        !faults.is_empty() && faults.len() == events.len(),
        "expected faults, got {events:?}"
    );
    faults
}

fn adopt(hs: &mut crate::common::Handshake) -> Uffd {
    Uffd::adopt(hs.fds.pop().unwrap(), Features::EVENT_REMOVE).unwrap()
}

#[test]
fn requests_run_concurrently_while_a_touch_waits() {
    let (_dir, vmm, mut hs) = start("concurrent", vec![MIB], false);
    let uffd = adopt(&mut hs);
    let base = hs.regions[0].base_host_virt_addr;

    // A touch of page 3 blocks on its fault, which this test serves by hand.
    let touch = vmm.start_touch(Touch::read(3 * PAGE, PAGE, 1)).unwrap();
    assert_eq!(next_faults(&uffd), [base + 3 * PAGE]);
    assert!(!touch.is_done());
    // Meanwhile other requests are answered (pagemap does not fault).
    let flags = vmm.pagemap(0, 4 * PAGE).unwrap();
    assert!(flags.iter().all(|f| !f.present()), "{flags:?}");
    let touch = match touch.try_wait() {
        Err(pending) => pending,
        Ok(done) => panic!("the touch finished unserved: {done:?}"),
    };

    let page = Range::new(base + 3 * PAGE, PAGE, PageSize::Base4K).unwrap();
    let mut bytes = vec![0u8; PAGE as usize];
    bytes[..8].copy_from_slice(&42u64.to_le_bytes());
    assert_eq!(
        uffd.copy(page, &bytes, CopyMode::empty()).status,
        Status::Complete
    );
    let report = touch.wait().unwrap();
    assert_eq!((report.accesses, report.checksum), (1, 42));
    assert!(vmm.pagemap(3 * PAGE, PAGE).unwrap()[0].present());
}

#[test]
fn touch_on_a_handler_that_never_serves_times_out() {
    let (_dir, vmm, mut hs) = start("timeout", vec![MIB], false);
    // The handler drops its copy of the uffd: the vmm keeps its own, so its fault waits
    // forever, as a Firecracker guest does when its handler dies.
    drop(adopt(&mut hs));
    let touch = vmm.start_touch(Touch::read(0, PAGE, 1)).unwrap();
    match touch.wait_timeout(Duration::from_millis(300)) {
        Err(VmmError::Timeout { request, .. }) => assert!(request.contains("touch"), "{request}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    // The vmm still lives (and answers what does not fault); the test decides to kill it.
    assert!(vmm.try_wait().unwrap().is_none());
    assert_eq!(vmm.pagemap(0, PAGE).unwrap().len(), 1);
    vmm.kill().unwrap();
    assert_eq!(vmm.wait().unwrap().signal(), Some(libc::SIGKILL));
}

#[test]
fn killing_the_vmm_mid_touch_is_an_error_not_a_hang() {
    let (_dir, vmm, mut hs) = start("kill", vec![MIB], false);
    let uffd = adopt(&mut hs);
    let touch = vmm.start_touch(Touch::read(0, 4 * PAGE, 4)).unwrap();
    next_faults(&uffd);
    vmm.kill().unwrap();
    match touch.wait() {
        Err(VmmError::Exited { status, .. }) => {
            assert_eq!(status.and_then(|s| s.signal()), Some(libc::SIGKILL));
        }
        other => panic!("expected the vmm's death, got {other:?}"),
    }
    // Later requests fail the same way, at once.
    assert!(matches!(vmm.pagemap(0, PAGE), Err(VmmError::Exited { .. })));
    // The handler's copy of the uffd now answers ESRCH (the vmm's mm is gone).
    let page = Range::new(hs.regions[0].base_host_virt_addr, PAGE, PageSize::Base4K).unwrap();
    let outcome = uffd.copy(page, &[0; PAGE as usize], CopyMode::empty());
    assert_eq!(outcome.status, Status::Gone, "{outcome:?}");
}

#[test]
fn exit_is_clean() {
    let (_dir, vmm, hs) = start("exit", vec![MIB], false);
    let status = vmm.exit().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(poll_in(&hs.stream, TIMEOUT).contains(PollFlags::HUP));
    assert!(matches!(
        vmm.touch(Touch::read(0, PAGE, 1)),
        Err(VmmError::Exited { .. })
    ));
}
