//! Reads verified against the data checksums, over real files: a flipped bit, a file truncated,
//! truncated and extended back, or rewritten in place is an error and never wrong bytes;
//! `read_resident` answers from the page cache only (a dropped cache is `false`, never a wait).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use snapshot_format::{Error, Header, LayeredSource, snapshot_dir, write_generation_zero};
use test_support::{PAGE, TestDir};

use crate::common::build;

const PAGES: u64 = 16;

/// Every page non-zero and different: page `p` byte `i` is `p * 7 + i`, or 1.
fn image() -> Vec<u8> {
    (0..PAGES * PAGE)
        .map(|i| ((i / PAGE * 7 + i % PAGE) % 255) as u8 | 1)
        .collect()
}

/// Generation 0 of [`image`] written by the writer (with checksums) into `dir`.
fn written(dir: &Path) -> (Header, PathBuf) {
    let path = snapshot_dir::data_path(dir, build(1));
    let mut file = File::create(&path).unwrap();
    let header = write_generation_zero(&image()[..], PAGE, build(1), &mut file).unwrap();
    file.sync_all().unwrap();
    assert!(header.has_checksums(build(1)));
    (header, path)
}

fn open(header: &Header, path: &Path) -> LayeredSource {
    LayeredSource::open(
        header.clone(),
        &HashMap::from([(build(1), path.to_path_buf())]),
    )
    .unwrap()
}

fn overwrite(path: &Path, at: u64, bytes: &[u8]) {
    let file = OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, at).unwrap();
    file.sync_all().unwrap();
}

/// The errors of reading `len` bytes at `offset` both ways, blocking first; neither may
/// succeed. Where the file system has no page-cache-only reads (FUSE), `read_resident` must
/// answer `false` and only the blocking error is returned.
fn both_fail(source: &LayeredSource, offset: u64, len: usize) -> Vec<Error> {
    let mut buf = vec![0u8; len];
    let blocking = source.read_into(offset, &mut buf).unwrap_err();
    if !source.can_read_resident() {
        assert!(!source.read_resident(offset, &mut buf).unwrap());
        return vec![blocking];
    }
    vec![
        blocking,
        source.read_resident(offset, &mut buf).unwrap_err(),
    ]
}

#[test]
fn verified_reads_serve_the_written_bytes() {
    let dir = TestDir::new("verified-reads");
    let (header, path) = written(dir.path());
    let source = open(&header, &path);
    let image = image();
    for (offset, len) in [
        (0, PAGE),
        (5 * PAGE, 3 * PAGE),
        (PAGE + 100, 10),
        (0, PAGES * PAGE),
    ] {
        let mut buf = vec![0u8; len as usize];
        source.read_into(offset, &mut buf).unwrap();
        assert_eq!(buf, image[offset as usize..(offset + len) as usize]);
        buf.fill(0);
        // Just written and read: resident (where the file system can tell).
        let resident = source.read_resident(offset, &mut buf).unwrap();
        assert_eq!(resident, source.can_read_resident());
        if resident {
            assert_eq!(buf, image[offset as usize..(offset + len) as usize]);
        }
    }
}

#[test]
fn a_flipped_bit_is_a_checksum_mismatch_naming_the_unit() {
    let dir = TestDir::new("flipped-bit");
    let (header, path) = written(dir.path());
    let source = open(&header, &path);
    let mut byte = [0u8];
    File::open(&path)
        .unwrap()
        .read_exact_at(&mut byte, 3 * PAGE + 17)
        .unwrap();
    overwrite(&path, 3 * PAGE + 17, &[byte[0] ^ 0x04]);

    let errors = both_fail(&source, 3 * PAGE, PAGE as usize);
    let message = errors[0].to_string();
    assert!(
        message.contains("CRC32") && !message.contains("  "),
        "{message}"
    );
    for err in errors {
        match err {
            Error::DataChecksumMismatch {
                build: b,
                path: p,
                file_offset,
                expected,
                found,
            } => {
                assert_eq!(
                    (b, p.as_path(), file_offset),
                    (build(1), path.as_path(), 3 * PAGE)
                );
                assert_ne!(expected, found);
            }
            other => panic!("expected a checksum mismatch, got {other:?}"),
        }
    }
    // A read of other bytes of the same unit reads and checks the whole unit.
    for err in both_fail(&source, 3 * PAGE + 2000, 8) {
        assert!(matches!(err, Error::DataChecksumMismatch { .. }), "{err:?}");
    }
    // A range spanning the unit fails; its neighbours are served.
    assert!(matches!(
        both_fail(&source, 2 * PAGE, 3 * PAGE as usize)[0],
        Error::DataChecksumMismatch { file_offset, .. } if file_offset == 3 * PAGE
    ));
    let mut buf = vec![0u8; PAGE as usize];
    source.read_into(4 * PAGE, &mut buf).unwrap();
    assert_eq!(buf, image()[4 * PAGE as usize..5 * PAGE as usize]);
}

#[test]
fn a_data_file_of_the_wrong_length_is_refused_at_open() {
    let dir = TestDir::new("wrong-length");
    let (header, path) = written(dir.path());
    let files = HashMap::from([(build(1), path.clone())]);
    let extended = OpenOptions::new().append(true).open(&path).unwrap();
    extended.set_len(PAGES * PAGE + 1).unwrap();
    assert!(matches!(
        LayeredSource::open(header.clone(), &files),
        Err(Error::DataFileLength { expected, actual, .. })
            if expected == PAGES * PAGE && actual == PAGES * PAGE + 1
    ));
    // Shorter than the entries need is refused before the checksums are looked at.
    extended.set_len(PAGES * PAGE - PAGE).unwrap();
    assert!(matches!(
        LayeredSource::open(header, &files),
        Err(Error::DataFileTooShort { .. })
    ));
}

#[test]
fn a_file_truncated_underneath_is_an_error_never_wrong_bytes() {
    let dir = TestDir::new("truncated-verified");
    let (header, path) = written(dir.path());
    let source = open(&header, &path);
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(8 * PAGE).unwrap();
    for err in both_fail(&source, 10 * PAGE, PAGE as usize) {
        assert!(
            matches!(&err, Error::Io { source, .. }
                if source.kind() == std::io::ErrorKind::UnexpectedEof),
            "{err:?}"
        );
    }
    // Extended back to its length with zeros: the length is right, the bytes are not.
    file.set_len(PAGES * PAGE).unwrap();
    for err in both_fail(&source, 10 * PAGE, PAGE as usize) {
        assert!(
            matches!(err, Error::DataChecksumMismatch { file_offset, .. } if file_offset == 10 * PAGE),
            "{err:?}"
        );
    }
    // The bytes before the cut were never lost and are still served.
    let mut buf = vec![0u8; PAGE as usize];
    source.read_into(7 * PAGE, &mut buf).unwrap();
    assert_eq!(buf, image()[7 * PAGE as usize..8 * PAGE as usize]);
}

#[test]
fn a_file_rewritten_in_place_serves_only_bytes_that_match() {
    let dir = TestDir::new("rewritten-verified");
    let (header, path) = written(dir.path());
    let source = open(&header, &path);
    // Page 6 rewritten with other bytes, page 9 rewritten with its own: the file's size and
    // modification time changed either way, but only page 6's bytes are wrong.
    overwrite(&path, 6 * PAGE, &vec![0xEE; PAGE as usize]);
    let own = image()[9 * PAGE as usize..10 * PAGE as usize].to_vec();
    overwrite(&path, 9 * PAGE, &own);
    assert!(matches!(
        both_fail(&source, 6 * PAGE, PAGE as usize)[0],
        Error::DataChecksumMismatch { .. }
    ));
    let mut buf = vec![0u8; PAGE as usize];
    source.read_into(9 * PAGE, &mut buf).unwrap();
    assert_eq!(buf, own);
}

#[test]
fn data_without_checksums_still_needs_an_unchanged_file() {
    let dir = TestDir::new("unchecked-changed");
    let (header, path) = written(dir.path());
    // The same mapping without tables, as an E2B header would give it.
    let source = open(&header.clone().without_checksums(), &path);
    let mut buf = vec![0u8; PAGE as usize];
    source.read_into(0, &mut buf).unwrap();
    assert_eq!(buf, image()[..PAGE as usize]);
    let file = OpenOptions::new().append(true).open(&path).unwrap();
    file.set_len(PAGES * PAGE + PAGE).unwrap();
    for err in both_fail(&source, 0, PAGE as usize) {
        assert!(matches!(err, Error::FileChanged { .. }), "{err:?}");
    }
}

/// Drops `path`'s pages from the page cache (the file is clean: written and synced).
fn drop_cache(path: &Path) {
    let file = File::open(path).unwrap();
    file.sync_all().unwrap();
    rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
}

#[test]
fn read_resident_answers_from_the_page_cache_only() {
    let dir = TestDir::new("resident");
    let (header, path) = written(dir.path());
    let source = open(&header, &path);
    if !source.can_read_resident() {
        test_support::skip(
            "read_resident_answers_from_the_page_cache_only",
            "the test directory's file system has no page-cache-only reads (RWF_NOWAIT)",
        );
        return;
    }
    let image = image();
    let mut buf = vec![0u8; PAGE as usize];
    assert!(source.read_resident(2 * PAGE, &mut buf).unwrap());
    assert_eq!(buf, image[2 * PAGE as usize..3 * PAGE as usize]);

    drop_cache(&path);
    // The first read of a dropped page cannot be answered without the disk.
    let mut buf = vec![0u8; PAGE as usize];
    assert!(!source.read_resident(12 * PAGE, &mut buf).unwrap());
    // An empty read never needs the disk.
    assert!(source.read_resident(12 * PAGE, &mut []).unwrap());

    // A blocking read brings it in; from then on it is resident.
    source.read_into(12 * PAGE, &mut buf).unwrap();
    assert_eq!(buf, image[12 * PAGE as usize..13 * PAGE as usize]);
    buf.fill(0);
    assert!(source.read_resident(12 * PAGE, &mut buf).unwrap());
    assert_eq!(buf, image[12 * PAGE as usize..13 * PAGE as usize]);
}

/// tmpfs answers `RWF_NOWAIT` reads with EOPNOTSUPP, but its pages are memory: the source
/// finds that at open and `read_resident` reads tmpfs files as a plain read, never waiting.
#[test]
fn on_tmpfs_read_resident_reads_memory() {
    let shm = Path::new("/dev/shm");
    let on_tmpfs = rustix::fs::statfs(shm).is_ok_and(|fs| fs.f_type as u64 == 0x0102_1994);
    if !on_tmpfs {
        test_support::skip(
            "on_tmpfs_read_resident_reads_memory",
            "no tmpfs at /dev/shm",
        );
        return;
    }
    let dir = shm.join(format!("snapshot-format-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (header, path) = written(&dir);
    let source = open(&header, &path);
    assert!(source.can_read_resident());
    let mut buf = vec![0u8; PAGE as usize];
    assert!(source.read_resident(PAGE, &mut buf).unwrap());
    assert_eq!(buf, image()[PAGE as usize..2 * PAGE as usize]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_2m_page_is_verified_unit_by_unit_across_its_whole_length() {
    const HUGE: u64 = 2 << 20;
    let dir = TestDir::new("verified-huge");
    let path = snapshot_dir::data_path(dir.path(), build(1));
    let image: Vec<u8> = (0..2 * HUGE).map(|i| (i % 253) as u8 | 1).collect();
    let mut file = File::create(&path).unwrap();
    let header = write_generation_zero(&image[..], HUGE, build(1), &mut file).unwrap();
    assert_eq!(header.checksums_of(build(1)).unwrap().unit(), PAGE);
    let source = open(&header, &path);
    let mut buf = vec![0u8; HUGE as usize];
    source.read_into(0, &mut buf).unwrap();
    assert_eq!(buf, image[..HUGE as usize]);
    // A flip three quarters into the second huge page, far past the first read window.
    let flip = HUGE + HUGE * 3 / 4 + 5;
    overwrite(&path, flip, &[image[flip as usize] ^ 0x80]);
    for err in both_fail(&source, HUGE, HUGE as usize) {
        assert!(
            matches!(err, Error::DataChecksumMismatch { file_offset, .. }
                if file_offset == flip / PAGE * PAGE),
            "{err:?}"
        );
    }
    source.read_into(0, &mut buf).unwrap();
    assert_eq!(buf, image[..HUGE as usize]);
}
