//! The page source over a snapshot in the store: the header's mapping resolved to data
//! objects, whose bytes come through the host's chunk cache.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use snapshot_format::snapshot_dir::{DATA_SUFFIX, HEADER_FILE};
use snapshot_format::{Header, ReadPlan, working_set};
use uuid::Uuid;

use crate::cache::BuildCache;
use crate::config::CacheConfig;
use crate::error::{Result, StoreError};
use crate::store::Store;

/// Name of the working-set object beside a snapshot's header (as in a snapshot directory).
pub const WORKING_SET_OBJECT: &str = "working-set";

/// Name of build `build`'s data object, relative to the snapshot prefix.
pub fn data_object(build: Uuid) -> String {
    format!("{}{DATA_SUFFIX}", build.hyphenated())
}

/// A snapshot generation in the store, read through the host's chunk cache.
///
/// Reads are blocking and thread-safe; holes (zero entries) are filled without any I/O.
pub struct RemoteSource {
    store: Store,
    header: Header,
    builds: HashMap<Uuid, Arc<BuildCache>>,
}

impl RemoteSource {
    /// Fetches and decodes the header at the store's prefix, checks the length of every data
    /// object it references, and opens their caches under `cache`.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] naming `header` when the generation has none (never uploaded,
    /// or its upload did not finish) or naming a data object it references;
    /// [`StoreError::Header`] for an invalid header; [`StoreError::DataTooShort`],
    /// [`StoreError::DataTooLarge`];
    /// [`StoreError::InvalidCache`] for a chunk size that is not a power of two of at least
    /// 4 KiB; store and cache errors.
    pub fn open(store: &Store, cache: &CacheConfig) -> Result<RemoteSource> {
        if !cache.chunk_size.is_power_of_two() || cache.chunk_size < 4096 {
            return Err(StoreError::InvalidCache(format!(
                "chunk size {} is not a power of two of at least 4096",
                cache.chunk_size
            )));
        }
        let (_, header) = fetch_header(store)?;
        let mut builds = HashMap::new();
        for (build, needed) in header.storage_extents() {
            let object = data_object(build);
            let len = store
                .object_len(&object)?
                .ok_or_else(|| StoreError::NotFound {
                    object: object.clone(),
                })?;
            if len > snapshot_format::MAX_SIZE {
                return Err(StoreError::DataTooLarge {
                    object,
                    actual: len,
                    limit: snapshot_format::MAX_SIZE,
                });
            }
            if len < needed {
                return Err(StoreError::DataTooShort {
                    object,
                    actual: len,
                    needed,
                });
            }
            let cached = BuildCache::open(&cache.dir, build, &object, len, cache.chunk_size)?;
            builds.insert(build, Arc::new(cached));
        }
        Ok(RemoteSource {
            store: store.clone(),
            header,
            builds,
        })
    }

    /// The header of the generation.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The image size in bytes.
    pub fn size(&self) -> u64 {
        self.header.size()
    }

    /// The store it reads from (its statistics are the source's).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Copies image bytes `[offset, offset + buf.len())` into `buf`, fetching the chunks that
    /// are not cached yet (blocking); zeros for holes.
    ///
    /// # Errors
    ///
    /// [`StoreError::OutOfRange`]; [`StoreError::Unavailable`] when the store kept failing
    /// (then `buf` must not be used: it is never filled with stand-in zeros); cache errors.
    pub fn read_into(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        // Every missing chunk's fetch is started first, so a read needing several fetches
        // them at once; then each wait ends as soon as the bytes this read needs have landed.
        let mut waits = Vec::new();
        for piece in self.plan(offset, buf.len() as u64)? {
            if piece.is_zero() {
                continue;
            }
            let cache = &self.builds[&piece.build_id];
            let end = piece.storage_offset + piece.length;
            for chunk in cache.chunks(&(piece.storage_offset..end)) {
                if let Some(flight) = cache.begin(chunk, &self.store)? {
                    waits.push((flight, end.min(cache.chunk_end(chunk))));
                }
            }
        }
        for (flight, end) in waits {
            flight.wait_for(end)?;
        }
        self.walk(offset, buf, |_, _| Ok(true)).map(|_| ())
    }

    /// Copies image bytes `[offset, offset + buf.len())` into `buf` only if every chunk they
    /// need is already in the cache: `Ok(false)` otherwise (and `buf` is unspecified). Never
    /// touches the network: the fault path's first try.
    ///
    /// # Errors
    ///
    /// [`StoreError::OutOfRange`]; cache errors.
    pub fn read_resident(&self, offset: u64, buf: &mut [u8]) -> Result<bool> {
        let hits = &self.store.counters().chunk_hits;
        self.walk(offset, buf, |cache, chunks| {
            for chunk in chunks {
                if !cache.is_present(chunk)? {
                    return Ok(false);
                }
                // A lookup the cache answered, as in `read_into`; a miss is counted by the
                // `read_into` that follows it.
                hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(true)
        })
    }

    /// Blocks until every fetch this source started has ended: its chunk flagged present
    /// in the cache, or failed. A read returns as soon as its own bytes have landed, while the
    /// rest of their chunk may still be arriving; call this before relying on the cache alone
    /// (another process, [`RemoteSource::read_resident`]) or at the end of a restore.
    pub fn wait_fetches(&self) {
        for cache in self.builds.values() {
            cache.wait_idle();
        }
    }

    /// Length of the zero run (a hole: no data, no fetch) starting at `offset`, at most
    /// `max_len`; 0 when `offset` holds data. For a fault path that installs holes as zero
    /// pages without reading them.
    ///
    /// # Errors
    ///
    /// [`StoreError::OutOfRange`] at or past the size.
    pub fn hole_len(&self, offset: u64, max_len: u64) -> Result<u64> {
        let location = self.header.lookup(offset).ok_or(StoreError::OutOfRange {
            offset,
            len: max_len,
            size: self.size(),
        })?;
        Ok(if location.is_zero() {
            location.remaining.min(max_len)
        } else {
            0
        })
    }

    /// The working set stored beside the header, if any: the byte ranges to prefetch first.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`]; [`StoreError::WorkingSet`] naming the first bad line.
    pub fn working_set(&self) -> Result<Option<Vec<Range<u64>>>> {
        let Some(bytes) = self.store.get(WORKING_SET_OBJECT)? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&bytes);
        working_set::parse(&text, self.size(), WORKING_SET_OBJECT.as_ref())
            .map(Some)
            .map_err(|e| StoreError::WorkingSet(e.to_string()))
    }

    /// Walks the pieces of a read: zero pieces are filled, data pieces are copied from the
    /// cache once `prepare` answered `true` for their chunks.
    fn walk<F>(&self, offset: u64, buf: &mut [u8], prepare: F) -> Result<bool>
    where
        F: Fn(&BuildCache, Range<u64>) -> Result<bool>,
    {
        for piece in self.plan(offset, buf.len() as u64)? {
            let at = (piece.offset - offset) as usize;
            let out = &mut buf[at..at + piece.length as usize];
            if piece.is_zero() {
                out.fill(0);
                continue;
            }
            let cache = &self.builds[&piece.build_id];
            let stored = piece.storage_offset..piece.storage_offset + piece.length;
            if !prepare(cache, cache.chunks(&stored))? {
                return Ok(false);
            }
            cache.read_present(piece.storage_offset, out)?;
        }
        Ok(true)
    }
}

impl RemoteSource {
    fn plan(&self, offset: u64, len: u64) -> Result<ReadPlan<'_>> {
        self.header
            .read_plan(offset, len)
            .map_err(|_| StoreError::OutOfRange {
                offset,
                len,
                size: self.size(),
            })
    }
}

impl std::fmt::Debug for RemoteSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteSource")
            .field("store", &self.store.url())
            .field("metadata", self.header.metadata())
            .finish_non_exhaustive()
    }
}

/// The generation's header from the store, as stored and decoded: [`StoreError::NotFound`]
/// when there is none (a generation is complete only once its header is uploaded, last).
pub(crate) fn fetch_header(store: &Store) -> Result<(bytes::Bytes, Header)> {
    let bytes = store
        .get(HEADER_FILE)?
        .ok_or_else(|| StoreError::NotFound {
            object: HEADER_FILE.into(),
        })?;
    let header = Header::decode(&bytes).map_err(|e| StoreError::header(HEADER_FILE, e))?;
    Ok((bytes, header))
}
