//! The serde JSON view: round trips, and validation on the way in.

use proptest::prelude::*;
use snapshot_format::Header;

use crate::common::{arb_header, build};

#[test]
fn json_shape_is_readable() {
    let h = Header::full_image(build(1), 4096, 8192).unwrap();
    let json = serde_json::to_value(&h).unwrap();
    assert_eq!(json["metadata"]["block_size"], 4096);
    assert_eq!(
        json["metadata"]["build_id"],
        "01010101-0101-0101-0101-010101010101"
    );
    assert_eq!(json["entries"][0]["length"], 8192);
    assert_eq!(json["entries"][0]["storage_offset"], 0);
}

#[test]
fn json_input_is_validated() {
    let h = Header::full_image(build(1), 4096, 8192).unwrap();
    let mut json = serde_json::to_value(&h).unwrap();
    json["entries"][0]["length"] = 4096.into();
    let err = serde_json::from_value::<Header>(json).unwrap_err();
    assert!(err.to_string().contains("covers only"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Fuzz: arbitrary bytes, and JSON-ish text, never panic the JSON view.
    #[test]
    fn arbitrary_json_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200), text in "[{}\\[\\]\":,0-9a-z_ -]{0,200}") {
        let _ = serde_json::from_slice::<Header>(&bytes);
        let _ = serde_json::from_str::<Header>(&text);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn json_round_trips(h in arb_header()) {
        let text = serde_json::to_string(&h).unwrap();
        prop_assert_eq!(serde_json::from_str::<Header>(&text).unwrap(), h);
    }
}
