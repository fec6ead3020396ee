//! The handshake's JSON: Firecracker's list of guest memory regions, in every version's shape.
//!
//! Each region is an object with `base_host_virt_addr`, `size` and `offset` (all bytes). v1.7
//! added `page_size_kib`, which despite its name holds **bytes**; v1.12 added `page_size` (bytes)
//! and sends both, equal. v1.1–v1.6 send no page size at all: 4 KiB pages. Unknown fields are
//! ignored, so later versions' additions do not break us.

use serde_json::{Map, Value};
use uffd_core::PageSize;

use uffd_engine::GuestRegion;

/// The page size of a region that names none (Firecracker v1.1–v1.6).
pub const DEFAULT_PAGE_SIZE: PageSize = PageSize::Base4K;

/// Why the handshake's JSON was refused. Each variant names the region (by its index in the
/// array) and the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Not JSON at all, or JSON followed by other bytes.
    #[error("the handshake is not valid JSON: {message}")]
    Malformed {
        /// serde_json's description, with line and column.
        message: String,
    },
    /// Valid JSON, but not an array.
    #[error("the handshake JSON is {found}, not an array of regions")]
    NotAnArray {
        /// What it is instead ("an object", "a string", ...).
        found: &'static str,
    },
    /// An array with no regions.
    #[error("the handshake's region array is empty")]
    Empty,
    /// An array element that is not an object.
    #[error("region {index} is {found}, not an object")]
    RegionNotAnObject {
        /// The element's index in the array.
        index: usize,
        /// What it is instead.
        found: &'static str,
    },
    /// A required field is absent.
    #[error("region {index} has no `{field}` field")]
    MissingField {
        /// The region's index in the array.
        index: usize,
        /// The missing field.
        field: &'static str,
    },
    /// A field that must hold a byte count holds something else.
    #[error("region {index}'s `{field}` is {found}, not an integer from 0 to 2^64-1")]
    NotAnInteger {
        /// The region's index in the array.
        index: usize,
        /// The field.
        field: &'static str,
        /// The value as JSON (shortened if long).
        found: String,
    },
    /// A page size other than 4 KiB or 2 MiB.
    #[error("region {index}'s `{field}` is {bytes} bytes; page sizes must be 4096 or 2097152")]
    BadPageSize {
        /// The region's index in the array.
        index: usize,
        /// `page_size` or `page_size_kib`.
        field: &'static str,
        /// The value, in bytes.
        bytes: u64,
    },
    /// `page_size` and `page_size_kib` both present but different (v1.12+ sends them equal).
    #[error(
        "region {index} says page_size {page_size} but page_size_kib {page_size_kib} \
         (both are bytes and must agree)"
    )]
    PageSizeMismatch {
        /// The region's index in the array.
        index: usize,
        /// `page_size`, in bytes.
        page_size: u64,
        /// `page_size_kib`, also in bytes.
        page_size_kib: u64,
    },
}

/// Parses the handshake JSON into regions (unvalidated: [`crate::GuestLayout::new`] checks
/// alignment, overlap and coverage against the image).
pub fn parse_regions(json: &[u8]) -> Result<Vec<GuestRegion>, PayloadError> {
    let value: Value = serde_json::from_slice(json).map_err(|e| PayloadError::Malformed {
        message: e.to_string(),
    })?;
    regions_from_value(&value)
}

/// The parsed JSON if `bytes` hold a whole JSON document (trailing whitespace allowed),
/// `None` if they are a proper prefix of one (more bytes may complete it).
pub(super) fn complete_json(bytes: &[u8]) -> Result<Option<Value>, PayloadError> {
    match serde_json::from_slice(bytes) {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.is_eof() => Ok(None),
        Err(e) => Err(PayloadError::Malformed {
            message: e.to_string(),
        }),
    }
}

/// The regions described by already-parsed handshake JSON.
pub(super) fn regions_from_value(value: &Value) -> Result<Vec<GuestRegion>, PayloadError> {
    let items = value
        .as_array()
        .ok_or(PayloadError::NotAnArray { found: kind(value) })?;
    if items.is_empty() {
        return Err(PayloadError::Empty);
    }
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let fields = item.as_object().ok_or(PayloadError::RegionNotAnObject {
                index,
                found: kind(item),
            })?;
            region(index, fields)
        })
        .collect()
}

fn region(index: usize, fields: &Map<String, Value>) -> Result<GuestRegion, PayloadError> {
    let required =
        |field| integer(index, fields, field)?.ok_or(PayloadError::MissingField { index, field });
    let host_addr = required("base_host_virt_addr")?;
    let size = required("size")?;
    let offset = required("offset")?;
    let page_size = integer(index, fields, "page_size")?;
    let page_size_kib = integer(index, fields, "page_size_kib")?;
    let (field, bytes) = match (page_size, page_size_kib) {
        (Some(a), Some(b)) if a != b => {
            return Err(PayloadError::PageSizeMismatch {
                index,
                page_size: a,
                page_size_kib: b,
            });
        }
        (Some(bytes), _) => ("page_size", bytes),
        (None, Some(bytes)) => ("page_size_kib", bytes),
        (None, None) => ("(none)", DEFAULT_PAGE_SIZE.bytes()),
    };
    let page_size = PageSize::from_bytes(bytes).ok_or(PayloadError::BadPageSize {
        index,
        field,
        bytes,
    })?;
    Ok(GuestRegion {
        host_addr,
        size,
        offset,
        page_size,
    })
}

/// The field as a u64, `None` if absent. JSON `null` counts as absent.
fn integer(
    index: usize,
    fields: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<u64>, PayloadError> {
    match fields.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value.as_u64().map(Some).ok_or_else(|| {
            let mut found = value.to_string();
            if found.len() > 40 {
                let cut = (0..=37).rev().find(|&i| found.is_char_boundary(i));
                found.truncate(cut.unwrap_or(0));
                found.push_str("...");
            }
            PayloadError::NotAnInteger {
                index,
                field,
                found,
            }
        }),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_generation_parses() {
        let old = br#"[{"base_host_virt_addr":4096,"size":8192,"offset":0}]"#;
        let r = parse_regions(old).unwrap();
        assert_eq!(r[0].page_size, PageSize::Base4K);
        assert_eq!((r[0].host_addr, r[0].size, r[0].offset), (4096, 8192, 0));

        let kib =
            br#"[{"base_host_virt_addr":0,"size":2097152,"offset":0,"page_size_kib":2097152}]"#;
        assert_eq!(parse_regions(kib).unwrap()[0].page_size, PageSize::Huge2M);

        let both = br#"[{"base_host_virt_addr":0,"size":4096,"offset":0,"page_size":4096,
                         "page_size_kib":4096,"future":{"x":[1]}}]"#;
        assert_eq!(parse_regions(both).unwrap()[0].page_size, PageSize::Base4K);
    }

    #[test]
    fn bad_payloads_are_named() {
        use PayloadError::*;
        let p = |s: &str| parse_regions(s.as_bytes());
        assert!(matches!(p("[{"), Err(Malformed { .. })));
        assert!(matches!(p("[] x"), Err(Malformed { .. })));
        assert_eq!(p(r#"{"a":1}"#), Err(NotAnArray { found: "an object" }));
        assert_eq!(p("[]"), Err(Empty));
        assert_eq!(
            p("[7]"),
            Err(RegionNotAnObject {
                index: 0,
                found: "a number"
            })
        );
        assert_eq!(
            p(r#"[{"base_host_virt_addr":0,"offset":0}]"#),
            Err(MissingField {
                index: 0,
                field: "size"
            })
        );
        assert!(matches!(
            p(r#"[{"base_host_virt_addr":-4096,"size":1,"offset":0}]"#),
            Err(NotAnInteger { field: "base_host_virt_addr", found, .. }) if found == "-4096"
        ));
        assert!(matches!(
            p(r#"[{"base_host_virt_addr":0,"size":4096.0,"offset":0}]"#),
            Err(NotAnInteger { field: "size", .. })
        ));
        assert!(matches!(
            p(r#"[{"base_host_virt_addr":0,"size":"4096","offset":0}]"#),
            Err(NotAnInteger { field: "size", .. })
        ));
        assert_eq!(
            p(r#"[{"base_host_virt_addr":0,"size":4096,"offset":0,"page_size_kib":4}]"#),
            Err(BadPageSize {
                index: 0,
                field: "page_size_kib",
                bytes: 4
            })
        );
        assert_eq!(
            p(
                r#"[{"base_host_virt_addr":0,"size":4096,"offset":0,"page_size":4096,"page_size_kib":2097152}]"#
            ),
            Err(PageSizeMismatch {
                index: 0,
                page_size: 4096,
                page_size_kib: 2097152
            })
        );
        let long = format!(
            r#"[{{"base_host_virt_addr":0,"size":"{}","offset":0}}]"#,
            "é".repeat(100)
        );
        let Err(NotAnInteger { found, .. }) = p(&long) else {
            panic!("long string accepted")
        };
        assert!(found.len() <= 40, "{found}");
    }

    #[test]
    fn completeness_tells_prefixes_from_errors() {
        let whole = br#"[{"base_host_virt_addr":0,"size":4096,"offset":0}]"#;
        for cut in 0..whole.len() {
            assert_eq!(
                complete_json(&whole[..cut]),
                Ok(None),
                "prefix of {cut} bytes"
            );
        }
        assert!(complete_json(whole).unwrap().is_some());
        assert!(complete_json(b"[1] \n").unwrap().is_some());
        assert!(complete_json(b"[1]x").is_err());
        assert!(complete_json(b"[1,,").is_err());
    }
}
