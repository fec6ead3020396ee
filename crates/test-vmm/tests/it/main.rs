//! The test VMM against a minimal handler of the tests' own (not the engine): the handshake it
//! sends in every Firecracker version (`handshake`), its lifecycle (`lifecycle`), workloads
//! over several regions (`workload`), 2 MiB guest memory (`hugetlb`) and the KVM guest (`kvm`).

mod common;

mod handshake;
mod hugetlb;
#[cfg(target_arch = "x86_64")]
mod kvm;
mod lifecycle;
mod workload;
