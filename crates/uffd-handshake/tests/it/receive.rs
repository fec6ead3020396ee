//! The handshake server against a client that speaks as Firecracker does: payloads of every
//! generation, 2 MiB pages, 100 regions, one or two fds, a late fd, JSON split across writes,
//! and the listening socket's file handling.

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::client::{
    Generation, HUGE, PAGE, TempDir, firecracker_uffd, memfd, payload, regions, send,
};
use uffd_core::{Features, PageSize, Uffd};
use uffd_handshake::{
    AcceptError, Handshake, HandshakeError, HandshakeListener, ListenError, PeerPolicy,
    receive_handshake,
};

const TIMEOUT: Duration = Duration::from_secs(5);

/// Binds a listener, lets `client` connect and talk (on this thread: the socket buffers it),
/// then accepts and receives.
fn exchange(
    image_size: u64,
    client: impl FnOnce(&UnixStream),
) -> Result<Handshake, HandshakeError> {
    let dir = TempDir::new("exchange");
    let listener = HandshakeListener::bind(dir.join("vm.sock"), None).unwrap();
    let stream = UnixStream::connect(listener.path()).unwrap();
    client(&stream);
    let conn = listener.accept(TIMEOUT).unwrap();
    receive_handshake(conn, TIMEOUT, image_size, &PeerPolicy::any())
}

/// x86_64's DRAM split around the MMIO gap: three regions.
fn three_regions() -> Vec<crate::client::Region> {
    regions(&[768 << 20, 256 << 20, 64 << 20])
}

fn total(regions: &[crate::client::Region]) -> u64 {
    regions.iter().map(|r| r.size).sum()
}

#[test]
fn v1_1_to_v1_6_regions_without_page_size_are_4k() {
    let regions = three_regions();
    let json = payload(&regions, PAGE, Generation::V1_1);
    let uffd = firecracker_uffd();
    let handshake = exchange(total(&regions), |s| {
        send(s, json.as_bytes(), &[uffd.as_fd()]).unwrap()
    })
    .unwrap();
    assert_eq!(handshake.layout.page_size(), PageSize::Base4K);
    assert_eq!(handshake.layout.regions().len(), 3);
    for (got, sent) in handshake.layout.regions().iter().zip(&regions) {
        assert_eq!(
            (got.host_addr, got.size, got.offset),
            (sent.host_addr, sent.size, sent.offset)
        );
    }
    assert_eq!(handshake.raw_json, json);
    assert!(handshake.extra_fd.is_none());
    assert_eq!(
        u32::try_from(handshake.peer.pid).ok(),
        Some(std::process::id())
    );
    assert_eq!(handshake.peer.uid, rustix::process::geteuid().as_raw());
    // The received fd is the real userfaultfd, adoptable as Firecracker's.
    let adopted = Uffd::adopt(handshake.uffd, Features::EVENT_REMOVE).unwrap();
    assert_eq!(adopted.features(), Features::EVENT_REMOVE);
}

#[test]
fn v1_7_to_v1_11_page_size_kib_holds_bytes() {
    let regions = three_regions();
    let json = payload(&regions, PAGE, Generation::V1_7);
    assert!(json.contains(r#""page_size_kib":4096"#));
    let uffd = firecracker_uffd();
    let handshake = exchange(total(&regions), |s| {
        send(s, json.as_bytes(), &[uffd.as_fd()]).unwrap()
    })
    .unwrap();
    assert_eq!(handshake.layout.page_size(), PageSize::Base4K);
    assert_eq!(handshake.layout.image_size(), total(&regions));
}

#[test]
fn v1_12_sends_both_page_size_fields() {
    let regions = three_regions();
    let json = payload(&regions, PAGE, Generation::V1_12);
    let uffd = firecracker_uffd();
    let handshake = exchange(total(&regions), |s| {
        send(s, json.as_bytes(), &[uffd.as_fd()]).unwrap()
    })
    .unwrap();
    assert_eq!(handshake.layout.page_size(), PageSize::Base4K);
}

#[test]
fn two_mib_pages_in_either_field() {
    let regions = regions(&[64 * HUGE, 8 * HUGE]);
    for generation in [Generation::V1_7, Generation::V1_12] {
        let json = payload(&regions, HUGE, generation);
        let uffd = firecracker_uffd();
        let handshake = exchange(total(&regions), |s| {
            send(s, json.as_bytes(), &[uffd.as_fd()]).unwrap()
        })
        .unwrap();
        assert_eq!(
            handshake.layout.page_size(),
            PageSize::Huge2M,
            "{generation:?}"
        );
    }
}

#[test]
fn a_hundred_regions_fit_the_buffer() {
    let regions = regions(&[PAGE; 100]);
    let json = payload(&regions, PAGE, Generation::V1_12);
    assert!(json.len() > 10_000, "{} bytes", json.len());
    let uffd = firecracker_uffd();
    let handshake = exchange(total(&regions), |s| {
        send(s, json.as_bytes(), &[uffd.as_fd()]).unwrap()
    })
    .unwrap();
    assert_eq!(handshake.layout.regions().len(), 100);
}

#[test]
fn unknown_fields_are_ignored() {
    let json = r#"[{"base_host_virt_addr":1048576,"size":8192,"offset":0,"page_size":4096,
        "page_size_kib":4096,"slot":3,"kind":"hotplug","future":{"a":[1,2,null]},"x":null}]"#;
    let uffd = firecracker_uffd();
    let handshake = exchange(8192, |s| send(s, json.as_bytes(), &[uffd.as_fd()]).unwrap()).unwrap();
    assert_eq!(handshake.layout.regions()[0].host_addr, 1 << 20);
}

#[test]
fn a_second_fd_is_the_extra_fd() {
    let regions = regions(&[16 * PAGE]);
    let json = payload(&regions, PAGE, Generation::V1_12);
    let (uffd, memory) = (firecracker_uffd(), memfd());
    let handshake = exchange(total(&regions), |s| {
        send(s, json.as_bytes(), &[uffd.as_fd(), memory.as_fd()]).unwrap()
    })
    .unwrap();
    let extra = handshake.extra_fd.expect("the memfd");
    let ino = |fd| rustix::fs::fstat(fd).unwrap().st_ino;
    assert_eq!(ino(extra.as_fd()), ino(memory.as_fd()));
    assert!(Uffd::adopt(handshake.uffd, Features::EVENT_REMOVE).is_ok());
}

#[test]
fn received_fds_are_close_on_exec() {
    let regions = regions(&[PAGE]);
    let json = payload(&regions, PAGE, Generation::V1_12);
    let memory = memfd();
    rustix::io::fcntl_setfd(&memory, rustix::io::FdFlags::empty()).unwrap();
    let handshake = exchange(PAGE, |s| {
        send(s, json.as_bytes(), &[memory.as_fd()]).unwrap()
    })
    .unwrap();
    let flags = rustix::io::fcntl_getfd(&handshake.uffd).unwrap();
    assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
}

#[test]
fn an_fd_arriving_after_the_json_is_waited_for() {
    let regions = regions(&[4 * PAGE]);
    let json = payload(&regions, PAGE, Generation::V1_12);
    let dir = TempDir::new("late");
    let listener = HandshakeListener::bind(dir.join("vm.sock"), None).unwrap();
    let stream = UnixStream::connect(listener.path()).unwrap();
    let late = std::thread::spawn(move || {
        send(&stream, json.as_bytes(), &[]).unwrap();
        // Models a VMM whose fd comes in a second message; a stream socket carries fds only
        // with data, so one byte of whitespace comes along.
        std::thread::sleep(Duration::from_millis(150));
        send(&stream, b" ", &[firecracker_uffd().as_fd()]).unwrap();
        stream
    });
    let conn = listener.accept(TIMEOUT).unwrap();
    let handshake = receive_handshake(conn, TIMEOUT, 4 * PAGE, &PeerPolicy::any()).unwrap();
    let _stream = late.join().unwrap();
    assert_eq!(handshake.layout.regions().len(), 1);
    assert!(!handshake.raw_json.ends_with(' '));
    assert!(Uffd::adopt(handshake.uffd, Features::EVENT_REMOVE).is_ok());
}

#[test]
fn json_split_across_writes_is_joined() {
    let regions = regions(&[PAGE, PAGE]);
    let json = payload(&regions, PAGE, Generation::V1_7);
    let (head, tail) = json.as_bytes().split_at(json.len() / 2);
    // With the fd on the first half the kernel ends that read there, so the JSON arrives in
    // two reads; with the fd on the second half the reads may merge. Both must work.
    for fd_first in [true, false] {
        let uffd = firecracker_uffd();
        let handshake = exchange(2 * PAGE, |s| {
            let (first, second) = if fd_first {
                (vec![uffd.as_fd()], vec![])
            } else {
                (vec![], vec![uffd.as_fd()])
            };
            send(s, head, &first).unwrap();
            send(s, tail, &second).unwrap();
        })
        .unwrap();
        assert_eq!(handshake.raw_json, json);
    }
}

#[test]
fn the_listener_serves_the_next_client_after_a_bad_one() {
    let dir = TempDir::new("next");
    let listener = HandshakeListener::bind(dir.join("vm.sock"), None).unwrap();
    let regions = regions(&[2 * PAGE]);
    let good = payload(&regions, PAGE, Generation::V1_12);
    let uffd = firecracker_uffd();
    let bad_clients: [&[u8]; 3] = [b"[{\"base_host", b"[{,}]", b"[]"];
    for bad in bad_clients {
        let stream = UnixStream::connect(listener.path()).unwrap();
        send(&stream, bad, &[uffd.as_fd()]).unwrap();
        drop(stream);
        let conn = listener.accept(TIMEOUT).unwrap();
        assert!(receive_handshake(conn, TIMEOUT, 2 * PAGE, &PeerPolicy::any()).is_err());
    }
    let stream = UnixStream::connect(listener.path()).unwrap();
    send(&stream, good.as_bytes(), &[uffd.as_fd()]).unwrap();
    let conn = listener.accept(TIMEOUT).unwrap();
    let handshake = receive_handshake(conn, TIMEOUT, 2 * PAGE, &PeerPolicy::any()).unwrap();
    assert_eq!(handshake.layout.image_size(), 2 * PAGE);
}

#[test]
fn the_socket_is_owner_only_or_group_and_removed_on_drop() {
    let dir = TempDir::new("mode");
    let path = dir.join("vm.sock");
    let listener = HandshakeListener::bind(&path, None).unwrap();
    let meta = fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    drop(listener);
    assert!(!path.exists(), "socket file left behind");

    let gid = 4242;
    let _listener = HandshakeListener::bind(&path, Some(gid)).unwrap();
    let meta = fs::symlink_metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o660);
    assert_eq!(meta.gid(), gid);
}

#[test]
fn a_stale_socket_is_replaced_but_nothing_else() {
    let dir = TempDir::new("stale");
    let path = dir.join("vm.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let listener = HandshakeListener::bind(&path, None).unwrap();
    assert!(UnixStream::connect(&path).is_ok());
    drop(listener);

    fs::write(&path, b"not a socket").unwrap();
    let err = HandshakeListener::bind(&path, None).unwrap_err();
    assert!(
        matches!(
            err,
            ListenError::NotASocket {
                kind: "regular file",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("refusing to replace"), "{err}");
    assert_eq!(fs::read(&path).unwrap(), b"not a socket");

    let long = dir.join(&"s".repeat(120));
    assert!(matches!(
        HandshakeListener::bind(long, None),
        Err(ListenError::PathTooLong { .. })
    ));
}

#[test]
fn accept_gives_up_at_its_deadline() {
    let dir = TempDir::new("accept");
    let listener = HandshakeListener::bind(dir.join("vm.sock"), None).unwrap();
    let started = Instant::now();
    let err = listener.accept(Duration::from_millis(200)).unwrap_err();
    let waited = started.elapsed();
    assert!(matches!(err, AcceptError::Timeout { .. }), "{err}");
    assert!(waited >= Duration::from_millis(200), "{waited:?}");
    assert!(waited < Duration::from_secs(2), "{waited:?}");
    assert!(err.to_string().contains("no VMM connected"), "{err}");
}

#[test]
fn client_payloads_match_firecracker_shapes() {
    let r = regions(&[PAGE, 2 * PAGE]);
    assert_eq!(r[1].offset, PAGE);
    assert_eq!(
        payload(&r[..1], PAGE, Generation::V1_1),
        format!(
            r#"[{{"base_host_virt_addr":{},"size":4096,"offset":0}}]"#,
            r[0].host_addr
        )
    );
    let v112 = payload(&r, PAGE, Generation::V1_12);
    assert!(!v112.contains(' ') && !v112.ends_with('\n'));
    assert_eq!(
        v112.matches(r#""page_size":4096,"page_size_kib":4096"#)
            .count(),
        2
    );
}

#[test]
fn client_tracer_sees_the_last_reader_close() {
    let tracer = crate::client::Tracer::pipe();
    let copy = tracer.reader.try_clone().unwrap();
    let writer = tracer.forget_reader();
    assert!(!crate::client::readers_closed(&writer));
    drop(copy);
    assert!(crate::client::readers_closed(&writer));
}
