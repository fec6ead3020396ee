//! Deterministic race tests (feature `test-hooks`, `required-features` of this target): hook
//! points park an engine thread, the racing operation is fired, the thread is released, and
//! the page's bytes and state are checked. Without the feature this target is not built, so
//! a plain `cargo test` never shows it green without running it.

// The engine tests' helpers, one copy shared by both test targets of this crate.
#[path = "../it/common/mod.rs"]
mod common;

mod local;
mod vmm;
mod vmm_exit;
