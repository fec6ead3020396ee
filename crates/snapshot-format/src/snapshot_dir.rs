//! The snapshot directory layout, as the CLI and [`LayeredSource::open_dir`] read it.
//!
//! ```text
//! <dir>/header         the header, native format (E2B layout also accepted: told apart by magic)
//! <dir>/<uuid>.data    the data file of build <uuid> (lowercase, hyphenated), one for every
//!                      build the header references, ancestors included
//! ```
//!
//! A header's zero entries need no file. Data files are immutable once written.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::codec::HeaderFormat;
use crate::error::{Error, Result};
use crate::model::Header;
use crate::source::LayeredSource;
use crate::{E2B_ENTRY_LEN, E2B_METADATA_LEN, MAX_CHECKSUMS, MAX_ENTRIES};

/// File name of the header inside a snapshot directory.
pub const HEADER_FILE: &str = "header";

/// Suffix of data file names: `<uuid>.data`.
pub const DATA_SUFFIX: &str = ".data";

/// Largest header file accepted: [`MAX_ENTRIES`] entries in the larger (native) encoding, whose
/// fixed part (80 bytes before the entries, 8 + 4 after) is longer than E2B's 64, with a
/// checksum table (32 bytes before its CRCs) for each build, at most one per entry, and
/// [`MAX_CHECKSUMS`] CRCs of 4 bytes.
pub const MAX_HEADER_FILE_LEN: u64 =
    92 + MAX_ENTRIES * E2B_ENTRY_LEN as u64 + MAX_ENTRIES * 32 + MAX_CHECKSUMS * 4;

/// Path of build `build`'s data file in `dir`.
pub fn data_path(dir: &Path, build: Uuid) -> PathBuf {
    dir.join(format!("{}{DATA_SUFFIX}", build.hyphenated()))
}

/// Path of the header in `dir`.
pub fn header_path(dir: &Path) -> PathBuf {
    dir.join(HEADER_FILE)
}

/// Reads and decodes a header file in either format, refusing files longer than
/// [`MAX_HEADER_FILE_LEN`] before reading them.
pub fn read_header(path: &Path) -> Result<Header> {
    let file = fs::File::open(path)
        .map_err(|e| Error::io(format!("opening header {}", path.display()), e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io(format!("reading the length of {}", path.display()), e))?
        .len();
    if len > MAX_HEADER_FILE_LEN {
        let count = len.saturating_sub(E2B_METADATA_LEN as u64) / E2B_ENTRY_LEN as u64;
        return Err(Error::TooManyEntries {
            count,
            limit: MAX_ENTRIES,
        });
    }
    let mut bytes = Vec::with_capacity(len as usize);
    // `take` keeps a file growing underneath within the limit.
    file.take(MAX_HEADER_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(format!("reading header {}", path.display()), e))?;
    Header::decode(&bytes)
}

/// Encodes `header` in `format` and writes it to `path` (through a temporary file and a rename,
/// so readers never see half a header).
pub fn write_header(path: &Path, header: &Header, format: HeaderFormat) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let written = write_synced(&tmp, &header.encode(format))
        .map_err(|e| Error::io(format!("writing header {}", tmp.display()), e))
        .and_then(|()| {
            fs::rename(&tmp, path)
                .map_err(|e| Error::io(format!("renaming to {}", path.display()), e))
        });
    if written.is_err() {
        // A full disk must not keep the partial header filling it.
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Writes `bytes` to a new file at `path` and syncs it, so a rename over the old header
/// publishes complete bytes only.
fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut file = fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Every `<uuid>.data` file in `dir`, by build.
pub fn data_files(dir: &Path) -> Result<HashMap<Uuid, PathBuf>> {
    let mut files = HashMap::new();
    let entries =
        fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(DATA_SUFFIX)) else {
            continue;
        };
        if let Ok(build) = Uuid::try_parse(stem) {
            files.insert(build, entry.path());
        }
    }
    Ok(files)
}

impl LayeredSource {
    /// Opens the snapshot directory `dir` (see [the layout](crate::snapshot_dir)): reads its
    /// header, maps the data file of every build it references and checks their lengths.
    pub fn open_dir(dir: &Path) -> Result<LayeredSource> {
        let header = read_header(&header_path(dir))?;
        LayeredSource::open(header, &data_files(dir)?)
    }
}
