//! Reads through the mount: passed through, failed N times, failed always, short, stalled
//! until released; and the mount goes away on drop, also while a file is still open.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use test_fuse::{Fault, FuseMount, ReadCounts};
use test_support::{PAGE, TIMEOUT, TestDir};

const PAGES: u64 = 64;

/// The byte at `offset` of the test file (never zero).
fn byte(offset: u64) -> u8 {
    (offset % 251 + 1) as u8
}

/// A test directory with a backing file `data` of [`PAGES`] pages mounted, or `None` after a
/// skip line.
fn mounted(test: &str) -> Option<(TestDir, FuseMount)> {
    if !test_fuse::fuse_or_skip(test) {
        return None;
    }
    let dir = TestDir::new(test);
    std::fs::create_dir(dir.join("backing")).unwrap();
    std::fs::create_dir(dir.join("mnt")).unwrap();
    let bytes: Vec<u8> = (0..PAGES * PAGE).map(byte).collect();
    std::fs::write(dir.join("backing").join("data"), bytes).unwrap();
    let mount = FuseMount::mount(&dir.join("backing"), &dir.join("mnt")).expect("mount");
    Some((dir, mount))
}

fn read_page(file: &File, page: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; PAGE as usize];
    let n = file.read_at(&mut buf, page * PAGE)?;
    buf.truncate(n);
    Ok(buf)
}

fn expected_page(page: u64) -> Vec<u8> {
    (page * PAGE..(page + 1) * PAGE).map(byte).collect()
}

#[test]
fn reads_pass_through_exactly() {
    let Some((_dir, mount)) = mounted("fuse-pass") else {
        return;
    };
    let bytes = std::fs::read(mount.path("data")).unwrap();
    assert_eq!(bytes.len() as u64, PAGES * PAGE);
    assert!(bytes.iter().enumerate().all(|(i, b)| *b == byte(i as u64)));
    let counts = mount.counts();
    assert!(counts.reads >= 1, "{counts:?}");
    assert_eq!(counts.reads, counts.served, "{counts:?}");
    assert!(
        File::options()
            .write(true)
            .open(mount.path("data"))
            .is_err()
    );
    assert!(!mount.path("absent").exists());
}

#[test]
fn the_next_n_reads_fail_then_the_bytes_are_served() {
    let Some((_dir, mount)) = mounted("fuse-fail-next") else {
        return;
    };
    let failing = mount.inject("data", 5 * PAGE..6 * PAGE, Fault::FailNext(3));
    let file = File::open(mount.path("data")).unwrap();
    // Another page is not touched by the rule.
    assert_eq!(read_page(&file, 1).unwrap(), expected_page(1));
    let mut errors = 0;
    let served = loop {
        match read_page(&file, 5) {
            Ok(bytes) => break bytes,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc_eio()), "{e}");
                errors += 1;
                assert!(errors <= 3, "more failed reads than injected");
            }
        }
    };
    assert_eq!(served, expected_page(5));
    assert!(errors >= 1, "no read failed");
    let counts = failing.counts();
    assert_eq!(counts.failed, 3, "{counts:?}");
    assert!(!failing.is_active());
    assert!(
        failing
            .matched()
            .iter()
            .all(|r| r.start < 6 * PAGE && 5 * PAGE < r.end),
        "{:?}",
        failing.matched()
    );
    assert_eq!(mount.counts().failed, 3);
}

#[test]
fn failing_always_fails_every_read_of_the_range_only() {
    let Some((_dir, mount)) = mounted("fuse-fail-always") else {
        return;
    };
    let failing = mount.inject("data", 9 * PAGE..10 * PAGE, Fault::FailAlways);
    let file = File::open(mount.path("data")).unwrap();
    for _ in 0..4 {
        assert!(read_page(&file, 9).is_err());
    }
    assert_eq!(read_page(&file, 8).unwrap(), expected_page(8));
    assert_eq!(read_page(&file, 10).unwrap(), expected_page(10));
    assert!(failing.counts().failed >= 4, "{:?}", failing.counts());
    assert!(failing.is_active());
}

/// A short read of a cached FUSE file is its end as far as the kernel knows: the reader
/// gets the bytes before the range and no more.
#[test]
fn a_short_read_ends_at_the_range() {
    let Some((_dir, mount)) = mounted("fuse-short") else {
        return;
    };
    let short = mount.inject("data", 3 * PAGE + 100..4 * PAGE, Fault::ShortNext(1));
    let file = File::open(mount.path("data")).unwrap();
    let bytes = read_page(&file, 3).unwrap();
    assert_eq!(bytes, expected_page(3)[..100].to_vec());
    assert_eq!(short.counts().shortened, 1);
}

#[test]
fn a_stalled_read_waits_for_its_release_while_other_reads_are_served() {
    let Some((_dir, mount)) = mounted("fuse-stall") else {
        return;
    };
    let stall = mount.inject("data", 20 * PAGE..21 * PAGE, Fault::Stall);
    let file = std::sync::Arc::new(File::open(mount.path("data")).unwrap());
    let stalled = {
        let file = file.clone();
        test_support::spawn("stalled read", move || read_page(&file, 20))
    };
    assert!(
        stall.wait_held(1, TIMEOUT),
        "the read never reached the stall"
    );
    // Held by the server: other reads of the same file go on meanwhile.
    assert_eq!(read_page(&file, 40).unwrap(), expected_page(40));
    assert_eq!(stall.held(), 1, "still held after the other read");
    stalled.assert_blocked();
    stall.release();
    assert_eq!(stalled.wait().unwrap(), expected_page(20));
    let counts = stall.counts();
    assert_eq!((counts.stalled, counts.served), (1, 1), "{counts:?}");
    assert!(!stall.wait_held(1, Duration::ZERO));
}

/// Dropping the mount while a file is still open (a test that panicked with its engine
/// alive) detaches it and aborts the connection: the drop returns, and the open file's
/// reads fail instead of hanging.
#[test]
fn dropping_the_mount_with_a_file_open_returns_and_fails_its_reads() {
    let Some((dir, mount)) = mounted("fuse-drop-busy") else {
        return;
    };
    let file = File::open(mount.path("data")).unwrap();
    assert_eq!(read_page(&file, 0).unwrap(), expected_page(0));
    let stall = mount.inject("data", 30 * PAGE..31 * PAGE, Fault::Stall);
    assert_eq!(stall.counts(), ReadCounts::default());
    drop(mount);
    assert!(read_page(&file, 30).is_err(), "read after the abort");
    assert!(!dir.join("mnt").join("data").exists(), "still mounted");
}

#[test]
fn dropping_an_idle_mount_unmounts_it() {
    let Some((dir, mount)) = mounted("fuse-drop") else {
        return;
    };
    assert!(mount.path("data").exists());
    drop(mount);
    assert!(!dir.join("mnt").join("data").exists(), "still mounted");
}

fn libc_eio() -> i32 {
    rustix::io::Errno::IO.raw_os_error()
}
