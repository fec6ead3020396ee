//! A short read from storage: the read of a page's block returns only its first half. The
//! kernel takes a short read of a cached FUSE file as the file's end: it zero-fills the rest
//! of the page in the page cache and shrinks the file's size. The engine must never hand the
//! guest that page with zeros where the snapshot has data: either the page arrives exact
//! (read again) or the engine stops with a fatal error and the page is never installed.
//!
//! While the engine handed the file's mapping to the kernel's COPY, the page was served with
//! its second half zeros: the size check (one `fstat`) ran before the COPY and the short read
//! shrank the file inside it. The engine now reads pages into its own buffers: the short
//! `pread` is a source error, and the shrunken file is `FileChanged` on every retry.

use test_fuse::Fault;
use test_vmm::{Touch, VmmError};
use uffd_engine::{CloseWhen, EngineConfig, EngineExit};
use uffd_handshake::open_pidfd;

use crate::common::fuse::{FuseServed, IMAGE, serve_over_fuse};
use crate::common::vmm::{MIB, Pages, TIMEOUT, assert_hashes, model_image};

#[test]
fn fuse_a_short_read_never_serves_zeros_4k() {
    let Some(f) = serve_over_fuse(
        "fuse-short-4k",
        Pages::Base,
        vec![2 * MIB],
        EngineConfig::default(),
    ) else {
        return;
    };
    let page = 100;
    let block = f.block_of(page);
    let half = (block.end - block.start) / 2;
    let rule = f
        .mount
        .inject(IMAGE, block.start + half..block.end, Fault::ShortNext(1));
    let FuseServed {
        served: s,
        mount: _mount,
        dir: _dir,
    } = f;
    let model = model_image(s.size, s.page);
    let p = s.page;
    let touched = s
        .vmm
        .start_touch(Touch::read(page * p, p, 1))
        .unwrap()
        .wait_timeout(TIMEOUT);
    assert_eq!(rule.counts().shortened, 1, "{rule:?}");
    match touched {
        Ok(_) => {
            let bytes = s.vmm.read(page * p, p).unwrap();
            let expected = &model.bytes[(page * p) as usize..((page + 1) * p) as usize];
            let zeroed = bytes
                .iter()
                .zip(expected)
                .filter(|&(got, want)| *got == 0 && *want != 0)
                .count();
            assert_eq!(
                zeroed, 0,
                "page {page} was served with {zeroed} zero bytes where the snapshot has data"
            );
            assert_hashes(&s.vmm.hash(page * p, p).unwrap(), &model, page * p, p);
        }
        Err(VmmError::Timeout { .. }) => {
            let exit = s.engine.exits().try_recv();
            assert!(
                matches!(exit, Ok(EngineExit::Fatal(_))),
                "the page was neither served nor given up on: {exit:?}"
            );
            let flags = s.vmm.pagemap(page * p, p).unwrap();
            assert!(flags.iter().all(|f| !f.present()), "the page is present");
        }
        Err(e) => panic!("the touch failed: {e}"),
    }
    let pid = i32::try_from(s.vmm.pid()).expect("pid");
    let pidfd = open_pidfd(pid).expect("pidfd of the vmm");
    s.engine
        .close(CloseWhen::KillVmm { pidfd })
        .expect("close by killing the vmm");
}
