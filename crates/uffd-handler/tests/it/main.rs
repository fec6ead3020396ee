//! The `uffd-handler` daemon binary end to end, driving the test VMM: restores byte for byte
//! in every mode (`e2e`), fatal errors and what they do to the VMM (`fatal`), and signals,
//! control commands, accept and handshake timeouts (`lifecycle`), the scrape endpoint
//! (`metrics`), several VMMs served at once (`concurrent`), snapshots in object storage
//! (`remote`).

mod common;

mod concurrent;
mod e2e;
mod fatal;
mod fuse_short;
mod fuse_storage;
mod hostile;
mod hostile_uid;
mod lifecycle;
mod metrics;
mod remote;
mod remote_measure;
mod stats;
mod storage;
