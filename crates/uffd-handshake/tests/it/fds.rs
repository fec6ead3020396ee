//! No fd leaks across good and bad handshakes, counted in /proc/self/fd. One test in its own
//! binary, so no other test opens or closes fds meanwhile.

use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::client::{
    Generation, PAGE, TempDir, firecracker_uffd, memfd, open_fd_count, payload, regions, send,
};
use uffd_handshake::{HandshakeListener, PeerPolicy, receive_handshake};

const TIMEOUT: Duration = Duration::from_secs(5);

#[test]
fn handshakes_leave_no_fd_behind() {
    let dir = TempDir::new("fds");
    let listener = HandshakeListener::bind(dir.join("vm.sock"), None).unwrap();
    let good = payload(&regions(&[PAGE]), PAGE, Generation::V1_12);
    let (uffd, memory) = (firecracker_uffd(), memfd());
    let many: Vec<_> = (0..20).map(|_| memfd()).collect();
    let many: Vec<BorrowedFd<'_>> = many.iter().map(|fd| fd.as_fd()).collect();
    let three = [uffd.as_fd(), memory.as_fd(), uffd.as_fd()];
    let own_uid = rustix::process::geteuid().as_raw();
    let only_others = PeerPolicy::uids([own_uid.wrapping_add(1)]);

    // (payload, fds, policy, accepted)
    let cases: [(&[u8], &[BorrowedFd<'_>], &PeerPolicy, bool); 7] = [
        (good.as_bytes(), &[uffd.as_fd()], &PeerPolicy::any(), true),
        (
            good.as_bytes(),
            &[uffd.as_fd(), memory.as_fd()],
            &PeerPolicy::any(),
            true,
        ),
        (good.as_bytes(), &three, &PeerPolicy::any(), false),
        (good.as_bytes(), &many, &PeerPolicy::any(), false),
        (good.as_bytes(), &[uffd.as_fd()], &only_others, false),
        (
            b"[{]",
            &[uffd.as_fd(), memory.as_fd()],
            &PeerPolicy::any(),
            false,
        ),
        (good.as_bytes(), &[], &PeerPolicy::any(), false),
    ];
    let before = open_fd_count();
    for (bytes, fds, policy, accepted) in cases {
        let stream = UnixStream::connect(listener.path()).unwrap();
        send(&stream, bytes, fds).unwrap();
        drop(stream);
        let conn = listener.accept(TIMEOUT).unwrap();
        let result = receive_handshake(conn, TIMEOUT, PAGE, policy);
        assert_eq!(
            result.is_ok(),
            accepted,
            "{} fds: {:?}",
            fds.len(),
            result.err()
        );
        drop(result);
        assert_eq!(open_fd_count(), before, "{} fds sent", fds.len());
    }
}
