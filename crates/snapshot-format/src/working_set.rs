//! The working-set file kept beside a snapshot: the image byte ranges a restore's demand
//! faults first touched, in order, replayed as the next restore's prefetch order.
//!
//! Text, one range per line as `<offset> <length>` (hexadecimal with `0x`, or decimal); lines
//! starting with `#` are comments. The first comment names the page and image sizes it was
//! recorded with:
//!
//! ```text
//! # uffd-handler working set v1: page_size 4096 image_size 268435456
//! 0x3f000 0x1000
//! 0x0 0x4000
//! ```

use std::fs;
use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Why a working-set file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum WorkingSetError {
    /// Reading or writing failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: io::Error,
    },
    /// A line is not a range inside the image.
    #[error("{} line {line}: {message}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// Reads the working set at `path` for an image of `image_size` bytes.
///
/// # Errors
///
/// [`WorkingSetError::Io`] if the file cannot be read; [`WorkingSetError::Malformed`] naming
/// the first line that is not a range inside the image.
pub fn read(path: &Path, image_size: u64) -> Result<Vec<Range<u64>>, WorkingSetError> {
    let text = fs::read_to_string(path).map_err(|source| WorkingSetError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, image_size, path)
}

/// Parses the text of a working set for an image of `image_size` bytes; `path` only names
/// the file in errors.
///
/// # Errors
///
/// [`WorkingSetError::Malformed`] naming the first line that is not a range inside the image.
pub fn parse(text: &str, image_size: u64, path: &Path) -> Result<Vec<Range<u64>>, WorkingSetError> {
    let mut ranges = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let malformed = |message: String| WorkingSetError::Malformed {
            path: path.to_path_buf(),
            line: index + 1,
            message,
        };
        let mut fields = line.split_whitespace();
        let (Some(offset), Some(len), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(malformed(format!(
                "expected `<offset> <length>`, found {line:?}"
            )));
        };
        let offset =
            parse_number(offset).ok_or_else(|| malformed(format!("bad offset {offset:?}")))?;
        let len = parse_number(len).ok_or_else(|| malformed(format!("bad length {len:?}")))?;
        let end = offset
            .checked_add(len)
            .filter(|&end| len > 0 && end <= image_size);
        let Some(end) = end else {
            return Err(malformed(format!(
                "range {offset:#x}+{len:#x} is empty or leaves the image ({image_size:#x} bytes; \
                 recorded for another snapshot?)"
            )));
        };
        ranges.push(offset..end);
    }
    Ok(ranges)
}

/// Writes `ranges` (through a temporary file and a rename) with a comment naming the page
/// and image sizes they were recorded with.
///
/// # Errors
///
/// [`WorkingSetError::Io`] if writing or renaming fails (the temporary file is removed).
pub fn write(
    path: &Path,
    ranges: &[Range<u64>],
    page_size: u64,
    image_size: u64,
) -> Result<(), WorkingSetError> {
    let io_error = |source| WorkingSetError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut text = Vec::with_capacity(32 * ranges.len() + 80);
    writeln!(
        text,
        "# uffd-handler working set v1: page_size {page_size} image_size {image_size}"
    )
    .map_err(io_error)?;
    for range in ranges {
        writeln!(text, "{:#x} {:#x}", range.start, range.end - range.start).map_err(io_error)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let written = fs::write(&tmp, text).and_then(|()| fs::rename(&tmp, path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map_err(io_error)
}

fn parse_number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_ranges_outside_the_image() {
        let dir = std::env::temp_dir().join(format!("ws-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("working-set");
        let ranges = vec![0x3000..0x5000, 0..0x1000];
        write(&path, &ranges, 4096, 0x10000).unwrap();
        assert_eq!(read(&path, 0x10000).unwrap(), ranges);
        let error = read(&path, 0x4000).unwrap_err().to_string();
        assert!(
            error.contains("line 2") && error.contains("leaves the image"),
            "{error}"
        );
        fs::write(&path, "# c\n\n12 4096\nzz 1\n").unwrap();
        let error = read(&path, 0x10000).unwrap_err().to_string();
        assert!(
            error.contains("line 4") && error.contains("bad offset"),
            "{error}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
