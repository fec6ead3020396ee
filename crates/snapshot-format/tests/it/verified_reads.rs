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

/// The error of reading `len` bytes at `offset` both ways; neither may succeed.
fn both_fail(source: &LayeredSource, offset: u64, len: usize) -> (Error, Error) {
    let mut buf = vec![0u8; len];
    let blocking = source.read_into(offset, &mut buf).unwrap_err();
    let resident = source.read_resident(offset, &mut buf).unwrap_err();
    (blocking, resident)
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
        // Just written and read: resident.
        assert!(source.read_resident(offset, &mut buf).unwrap());
        assert_eq!(buf, image[offset as usize..(offset + len) as usize]);
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

    let (blocking, resident) = both_fail(&source, 3 * PAGE, PAGE as usize);
    let message = blocking.to_string();
    assert!(
        message.contains("CRC32") && !message.contains("  "),
        "{message}"
    );
    for err in [blocking, resident] {
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
    let (blocking, _) = both_fail(&source, 3 * PAGE + 2000, 8);
    assert!(matches!(blocking, Error::DataChecksumMismatch { .. }));
    // A range spanning the unit fails; its neighbours are served.
    assert!(matches!(
        both_fail(&source, 2 * PAGE, 3 * PAGE as usize).0,
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
    let (blocking, resident) = both_fail(&source, 10 * PAGE, PAGE as usize);
    for err in [blocking, resident] {
        assert!(
            matches!(&err, Error::Io { source, .. }
                if source.kind() == std::io::ErrorKind::UnexpectedEof),
            "{err:?}"
        );
    }
    // Extended back to its length with zeros: the length is right, the bytes are not.
    file.set_len(PAGES * PAGE).unwrap();
    let (blocking, resident) = both_fail(&source, 10 * PAGE, PAGE as usize);
    assert!(
        matches!(blocking, Error::DataChecksumMismatch { file_offset, .. } if file_offset == 10 * PAGE)
    );
    assert!(matches!(resident, Error::DataChecksumMismatch { .. }));
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
        both_fail(&source, 6 * PAGE, PAGE as usize).0,
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
    assert!(source.read_resident(0, &mut buf).unwrap());
    let own = image()[..PAGE as usize].to_vec();
    assert_eq!(buf, own);
    let file = OpenOptions::new().append(true).open(&path).unwrap();
    file.set_len(PAGES * PAGE + PAGE).unwrap();
    let (blocking, resident) = both_fail(&source, 0, PAGE as usize);
    assert!(matches!(blocking, Error::FileChanged { .. }));
    assert!(matches!(resident, Error::FileChanged { .. }));
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
    let fs_type = rustix::fs::statfs(&path).unwrap().f_type;
    // tmpfs (0x01021994) keeps its pages in the cache whatever fadvise says.
    if fs_type as u64 == 0x0102_1994 {
        test_support::skip(
            "read_resident_answers_from_the_page_cache_only",
            "the test directory is on tmpfs, whose page cache cannot be dropped",
        );
        return;
    }
    let source = open(&header, &path);
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
    let (blocking, resident) = both_fail(&source, HUGE, HUGE as usize);
    for err in [blocking, resident] {
        assert!(
            matches!(err, Error::DataChecksumMismatch { file_offset, .. }
                if file_offset == flip / PAGE * PAGE),
            "{err:?}"
        );
    }
    source.read_into(0, &mut buf).unwrap();
    assert_eq!(buf, image[..HUGE as usize]);
}
