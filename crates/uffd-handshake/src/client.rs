//! The one message a Firecracker VMM sends to its page-fault handler: the regions JSON, in the
//! shape each Firecracker generation uses.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Which Firecracker generation's payload the peer sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum PayloadVersion {
    /// v1.1–v1.6: `base_host_virt_addr`, `size`, `offset` only (the page size is implied 4 KiB).
    /// Those versions also closed the socket right after sending.
    #[serde(rename = "v1.1")]
    V1_1,
    /// v1.7–v1.11: adds `page_size_kib`, which holds **bytes** despite its name.
    #[serde(rename = "v1.7")]
    V1_7,
    /// v1.12 and later: `page_size_kib` and `page_size`, both in bytes; the socket stays open
    /// for the VMM's lifetime.
    #[default]
    #[serde(rename = "v1.12")]
    V1_12,
}

impl PayloadVersion {
    /// Every version, oldest first.
    pub const ALL: [PayloadVersion; 3] = [
        PayloadVersion::V1_1,
        PayloadVersion::V1_7,
        PayloadVersion::V1_12,
    ];

    /// The name used on the command line and in JSON (`v1.1`, `v1.7`, `v1.12`).
    pub const fn name(self) -> &'static str {
        match self {
            PayloadVersion::V1_1 => "v1.1",
            PayloadVersion::V1_7 => "v1.7",
            PayloadVersion::V1_12 => "v1.12",
        }
    }

    /// Whether Firecracker of this generation keeps the socket open after the handshake
    /// (v1.12+), so that the handler sees POLLHUP when it exits.
    pub const fn keeps_socket(self) -> bool {
        matches!(self, PayloadVersion::V1_12)
    }
}

impl fmt::Display for PayloadVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A payload version name that is not one of `v1.1`, `v1.7`, `v1.12`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown payload version {0:?} (expected v1.1, v1.7 or v1.12)")]
pub struct UnknownPayloadVersion(pub String);

impl FromStr for PayloadVersion {
    type Err = UnknownPayloadVersion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PayloadVersion::ALL
            .into_iter()
            .find(|v| v.name() == s)
            .ok_or_else(|| UnknownPayloadVersion(s.to_owned()))
    }
}

/// One guest memory region as the VMM describes it to the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HandshakeRegion {
    /// Start of the region in the VMM's address space.
    pub base_host_virt_addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// Where the region's bytes start in the memory image (running sum of earlier sizes).
    pub offset: u64,
    /// Page size in bytes.
    pub page_size: u64,
}

/// The payload field by field, in Firecracker's field order; `None` fields are left out.
#[derive(Serialize)]
struct Wire {
    base_host_virt_addr: u64,
    size: u64,
    offset: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    page_size_kib: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    page_size: Option<u64>,
}

/// The compact JSON (no whitespace, no trailing newline) a Firecracker of `version` sends for
/// `regions`: an array in the given order, each object with the fields of that generation.
pub fn handshake_json(regions: &[HandshakeRegion], version: PayloadVersion) -> String {
    let wire: Vec<Wire> = regions
        .iter()
        .map(|r| Wire {
            base_host_virt_addr: r.base_host_virt_addr,
            size: r.size,
            offset: r.offset,
            page_size_kib: (version != PayloadVersion::V1_1).then_some(r.page_size),
            page_size: (version == PayloadVersion::V1_12).then_some(r.page_size),
        })
        .collect();
    serde_json::to_string(&wire).expect("serialising plain integers cannot fail")
}
