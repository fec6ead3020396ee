//! ESRCH after the VMM died (known failure #20): an install into the memory of a process that
//! exited fails with ESRCH, which means "stop serving", never a fatal error. The engine
//! reports `EngineExit::PeerGone`, stops, and closes cleanly. Staged two ways: a demand
//! install parked by a hook (feature `test-hooks`) while the peer is killed, and a prefetch
//! started after the peer died.

mod common;
#[path = "common/peer.rs"]
mod peer;

use peer::{MIB, Pages, Served, TIMEOUT, exited_within, hugepages_or_skip, serve};
use uffd_handler::peer::Touch;
use uffd_handler::{CloseWhen, EngineConfig, EngineExit};

const HUGE: u64 = 2 * MIB;

/// The engine's one exit is `PeerGone`, no fatal error was raised, and it closes.
fn assert_peer_gone_and_close(s: Served) {
    let exit = s
        .engine
        .exits()
        .recv_timeout(TIMEOUT)
        .expect("no exit signal after ESRCH");
    assert_eq!(exit, EngineExit::PeerGone);
    assert!(s.engine.exits().try_recv().is_err(), "one exit signal");
    let m = s.engine.metrics();
    assert_eq!(m.fatal, 0, "{m:?}");
    // The VMM is gone: nothing can fault on its memory any more.
    s.engine.close(CloseWhen::OwnerGuarantees).expect("close");
}

fn peer_gone_before_prefetch(test: &str, pages: Pages, regions: Vec<u64>) {
    let s = serve(test, pages, regions, EngineConfig::default());
    s.peer.touch(Touch::read(0, s.page, 1)).unwrap();
    s.peer.kill().unwrap();
    s.peer.wait().expect("the peer exits");
    assert!(exited_within(&s.watch, TIMEOUT));
    let report = s.engine.prefetch(std::iter::once(0..s.size)).wait(s.page);
    assert_eq!(report.installed_pages, 0, "{report:?}");
    assert_peer_gone_and_close(s);
}

#[test]
fn peer_gone_before_prefetch_4k() {
    peer_gone_before_prefetch("gone-prefetch-4k", Pages::Base, vec![2 * MIB, MIB]);
}

#[test]
fn peer_gone_before_prefetch_2m() {
    if hugepages_or_skip("peer_gone_before_prefetch_2m", 2) {
        peer_gone_before_prefetch("gone-prefetch-2m", Pages::Huge, vec![HUGE, HUGE]);
    }
}

#[cfg(feature = "test-hooks")]
mod parked {
    use uffd_handler::engine::HookPoint;
    use uffd_handler::peer::PeerError;

    use super::common::parker::Parker;
    use super::*;

    /// A peer thread faults `page`; the reader serving it is parked just before its COPY; the
    /// peer is killed and reaped; released, the COPY meets ESRCH.
    fn peer_gone_during_install(test: &str, pages: Pages, regions: Vec<u64>, page: u64) {
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
        let touch = s.peer.start_touch(Touch::read(page * p, p, 1)).unwrap();
        parker.wait_parked();
        s.peer.kill().unwrap();
        // The touch ends with the peer, not with a timeout.
        match touch.wait() {
            Err(PeerError::Exited { .. }) => {}
            other => panic!("the touch of a killed peer answered {other:?}"),
        }
        assert!(exited_within(&s.watch, TIMEOUT));
        parker.release();
        assert_peer_gone_and_close(s);
    }

    #[test]
    fn peer_gone_during_install_4k() {
        peer_gone_during_install("gone-install-4k", Pages::Base, vec![2 * MIB, MIB], 600);
    }

    #[test]
    fn peer_gone_during_install_2m() {
        if hugepages_or_skip("peer_gone_during_install_2m", 2) {
            peer_gone_during_install("gone-install-2m", Pages::Huge, vec![HUGE, HUGE], 1);
        }
    }
}
