//! Helpers shared by the integration tests: the S3 server and the proxy in front of it,
//! store clients pointed at them, and snapshot directories made with snapshot-format.

pub(crate) mod proxy;
pub(crate) mod server;

use std::fs::File;
use std::io::BufWriter;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use snapshot_format::{Header, HeaderFormat, LayeredSource, snapshot_dir};
use snapshot_store::{Store, StoreConfig};
use uuid::Uuid;

pub(crate) use proxy::{Fault, Match, Proxy};
pub(crate) use server::S3Server;

pub(crate) const PAGE: u64 = 4096;

/// The server and the proxy in front of it.
pub(crate) struct Stack {
    pub(crate) proxy: Proxy,
    // Dropped after the proxy.
    _server: S3Server,
}

impl Stack {
    /// Starts both, or `None` when the server is not installed (the skip is reported).
    pub(crate) fn start(test: &str) -> Option<Stack> {
        let server = S3Server::start(test)?;
        let proxy = Proxy::start(server.addr());
        Some(Stack {
            proxy,
            _server: server,
        })
    }

    /// A store client of `s3://snapshots/<prefix>` through the proxy.
    pub(crate) fn store(&self, prefix: &str, config: StoreConfig) -> Store {
        Store::open(
            &format!("s3://{}/{prefix}", server::BUCKET),
            s3_config(&self.proxy.endpoint(), config),
        )
        .expect("opening the store")
    }
}

/// `config` with the endpoint and credentials of the test server.
pub(crate) fn s3_config(endpoint: &str, mut config: StoreConfig) -> StoreConfig {
    for (key, value) in [
        ("aws_endpoint", endpoint),
        ("aws_access_key_id", server::ACCESS_KEY),
        ("aws_secret_access_key", server::SECRET_KEY),
        ("aws_region", "us-east-1"),
        ("aws_allow_http", "true"),
    ] {
        config.options.push((key.into(), value.into()));
    }
    config
}

/// Settings for fault tests: short backoffs and idle timeout so retries are quick.
pub(crate) fn quick_config() -> StoreConfig {
    StoreConfig {
        idle_timeout: Duration::from_millis(500),
        attempts: 6,
        backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(40),
        ..StoreConfig::default()
    }
}

/// Bytes of a test image: page `n` is filled from a xorshift stream seeded by `seed` and `n`,
/// except pages with `n % 5 == 3`, which are zero (so the header has holes).
pub(crate) fn image(pages: u64, seed: u64) -> Vec<u8> {
    let mut bytes = vec![0u8; (pages * PAGE) as usize];
    for (n, page) in bytes.chunks_mut(PAGE as usize).enumerate() {
        if n % 5 == 3 {
            continue;
        }
        let mut state = seed ^ (n as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for word in page.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
    }
    bytes
}

/// Writes generation 0 of `memory` into `dir`; returns its header.
pub(crate) fn write_base(dir: &Path, memory: &[u8]) -> Header {
    let build = Uuid::new_v4();
    let mut data = BufWriter::new(File::create(snapshot_dir::data_path(dir, build)).unwrap());
    let header = snapshot_format::write_generation_zero(memory, PAGE, build, &mut data).unwrap();
    drop(data);
    snapshot_dir::write_header(
        &snapshot_dir::header_path(dir),
        &header,
        HeaderFormat::Native,
    )
    .unwrap();
    header
}

/// Writes the next generation into `dir` (which holds `parent`'s files): `dirty` pages of
/// `memory` are new data, `empty` pages become holes.
pub(crate) fn write_next(
    dir: &Path,
    parent: &Header,
    memory: &[u8],
    dirty: &[Range<u64>],
    empty: &[Range<u64>],
) -> Header {
    let build = Uuid::new_v4();
    let mut data = BufWriter::new(File::create(snapshot_dir::data_path(dir, build)).unwrap());
    let header =
        snapshot_format::write_diff(memory, parent, build, dirty, empty, &mut data).unwrap();
    drop(data);
    snapshot_dir::write_header(
        &snapshot_dir::header_path(dir),
        &header,
        HeaderFormat::Native,
    )
    .unwrap();
    header
}

/// Reads the whole image through `read` in pieces of `step` bytes at odd offsets (pieces
/// cross pages, chunks and entries) and compares with the local directory's bytes.
pub(crate) fn assert_same_bytes(local: &Path, step: usize, mut read: impl FnMut(u64, &mut [u8])) {
    let layered = LayeredSource::open_dir(local).unwrap();
    let size = layered.header().size();
    let mut expected = vec![0u8; step];
    let mut actual = vec![0u8; step];
    // A first short piece shifts every later one off page alignment.
    let mut offset = 0u64;
    let mut first = true;
    while offset < size {
        let len = if first { 1000 } else { step as u64 }.min(size - offset) as usize;
        first = false;
        layered.read_into(offset, &mut expected[..len]).unwrap();
        actual[..len].fill(0xEE);
        read(offset, &mut actual[..len]);
        assert!(
            expected[..len] == actual[..len],
            "bytes {offset:#x}+{len:#x} differ from the local snapshot"
        );
        offset += len as u64;
    }
}

/// Number of distinct chunks of `chunk_size` the header's data entries touch: what a cold read
/// of the whole image must fetch.
pub(crate) fn data_chunks(header: &Header, chunk_size: u64) -> usize {
    let mut chunks = std::collections::HashSet::new();
    for entry in header.entries().iter().filter(|e| !e.is_zero()) {
        let end = entry.storage_offset + entry.length;
        for chunk in entry.storage_offset / chunk_size..end.div_ceil(chunk_size) {
            chunks.insert((entry.build_id, chunk));
        }
    }
    chunks.len()
}
