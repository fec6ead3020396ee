//! Snapshot files that change underneath the daemon: a memory file truncated, or rewritten in
//! place as `cp` over it does, or a data file truncated, while the VMM runs. A changed file is
//! a source error (retried, then fatal: the VMM is killed, exit 3), never a SIGBUS in the
//! daemon and never a zero or stale page in the VMM.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

use rustix::process::Signal;
use test_vmm::{Touch, VmmError};

use crate::common::{
    Daemon, HUGE, MIB, Model, PAGE, TIMEOUT, TestDir, assert_hashes, exit_code, model_image,
    start_vmm,
};

const SEED: u64 = 0x7e11;

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn truncate(file: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(file)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// Waits for the daemon, which must exit 3 (not die of a signal: `exit_code` panics naming
/// it) with every needle in its stderr.
#[track_caller]
fn expect_fatal(daemon: Daemon, needles: &[&str]) {
    let (status, stderr) = daemon.wait(TIMEOUT);
    assert_eq!(exit_code(status, &stderr), 3, "{stderr}");
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "{needle:?} missing from:\n{stderr}"
        );
    }
}

fn memory_file_truncated(test: &str, extra: &[&str]) {
    let dir = TestDir::new(test);
    let memory = dir.join("memory");
    let model = model_image(SEED, 4 * MIB, PAGE);
    std::fs::write(&memory, &model.bytes).unwrap();
    let mut args = vec!["--memory-file", path(&memory)];
    args.extend_from_slice(extra);
    let daemon = Daemon::start(&dir, &args);
    let vmm = start_vmm(&daemon, vec![2 * MIB, 2 * MIB], false);
    assert_hashes(&vmm.hash(0, 16 * PAGE).unwrap(), &model, 0, 16 * PAGE);
    truncate(&memory, MIB);
    let touched = vmm.touch(Touch::read(3 * MIB, MIB, 1));
    assert!(
        matches!(touched, Err(VmmError::Exited { .. })),
        "a page whose bytes are gone was served: {touched:?}"
    );
    assert_eq!(vmm.wait().unwrap().signal(), Some(libc::SIGKILL));
    expect_fatal(
        daemon,
        &[
            "changed since it was opened",
            "was killed (--on-fatal kill)",
        ],
    );
}

#[test]
fn a_memory_file_truncated_underneath_gets_the_vmm_killed_never_sigbus() {
    memory_file_truncated("truncated", &[]);
}

#[test]
fn a_memory_file_truncated_underneath_with_fault_around() {
    memory_file_truncated("truncated-fa", &["--fault-around", "16"]);
}

/// `cp` over the memory file while the VMM runs: truncated and written again to the same
/// length (here with other bytes). The change is seen before any byte of the new file is
/// served: the VMM is killed, never handed bytes of the wrong file (56 MiB of zeros, once).
#[test]
fn a_memory_file_copied_over_underneath_is_never_served() {
    let dir = TestDir::new("copied-over");
    let memory = dir.join("memory");
    let model = model_image(SEED, 4 * MIB, PAGE);
    std::fs::write(&memory, &model.bytes).unwrap();
    let daemon = Daemon::start(&dir, &["--memory-file", path(&memory)]);
    let vmm = start_vmm(&daemon, vec![4 * MIB], false);
    assert_hashes(&vmm.hash(0, 16 * PAGE).unwrap(), &model, 0, 16 * PAGE);
    // What cp does: open with O_TRUNC, write the new bytes; the timestamp set past the file
    // system's clock granularity so that the rewrite is told apart from the original.
    let other = model_image(SEED + 1, 4 * MIB, PAGE);
    std::fs::write(&memory, &other.bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&memory)
        .unwrap()
        .set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(2))
        .unwrap();
    let touched = vmm.touch(Touch::read(2 * MIB, PAGE, 1));
    assert!(
        matches!(touched, Err(VmmError::Exited { .. })),
        "a page of the changed file was served: {touched:?}"
    );
    expect_fatal(daemon, &["changed since it was opened", "was killed"]);
}

/// Graduation assembles a 2 MiB page over 4 KiB blocks in a buffer (a `pread` of each block):
/// the data file truncated underneath fails graduation, and the VMM is killed.
#[test]
fn graduation_over_a_truncated_data_file_kills_the_vmm_never_sigbus() {
    if !test_support::hugepages_or_skip(
        "graduation_over_a_truncated_data_file_kills_the_vmm_never_sigbus",
        2,
    ) {
        return;
    }
    let dir = TestDir::new("truncated-graduation");
    let model = model_image(SEED, 4 * MIB, HUGE);
    let (snapshot, data) = generation_zero(&dir, &model);
    let daemon = Daemon::start(&dir, &["--snapshot-dir", path(&snapshot)]);
    let vmm = start_vmm(&daemon, vec![2 * MIB, 2 * MIB], true);
    assert_hashes(&vmm.hash(0, HUGE).unwrap(), &model, 0, HUGE);
    truncate(&data, 0);
    daemon.signal(Signal::TERM);
    assert_eq!(vmm.wait().unwrap().signal(), Some(libc::SIGKILL));
    expect_fatal(
        daemon,
        &["graduation cannot install the page", "was killed"],
    );
}

/// A generation 0 of 4 KiB blocks of `model` in `dir/gen0`: the directory and its data file.
fn generation_zero(dir: &TestDir, model: &Model) -> (PathBuf, PathBuf) {
    let snapshot = dir.join("gen0");
    std::fs::create_dir_all(&snapshot).unwrap();
    let build = uuid::Uuid::new_v4();
    let data = snapshot_format::snapshot_dir::data_path(&snapshot, build);
    let mut file = std::fs::File::create(&data).unwrap();
    let header =
        snapshot_format::write_generation_zero(&model.bytes[..], PAGE, build, &mut file).unwrap();
    std::fs::write(
        snapshot_format::snapshot_dir::header_path(&snapshot),
        header.encode_native(),
    )
    .unwrap();
    (snapshot, data)
}

/// A tmpfs of `size` mounted at `dir` for the life of the guard (needs root and `mount`).
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> Result<SmallDisk, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(SmallDisk(dir.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// `snapshot` onto a full disk: answered with an error naming it, nothing half-written left
/// behind to keep the disk full, and the VMM served on with every byte right.
#[test]
fn a_full_disk_leaves_no_partial_file_and_loses_nothing() {
    let dir = TestDir::new("full-disk");
    let next = dir.join("next");
    let disk = match SmallDisk::mount(&next, "512k") {
        Ok(disk) => disk,
        Err(reason) => {
            test_support::skip(
                "a_full_disk_leaves_no_partial_file_and_loses_nothing",
                &reason,
            );
            return;
        }
    };
    let memory = dir.join("memory");
    let mut model = model_image(SEED, 4 * MIB, PAGE);
    std::fs::write(&memory, &model.bytes).unwrap();
    let daemon = Daemon::start(
        &dir,
        &[
            "--memory-file",
            path(&memory),
            "--dirty-tracking",
            "--next-generation",
            path(&next),
        ],
    );
    let vmm = start_vmm(&daemon, vec![4 * MIB], false);
    vmm.touch(Touch::write(0, 2 * MIB, 2, 7)).unwrap();
    model.touch_write(0, 2 * MIB, 7);
    let answer = daemon.control("snapshot");
    let error = answer["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("No space left"), "{answer}");
    let left: Vec<String> = std::fs::read_dir(&next)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "left behind on the full disk: {left:?}");
    assert_eq!(daemon.control("stats")["state"], "serving");
    crate::common::verify_all(&vmm, &model);
    assert!(vmm.exit().unwrap().success());
    let (status, stderr) = daemon.wait(TIMEOUT);
    assert_eq!(exit_code(status, &stderr), 0, "{stderr}");
    drop(disk);
}
