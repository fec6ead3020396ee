//! `uffd-handler`: the Firecracker-compatible userfaultfd page server for lazy microVM
//! snapshot restore (see `uffd_handler::daemon` and `docs/daemon.md`).

use std::process::ExitCode;

fn main() -> ExitCode {
    uffd_handler::daemon::main()
}
