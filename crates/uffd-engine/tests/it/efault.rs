//! A COPY whose source slice is a file mapping the kernel can no longer read (the file was
//! truncated after the slice was handed out) answers EFAULT. The engine treats it as a source
//! error (retried per page with the backoff, then fatal with every error), not as a fatal
//! install error at once.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use snapshot_format::Chunk;
use test_support::{Mapping, TestDir};
use uffd_core::PageSize;
use uffd_engine::{
    CloseWhen, Engine, EngineConfig, EngineExit, PageSource, RetryPolicy, SourceError,
};

use crate::common::{Guest, PAGE};

/// Slices of a shared mapping of a file, handed out without any check: what a source that
/// trusts its mapping gives the kernel.
struct MappedFile {
    map: Mapping,
    len: u64,
}

impl PageSource for MappedFile {
    fn size(&self) -> u64 {
        self.len
    }

    fn chunk(&self, offset: u64, max_len: u64) -> Result<Chunk<'_>, SourceError> {
        let end = (offset + max_len).min(self.len);
        // SAFETY: the range is inside the mapping, which lives as long as `self`; the slice
        // is only ever read by the kernel as a COPY source (this source's `read_into` reads
        // nothing), so a page the truncated file lost is never touched in user space.
        let slice = unsafe {
            std::slice::from_raw_parts(
                (self.map.addr() + offset) as *const u8,
                (end - offset) as usize,
            )
        };
        Ok(Chunk::Data(slice))
    }

    fn read_into(&self, offset: u64, _buf: &mut [u8]) -> Result<(), SourceError> {
        Err(SourceError(format!("not assembled here ({offset:#x})")))
    }
}

#[test]
fn efault_from_a_truncated_mapping_is_a_source_error_retried_then_fatal() {
    let pages = 16;
    let dir = TestDir::new("efault");
    let path = dir.join("memory");
    std::fs::write(&path, vec![0x5a; (pages * PAGE) as usize]).unwrap();
    let file = std::fs::File::options()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let map = Mapping::shared(file.as_fd(), (pages * PAGE) as usize);
    let source = Arc::new(MappedFile {
        map,
        len: pages * PAGE,
    });
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
    assert_eq!(guest.read_byte(1, 0), 0x5a);
    file.set_len(8 * PAGE).unwrap();
    let reader = {
        let guest = guest.clone();
        std::thread::spawn(move || guest.read_byte(12, 0))
    };
    let exit = engine
        .exits()
        .recv_timeout(test_support::TIMEOUT)
        .expect("the engine gives up on the page");
    let EngineExit::Fatal(fatal) = exit else {
        panic!("expected a fatal exit, got {exit:?}");
    };
    assert_eq!(fatal.page_offset, Some(12 * PAGE), "{fatal}");
    assert_eq!(fatal.errors.len() as u32, retry.max_cycles + 1, "{fatal}");
    assert!(fatal.errors.iter().all(|e| e.contains("EFAULT")), "{fatal}");
    assert!(
        engine.metrics().retried >= u64::from(retry.max_cycles),
        "retried as a source error"
    );
    // Unregistering releases the waiting thread (the daemon would kill the VMM instead).
    engine.close(CloseWhen::OwnerGuarantees).unwrap();
    reader.join().unwrap();
}
