//! A working-set file beside a snapshot: parsing never panics, and every range it accepts is
//! non-empty and inside the image.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use snapshot_format::working_set;

fuzz_target!(|data: &[u8]| {
    // The first 8 bytes choose the image size, the rest is the file.
    let (size, text) = data.split_at(data.len().min(8));
    let mut word = [0u8; 8];
    word[..size.len()].copy_from_slice(size);
    let image_size = u64::from_le_bytes(word);
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    if let Ok(ranges) = working_set::parse(text, image_size, Path::new("fuzz")) {
        for range in ranges {
            assert!(range.start < range.end && range.end <= image_size, "{range:?}");
        }
    }
});
