//! Bad handshakes: each refused with an error naming the problem, the connection closed, and
//! every fd that came with it closed.

use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::client::{
    Generation, PAGE, TempDir, Tracer, firecracker_uffd, payload, peer_closed, readers_closed,
    regions, send,
};
use uffd_engine::LayoutError;
use uffd_handshake::{
    HandshakeError, HandshakeListener, PayloadError, PeerPolicy, StoppedBy, receive_handshake,
};

const TIMEOUT: Duration = Duration::from_secs(5);

/// Whether an error is the one a case expects.
type IsPayloadError = fn(&PayloadError) -> bool;
/// Whether an error is the one a case expects.
type IsLayoutError = fn(&LayoutError) -> bool;

/// Runs one handshake that must fail: `client` talks on the connection (and may close it),
/// then the server receives with `timeout`. Returns the error and the client's stream (if it
/// kept it), after checking the server closed the connection.
fn refused(
    timeout: Duration,
    policy: &PeerPolicy,
    image_size: u64,
    client: impl FnOnce(UnixStream) -> Option<UnixStream>,
) -> HandshakeError {
    let dir = TempDir::new("bad");
    let listener = HandshakeListener::bind(dir.join("vm.sock"), None).unwrap();
    let kept = client(UnixStream::connect(listener.path()).unwrap());
    let conn = listener.accept(TIMEOUT).unwrap();
    let err = receive_handshake(conn, timeout, image_size, policy)
        .map(|h| h.layout)
        .expect_err("the handshake was accepted");
    if let Some(stream) = kept {
        assert!(peer_closed(&stream), "connection left open after: {err}");
    }
    err
}

/// Sends `bytes` with `fds`, keeping the connection open.
fn sends<'a>(
    bytes: &'a [u8],
    fds: &'a [BorrowedFd<'a>],
) -> impl FnOnce(UnixStream) -> Option<UnixStream> + 'a {
    move |s| {
        send(&s, bytes, fds).unwrap();
        Some(s)
    }
}

fn one_page_json() -> String {
    payload(&regions(&[PAGE]), PAGE, Generation::V1_12)
}

#[test]
fn json_without_an_fd_then_close_is_a_missing_fd() {
    let json = one_page_json();
    let err = refused(TIMEOUT, &PeerPolicy::any(), PAGE, |s| {
        send(&s, json.as_bytes(), &[]).unwrap();
        None
    });
    assert!(
        matches!(
            err,
            HandshakeError::MissingFd {
                stopped: StoppedBy::PeerClosed
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("without the userfaultfd"), "{err}");
}

#[test]
fn json_without_an_fd_until_the_deadline_is_a_missing_fd() {
    let json = one_page_json();
    let started = Instant::now();
    let err = refused(
        Duration::from_millis(200),
        &PeerPolicy::any(),
        PAGE,
        sends(json.as_bytes(), &[]),
    );
    assert!(
        matches!(
            err,
            HandshakeError::MissingFd {
                stopped: StoppedBy::Deadline { .. }
            }
        ),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(err.to_string().contains("deadline"), "{err}");
}

#[test]
fn silence_until_close_or_deadline_is_nothing_received() {
    let err = refused(TIMEOUT, &PeerPolicy::any(), PAGE, |_| None);
    assert!(
        matches!(
            err,
            HandshakeError::NothingReceived {
                stopped: StoppedBy::PeerClosed
            }
        ),
        "{err}"
    );
    let err = refused(Duration::from_millis(100), &PeerPolicy::any(), PAGE, Some);
    assert!(
        matches!(
            err,
            HandshakeError::NothingReceived {
                stopped: StoppedBy::Deadline { .. }
            }
        ),
        "{err}"
    );
}

#[test]
fn truncated_json_then_close_is_truncated() {
    let json = one_page_json();
    let cut = &json.as_bytes()[..json.len() - 5];
    let uffd = firecracker_uffd();
    let err = refused(TIMEOUT, &PeerPolicy::any(), PAGE, |s| {
        send(&s, cut, &[uffd.as_fd()]).unwrap();
        None
    });
    assert!(
        matches!(err, HandshakeError::Truncated { received, stopped: StoppedBy::PeerClosed } if received == cut.len()),
        "{err}"
    );
    assert!(err.to_string().contains("incomplete JSON"), "{err}");
}

#[test]
fn three_fds_are_refused_and_all_closed() {
    let json = one_page_json();
    let tracers = [Tracer::pipe(), Tracer::pipe(), Tracer::pipe()];
    let fds: Vec<BorrowedFd<'_>> = tracers.iter().map(|t| t.reader.as_fd()).collect();
    let dir = TempDir::new("three");
    let listener = HandshakeListener::bind(dir.join("vm.sock"), None).unwrap();
    let stream = UnixStream::connect(listener.path()).unwrap();
    send(&stream, json.as_bytes(), &fds).unwrap();
    drop(fds);
    let writers: Vec<_> = tracers.into_iter().map(Tracer::forget_reader).collect();
    let conn = listener.accept(TIMEOUT).unwrap();
    let err = receive_handshake(conn, TIMEOUT, PAGE, &PeerPolicy::any()).unwrap_err();
    assert!(
        matches!(err, HandshakeError::TooManyFds { count: 3 }),
        "{err}"
    );
    assert!(err.to_string().contains("3 file descriptors"), "{err}");
    assert!(
        writers.iter().all(readers_closed),
        "a received fd is still open"
    );
    assert!(peer_closed(&stream));
}

#[test]
fn far_too_many_fds_are_cut_by_the_kernel_and_all_closed() {
    let json = one_page_json();
    let tracers: Vec<Tracer> = (0..40).map(|_| Tracer::pipe()).collect();
    let fds: Vec<BorrowedFd<'_>> = tracers.iter().map(|t| t.reader.as_fd()).collect();
    let dir = TempDir::new("many");
    let listener = HandshakeListener::bind(dir.join("vm.sock"), None).unwrap();
    let stream = UnixStream::connect(listener.path()).unwrap();
    send(&stream, json.as_bytes(), &fds).unwrap();
    drop(fds);
    let writers: Vec<_> = tracers.into_iter().map(Tracer::forget_reader).collect();
    let conn = listener.accept(TIMEOUT).unwrap();
    let err = receive_handshake(conn, TIMEOUT, PAGE, &PeerPolicy::any()).unwrap_err();
    assert!(
        matches!(err, HandshakeError::ControlTruncated { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("MSG_CTRUNC"), "{err}");
    assert!(
        writers.iter().all(readers_closed),
        "a received fd is still open"
    );
}

#[test]
fn malformed_json_is_refused_at_once() {
    let uffd = firecracker_uffd();
    let started = Instant::now();
    let err = refused(
        TIMEOUT,
        &PeerPolicy::any(),
        PAGE,
        sends(b"[{\"size\": 4096,,}]", &[uffd.as_fd()]),
    );
    assert!(
        started.elapsed() < TIMEOUT / 2,
        "waited for more after a syntax error"
    );
    let HandshakeError::Payload {
        source: PayloadError::Malformed { message },
        raw_json,
    } = &err
    else {
        panic!("{err}")
    };
    assert!(message.contains("line 1 column"), "{message}");
    assert_eq!(raw_json, "[{\"size\": 4096,,}]");
    assert_eq!(err.raw_json(), Some(raw_json.as_str()));
    assert!(err.to_string().contains("not valid JSON"), "{err}");
}

#[test]
fn wrong_shapes_are_named() {
    let uffd = firecracker_uffd();
    let cases: [(&str, IsPayloadError, &str); 4] = [
        (
            r#"{"regions":[]}"#,
            |e| matches!(e, PayloadError::NotAnArray { .. }),
            "not an array",
        ),
        ("[]", |e| *e == PayloadError::Empty, "empty"),
        (
            r#"[{"base_host_virt_addr":0,"offset":0}]"#,
            |e| matches!(e, PayloadError::MissingField { field: "size", .. }),
            "no `size` field",
        ),
        (
            r#"[{"base_host_virt_addr":0,"size":4096,"offset":0,"page_size":8192}]"#,
            |e| matches!(e, PayloadError::BadPageSize { bytes: 8192, .. }),
            "8192 bytes",
        ),
    ];
    for (json, is_expected, words) in cases {
        let err = refused(
            TIMEOUT,
            &PeerPolicy::any(),
            PAGE,
            sends(json.as_bytes(), &[uffd.as_fd()]),
        );
        let HandshakeError::Payload { source, .. } = &err else {
            panic!("{json}: {err}")
        };
        assert!(is_expected(source), "{json}: {err}");
        assert!(err.to_string().contains(words), "{json}: {err}");
    }
}

#[test]
fn page_size_and_page_size_kib_must_agree() {
    let json = r#"[{"base_host_virt_addr":0,"size":4096,"offset":0,"page_size":4096,"page_size_kib":2097152}]"#;
    let uffd = firecracker_uffd();
    let err = refused(
        TIMEOUT,
        &PeerPolicy::any(),
        PAGE,
        sends(json.as_bytes(), &[uffd.as_fd()]),
    );
    assert!(
        matches!(
            err,
            HandshakeError::Payload {
                source: PayloadError::PageSizeMismatch {
                    page_size: 4096,
                    page_size_kib: 2097152,
                    ..
                },
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn regions_that_do_not_fit_the_snapshot_are_refused() {
    let uffd = firecracker_uffd();
    let overlapping = r#"[{"base_host_virt_addr":1048576,"size":8192,"offset":0},
                          {"base_host_virt_addr":1052672,"size":4096,"offset":8192}]"#;
    let misaligned = r#"[{"base_host_virt_addr":1048832,"size":4096,"offset":0}]"#;
    let one_page = one_page_json();
    let cases: [(&str, u64, IsLayoutError, &str); 3] = [
        (
            overlapping,
            3 * PAGE,
            |e| matches!(e, LayoutError::Overlap { .. }),
            "overlap",
        ),
        (
            misaligned,
            PAGE,
            |e| matches!(e, LayoutError::Misaligned { .. }),
            "not aligned",
        ),
        (
            &one_page,
            2 * PAGE,
            |e| matches!(e, LayoutError::SizeMismatch { .. }),
            "memory image is 0x2000 bytes",
        ),
    ];
    for (json, image_size, is_expected, words) in cases {
        let err = refused(
            TIMEOUT,
            &PeerPolicy::any(),
            image_size,
            sends(json.as_bytes(), &[uffd.as_fd()]),
        );
        let HandshakeError::Layout { source, raw_json } = &err else {
            panic!("{json}: {err}")
        };
        assert!(is_expected(source), "{json}: {err}");
        assert_eq!(raw_json, json.trim_end());
        assert!(err.to_string().contains(words), "{json}: {err}");
    }
}

#[test]
fn a_disallowed_uid_is_refused_before_reading() {
    let own = rustix::process::geteuid().as_raw();
    let policy = PeerPolicy::uids([own.wrapping_add(4242)]);
    let json = one_page_json();
    let tracer = Tracer::pipe();
    let dir = TempDir::new("uid");
    let listener = HandshakeListener::bind(dir.join("vm.sock"), None).unwrap();
    let stream = UnixStream::connect(listener.path()).unwrap();
    send(&stream, json.as_bytes(), &[tracer.reader.as_fd()]).unwrap();
    let writer = tracer.forget_reader();
    let conn = listener.accept(TIMEOUT).unwrap();
    let err = receive_handshake(conn, TIMEOUT, PAGE, &policy).unwrap_err();
    let HandshakeError::UidNotAllowed { peer, allowed } = &err else {
        panic!("{err}")
    };
    assert_eq!(peer.uid, own);
    assert_eq!(allowed, &[own.wrapping_add(4242)]);
    assert!(
        err.to_string().contains(&format!("peer uid {own}")),
        "{err}"
    );
    assert!(peer_closed(&stream));
    assert!(readers_closed(&writer), "the unread fd is still open");
}
