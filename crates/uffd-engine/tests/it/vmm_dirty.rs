//! Dirty tracking across a process boundary: the VMM registered MISSING only, the engine
//! re-registers MISSING|WP on the VMM's mm; after mixed reads, writes (byte writes, fills,
//! write touches, into missing, clean, zero and removed pages) and removes, every page's
//! state, its pagemap bits (present, uffd-wp) and the exported dirty and empty sets equal a
//! model of the commands issued; `export_and_reset` re-protects what it exported.

use std::ops::Range;

use crate::common::vmm::{
    MIB, Model, Pages, Served, assert_hashes, hugepages_or_skip, model_image, serve,
};
use page_tracker::PageState;
use test_vmm::{BLOCK, Touch};
use uffd_engine::{EngineConfig, PageSets};

/// One step of a script, in pages of the guest's page size unless said otherwise.
#[derive(Debug, Clone)]
enum Op {
    /// Read touch of `count` pages from `first`, two threads.
    Read(u64, u64),
    /// Write touch of `count` pages from `first` with a seed, two threads.
    TouchWrite(u64, u64, u64),
    /// Bytes stored at a byte offset (may span pages).
    Bytes(u64, Vec<u8>),
    /// `len` bytes of one value stored at a byte offset.
    Fill(u64, u64, u8),
    /// madvise(DONTNEED) of `count` pages from `first`.
    Remove(u64, u64),
    /// Hash the whole image (reads every page) and compare with the model.
    Hash,
    /// Compare states, pagemap bits and the page sets with the model.
    Check,
    /// `export_and_reset`: compare, then Dirty pages become Clean in the model.
    Export,
}

struct Script {
    s: Served,
    bytes: Model,
    states: Vec<PageState>,
}

impl Script {
    fn read(&mut self, pages: Range<u64>) {
        for p in pages {
            let st = &mut self.states[p as usize];
            *st = match *st {
                PageState::Missing => PageState::Clean,
                PageState::Removed => PageState::Zero,
                other => other,
            };
        }
    }

    fn written(&mut self, offset: u64, len: u64) {
        let p = self.s.page;
        for page in offset / p..(offset + len).div_ceil(p) {
            self.states[page as usize] = PageState::Dirty;
        }
    }

    fn run(&mut self, op: &Op) {
        let p = self.s.page;
        let vmm = &self.s.vmm;
        match *op {
            Op::Read(first, count) => {
                let report = vmm.touch(Touch::read(first * p, count * p, 2)).unwrap();
                assert_eq!(
                    report.checksum,
                    self.bytes.read_checksum(first * p, count * p, 1)
                );
                self.read(first..first + count);
            }
            Op::TouchWrite(first, count, seed) => {
                vmm.touch(Touch::write(first * p, count * p, 2, seed))
                    .unwrap();
                self.bytes.touch_write(first * p, count * p, seed);
                self.written(first * p, count * p);
            }
            Op::Bytes(offset, ref data) => {
                vmm.write(offset, data).unwrap();
                self.bytes.write(offset, data);
                self.written(offset, data.len() as u64);
            }
            Op::Fill(offset, len, byte) => {
                vmm.fill(offset, len, byte).unwrap();
                self.bytes.write(offset, &vec![byte; len as usize]);
                self.written(offset, len);
            }
            Op::Remove(first, count) => {
                vmm.madvise_dontneed(first * p, count * p).unwrap();
                self.bytes.zero(first * p, count * p);
                self.states[first as usize..(first + count) as usize].fill(PageState::Removed);
            }
            Op::Hash => {
                let size = self.s.size;
                let hashes = vmm.start_hash(0, size, 2).unwrap().wait().unwrap();
                assert_hashes(&hashes, &self.bytes, 0, size);
                self.read(0..self.s.pages());
            }
            Op::Check => self.check(),
            Op::Export => {
                let sets = self.s.engine.export_and_reset().unwrap();
                assert_eq!(sets, self.sets(), "exported sets");
                for st in &mut self.states {
                    if *st == PageState::Dirty {
                        *st = PageState::Clean;
                    }
                }
            }
        }
    }

    /// The dirty and empty sets the model says.
    fn sets(&self) -> PageSets {
        let p = self.s.page;
        let runs = |wanted: &dyn Fn(PageState) -> bool| {
            let mut out: Vec<Range<u64>> = Vec::new();
            for (i, &st) in self.states.iter().enumerate() {
                if !wanted(st) {
                    continue;
                }
                let span = i as u64 * p..(i as u64 + 1) * p;
                match out.last_mut() {
                    Some(last) if last.end == span.start => last.end = span.end,
                    _ => out.push(span),
                }
            }
            out
        };
        PageSets {
            dirty: runs(&|st| st == PageState::Dirty),
            empty: runs(&|st| matches!(st, PageState::Zero | PageState::Removed)),
        }
    }

    fn check(&self) {
        let s = &self.s;
        // Taken under the settle write lock: every install has recorded its state.
        let sets = s.engine.page_sets().unwrap();
        for (page, &want) in self.states.iter().enumerate() {
            let got = s.engine.tracker().state(page as u64).unwrap();
            assert_eq!(got, want, "state of page {page}");
        }
        assert_eq!(sets, self.sets(), "page sets");
        let flags = s.vmm.pagemap(0, s.size).unwrap();
        for (block, f) in flags.iter().enumerate() {
            let page = block as u64 * BLOCK / s.page;
            // An absent page's uffd-wp bit is the kernel's business: zapping a protected
            // hugetlb page leaves a uffd-wp marker, and its next fault is a MISSING one.
            let (present, wp) = match self.states[page as usize] {
                PageState::Missing | PageState::Removed => (false, f.uffd_wp()),
                PageState::Clean | PageState::Zero => (true, true),
                PageState::Dirty => (true, false),
            };
            assert_eq!(
                (f.present(), f.uffd_wp()),
                (present, wp),
                "pagemap of block {block} (page {page}, {:?})",
                self.states[page as usize]
            );
        }
    }
}

fn dirty_export(test: &str, pages: Pages, regions: Vec<u64>, ops: &[Op]) {
    let config = EngineConfig {
        dirty_tracking: true,
        ..EngineConfig::default()
    };
    let s = serve(test, pages, regions, config);
    let mut script = Script {
        bytes: model_image(s.size, s.page),
        states: vec![PageState::Missing; s.pages() as usize],
        s,
    };
    script.check();
    for (i, op) in ops.iter().enumerate() {
        eprintln!("step {i}: {op:?}");
        script.run(op);
    }
    script.s.finish();
}

#[test]
fn dirty_export_exact_4k() {
    use Op::*;
    let p = 4096;
    // Regions: pages 0..512, 512..1024.
    let ops = [
        Read(0, 256),
        Check,
        // Clean pages written: WP faults. A write across two pages; a fill of three.
        Bytes(10 * p + 100, (1..=16).collect()),
        Bytes(21 * p - 4, vec![9; 8]),
        Fill(30 * p, 3 * p, 0x5a),
        // Missing pages written (MISSING write faults), and clean ones by a touch.
        TouchWrite(300, 10, 5),
        TouchWrite(40, 4, 6),
        Check,
        // Removes of a written page, of read pages, of untouched pages, across regions.
        Remove(10, 1),
        Remove(50, 10),
        Remove(600, 10),
        Remove(510, 4),
        // A removed page written (zeros then the bytes), another read (a zero page).
        Bytes(600 * p + 5, vec![1, 2, 3]),
        Read(50, 1),
        Check,
        Hash,
        Check,
        Export,
        Check,
        // The next generation: only later writes; a zero page written; a reset page removed.
        Bytes(20 * p, vec![4]),
        TouchWrite(700, 1, 7),
        Bytes(55 * p + 9, vec![8]),
        Remove(31, 1),
        Check,
        Hash,
        Check,
    ];
    dirty_export("dirty-4k", Pages::Base, vec![2 * MIB, 2 * MIB], &ops);
}

#[test]
fn dirty_export_exact_2m() {
    if !hugepages_or_skip("dirty_export_exact_2m", 5) {
        return;
    }
    use Op::*;
    let p = 2 * MIB;
    // Regions: pages 0..2, 2..4.
    let ops = [
        Read(0, 1),
        Check,
        Bytes(p + 4096, vec![1, 2, 3]),
        TouchWrite(0, 1, 5),
        Check,
        Remove(1, 1),
        Remove(3, 1),
        Read(3, 1),
        Check,
        Hash,
        Check,
        Export,
        Check,
        Bytes(2 * p + 10, vec![7]),
        Bytes(3 * p - 2, vec![6; 4]),
        Remove(0, 1),
        Check,
        Hash,
        Check,
    ];
    dirty_export("dirty-2m", Pages::Huge, vec![2 * p, 2 * p], &ops);
}
