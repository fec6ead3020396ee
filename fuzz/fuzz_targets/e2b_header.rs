//! An E2B-format snapshot header: decoding never panics, and whatever decodes encodes back to
//! bytes that decode to the same header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snapshot_format::Header;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = Header::decode_e2b(data) {
        let again = Header::decode_e2b(&header.encode_e2b()).expect("re-encoded header");
        assert_eq!(again, header);
    }
});
