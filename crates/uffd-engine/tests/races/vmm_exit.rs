//! ESRCH staged with a hook: a demand install parked just before its COPY while the VMM is
//! killed and reaped (known failure #20).

use test_vmm::VmmError;
use uffd_engine::HookPoint;

use crate::common::parker::Parker;
use crate::common::vmm::{
    MIB, Pages, assert_vmm_gone_and_close, exited_within, hugepages_or_skip, serve,
};
use test_support::TIMEOUT;
use test_vmm::Touch;
use uffd_engine::EngineConfig;

const HUGE: u64 = 2 * MIB;

/// A vmm thread faults `page`; the reader serving it is parked just before its COPY; the
/// vmm is killed and reaped; released, the COPY meets ESRCH.
fn vmm_gone_during_install(test: &str, pages: Pages, regions: Vec<u64>, page: u64) {
    let (hook, parker) = Parker::new(
        HookPoint::BeforeInstall,
        page * pages.bytes(),
        Some("uffd-reader"),
    );
    let config = EngineConfig {
        hook: Some(hook),
        ..EngineConfig::default()
    };
    let s = serve(test, pages, regions, config);
    let p = s.page;
    let touch = s.vmm.start_touch(Touch::read(page * p, p, 1)).unwrap();
    parker.wait_parked();
    s.vmm.kill().unwrap();
    // The touch ends with the vmm, not with a timeout.
    match touch.wait() {
        Err(VmmError::Exited { .. }) => {}
        other => panic!("the touch of a killed vmm answered {other:?}"),
    }
    assert!(exited_within(&s.watch, TIMEOUT));
    parker.release();
    assert_vmm_gone_and_close(s);
}

#[test]
fn vmm_gone_during_install_4k() {
    vmm_gone_during_install("gone-install-4k", Pages::Base, vec![2 * MIB, MIB], 600);
}

#[test]
fn vmm_gone_during_install_2m() {
    if hugepages_or_skip("vmm_gone_during_install_2m", 2) {
        vmm_gone_during_install("gone-install-2m", Pages::Huge, vec![HUGE, HUGE], 1);
    }
}
