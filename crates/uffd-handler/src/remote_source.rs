//! A snapshot in object storage as the engine's page source: [`StoreSource`] serves a
//! `snapshot_store::RemoteSource` (bytes fetched through the host's chunk cache).
//!
//! The adapter lives here rather than in snapshot-store so that the store crate does not
//! depend on the engine (nor the engine on the store): users of either alone pull in neither.

use std::sync::Arc;

use snapshot_store::{RemoteSource, StoreError};
use uffd_engine::{Extent, PageSource, SourceError};

/// The engine's view of a generation in the store.
#[derive(Debug, Clone)]
pub(crate) struct StoreSource(pub(crate) Arc<RemoteSource>);

/// A store error as a source error: its message names the object, range or cache file and
/// the last failure, never a credential (the store's errors carry none).
fn source_error(e: StoreError) -> SourceError {
    SourceError(format!("snapshot store: {e}"))
}

impl PageSource for StoreSource {
    fn size(&self) -> u64 {
        self.0.size()
    }

    /// From the header alone: runs of holes and runs of data (of any build) merged, as the
    /// local sources do, so fault-around and prefetch see the same extents.
    fn extent(&self, offset: u64, max_len: u64) -> Result<Extent, SourceError> {
        Extent::in_header(self.0.header(), offset, max_len)
    }

    /// Blocking: fetches the chunks not in the cache yet, retried by the store client.
    fn read_into(&self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        self.0.read_into(offset, buf).map_err(source_error)
    }

    /// The cache only, never the network: `Ok(false)` hands the fault to a fetcher.
    fn read_resident(&self, offset: u64, buf: &mut [u8]) -> Result<bool, SourceError> {
        self.0.read_resident(offset, buf).map_err(source_error)
    }
}
