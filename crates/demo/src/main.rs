//! `cargo xtask demo`: builds a 1 GiB snapshot (generation 0 plus a diff), restores it lazily
//! through the `uffd-handler` daemon into a Firecracker-like VMM (a KVM guest where /dev/kvm
//! works), verifies every byte, gives memory back through the balloon path, writes, exports
//! the next generation, restores that and verifies again; then prints what happened.

#![forbid(unsafe_code)]

mod daemon;
mod report;
mod snapshot;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use test_vmm::{GuestModel, Touch, VmmConfig, VmmProcess};

use daemon::Daemon;
use report::Report;
use snapshot::PAGE;

/// Restore a real snapshot lazily through the handler and report what happened.
#[derive(Debug, Parser)]
struct Args {
    /// The `uffd-handler` binary.
    #[arg(long)]
    daemon: PathBuf,
    /// The `test-vmm` binary (the Firecracker-like VMM).
    #[arg(long)]
    vmm: PathBuf,
    /// Working directory (snapshots, sockets, logs); emptied first.
    #[arg(long, default_value = "target/demo")]
    work: PathBuf,
    /// Guest memory size in MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Run the VMM without KVM even where KVM works.
    #[arg(long)]
    no_kvm: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("demo: verification FAILED (see the table)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:>28} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}")
            .expect("template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

fn step(what: &str) {
    eprintln!("==> {what}");
}

/// Whether a KVM guest can run here, and why not.
fn kvm_usable(no_kvm: bool) -> Result<(), String> {
    if no_kvm {
        return Err("--no-kvm given".into());
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(drop)
        .map_err(|e| format!("/dev/kvm is not usable: {e}"))
}

fn run(args: &Args) -> Result<bool, String> {
    let size = args.size_mib << 20;
    let _ = std::fs::remove_dir_all(&args.work);
    std::fs::create_dir_all(&args.work).map_err(|e| format!("{}: {e}", args.work.display()))?;
    let work = args.work.canonicalize().map_err(|e| e.to_string())?;
    let mut report = Report::default();

    step(&format!(
        "building a {} MiB snapshot: generation 0 and a diff over it",
        args.size_mib
    ));
    let started = Instant::now();
    let snap = snapshot::build(&work, size, &bar(size, "writing generations"))?;
    report.snapshot(&snap, started.elapsed());

    let vcpus = match kvm_usable(args.no_kvm) {
        Ok(()) => 2,
        Err(why) => {
            eprintln!("    the VMM runs without KVM: {why}");
            0
        }
    };
    report.kvm = vcpus > 0;

    step("restoring generation 1 lazily through the daemon (fault-around 16, background prefetch)");
    let gen2 = work.join("gen2");
    let gen2_arg = gen2.to_string_lossy().into_owned();
    let daemon = Daemon::start(
        &args.daemon,
        &work,
        "restore1",
        &snap.dir,
        &[
            "--dirty-tracking",
            "--next-generation",
            &gen2_arg,
            "--fault-around",
            "16",
            "--prefetch",
            "all",
        ],
    )?;
    let restore_started = Instant::now();
    let regions = vec![size * 3 / 4, size / 4];
    // The VMM's log goes to a file, beside the daemons' logs, not between the progress bars.
    let mut config = VmmConfig::new(&args.vmm, &daemon.socket, regions)
        .timeout(Duration::from_secs(300))
        .log_to(work.join("vmm1.log"));
    config.kvm_vcpus = vcpus;
    let vmm = VmmProcess::spawn(config).map_err(|e| format!("starting the VMM: {e}"))?;
    let first = vmm
        .touch(Touch::read(0, PAGE, 1))
        .map_err(|e| e.to_string())?;
    report.first_fault = restore_started.elapsed();
    report.first_fault_touch = Duration::from_nanos(first.elapsed_ns);

    let mut model = GuestModel::new(snap.image, PAGE);
    let check = bar(size, "verifying every byte");
    let mut bad = if vcpus > 0 {
        verify::kvm_sums(&vmm, &model, vcpus, &check).map_err(|e| e.to_string())?
    } else {
        0
    };
    check.set_position(0);
    bad += verify::hashes(&vmm, &model, 0, size, &check).map_err(|e| e.to_string())?;
    check.finish_and_clear();
    report.restore_verified = restore_started.elapsed();
    report.bad_blocks_restore = bad;

    step("balloon: the guest gives 64 MiB back (madvise DONTNEED -> UFFD_EVENT_REMOVE)");
    let mut removed = 0;
    for i in 0..8u64 {
        let offset = (i * size / 8 + (1 << 20)) & !(PAGE - 1);
        vmm.madvise_dontneed(offset, 8 << 20)
            .map_err(|e| e.to_string())?;
        model.zero(offset, 8 << 20);
        removed += 8 << 20;
    }
    report.balloon_bytes = removed;

    step("the guest writes 32 MiB across the image");
    let seed = 7;
    let mut written = 0;
    for i in 0..16u64 {
        let offset = (i * size / 16 + (5 << 20)) & !(PAGE - 1);
        vmm.touch(Touch::write(offset, 2 << 20, 2, seed))
            .map_err(|e| e.to_string())?;
        model.touch_write(offset, 2 << 20, seed);
        written += 2 << 20;
    }
    report.written_bytes = written;
    let check = bar(size, "verifying after balloon+writes");
    report.bad_blocks_after_writes =
        verify::hashes(&vmm, &model, 0, size, &check).map_err(|e| e.to_string())?;
    check.finish_and_clear();

    step("snapshot: export the dirty and empty sets, write generation 2 (the VMM paused)");
    let started = Instant::now();
    report.snapshot_answer = Some(daemon.control("snapshot")?);
    report.snapshot_time = started.elapsed();
    report.stats_live = Some(daemon.control("stats")?);

    vmm.exit().map_err(|e| format!("VMM exit: {e}"))?;
    let stats_path = daemon.stats_json.clone();
    let status = daemon.wait(Duration::from_secs(60))?;
    report.daemon1_exit = status.code();
    report.stats_restore1 = Daemon::read_stats(&stats_path).ok();

    step("restoring generation 2 on demand only, and verifying every byte");
    let daemon = Daemon::start(&args.daemon, &work, "restore2", &gen2, &[])?;
    let restore_started = Instant::now();
    let config = VmmConfig::new(&args.vmm, &daemon.socket, vec![size * 3 / 4, size / 4])
        .timeout(Duration::from_secs(300))
        .log_to(work.join("vmm2.log"));
    let vmm = VmmProcess::spawn(config).map_err(|e| format!("starting the second VMM: {e}"))?;
    let check = bar(size, "verifying generation 2");
    report.bad_blocks_gen2 =
        verify::hashes(&vmm, &model, 0, size, &check).map_err(|e| e.to_string())?;
    check.finish_and_clear();
    report.restore2_verified = restore_started.elapsed();
    vmm.exit().map_err(|e| format!("VMM exit: {e}"))?;
    let stats_path = daemon.stats_json.clone();
    report.daemon2_exit = daemon.wait(Duration::from_secs(60))?.code();
    report.stats_restore2 = Daemon::read_stats(&stats_path).ok();

    report.print(size);
    Ok(report.all_verified())
}
