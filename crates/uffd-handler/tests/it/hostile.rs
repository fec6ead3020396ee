//! The daemon facing odd VMMs: a handshake whose userfaultfd never had `UFFDIO_API` (or is
//! blocking), sent by a client of the test's own over the real socket.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::common::{Daemon, MIB, PAGE, TIMEOUT, TestDir, exit_code, model_image};

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Sends `json` with `fd` attached (SCM_RIGHTS), as a VMM's handshake.
fn send_handshake(socket: &Path, json: &str, fd: BorrowedFd<'_>) -> UnixStream {
    let stream = UnixStream::connect(socket).expect("connect to the daemon");
    test_support::send_with_fds(&stream, json.as_bytes(), &[fd]).expect("sendmsg");
    stream
}

/// One region of `size` bytes at a made-up address (nothing is registered there).
fn regions_json(size: u64) -> String {
    format!(
        r#"[{{"base_host_virt_addr":{},"size":{size},"offset":0,"page_size":{PAGE}}}]"#,
        0x7f00_0000_0000u64
    )
}

fn uffd_without_api() -> Option<OwnedFd> {
    let flags = rustix::mm::UserfaultfdFlags::CLOEXEC | rustix::mm::UserfaultfdFlags::NONBLOCK;
    // SAFETY: creates a new fd and nothing else; it is only handed to the daemon.
    match unsafe { rustix::mm::userfaultfd(flags) } {
        Ok(fd) => Some(fd),
        Err(e) => {
            test_support::skip(
                "a_uffd_that_never_had_uffdio_api_is_a_handshake_error",
                &format!("the userfaultfd syscall is not allowed here: {e}"),
            );
            None
        }
    }
}

/// A uffd whose creator never called `UFFDIO_API` cannot have any range registered: the
/// daemon refuses it as a handshake error (exit 2), it does not start serving and then fail.
#[test]
fn a_uffd_that_never_had_uffdio_api_is_a_handshake_error() {
    let Some(uffd) = uffd_without_api() else {
        return;
    };
    let dir = TestDir::new("no-api");
    let memory = dir.join("memory");
    std::fs::write(&memory, &model_image(1, MIB, PAGE).bytes).unwrap();
    let daemon = Daemon::start(&dir, &["--memory-file", path(&memory)]);
    let _conn = send_handshake(&dir.join("vmm.sock"), &regions_json(MIB), uffd.as_fd());
    let (status, stderr) = daemon.wait(TIMEOUT);
    assert_eq!(exit_code(status, &stderr), 2, "{stderr}");
    assert!(stderr.contains("never called UFFDIO_API"), "{stderr}");
}

/// A VMM that hands over a blocking userfaultfd: the daemon makes it non-blocking (and says
/// so), and its two readers serve faults from several threads without one parking in
/// `read(2)` for good.
#[test]
fn a_blocking_uffd_is_made_non_blocking_and_served() {
    let dir = TestDir::new("blocking-uffd");
    let memory = dir.join("memory");
    let model = model_image(2, 4 * MIB, PAGE);
    std::fs::write(&memory, &model.bytes).unwrap();
    let daemon = Daemon::start(&dir, &["--memory-file", path(&memory)]);
    let mut config = crate::common::vmm_config(&daemon, vec![4 * MIB], false);
    config.blocking_uffd = true;
    let vmm = test_vmm::VmmProcess::spawn(config).expect("spawn the test VMM");
    crate::common::verify_all(&vmm, &model);
    assert!(vmm.exit().unwrap().success());
    let (status, stderr) = daemon.wait(TIMEOUT);
    assert_eq!(exit_code(status, &stderr), 0, "{stderr}");
    assert!(stderr.contains("userfaultfd was blocking"), "{stderr}");
}

/// No signal kills the daemon and leaves its VMM hanging: SIGHUP is ignored, SIGUSR1 and
/// SIGUSR2 print the live statistics (table, JSON line), SIGQUIT stops it like SIGTERM.
#[test]
fn signals_never_kill_the_daemon() {
    use rustix::process::Signal;
    use test_vmm::Touch;

    let dir = TestDir::new("signals");
    let memory = dir.join("memory");
    let model = model_image(3, 2 * MIB, PAGE);
    std::fs::write(&memory, &model.bytes).unwrap();
    let daemon = Daemon::start(&dir, &["--memory-file", path(&memory)]);
    let vmm = crate::common::start_vmm(&daemon, vec![2 * MIB], false);
    vmm.touch(Touch::read(0, MIB, 1)).unwrap();
    for signal in [Signal::HUP, Signal::USR1, Signal::USR2] {
        daemon.signal(signal);
    }
    // Served on after them: the rest of the guest reads right.
    crate::common::verify_all(&vmm, &model);
    let stats = daemon.control("stats");
    assert_eq!(stats["state"], "serving", "{stats:#}");
    daemon.signal(Signal::QUIT);
    let (status, stderr) = daemon.wait(TIMEOUT);
    assert_eq!(exit_code(status, &stderr), 0, "{stderr}");
    for needle in [
        "ignored: the daemon logs to stderr",
        "\"state\":\"serving\"",
        "stopped by SIGQUIT",
    ] {
        assert!(
            stderr.contains(needle),
            "{needle:?} missing from:\n{stderr}"
        );
    }
    // One table for SIGUSR1, one at exit.
    assert_eq!(
        stderr.matches("pages missing/clean/zero").count(),
        2,
        "{stderr}"
    );
    assert!(vmm.exit().unwrap().success());
}

/// A second daemon given the first one's VMM socket (or control socket) refuses to start
/// (exit 1, the path named) instead of unlinking a live socket; the first serves on, and its
/// sockets are still there when the second has gone.
#[test]
fn a_live_socket_is_never_taken_over() {
    let dir = TestDir::new("two-daemons");
    let memory = dir.join("memory");
    let model = model_image(4, MIB, PAGE);
    std::fs::write(&memory, &model.bytes).unwrap();
    let first = Daemon::start(&dir, &["--memory-file", path(&memory)]);
    let control = dir.join("vmm.sock.control");

    // The same VMM socket.
    let second = Daemon::spawn(
        &dir,
        "vmm.sock",
        &[
            "--memory-file",
            path(&memory),
            "--control",
            path(&dir.join("other.control")),
        ],
    );
    let (status, stderr) = second.wait(TIMEOUT);
    assert_eq!(exit_code(status, &stderr), 1, "{stderr}");
    assert!(stderr.contains("in use"), "{stderr}");
    // The same control socket.
    let third = Daemon::spawn(
        &dir,
        "other.sock",
        &["--memory-file", path(&memory), "--control", path(&control)],
    );
    let (status, stderr) = third.wait(TIMEOUT);
    assert_eq!(exit_code(status, &stderr), 1, "{stderr}");
    assert!(stderr.contains("in use"), "{stderr}");

    assert!(dir.join("vmm.sock").exists() && control.exists());
    assert_eq!(first.control("stats")["state"], "waiting");
    let vmm = crate::common::start_vmm(&first, vec![MIB], false);
    crate::common::verify_all(&vmm, &model);
    assert!(vmm.exit().unwrap().success());
    let (status, stderr) = first.wait(TIMEOUT);
    assert_eq!(exit_code(status, &stderr), 0, "{stderr}");
}

/// A VMM that registers memory it did not describe: a fault there is one fatal error, logged
/// once (not woken and re-delivered forever), and the VMM is killed (`--on-fatal kill`).
#[test]
fn a_fault_outside_the_declared_regions_is_one_fatal_error() {
    let dir = TestDir::new("undeclared");
    let memory = dir.join("memory");
    let model = model_image(5, MIB, PAGE);
    std::fs::write(&memory, &model.bytes).unwrap();
    let daemon = Daemon::start(&dir, &["--memory-file", path(&memory)]);
    let mut config = crate::common::vmm_config(&daemon, vec![MIB, MIB], false);
    config.hide_last_region = true;
    let vmm = test_vmm::VmmProcess::spawn(config).expect("spawn the test VMM");
    // The declared region is served; a touch of the undeclared one never completes.
    crate::common::assert_hashes(&vmm.hash(0, 16 * PAGE).unwrap(), &model, 0, 16 * PAGE);
    let touched = vmm.touch(test_vmm::Touch::read(MIB, PAGE, 1));
    assert!(
        matches!(touched, Err(test_vmm::VmmError::Exited { .. })),
        "{touched:?}"
    );
    let (status, stderr) = daemon.wait(TIMEOUT);
    assert_eq!(exit_code(status, &stderr), 3, "{stderr}");
    assert!(stderr.contains("was killed (--on-fatal kill)"), "{stderr}");
    // Once by the engine as it stops, once by the daemon as it acts: no flood.
    let lines = stderr
        .lines()
        .filter(|l| l.contains("outside every region") && l.contains("ERROR"))
        .count();
    assert_eq!(lines, 2, "logged {lines} times:\n{stderr}");
}

/// The control socket under many idle connections: at most 16 are served at once (the rest
/// are told so and closed), idle ones are closed after `--control-idle-timeout`, and then the
/// socket answers again.
#[test]
fn control_connections_are_bounded_and_idle_ones_closed() {
    use std::io::Read;

    let dir = TestDir::new("control-flood");
    let memory = dir.join("memory");
    std::fs::write(&memory, &model_image(6, MIB, PAGE).bytes).unwrap();
    let daemon = Daemon::start(
        &dir,
        &[
            "--memory-file",
            path(&memory),
            "--control-idle-timeout",
            "5s",
        ],
    );
    let control = dir.join("vmm.sock.control");
    // Sixteen connections held, then a seventeenth: refused while the sixteen are all held.
    // On a loaded machine the daemon may take the seventeenth before the sixteen, or an idle
    // one may time out first and free its slot: then nothing was shown, and the round is
    // played again with fresh connections. The refusal is one line, then the close; what
    // arrived before the read timed out counts.
    let deadline = std::time::Instant::now() + TIMEOUT;
    let (mut idle, mut refused) = loop {
        let idle: Vec<UnixStream> = (0..16)
            .map(|_| UnixStream::connect(&control).unwrap())
            .collect();
        let mut extra = UnixStream::connect(&control).unwrap();
        extra
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut bytes = Vec::new();
        let _ = extra.read_to_end(&mut bytes);
        let line = String::from_utf8_lossy(&bytes).into_owned();
        if line.contains("too many control connections") {
            break (idle, line);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a 17th connection was served in every round"
        );
    };
    refused.retain(|c| c != '\n');
    assert!(refused.starts_with("{\"error\""), "{refused}");
    // The idle ones are closed by the daemon (end of file), then the socket answers again.
    for conn in &mut idle {
        conn.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest)
            .expect("the daemon closes an idle connection");
    }
    assert_eq!(daemon.control("stats")["state"], "waiting");
}
