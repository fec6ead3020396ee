//! The socket file under a hostile host: it never exists more open than asked, a socket that
//! another daemon listens on or another user owns is never replaced, and a daemon removes only
//! the socket it created.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};

use uffd_handshake::{BoundSocket, HandshakeListener, ListenError, MAX_SOCKET_PATH};

use crate::client::TempDir;

#[test]
fn a_listening_socket_is_never_replaced() {
    let dir = TempDir::new("in-use");
    let path = dir.join("vm.sock");
    let first = HandshakeListener::bind(&path, None).unwrap();
    let err = HandshakeListener::bind(&path, None).unwrap_err();
    assert!(matches!(err, ListenError::InUse { .. }), "{err}");
    assert!(err.to_string().contains("in use"), "{err}");
    // The first is untouched, and still the one answering.
    assert!(UnixStream::connect(&path).is_ok());
    drop(err);
    drop(first);
    assert!(!path.exists());
}

#[test]
fn a_socket_of_another_user_is_never_replaced() {
    if !rustix::process::geteuid().is_root() {
        test_support::skip(
            "a_socket_of_another_user_is_never_replaced",
            "making a socket of another uid needs root",
        );
        return;
    }
    let dir = TempDir::new("not-ours");
    let path = dir.join("vm.sock");
    drop(UnixListener::bind(&path).unwrap());
    let nobody = 65534;
    std::os::unix::fs::lchown(&path, Some(nobody), None).unwrap();
    let err = HandshakeListener::bind(&path, None).unwrap_err();
    assert!(
        matches!(err, ListenError::NotOurs { uid, .. } if uid == nobody),
        "{err}"
    );
    assert_eq!(fs::symlink_metadata(&path).unwrap().uid(), nobody);
}

/// The socket is bound in a private directory and renamed into place: the directory is gone
/// afterwards, and at the final path it has its mode and group from the start.
#[test]
fn the_socket_appears_with_its_final_mode_and_nothing_is_left_beside_it() {
    let dir = TempDir::new("private");
    let path = dir.join("vm.sock");
    let bound = BoundSocket::bind(&path, 0o660, Some(4242)).unwrap();
    let meta = fs::symlink_metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o660);
    assert_eq!(meta.gid(), 4242);
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("vm.sock")]);
    drop(bound);
    assert!(fs::read_dir(dir.path()).unwrap().next().is_none());
}

/// A path at the length limit still binds: the private directory is reached through its fd,
/// so its own (longer) path never has to fit in a socket address.
#[test]
fn a_path_at_the_length_limit_binds() {
    let dir = TempDir::new("long");
    let base = dir.join("").to_string_lossy().into_owned();
    let name = "s".repeat(MAX_SOCKET_PATH - base.len());
    let path = dir.join(&name);
    assert_eq!(path.as_os_str().len(), MAX_SOCKET_PATH);
    let listener = HandshakeListener::bind(&path, None).unwrap();
    assert!(UnixStream::connect(&path).is_ok());
    drop(listener);
}
