//! The S3-compatible server the tests run: `s3s-fs` from crates.io, installed by
//! `cargo xtask s3-server` (and by `cargo xtask test`), serving a test directory on loopback.
//! One copy for every crate's tests, in `test_support::s3`.

pub(crate) use test_support::s3::{ACCESS_KEY, BUCKET, S3Server, SECRET_KEY};
