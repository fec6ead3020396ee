//! Several VMMs served at once by one daemon (`--keep-listening`): each verified byte for
//! byte while the others are served, one exiting or hitting a fatal error without touching
//! the others, `--max-vmms` refusing one beyond the limit, `stats` listing every session and
//! the scrape endpoint writing each family once with a series per VMM.
//! Ordered by facts only (control answers, VMM replies, exits), never by sleeps.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;

use crate::common::{
    Daemon, MIB, Model, PAGE, TIMEOUT, TestDir, assert_hashes, exit_code, model_image, start_vmm,
    verify_all, vmm_config,
};
use std::os::unix::net::UnixStream;

use crate::metrics::{get, parse, value};
use test_vmm::{Touch, VmmError, VmmProcess};

const SEED: u64 = 0xc0c0;

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn daemon(test: &str, extra: &[&str]) -> (TestDir, Daemon, Model) {
    let dir = TestDir::new(test);
    let memory = dir.join("memory");
    let model = model_image(SEED, 4 * MIB, PAGE);
    std::fs::write(&memory, &model.bytes).expect("write the memory file");
    let mut args = vec!["--memory-file", path(&memory), "--keep-listening"];
    args.extend_from_slice(extra);
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let daemon = Daemon::start(&dir, &args);
    (dir, daemon, model)
}

/// The pids of the sessions `stats` lists as being served.
fn serving_pids(daemon: &Daemon) -> Vec<u32> {
    let stats = daemon.control("stats");
    let Some(sessions) = stats["sessions"].as_array() else {
        return Vec::new();
    };
    sessions
        .iter()
        .map(|s| {
            assert_eq!(s["state"], "serving", "{stats}");
            u32::try_from(s["vmm"]["pid"].as_u64().expect("a pid")).unwrap()
        })
        .collect()
}

/// Waits (bounded) until `stats` lists exactly `pids` as served.
#[track_caller]
fn until_serving(daemon: &Daemon, pids: &[u32]) {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let mut serving = serving_pids(daemon);
        serving.sort_unstable();
        let mut want = pids.to_vec();
        want.sort_unstable();
        if serving == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "serving {serving:?}, expected {want:?}:\n{}",
            daemon.stderr()
        );
        daemon.exited(std::time::Duration::from_millis(5));
    }
}

/// Three VMMs served at once, each with its own engine and statistics: all three hold their
/// sessions open together (every one answered a hash while the others were connected), one
/// exits and the other two are still served and verified, then `stop` graduates the two.
#[test]
fn three_vmms_are_served_at_once_and_one_exiting_leaves_the_others() {
    let (_dir, daemon, model) = daemon("concurrent-three", &[]);
    let vmms: Vec<VmmProcess> = (0..3)
        .map(|_| start_vmm(&daemon, vec![2 * MIB, 2 * MIB], false))
        .collect();
    // Every VMM is served while the others are connected: none waits for another to exit.
    for vmm in &vmms {
        assert_hashes(&vmm.hash(0, 64 * PAGE).unwrap(), &model, 0, 64 * PAGE);
    }
    let pids: Vec<u32> = vmms.iter().map(VmmProcess::pid).collect();
    until_serving(&daemon, &pids);
    let stats = daemon.control("stats");
    let sessions = stats["sessions"].as_array().unwrap();
    let mut ids: Vec<u64> = sessions
        .iter()
        .map(|s| s["vmm"]["session"].as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2, 3], "{stats}");
    // Each session counts its own VMM's faults.
    for s in sessions {
        assert!(s["metrics"]["faults"].as_u64().unwrap() > 0, "{s}");
    }

    // The first exits; the other two are verified whole afterwards.
    let mut vmms = vmms.into_iter();
    let first = vmms.next().unwrap();
    verify_all(&first, &model);
    assert!(first.exit().unwrap().success());
    let rest: Vec<VmmProcess> = vmms.collect();
    until_serving(&daemon, &[rest[0].pid(), rest[1].pid()]);
    std::thread::scope(|scope| {
        for vmm in &rest {
            let model = &model;
            scope.spawn(move || verify_all(vmm, model));
        }
    });
    assert_eq!(daemon.control("stop")["stopping"], true);
    let (status, stderr) = daemon.wait(TIMEOUT);
    assert_eq!(exit_code(status, &stderr), 0, "{stderr}");
    assert!(
        stderr.contains("2 VMMs: stopped by the control socket's stop"),
        "{stderr}"
    );
    // Graduated: both run on without a handler, every page in place.
    for vmm in &rest {
        verify_all(vmm, &model);
        assert!(vmm.exit().unwrap().success());
    }
}

/// A VMM that faults outside its declared regions is one fatal error for its own session: it
/// is killed (`--on-fatal kill`), the other VMM is served on, byte for byte.
#[test]
fn a_fatal_error_kills_only_its_own_vmm() {
    let (_dir, daemon, model) = daemon("concurrent-fatal", &[]);
    let good = start_vmm(&daemon, vec![2 * MIB, 2 * MIB], false);
    // Declares the snapshot's 4 MiB, registers 2 MiB more.
    let mut config = vmm_config(&daemon, vec![4 * MIB, 2 * MIB], false);
    config.hide_last_region = true;
    let bad = VmmProcess::spawn(config).expect("spawn the test VMM");
    until_serving(&daemon, &[good.pid(), bad.pid()]);
    assert_hashes(&bad.hash(0, 16 * PAGE).unwrap(), &model, 0, 16 * PAGE);
    let touched = bad.touch(Touch::read(4 * MIB, PAGE, 1));
    assert!(
        matches!(touched, Err(VmmError::Exited { .. })),
        "{touched:?}"
    );
    assert_eq!(bad.wait().unwrap().signal(), Some(libc::SIGKILL));
    until_serving(&daemon, &[good.pid()]);
    verify_all(&good, &model);
    assert!(good.exit().unwrap().success());
    until_serving(&daemon, &[]);
    assert_eq!(daemon.control("stats")["state"], "waiting");
    assert_eq!(daemon.control("stop")["stopping"], true);
    let (status, stderr) = daemon.wait(TIMEOUT);
    assert_eq!(exit_code(status, &stderr), 0, "{stderr}");
    assert!(stderr.contains("was killed (--on-fatal kill)"), "{stderr}");
}

/// `--max-vmms 2`: a third VMM is refused after its handshake (and killed, `--on-fatal
/// kill`), with the limit named in the log; the two served are unaffected, and once one has
/// exited a new VMM is served again.
#[test]
fn a_vmm_beyond_max_vmms_is_refused_and_the_others_served_on() {
    let (_dir, daemon, model) = daemon("concurrent-limit", &["--max-vmms", "2"]);
    let first = start_vmm(&daemon, vec![2 * MIB, 2 * MIB], false);
    let second = start_vmm(&daemon, vec![2 * MIB, 2 * MIB], false);
    until_serving(&daemon, &[first.pid(), second.pid()]);
    // Killed once its handshake is in: maybe before it could report that it sent it.
    match VmmProcess::spawn(vmm_config(&daemon, vec![2 * MIB, 2 * MIB], false)) {
        Ok(third) => assert_eq!(third.wait().unwrap().signal(), Some(libc::SIGKILL)),
        Err(e) => assert!(matches!(e, VmmError::Exited { .. }), "{e:?}"),
    }
    let refused = "VMM refused: 2 VMMs are being served (--max-vmms 2); it was killed";
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !daemon.stderr().contains(refused) {
        assert!(
            std::time::Instant::now() < deadline,
            "no refusal logged:\n{}",
            daemon.stderr()
        );
        daemon.exited(std::time::Duration::from_millis(5));
    }
    until_serving(&daemon, &[first.pid(), second.pid()]);
    verify_all(&first, &model);
    assert!(first.exit().unwrap().success());
    verify_all(&second, &model);
    until_serving(&daemon, &[second.pid()]);
    // A slot is free again.
    let fourth = start_vmm(&daemon, vec![2 * MIB, 2 * MIB], false);
    verify_all(&fourth, &model);
    assert!(fourth.exit().unwrap().success());
    assert!(second.exit().unwrap().success());
    until_serving(&daemon, &[]);
    assert_eq!(daemon.control("stop")["stopping"], true);
    let (status, stderr) = daemon.wait(TIMEOUT);
    assert_eq!(exit_code(status, &stderr), 0, "{stderr}");
}

/// `--next-generation` and `--record-working-set` write one set of files: with them more than
/// one VMM at once is refused as a usage error, naming the flag; so is `--max-vmms` without
/// `--keep-listening`.
#[test]
fn files_written_per_vmm_allow_one_vmm_at_a_time() {
    let dir = TestDir::new("concurrent-files");
    let memory = dir.join("memory");
    std::fs::write(&memory, &model_image(SEED, MIB, PAGE).bytes).unwrap();
    let daemon = Daemon::spawn(
        &dir,
        "vmm.sock",
        &[
            "--memory-file",
            path(&memory),
            "--keep-listening",
            "--max-vmms",
            "2",
            "--record-working-set",
            path(&dir.join("ws")),
        ],
    );
    let (status, stderr) = daemon.wait(TIMEOUT);
    assert_eq!(exit_code(status, &stderr), 1, "{stderr}");
    assert!(
        stderr.contains("--max-vmms") && stderr.contains("--record-working-set"),
        "{stderr}"
    );
    // Without --keep-listening there is one VMM at a time: the flag is a usage error.
    let once = Daemon::spawn(
        &dir,
        "once.sock",
        &["--memory-file", path(&memory), "--max-vmms", "2"],
    );
    let (status, stderr) = once.wait(TIMEOUT);
    assert_eq!(exit_code(status, &stderr), 1, "{stderr}");
    assert!(stderr.contains("--keep-listening"), "{stderr}");
}

/// Two VMMs served at once: every family once (a family written twice is refused by
/// Prometheus), with a series per VMM, each equal to its own session's `stats`.
#[test]
fn two_vmms_at_once_share_each_family_with_a_series_each() {
    let dir = TestDir::new("metrics-two");
    let memory = dir.join("memory");
    std::fs::write(&memory, model_image(SEED, MIB, PAGE).bytes).unwrap();
    let endpoint = dir.join("metrics.sock");
    let daemon = Daemon::start(
        &dir,
        &[
            "--memory-file",
            path(&memory),
            "--metrics",
            path(&endpoint),
            "--keep-listening",
        ],
    );
    let first = start_vmm(&daemon, vec![MIB], false);
    first.touch(Touch::read(0, 12 * PAGE, 1)).unwrap();
    let second = start_vmm(&daemon, vec![MIB], false);
    second.touch(Touch::read(0, 40 * PAGE, 1)).unwrap();
    // Both touches were answered: the sessions are quiescent, scrape and stats agree.
    let stats = daemon.control("stats");
    let sessions = stats["sessions"].as_array().expect("two sessions");
    assert_eq!(sessions.len(), 2, "{stats:#}");
    let conn = UnixStream::connect(&endpoint).unwrap();
    conn.set_read_timeout(Some(TIMEOUT)).unwrap();
    let (head, body) = get(conn, "/metrics", None);
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    let mut types: Vec<&str> = body.lines().filter(|l| l.starts_with("# TYPE ")).collect();
    let all = types.len();
    types.sort_unstable();
    types.dedup();
    assert_eq!(types.len(), all, "a family written twice:\n{body}");
    let scrape = parse(&body);
    assert!(value(&scrape, "uffd_daemon_uptime_seconds", &[]) > 0.0);
    for session in sessions {
        let vmm = session["vmm"]["session"].as_u64().unwrap().to_string();
        let vmm = vmm.as_str();
        assert_eq!(value(&scrape, "uffd_vmm_serving", &[("vmm", vmm)]), 1.0);
        assert_eq!(
            value(&scrape, "uffd_pages", &[("vmm", vmm), ("state", "clean")]),
            session["pages"]["clean"].as_u64().unwrap() as f64,
            "{body}"
        );
    }
    // The two VMMs touched different amounts: their series differ.
    assert_ne!(
        value(&scrape, "uffd_pages", &[("vmm", "1"), ("state", "clean")]),
        value(&scrape, "uffd_pages", &[("vmm", "2"), ("state", "clean")]),
    );
    assert!(first.exit().unwrap().success());
    assert!(second.exit().unwrap().success());
    daemon.control("stop");
    let (status, stderr) = daemon.wait(TIMEOUT);
    assert_eq!(exit_code(status, &stderr), 0, "{stderr}");
}
