//! Races across a process boundary, staged deterministically with hook points (feature
//! `test-hooks`): an install already past its state check when the VMM madvises the same page
//! away. The madvise must return (the reader never waits on the settle lock, known failure
//! #2), and once it has returned the page must read zeros, never the snapshot bytes the
//! install was about to copy (known failure #1 by another interleaving: the REMOVE is read,
//! and the VMM zaps the page, between the installer's state check and its COPY).

#[cfg(feature = "test-hooks")]
mod races {
    use test_vmm::Touch;
    use uffd_engine::EngineConfig;
    use uffd_engine::HookPoint;

    use crate::common::parker::Parker;
    use crate::common::vmm::{MIB, Pages, TIMEOUT, hugepages_or_skip, model_image, serve};

    /// A vmm thread reads `page`; the reader serving it parks at `point` (settle read lock
    /// held, state already read as Missing); the VMM madvises the page away and the madvise
    /// returns; the installer goes on. Afterwards the page reads zeros.
    fn remove_during_install(
        test: &str,
        pages: Pages,
        regions: Vec<u64>,
        page: u64,
        point: HookPoint,
    ) {
        let (hook, parker) = Parker::new(point, page * pages.bytes(), Some("uffd-reader"));
        let config = EngineConfig {
            hook: Some(hook),
            ..EngineConfig::default()
        };
        let s = serve(test, pages, regions, config);
        let model = model_image(s.size, s.page);
        let p = s.page;
        let touch = s.vmm.start_touch(Touch::read(page * p, p, 1)).unwrap();
        parker.wait_parked();
        // The other reader reads the REMOVE; the VMM zaps the (absent) page and returns.
        s.vmm
            .start_madvise_dontneed(page * p, p)
            .unwrap()
            .wait_timeout(TIMEOUT)
            .expect("madvise hung behind an install in flight");
        parker.release();
        // The touch raced the madvise: it may read either.
        let word = touch.wait().unwrap().checksum;
        assert!(word == 0 || word == model.word(page * p), "{word:#x}");
        // The madvise returned before this read: zeros, whatever the install did.
        let bytes = s.vmm.read(page * p, 64).unwrap();
        assert!(
            bytes.iter().all(|&b| b == 0),
            "the page freed by madvise holds snapshot bytes again: {:02x?}",
            &bytes[..16]
        );
        s.finish();
    }

    #[test]
    fn remove_read_between_state_check_and_copy_4k() {
        remove_during_install(
            "rm-install-4k",
            Pages::Base,
            vec![2 * MIB],
            9,
            HookPoint::BeforeInstall,
        );
    }

    #[test]
    fn remove_read_between_state_check_and_copy_2m() {
        if hugepages_or_skip("remove_read_between_state_check_and_copy_2m", 2) {
            remove_during_install(
                "rm-install-2m",
                Pages::Huge,
                vec![4 * MIB],
                1,
                HookPoint::BeforeInstall,
            );
        }
    }

    #[test]
    fn remove_read_after_state_read_4k() {
        remove_during_install(
            "rm-state-4k",
            Pages::Base,
            vec![2 * MIB],
            9,
            HookPoint::AfterStateRead,
        );
    }
}
