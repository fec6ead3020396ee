//! The blocking store client: its own small tokio runtime, bounded connections, reads with an
//! idle timeout, retries with jittered backoff.

use std::future::Future;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;

use crate::config::StoreConfig;
use crate::error::{Result, StoreError};
use crate::fetch::{Attempt, Delivery, Inner, fetch_once, lock, retried, scrub};
use crate::location;

/// A snapshot location in an object store (`s3://bucket/prefix`, `gs://`, `az://`,
/// `http(s)://`, `file://`), with a blocking API for the engine's threads.
///
/// Cheap to clone: clones share the runtime, the connection bound and the statistics.
/// Must not be used from inside another tokio runtime (its calls block).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    /// Held by the handles only, never by a task: the runtime is dropped by the last handle,
    /// on the caller's thread (dropping it on one of its own threads would panic).
    runtime: Arc<Runtime>,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) gets: AtomicU64,
    pub(crate) bytes_fetched: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) puts: AtomicU64,
    pub(crate) chunk_hits: AtomicU64,
    pub(crate) chunk_fetches: AtomicU64,
    pub(crate) coalesced: AtomicU64,
    pub(crate) fetched_elsewhere: AtomicU64,
}

/// What a [`Store`] (and the caches reading through it) did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// GET requests sent (every attempt counts).
    pub gets: u64,
    /// Body bytes received by GETs that completed.
    pub bytes_fetched: u64,
    /// Attempts that failed and were retried, or ended in an error.
    pub retries: u64,
    /// PUT requests that succeeded.
    pub puts: u64,
    /// Chunk lookups answered by the cache (by `read_into` and `read_resident` alike).
    pub chunk_hits: u64,
    /// Chunks this process fetched from the store.
    pub chunk_fetches: u64,
    /// Chunk misses that waited for another thread's fetch of the same chunk instead of
    /// fetching it again.
    pub coalesced: u64,
    /// Chunk misses that found the chunk fetched by another process (or another cache handle)
    /// once its lock was theirs.
    pub fetched_elsewhere: u64,
}

impl Store {
    /// Opens the snapshot location `url` with `config`.
    ///
    /// Credentials come from each store's usual environment variables (`AWS_*`,
    /// `GOOGLE_*`, `AZURE_*`), then `config.options`. No request is sent yet.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidUrl`] for an unknown scheme or a URL its store refuses,
    /// [`StoreError::InvalidOption`] for an option key the store does not know.
    pub fn open(url: &str, config: StoreConfig) -> Result<Store> {
        if config.attempts == 0 || config.max_connections == 0 {
            return Err(StoreError::InvalidOption {
                key: "attempts/max_connections".into(),
                reason: "must be at least 1".into(),
            });
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.runtime_threads.max(1))
            .thread_name("snapshot-store")
            .enable_all()
            .build()
            .map_err(|e| StoreError::io("starting the store's runtime", "tokio", e))?;
        // Builders may spawn nothing, but reqwest's client wants a runtime context.
        let location = {
            let _context = runtime.enter();
            location::open(url, &config)?
        };
        Ok(Store {
            runtime: Arc::new(runtime),
            inner: Arc::new(Inner {
                objects: location.objects,
                prefix: location.prefix,
                shown: location.shown,
                connections: Arc::new(Semaphore::new(config.max_connections)),
                config,
                counters: Arc::default(),
            }),
        })
    }

    /// The URL, as it may be logged (no credentials, no query).
    pub fn url(&self) -> &str {
        &self.inner.shown
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// Counters so far.
    pub fn stats(&self) -> StoreStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StoreStats {
            gets: get(&c.gets),
            bytes_fetched: get(&c.bytes_fetched),
            retries: get(&c.retries),
            puts: get(&c.puts),
            chunk_hits: get(&c.chunk_hits),
            chunk_fetches: get(&c.chunk_fetches),
            coalesced: get(&c.coalesced),
            fetched_elsewhere: get(&c.fetched_elsewhere),
        }
    }

    pub(crate) fn counters(&self) -> &Arc<Counters> {
        &self.inner.counters
    }

    fn path(&self, name: &str) -> ObjectPath {
        self.inner.prefix.clone().join(name)
    }

    /// Bytes `range` of object `name` (relative to the prefix), exactly `range.end -
    /// range.start` of them.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] at once if the object is absent; [`StoreError::Unavailable`]
    /// when every attempt failed (an error, no byte for the idle timeout, a short body).
    pub fn get_range(&self, name: &str, range: Range<u64>) -> Result<Bytes> {
        let body = Arc::new(Mutex::new(BytesMut::with_capacity(
            (range.end - range.start) as usize,
        )));
        let sink = Arc::clone(&body);
        self.runtime
            .block_on(self.stream_range(name, range, move |_, piece| {
                lock(&sink).extend_from_slice(piece);
                Ok(())
            }))?;
        let body = std::mem::take(&mut *lock(&body));
        Ok(body.freeze())
    }

    /// Runs `future` on the store's runtime, detached.
    pub(crate) fn spawn(&self, future: impl Future<Output = ()> + Send + 'static) {
        self.runtime.spawn(future);
    }

    /// Streams bytes `range` of object `name` into `sink(offset, piece)`, in order, each
    /// byte once: an attempt that fails partway is retried from the first byte not yet
    /// delivered. An error from `sink` ends the transfer at once.
    pub(crate) fn stream_range<S>(
        &self,
        name: &str,
        range: Range<u64>,
        sink: S,
    ) -> impl Future<Output = Result<()>> + Send + 'static
    where
        S: FnMut(u64, &[u8]) -> Result<()> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let name = name.to_owned();
        let path = self.path(&name);
        let delivered = Arc::new(Mutex::new(Delivery {
            next: range.start,
            sink,
        }));
        async move {
            if range.is_empty() {
                return Ok(());
            }
            let attempt = || {
                let from = lock(&delivered).next;
                let delivered = Arc::clone(&delivered);
                fetch_once(&inner, &name, &path, Some(from..range.end), move |piece| {
                    let mut delivery = lock(&delivered);
                    let at = delivery.next;
                    (delivery.sink)(at, piece)?;
                    delivery.next += piece.len() as u64;
                    Ok(())
                })
            };
            retried(&inner, &name, range.clone(), attempt).await
        }
    }

    /// The whole object `name`, or `None` if the store has no such object.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when every attempt failed.
    pub fn get(&self, name: &str) -> Result<Option<Bytes>> {
        let path = self.path(name);
        let body = Arc::new(Mutex::new(BytesMut::new()));
        let attempt = || {
            // A failed attempt's bytes are dropped: a whole-object read starts again.
            lock(&body).clear();
            let sink = Arc::clone(&body);
            fetch_once(&self.inner, name, &path, None, move |piece| {
                lock(&sink).extend_from_slice(piece);
                Ok(())
            })
        };
        match self.block_on_retried(name, 0..0, attempt) {
            Ok(()) => Ok(Some(std::mem::take(&mut *lock(&body)).freeze())),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The length of object `name`, or `None` if the store has no such object.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when every attempt failed.
    pub fn object_len(&self, name: &str) -> Result<Option<u64>> {
        let path = self.path(name);
        let objects = Arc::clone(&self.inner.objects);
        let idle = self.inner.config.idle_timeout;
        let attempt = || {
            let (objects, path) = (Arc::clone(&objects), path.clone());
            let connections = Arc::clone(&self.inner.connections);
            async move {
                let _permit = connections.acquire_owned().await;
                match tokio::time::timeout(idle, objects.head(&path)).await {
                    Err(_) => Err(Attempt::Retry(format!("no answer for {idle:?}"))),
                    Ok(Ok(meta)) => Ok(Some(meta.size)),
                    Ok(Err(object_store::Error::NotFound { .. })) => Ok(None),
                    Ok(Err(e)) => Err(Attempt::Retry(scrub(&e.to_string()))),
                }
            }
        };
        self.block_on_retried(name, 0..0, attempt)
    }

    /// Stores `bytes` as object `name` (one PUT, retried as a whole).
    ///
    /// # Errors
    ///
    /// [`StoreError::WriteFailed`] when every attempt failed.
    pub fn put(&self, name: &str, bytes: Bytes) -> Result<()> {
        let path = self.path(name);
        let attempt = || {
            let (objects, path) = (Arc::clone(&self.inner.objects), path.clone());
            let connections = Arc::clone(&self.inner.connections);
            let payload = PutPayload::from_bytes(bytes.clone());
            async move {
                let _permit = connections.acquire_owned().await;
                objects
                    .put(&path, payload)
                    .await
                    .map(|_| ())
                    .map_err(|e| Attempt::Retry(scrub(&e.to_string())))
            }
        };
        let attempts = self.inner.config.attempts;
        match self.block_on_retried(name, 0..0, attempt) {
            Ok(()) => {
                self.inner.counters.puts.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(StoreError::Unavailable { last, .. }) => Err(StoreError::WriteFailed {
                object: name.to_owned(),
                attempts,
                last,
            }),
            Err(e) => Err(e),
        }
    }

    /// Removes object `name` (absent is fine).
    ///
    /// # Errors
    ///
    /// [`StoreError::WriteFailed`] when every attempt failed.
    pub fn delete(&self, name: &str) -> Result<()> {
        let path = self.path(name);
        let attempt = || {
            let (objects, path) = (Arc::clone(&self.inner.objects), path.clone());
            async move {
                match objects.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(Attempt::Retry(scrub(&e.to_string()))),
                }
            }
        };
        let attempts = self.inner.config.attempts;
        self.block_on_retried(name, 0..0, attempt)
            .map_err(|e| match e {
                StoreError::Unavailable { last, .. } => StoreError::WriteFailed {
                    object: name.to_owned(),
                    attempts,
                    last,
                },
                other => other,
            })
    }

    /// Runs `attempt` on the runtime until it succeeds, fails fatally, or the attempts run out.
    fn block_on_retried<T, F, Fut>(&self, name: &str, range: Range<u64>, attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Attempt>>,
    {
        self.runtime
            .block_on(retried(&self.inner, name, range, attempt))
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("url", &self.inner.shown)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}
