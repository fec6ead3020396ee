//! `cargo xtask fuzz`: coverage-guided fuzzing of the parsers of outside bytes with
//! cargo-fuzz (libFuzzer), which needs a nightly toolchain; both are installed if missing.

use std::path::Path;
use std::process::Command;

/// The fuzz targets (`fuzz/fuzz_targets/<name>.rs`).
pub(crate) const TARGETS: [&str; 6] = [
    "handshake_payload",
    "native_header",
    "e2b_header",
    "working_set",
    "control_line",
    "flags",
];

/// Parses `[target] [--seconds N]` and fuzzes.
pub(crate) fn run(args: &[String], root: &Path) -> Result<(), String> {
    let mut seconds = 60u64;
    let mut only: Option<&str> = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--seconds" => {
                let value = rest.next().ok_or("--seconds needs a number")?;
                seconds = value
                    .parse()
                    .map_err(|_| format!("--seconds {value:?} is not a number"))?;
            }
            target if TARGETS.contains(&target) && only.is_none() => only = Some(target),
            other => {
                return Err(format!(
                    "unknown fuzz argument {other:?}; targets: {}",
                    TARGETS.join(", ")
                ));
            }
        }
    }
    if let Err(why) = ensure_tools() {
        // Not a failure of the project's code: say so loudly, as a skip.
        eprintln!("xtask: SKIP fuzzing: {why}");
        return Ok(());
    }
    let targets: Vec<&str> = only.map_or_else(|| TARGETS.to_vec(), |t| vec![t]);
    for target in targets {
        fuzz_one(root, target, seconds)?;
    }
    Ok(())
}

/// The nightly toolchain and `cargo-fuzz`, installed if missing.
fn ensure_tools() -> Result<(), String> {
    let nightly = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !nightly {
        eprintln!("xtask: rustup toolchain install nightly --profile minimal");
        let installed = Command::new("rustup")
            .args(["toolchain", "install", "nightly", "--profile", "minimal"])
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            return Err("no nightly toolchain, and it cannot be installed here".into());
        }
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let have_fuzz = Command::new(&cargo)
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_fuzz {
        eprintln!("xtask: cargo install cargo-fuzz --locked");
        let installed = Command::new(&cargo)
            .args(["install", "cargo-fuzz", "--locked"])
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            return Err("cargo-fuzz could not be installed".into());
        }
    }
    Ok(())
}

/// Runs one target for `seconds` over its corpus; fails on a crash (the input is left in
/// `fuzz/artifacts/<target>/`: add it to the corpus once fixed, so it is replayed).
fn fuzz_one(root: &Path, target: &str, seconds: u64) -> Result<(), String> {
    let corpus = root.join("fuzz").join("corpus").join(target);
    std::fs::create_dir_all(&corpus).map_err(|e| format!("{}: {e}", corpus.display()))?;
    eprintln!("xtask: fuzzing {target} for {seconds} s");
    let status = Command::new("rustup")
        .args(["run", "nightly", "cargo", "fuzz", "run", target])
        .arg(&corpus)
        .args([
            "--",
            &format!("-max_total_time={seconds}"),
            "-print_final_stats=1",
        ])
        .current_dir(root.join("fuzz"))
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN")
        .status()
        .map_err(|e| format!("cannot run cargo fuzz: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "fuzz target {target} failed ({status}): see fuzz/artifacts/{target}/"
        ))
    }
}
