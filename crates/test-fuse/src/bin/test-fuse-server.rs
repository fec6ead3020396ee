//! The test FUSE file system's server process: `test-fuse-server BACKING MOUNTPOINT
//! MAX_READAHEAD`, driven by `test_fuse::FuseMount` over stdin and stdout.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    test_fuse::server::main()
}
