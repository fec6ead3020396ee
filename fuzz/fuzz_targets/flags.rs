//! The size, duration, fault-around and metrics address flags, and the metrics endpoint's
//! request lines: parsing never panics (no overflow, no slicing
//! inside a character), and an accepted fault-around window is a power of two within the cap.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The daemon is a binary crate: its parsers are compiled here from its own source file.
#[allow(dead_code)]
#[path = "../../crates/uffd-handler/src/parse.rs"]
mod parse;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse::parse_size(text);
    let _ = parse::parse_duration(text);
    if let Ok(parse::MetricsAddr::Tcp(addr)) = parse::parse_metrics_addr(text) {
        assert!(addr.ip().is_loopback());
    }
    let _ = parse::parse_request_line(text);
    if let Ok(window) = parse::parse_fault_around(text) {
        for page in [4096, 2 << 20] {
            let pages = window.pages(page);
            assert!(pages.is_power_of_two() && pages * page <= parse::FAULT_AROUND_MAX_BYTES.max(page));
        }
    }
});
