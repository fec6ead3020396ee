//! ESRCH after the VMM died (known failure #20): an install into the memory of a process that
//! exited fails with ESRCH, which means "stop serving", never a fatal error. The engine
//! reports `EngineExit::VmmGone`, stops, and closes cleanly. Staged two ways: a demand
//! install parked by a hook (feature `test-hooks`) while the vmm is killed, and a prefetch
//! started after the vmm died.

use crate::common::vmm::{
    MIB, Pages, assert_vmm_gone_and_close, exited_within, hugepages_or_skip, serve,
};
use test_support::TIMEOUT;
use test_vmm::Touch;
use uffd_engine::EngineConfig;

const HUGE: u64 = 2 * MIB;

fn vmm_gone_before_prefetch(test: &str, pages: Pages, regions: Vec<u64>) {
    let s = serve(test, pages, regions, EngineConfig::default());
    s.vmm.touch(Touch::read(0, s.page, 1)).unwrap();
    s.vmm.kill().unwrap();
    s.vmm.wait().expect("the vmm exits");
    assert!(exited_within(&s.watch, TIMEOUT));
    let report = s.engine.prefetch(std::iter::once(0..s.size)).wait(s.page);
    assert_eq!(report.installed_pages, 0, "{report:?}");
    assert_vmm_gone_and_close(s);
}

#[test]
fn vmm_gone_before_prefetch_4k() {
    vmm_gone_before_prefetch("gone-prefetch-4k", Pages::Base, vec![2 * MIB, MIB]);
}

#[test]
fn vmm_gone_before_prefetch_2m() {
    if hugepages_or_skip("vmm_gone_before_prefetch_2m", 2) {
        vmm_gone_before_prefetch("gone-prefetch-2m", Pages::Huge, vec![HUGE, HUGE]);
    }
}
