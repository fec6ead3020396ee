//! A native snapshot header read from disk (or, later, from a store): decoding never panics,
//! and whatever decodes encodes back to bytes that decode to the same header. Each input is
//! also decoded with its trailing CRC32 made right, so mutations reach the checks behind it
//! (the entry count, the checksum tables' counts, the geometry, the mapping's and the tables'
//! validation) instead of all dying at the CRC. The corpus holds headers with checksum tables.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snapshot_format::Header;

fn round_trip(bytes: &[u8]) {
    if let Ok(header) = Header::decode_native(bytes) {
        let again = Header::decode_native(&header.encode_native()).expect("re-encoded header");
        assert_eq!(again, header);
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip(data);
    if data.len() >= 4 {
        let mut fixed = data.to_vec();
        let body = fixed.len() - 4;
        let crc = crc32fast::hash(&fixed[..body]);
        fixed[body..].copy_from_slice(&crc.to_le_bytes());
        round_trip(&fixed);
    }
});
