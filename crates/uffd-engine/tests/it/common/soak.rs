//! Pieces of the randomized soak: a seeded xorshift generator, a source failing at random
//! within a per-page budget, and the world model (bytes and page states) the soak checks
//! against.
//!
//! Included by `engine_soak` as `#[path = "common/soak.rs"] mod soak;` beside `mod common;`
//! and `mod vmm;`.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use page_tracker::PageState;
use parking_lot::Mutex;
use uffd_engine::{Extent, PageSets, PageSource, SourceError};

use crate::common::vmm::{Model, model_image};

/// xorshift64*: reproducible from its seed, no dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value; mixed so nearby seeds differ).
    pub fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = step(self.0);
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `per_million` / 1e6.
    pub fn chance(&mut self, per_million: u64) -> bool {
        self.below(1_000_000) < per_million
    }

    /// A random sub-range of `range` (non-empty) at most `max` long.
    pub fn sub_range(&mut self, range: Range<u64>, max: u64) -> Range<u64> {
        let len = self.between(1, (range.end - range.start).min(max));
        let start = range.start + self.below(range.end - range.start - len + 1);
        start..start + len
    }
}

fn step(mut x: u64) -> u64 {
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    x
}

/// The soak's seed: `UFFD_SOAK_SEED` if set (to replay), else from the clock.
pub fn seed() -> u64 {
    match std::env::var("UFFD_SOAK_SEED") {
        Ok(v) => v.trim().parse().expect("UFFD_SOAK_SEED is a u64"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    }
}

/// A source like slow remote storage: some reads take up to a millisecond (`slow_per_million`
/// of them), which widens every window between a fetch and its install; the first demand read
/// fails, and other reads at random (`per_million` of them), but never more than
/// `budget` times for any page over its life, so a page always recovers within a retry bound
/// of `budget` cycles. Failures are counted by who met them (reader threads, whose failures
/// are the engine's retry cycles, or others: prefetch).
pub struct RandomFlaky {
    pub inner: Arc<dyn PageSource>,
    pub page: u64,
    pub per_million: u64,
    pub budget: u32,
    pub slow_per_million: u64,
    rng: AtomicU64,
    forced: AtomicBool,
    failed: Mutex<HashMap<u64, u32>>,
    pub reader_failures: AtomicU64,
    pub other_failures: AtomicU64,
}

impl RandomFlaky {
    /// Wraps `inner` (pages of `page` bytes).
    pub fn new(
        inner: Arc<dyn PageSource>,
        page: u64,
        per_million: u64,
        budget: u32,
        seed: u64,
    ) -> Self {
        RandomFlaky {
            inner,
            page,
            per_million,
            budget,
            slow_per_million: 0,
            rng: AtomicU64::new(Rng::new(seed).0),
            forced: AtomicBool::new(false),
            failed: Mutex::default(),
            reader_failures: AtomicU64::new(0),
            other_failures: AtomicU64::new(0),
        }
    }

    /// A random number in `0..1_000_000`.
    fn roll(&self) -> u64 {
        let old = self
            .rng
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |x| Some(step(x)))
            .unwrap_or(1);
        step(old).wrapping_mul(0x2545_f491_4f6c_dd1d) % 1_000_000
    }

    /// Whether this read of `[offset, offset + len)` fails: the first demand read does, any
    /// other on a roll, and only while every page it covers has budget (then each pays one).
    fn fails(&self, offset: u64, len: u64, reader: bool) -> bool {
        let first = reader && !self.forced.swap(true, Ordering::Relaxed);
        if !first && self.roll() >= self.per_million {
            return false;
        }
        let pages = offset / self.page..(offset + len).div_ceil(self.page);
        let mut failed = self.failed.lock();
        if pages
            .clone()
            .any(|p| failed.get(&p).copied().unwrap_or(0) >= self.budget)
        {
            return false;
        }
        for p in pages {
            *failed.entry(p).or_default() += 1;
        }
        true
    }
}

impl PageSource for RandomFlaky {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn extent(&self, offset: u64, max_len: u64) -> Result<Extent, SourceError> {
        self.inner.extent(offset, max_len)
    }

    fn read_into(&self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        let max_len = buf.len() as u64;
        let roll = self.roll();
        if roll < self.slow_per_million {
            // Storage latency, not synchronisation: nothing waits for this to end.
            let nanos = roll * 1_000_000 / self.slow_per_million;
            std::thread::sleep(std::time::Duration::from_nanos(nanos));
        }
        let reader = std::thread::current()
            .name()
            .is_some_and(|n| n.starts_with("uffd-reader"));
        if self.fails(offset, max_len, reader) {
            let counter = if reader {
                &self.reader_failures
            } else {
                &self.other_failures
            };
            counter.fetch_add(1, Ordering::Relaxed);
            return Err(SourceError(format!(
                "random storage timeout at {offset:#x}"
            )));
        }
        self.inner.read_into(offset, buf)
    }
}

/// What the guest memory and the engine's page states should be, from the commands issued.
///
/// A model state is exact where the test alone decides it; where the engine may have done more
/// on its own it is the weaker one: `Missing` also allows `Clean` (fault-around, prefetch),
/// `Removed` also allows `Zero` (a read that raced the remove and came after it).
pub struct World {
    pub bytes: Model,
    pub states: Vec<PageState>,
}

impl World {
    /// The image, every page Missing.
    pub fn new(size: u64, page: u64) -> Self {
        World {
            bytes: model_image(size, page),
            states: vec![PageState::Missing; (size / page) as usize],
        }
    }

    /// Pages read (faulted in by a read).
    pub fn read(&mut self, pages: Range<u64>) {
        for p in pages {
            let st = &mut self.states[p as usize];
            *st = match *st {
                PageState::Missing => PageState::Clean,
                PageState::Removed => PageState::Zero,
                other => other,
            };
        }
    }

    /// Bytes written at `[offset, offset + len)`.
    pub fn written(&mut self, offset: u64, len: u64) {
        let page = self.bytes.page;
        for p in offset / page..(offset + len).div_ceil(page) {
            self.states[p as usize] = PageState::Dirty;
        }
    }

    /// Pages removed.
    pub fn removed(&mut self, pages: Range<u64>) {
        let page = self.bytes.page;
        self.bytes
            .zero(pages.start * page, (pages.end - pages.start) * page);
        self.states[pages.start as usize..pages.end as usize].fill(PageState::Removed);
    }

    /// After an export: Dirty pages are Clean.
    pub fn new_generation(&mut self) {
        for st in &mut self.states {
            if *st == PageState::Dirty {
                *st = PageState::Clean;
            }
        }
    }

    /// The dirty and empty sets (exact whatever the engine did on its own).
    pub fn sets(&self) -> PageSets {
        let page = self.bytes.page;
        let runs = |wanted: &dyn Fn(PageState) -> bool| {
            let mut out: Vec<Range<u64>> = Vec::new();
            for (i, &st) in self.states.iter().enumerate() {
                if wanted(st) {
                    let span = i as u64 * page..(i as u64 + 1) * page;
                    match out.last_mut() {
                        Some(last) if last.end == span.start => last.end = span.end,
                        _ => out.push(span),
                    }
                }
            }
            out
        };
        PageSets {
            dirty: runs(&|st| st == PageState::Dirty),
            empty: runs(&|st| matches!(st, PageState::Zero | PageState::Removed)),
        }
    }

    /// Whether the engine's state `got` agrees with the model's for page `page`.
    pub fn allows(&self, page: u64, got: PageState) -> bool {
        let want = self.states[page as usize];
        got == want
            || matches!(
                (want, got),
                (PageState::Missing, PageState::Clean) | (PageState::Removed, PageState::Zero)
            )
    }

    /// Runs of pages the model does not hold Missing (their bytes are certain to be served
    /// already or zero), as page ranges.
    pub fn settled_runs(&self) -> Vec<Range<u64>> {
        let mut out: Vec<Range<u64>> = Vec::new();
        for (i, &st) in self.states.iter().enumerate() {
            let i = i as u64;
            if st == PageState::Missing {
                continue;
            }
            match out.last_mut() {
                Some(last) if last.end == i => last.end = i + 1,
                _ => out.push(i..i + 1),
            }
        }
        out
    }
}
