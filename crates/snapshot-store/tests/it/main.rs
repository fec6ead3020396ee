//! The integration tests of snapshot-store, in one test binary, against a real S3-compatible
//! server (`s3s-fs`) behind the tests' own fault-injecting proxy: every byte read through the
//! store and the chunk cache compared with the local snapshot, cache sharing, faults and
//! retries, upload and download.

mod common;
mod faults;
mod measure;
mod roundtrip;
mod sharing;
mod transfer;
