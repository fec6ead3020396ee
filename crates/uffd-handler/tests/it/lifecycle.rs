//! The daemon's lifecycle through the binary: the VMM killed mid-restore (noticed within a
//! second, exit code 4 with the reason), a normal exit (0), nobody connecting (5), bad flags
//! and files (1, naming the flag or file), SIGTERM graduating the VMM or killing it, `stop`
//! on the control socket, a bad handshake (2), and `--keep-listening` serving a good VMM after
//! a bad one.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{
    Daemon, HUGE, MIB, Model, PAGE, TIMEOUT, TestDir, exit_code, model_image, start_vmm, verify_all,
};
use rustix::process::Signal;
use test_vmm::{Split, Touch};

const SEED: u64 = 0x11fe;

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A memory file of `size` bytes in `dir`, and its model.
fn image(dir: &TestDir, size: u64) -> (std::path::PathBuf, Model) {
    let memory = dir.join("memory");
    let model = model_image(SEED, size, PAGE);
    std::fs::write(&memory, &model.bytes).expect("write the memory file");
    (memory, model)
}

#[track_caller]
fn expect_exit(daemon: Daemon, code: i32, needles: &[&str]) -> String {
    let (status, stderr) = daemon.wait(TIMEOUT);
    assert_eq!(exit_code(status, &stderr), code, "{stderr}");
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "{needle:?} missing from:\n{stderr}"
        );
    }
    stderr
}

#[test]
fn vmm_killed_mid_restore_is_noticed_within_a_second() {
    let dir = TestDir::new("killed");
    let (memory, model) = image(&dir, 16 * MIB);
    let daemon = Daemon::start(&dir, &["--memory-file", path(&memory)]);
    let vmm = start_vmm(&daemon, vec![8 * MIB, 8 * MIB], false);
    vmm.touch(Touch::read(0, MIB, 2)).unwrap();
    // Mid-restore: several threads faulting the same pages while the vmm dies.
    let touch = vmm
        .start_touch(Touch::read(0, 16 * MIB, 4).split(Split::Shared))
        .unwrap();
    vmm.kill().unwrap();
    let killed = Instant::now();
    assert!(
        daemon.exited(Duration::from_secs(1)),
        "the daemon did not notice the VMM's death within a second:\n{}",
        daemon.stderr()
    );
    let noticed = killed.elapsed();
    assert!(touch.wait().is_err(), "a killed vmm answered");
    assert_eq!(vmm.wait().unwrap().signal(), Some(libc::SIGKILL));
    let stderr = expect_exit(daemon, 4, &["was killed by signal 9 (SIGKILL)", "vmm-died"]);
    eprintln!("daemon exited {noticed:?} after the kill");
    assert!(stderr.contains("uffd-handler statistics"), "{stderr}");
    drop(model);
}

#[test]
fn nobody_connecting_exits_5() {
    let dir = TestDir::new("accept-timeout");
    let (memory, _) = image(&dir, MIB);
    // Not waiting for readiness: the daemon may be gone again by then.
    let daemon = Daemon::spawn(
        &dir,
        "vmm.sock",
        &["--memory-file", path(&memory), "--accept-timeout", "300ms"],
    );
    expect_exit(daemon, 5, &["no VMM connected", "accept-timeout"]);
}

#[test]
fn bad_flags_and_files_exit_1_naming_them() {
    let dir = TestDir::new("bad-flags");
    let (memory, _) = image(&dir, MIB);
    let odd = dir.join("odd");
    std::fs::write(&odd, vec![1u8; 5000]).unwrap();
    let empty_dir = dir.join("empty-dir");
    std::fs::create_dir(&empty_dir).unwrap();
    let memory = path(&memory);
    let missing = dir.join("missing");
    let missing = path(&missing);
    let nested = dir.join("no-such-dir/file");
    let nested = path(&nested);
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["--memory-file", missing],
            vec!["--memory-file", missing],
        ),
        (
            vec!["--memory-file", path(&odd)],
            vec!["--memory-file", "block size"],
        ),
        (
            vec!["--memory-file", memory, "--block-size", "3000"],
            vec!["--block-size"],
        ),
        (
            vec!["--snapshot-dir", path(&empty_dir)],
            vec!["--snapshot-dir"],
        ),
        (
            vec!["--memory-file", memory, "--snapshot-dir", path(&empty_dir)],
            vec!["--snapshot-dir"],
        ),
        (
            vec![
                "--memory-file",
                memory,
                "--next-generation",
                path(&empty_dir),
            ],
            vec!["--dirty-tracking"],
        ),
        (
            vec!["--memory-file", memory, "--readers", "0"],
            vec!["--readers"],
        ),
        (
            vec!["--memory-file", memory, "--fault-around", "12"],
            vec!["--fault-around"],
        ),
        (
            vec!["--memory-file", memory, "--prefetch", "working-set"],
            vec!["--working-set", "memory.working-set"],
        ),
        (
            vec!["--memory-file", memory, "--stats-json", nested],
            vec!["--stats-json", "does not exist"],
        ),
        (
            vec!["--memory-file", memory, "--control", path(&odd)],
            vec!["--control", "not a socket"],
        ),
        (
            vec!["--memory-file", memory, "--log", "a=b=c"],
            vec!["--log"],
        ),
    ];
    for (args, needles) in cases {
        let daemon = Daemon::spawn(&dir, "vmm.sock", &args);
        let (status, stderr) = daemon.wait(TIMEOUT);
        assert_eq!(exit_code(status, &stderr), 1, "{args:?}:\n{stderr}");
        for needle in needles {
            assert!(
                stderr.contains(needle),
                "{args:?}: {needle:?} missing from:\n{stderr}"
            );
        }
    }
    // A socket path in a directory that does not exist.
    let daemon = Daemon::spawn(&dir, "no-such-dir/vmm.sock", &["--memory-file", memory]);
    let (status, stderr) = daemon.wait(TIMEOUT);
    assert_eq!(exit_code(status, &stderr), 1, "{stderr}");
    assert!(stderr.contains("--socket"), "{stderr}");
}

#[test]
fn sigterm_graduates_the_vmm_which_runs_on() {
    let dir = TestDir::new("graduate");
    let (memory, mut model) = image(&dir, 8 * MIB);
    let daemon = Daemon::start(&dir, &["--memory-file", path(&memory), "--dirty-tracking"]);
    let vmm = start_vmm(&daemon, vec![4 * MIB, 4 * MIB], false);
    vmm.touch(Touch::read(0, 2 * MIB, 2)).unwrap();
    vmm.madvise_dontneed(MIB, MIB).unwrap();
    model.zero(MIB, MIB);
    daemon.signal(Signal::TERM);
    expect_exit(
        daemon,
        0,
        &["stopped by SIGTERM", "runs on without a handler"],
    );
    // No handler any more: every page is in place (holes and removed pages read zeros
    // from the kernel), and writes need nobody.
    verify_all(&vmm, &model);
    vmm.touch(Touch::write(0, 8 * MIB, 2, 3)).unwrap();
    model.touch_write(0, 8 * MIB, 3);
    verify_all(&vmm, &model);
    assert!(vmm.exit().unwrap().success());
}

/// A 2 MiB guest over a generation of 4 KiB blocks (zero blocks are holes inside huge pages):
/// the bulk prefetch cannot copy those huge pages in one piece, and graduation must still
/// install every byte, leaving only whole-page holes to the kernel.
#[test]
fn sigterm_graduates_a_2m_guest_over_a_4k_block_generation() {
    if !test_support::hugepages_or_skip(
        "sigterm_graduates_a_2m_guest_over_a_4k_block_generation",
        2,
    ) {
        return;
    }
    let dir = TestDir::new("graduate-2m");
    let model = model_image(SEED, 4 * MIB, HUGE);
    let snapshot = dir.join("gen0");
    std::fs::create_dir_all(&snapshot).unwrap();
    let build = uuid::Uuid::new_v4();
    let mut data =
        std::fs::File::create(snapshot_format::snapshot_dir::data_path(&snapshot, build)).unwrap();
    let header =
        snapshot_format::write_generation_zero(&model.bytes[..], PAGE, build, &mut data).unwrap();
    std::fs::write(
        snapshot_format::snapshot_dir::header_path(&snapshot),
        header.encode_native(),
    )
    .unwrap();
    let daemon = Daemon::start(&dir, &["--snapshot-dir", path(&snapshot)]);
    let vmm = start_vmm(&daemon, vec![2 * MIB, 2 * MIB], true);
    vmm.touch(Touch::read(0, HUGE, 1)).unwrap();
    daemon.signal(Signal::TERM);
    expect_exit(
        daemon,
        0,
        &["stopped by SIGTERM", "runs on without a handler"],
    );
    verify_all(&vmm, &model);
    assert!(vmm.exit().unwrap().success());
}

#[test]
fn sigterm_with_on_signal_kill_kills_the_vmm() {
    let dir = TestDir::new("signal-kill");
    let (memory, _) = image(&dir, 4 * MIB);
    let daemon = Daemon::start(
        &dir,
        &["--memory-file", path(&memory), "--on-signal", "kill"],
    );
    let vmm = start_vmm(&daemon, vec![4 * MIB], false);
    vmm.touch(Touch::read(0, MIB, 1)).unwrap();
    daemon.signal(Signal::INT);
    expect_exit(
        daemon,
        0,
        &["stopped by SIGINT", "was killed (--on-signal kill)"],
    );
    assert_eq!(vmm.wait().unwrap().signal(), Some(libc::SIGKILL));
}

#[test]
fn control_stop_while_waiting_and_stats() {
    let dir = TestDir::new("stop");
    let (memory, _) = image(&dir, MIB);
    let daemon = Daemon::start(&dir, &["--memory-file", path(&memory)]);
    // Both sockets reachable by their owner only.
    use std::os::unix::fs::PermissionsExt;
    for socket in [&daemon.socket, daemon.control.as_ref().unwrap()] {
        let mode = std::fs::metadata(socket).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", socket.display());
    }
    let stats = daemon.control("stats");
    assert_eq!(stats["state"], "waiting", "{stats}");
    let answer = daemon.control("bogus");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("unknown command"),
        "{answer}"
    );
    let answer = daemon.control("snapshot");
    assert!(answer["error"].is_string(), "{answer}");
    assert_eq!(daemon.control("stop")["stopping"], true);
    expect_exit(daemon, 0, &["stopped by the control socket's stop"]);
}

/// Connects to the daemon's socket and sends `json` without any fd: a bad handshake. Returns
/// once the daemon closed the connection.
fn bad_handshake(socket: &Path, json: &str) {
    let mut conn = UnixStream::connect(socket).expect("connect");
    conn.write_all(json.as_bytes()).unwrap();
    conn.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest)
        .expect("the daemon closes a bad connection");
}

/// With `--once`, a bad handshake does not end the wait: the daemon goes on waiting for a
/// VMM until `--accept-timeout`, and then exits 2 naming the failed handshake.
#[test]
fn a_bad_handshake_exits_2_at_the_accept_timeout() {
    let dir = TestDir::new("bad-handshake");
    let (memory, _) = image(&dir, MIB);
    let daemon = Daemon::start(
        &dir,
        &[
            "--memory-file",
            path(&memory),
            "--handshake-timeout",
            "2",
            "--accept-timeout",
            "1",
        ],
    );
    bad_handshake(&daemon.socket, "[{\"base_host_virt_addr\": 4096, \"size\"");
    expect_exit(
        daemon,
        2,
        &[
            "handshake failed",
            "truncated",
            "no VMM completed a handshake",
        ],
    );
}

/// A connection that sends nothing (a stray client, a liveness probe) does not consume
/// `--once`: the VMM that connects next is served.
#[test]
fn a_stray_connection_does_not_consume_once() {
    let dir = TestDir::new("stray");
    let (memory, model) = image(&dir, 2 * MIB);
    let daemon = Daemon::start(
        &dir,
        &["--memory-file", path(&memory), "--handshake-timeout", "1"],
    );
    bad_handshake(&daemon.socket, "");
    let vmm = start_vmm(&daemon, vec![2 * MIB], false);
    verify_all(&vmm, &model);
    assert!(vmm.exit().unwrap().success());
    let stderr = expect_exit(daemon, 0, &["every fault was served"]);
    assert!(stderr.contains("before anything was sent"), "{stderr}");
}

#[test]
fn keep_listening_serves_a_good_vmm_after_a_bad_one() {
    let dir = TestDir::new("keep-listening");
    let (memory, model) = image(&dir, 4 * MIB);
    let daemon = Daemon::start(
        &dir,
        &[
            "--memory-file",
            path(&memory),
            "--keep-listening",
            "--handshake-timeout",
            "2",
        ],
    );
    // Regions that do not fit the snapshot, and no fd.
    bad_handshake(
        &daemon.socket,
        r#"[{"base_host_virt_addr":1073741824,"size":8388608,"offset":0,"page_size":4096}]"#,
    );
    let vmm = start_vmm(&daemon, vec![2 * MIB, 2 * MIB], false);
    verify_all(&vmm, &model);
    assert!(vmm.exit().unwrap().success());
    // The daemon waits for the next VMM until told to stop.
    let deadline = Instant::now() + TIMEOUT;
    while daemon.control("stats")["state"] != "waiting" {
        assert!(Instant::now() < deadline, "still serving the exited VMM");
        std::thread::sleep(Duration::from_millis(5));
    }
    let stats = daemon.control("stats");
    assert_eq!(stats["vmm"]["end"], "exited with status 0", "{stats}");
    assert_eq!(daemon.control("stop")["stopping"], true);
    let stderr = expect_exit(daemon, 0, &["stopped by the control socket's stop"]);
    assert!(stderr.contains("bad handshake"), "{stderr}");
}
