//! The vmm's KVM guest: vCPUs read and write guest memory, so the faults reach the handler
//! through KVM (as under Firecracker); per-block sums checked against the byte model; balloon
//! removes re-fault through KVM and read zeros; a vmm killed while a vCPU waits on a fault.
//! Skipped, with the reason, where /dev/kvm is unusable.

use crate::common::{
    HUGE, PAGE, SocketDir, TestHandler, accept_handshake, assert_hashes, config, free_hugepages,
    model_image, poll_in, skip,
};
use rustix::event::PollFlags;
use test_vmm::{VmmError, VmmProcess};

const MIB: u64 = 1 << 20;
const SEED: u64 = 0xc0de;

/// A vmm with a KVM guest of `vcpus` vCPUs, or `None` (after a SKIP line) without KVM.
fn start_kvm(
    test: &str,
    regions: Vec<u64>,
    hugetlb: bool,
    vcpus: u32,
) -> Option<(SocketDir, VmmProcess, crate::common::Handshake)> {
    let dir = SocketDir::new(test);
    let mut config = config(&dir, regions, hugetlb);
    config.kvm_vcpus = vcpus;
    let listener = dir.listen();
    match VmmProcess::spawn(config) {
        Ok(vmm) => {
            assert_eq!(vmm.info().kvm_vcpus, vcpus);
            let handshake = accept_handshake(&listener);
            Some((dir, vmm, handshake))
        }
        Err(VmmError::Startup { stage, message, .. }) if stage == "kvm" => {
            skip(test, &format!("no usable KVM: {message}"));
            None
        }
        Err(e) => panic!("spawn: {e}"),
    }
}

#[test]
fn kvm_guest_reads_and_writes_through_the_handler() {
    let Some((_dir, vmm, hs)) = start_kvm(
        "kvm_guest_reads_and_writes_through_the_handler",
        vec![4 * MIB, 2 * MIB, 2 * MIB],
        false,
        3,
    ) else {
        return;
    };
    let handler = TestHandler::serve(&hs, SEED, PAGE);
    let mut model = model_image(SEED, vmm.image_size(), PAGE);
    let size = vmm.image_size();

    // Every block read by three vCPUs: each page faulted once, through KVM.
    let report = vmm.kvm_touch(0, size, 3, None).unwrap();
    assert_eq!(report.sums, model.kvm_sums(0, size));
    assert_eq!(handler.installed(), size / PAGE);

    // Writes by the guest across the boundary between regions 0 and 1, seen by the process.
    let (offset, len) = (4 * MIB - 8 * PAGE, 16 * PAGE);
    let report = vmm.kvm_touch(offset, len, 2, Some(77)).unwrap();
    model.kvm_write(offset, len, 77);
    assert_eq!(report.sums, model.kvm_sums(offset, len));
    assert_hashes(&vmm.hash(0, size).unwrap(), &model, 0, size);

    // A balloon remove: KVM's mapping is dropped too, the guest re-faults and reads zeros.
    let (offset, len) = (5 * MIB, 4 * PAGE);
    vmm.madvise_dontneed(offset, len).unwrap();
    assert_eq!(handler.removes(1), [(offset, len)]);
    model.zero(offset, len);
    let report = vmm
        .kvm_touch(offset - PAGE, len + 2 * PAGE, 1, None)
        .unwrap();
    assert_eq!(report.sums, model.kvm_sums(offset - PAGE, len + 2 * PAGE));
    assert_eq!(report.sums[1..5], [0; 4]);
    assert_eq!(handler.installed(), size / PAGE + 4);

    // Asking for more vCPUs than the guest has is a typed error.
    assert!(matches!(
        vmm.kvm_touch(0, PAGE, 4, None),
        Err(VmmError::Remote(_))
    ));
}

#[test]
fn kvm_guest_on_hugetlb_pages() {
    let test = "kvm_guest_on_hugetlb_pages";
    let free = free_hugepages();
    if free < 3 {
        skip(test, &format!("HugePages_Free is {free}, the test needs 3"));
        return;
    }
    let Some((_dir, vmm, hs)) = start_kvm(test, vec![2 * HUGE, HUGE], true, 2) else {
        return;
    };
    let handler = TestHandler::serve(&hs, SEED, HUGE);
    let mut model = model_image(SEED, vmm.image_size(), HUGE);
    let size = vmm.image_size();
    let report = vmm.kvm_touch(0, size, 2, Some(5)).unwrap();
    model.kvm_write(0, size, 5);
    assert_eq!(report.sums, model.kvm_sums(0, size));
    assert_eq!(handler.installed(), 3);
    vmm.madvise_dontneed(HUGE, HUGE).unwrap();
    assert_eq!(handler.removes(1), [(HUGE, HUGE)]);
    model.zero(HUGE, HUGE);
    assert_eq!(
        vmm.kvm_touch(0, size, 1, None).unwrap().sums,
        model.kvm_sums(0, size)
    );
}

#[test]
fn vmm_killed_while_a_vcpu_waits_on_a_fault() {
    let Some((_dir, vmm, hs)) = start_kvm(
        "vmm_killed_while_a_vcpu_waits_on_a_fault",
        vec![MIB],
        false,
        1,
    ) else {
        return;
    };
    // Nobody serves: the vCPU's fault waits in the handler's queue.
    let uffd = &hs.fds[0];
    let touch = vmm.start_kvm_touch(0, PAGE, 1, None).unwrap();
    assert!(poll_in(uffd, crate::common::TIMEOUT).contains(PollFlags::IN));
    assert!(!touch.is_done());
    vmm.kill().unwrap();
    assert!(matches!(touch.wait(), Err(VmmError::Exited { .. })));
}
