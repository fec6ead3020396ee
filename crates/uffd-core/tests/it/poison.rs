//! UFFDIO_POISON: the op itself completes, a poisoned PTE refuses POISON and ZEROPAGE but not
//! COPY, and touching it kills the toucher with SIGBUS (shown in a child process).

use std::os::unix::process::ExitStatusExt;

use rustix::process::{DumpableBehavior, set_dumpable_behavior};
use test_support::{PAGE, Region};
use uffd_core::{CopyMode, Features, PoisonMode, RegisterMode, Status, ZeropageMode};

use crate::common::{ChildProc, PAGE_LEN, assert_complete, child_role, pattern};

const SIGBUS_TEST: &str = "touching_a_poisoned_page_raises_sigbus";

/// Child role: poison a page of its own registered memory, then touch it.
fn toucher_child() {
    let region = Region::new(2, Features::POISON, RegisterMode::MISSING);
    let outcome = region.uffd.poison(region.page(0), PoisonMode::empty());
    assert_eq!(outcome.status, Status::Complete, "{outcome:?}");
    assert_eq!(outcome.done, PAGE);
    // No core file for the expected crash.
    set_dumpable_behavior(DumpableBehavior::NotDumpable).expect("PR_SET_DUMPABLE");
    eprintln!("child: poisoned, touching");
    let byte = region.map.read(100);
    panic!("child: read {byte:#x} from a poisoned page and survived");
}

#[test]
fn touching_a_poisoned_page_raises_sigbus() {
    if child_role().as_deref() == Some("poison-toucher") {
        toucher_child();
        return;
    }
    let child = ChildProc::spawn(module_path!(), SIGBUS_TEST, "poison-toucher");
    let (status, output) = child.finish();
    assert_eq!(
        status.signal(),
        Some(libc::SIGBUS),
        "child should die of SIGBUS: {status}\n{output}"
    );
    assert!(output.contains("child: poisoned, touching"), "{output}");
}

#[test]
fn poison_completes_and_only_copy_replaces_the_marker() {
    let region = Region::new(4, Features::POISON, RegisterMode::MISSING);
    let outcome = region.uffd.poison(region.pages(0, 2), PoisonMode::empty());
    assert_eq!(outcome.status, Status::Complete, "{outcome:?}");
    assert_eq!((outcome.requested, outcome.done), (2 * PAGE, 2 * PAGE));

    // Poisoning a poisoned page: EEXIST (the kernel refuses to overwrite any PTE marker).
    let outcome = region.uffd.poison(region.page(1), PoisonMode::empty());
    assert_eq!(
        (outcome.status, outcome.done),
        (Status::Exists, 0),
        "{outcome:?}"
    );
    // ZEROPAGE does not replace the marker either.
    let outcome = region.uffd.zeropage(region.page(0), ZeropageMode::empty());
    assert_eq!(
        (outcome.status, outcome.done),
        (Status::Exists, 0),
        "{outcome:?}"
    );
    // COPY does: it treats a marker as an empty PTE, so a poisoned page can be refilled.
    let refill = pattern(1, PAGE_LEN);
    let outcome = region.uffd.copy(region.page(1), &refill, CopyMode::empty());
    assert_eq!(outcome.status, Status::Complete, "{outcome:?}");
    assert_eq!(region.map.read_bytes(PAGE_LEN, PAGE_LEN), refill);
    // A present page cannot be poisoned.
    let outcome = region.uffd.poison(region.page(1), PoisonMode::empty());
    assert_eq!(
        (outcome.status, outcome.done),
        (Status::Exists, 0),
        "{outcome:?}"
    );

    // The neighbour is untouched.
    let bytes = pattern(2, PAGE_LEN);
    assert_complete(region.uffd.copy(region.page(3), &bytes, CopyMode::empty()));
    assert_eq!(region.map.read_bytes(3 * PAGE_LEN, PAGE_LEN), bytes);

    // Poisoning up to a present page stops there: the prefix is reported as EAGAIN.
    let outcome = region.uffd.poison(region.pages(2, 2), PoisonMode::empty());
    assert_eq!(outcome.status, Status::Again, "{outcome:?}");
    assert_eq!(outcome.done, PAGE);
    // Page 2 was poisoned (a missing page would take the poison).
    let outcome = region.uffd.poison(region.page(2), PoisonMode::empty());
    assert_eq!(
        outcome.status,
        Status::Exists,
        "page 2 was poisoned: {outcome:?}"
    );
}

#[test]
fn poison_is_not_gated_on_the_feature_bit() {
    // The kernel advertises UFFD_FEATURE_POISON but does not require it for UFFDIO_POISON.
    let region = Region::new(1, Features::empty(), RegisterMode::MISSING);
    let outcome = region.uffd.poison(region.page(0), PoisonMode::empty());
    assert_eq!(outcome.status, Status::Complete, "{outcome:?}");
    assert_eq!(outcome.done, PAGE);
}
