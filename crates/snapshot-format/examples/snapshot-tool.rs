//! `snapshot-tool`: inspect headers and validate snapshot directories.
//!
//! ```text
//! snapshot-tool inspect <header-file>                      print the header as JSON
//! snapshot-tool validate <dir>                             check a snapshot directory, and
//!                                                          read every byte (verifying the
//!                                                          builds that have checksums)
//! snapshot-tool import <memory-file> <dir> [block-size]    write generation 0 of a memory file
//! ```
//!
//! A snapshot directory holds `header` and one `<uuid>.data` per build the header references
//! (see `snapshot_format::snapshot_dir`). Exit status 0 on success, 1 on an invalid snapshot,
//! 2 on bad usage.

use std::fs::File;
use std::path::Path;
use std::process::ExitCode;

use snapshot_format::{HeaderFormat, LayeredSource, snapshot_dir, write_generation_zero};
use uuid::Uuid;

const USAGE: &str = "usage: snapshot-tool inspect <header-file>
       snapshot-tool validate <dir>
       snapshot-tool import <memory-file> <dir> [block-size]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["inspect", header] => inspect(Path::new(header)),
        ["validate", dir] => validate(Path::new(dir)),
        ["import", memory, dir] => import(Path::new(memory), Path::new(dir), "4096"),
        ["import", memory, dir, block] => import(Path::new(memory), Path::new(dir), block),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("snapshot-tool: {message}");
            ExitCode::FAILURE
        }
    }
}

fn inspect(path: &Path) -> Result<(), String> {
    let header = snapshot_dir::read_header(path).map_err(|e| e.to_string())?;
    let json = serde_json::to_string_pretty(&header).map_err(|e| e.to_string())?;
    println!("{json}");
    Ok(())
}

fn validate(dir: &Path) -> Result<(), String> {
    let source = LayeredSource::open_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let header = source.header();
    let zero: u64 = header
        .entries()
        .iter()
        .filter(|e| e.is_zero())
        .map(|e| e.length)
        .sum();
    // Every byte through the verified read path: a data file whose bytes no longer match its
    // checksums fails here rather than in a restore.
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < header.size() {
        let len = (header.size() - at).min(buf.len() as u64) as usize;
        source
            .read_into(at, &mut buf[..len])
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        at += len as u64;
    }
    let summary = serde_json::json!({
        "valid": true,
        "generation": header.metadata().generation,
        "build_id": header.metadata().build_id,
        "size": header.size(),
        "block_size": header.block_size(),
        "entries": header.entries().len(),
        "zero_bytes": zero,
        "builds": header.storage_extents().iter().map(|(build, needed)| serde_json::json!({
            "build_id": build,
            "bytes_referenced": needed,
            "checksums": header.has_checksums(*build),
        })).collect::<Vec<_>>(),
    });
    println!("{summary:#}");
    Ok(())
}

fn import(memory: &Path, dir: &Path, block_size: &str) -> Result<(), String> {
    let block_size: u64 = block_size
        .parse()
        .map_err(|_| format!("block size {block_size:?} is not a number"))?;
    let image = File::open(memory).map_err(|e| format!("{}: {e}", memory.display()))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let build = Uuid::new_v4();
    let data_path = snapshot_dir::data_path(dir, build);
    let mut data = std::io::BufWriter::new(
        File::create(&data_path).map_err(|e| format!("{}: {e}", data_path.display()))?,
    );
    let header =
        write_generation_zero(&image, block_size, build, &mut data).map_err(|e| e.to_string())?;
    data.into_inner()
        .map_err(|e| e.to_string())?
        .sync_all()
        .map_err(|e| e.to_string())?;
    snapshot_dir::write_header(
        &snapshot_dir::header_path(dir),
        &header,
        HeaderFormat::Native,
    )
    .map_err(|e| e.to_string())?;
    println!("{build}");
    Ok(())
}
