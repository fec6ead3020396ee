//! The handshake exactly as Firecracker sends it: the JSON of each generation, one uffd with
//! Firecracker's flags and features, regions registered MISSING only with gaps between them,
//! the socket kept open from v1.12; and startup failures reported with their stage.

use std::io::Read;
use std::os::fd::AsRawFd;

use crate::common::{PAGE, SocketDir, TIMEOUT, WireRegion, accept_handshake, poll_in};
use rustix::event::PollFlags;
use test_vmm::{HandshakeRegion, PayloadVersion, VmmConfig, VmmError, VmmProcess, handshake_json};
use uffd_core::{CopyMode, Features, PageSize, Range, Status, Uffd};

const MIB: u64 = 1 << 20;

fn regions() -> Vec<HandshakeRegion> {
    vec![
        HandshakeRegion {
            base_host_virt_addr: 140737086898176,
            size: 268435456,
            offset: 0,
            page_size: 4096,
        },
        HandshakeRegion {
            base_host_virt_addr: 140738000000000,
            size: 4096,
            offset: 268435456,
            page_size: 4096,
        },
    ]
}

#[test]
fn json_of_each_version() {
    let v12 = handshake_json(&regions(), PayloadVersion::V1_12);
    assert_eq!(
        v12,
        "[{\"base_host_virt_addr\":140737086898176,\"size\":268435456,\"offset\":0,\
         \"page_size_kib\":4096,\"page_size\":4096},{\"base_host_virt_addr\":140738000000000,\
         \"size\":4096,\"offset\":268435456,\"page_size_kib\":4096,\"page_size\":4096}]"
    );
    for version in PayloadVersion::ALL {
        let json = handshake_json(&regions(), version);
        assert!(!json.contains([' ', '\n']), "not compact: {json}");
        let parsed: Vec<serde_json::Map<String, serde_json::Value>> =
            serde_json::from_str(&json).unwrap();
        let keys: Vec<Vec<&str>> = parsed
            .iter()
            .map(|r| r.keys().map(String::as_str).collect())
            .collect();
        let want: &[&str] = match version {
            PayloadVersion::V1_1 => &["base_host_virt_addr", "offset", "size"],
            PayloadVersion::V1_7 => &["base_host_virt_addr", "offset", "page_size_kib", "size"],
            PayloadVersion::V1_12 => &[
                "base_host_virt_addr",
                "offset",
                "page_size",
                "page_size_kib",
                "size",
            ],
        };
        for k in &keys {
            let mut k = k.clone();
            k.sort();
            assert_eq!(k, want, "{version}");
        }
        let wire: Vec<WireRegion> = serde_json::from_str(&json).unwrap();
        for (w, r) in wire.iter().zip(regions()) {
            assert_eq!(
                (w.base_host_virt_addr, w.size, w.offset),
                (r.base_host_virt_addr, r.size, r.offset)
            );
            let declared = (version != PayloadVersion::V1_1).then_some(4096);
            assert_eq!(w.page_size_kib, declared, "{version}");
            let declared = (version == PayloadVersion::V1_12).then_some(4096);
            assert_eq!(w.page_size, declared, "{version}");
        }
        assert_eq!(version.name().parse::<PayloadVersion>(), Ok(version));
    }
    assert!("v2".parse::<PayloadVersion>().is_err());
}

/// `flags:` (octal) from a process's fdinfo.
fn fd_flags(pid: u32, fd: i32) -> u32 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).expect("fdinfo");
    let flags = text
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .expect("flags line");
    u32::from_str_radix(flags.trim(), 8).expect("octal flags")
}

/// The features (`API:` line, second field; the kernel's internal bit 31 removed) of a uffd.
fn uffd_features(fd: i32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).expect("fdinfo");
    let api = text
        .lines()
        .find_map(|l| l.strip_prefix("API:"))
        .expect("API line");
    let features = api.trim().split(':').nth(1).expect("features field");
    u64::from_str_radix(features, 16).expect("hex") & !(1 << 31)
}

#[test]
fn each_version_sends_its_payload() {
    let sizes = vec![8 * MIB, 4 * MIB, 2 * MIB];
    for version in PayloadVersion::ALL {
        let dir = SocketDir::new("payload");
        let listener = dir.listen();
        let config = VmmConfig::new(test_vmm::binary(), dir.socket(), sizes.clone())
            .payload(version)
            .timeout(TIMEOUT);
        let vmm = VmmProcess::spawn(config).expect("spawn");
        let mut hs = accept_handshake(&listener);

        // The message is exactly the JSON the vmm reports, with exactly one fd.
        assert_eq!(hs.json, vmm.info().handshake, "{version}");
        assert_eq!(hs.json, handshake_json(vmm.regions(), version));
        assert_eq!(hs.fds.len(), 1, "{version}: one fd");
        let link = std::fs::read_link(format!("/proc/self/fd/{}", hs.fds[0].as_raw_fd()));
        assert_eq!(link.unwrap().to_str(), Some("anon_inode:[userfaultfd]"));

        // Regions: the configured sizes, offsets a running sum, ascending with unmapped gaps.
        assert_eq!(hs.regions.len(), sizes.len());
        let mut offset = 0;
        for (i, r) in hs.regions.iter().enumerate() {
            assert_eq!(
                (r.size, r.offset),
                (sizes[i], offset),
                "{version} region {i}"
            );
            offset += r.size;
            if let Some(next) = hs.regions.get(i + 1) {
                assert!(
                    next.base_host_virt_addr > r.base_host_virt_addr + r.size,
                    "{version}: no gap after region {i}"
                );
            }
            let declared = (version != PayloadVersion::V1_1).then_some(PAGE);
            assert_eq!(r.page_size_kib, declared);
        }

        // Firecracker's fd: non-blocking and close-on-exec in the vmm, EVENT_REMOVE only.
        let flags = fd_flags(vmm.pid(), vmm.info().uffd_fd);
        let (nonblock, cloexec) = (libc::O_NONBLOCK as u32, libc::O_CLOEXEC as u32);
        assert_eq!(
            flags & (nonblock | cloexec),
            nonblock | cloexec,
            "{flags:o}"
        );
        let features = uffd_features(hs.fds[0].as_raw_fd());
        assert_eq!(features, Features::EVENT_REMOVE.bits(), "{features:#x}");

        // Registered MISSING (COPY works) and not WP (COPY|MODE_WP is refused), in each region.
        let uffd = Uffd::adopt(hs.fds.pop().unwrap(), Features::EVENT_REMOVE).unwrap();
        for r in &hs.regions {
            let page = Range::new(r.base_host_virt_addr, PAGE, PageSize::Base4K).unwrap();
            let wp = uffd.copy(page, &[7; PAGE as usize], CopyMode::WP);
            assert_eq!(wp.status, Status::Invalid, "{version}: {wp:?}");
            let copy = uffd.copy(page, &[7; PAGE as usize], CopyMode::empty());
            assert_eq!(copy.status, Status::Complete, "{version}: {copy:?}");
            assert_eq!(vmm.read(r.offset, 2).unwrap(), [7, 7]);
        }

        // From v1.12 the socket stays open; before, Firecracker closed it after sending.
        let events = poll_in(&hs.stream, std::time::Duration::ZERO);
        if version.keeps_socket() {
            assert!(events.is_empty(), "{version}: {events:?}");
            vmm.close_socket().unwrap();
        }
        let mut byte = [0];
        assert_eq!(hs.stream.read(&mut byte).unwrap(), 0, "{version}: EOF");
        drop(vmm);
    }
}

#[test]
fn socket_kept_open_until_the_vmm_dies() {
    let dir = SocketDir::new("hup");
    let listener = dir.listen();
    let config = VmmConfig::new(test_vmm::binary(), dir.socket(), vec![MIB]).timeout(TIMEOUT);
    let vmm = VmmProcess::spawn(config).unwrap();
    let hs = accept_handshake(&listener);
    assert!(poll_in(&hs.stream, std::time::Duration::ZERO).is_empty());
    vmm.kill().unwrap();
    assert!(poll_in(&hs.stream, TIMEOUT).contains(PollFlags::HUP));
}

#[test]
fn hundred_regions() {
    let sizes = vec![64 << 10; 100];
    let dir = SocketDir::new("hundred");
    let listener = dir.listen();
    let config = VmmConfig::new(test_vmm::binary(), dir.socket(), sizes).timeout(TIMEOUT);
    let vmm = VmmProcess::spawn(config).unwrap();
    let hs = accept_handshake(&listener);
    assert_eq!(hs.regions.len(), 100);
    assert!(hs.json.len() > 100 * 100, "{} bytes", hs.json.len());
    assert_eq!(hs.json, vmm.info().handshake);
    assert_eq!(vmm.image_size(), 100 * (64 << 10));
}

#[test]
fn startup_failures_name_their_stage() {
    let dir = SocketDir::new("fail");
    // No socket: ENOENT, as Firecracker reports.
    let config = VmmConfig::new(test_vmm::binary(), dir.socket(), vec![MIB]).timeout(TIMEOUT);
    match VmmProcess::spawn(config.clone()) {
        Err(VmmError::Startup { stage, message, .. }) => {
            assert_eq!(stage, "connect");
            assert!(message.contains("No such file"), "{message}");
        }
        other => panic!("expected a connect failure, got {other:?}"),
    }
    // A socket nobody listens on: ECONNREFUSED.
    drop(dir.listen());
    match VmmProcess::spawn(config.clone()) {
        Err(VmmError::Startup { stage, message, .. }) => {
            assert_eq!(stage, "connect");
            assert!(message.contains("refused"), "{message}");
        }
        other => panic!("expected a refused connection, got {other:?}"),
    }
    // Configurations the vmm cannot honour are refused before spawning.
    let bad = [
        VmmConfig {
            hugetlb: true,
            ..config.clone()
        },
        VmmConfig {
            regions: vec![MIB + 1],
            ..config.clone()
        },
        VmmConfig {
            regions: vec![],
            ..config.clone()
        },
    ];
    for config in bad {
        assert!(
            matches!(VmmProcess::spawn(config.clone()), Err(VmmError::Config(_))),
            "{config:?}"
        );
    }
    // A binary that is not there.
    let missing = VmmConfig {
        binary: "/nonexistent/test-vmm".into(),
        ..config
    };
    assert!(matches!(
        VmmProcess::spawn(missing),
        Err(VmmError::Spawn { .. })
    ));
}
