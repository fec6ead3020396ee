//! Upload and download: header last, a half-uploaded generation is never restorable, a pull

// Page sets are slices of byte ranges; one range is a set of one.
#![allow(clippy::single_range_in_vec_init)]
//! into another directory gives the same snapshot, `file://` stores, URL and option errors.

use snapshot_format::LayeredSource;
use snapshot_format::snapshot_dir;
use snapshot_store::{
    CacheConfig, RemoteSource, Store, StoreConfig, StoreError, WORKING_SET_OBJECT, data_object,
    pull_dir, push_dir,
};
use test_support::TestDir;

use crate::common::{self, Fault, Match, PAGE, Stack};

#[test]
fn a_generation_whose_header_upload_failed_is_not_restorable() {
    let test = "store_half_upload";
    let Some(stack) = Stack::start(test) else {
        return;
    };
    let local = TestDir::new(test);
    let header = common::write_base(local.path(), &common::image(40, 7));
    let store = stack.store("half", common::quick_config());
    // Every PUT of the header fails: the upload stops after the data.
    stack
        .proxy
        .fail_always(Match::puts_of("/header"), Fault::Unavailable);
    let error = push_dir(local.path(), &store).unwrap_err();
    assert!(
        matches!(&error, StoreError::WriteFailed { object, .. } if object == "header"),
        "{error}"
    );
    // The data went up first; the header never did.
    let build = header.metadata().build_id;
    assert_eq!(
        store.object_len(&data_object(build)).unwrap(),
        Some(
            std::fs::metadata(snapshot_dir::data_path(local.path(), build))
                .unwrap()
                .len()
        )
    );
    assert_eq!(store.object_len("header").unwrap(), None);

    let cache = TestDir::new(&format!("{test}-cache"));
    let error = RemoteSource::open(&store, &CacheConfig::new(cache.path())).unwrap_err();
    assert!(
        matches!(&error, StoreError::NotFound { object } if object == "header"),
        "{error}"
    );
    let pulled = TestDir::new(&format!("{test}-pulled"));
    let error = pull_dir(&store, pulled.path()).unwrap_err();
    assert!(matches!(error, StoreError::NotFound { .. }), "{error}");
    assert!(!snapshot_dir::header_path(pulled.path()).exists());
}

#[test]
fn a_missing_data_object_is_named() {
    let test = "store_missing_data";
    let Some(stack) = Stack::start(test) else {
        return;
    };
    let local = TestDir::new(test);
    let header = common::write_base(local.path(), &common::image(40, 8));
    let store = stack.store("missing", StoreConfig::default());
    push_dir(local.path(), &store).unwrap();
    let object = data_object(header.metadata().build_id);
    store.delete(&object).unwrap();
    let cache = TestDir::new(&format!("{test}-cache"));
    let error = RemoteSource::open(&store, &CacheConfig::new(cache.path())).unwrap_err();
    assert!(
        matches!(&error, StoreError::NotFound { object: named } if *named == object),
        "{error}"
    );
}

#[test]
fn pushed_from_one_directory_pulled_into_another_byte_for_byte() {
    let test = "store_push_pull";
    let Some(stack) = Stack::start(test) else {
        return;
    };
    let local = TestDir::new(test);
    let memory = common::image(120, 9);
    let base = common::write_base(local.path(), &memory);
    let mut next_memory = memory.clone();
    next_memory[..PAGE as usize].fill(0x5A);
    common::write_next(local.path(), &base, &next_memory, &[0..PAGE], &[]);
    let ranges = [PAGE..3 * PAGE, 0..PAGE];
    snapshot_format::working_set::write(
        &local.path().join(WORKING_SET_OBJECT),
        &ranges,
        PAGE,
        next_memory.len() as u64,
    )
    .unwrap();
    let store = stack.store("push-pull", StoreConfig::default());
    let report = push_dir(local.path(), &store).unwrap();
    assert_eq!(report.uploaded.last().map(String::as_str), Some("header"));
    assert_eq!(report.uploaded.len(), 4, "{report:?}");

    let pulled = TestDir::new(&format!("{test}-pulled"));
    pull_dir(&store, pulled.path()).unwrap();
    let source = LayeredSource::open_dir(pulled.path()).unwrap();
    let mut whole = vec![0u8; next_memory.len()];
    source.read_into(0, &mut whole).unwrap();
    assert!(whole == next_memory, "the pulled snapshot differs");
    assert!(!pulled.path().join("header.tmp").exists());

    let cache = TestDir::new(&format!("{test}-cache"));
    let remote = RemoteSource::open(&store, &CacheConfig::new(cache.path())).unwrap();
    assert_eq!(remote.working_set().unwrap(), Some(ranges.to_vec()));
}

#[test]
fn a_file_url_store_serves_the_same_bytes() {
    let test = "store_file_url";
    let local = TestDir::new(test);
    let memory = common::image(90, 10);
    common::write_base(local.path(), &memory);
    let bucket = TestDir::new(&format!("{test}-bucket"));
    let url = format!("file://{}/gen", bucket.path().display());
    let store = Store::open(&url, StoreConfig::default()).unwrap();
    push_dir(local.path(), &store).unwrap();
    let cache = TestDir::new(&format!("{test}-cache"));
    let source = RemoteSource::open(
        &store,
        &CacheConfig::new(cache.path()).with_chunk_size(16 * 1024),
    )
    .unwrap();
    common::assert_same_bytes(local.path(), 20 * 1024, |offset, buf| {
        source.read_into(offset, buf).unwrap();
    });
    assert_eq!(source.working_set().unwrap(), None);
}

#[test]
fn bad_urls_options_and_chunk_sizes_are_named() {
    let error = Store::open("ftp://host/x", StoreConfig::default()).unwrap_err();
    assert!(matches!(error, StoreError::InvalidUrl { .. }), "{error}");
    assert!(error.to_string().contains("ftp"), "{error}");

    let secret = "very-secret-value";
    let config = StoreConfig {
        options: vec![("aws_not_a_key".into(), secret.into())],
        ..StoreConfig::default()
    };
    let error = Store::open("s3://bucket/prefix", config.clone()).unwrap_err();
    assert!(
        matches!(&error, StoreError::InvalidOption { key, .. } if key == "aws_not_a_key"),
        "{error}"
    );
    assert!(!error.to_string().contains(secret));
    assert!(!format!("{config:?}").contains(secret));

    // Credentials in a URL are never shown.
    let store = Store::open(
        "https://user:pass@example.invalid/snap?sig=abc",
        StoreConfig::default(),
    )
    .unwrap();
    assert!(
        !store.url().contains("pass") && !store.url().contains("sig"),
        "{}",
        store.url()
    );

    let dir = TestDir::new("store_bad_chunk");
    let store = Store::open(
        &format!("file://{}/s", dir.path().display()),
        StoreConfig::default(),
    )
    .unwrap();
    let error = RemoteSource::open(&store, &CacheConfig::new(dir.path()).with_chunk_size(3000))
        .unwrap_err();
    assert!(matches!(error, StoreError::InvalidCache(_)), "{error}");
}
