//! The layered source over real files: zero-copy pieces, zero runs, chunks crossing entries, and
//! open-time errors for missing builds and short files.
#![allow(clippy::single_range_in_vec_init)]

use std::collections::HashMap;
use std::fs;

use snapshot_format::{
    Chunk, Error, Header, HeaderFormat, LayeredSource, Mapping, Metadata, Segment, snapshot_dir,
};
use test_support::{PAGE, TestDir};

use crate::common::build;

/// build 1's file: pages filled 0x10, 0x11, ...; build 2's: 0x20, 0x21, ...
fn write_files(
    dir: &std::path::Path,
    pages1: u8,
    pages2: u8,
) -> HashMap<uuid::Uuid, std::path::PathBuf> {
    let mut files = HashMap::new();
    for (b, pages, base) in [(build(1), pages1, 0x10u8), (build(2), pages2, 0x20u8)] {
        let bytes: Vec<u8> = (0..pages)
            .flat_map(|p| std::iter::repeat_n(base + p, PAGE as usize))
            .collect();
        let path = snapshot_dir::data_path(dir, b);
        fs::write(&path, bytes).unwrap();
        files.insert(b, path);
    }
    files
}

/// [0,2) build 1 pages 1..3, [2,3) zero, [3,5) build 2 pages 0..2.
fn header() -> Header {
    Header::new(
        Metadata::generation_zero(build(2), PAGE, 5 * PAGE),
        vec![
            Mapping::data(0, 2 * PAGE, build(1), PAGE),
            Mapping::zero(2 * PAGE, PAGE),
            Mapping::data(3 * PAGE, 2 * PAGE, build(2), 0),
        ],
    )
    .unwrap()
}

#[test]
fn chunks_and_bytes_come_from_the_right_file() {
    let dir = TestDir::new("source");
    let source = LayeredSource::open(header(), &write_files(dir.path(), 3, 2)).unwrap();

    assert_eq!(
        source.chunk(0, PAGE).unwrap(),
        Chunk::Data(&[0x11; PAGE as usize])
    );
    assert_eq!(source.chunk(PAGE + 10, PAGE).unwrap().len(), PAGE - 10);
    assert_eq!(source.chunk(2 * PAGE, 8 * PAGE).unwrap(), Chunk::Zero(PAGE));
    assert_eq!(
        source.chunk(4 * PAGE, PAGE).unwrap(),
        Chunk::Data(&[0x21; PAGE as usize])
    );
    assert!(matches!(
        source.chunk(5 * PAGE, 1),
        Err(Error::OutOfRange { .. })
    ));
    assert!(matches!(source.chunk(0, 0), Err(Error::OutOfRange { .. })));

    let segments = source.bytes(PAGE, 3 * PAGE).unwrap();
    assert_eq!(
        segments,
        vec![
            Segment::Data(vec![0x12; PAGE as usize].into()),
            Segment::Zero(PAGE),
            Segment::Data(vec![0x20; PAGE as usize].into()),
        ]
    );
    assert!(matches!(
        source.bytes(4 * PAGE, 2 * PAGE),
        Err(Error::OutOfRange { .. })
    ));

    let mut buf = vec![0xff; 3 * PAGE as usize];
    source.read_into(PAGE + 1, &mut buf).unwrap();
    assert_eq!(buf[0], 0x12);
    assert!(
        buf[PAGE as usize - 1..2 * PAGE as usize - 1]
            .iter()
            .all(|&b| b == 0)
    );
    assert_eq!(buf[3 * PAGE as usize - 1], 0x21);
}

#[test]
fn segments_are_views_of_the_mapping_not_copies() {
    let dir = TestDir::new("zerocopy");
    let source = LayeredSource::open(header(), &write_files(dir.path(), 3, 2)).unwrap();
    let Chunk::Data(slice) = source.chunk(3 * PAGE, PAGE).unwrap() else {
        panic!("expected data")
    };
    let segments = source.bytes(3 * PAGE, PAGE).unwrap();
    let Segment::Data(bytes) = &segments[0] else {
        panic!("expected data")
    };
    assert_eq!(bytes.as_ptr(), slice.as_ptr());
    // The view outlives the source: it owns the mapping.
    let kept = bytes.clone();
    drop(segments);
    drop(source);
    assert!(kept.iter().all(|&b| b == 0x20));
}

#[test]
fn open_rejects_a_missing_build_file() {
    let dir = TestDir::new("missing");
    let mut files = write_files(dir.path(), 3, 2);
    files.remove(&build(2));
    match LayeredSource::open(header(), &files) {
        Err(Error::MissingBuildFile { build: b }) => assert_eq!(b, build(2)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn open_rejects_a_short_data_file() {
    let dir = TestDir::new("short");
    // build 1 needs pages up to 3 (storage PAGE + 2 pages); give it 2.
    let files = write_files(dir.path(), 2, 2);
    match LayeredSource::open(header(), &files) {
        Err(Error::DataFileTooShort {
            build: b,
            needed,
            actual,
            path,
        }) => {
            assert_eq!((b, needed, actual), (build(1), 3 * PAGE, 2 * PAGE));
            assert_eq!(path, files[&build(1)]);
        }
        other => panic!("{other:?}"),
    }
    // The same check without files, from lengths alone.
    let lens = HashMap::from([(build(1), 2 * PAGE), (build(2), 2 * PAGE)]);
    assert!(matches!(
        header().validate_storage(&lens),
        Err(Error::StorageOutOfFile { needed, actual, .. }) if needed == 3 * PAGE && actual == 2 * PAGE
    ));
    let lens = HashMap::from([(build(1), 3 * PAGE), (build(2), 2 * PAGE)]);
    header().validate_storage(&lens).unwrap();
    let lens = HashMap::from([(build(1), 3 * PAGE)]);
    assert!(matches!(
        header().validate_storage(&lens),
        Err(Error::MissingBuildFile { build: b }) if b == build(2)
    ));
}

#[test]
fn open_reports_an_unreadable_path() {
    let dir = TestDir::new("unreadable");
    let mut files = write_files(dir.path(), 3, 2);
    files.insert(build(1), dir.join("does-not-exist"));
    assert!(matches!(
        LayeredSource::open(header(), &files),
        Err(Error::Io { .. })
    ));
}

#[test]
fn a_plain_memory_file_is_a_source() {
    let dir = TestDir::new("memfile");
    let path = dir.join("mem");
    let bytes: Vec<u8> = (0..4 * PAGE).map(|i| (i / PAGE) as u8 + 1).collect();
    fs::write(&path, &bytes).unwrap();
    let source = LayeredSource::open_memory_file(&path, PAGE).unwrap();
    assert_eq!(source.header().entries().len(), 1);
    assert_eq!(
        source.chunk(2 * PAGE, PAGE).unwrap(),
        Chunk::Data(&[3; PAGE as usize])
    );
    assert_eq!(source.chunk(0, 10 * PAGE).unwrap().len(), 4 * PAGE);

    fs::write(&path, vec![1u8; 100]).unwrap();
    assert!(matches!(
        LayeredSource::open_memory_file(&path, PAGE),
        Err(Error::Invalid(_))
    ));
}

#[test]
fn a_snapshot_directory_opens_in_both_header_formats() {
    let dir = TestDir::new("dir");
    write_files(dir.path(), 3, 2);
    for format in [HeaderFormat::Native, HeaderFormat::E2b] {
        snapshot_dir::write_header(&snapshot_dir::header_path(dir.path()), &header(), format)
            .unwrap();
        let source = LayeredSource::open_dir(dir.path()).unwrap();
        assert_eq!(source.header(), &header());
        assert_eq!(
            source.data_path(build(1)),
            Some(snapshot_dir::data_path(dir.path(), build(1)).as_path())
        );
    }
    // Unrelated files in the directory are ignored; a missing header is an I/O error.
    fs::write(dir.join("notes.txt"), b"hi").unwrap();
    LayeredSource::open_dir(dir.path()).unwrap();
    fs::remove_file(snapshot_dir::header_path(dir.path())).unwrap();
    assert!(matches!(
        LayeredSource::open_dir(dir.path()),
        Err(Error::Io { .. })
    ));
}

#[test]
fn a_corrupt_header_file_is_a_typed_error() {
    let dir = TestDir::new("corrupt");
    let path = snapshot_dir::header_path(dir.path());
    let mut bytes = header().encode_native();
    bytes[100] ^= 1;
    fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        snapshot_dir::read_header(&path),
        Err(Error::ChecksumMismatch { .. })
    ));
}

#[test]
fn sources_and_headers_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<LayeredSource>();
    shareable::<Header>();
    shareable::<Segment>();
}

/// A data file truncated after open: nothing more is served from it (it changed since it was
/// opened), and nothing touches the mapping, so there is no SIGBUS either.
#[test]
fn read_into_a_file_truncated_underneath_is_an_error_not_sigbus() {
    let dir = TestDir::new("truncated-read");
    let path = dir.join("memory");
    fs::write(&path, vec![0x5a; 8 * PAGE as usize]).unwrap();
    let source = LayeredSource::open_memory_file(&path, PAGE).unwrap();
    let mut buf = vec![0; PAGE as usize];
    source.read_into(6 * PAGE, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0x5a));
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(4 * PAGE)
        .unwrap();
    let error = source.read_into(6 * PAGE, &mut buf).unwrap_err();
    assert!(matches!(error, Error::FileChanged { .. }), "{error}");
    assert!(error.to_string().contains("memory"), "{error}");
    // Not even the bytes still in the file: the file is not the one opened any more.
    assert!(matches!(
        source.read_into(PAGE, &mut buf),
        Err(Error::FileChanged { .. })
    ));
    assert!(matches!(
        source.chunk(PAGE, PAGE),
        Err(Error::FileChanged { .. })
    ));
}

/// A data file rewritten in place with the same length (what `cp` over it does, or a bit
/// flipped by a write): detected by its modification time, never served.
#[test]
fn a_file_rewritten_in_place_is_never_served() {
    use std::os::unix::fs::FileExt;

    let dir = TestDir::new("rewritten");
    let path = dir.join("memory");
    fs::write(&path, vec![0x11; 4 * PAGE as usize]).unwrap();
    let source = LayeredSource::open_memory_file(&path, PAGE).unwrap();
    assert_eq!(
        source.chunk(0, PAGE).unwrap(),
        Chunk::Data(&[0x11; PAGE as usize])
    );
    let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    // A new modification time even within the file system's timestamp granularity.
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(2);
    file.write_all_at(&[0x12], 3 * PAGE).unwrap();
    file.set_modified(later).unwrap();
    let error = source.chunk(3 * PAGE, PAGE).unwrap_err();
    assert!(matches!(error, Error::FileChanged { .. }), "{error}");
    assert!(
        error.to_string().contains("changed since it was opened"),
        "{error}"
    );
}

/// A sparse memory file (Firecracker's diff snapshots are sparse): its holes are zero runs,
/// read without touching the file, its data extents are served from the file in place.
#[test]
fn a_sparse_memory_file_serves_its_holes_as_zero_runs() {
    use std::os::unix::fs::FileExt;

    let dir = TestDir::new("sparse");
    let path = dir.join("memory");
    let file = fs::File::create(&path).unwrap();
    file.set_len(16 * PAGE).unwrap();
    file.write_all_at(&[0x22; PAGE as usize], 2 * PAGE).unwrap();
    file.write_all_at(&[0x99; 2 * PAGE as usize], 9 * PAGE)
        .unwrap();
    file.sync_all().unwrap();
    // SEEK_HOLE at 0 finds the hole only where the file system reports holes.
    let first_hole = rustix::fs::seek(&file, rustix::fs::SeekFrom::Hole(0)).unwrap();
    if first_hole != 0 {
        test_support::skip(
            "a_sparse_memory_file_serves_its_holes_as_zero_runs",
            "the temp directory's file system does not report holes (SEEK_HOLE)",
        );
        return;
    }
    let source = LayeredSource::open_memory_file(&path, PAGE).unwrap();
    let spans: Vec<(u64, u64, bool)> = source
        .header()
        .entries()
        .iter()
        .map(|e| (e.offset / PAGE, e.length / PAGE, e.is_zero()))
        .collect();
    assert_eq!(
        spans,
        vec![
            (0, 2, true),
            (2, 1, false),
            (3, 6, true),
            (9, 2, false),
            (11, 5, true)
        ]
    );
    assert_eq!(source.chunk(0, 16 * PAGE).unwrap(), Chunk::Zero(2 * PAGE));
    assert_eq!(
        source.chunk(9 * PAGE, PAGE).unwrap(),
        Chunk::Data(&[0x99; PAGE as usize])
    );
    let mut all = vec![0xff; 16 * PAGE as usize];
    source.read_into(0, &mut all).unwrap();
    for (page, bytes) in all.chunks(PAGE as usize).enumerate() {
        let want = match page {
            2 => 0x22,
            9 | 10 => 0x99,
            _ => 0,
        };
        assert!(bytes.iter().all(|&b| b == want), "page {page}");
    }
}
