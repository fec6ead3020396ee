//! The integration tests of snapshot-format, in one test binary: both header codecs and the
//! JSON form, the header operations against a naive per-block model, the layered source over
//! real files, data checksums in headers and reads verified against them (the page cache only
//! too), and the writers. Helpers shared by several modules live in `common`.

mod checksums;
mod common;
mod e2b_codec;
mod json;
mod native_codec;
mod ops;
mod source;
mod verified_reads;
mod writer;
