//! The integration tests of uffd-sys, in one test binary: every number and layout of the
//! crate compared with `linux-raw-sys` (generated from the kernel's UAPI headers) and with a C
//! program compiled against the installed headers.

mod against_kernel_headers;
mod c_probe;
