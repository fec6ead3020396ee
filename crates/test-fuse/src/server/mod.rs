//! The server process (`test-fuse-server`): mounts the file system, answers the kernel's
//! requests on a thread of its own, and runs the client's commands from stdin, one answer
//! line each on stdout. It unmounts and exits on `quit` or when stdin closes (the test
//! process went away).
//!
//! It is a process of its own because a thread that faults on a mapping of a FUSE file can
//! hold its process's `mmap_lock` while it waits for the read, and a server in that process
//! that then maps or protects memory (a `malloc` growing its arena) waits for that lock: the
//! two wait on each other. The engine tests fault on such a mapping inside the test process.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use fuser::{BackgroundSession, MountOption, SessionACL};
use rustix::mount::{MountFlags, UnmountFlags};

use crate::protocol::{counts_words, parse_fault, ranges_words};

mod fs;
mod rules;

use rules::{Injection, Rules, lock};

/// Where the kernel lists FUSE connections (the `fusectl` file system), to abort one.
const FUSECTL: &str = "/sys/fs/fuse/connections";

/// The body of `test-fuse-server BACKING MOUNTPOINT MAX_READAHEAD`: prints `ready` once
/// mounted (or `error: ...` and exits 1), then serves commands until `quit` or end of input.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [backing, mountpoint, readahead] = &args[..] else {
        println!("error: usage: test-fuse-server BACKING MOUNTPOINT MAX_READAHEAD");
        return ExitCode::FAILURE;
    };
    let Ok(readahead) = readahead.parse() else {
        println!("error: MAX_READAHEAD {readahead:?} is not a number");
        return ExitCode::FAILURE;
    };
    let rules = Arc::new(Rules::default());
    let server = fs::PassThrough::new(PathBuf::from(backing), rules.clone(), readahead);
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::FSName("uffd-test-fuse".into()),
        MountOption::RO,
    ];
    config.acl = SessionACL::Owner;
    let session = match fuser::spawn_mount(server, mountpoint, &config) {
        Ok(session) => session,
        Err(e) => {
            println!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("ready");
    let _ = std::io::stdout().flush();
    serve_commands(&rules);
    rules.release_all();
    unmount(Path::new(mountpoint), session);
    ExitCode::SUCCESS
}

/// Runs commands from stdin until `quit` or its end.
fn serve_commands(rules: &Rules) {
    let mut injections: Vec<Injection> = Vec::new();
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"quit") {
            break;
        }
        let answer = command(rules, &mut injections, &words)
            .unwrap_or_else(|| format!("error: bad command {line:?}"));
        if writeln!(out, "{answer}")
            .and_then(|()| out.flush())
            .is_err()
        {
            break;
        }
    }
}

/// One command's answer; `None` for a command that does not parse.
fn command(rules: &Rules, injections: &mut Vec<Injection>, words: &[&str]) -> Option<String> {
    let number = |i: usize| words.get(i).and_then(|w| w.parse::<u64>().ok());
    let rule = |i: usize| {
        number(i)
            .and_then(|id| usize::try_from(id).ok())
            .and_then(|id| injections.get(id))
    };
    Some(match *words.first()? {
        "inject" => {
            let fault = parse_fault(words.get(4)?, number(5)?)?;
            let injection = rules.add(words.get(1)?, number(2)?..number(3)?, fault);
            injections.push(injection);
            format!("ok {}", injections.len() - 1)
        }
        "totals" => counts_words(*lock(&rules.totals)),
        "counts" => counts_words(rule(1)?.counts()),
        "matched" => ranges_words(&rule(1)?.matched()),
        "held" => rule(1)?.held().to_string(),
        "active" => u8::from(rule(1)?.is_active()).to_string(),
        "wait-held" => {
            let n = usize::try_from(number(2)?).ok()?;
            let timeout = Duration::from_millis(number(3)?);
            u8::from(rule(1)?.wait_held(n, timeout)).to_string()
        }
        "release" => {
            rule(1)?.release();
            "ok".into()
        }
        _ => return None,
    })
}

/// Unmounts and ends the session. Busy (a process still has a file open or mapped, e.g. a test
/// that panicked): detaches the mount and aborts the connection, so every later read fails
/// and nothing waits for a process that may never close the file.
fn unmount(mountpoint: &Path, session: BackgroundSession) {
    // The connection's number is the mount's device number (FUSE mounts are major 0).
    let connection = rustix::fs::stat(mountpoint).ok().map(|st| st.st_dev);
    let unmounted = rustix::mount::unmount(mountpoint, UnmountFlags::empty()).is_ok();
    let ended = unmounted || {
        let _ = rustix::mount::unmount(mountpoint, UnmountFlags::DETACH);
        connection.is_some_and(abort)
    };
    if ended {
        let _ = session.join();
    }
    // Otherwise the process exits, which closes /dev/fuse and ends the connection.
}

/// Aborts FUSE connection `dev` through fusectl (mounted if it is not yet); whether it was.
fn abort(dev: u64) -> bool {
    let file = Path::new(FUSECTL).join(dev.to_string()).join("abort");
    if !file.exists() {
        let _ = rustix::mount::mount(
            "fusectl",
            FUSECTL,
            "fusectl",
            MountFlags::empty(),
            None::<&std::ffi::CStr>,
        );
    }
    std::fs::write(&file, "1").is_ok()
}
