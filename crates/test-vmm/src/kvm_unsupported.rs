//! The KVM guest is x86-64 machine code; on other architectures asking for vCPUs is a startup
//! error (stage `kvm`), which the tests report as a skip.

use crate::control::{KvmReport, RemoteError};
use crate::memory::GuestMemory;

/// No KVM guest on this architecture: the type has no values.
#[derive(Debug)]
pub(crate) enum KvmGuest {}

impl KvmGuest {
    pub(crate) fn new(_mem: &GuestMemory, _vcpus: u32) -> Result<Self, String> {
        Err(format!(
            "the test VMM's KVM guest is x86_64 code; this is {}",
            std::env::consts::ARCH
        ))
    }

    pub(crate) fn touch(
        &self,
        _offset: u64,
        _len: u64,
        _vcpus: u32,
        _write: Option<u32>,
    ) -> Result<KvmReport, RemoteError> {
        match *self {}
    }
}
