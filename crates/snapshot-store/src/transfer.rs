//! Pushing a snapshot directory to the store and pulling one back.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use bytes::Bytes;
use snapshot_format::Header;
use snapshot_format::snapshot_dir::{self, HEADER_FILE};

use crate::error::{Result, StoreError};
use crate::remote::{WORKING_SET_OBJECT, data_object};
use crate::store::Store;

/// Largest data object sent in one PUT; larger files are refused for now (multipart upload is
/// not written yet).
pub const MAX_SINGLE_PUT: u64 = 5 << 30;

/// Bytes fetched per ranged GET when pulling.
const PULL_PIECE: u64 = 8 << 20;

/// What [`push_dir`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushReport {
    /// Objects written, in order (the header always last).
    pub uploaded: Vec<String>,
    /// Data objects already in the store with the same length, left as they were (data files
    /// are immutable: a build's bytes never change).
    pub skipped: Vec<String>,
}

/// Uploads the snapshot directory `dir` (see [`snapshot_dir`]) to `store`: every data file
/// its header references, the working set if there is one, and the header last, so that a
/// reader never finds a header whose data is missing.
///
/// # Errors
///
/// [`StoreError::Header`] for a missing or invalid header, [`StoreError::MissingData`] for a
/// referenced build without a data file, [`StoreError::Io`] for local reads,
/// [`StoreError::WriteFailed`] when the store kept refusing. The header is not written after
/// any error.
pub fn push_dir(dir: &Path, store: &Store) -> Result<PushReport> {
    let header_path = snapshot_dir::header_path(dir);
    let header_bytes = read_file(&header_path)?;
    let header = Header::decode(&header_bytes)
        .map_err(|e| StoreError::header(header_path.display().to_string(), e))?;
    let files = snapshot_dir::data_files(dir)
        .map_err(|e| StoreError::header(dir.display().to_string(), e))?;
    let mut report = PushReport::default();
    for build in header.builds() {
        let path = files.get(&build).ok_or_else(|| StoreError::MissingData {
            dir: dir.to_path_buf(),
            build,
        })?;
        let object = data_object(build);
        let len = std::fs::metadata(path)
            .map_err(|e| StoreError::io("reading the length of", path, e))?
            .len();
        if store.object_len(&object)? == Some(len) {
            report.skipped.push(object);
            continue;
        }
        if len > MAX_SINGLE_PUT {
            return Err(StoreError::io(
                "uploading (multipart upload is not supported yet)",
                path,
                std::io::Error::from(std::io::ErrorKind::FileTooLarge),
            ));
        }
        store.put(&object, Bytes::from(read_file(path)?))?;
        report.uploaded.push(object);
    }
    let working_set = dir.join(WORKING_SET_OBJECT);
    if working_set.exists() {
        store.put(WORKING_SET_OBJECT, Bytes::from(read_file(&working_set)?))?;
        report.uploaded.push(WORKING_SET_OBJECT.into());
    }
    store.put(HEADER_FILE, Bytes::from(header_bytes))?;
    report.uploaded.push(HEADER_FILE.into());
    Ok(report)
}

/// Downloads the snapshot at `store` into the directory `dir` (created if needed): data files
/// first, each through a temporary name, the working set if there is one, the header last.
///
/// # Errors
///
/// [`StoreError::NotFound`] naming `header` if the store holds no complete generation, or the
/// data object missing; [`StoreError::Header`]; [`StoreError::Unavailable`];
/// [`StoreError::Io`] for local writes.
pub fn pull_dir(store: &Store, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| StoreError::io("creating the snapshot directory", dir, e))?;
    let (header_bytes, header) = crate::remote::fetch_header(store)?;
    for build in header.builds() {
        let object = data_object(build);
        let len = store
            .object_len(&object)?
            .ok_or_else(|| StoreError::NotFound {
                object: object.clone(),
            })?;
        let path = snapshot_dir::data_path(dir, build);
        write_published(&path, |file| {
            let mut at = 0;
            while at < len {
                let end = (at + PULL_PIECE).min(len);
                let piece = store.get_range(&object, at..end)?;
                file.write_all(&piece)
                    .map_err(|e| StoreError::io("writing", &path, e))?;
                at = end;
            }
            Ok(())
        })?;
    }
    if let Some(bytes) = store.get(WORKING_SET_OBJECT)? {
        let path = dir.join(WORKING_SET_OBJECT);
        write_published(&path, |file| {
            file.write_all(&bytes)
                .map_err(|e| StoreError::io("writing", &path, e))
        })?;
    }
    let path = snapshot_dir::header_path(dir);
    write_published(&path, |file| {
        file.write_all(&header_bytes)
            .map_err(|e| StoreError::io("writing", &path, e))
    })
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| StoreError::io("reading", path, e))?;
    Ok(bytes)
}

/// Writes `path` through `<path>.tmp`, synced, then renamed: a reader sees the whole file or
/// none. The temporary is removed on any error.
fn write_published(path: &Path, fill: impl FnOnce(&mut File) -> Result<()>) -> Result<()> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp_name);
    let written = File::create(&tmp)
        .map_err(|e| StoreError::io("creating", &tmp, e))
        .and_then(|mut file| {
            fill(&mut file)?;
            file.sync_all()
                .map_err(|e| StoreError::io("syncing", &tmp, e))
        })
        .and_then(|()| {
            std::fs::rename(&tmp, path).map_err(|e| StoreError::io("renaming to", path, e))
        });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
