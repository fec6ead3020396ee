//! The snapshot loop: writing generation N+1 into `--next-generation DIR` while the VMM is
//! paused.
//!
//! DIR becomes a self-contained snapshot directory ([`snapshot_format::snapshot_dir`]):
//!
//! - `<DIR>/<new uuid>.data`: the compact diff, exactly the dirty blocks' bytes back to back,
//!   read from the VMM's memory ([`VmmMemory`]);
//! - `<DIR>/<uuid>.data` of every older build the new header still references, hard-linked
//!   (or copied, per `--parent-files`) from where the parent's files are; a plain memory file
//!   parent is one such build (generation 0 mapping the file as it is), so it is linked in
//!   under its build's name;
//! - `<DIR>/header`: the new header (native format), replaced atomically last.
//!
//! Each later `snapshot` writes the next generation over the one before in the same DIR: the
//! newest header is the parent, and `export_and_reset` made the engine's sets hold only the
//! writes since. If writing fails after the export, the exported sets are kept and folded into
//! the next attempt, so no write is ever lost from the chain.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::time::Instant;

use snapshot_format::snapshot_dir::{data_path, header_path, write_header};
use snapshot_format::{Header, HeaderFormat, LayeredSource, write_diff};
use tracing::{info, warn};
use uuid::Uuid;

use super::cli::ParentFiles;
use super::vmm_memory::VmmMemory;
use snapshot_format::page_sets::{fit_to_blocks, join};
use uffd_engine::{Engine, PageSets};

/// Why a snapshot could not be written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GenerationError {
    /// The engine could not export its sets (dirty tracking off, or re-protecting failed).
    #[error("exporting the dirty and empty sets failed: {0}")]
    Export(#[from] uffd_engine::EngineError),
    /// Writing the diff or header failed.
    #[error("writing generation {generation} into {}: {source}", dir.display())]
    Write {
        /// The generation being written.
        generation: u64,
        /// The directory.
        dir: PathBuf,
        /// What failed.
        source: snapshot_format::Error,
    },
    /// A file operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The failure.
        source: io::Error,
    },
}

/// What one `snapshot` wrote (the control socket's answer).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub(crate) struct SnapshotSummary {
    /// The generation written.
    pub generation: u64,
    /// The directory it is in.
    pub dir: PathBuf,
    /// Its build (the diff data file is `<build_id>.data`).
    pub build_id: Uuid,
    /// Bytes of the image stored in the diff (dirty blocks).
    pub dirty_bytes: u64,
    /// Bytes of the image mapped to zeros by the diff (freed or zero pages).
    pub empty_bytes: u64,
    /// Size of the diff data file.
    pub diff_file_bytes: u64,
    /// Mapping entries in the new header.
    pub header_entries: usize,
    /// Wall time of the export and the writes, in milliseconds.
    pub elapsed_ms: f64,
}

/// The chain being extended: the parent header and where its builds' files are.
#[derive(Debug)]
pub(crate) struct NextGeneration {
    dir: PathBuf,
    how: ParentFiles,
    parent: Header,
    files: HashMap<Uuid, PathBuf>,
    /// Sets exported by an attempt that then failed, folded into the next one.
    carried: Option<PageSets>,
}

impl NextGeneration {
    /// Extends the snapshot `source` serves into `dir`.
    pub(crate) fn new(dir: PathBuf, how: ParentFiles, source: &LayeredSource) -> Self {
        let parent = source.header().clone();
        let files = parent
            .builds()
            .into_iter()
            .filter_map(|b| source.data_path(b).map(|p| (b, p.to_path_buf())))
            .collect();
        NextGeneration {
            dir,
            how,
            parent,
            files,
            carried: None,
        }
    }

    /// The directory written into.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Exports the engine's sets (starting a new generation in it) and writes the diff of
    /// everything written since the last snapshot, read from `memory`.
    pub(crate) fn snapshot(
        &mut self,
        engine: &Engine,
        memory: &VmmMemory<'_>,
    ) -> Result<SnapshotSummary, GenerationError> {
        let _span = tracing::info_span!("generation_export").entered();
        let started = Instant::now();
        let exported = engine.export_and_reset()?;
        let sets = match self.carried.take() {
            None => exported,
            Some(old) => PageSets {
                dirty: join([old.dirty, exported.dirty].concat()),
                empty: join([old.empty, exported.empty].concat()),
            },
        };
        match self.write(&sets, memory, started) {
            Ok(summary) => Ok(summary),
            Err(e) => {
                warn!(error = %e, "snapshot failed; its pages are kept for the next attempt");
                self.carried = Some(sets);
                Err(e)
            }
        }
    }

    fn write(
        &mut self,
        sets: &PageSets,
        memory: &VmmMemory<'_>,
        started: Instant,
    ) -> Result<SnapshotSummary, GenerationError> {
        let generation = self.parent.metadata().generation + 1;
        let write_error = |source| GenerationError::Write {
            generation,
            dir: self.dir.clone(),
            source,
        };
        let (dirty, empty) = fit_to_blocks(&sets.dirty, &sets.empty, self.parent.block_size());
        let build = Uuid::new_v4();
        let data = data_path(&self.dir, build);
        // Removed on every way out but success: a full disk must not keep a partial file
        // filling it, nor an orphan data file no header references.
        let tmp_path = with_suffix(&data, ".tmp");
        let mut tmp = Leftover(Some(tmp_path.clone()));
        let header = {
            let file = File::create(&tmp_path)
                .map_err(|source| io_error("creating", &tmp_path, source))?;
            let mut out = BufWriter::with_capacity(1 << 20, file);
            let header = write_diff(memory, &self.parent, build, &dirty, &empty, &mut out)
                .map_err(write_error)?;
            let file = out
                .into_inner()
                .map_err(|e| io_error("writing", &tmp_path, e.into_error()))?;
            file.sync_all()
                .map_err(|source| io_error("syncing", &tmp_path, source))?;
            header
        };
        let diff_file_bytes = bytes_in(&dirty);
        // From here on the leftover to remove on failure is the data file itself.
        let mut new_data = if diff_file_bytes > 0 {
            fs::rename(&tmp_path, &data)
                .map_err(|source| io_error("renaming", &tmp_path, source))?;
            tmp.forget();
            Leftover(Some(data.clone()))
        } else {
            // No new bytes: the header references no data of this build.
            drop(tmp);
            Leftover(None)
        };
        for parent_build in header.builds() {
            if parent_build != build {
                self.bring_in(parent_build)?;
            }
        }
        write_header(&header_path(&self.dir), &header, HeaderFormat::Native)
            .map_err(write_error)?;
        new_data.forget();
        if let Ok(dir) = File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        let summary = SnapshotSummary {
            generation,
            dir: self.dir.clone(),
            build_id: build,
            dirty_bytes: diff_file_bytes,
            empty_bytes: bytes_in(&empty),
            diff_file_bytes,
            header_entries: header.entries().len(),
            elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
        };
        info!(?summary, "generation written");
        self.files = header
            .builds()
            .into_iter()
            .map(|b| (b, data_path(&self.dir, b)))
            .collect();
        self.parent = header;
        Ok(summary)
    }

    /// Makes `<dir>/<build>.data` exist: a hard link to (or a copy of) the parent's file.
    fn bring_in(&self, build: Uuid) -> Result<(), GenerationError> {
        let target = data_path(&self.dir, build);
        if target.exists() {
            return Ok(());
        }
        let Some(source) = self.files.get(&build) else {
            return Err(io_error(
                "finding the data file of a parent build for",
                &target,
                io::ErrorKind::NotFound.into(),
            ));
        };
        if self.how == ParentFiles::Hardlink {
            match fs::hard_link(source, &target) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    info!(source = %source.display(), error = %e, "cannot hard-link; copying");
                }
            }
        }
        let tmp = with_suffix(&target, ".tmp");
        let copied = fs::copy(source, &tmp)
            .and_then(|_| File::open(&tmp)?.sync_all())
            .and_then(|()| fs::rename(&tmp, &target));
        copied.map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_error("copying a parent build's data file to", &target, e)
        })
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn io_error(what: &'static str, path: &Path, source: io::Error) -> GenerationError {
    GenerationError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Total bytes of disjoint ranges.
fn bytes_in(ranges: &[std::ops::Range<u64>]) -> u64 {
    ranges.iter().map(|r| r.end - r.start).sum()
}

/// A file to remove unless [`Leftover::forget`] is called: what a failed write leaves behind.
struct Leftover(Option<PathBuf>);

impl Leftover {
    /// Keeps the file: the write it belongs to succeeded.
    fn forget(&mut self) {
        self.0 = None;
    }
}

impl Drop for Leftover {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = fs::remove_file(path);
        }
    }
}
