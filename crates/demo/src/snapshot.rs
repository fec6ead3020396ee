//! The synthetic snapshot the demo restores: a 1 GiB guest image of random and zero regions
//! as generation 0, and a diff generation over it (some pages rewritten, some freed).

use std::fs::{self, File};
use std::io::BufWriter;
use std::ops::Range;
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use snapshot_format::{Header, snapshot_dir, write_diff, write_generation_zero};
use uuid::Uuid;

/// Page and block size of the snapshot.
pub(crate) const PAGE: u64 = 4096;

/// A snapshot directory and the bytes its newest generation holds (the model every restore is
/// checked against).
pub(crate) struct Snapshot {
    pub(crate) dir: PathBuf,
    pub(crate) image: Vec<u8>,
    pub(crate) header: Header,
}

/// xorshift64: fast, deterministic bytes; the demo needs variety, not secrecy.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(crate) fn fill(&mut self, buf: &mut [u8]) {
        for word in buf.chunks_exact_mut(8) {
            word.copy_from_slice(&self.next().to_le_bytes());
        }
    }
}

/// Builds generation 0 (2 MiB blocks: ~60% random, ~25% zero, the rest half and half) in
/// `work/gen0`, then generation 1 over it in `work/gen1`: 3% of pages rewritten, 1% freed.
pub(crate) fn build(work: &Path, size: u64, bar: &ProgressBar) -> Result<Snapshot, String> {
    let mut rng = Rng::new(SEED);
    let mut image = vec![0u8; size as usize];
    const BLOCK: usize = 2 << 20;
    bar.set_length(size * 2);
    for block in image.chunks_mut(BLOCK) {
        match rng.next() % 20 {
            0..=11 => rng.fill(block),
            12..=16 => {}
            _ => {
                for (i, page) in block.chunks_mut(PAGE as usize).enumerate() {
                    if i % 2 == 0 {
                        rng.fill(page);
                    }
                }
            }
        }
        bar.inc(block.len() as u64);
    }
    let gen0 = work.join("gen0");
    let build0 = Uuid::new_v4();
    let header0 = write_dir(&gen0, build0, |out| {
        write_generation_zero(&image[..], PAGE, build0, out)
    })?;

    let pages = size / PAGE;
    let mut dirty = Vec::new();
    let mut empty = Vec::new();
    for page in 0..pages {
        let offset = (page * PAGE) as usize;
        match rng.next() % 100 {
            0..=2 => {
                rng.fill(&mut image[offset..offset + PAGE as usize]);
                push(&mut dirty, page * PAGE..(page + 1) * PAGE);
            }
            3 => {
                image[offset..offset + PAGE as usize].fill(0);
                push(&mut empty, page * PAGE..(page + 1) * PAGE);
            }
            _ => {}
        }
        if page % 4096 == 0 {
            bar.inc(4096 * PAGE);
        }
    }
    let gen1 = work.join("gen1");
    let build1 = Uuid::new_v4();
    let header1 = write_dir(&gen1, build1, |out| {
        write_diff(&image[..], &header0, build1, &dirty, &empty, out)
    })?;
    link_builds(&gen0, &gen1, &header1)?;
    bar.finish_and_clear();
    Ok(Snapshot {
        dir: gen1,
        image,
        header: header1,
    })
}

fn push(ranges: &mut Vec<Range<u64>>, range: Range<u64>) {
    match ranges.last_mut() {
        Some(last) if last.end == range.start => last.end = range.end,
        _ => ranges.push(range),
    }
}

/// Writes `build`'s data file with `write` and the header it returns into `dir`.
fn write_dir(
    dir: &Path,
    build: Uuid,
    write: impl FnOnce(&mut BufWriter<File>) -> snapshot_format::Result<Header>,
) -> Result<Header, String> {
    fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let data_path = snapshot_dir::data_path(dir, build);
    let file =
        File::create(&data_path).map_err(|e| format!("creating {}: {e}", data_path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let header = write(&mut out).map_err(|e| format!("writing {}: {e}", data_path.display()))?;
    out.into_inner()
        .map_err(|e| format!("flushing {}: {e}", data_path.display()))?;
    let header_path = snapshot_dir::header_path(dir);
    fs::write(&header_path, header.encode_native())
        .map_err(|e| format!("writing {}: {e}", header_path.display()))?;
    Ok(header)
}

/// Hard-links the parent's build files into `dir`, so the directory alone restores.
pub(crate) fn link_builds(parent: &Path, dir: &Path, header: &Header) -> Result<(), String> {
    for build in header.builds() {
        let target = snapshot_dir::data_path(dir, build);
        if target.exists() {
            continue;
        }
        let source = snapshot_dir::data_path(parent, build);
        fs::hard_link(&source, &target)
            .or_else(|_| fs::copy(&source, &target).map(drop))
            .map_err(|e| format!("linking {} into {}: {e}", source.display(), dir.display()))?;
    }
    Ok(())
}

/// The image is the same on every run.
const SEED: u64 = 0x005e_ed0f_de30;
