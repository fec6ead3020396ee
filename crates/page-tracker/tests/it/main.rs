//! The integration tests of page-tracker, in one test binary: geometry and typed errors, the
//! known-failure rules, the tracker against a plain model (proptest), and racing threads.
//!
//! Proptest keeps the failing cases it found in `tests/proptest-regressions/<module>.txt`
//! (its default place for a module of a test binary rooted at `tests/it/main.rs`) and replays
//! them before any new case.

mod geometry;
mod known_failures;
mod model;
mod stress;
