//! The host's chunk cache of one build's data object: a sparse file of the object's bytes and
//! a map with one byte per chunk (1 = present), shared by every process on the host.
//!
//! Protocol (see docs/storage.md): a chunk is fetched by whoever holds the open-file-description
//! write lock (`F_OFD_SETLKW`) on its byte of the map. The holder checks the byte again, and if
//! it is still 0 fetches the range, `pwrite`s it into the data file, then writes the byte. A
//! reader trusts a chunk only once its byte is 1; since the byte is written after the data, a
//! process killed midway leaves the byte 0 and the chunk is fetched again. Within a process,
//! misses on one chunk share one fetch (the first thread fetches, the others wait).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::ops::Range;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use nix::fcntl::{FcntlArg, fcntl};
use nix::libc;
use uuid::Uuid;

use crate::error::{Result, StoreError};
use crate::store::Store;

/// The cache of one data object.
pub(crate) struct BuildCache {
    object: String,
    len: u64,
    chunk_size: u64,
    data: File,
    data_path: PathBuf,
    map: Arc<File>,
    map_path: PathBuf,
    /// Chunks known present, one bit each: saves re-reading the map for them.
    known: Vec<AtomicU64>,
    inflight: Mutex<HashMap<u64, Arc<Flight>>>,
    /// Signalled whenever a flight ends.
    landed: Condvar,
}

/// One fetch in progress in this process: how far its bytes have landed in the data file,
/// and its outcome, for the threads waiting on it.
#[derive(Default)]
pub(crate) struct Flight {
    state: Mutex<FlightState>,
    changed: Condvar,
}

#[derive(Default)]
struct FlightState {
    /// Data-object offset up to which the chunk's bytes are in the data file.
    written_to: u64,
    outcome: Option<Result<()>>,
}

impl Flight {
    fn advance(&self, written_to: u64) {
        lock(&self.state).written_to = written_to;
        self.changed.notify_all();
    }

    /// Blocks until the data file holds the chunk's bytes up to data-object offset `end`
    /// (progressive release: before the rest of the chunk has arrived), or the fetch ended.
    /// Bytes that landed before a failure are still served.
    pub(crate) fn wait_for(&self, end: u64) -> Result<()> {
        let mut state = lock(&self.state);
        loop {
            if state.written_to >= end {
                return Ok(());
            }
            if let Some(outcome) = &state.outcome {
                return outcome.clone();
            }
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl BuildCache {
    /// Opens (creating if needed) the cache files of `build`'s data object `object` of `len`
    /// bytes in `dir`. The names carry the chunk size and the length, so caches of another
    /// chunk size or of a different object never mix.
    pub(crate) fn open(
        dir: &Path,
        build: Uuid,
        object: &str,
        len: u64,
        chunk_size: u64,
    ) -> Result<BuildCache> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::io("creating the cache directory", dir, e))?;
        let stem = format!("{}-c{chunk_size}-l{len}", build.hyphenated());
        let data_path = dir.join(format!("{stem}.chunks"));
        let map_path = dir.join(format!("{stem}.present"));
        let chunks = len.div_ceil(chunk_size);
        let data = open_sized(&data_path, len)?;
        let map = Arc::new(open_sized(&map_path, chunks)?);
        Ok(BuildCache {
            object: object.to_owned(),
            len,
            chunk_size,
            data,
            data_path,
            map,
            map_path,
            known: (0..chunks.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            inflight: Mutex::new(HashMap::new()),
            landed: Condvar::new(),
        })
    }

    /// Chunks covering data-object bytes `range`.
    pub(crate) fn chunks(&self, range: &Range<u64>) -> Range<u64> {
        range.start / self.chunk_size..range.end.div_ceil(self.chunk_size)
    }

    /// Data-object offset where `chunk` ends.
    pub(crate) fn chunk_end(&self, chunk: u64) -> u64 {
        ((chunk + 1) * self.chunk_size).min(self.len)
    }

    /// Whether `chunk` is in the cache (never touches the network).
    pub(crate) fn is_present(&self, chunk: u64) -> Result<bool> {
        let (word, bit) = ((chunk / 64) as usize, 1u64 << (chunk % 64));
        if self.known[word].load(Ordering::Acquire) & bit != 0 {
            return Ok(true);
        }
        let mut byte = [0u8];
        self.map
            .read_exact_at(&mut byte, chunk)
            .map_err(|e| StoreError::io("reading the cache map", &self.map_path, e))?;
        if byte[0] == 1 {
            self.known[word].fetch_or(bit, Ordering::AcqRel);
        }
        Ok(byte[0] == 1)
    }

    /// Starts making `chunk` present: `None` if it is, else the fetch to wait on (see
    /// [`Flight::wait_for`]). The first thread of this process to miss the chunk takes its
    /// lock (waiting here while another process fetches it), checks again, and starts the
    /// transfer on the store's runtime; later threads join the same fetch.
    pub(crate) fn begin(
        self: &Arc<Self>,
        chunk: u64,
        store: &Store,
    ) -> Result<Option<Arc<Flight>>> {
        let counters = store.counters();
        if self.is_present(chunk)? {
            counters.chunk_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        }
        let (flight, leader) = {
            let mut inflight = lock(&self.inflight);
            match inflight.get(&chunk) {
                Some(flight) => (Arc::clone(flight), false),
                None => {
                    let flight = Arc::new(Flight::default());
                    inflight.insert(chunk, Arc::clone(&flight));
                    (flight, true)
                }
            }
        };
        if !leader {
            counters.coalesced.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(flight));
        }
        let locked = ChunkLock::acquire(&self.map, &self.map_path, chunk).and_then(|held| {
            Ok(if self.is_present(chunk)? {
                None
            } else {
                Some(held)
            })
        });
        match locked {
            Ok(Some(held)) => self.start_transfer(chunk, &flight, held, store),
            Ok(None) => {
                counters.fetched_elsewhere.fetch_add(1, Ordering::Relaxed);
                self.finish(chunk, &flight, Ok(()));
            }
            Err(e) => self.finish(chunk, &flight, Err(e)),
        }
        Ok(Some(flight))
    }

    /// Streams the chunk into the data file on the runtime, releasing waiters as their bytes
    /// land; then writes the flag, releases the lock, and ends the flight.
    fn start_transfer(
        self: &Arc<Self>,
        chunk: u64,
        flight: &Arc<Flight>,
        held: ChunkLock,
        store: &Store,
    ) {
        let start = chunk * self.chunk_size;
        let range = start..(start + self.chunk_size).min(self.len);
        let (cache, progress) = (Arc::clone(self), Arc::clone(flight));
        let transfer = store.stream_range(&self.object, range, move |at, piece| {
            cache
                .data
                .write_all_at(piece, at)
                .map_err(|e| StoreError::io("writing the cache file", &cache.data_path, e))?;
            progress.advance(at + piece.len() as u64);
            Ok(())
        });
        let (cache, flight) = (Arc::clone(self), Arc::clone(flight));
        let counters = Arc::clone(store.counters());
        store.spawn(async move {
            let result = transfer.await.and_then(|()| cache.mark_present(chunk));
            if result.is_ok() {
                counters.chunk_fetches.fetch_add(1, Ordering::Relaxed);
            }
            // The flag is written (or the fetch failed): other processes may look now.
            drop(held);
            cache.finish(chunk, &flight, result);
        });
    }

    fn mark_present(&self, chunk: u64) -> Result<()> {
        self.map
            .write_all_at(&[1], chunk)
            .map_err(|e| StoreError::io("writing the cache map", &self.map_path, e))?;
        let (word, bit) = ((chunk / 64) as usize, 1u64 << (chunk % 64));
        self.known[word].fetch_or(bit, Ordering::AcqRel);
        Ok(())
    }

    /// Ends `flight` with `outcome`: later misses start a new fetch (or find the chunk).
    fn finish(&self, chunk: u64, flight: &Flight, outcome: Result<()>) {
        lock(&self.inflight).remove(&chunk);
        lock(&flight.state).outcome = Some(outcome);
        flight.changed.notify_all();
        self.landed.notify_all();
    }

    /// Blocks until no fetch of this cache handle is in flight.
    pub(crate) fn wait_idle(&self) {
        let mut inflight = lock(&self.inflight);
        while !inflight.is_empty() {
            inflight = self
                .landed
                .wait(inflight)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Copies data-object bytes starting at `offset` into `buf`; the caller has made sure
    /// their chunks are present.
    pub(crate) fn read_present(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.data
            .read_exact_at(buf, offset)
            .map_err(|e| StoreError::io("reading the cache file", &self.data_path, e))
    }
}

/// Opens `path` read-write, creating it, and makes it `len` bytes long if it is shorter
/// (sparse: no block is written). Never shortens it, so a concurrent opener loses nothing.
fn open_sized(path: &Path, len: u64) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| StoreError::io("opening the cache file", path, e))?;
    let current = file
        .metadata()
        .map_err(|e| StoreError::io("reading the cache file's length", path, e))?
        .len();
    if current < len {
        file.set_len(len)
            .map_err(|e| StoreError::io("sizing the cache file", path, e))?;
    }
    Ok(file)
}

/// An open-file-description write lock on one byte of the cache map, released on drop.
///
/// OFD locks belong to the open file, not the process or a thread, so two cache handles in
/// one process exclude each other as two processes do, the runtime thread that ends a fetch
/// may release the lock its starter took, and a process that dies releases its locks.
struct ChunkLock {
    map: Arc<File>,
    chunk: u64,
}

impl ChunkLock {
    fn acquire(map: &Arc<File>, path: &Path, chunk: u64) -> Result<ChunkLock> {
        let request = byte_lock(chunk, libc::F_WRLCK);
        loop {
            match fcntl(map.as_fd(), FcntlArg::F_OFD_SETLKW(&request)) {
                Ok(_) => {
                    return Ok(ChunkLock {
                        map: Arc::clone(map),
                        chunk,
                    });
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    return Err(StoreError::io(
                        "locking a chunk of the cache map",
                        path,
                        e.into(),
                    ));
                }
            }
        }
    }
}

impl Drop for ChunkLock {
    fn drop(&mut self) {
        let unlock = byte_lock(self.chunk, libc::F_UNLCK);
        // Closing the file would release it too; an error here leaves nothing to undo.
        let _ = fcntl(self.map.as_fd(), FcntlArg::F_OFD_SETLK(&unlock));
    }
}

fn byte_lock(chunk: u64, kind: libc::c_int) -> libc::flock {
    libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        // Chunk indexes are below 2^32 (objects are at most MAX_SIZE bytes, chunks 4 KiB or more).
        l_start: libc::off_t::try_from(chunk).unwrap_or(libc::off_t::MAX),
        l_len: 1,
        // OFD locks require 0 here.
        l_pid: 0,
    }
}
