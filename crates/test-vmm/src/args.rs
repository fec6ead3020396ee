//! The `test-vmm` command line.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::PayloadVersion;

/// Unmapped address space left between regions by default (like the MMIO gap).
pub const DEFAULT_GAP: u64 = 2 << 20;

/// `test-vmm`: a process that behaves towards a page-fault handler exactly as Firecracker does
/// (guest memory, uffd, registration, handshake), then obeys JSON-line requests on stdin.
#[derive(Debug, Clone, PartialEq, Eq, clap::Parser)]
#[command(name = "test-vmm", version)]
pub struct VmmArgs {
    /// The handler's Unix socket.
    #[arg(long)]
    pub socket: PathBuf,
    /// Size of one guest memory region (bytes, or with a K, M or G suffix); repeat for more
    /// regions, in guest-physical order.
    #[arg(long = "region", required = true, value_name = "SIZE")]
    pub regions: Vec<u64>,
    /// Page size in bytes declared to the handler and used as the touch unit (4096 or 2097152).
    #[arg(long, default_value_t = 4096)]
    pub page_size: u64,
    /// Map guest memory with `MAP_HUGETLB|MAP_HUGE_2MB` (needs `--page-size 2097152`).
    #[arg(long)]
    pub hugetlb: bool,
    /// The Firecracker generation whose handshake to send: v1.1, v1.7 or v1.12.
    #[arg(long, default_value_t = PayloadVersion::V1_12)]
    pub payload: PayloadVersion,
    /// Keep the socket open after the handshake (default: as that generation does, i.e. only
    /// from v1.12).
    #[arg(long)]
    pub keep_socket: Option<bool>,
    /// vCPUs of a KVM guest over the guest memory (0: no KVM guest).
    #[arg(long, default_value_t = 0)]
    pub kvm_vcpus: u32,
    /// Unmapped bytes between regions (rounded up to 2 MiB).
    #[arg(long, default_value_t = DEFAULT_GAP)]
    pub gap: u64,
    /// Create the userfaultfd blocking (without `O_NONBLOCK`), as a VMM other than
    /// Firecracker might.
    #[arg(long)]
    pub blocking_uffd: bool,
    /// Register every region but leave the last one out of the handshake, as a VMM that
    /// registers more than it describes would.
    #[arg(long)]
    pub hide_last_region: bool,
}

impl VmmArgs {
    /// The arguments (without the program name) that parse back into `self`.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["--socket".into(), self.socket.clone().into()];
        for size in &self.regions {
            args.extend(["--region".into(), size.to_string().into()]);
        }
        args.extend([
            "--page-size".into(),
            self.page_size.to_string().into(),
            "--payload".into(),
            self.payload.to_string().into(),
            "--gap".into(),
            self.gap.to_string().into(),
        ]);
        if self.hugetlb {
            args.push("--hugetlb".into());
        }
        if self.kvm_vcpus > 0 {
            args.extend(["--kvm-vcpus".into(), self.kvm_vcpus.to_string().into()]);
        }
        if let Some(keep) = self.keep_socket {
            args.extend(["--keep-socket".into(), keep.to_string().into()]);
        }
        if self.blocking_uffd {
            args.push("--blocking-uffd".into());
        }
        if self.hide_last_region {
            args.push("--hide-last-region".into());
        }
        args
    }

    /// Whether the socket stays open after the handshake.
    pub fn keeps_socket(&self) -> bool {
        self.keep_socket.unwrap_or(self.payload.keeps_socket())
    }

    /// Checks the combination: regions non-empty and whole pages, a supported page size,
    /// hugetlb only with 2 MiB pages.
    pub fn validate(&self) -> Result<(), String> {
        if ![4096, 2 << 20].contains(&self.page_size) {
            return Err(format!(
                "page size {} is neither 4096 nor 2097152",
                self.page_size
            ));
        }
        if self.hugetlb && self.page_size != 2 << 20 {
            return Err("--hugetlb needs --page-size 2097152".into());
        }
        if self.regions.is_empty() {
            return Err("no regions".into());
        }
        for (i, &size) in self.regions.iter().enumerate() {
            if size == 0 || size % self.page_size != 0 {
                return Err(format!(
                    "region {i} of {size} bytes is not a positive multiple of the {}-byte page",
                    self.page_size
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn args_round_trip() {
        let args = VmmArgs {
            socket: "/tmp/x.sock".into(),
            regions: vec![4096, 8192],
            page_size: 4096,
            hugetlb: false,
            payload: PayloadVersion::V1_7,
            keep_socket: Some(true),
            kvm_vcpus: 3,
            gap: 4 << 20,
            blocking_uffd: true,
            hide_last_region: true,
        };
        let mut argv = vec![OsString::from("test-vmm")];
        argv.extend(args.to_args());
        assert_eq!(VmmArgs::try_parse_from(argv).unwrap(), args);
    }
}
