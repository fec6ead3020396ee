//! Numbers an operator can trust: the final statistics come after every lifecycle step
//! (graduation included), live `stats` carry the prefetch report, every control answer is one
//! whole line, counts are named for what they count, and fault-around is a window in bytes
//! (a 2 MiB-page guest is never handed a 128 MiB copy inside one fault).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Instant;

use rustix::process::Signal;
use test_vmm::Touch;

use crate::common::{
    Daemon, HUGE, MIB, PAGE, TIMEOUT, TestDir, exit_code, model_image, start_vmm, verify_all,
};

const SEED: u64 = 0x57a7;

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn memory_file(dir: &TestDir, size: u64, page: u64) -> (std::path::PathBuf, crate::common::Model) {
    let memory = dir.join("memory");
    let model = model_image(SEED, size, page);
    std::fs::write(&memory, &model.bytes).unwrap();
    (memory, model)
}

fn read_json(file: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap()
}

#[test]
fn final_stats_are_taken_after_graduation() {
    let dir = TestDir::new("stats-graduation");
    let (memory, model) = memory_file(&dir, 8 * MIB, PAGE);
    let stats_file = dir.join("stats.json");
    let daemon = Daemon::start(
        &dir,
        &[
            "--memory-file",
            path(&memory),
            "--stats-json",
            path(&stats_file),
        ],
    );
    let vmm = start_vmm(&daemon, vec![4 * MIB, 4 * MIB], false);
    vmm.touch(Touch::read(0, 2 * PAGE, 1)).unwrap();
    vmm.touch(Touch::write(4 * PAGE, PAGE, 1, 9)).unwrap();
    daemon.signal(Signal::TERM);
    let (status, stderr) = daemon.wait(TIMEOUT);
    assert_eq!(exit_code(status, &stderr), 0, "{stderr}");
    let stats = read_json(&stats_file);
    let pages = &stats["pages"];
    assert_eq!(pages["missing"], 0, "{stats:#}");
    assert_eq!(pages["clean"], 8 * MIB / PAGE - 1, "{stats:#}");
    // Without --dirty-tracking writes are not tracked: no "dirty" count, and the page first
    // touched by a write is counted as what it is.
    assert!(pages.get("dirty").is_none(), "{stats:#}");
    assert_eq!(pages["installed_by_write"], 1, "{stats:#}");
    assert!(
        stderr.contains("pages installed by a write"),
        "the table does not name the count: {stderr}"
    );
    // vCPU stall time: the sum of the service latencies of the faults served, at least the
    // median times the count's half.
    let metrics = &stats["metrics"];
    let stall = metrics["stall_time"]["secs"].as_u64().unwrap() as f64
        + metrics["stall_time"]["nanos"].as_u64().unwrap() as f64 / 1e9;
    let samples = metrics["latency_samples"].as_u64().unwrap();
    assert!(samples >= 3 && stall > 0.0, "{stats:#}");
    assert!(stderr.contains("vCPU stall time"), "{stderr}");
    let mut model = model;
    model.touch_write(4 * PAGE, PAGE, 9);
    verify_all(&vmm, &model);
    assert!(vmm.exit().unwrap().success());
}

#[test]
fn live_stats_carry_the_prefetch_report() {
    let dir = TestDir::new("stats-prefetch");
    let (memory, _) = memory_file(&dir, 8 * MIB, PAGE);
    let daemon = Daemon::start(&dir, &["--memory-file", path(&memory), "--prefetch", "all"]);
    let vmm = start_vmm(&daemon, vec![8 * MIB], false);
    let deadline = Instant::now() + TIMEOUT;
    let stats = loop {
        let stats = daemon.control("stats");
        if stats["prefetch"]["running"] == false && stats["state"] == "serving" {
            break stats;
        }
        assert!(
            Instant::now() < deadline,
            "the prefetch never finished: {stats:#}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let report = &stats["prefetch"]["report"];
    assert!(report.is_object(), "no report in the live stats: {stats:#}");
    assert_eq!(report["installed_pages"], 8 * MIB / PAGE, "{stats:#}");
    assert!(vmm.exit().unwrap().success());
    let (status, stderr) = daemon.wait(TIMEOUT);
    assert_eq!(exit_code(status, &stderr), 0, "{stderr}");
}

#[test]
fn stop_is_answered_with_one_whole_line() {
    let dir = TestDir::new("stats-stop");
    let (memory, _) = memory_file(&dir, MIB, PAGE);
    let daemon = Daemon::start(&dir, &["--memory-file", path(&memory)]);
    let vmm = start_vmm(&daemon, vec![MIB], false);
    let mut conn = UnixStream::connect(dir.join("vmm.sock.control")).unwrap();
    conn.set_read_timeout(Some(TIMEOUT)).unwrap();
    conn.write_all(b"stop\n").unwrap();
    // One read: a client that reads once must get the whole line.
    let mut buf = [0u8; 256];
    let n = conn.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"{\"stopping\":true}\n");
    let (status, stderr) = daemon.wait(TIMEOUT);
    assert_eq!(exit_code(status, &stderr), 0, "{stderr}");
    assert!(vmm.exit().unwrap().success());
}

/// `--fault-around 64` (the older page count) on a 2 MiB-page guest is one page, not a 128 MiB
/// window copied inside the first fault; in bytes, `64K` is 16 base pages.
#[test]
fn fault_around_is_a_window_in_bytes_capped_for_huge_pages() {
    if !test_support::hugepages_or_skip(
        "fault_around_is_a_window_in_bytes_capped_for_huge_pages",
        4,
    ) {
        return;
    }
    let dir = TestDir::new("stats-fault-around");
    let (memory, _) = memory_file(&dir, 8 * MIB, HUGE);
    let daemon = Daemon::start(
        &dir,
        &[
            "--memory-file",
            path(&memory),
            "--fault-around",
            "64",
            "--dirty-tracking",
        ],
    );
    let vmm = start_vmm(&daemon, vec![8 * MIB], true);
    vmm.touch(Touch::read(0, HUGE, 1)).unwrap();
    let stats = daemon.control("stats");
    assert_eq!(stats["metrics"]["installed_source"], 1, "{stats:#}");
    assert_eq!(stats["metrics"]["fault_around_pages"], 0, "{stats:#}");
    // With --dirty-tracking the count is "dirty", and the other one is absent.
    assert_eq!(stats["pages"]["dirty"], 0, "{stats:#}");
    assert!(
        stats["pages"].get("installed_by_write").is_none(),
        "{stats:#}"
    );
    assert!(vmm.exit().unwrap().success());
    drop(daemon);

    let dir = TestDir::new("stats-fault-around-4k");
    let (memory, _) = memory_file(&dir, 4 * MIB, PAGE);
    let daemon = Daemon::start(
        &dir,
        &["--memory-file", path(&memory), "--fault-around", "64K"],
    );
    let vmm = start_vmm(&daemon, vec![4 * MIB], false);
    vmm.touch(Touch::read(0, PAGE, 1)).unwrap();
    let stats = daemon.control("stats");
    assert_eq!(stats["metrics"]["installed_source"], 16, "{stats:#}");
    assert!(vmm.exit().unwrap().success());
}
