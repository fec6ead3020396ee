//! Graduation never guesses: only a hole in the snapshot is left to the kernel's zero fill.
//! Pages the bulk prefetch cannot copy in one piece (a 2 MiB page over 4 KiB blocks with holes
//! among them, a fault-around window across pieces) are installed by the sweep; a page whose
//! bytes cannot be read fails graduation, and the engine comes back unclosed.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use page_tracker::PageState;
use uffd_core::PageSize;
use uffd_engine::{
    CloseWhen, Engine, EngineConfig, EngineError, Extent, PageSource, RetryPolicy, SourceError,
};

use crate::common::{FlakySource, Guest, PAGE};
use test_support::hugepages_or_skip;

/// A memory image served as a generation of 4 KiB blocks is: all-zero blocks are zero runs
/// (the header's zero entries), every other block its own piece.
struct BlockSource(Vec<u8>);

impl PageSource for BlockSource {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }

    fn extent(&self, offset: u64, max_len: u64) -> Result<Extent, SourceError> {
        let end = (offset + max_len).min(self.size());
        let zero = |at: u64| {
            self.0[at as usize..(at + PAGE).min(end) as usize]
                .iter()
                .all(|&b| b == 0)
        };
        let first = zero(offset);
        let mut at = offset;
        while at < end && zero(at) == first {
            at = (at + PAGE).min(end);
        }
        Ok(if first {
            Extent::Zero(at - offset)
        } else {
            Extent::Data(at - offset)
        })
    }

    fn read_into(&self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        buf.copy_from_slice(&self.0[offset as usize..offset as usize + buf.len()]);
        Ok(())
    }
}

/// `pages` pages of `page` bytes: data, with every third 4 KiB block zero, and every fourth
/// page a hole.
fn image(pages: u64, page: u64) -> Vec<u8> {
    let mut image = vec![0u8; (pages * page) as usize];
    for (i, block) in image.chunks_mut(PAGE as usize).enumerate() {
        let in_page = i as u64 * PAGE / page;
        if in_page % 4 == 3 || i % 3 == 2 {
            continue;
        }
        for (j, b) in block.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(7) ^ (j as u8) | 1;
        }
    }
    image
}

fn graduate_every_byte(page_size: PageSize, pages: u64, config: EngineConfig) {
    let page = page_size.bytes();
    let (guest, uffd) = Guest::new(pages, page_size);
    let image = image(pages, page);
    let source = Arc::new(BlockSource(image.clone()));
    let engine = Engine::start(uffd, guest.layout(page_size), source, config).expect("start");
    // One page served on demand first, as a running guest would have.
    assert_eq!(guest.read_byte(1, 0), image[page as usize]);
    engine.close(CloseWhen::Graduate).expect("graduation");
    // Unregistered now: every byte is in place or a hole the kernel fills with zeros.
    for p in 0..pages {
        let got = guest.page_bytes(p);
        let want = &image[(p * page) as usize..((p + 1) * page) as usize];
        if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
            panic!("page {p} byte {i}: {:#x}, want {:#x}", got[i], want[i]);
        }
    }
}

#[test]
fn a_2m_guest_over_4k_blocks_graduates_every_byte() {
    if hugepages_or_skip("a_2m_guest_over_4k_blocks_graduates_every_byte", 8) {
        graduate_every_byte(PageSize::Huge2M, 8, EngineConfig::default());
    }
}

#[test]
fn a_4k_guest_over_4k_blocks_graduates_every_byte_with_fault_around() {
    let config = EngineConfig {
        fault_around_pages: 16,
        ..EngineConfig::default()
    };
    graduate_every_byte(PageSize::Base4K, 256, config);
}

#[test]
fn graduation_refuses_to_unregister_over_a_page_it_cannot_read() {
    let pages = 64;
    // A data page: holes are never read, so a failing read there would not matter.
    let failing_page = 4;
    let (guest, uffd) = Guest::new(pages, PageSize::Base4K);
    let bytes = image(pages, PAGE);
    let hole = |p: u64| {
        bytes[(p * PAGE) as usize..((p + 1) * PAGE) as usize]
            .iter()
            .all(|&b| b == 0)
    };
    let source = Arc::new(FlakySource {
        inner: Arc::new(BlockSource(bytes.clone())),
        failing_page,
        failures_left: AtomicU64::new(u64::MAX),
        reads_of_failing_page: AtomicU64::new(0),
    });
    let retry = RetryPolicy {
        max_cycles: 3,
        backoff: Duration::from_millis(1),
        jitter: Duration::from_millis(1),
    };
    let config = EngineConfig {
        retry,
        ..EngineConfig::default()
    };
    let engine = Engine::start(uffd, guest.layout(PageSize::Base4K), source, config).unwrap();
    let refused = engine
        .close(CloseWhen::Graduate)
        .expect_err("a page that cannot be read must fail graduation");
    match &refused.error {
        EngineError::Graduation {
            page_offset,
            errors,
        } => {
            assert_eq!(*page_offset, failing_page * PAGE);
            assert_eq!(errors.len() as u32, retry.max_cycles + 1, "{errors:?}");
        }
        other => panic!("wrong error: {other}"),
    }
    let engine = refused.engine;
    assert_eq!(
        engine.tracker().state(failing_page).unwrap(),
        PageState::Missing,
        "the page was neither installed nor given up to zeros"
    );
    // The pages before it were graduated: installed, holes as zero pages by the prefetch or
    // left Missing to the kernel's zero fill.
    for p in 0..failing_page {
        let state = engine.tracker().state(p).unwrap();
        if hole(p) {
            assert!(
                matches!(state, PageState::Missing | PageState::Zero),
                "page {p}: {state:?}"
            );
        } else {
            assert_eq!(state, PageState::Clean, "page {p}");
        }
    }
    engine.close(CloseWhen::OwnerGuarantees).expect("close");
    drop(guest);
}
