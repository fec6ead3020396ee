//! Creating a userfaultfd (device or syscall, by policy), negotiating its API, probing the
//! kernel, and adopting an fd another process created.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::mm::UserfaultfdFlags;
use uffd_sys as sys;

use crate::{Error, Features, Ioctls, Uffd};

/// Which kernel interface creates the fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CreatePolicy {
    /// `/dev/userfaultfd` + `USERFAULTFD_IOC_NEW` (6.1+; gated by the device's permissions;
    /// traps kernel-originated faults such as KVM's).
    DeviceOnly,
    /// The `userfaultfd(2)` syscall (needs privilege unless user-mode-only).
    SyscallOnly,
    /// The device, falling back to the syscall when the device is absent or not permitted.
    #[default]
    DeviceThenSyscall,
}

/// How a [`Uffd`] came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Created through `/dev/userfaultfd`.
    Device,
    /// Created through `userfaultfd(2)`.
    Syscall,
    /// Received from another process ([`Uffd::adopt`]).
    Adopted,
}

/// What `UFFDIO_API` reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiInfo {
    /// Features enabled on this fd: those asked for, plus `WP_UNPOPULATED` which the kernel
    /// turns on with `WP_ASYNC`.
    pub enabled: Features,
    /// Every feature the kernel supports (the kernel reports all of them, not only those
    /// enabled). Bits this crate does not name are kept.
    pub supported: Features,
    /// ioctls valid on the fd itself.
    pub ioctls: Ioctls,
}

/// Builds a [`Uffd`]: creation path, fd flags, and the features to enable.
#[derive(Debug, Clone, Copy)]
pub struct UffdBuilder {
    policy: CreatePolicy,
    non_blocking: bool,
    close_on_exec: bool,
    user_mode_only: bool,
    features: Features,
}

impl Default for UffdBuilder {
    fn default() -> Self {
        UffdBuilder::new()
    }
}

impl UffdBuilder {
    /// Device-then-syscall, non-blocking, close-on-exec, kernel faults included, no features.
    pub const fn new() -> Self {
        UffdBuilder {
            policy: CreatePolicy::DeviceThenSyscall,
            non_blocking: true,
            close_on_exec: true,
            user_mode_only: false,
            features: Features::empty(),
        }
    }

    /// Which creation path to use.
    pub const fn policy(mut self, policy: CreatePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// `O_NONBLOCK`: reads answer an empty batch instead of blocking.
    pub const fn non_blocking(mut self, on: bool) -> Self {
        self.non_blocking = on;
        self
    }

    /// `O_CLOEXEC`.
    pub const fn close_on_exec(mut self, on: bool) -> Self {
        self.close_on_exec = on;
        self
    }

    /// `UFFD_USER_MODE_ONLY`: unprivileged, but misses faults raised inside the kernel (KVM).
    pub const fn user_mode_only(mut self, on: bool) -> Self {
        self.user_mode_only = on;
        self
    }

    /// Features to enable with `UFFDIO_API`.
    pub const fn features(mut self, features: Features) -> Self {
        self.features = features;
        self
    }

    fn flags(&self) -> u32 {
        let mut flags = 0;
        if self.close_on_exec {
            flags |= OFlags::CLOEXEC.bits();
        }
        if self.non_blocking {
            flags |= OFlags::NONBLOCK.bits();
        }
        if self.user_mode_only {
            flags |= sys::UFFD_USER_MODE_ONLY;
        }
        flags
    }

    /// Creates the fd without calling `UFFDIO_API`.
    fn open(&self) -> Result<(OwnedFd, Origin), Error> {
        match self.policy {
            CreatePolicy::DeviceOnly => open_device(self.flags()).map_err(Error::Device),
            CreatePolicy::SyscallOnly => open_syscall(self.flags()).map_err(Error::Syscall),
            CreatePolicy::DeviceThenSyscall => match open_device(self.flags()) {
                Ok(fd) => Ok(fd),
                Err(device @ (Errno::NOENT | Errno::ACCESS | Errno::PERM | Errno::NODEV)) => {
                    open_syscall(self.flags()).map_err(|syscall| Error::NoPath { device, syscall })
                }
                Err(other) => Err(Error::Device(other)),
            },
        }
    }

    /// Creates the fd and enables the features with `UFFDIO_API`.
    ///
    /// If the kernel refuses the features, the error names the ones it lacks (found by a probe
    /// on a throwaway fd, since `UFFDIO_API` can be called only once per fd).
    ///
    /// # Errors
    ///
    /// - [`Error::Device`]: opening `/dev/userfaultfd` or its `USERFAULTFD_IOC_NEW` failed
    ///   ([`CreatePolicy::DeviceOnly`], or an unexpected errno with the fallback policy).
    /// - [`Error::Syscall`]: `userfaultfd(2)` failed ([`CreatePolicy::SyscallOnly`]); `EPERM`
    ///   when `vm.unprivileged_userfaultfd` is 0 and the caller lacks `CAP_SYS_PTRACE`.
    /// - [`Error::NoPath`]: with [`CreatePolicy::DeviceThenSyscall`], both paths failed.
    /// - [`Error::UnsupportedFeatures`]: the kernel lacks some of the features asked for.
    /// - [`Error::Api`]: `UFFDIO_API` failed otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// use uffd_core::{CreatePolicy, Features, Origin, UffdBuilder};
    ///
    /// # fn main() -> Result<(), uffd_core::Error> {
    /// let uffd = UffdBuilder::new()
    ///     .policy(CreatePolicy::DeviceThenSyscall)
    ///     .features(Features::EVENT_REMOVE | Features::THREAD_ID)
    ///     .create()?;
    /// assert!(uffd.features().contains(Features::EVENT_REMOVE));
    /// assert_ne!(uffd.origin(), Origin::Adopted);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # References
    ///
    /// - [userfaultfd(2)][userfaultfd], and [UFFDIO_API(2const)][uffdio_api]
    /// - [Userfaultfd][kernel-userfaultfd] in the kernel's admin guide, on `/dev/userfaultfd`
    ///   and the feature handshake
    ///
    /// [userfaultfd]: https://man7.org/linux/man-pages/man2/userfaultfd.2.html
    /// [uffdio_api]: https://man7.org/linux/man-pages/man2/UFFDIO_API.2const.html
    /// [kernel-userfaultfd]: https://docs.kernel.org/admin-guide/mm/userfaultfd.html
    pub fn create(&self) -> Result<Uffd, Error> {
        let (fd, origin) = self.open()?;
        let mut api = sys::uffdio_api {
            api: sys::UFFD_API,
            features: self.features.bits(),
            ioctls: 0,
        };
        if let Err(errno) = crate::sys::uffdio(fd.as_fd(), &mut api) {
            // EINVAL is also the answer to an unknown feature bit: ask a throwaway fd which.
            let probe = if errno == Errno::INVAL {
                Uffd::probe(self.policy).ok()
            } else {
                None
            };
            if let Some(probe) = probe.filter(|p| !p.supported.contains(self.features)) {
                return Err(Error::UnsupportedFeatures {
                    missing: self.features - probe.supported,
                    supported: probe.supported,
                });
            }
            return Err(Error::Api {
                requested: self.features,
                errno,
            });
        }
        let info = ApiInfo {
            enabled: enabled_features(self.features),
            supported: Features::from_bits_retain(api.features),
            ioctls: Ioctls::from_bits_retain(api.ioctls),
        };
        Ok(Uffd::from_parts(fd, info.enabled, origin, Some(info)))
    }
}

fn enabled_features(requested: Features) -> Features {
    if requested.contains(Features::WP_ASYNC) {
        requested | Features::WP_UNPOPULATED
    } else {
        requested
    }
}

fn open_device(flags: u32) -> Result<(OwnedFd, Origin), Errno> {
    let dev = rustix::fs::open(
        "/dev/userfaultfd",
        OFlags::RDWR | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let raw = crate::sys::ioc_new(dev.as_fd(), flags)?;
    // SAFETY: USERFAULTFD_IOC_NEW just returned `raw` as a new fd of this process that nothing
    // else owns.
    Ok((unsafe { OwnedFd::from_raw_fd(raw) }, Origin::Device))
}

fn open_syscall(flags: u32) -> Result<(OwnedFd, Origin), Errno> {
    // SAFETY: creating a userfaultfd has no memory-safety precondition; rustix marks it unsafe
    // because the fd can later change this process's memory, which every operation of `Uffd`
    // confines to explicitly registered ranges.
    let fd = unsafe { rustix::mm::userfaultfd(UserfaultfdFlags::from_bits_retain(flags)) }?;
    Ok((fd, Origin::Syscall))
}

impl Uffd {
    /// What the kernel supports, learnt on a throwaway fd (`UFFDIO_API` with no features).
    ///
    /// # Errors
    ///
    /// Those of [`UffdBuilder::create`] for the throwaway fd.
    ///
    /// # References
    ///
    /// - [UFFDIO_API(2const)][uffdio_api]
    ///
    /// [uffdio_api]: https://man7.org/linux/man-pages/man2/UFFDIO_API.2const.html
    pub fn probe(policy: CreatePolicy) -> Result<ApiInfo, Error> {
        let builder = UffdBuilder::new().policy(policy);
        let uffd = builder.create()?;
        Ok(uffd.api.expect("a created fd carries its API answer"))
    }

    /// Takes ownership of a userfaultfd created by another process (received over a Unix
    /// socket) whose `UFFDIO_API` was already called there, with the features it enabled.
    ///
    /// The API call cannot be repeated on the fd. Its state is read from
    /// `/proc/self/fdinfo`: an fd whose `UFFDIO_API` was never called is refused, and the
    /// features the creator enabled become [`Uffd::features`]; where fdinfo cannot be read,
    /// the caller's `features` are taken as declared (for a Firecracker VMM,
    /// `EVENT_REMOVE`). A blocking fd is made non-blocking (the flag belongs to the open file
    /// description the creator shares, which it gave away to be read here): the engine
    /// polls before it reads, and two readers woken by one message would otherwise leave one
    /// blocked in `read(2)` for good. [`Uffd::was_blocking`] tells whether that happened.
    ///
    /// # Errors
    ///
    /// [`Error::NotUserfaultfd`] when `/proc/self/fd` shows `fd` is something else;
    /// [`Error::ApiNotCalled`] for a userfaultfd whose `UFFDIO_API` was never called;
    /// [`Error::SetNonBlocking`] if `O_NONBLOCK` cannot be set. The fd is closed on error.
    ///
    /// # References
    ///
    /// - [userfaultfd(2)][userfaultfd], on passing the fd to another process
    ///
    /// [userfaultfd]: https://man7.org/linux/man-pages/man2/userfaultfd.2.html
    pub fn adopt(fd: OwnedFd, features: Features) -> Result<Uffd, Error> {
        let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let what = std::fs::read_link(&link)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|e| format!("unreadable ({e})"));
        if what != "anon_inode:[userfaultfd]" {
            return Err(Error::NotUserfaultfd {
                fd: fd.as_raw_fd(),
                what,
            });
        }
        let features = match fdinfo_features(fd.as_fd()) {
            Some(FdinfoFeatures::NoApi) => {
                return Err(Error::ApiNotCalled { fd: fd.as_raw_fd() });
            }
            Some(FdinfoFeatures::Enabled(actual)) => actual,
            None => features,
        };
        let flags = rustix::fs::fcntl_getfl(&fd).map_err(|errno| Error::SetNonBlocking {
            fd: fd.as_raw_fd(),
            errno,
        })?;
        let was_blocking = !flags.contains(OFlags::NONBLOCK);
        if was_blocking {
            rustix::fs::fcntl_setfl(&fd, flags | OFlags::NONBLOCK).map_err(|errno| {
                Error::SetNonBlocking {
                    fd: fd.as_raw_fd(),
                    errno,
                }
            })?;
        }
        let mut uffd = Uffd::from_parts(fd, features, Origin::Adopted, None);
        uffd.was_blocking = was_blocking;
        Ok(uffd)
    }
}

/// The kernel's internal "API called" bit in the features `/proc/<pid>/fdinfo` shows for a
/// userfaultfd (`UFFD_FEATURE_INITIALIZED`, never a user-visible feature).
const FEATURE_INITIALIZED: u64 = 1 << 31;

/// A userfaultfd's state as its fdinfo shows it.
enum FdinfoFeatures {
    /// `UFFDIO_API` was never called.
    NoApi,
    /// `UFFDIO_API` was called and enabled these features.
    Enabled(Features),
}

/// Reads the `API:` line of the fd's fdinfo (`<api>:<features>:<ioctls>`, hex); `None` if
/// it cannot be read or parsed.
fn fdinfo_features(fd: std::os::fd::BorrowedFd<'_>) -> Option<FdinfoFeatures> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    let api = info.lines().find_map(|l| l.strip_prefix("API:"))?;
    let features = api.trim().split(':').nth(1)?;
    let features = u64::from_str_radix(features, 16).ok()?;
    if features & FEATURE_INITIALIZED == 0 {
        return Some(FdinfoFeatures::NoApi);
    }
    Some(FdinfoFeatures::Enabled(Features::from_bits_truncate(
        features & !FEATURE_INITIALIZED,
    )))
}
