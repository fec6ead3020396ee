//! A short read from storage through the daemon: the read of a page's block returns only its
//! first half, which the kernel turns into a zero-filled page cache page and a smaller file.
//! The VMM must never read that page with zeros where the snapshot has data: it reads the
//! page exact, or the daemon gives up (exit 3) and the VMM is killed before it reads it.
//!
//! It read the page with its second half zeros while the engine copied from the file's
//! mapping (the engine's `fuse_short` test says why).

use std::os::unix::process::ExitStatusExt;

use test_fuse::Fault;
use test_vmm::{Touch, VmmError};

use crate::common::{Daemon, MIB, PAGE, TIMEOUT, assert_hashes, exit_code, start_vmm};
use crate::fuse_storage::{block_of, path, storage};

#[test]
fn fuse_a_short_read_is_never_served_as_zeros_by_the_daemon_4k() {
    let Some((storage, model)) = storage("fuse-daemon-short-4k", 4 * MIB, PAGE) else {
        return;
    };
    let page = 300;
    let block = block_of(page, PAGE);
    let rule = storage.mount.inject(
        "memory",
        block.start + PAGE / 2..block.end,
        Fault::ShortNext(1),
    );
    let memory = storage.mount.path("memory");
    let daemon = Daemon::start(&storage.dir, &["--memory-file", path(&memory)]);
    let vmm = start_vmm(&daemon, vec![4 * MIB], false);
    match vmm.touch(Touch::read(page * PAGE, PAGE, 1)) {
        Ok(_) => {
            let bytes = vmm.read(page * PAGE, PAGE).unwrap();
            let expected = &model.bytes[(page * PAGE) as usize..((page + 1) * PAGE) as usize];
            let zeroed = bytes
                .iter()
                .zip(expected)
                .filter(|&(got, want)| *got == 0 && *want != 0)
                .count();
            assert_eq!(
                zeroed, 0,
                "the VMM read page {page} with {zeroed} zero bytes where the snapshot has data"
            );
            assert_hashes(
                &vmm.hash(page * PAGE, PAGE).unwrap(),
                &model,
                page * PAGE,
                PAGE,
            );
        }
        Err(VmmError::Exited { .. }) => {
            assert_eq!(vmm.wait().unwrap().signal(), Some(libc::SIGKILL));
            let (status, stderr) = daemon.wait(TIMEOUT);
            assert_eq!(exit_code(status, &stderr), 3, "{stderr}");
        }
        Err(e) => panic!("the touch failed: {e}"),
    }
    assert_eq!(rule.counts().shortened, 1, "{rule:?}");
}
