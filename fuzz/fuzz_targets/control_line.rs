//! A line on the control socket: parsing never panics, and only the three commands (and blank
//! lines) are accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The daemon is a binary crate: its parsers are compiled here from its own source file.
#[allow(dead_code)]
#[path = "../../crates/uffd-handler/src/parse.rs"]
mod parse;

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    if let Ok(Some(_)) = parse::ControlCommand::parse(&line) {
        assert!(["stats", "snapshot", "stop"].contains(&line.trim()), "{line:?}");
    }
});
