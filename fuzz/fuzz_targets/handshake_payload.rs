//! The handshake's JSON as a VMM (or anyone who can reach the socket) sends it: parsed, then
//! validated into a layout as the daemon does. Neither may panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(regions) = uffd_handshake::parse_regions(data) {
        // Against an image as large as the regions claim, and one a page smaller.
        let size = regions
            .iter()
            .fold(0u64, |total, r| total.saturating_add(r.size));
        let _ = uffd_engine::GuestLayout::new(regions.clone(), size);
        let _ = uffd_engine::GuestLayout::new(regions, size.saturating_sub(4096));
    }
});
