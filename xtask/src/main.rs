//! `cargo xtask …`: the project's build, test, lint, bench and demo entry points.

#![forbid(unsafe_code)]

mod fuzz;
mod hugepages;
mod s3_server;

use std::process::{Command, ExitCode};

const USAGE: &str = "\
usage: cargo xtask <command>

  test [--soak]     the whole test suite (reserves 2 MiB hugepages for the run and puts the
                    old value back); --soak lengthens the randomized soak tests
  lint              cargo fmt --check, clippy -D warnings, rustdoc -D warnings, a check of
                    every library crate for aarch64-unknown-linux-gnu, and cargo package
                    (with verification) of every publishable crate
  ci                lint, then test: what .ci/run does
  bench [crate]     criterion benches of one crate, or of all
  fuzz [target] [--seconds N]
                    coverage-guided fuzzing (cargo-fuzz, libFuzzer, nightly) of every parser
                    of outside bytes, or of one; N seconds each (default 60); the corpus in
                    fuzz/corpus grows with what it finds; a crash fails the command
  s3-server         install the S3-compatible server of the store tests (s3s-fs from
                    crates.io, under target/tools; test does it too) and print its path
  demo [flags]      the main job: build a 1 GiB snapshot, restore it lazily through the
                    daemon into a Firecracker-like VMM (a KVM guest where /dev/kvm works),
                    verify every byte, balloon, write, snapshot, restore again; flags go to
                    uffd-demo (--size-mib N, --no-kvm, --work DIR)
";

/// Hugepages the suite wants free: the 2 MiB variants of the kernel tests.
const HUGEPAGES_WANTED: u64 = 256;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("lint") => lint(),
        Some("ci") => lint().and_then(|()| test(&[])),
        Some("bench") => bench(args.get(1).map(String::as_str)),
        Some("fuzz") => fuzz::run(&args[1..], &workspace_root()),
        Some("demo") => demo(&args[1..]),
        Some("s3-server") => s3_server::ensure(&workspace_root()).map(|path| {
            println!("{}", path.display());
        }),
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown command `{other}`\n\n{USAGE}")),
        None => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `cargo` with `args` from the workspace root; an error names the command that failed.
fn cargo(args: &[&str], envs: &[(&str, &str)]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(workspace_root())
        .status()
        .map_err(|e| format!("cannot run {cargo}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed: {status}", args.join(" ")))
    }
}

fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn test(args: &[String]) -> Result<(), String> {
    let soak = match args {
        [] => false,
        [flag] if flag == "--soak" => true,
        other => return Err(format!("unknown test arguments {other:?}\n\n{USAGE}")),
    };
    report_machine();
    let _reservation = hugepages::Reservation::ensure_free(HUGEPAGES_WANTED);
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let skip_log = target.join("test-skips.log");
    let _ = std::fs::create_dir_all(&target);
    let _ = std::fs::remove_file(&skip_log);
    let skip_log_str = skip_log.to_string_lossy().into_owned();
    // The test VMM this very `cargo test` builds (test-vmm has integration tests, so cargo
    // builds its binary), with the run's feature set: the tests of other crates then use it
    // instead of building it again with another feature set.
    let test_vmm = target.join("debug").join("test-vmm");
    let test_vmm_str = test_vmm.to_string_lossy().into_owned();
    let mut envs = vec![
        ("RUST_BACKTRACE", "1"),
        ("UFFD_TEST_SKIP_LOG", skip_log_str.as_str()),
        ("TEST_VMM_BIN", test_vmm_str.as_str()),
    ];
    if soak {
        envs.push(("UFFD_SOAK", "1"));
    }
    // The store tests' S3 server; without it they skip and say why.
    let s3_server = s3_server::ensure(&workspace_root())
        .map(|path| path.to_string_lossy().into_owned())
        .inspect_err(|e| eprintln!("xtask: no S3 server, the store tests will skip: {e}"));
    if let Ok(path) = &s3_server {
        envs.push((s3_server::ENV, path.as_str()));
    }
    let result = cargo(
        &["test", "--workspace", "--all-features", "--no-fail-fast"],
        &envs,
    );
    report_skips(&skip_log);
    result
}

/// Prints how many tests skipped and why (each appended a line to the skip log): a skipped
/// test is reported by the harness as passed, so this is where skips are counted.
fn report_skips(skip_log: &std::path::Path) {
    let skips = std::fs::read_to_string(skip_log).unwrap_or_default();
    let lines: Vec<&str> = skips.lines().filter(|l| !l.is_empty()).collect();
    if lines.is_empty() {
        eprintln!("xtask: 0 tests skipped");
        return;
    }
    eprintln!(
        "xtask: {} tests SKIPPED (counted as passed above; they did not run):",
        lines.len()
    );
    for line in lines {
        eprintln!("xtask:   {line}");
    }
}

fn lint() -> Result<(), String> {
    cargo(&["fmt", "--all", "--", "--check"], &[])?;
    cargo(
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    cargo(
        &["doc", "--workspace", "--no-deps", "--all-features"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    cross_check()?;
    package()
}

/// The crates other projects take: each must build for Firecracker's other architecture.
const LIBRARY_CRATES: [&str; 7] = [
    "uffd-sys",
    "uffd-core",
    "page-tracker",
    "snapshot-format",
    "snapshot-store",
    "uffd-engine",
    "uffd-handshake",
];

/// `cargo check --target aarch64-unknown-linux-gnu` of every library crate and the daemon
/// (no linker needed), installing the target's standard library first if it is missing.
fn cross_check() -> Result<(), String> {
    const TARGET: &str = "aarch64-unknown-linux-gnu";
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|e| format!("cannot run rustup: {e}"))?;
    if !String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == TARGET)
    {
        eprintln!("xtask: rustup target add {TARGET}");
        let status = Command::new("rustup")
            .args(["target", "add", TARGET])
            .status()
            .map_err(|e| format!("cannot run rustup: {e}"))?;
        if !status.success() {
            return Err(format!("`rustup target add {TARGET}` failed: {status}"));
        }
    }
    let mut args = vec!["check", "--target", TARGET];
    for krate in LIBRARY_CRATES.iter().chain(&["uffd-handler"]) {
        args.extend(["-p", krate]);
    }
    cargo(&args, &[])
}

/// `cargo package` of every publishable crate, each verified by building it from its
/// package alone, as crates.io would (the workspace's own crates resolve through cargo's
/// local overlay of the packages being made), in a fresh target directory.
fn package() -> Result<(), String> {
    forget_unpacked_packages();
    // A target directory of its own, emptied first: cargo fingerprints registry packages by
    // name and version only, so builds left from an earlier run would be reused as they are.
    let target = workspace_root().join("target").join("package-verify");
    let _ = std::fs::remove_dir_all(&target);
    let target = target.to_string_lossy().into_owned();
    let mut args = vec!["package", "--allow-dirty", "--target-dir", target.as_str()];
    for krate in LIBRARY_CRATES.iter().chain(&["uffd-handler"]) {
        args.extend(["-p", krate]);
    }
    cargo(&args, &[])
}

fn bench(krate: Option<&str>) -> Result<(), String> {
    let _reservation = hugepages::Reservation::ensure_free(HUGEPAGES_WANTED);
    match krate {
        Some(krate) => cargo(&["bench", "-p", krate], &[]),
        None => cargo(&["bench", "--workspace"], &[]),
    }
}

fn demo(flags: &[String]) -> Result<(), String> {
    cargo(
        &[
            "build",
            "--release",
            "-p",
            "uffd-handler",
            "-p",
            "test-vmm",
            "-p",
            "uffd-demo",
        ],
        &[],
    )?;
    let release = workspace_root().join("target").join("release");
    eprintln!("xtask: running the demo");
    let status = Command::new(release.join("uffd-demo"))
        .arg("--daemon")
        .arg(release.join("uffd-handler"))
        .arg("--vmm")
        .arg(release.join("test-vmm"))
        .args(flags)
        .current_dir(workspace_root())
        .status()
        .map_err(|e| format!("cannot run uffd-demo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("the demo failed: {status}"))
    }
}

/// Prints what the kernel tests depend on, so a skipped test's reason is visible up front.
fn report_machine() {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    eprintln!("xtask: kernel {}", kernel.trim());
    for (path, what) in [
        ("/dev/userfaultfd", "userfaultfd device"),
        ("/dev/kvm", "KVM"),
    ] {
        let ok = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .is_ok();
        eprintln!(
            "xtask: {what} ({path}): {}",
            if ok {
                "usable"
            } else {
                "NOT usable; tests that need it skip"
            }
        );
    }
}

/// Removes what earlier `cargo package` runs left of this workspace's packages. Cargo verifies
/// each package against the others through a local registry: it unpacks them under
/// `$CARGO_HOME/registry/src/-<hash>/<name>-<version>` and builds them in `target/package`,
/// and reuses both as registry packages never change: with the version unchanged, a later run
/// would verify against stale sources and stale builds.
fn forget_unpacked_packages() {
    let _ = std::fs::remove_dir_all(workspace_root().join("target").join("package"));
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cargo")));
    let Some(src) = cargo_home.map(|h| h.join("registry").join("src")) else {
        return;
    };
    let Ok(registries) = std::fs::read_dir(&src) else {
        return;
    };
    let version = env!("CARGO_PKG_VERSION");
    for registry in registries.flatten() {
        // Local registries have no host name: their directories start with '-'.
        if !registry.file_name().to_string_lossy().starts_with('-') {
            continue;
        }
        for krate in LIBRARY_CRATES.iter().chain(&["uffd-handler"]) {
            let unpacked = registry.path().join(format!("{krate}-{version}"));
            if unpacked.exists() {
                let _ = std::fs::remove_dir_all(&unpacked);
            }
        }
    }
}
