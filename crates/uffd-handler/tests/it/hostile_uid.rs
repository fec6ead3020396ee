//! The socket race with a second uid: while the daemon (root) binds its VMM and control
//! sockets in a directory that `nobody` can write (mode 0777, not sticky), a process running
//! as `nobody` swaps every entry it sees for a symbolic link to a root-only file, plants such
//! links at the socket paths, and tries to connect to every socket it finds. Whatever the
//! interleaving, the daemon either starts with its sockets owned by root with mode 0600, or
//! refuses the path with exit 1 naming it; the root-only file keeps its owner, mode and bytes;
//! `nobody` never connects to a socket of the daemon.
//!
//! The attacker is this test binary run again as uid 65534 ([`attacker`]); where that uid
//! cannot run it (the binary under a directory it cannot enter) or the suite is not root, the
//! test skips with the reason.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rustix::process::Signal;

use crate::common::{Daemon, MIB, PAGE, TIMEOUT, TestDir, exit_code, model_image, skip};

const NOBODY: u32 = 65534;
/// How the attacker is told where to work (unset: [`attacker`] does nothing).
const ATTACK_DIR: &str = "UFFD_TEST_ATTACK_DIR";
const ATTACK_VICTIM: &str = "UFFD_TEST_ATTACK_VICTIM";
const ATTACK_STOP: &str = "UFFD_TEST_ATTACK_STOP";
/// Daemon starts raced.
const ROUNDS: usize = 12;
/// Bounds the attacker's loop should the stop file never come.
const MAX_PASSES: u64 = 2_000_000;

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_second_uid_swapping_the_socket_paths_never_reaches_a_socket_or_a_root_file() {
    const TEST: &str =
        "a_second_uid_swapping_the_socket_paths_never_reaches_a_socket_or_a_root_file";
    if !rustix::process::geteuid().is_root() {
        skip(TEST, "needs root to run a second uid");
        return;
    }
    let dir = TestDir::new("uid-race");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let open = dir.join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let victim = dir.join("root-only");
    std::fs::write(&victim, b"root's").unwrap();
    // Not 0600: a chmod of the daemon's meant for its socket would show.
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o640)).unwrap();
    let stop = dir.join("stop");
    let memory = dir.join("memory");
    std::fs::write(&memory, &model_image(7, MIB, PAGE).bytes).unwrap();

    let spawned = Command::new(std::env::current_exe().unwrap())
        .args([
            "hostile_uid::attacker",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(ATTACK_DIR, &open)
        .env(ATTACK_VICTIM, &victim)
        .env(ATTACK_STOP, &stop)
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut attacker = match spawned {
        Ok(child) => child,
        Err(e) => {
            skip(
                TEST,
                &format!("uid {NOBODY} cannot run this test binary: {e}"),
            );
            return;
        }
    };
    // The attacker's own lines (the test harness may print before them on the same line).
    let mut lines = BufReader::new(attacker.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| l.find("attack: ").map(|at| l[at..].to_string()));
    // Ordered on a fact: the attacker says it is at work before the daemons start.
    let started = lines.next();
    match started.as_deref() {
        Some("attack: started") => {}
        other => {
            let _ = attacker.kill();
            let _ = attacker.wait();
            skip(
                TEST,
                &format!("uid {NOBODY} could not start its attack: {other:?}"),
            );
            return;
        }
    }

    let (mut served, mut refused) = (0, 0);
    for _ in 0..ROUNDS {
        let daemon = Daemon::spawn(
            &dir,
            "open/vmm.sock",
            &[
                "--memory-file",
                path(&memory),
                "--control",
                path(&open.join("control.sock")),
            ],
        );
        if ready_or_exited(&daemon) {
            daemon.signal(Signal::TERM);
            let (status, stderr) = daemon.wait(TIMEOUT);
            assert_eq!(exit_code(status, &stderr), 0, "{stderr}");
            served += 1;
        } else {
            let (status, stderr) = daemon.wait(TIMEOUT);
            assert_eq!(exit_code(status, &stderr), 1, "{stderr}");
            let last = stderr.lines().last().unwrap_or_default();
            assert!(
                last.contains(path(&open))
                    && (last.contains("--socket") || last.contains("--control")),
                "the refusal names neither the flag nor the path: {last}"
            );
            refused += 1;
        }
    }
    std::fs::write(&stop, b"").unwrap();
    let report = lines
        .find(|l| l.starts_with("attack: connected="))
        .unwrap_or_else(|| panic!("the attacker did not report"));
    let _ = attacker.wait();
    eprintln!("{served} daemon(s) started, {refused} refused the path; {report}");

    let fields: Vec<u64> = report
        .split_whitespace()
        .filter_map(|f| f.split_once('=').and_then(|(_, v)| v.parse().ok()))
        .collect();
    let [connected, moved, planted] = fields[..] else {
        panic!("{report}")
    };
    assert_eq!(connected, 0, "uid {NOBODY} connected to a socket: {report}");
    assert!(
        moved + planted > 0,
        "the attacker never touched the directory: {report}"
    );
    let victim_meta = std::fs::metadata(&victim).unwrap();
    assert_eq!(
        (
            victim_meta.uid(),
            victim_meta.gid(),
            victim_meta.mode() & 0o7777
        ),
        (0, 0, 0o640),
        "the root-only file was changed"
    );
    assert_eq!(std::fs::read(&victim).unwrap(), b"root's");
    // Every socket the daemons left (moved away by the attacker, so not theirs to remove):
    // root's, mode 0600.
    for socket in sockets_under(&open) {
        let meta = std::fs::symlink_metadata(&socket).unwrap();
        assert_eq!(
            (meta.uid(), meta.mode() & 0o777),
            (0, 0o600),
            "{}",
            socket.display()
        );
    }
}

/// Whether the daemon got ready (its log says so) rather than exited.
fn ready_or_exited(daemon: &Daemon) -> bool {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        if daemon.stderr().contains("ready: waiting for a VMM") {
            return true;
        }
        if daemon.exited(Duration::from_millis(5)) {
            return daemon.stderr().contains("ready: waiting for a VMM");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "neither ready nor exited:\n{}",
            daemon.stderr()
        );
    }
}

/// Socket files under `dir`, in directories root can read (all of them).
fn sockets_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_socket() {
                found.push(entry.path());
            }
        }
    }
    found
}

/// Not a test: the attacker process of the test above, run as uid 65534 with its
/// directory, victim and stop file in the environment; without them it returns at once.
#[test]
#[ignore = "the attacker process of the uid race test, run by it as another uid"]
fn attacker() {
    let (Some(dir), Some(victim), Some(stop)) = (
        std::env::var_os(ATTACK_DIR).map(PathBuf::from),
        std::env::var_os(ATTACK_VICTIM).map(PathBuf::from),
        std::env::var_os(ATTACK_STOP).map(PathBuf::from),
    ) else {
        return;
    };
    let probe = dir.join("evil-probe");
    if let Err(e) = std::fs::write(&probe, b"") {
        println!("attack: cannot write {}: {e}", dir.display());
        return;
    }
    let _ = std::fs::remove_file(&probe);
    println!("attack: started");
    let (mut connected, mut moved, mut planted) = (0u64, 0u64, 0u64);
    let mut n = 0u64;
    let mut passes = 0u64;
    while !stop.exists() && passes < MAX_PASSES {
        passes += 1;
        // Half of the time links wait at the socket paths; the other half the paths are
        // left free, so that daemons start and their entries can be swapped as they appear.
        let plant = (passes / 64) % 2 == 0;
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("evil") {
                continue;
            }
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() && meta.uid() == NOBODY {
                // A directory of ours where the daemon's private one was: a socket bound in
                // it is swapped for a link, for a fix-up by path to follow.
                let inside = path.join("socket");
                if std::fs::symlink_metadata(&inside).is_ok_and(|m| !m.is_symlink()) {
                    if UnixStream::connect(&inside).is_ok() {
                        connected += 1;
                    }
                    n += 1;
                    if std::fs::rename(&inside, dir.join(format!("evil-{n}"))).is_ok() {
                        moved += 1;
                    }
                    if std::os::unix::fs::symlink(&victim, &inside).is_ok() {
                        planted += 1;
                    }
                }
                continue;
            }
            let is_link = meta.is_symlink();
            if is_link {
                if !plant {
                    let _ = std::fs::remove_file(&path);
                }
                continue;
            }
            for target in [path.clone(), path.join("socket")] {
                if UnixStream::connect(&target).is_ok() {
                    connected += 1;
                }
            }
            n += 1;
            if std::fs::rename(&path, dir.join(format!("evil-{n}"))).is_ok() {
                moved += 1;
                // The daemon's private directory is replaced by one of ours, open to all; any
                // other entry by a link to the root-only file.
                let replaced = if meta.is_dir() {
                    std::fs::create_dir(&path).and_then(|()| {
                        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))
                    })
                } else {
                    std::os::unix::fs::symlink(&victim, &path)
                };
                if replaced.is_ok() {
                    planted += 1;
                }
            }
        }
        if plant {
            for name in ["vmm.sock", "control.sock"] {
                if std::os::unix::fs::symlink(&victim, dir.join(name)).is_ok() {
                    planted += 1;
                }
            }
        }
    }
    println!("attack: connected={connected} moved={moved} planted={planted}");
}
