//! A memory file that changes under the engine: truncated (what a half-finished copy leaves),
//! or truncated and extended again (what `cp` over it does, the lost bytes now zeros). The
//! bytes are read with `pread` into the engine's buffers, so the loss is a source error,
//! retried per page with the backoff, then fatal with every error; never a SIGBUS, and never
//! a page of zeros in place of the snapshot's bytes.

use std::sync::Arc;
use std::time::Duration;

use snapshot_format::LayeredSource;
use test_support::TestDir;
use uffd_core::PageSize;
use uffd_engine::{CloseWhen, Engine, EngineConfig, EngineExit, RetryPolicy};

use crate::common::{Guest, PAGE, pattern};

#[derive(Debug, Clone, Copy)]
enum Change {
    Truncated,
    TruncatedAndExtended,
}

fn a_changed_file_is_a_source_error_retried_then_fatal(change: Change) {
    let pages = 16;
    let dir = TestDir::new("truncated");
    let path = dir.join("memory");
    let image: Vec<u8> = (0..pages * PAGE).map(pattern).collect();
    std::fs::write(&path, &image).unwrap();
    let source = Arc::new(LayeredSource::open_memory_file(&path, PAGE).unwrap());
    let (guest, uffd) = Guest::new(pages, PageSize::Base4K);
    let retry = RetryPolicy {
        max_cycles: 2,
        backoff: Duration::from_millis(2),
        jitter: Duration::from_millis(1),
    };
    let config = EngineConfig {
        retry,
        ..EngineConfig::default()
    };
    let engine = Engine::start(uffd, guest.layout(PageSize::Base4K), source, config).unwrap();
    assert_eq!(guest.read_byte(1, 7), pattern(PAGE + 7));
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    file.set_len(8 * PAGE).unwrap();
    if let Change::TruncatedAndExtended = change {
        file.set_len(pages * PAGE).unwrap();
    }
    let reader = {
        let guest = guest.clone();
        std::thread::spawn(move || guest.page_bytes(12))
    };
    let exit = engine
        .exits()
        .recv_timeout(test_support::TIMEOUT)
        .expect("the engine gives up on the page");
    let EngineExit::Fatal(fatal) = exit else {
        panic!("{change:?}: expected a fatal exit, got {exit:?}");
    };
    assert_eq!(fatal.page_offset, Some(12 * PAGE), "{change:?}: {fatal}");
    assert_eq!(
        fatal.errors.len() as u32,
        retry.max_cycles + 1,
        "{change:?}: {fatal}"
    );
    assert!(
        engine.metrics().retried >= u64::from(retry.max_cycles),
        "{change:?}: retried as a source error"
    );
    assert_eq!(
        engine.metrics().installed_zero,
        0,
        "{change:?}: no zero page"
    );
    // Unregistering releases the waiting thread (the daemon would kill the VMM instead); it
    // then reads the kernel's zero fill, which no handler served.
    engine.close(CloseWhen::OwnerGuarantees).unwrap();
    reader.join().unwrap();
}

#[test]
fn a_truncated_memory_file_is_a_source_error_retried_then_fatal() {
    a_changed_file_is_a_source_error_retried_then_fatal(Change::Truncated);
}

#[test]
fn a_memory_file_truncated_and_extended_is_a_source_error_retried_then_fatal() {
    a_changed_file_is_a_source_error_retried_then_fatal(Change::TruncatedAndExtended);
}
