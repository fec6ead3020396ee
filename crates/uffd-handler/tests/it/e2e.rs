//! End to end through the `uffd-handler` binary, with `test-vmm` as the VMM: restore from a
//! memory file, every byte verified from several threads, balloon removes read as zeros,
//! writes, two snapshots over the control socket (the second holding only later writes), a
//! second daemon restoring the written generation (replaying the recorded working set) for a
//! new vmm that verifies every byte, and a third generation over that one. 4 KiB pages, and
//! 2 MiB pages where hugepages are free; KVM vCPUs where /dev/kvm is usable; prefetch with
//! fault-around.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{
    Daemon, HUGE, MIB, Model, PAGE, TIMEOUT, TestDir, exit_code, free_hugepages, kvm_vmm,
    model_image, skip, start_vmm, verify,
};
use test_vmm::{Touch, VmmProcess};

const SEED: u64 = 0xd43;

/// Three regions of 4, 2 and 2 MiB (8 MiB).
fn sizes() -> Vec<u64> {
    vec![4 * MIB, 2 * MIB, 2 * MIB]
}

/// The pages (of `page` bytes) touched by `[offset, offset + len)`.
fn pages_of(offset: u64, len: u64, page: u64) -> impl Iterator<Item = u64> {
    offset / page..(offset + len).div_ceil(page)
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Waits for the daemon's exit and asserts the code; its stderr.
#[track_caller]
fn expect_exit(daemon: Daemon, code: i32) -> String {
    let (status, stderr) = daemon.wait(TIMEOUT);
    assert_eq!(exit_code(status, &stderr), code, "{stderr}");
    stderr
}

/// Balloon removes, writes and two snapshots on a restored vmm; returns the final model.
fn run_workload(daemon: &Daemon, vmm: &VmmProcess, model: &mut Model, page: u64) {
    let size = model.size();
    // Every page, from several threads at once.
    let report = vmm.touch(Touch::read(0, size, 4)).unwrap();
    assert_eq!(report.accesses, size / page);
    verify(daemon, vmm, model);

    // Balloon inflate: the ranges read as zeros afterwards (one across regions 1 and 2).
    let (a, b) = if page == HUGE {
        (2 * MIB..4 * MIB, 4 * MIB..8 * MIB)
    } else {
        (MIB..2 * MIB, 5 * MIB..7 * MIB)
    };
    for r in [&a, &b] {
        vmm.madvise_dontneed(r.start, r.end - r.start).unwrap();
        model.zero(r.start, r.end - r.start);
    }
    vmm.touch(Touch::read(a.start, a.end - a.start, 2)).unwrap();
    verify(daemon, vmm, model);

    // Writes: a write touch, bytes across the region 1/2 boundary, a fill into a removed
    // range.
    let mut dirty = BTreeSet::new();
    let w = 0..MIB.max(page);
    vmm.touch(Touch::write(w.start, w.end - w.start, 3, 7))
        .unwrap();
    model.touch_write(w.start, w.end - w.start, 7);
    dirty.extend(pages_of(w.start, w.end - w.start, page));
    let bytes: Vec<u8> = (0..10).map(|i| 0xa0 + i).collect();
    vmm.write(6 * MIB - 3, &bytes).unwrap();
    model.write(6 * MIB - 3, &bytes);
    dirty.extend(pages_of(6 * MIB - 3, 10, page));
    vmm.fill(a.start + 8192, 3 * PAGE, 0xab).unwrap();
    model.write(a.start + 8192, &[0xab; 3 * PAGE as usize]);
    dirty.extend(pages_of(a.start + 8192, 3 * PAGE, page));
    verify(daemon, vmm, model);

    let first = daemon.control("snapshot");
    assert_eq!(first["generation"], 1, "{first}");
    assert_eq!(first["dirty_bytes"], dirty.len() as u64 * page, "{first}");
    assert_eq!(first["diff_file_bytes"], first["dirty_bytes"], "{first}");
    let removed_left = (b.end - b.start) + (a.end - a.start)
        - dirty_in(&dirty, &a, page)
        - dirty_in(&dirty, &b, page);
    assert!(
        first["empty_bytes"].as_u64().unwrap() >= removed_left,
        "{first}"
    );

    // Only writes after the first snapshot go into the second.
    let later = if page == HUGE {
        0..HUGE
    } else {
        3 * MIB..3 * MIB + 64 * PAGE
    };
    vmm.touch(Touch::write(later.start, later.end - later.start, 2, 9))
        .unwrap();
    model.touch_write(later.start, later.end - later.start, 9);
    let second = daemon.control("snapshot");
    assert_eq!(second["generation"], 2, "{second}");
    assert_eq!(second["dirty_bytes"], later.end - later.start, "{second}");

    let stats = daemon.control("stats");
    assert_eq!(stats["state"], "serving", "{stats}");
    assert_eq!(stats["generations_written"], 2, "{stats}");
    assert_eq!(
        stats["pages"]["dirty"], 0,
        "the snapshot started a new generation: {stats}"
    );
    assert!(stats["metrics"]["faults"].as_u64().unwrap() > 0, "{stats}");
    assert!(stats["time_to_first_fault_ms"].is_number(), "{stats}");
    verify(daemon, vmm, model);
}

fn dirty_in(dirty: &BTreeSet<u64>, range: &std::ops::Range<u64>, page: u64) -> u64 {
    dirty
        .iter()
        .filter(|&&p| range.contains(&(p * page)))
        .count() as u64
        * page
}

/// Restore, workload, snapshots; restore the written generation and verify; write a third
/// generation over it and verify that too.
fn snapshot_loop(test: &str, page: u64, hugetlb: bool) {
    let dir = TestDir::new(test);
    let memory = dir.join("memory");
    let mut model = model_image(SEED, 8 * MIB, page);
    std::fs::write(&memory, &model.bytes).expect("write the memory file");
    let generation = dir.join("generation");
    let working_set = dir.join("working-set");

    let daemon = Daemon::start(
        &dir,
        &[
            "--memory-file",
            path(&memory),
            "--dirty-tracking",
            "--next-generation",
            path(&generation),
            "--record-working-set",
            path(&working_set),
            "--readers",
            "2",
        ],
    );
    let vmm = start_vmm(&daemon, sizes(), hugetlb);
    run_workload(&daemon, &vmm, &mut model, page);
    assert!(vmm.exit().unwrap().success());
    let stderr = expect_exit(daemon, 0);
    assert!(stderr.contains("every fault was served"), "{stderr}");
    assert!(stderr.contains("uffd-handler statistics"), "{stderr}");
    assert!(working_set.is_file(), "no working set written");

    // A second daemon restores generation 2 alone, replaying the working set.
    let next = dir.join("generation-3");
    let daemon = Daemon::start_at(
        &dir,
        "vmm2.sock",
        &[
            "--snapshot-dir",
            path(&generation),
            "--prefetch",
            "working-set",
            "--working-set",
            path(&working_set),
            "--dirty-tracking",
            "--next-generation",
            path(&next),
        ],
    );
    let vmm = start_vmm(&daemon, sizes(), hugetlb);
    verify(&daemon, &vmm, &model);
    // One more generation, over generation 2.
    let len = MIB.max(page);
    vmm.touch(Touch::write(8 * MIB - len, len, 2, 11)).unwrap();
    model.touch_write(8 * MIB - len, len, 11);
    let third = daemon.control("snapshot");
    assert_eq!(third["generation"], 3, "{third}");
    assert_eq!(third["dirty_bytes"], len, "{third}");
    assert!(vmm.exit().unwrap().success());
    expect_exit(daemon, 0);

    let daemon = Daemon::start_at(&dir, "vmm3.sock", &["--snapshot-dir", path(&next)]);
    let vmm = start_vmm(&daemon, sizes(), hugetlb);
    verify(&daemon, &vmm, &model);
    assert!(vmm.exit().unwrap().success());
    expect_exit(daemon, 0);
}

#[test]
fn snapshot_loop_4k() {
    snapshot_loop("loop-4k", PAGE, false);
}

#[test]
fn snapshot_loop_2m() {
    // Two vmms with 8 MiB each at most at once (one per daemon, in turn).
    let free = free_hugepages();
    if free < 4 {
        skip(
            "snapshot_loop_2m",
            &format!("needs 4 free 2 MiB hugepages, HugePages_Free is {free}"),
        );
        return;
    }
    snapshot_loop("loop-2m", HUGE, true);
}

#[test]
fn kvm_guest_restores_through_the_daemon() {
    let test = "kvm_guest_restores_through_the_daemon";
    let dir = TestDir::new("kvm");
    let memory = dir.join("memory");
    let mut model = model_image(SEED, 8 * MIB, PAGE);
    std::fs::write(&memory, &model.bytes).expect("write the memory file");
    let generation = dir.join("generation");
    let daemon = Daemon::start(
        &dir,
        &[
            "--memory-file",
            path(&memory),
            "--dirty-tracking",
            "--next-generation",
            path(&generation),
        ],
    );
    let Some(vmm) = kvm_vmm(test, &daemon, sizes(), 2) else {
        return;
    };
    let size = model.size();
    assert_eq!(
        vmm.kvm_touch(0, size, 2, None).unwrap().sums,
        model.kvm_sums(0, size)
    );
    vmm.madvise_dontneed(4 * MIB, MIB).unwrap();
    model.zero(4 * MIB, MIB);
    let report = vmm.kvm_touch(2 * MIB, 4 * MIB, 2, Some(5)).unwrap();
    model.kvm_write(2 * MIB, 4 * MIB, 5);
    assert_eq!(report.sums, model.kvm_sums(2 * MIB, 4 * MIB));
    let summary = daemon.control("snapshot");
    assert_eq!(summary["generation"], 1, "{summary}");
    assert_eq!(summary["dirty_bytes"], 4 * MIB, "{summary}");
    assert!(vmm.exit().unwrap().success());
    expect_exit(daemon, 0);

    let daemon = Daemon::start_at(&dir, "vmm2.sock", &["--snapshot-dir", path(&generation)]);
    let Some(vmm) = kvm_vmm(test, &daemon, sizes(), 2) else {
        return;
    };
    assert_eq!(
        vmm.kvm_touch(0, size, 2, None).unwrap().sums,
        model.kvm_sums(0, size)
    );
    verify(&daemon, &vmm, &model);
    assert!(vmm.exit().unwrap().success());
    expect_exit(daemon, 0);
}

#[test]
fn prefetch_all_with_fault_around_serves_every_byte() {
    let dir = TestDir::new("prefetch");
    let memory = dir.join("memory");
    let model = model_image(SEED, 8 * MIB, PAGE);
    std::fs::write(&memory, &model.bytes).expect("write the memory file");
    let stats_json = dir.join("stats.json");
    let daemon = Daemon::start(
        &dir,
        &[
            "--memory-file",
            path(&memory),
            "--prefetch",
            "all",
            "--fault-around",
            "16",
            "--readers",
            "1",
            "--stats-json",
            path(&stats_json),
        ],
    );
    let vmm = start_vmm(&daemon, sizes(), false);
    // Demand faults race the prefetch.
    verify(&daemon, &vmm, &model);
    let deadline = Instant::now() + TIMEOUT;
    let stats = loop {
        let stats = daemon.control("stats");
        if stats["prefetch"]["running"] == false {
            break stats;
        }
        assert!(Instant::now() < deadline, "prefetch still running: {stats}");
        std::thread::sleep(Duration::from_millis(10));
    };
    let metrics = &stats["metrics"];
    let installed = metrics["prefetch_installed"].as_u64().unwrap()
        + metrics["installed_source"].as_u64().unwrap()
        + metrics["installed_zero"].as_u64().unwrap();
    assert!(installed >= 8 * MIB / PAGE * 7 / 8, "{stats}");
    assert!(vmm.exit().unwrap().success());
    expect_exit(daemon, 0);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats_json).unwrap()).unwrap();
    assert_eq!(json["outcome"]["exit_code"], 0, "{json}");
    assert_eq!(json["state"], "finished", "{json}");
    assert!(
        json["prefetch"]["report"]["installed_pages"]
            .as_u64()
            .unwrap()
            > 0,
        "{json}"
    );
}

#[test]
fn blocks_larger_than_pages_round_the_diff_out() {
    // 2 MiB blocks over a 4 KiB guest: a block with one written page is stored whole, its
    // untouched pages read from the VMM's memory through the uffd (process_vm_readv faults
    // like the guest does); a partly freed block is stored whole too, a wholly freed one as
    // zeros.
    let dir = TestDir::new("big-blocks");
    let memory = dir.join("memory");
    let mut model = model_image(SEED, 8 * MIB, PAGE);
    std::fs::write(&memory, &model.bytes).expect("write the memory file");
    let generation = dir.join("generation");
    let daemon = Daemon::start(
        &dir,
        &[
            "--memory-file",
            path(&memory),
            "--block-size",
            "2M",
            "--dirty-tracking",
            "--next-generation",
            path(&generation),
        ],
    );
    let vmm = start_vmm(&daemon, sizes(), false);
    // Block 0: one page written, the rest never touched (Missing).
    vmm.touch(Touch::write(5 * PAGE, PAGE, 1, 4)).unwrap();
    model.touch_write(5 * PAGE, PAGE, 4);
    // Block 1: 64 KiB freed. Block 3: wholly freed.
    vmm.madvise_dontneed(2 * MIB + 64 * PAGE, 16 * PAGE)
        .unwrap();
    model.zero(2 * MIB + 64 * PAGE, 16 * PAGE);
    vmm.madvise_dontneed(6 * MIB, 2 * MIB).unwrap();
    model.zero(6 * MIB, 2 * MIB);
    let summary = daemon.control("snapshot");
    assert_eq!(summary["dirty_bytes"], 4 * MIB, "{summary}");
    assert_eq!(summary["empty_bytes"], 2 * MIB, "{summary}");
    verify(&daemon, &vmm, &model);
    assert!(vmm.exit().unwrap().success());
    expect_exit(daemon, 0);

    let daemon = Daemon::start_at(&dir, "vmm2.sock", &["--snapshot-dir", path(&generation)]);
    let vmm = start_vmm(&daemon, sizes(), false);
    verify(&daemon, &vmm, &model);
    assert!(vmm.exit().unwrap().success());
    expect_exit(daemon, 0);
}
