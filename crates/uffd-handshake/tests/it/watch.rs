//! Watching the VMM: the socket's POLLHUP and the pidfd's exit, reported separately, and a
//! kill through the pidfd.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::client::{Generation, PAGE, TempDir, firecracker_uffd, payload, regions, send};
use uffd_handshake::{
    HandshakeListener, PeerPolicy, PeerStatus, PeerWatch, open_pidfd, receive_handshake,
};

const TIMEOUT: Duration = Duration::from_secs(5);

#[test]
fn the_handshake_watches_its_peer_and_sees_the_socket_close() {
    let dir = TempDir::new("watch");
    let listener = HandshakeListener::bind(dir.join("vm.sock"), None).unwrap();
    let stream = UnixStream::connect(listener.path()).unwrap();
    let json = payload(&regions(&[PAGE]), PAGE, Generation::V1_12);
    send(&stream, json.as_bytes(), &[firecracker_uffd().as_fd()]).unwrap();
    let conn = listener.accept(TIMEOUT).unwrap();
    let handshake = receive_handshake(conn, TIMEOUT, PAGE, &PeerPolicy::any()).unwrap();
    let watch = &handshake.watch;
    // The peer is this process (the client is a thread), so it is alive and the pidfd says so.
    assert_eq!(watch.pid(), handshake.peer.pid);
    assert_eq!(u32::try_from(watch.pid()).ok(), Some(std::process::id()));
    assert!(watch.pidfd().is_some() && !watch.already_exited());
    assert_eq!(
        watch.status(Duration::from_millis(20)).unwrap(),
        PeerStatus::default()
    );
    assert!(!watch.poll_exited(Duration::from_millis(20)));

    // A v1.12+ VMM keeps the socket open; closing it is the socket signal alone.
    drop(stream);
    let started = Instant::now();
    let status = watch.status(TIMEOUT).unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(
        status,
        PeerStatus {
            exited: false,
            socket_closed: true
        }
    );
}

#[test]
fn a_child_exit_is_seen_through_its_pidfd_within_a_second() {
    let mut child = Command::new("sleep").arg("0.2").spawn().unwrap();
    let pid = i32::try_from(child.id()).unwrap();
    let pidfd = open_pidfd(pid).unwrap();
    let (ours, _theirs) = UnixStream::pair().unwrap();
    let watch = PeerWatch::from_parts(ours, pid, Some(pidfd));
    assert!(!watch.poll_exited(Duration::ZERO));
    let started = Instant::now();
    let status = watch.status(Duration::from_secs(5)).unwrap();
    assert!(status.exited && !status.socket_closed, "{status:?}");
    assert!(watch.poll_exited(Duration::ZERO));
    // sleep 0.2 exits after 200 ms; noticing it must take well under a second more.
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "{:?}",
        started.elapsed()
    );
    assert!(child.wait().unwrap().success());
}

#[test]
fn kill_goes_through_the_pidfd() {
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = i32::try_from(child.id()).unwrap();
    let (ours, _theirs) = UnixStream::pair().unwrap();
    let watch = PeerWatch::from_parts(ours, pid, Some(open_pidfd(pid).unwrap()));
    watch.kill().unwrap();
    assert!(watch.poll_exited(Duration::from_secs(1)));
    assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
}

#[test]
fn without_a_pidfd_only_the_socket_speaks() {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let watch = PeerWatch::from_parts(ours, 0, None);
    assert!(watch.pidfd().is_none());
    let started = Instant::now();
    assert!(!watch.poll_exited(Duration::from_millis(50)));
    assert!(
        started.elapsed() >= Duration::from_millis(50),
        "spun instead of waiting"
    );
    assert!(watch.kill().is_err());
    drop(theirs);
    assert!(watch.status(TIMEOUT).unwrap().socket_closed);
}
