//! Creation on the real kernel: both paths and the fallback policy, fd flags, `UFFDIO_API`
//! negotiation and probing, adoption, and giving the fd back.

use std::os::fd::{AsFd, AsRawFd};

use rustix::fs::OFlags;
use rustix::io::FdFlags;
use test_support::Mapping;
use uffd_core::{
    CopyMode, CreatePolicy, Errno, Error, EventBuffer, Features, Ioctls, Origin, RegisterMode,
    Status, Uffd, UffdBuilder,
};

use crate::common::{ChildProc, PAGE_LEN, child_role, fdinfo, new_uffd, pattern, test_path};

/// Registers a fresh page with `uffd`, serves it with COPY and reads the bytes back.
fn assert_works(uffd: &Uffd) {
    let map = Mapping::anon(1);
    let ioctls = uffd
        .register(map.range(), RegisterMode::MISSING)
        .expect("register");
    assert!(ioctls.contains(Ioctls::COPY | Ioctls::WAKE | Ioctls::ZEROPAGE));
    let bytes = pattern(0x3c, PAGE_LEN);
    let outcome = uffd.copy(map.page(0), &bytes, CopyMode::empty());
    assert_eq!(outcome.status, Status::Complete, "{outcome:?}");
    assert_eq!(map.read_bytes(0, PAGE_LEN), bytes);
    uffd.unregister(map.range()).expect("unregister");
}

#[test]
fn every_policy_creates_a_working_uffd_and_reports_its_origin() {
    for (policy, origin) in [
        (CreatePolicy::DeviceOnly, Origin::Device),
        (CreatePolicy::SyscallOnly, Origin::Syscall),
        // /dev/userfaultfd is usable here (root), so the fallback is not taken.
        (CreatePolicy::DeviceThenSyscall, Origin::Device),
    ] {
        let uffd = UffdBuilder::new()
            .policy(policy)
            .create()
            .unwrap_or_else(|e| panic!("{policy:?}: {e}"));
        assert_eq!(uffd.origin(), origin, "{policy:?}");
        let api = uffd
            .api_info()
            .expect("a created fd carries its API answer");
        assert!(
            api.ioctls
                .contains(Ioctls::REGISTER | Ioctls::UNREGISTER | Ioctls::API)
        );
        assert_eq!(api.enabled, Features::empty());
        assert_works(&uffd);
    }
}

#[test]
fn user_mode_only_creates_on_both_paths() {
    for policy in [CreatePolicy::DeviceOnly, CreatePolicy::SyscallOnly] {
        let uffd = UffdBuilder::new()
            .policy(policy)
            .user_mode_only(true)
            .create()
            .unwrap_or_else(|e| panic!("{policy:?}: {e}"));
        // Faults raised by this process's own code are user-mode faults: still trapped.
        assert_works(&uffd);
    }
}

#[test]
fn fd_flags_are_honoured_on_both_paths() {
    for policy in [CreatePolicy::DeviceOnly, CreatePolicy::SyscallOnly] {
        for (non_blocking, cloexec) in [(true, true), (false, false), (true, false), (false, true)]
        {
            let uffd = UffdBuilder::new()
                .policy(policy)
                .non_blocking(non_blocking)
                .close_on_exec(cloexec)
                .create()
                .unwrap_or_else(|e| panic!("{policy:?}: {e}"));
            let fd_flags = rustix::io::fcntl_getfd(&uffd).expect("F_GETFD");
            assert_eq!(
                fd_flags.contains(FdFlags::CLOEXEC),
                cloexec,
                "{policy:?} cloexec={cloexec}: {fd_flags:?}"
            );
            let status = rustix::fs::fcntl_getfl(&uffd).expect("F_GETFL");
            assert_eq!(
                status.contains(OFlags::NONBLOCK),
                non_blocking,
                "{policy:?} non_blocking={non_blocking}: {status:?}"
            );
            if non_blocking {
                // Nothing pending: an empty batch, not an error and not a wait.
                let mut buf = EventBuffer::new(8);
                let events = uffd.read_events(&mut buf).expect("read_events");
                assert!(events.is_empty());
                assert_eq!(events.len(), 0);
            }
        }
    }
}

#[test]
fn probe_reports_the_kernels_features() {
    let probe = Uffd::probe(CreatePolicy::DeviceThenSyscall).expect("probe");
    // Present since Linux 4.11-4.14: any kernel running this must have them.
    let old = Features::EVENT_FORK
        | Features::EVENT_REMAP
        | Features::EVENT_REMOVE
        | Features::EVENT_UNMAP
        | Features::MISSING_HUGETLBFS
        | Features::MISSING_SHMEM
        | Features::SIGBUS
        | Features::THREAD_ID;
    assert!(
        probe.supported.contains(old),
        "probe misses long-standing features: {:?}",
        old - probe.supported
    );
    assert!(
        probe
            .ioctls
            .contains(Ioctls::REGISTER | Ioctls::UNREGISTER | Ioctls::API)
    );
    // Nothing was asked for, so nothing is enabled.
    assert_eq!(probe.enabled, Features::empty());
    // Both paths talk to the same kernel.
    for policy in [CreatePolicy::DeviceOnly, CreatePolicy::SyscallOnly] {
        assert_eq!(
            Uffd::probe(policy).expect("probe").supported,
            probe.supported,
            "{policy:?}"
        );
    }
    // WP_ASYNC came in 6.7, MOVE in 6.8, POISON in 6.6: a 6.8+ kernel must report them all.
    let recent = Features::EVENT_REMOVE | Features::WP_ASYNC | Features::MOVE | Features::POISON;
    let release = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    if kernel_at_least(&release, (6, 8)) {
        assert!(
            probe.supported.contains(recent),
            "kernel {release} must support {:?}",
            recent - probe.supported
        );
    } else {
        test_support::skip(
            "create::probe_reports_the_kernels_features (6.8+ part)",
            &format!(
                "kernel {release} predates 6.8; it lacks {:?}",
                recent - probe.supported
            ),
        );
    }
}

/// Whether a `uname -r` release string is at least `major.minor`.
fn kernel_at_least(release: &str, want: (u32, u32)) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= want
}

#[test]
fn an_unknown_feature_bit_is_named_in_the_error() {
    let unknown = Features::from_bits_retain(1 << 40);
    for policy in [CreatePolicy::DeviceOnly, CreatePolicy::SyscallOnly] {
        let err = UffdBuilder::new()
            .policy(policy)
            .features(Features::EVENT_REMOVE | unknown)
            .create()
            .expect_err("the kernel knows no bit 40");
        match &err {
            Error::UnsupportedFeatures { missing, supported } => {
                assert_eq!(*missing, unknown, "only the unknown bit is missing");
                assert!(supported.contains(Features::EVENT_REMOVE));
            }
            other => panic!("{policy:?}: expected UnsupportedFeatures, got {other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.contains("0x10000000000"),
            "message does not name the bit: {text}"
        );
    }
}

#[test]
fn wp_async_enables_wp_unpopulated() {
    let uffd = UffdBuilder::new()
        .features(Features::WP_ASYNC | Features::PAGEFAULT_FLAG_WP)
        .create()
        .expect("create with WP_ASYNC");
    assert!(uffd.features().contains(Features::WP_UNPOPULATED));
    let api = uffd.api_info().expect("api info");
    assert_eq!(api.enabled, uffd.features());
    // The kernel's own record of the context agrees.
    let info = fdinfo(&uffd);
    assert_eq!(info.features, uffd.features().bits(), "fdinfo: {info:?}");

    // Without WP_ASYNC nothing is added.
    let plain = new_uffd(Features::PAGEFAULT_FLAG_WP | Features::EVENT_REMOVE);
    assert_eq!(
        plain.features(),
        Features::PAGEFAULT_FLAG_WP | Features::EVENT_REMOVE
    );
    assert_eq!(fdinfo(&plain).features, plain.features().bits());
}

#[test]
fn adopting_a_uffd_fd_works() {
    let original = new_uffd(Features::EVENT_REMOVE);
    // A second fd on the same context, as a VMM would send over a socket.
    let dup = rustix::io::fcntl_dupfd_cloexec(&original, 0).expect("dup");
    let adopted = Uffd::adopt(dup, Features::EVENT_REMOVE).expect("adopt");
    assert_eq!(adopted.origin(), Origin::Adopted);
    assert_eq!(adopted.features(), Features::EVENT_REMOVE);
    assert_eq!(adopted.api_info(), None);

    // Registered through one fd, served through the other: one context.
    let map = Mapping::anon(2);
    adopted
        .register(map.range(), RegisterMode::MISSING)
        .expect("register through the adopted fd");
    let bytes = pattern(0x77, PAGE_LEN);
    let outcome = original.copy(map.page(1), &bytes, CopyMode::empty());
    assert_eq!(outcome.status, Status::Complete, "{outcome:?}");
    assert_eq!(map.read_bytes(PAGE_LEN, PAGE_LEN), bytes);
    adopted.unregister(map.range()).expect("unregister");
}

/// Adoption takes the features the creator really enabled (fdinfo), not the declared ones.
#[test]
fn adoption_reads_the_enabled_features() {
    let original = new_uffd(Features::EVENT_REMOVE | Features::EVENT_UNMAP);
    let dup = rustix::io::fcntl_dupfd_cloexec(&original, 0).expect("dup");
    let adopted = Uffd::adopt(dup, Features::EVENT_REMOVE).expect("adopt");
    assert_eq!(
        adopted.features(),
        Features::EVENT_REMOVE | Features::EVENT_UNMAP
    );
    assert!(!adopted.was_blocking());
}

/// A userfaultfd whose creator never called UFFDIO_API cannot have a range registered: it is
/// refused, named as such.
#[test]
fn adopting_a_uffd_without_api_is_refused() {
    let flags = rustix::mm::UserfaultfdFlags::CLOEXEC | rustix::mm::UserfaultfdFlags::NONBLOCK;
    // SAFETY: creates a new fd and nothing else; it is used only to be adopted (and refused).
    let raw = match unsafe { rustix::mm::userfaultfd(flags) } {
        Ok(fd) => fd,
        Err(e) => {
            // The syscall may be forbidden (vm.unprivileged_userfaultfd) where the device works.
            test_support::skip(
                "adopting_a_uffd_without_api_is_refused",
                &format!("the userfaultfd syscall is not allowed here: {e}"),
            );
            return;
        }
    };
    match Uffd::adopt(raw, Features::EVENT_REMOVE) {
        Err(err @ Error::ApiNotCalled { .. }) => {
            assert!(err.to_string().contains("never called UFFDIO_API"), "{err}");
        }
        other => panic!("expected ApiNotCalled, got {other:?}"),
    }
}

/// A blocking userfaultfd is made non-blocking on adoption (readers poll, then read; a
/// blocking read would park a reader for good when another took the message).
#[test]
fn adopting_a_blocking_uffd_makes_it_non_blocking() {
    let original = UffdBuilder::new()
        .features(Features::EVENT_REMOVE)
        .non_blocking(false)
        .create()
        .expect("uffd");
    let dup = rustix::io::fcntl_dupfd_cloexec(&original, 0).expect("dup");
    let adopted = Uffd::adopt(dup, Features::EVENT_REMOVE).expect("adopt");
    assert!(adopted.was_blocking());
    let flags = rustix::fs::fcntl_getfl(&adopted).expect("F_GETFL");
    assert!(flags.contains(rustix::fs::OFlags::NONBLOCK));
}

#[test]
fn adopting_a_pipe_is_refused() {
    let (reader, _writer) = rustix::pipe::pipe().expect("pipe");
    let raw = reader.as_raw_fd();
    match Uffd::adopt(reader, Features::empty()) {
        Err(err @ Error::NotUserfaultfd { .. }) => {
            let Error::NotUserfaultfd { fd, what } = &err else {
                unreachable!()
            };
            assert_eq!(*fd, raw);
            assert!(what.starts_with("pipe:["), "what: {what}");
            let text = err.to_string();
            assert!(text.contains("not a userfaultfd"), "{text}");
            assert!(text.contains("pipe:["), "{text}");
        }
        other => panic!("expected NotUserfaultfd, got {other:?}"),
    }
}

#[test]
fn into_fd_gives_the_fd_back_open() {
    let uffd = new_uffd(Features::empty());
    let map = Mapping::anon(1);
    uffd.register(map.range(), RegisterMode::MISSING)
        .expect("register");
    let raw = uffd.as_raw_fd();
    let fd = uffd.into_fd();
    assert_eq!(fd.as_raw_fd(), raw);
    rustix::io::fcntl_getfd(fd.as_fd()).expect("the fd is still open");
    // Still the same context: the registration survived (closing would have dropped it).
    let uffd = Uffd::adopt(fd, Features::empty()).expect("adopt it again");
    let bytes = pattern(0x11, PAGE_LEN);
    let outcome = uffd.copy(map.page(0), &bytes, CopyMode::empty());
    assert_eq!(outcome.status, Status::Complete, "{outcome:?}");
    assert_eq!(map.read_bytes(0, PAGE_LEN), bytes);
    uffd.unregister(map.range()).expect("unregister");
}

const UNPRIVILEGED_TEST: &str = "without_privilege_the_policy_decides";

/// Child role: drops root for this thread (the kernel checks the calling thread's
/// credentials), then tries every policy.
fn unprivileged_child() {
    // Capabilities go with root: no CAP_SYS_PTRACE, and /dev/userfaultfd is 0600 root.
    rustix::thread::set_thread_gid(rustix::process::Gid::from_raw(65534)).expect("setgid");
    rustix::thread::set_thread_uid(rustix::process::Uid::from_raw(65534)).expect("setuid");
    let unprivileged_allowed = std::fs::read_to_string("/proc/sys/vm/unprivileged_userfaultfd")
        .map(|v| v.trim() == "1")
        .unwrap_or(false);

    match UffdBuilder::new().policy(CreatePolicy::DeviceOnly).create() {
        Err(Error::Device(errno)) => assert_eq!(errno, Errno::ACCESS),
        other => panic!("DeviceOnly without permission: {other:?}"),
    }
    if unprivileged_allowed {
        test_support::skip(
            &test_path(module_path!(), UNPRIVILEGED_TEST),
            "vm.unprivileged_userfaultfd is 1: the refused-syscall cases cannot be shown",
        );
    } else {
        match UffdBuilder::new()
            .policy(CreatePolicy::SyscallOnly)
            .create()
        {
            Err(err @ Error::Syscall(Errno::PERM)) => {
                assert!(err.to_string().contains("user-mode-only"), "{err}");
            }
            other => panic!("SyscallOnly without privilege: {other:?}"),
        }
        match UffdBuilder::new().create() {
            Err(
                err @ Error::NoPath {
                    device: Errno::ACCESS,
                    syscall: Errno::PERM,
                },
            ) => {
                let text = err.to_string();
                assert!(text.contains("/dev/userfaultfd"), "{text}");
                assert!(text.contains("userfaultfd(2)"), "{text}");
            }
            other => panic!("DeviceThenSyscall without privilege: {other:?}"),
        }
    }
    // User-mode-only is allowed unprivileged: the fallback takes the syscall.
    let uffd = UffdBuilder::new()
        .user_mode_only(true)
        .create()
        .expect("user-mode-only fallback");
    assert_eq!(uffd.origin(), Origin::Syscall);
    assert_works(&uffd);
    println!("unprivileged child: all checked");
}

#[test]
fn without_privilege_the_policy_decides() {
    if child_role().as_deref() == Some("unprivileged") {
        unprivileged_child();
        return;
    }
    let child = ChildProc::spawn(module_path!(), UNPRIVILEGED_TEST, "unprivileged");
    let (status, output) = child.finish();
    assert!(status.success(), "child failed: {status}\n{output}");
    assert!(
        output.contains("unprivileged child: all checked"),
        "{output}"
    );
}
