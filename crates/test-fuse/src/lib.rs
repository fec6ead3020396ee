#![doc = include_str!("../README.md")]

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fuser::{BackgroundSession, MountOption, SessionACL};
use rustix::mount::{MountFlags, UnmountFlags};

mod fs;
mod inject;

pub use inject::{Fault, Injection, ReadCounts};

/// Where the kernel lists FUSE connections (the `fusectl` file system), to abort one.
const FUSECTL: &str = "/sys/fs/fuse/connections";

/// A mount could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The backing directory is not a readable directory.
    #[error("the backing directory {path} cannot be used: {source}")]
    Backing {
        /// The directory given.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `mount(2)` (or opening `/dev/fuse`) failed.
    #[error("mounting FUSE on {path}: {source}")]
    Mount {
        /// The mount point given.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// How the file system is mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountOptions {
    /// The readahead the kernel is asked to use, in bytes (at least one byte; the kernel
    /// rounds to pages). Default 4096: a page fault on a mapping reads that page alone.
    pub max_readahead: u32,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            max_readahead: 4096,
        }
    }
}

/// Whether this process can mount FUSE here (root, `/dev/fuse` openable); if not, reports
/// `test` as skipped with the reason.
pub fn fuse_or_skip(test: &str) -> bool {
    if !rustix::process::geteuid().is_root() {
        test_support::skip(test, "mounting FUSE without fusermount needs root");
        return false;
    }
    let device = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse");
    match device {
        Ok(_) => true,
        Err(e) => {
            test_support::skip(test, &format!("/dev/fuse cannot be opened: {e}"));
            false
        }
    }
}

/// A mounted pass-through file system; unmounted on drop (held reads are served first).
///
/// Drop it before removing the directories it uses (declare it after the test's `TestDir`).
pub struct FuseMount {
    mountpoint: PathBuf,
    backing: PathBuf,
    rules: Arc<inject::Rules>,
    session: Option<BackgroundSession>,
}

impl std::fmt::Debug for FuseMount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FuseMount")
            .field("mountpoint", &self.mountpoint)
            .field("backing", &self.backing)
            .finish()
    }
}

impl FuseMount {
    /// Mounts the files of `backing` on `mountpoint` (an existing, empty directory) with the
    /// default [`MountOptions`].
    ///
    /// # Errors
    ///
    /// [`MountError`] naming the directory that could not be used.
    pub fn mount(backing: &Path, mountpoint: &Path) -> Result<FuseMount, MountError> {
        FuseMount::mount_with(backing, mountpoint, MountOptions::default())
    }

    /// [`FuseMount::mount`] with `options`.
    ///
    /// # Errors
    ///
    /// [`MountError`] naming the directory that could not be used.
    pub fn mount_with(
        backing: &Path,
        mountpoint: &Path,
        options: MountOptions,
    ) -> Result<FuseMount, MountError> {
        let backing_error = |source| MountError::Backing {
            path: backing.to_path_buf(),
            source,
        };
        let backing = backing.canonicalize().map_err(backing_error)?;
        std::fs::read_dir(&backing).map_err(backing_error)?;
        let rules = Arc::new(inject::Rules::default());
        let server = fs::PassThrough::new(backing.clone(), rules.clone(), options.max_readahead);
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            MountOption::FSName("uffd-test-fuse".into()),
            MountOption::RO,
        ];
        config.acl = SessionACL::Owner;
        let session = fuser::spawn_mount(server, mountpoint, &config).map_err(|source| {
            MountError::Mount {
                path: mountpoint.to_path_buf(),
                source,
            }
        })?;
        Ok(FuseMount {
            mountpoint: mountpoint.to_path_buf(),
            backing,
            rules,
            session: Some(session),
        })
    }

    /// The path of file `name` through the mount.
    pub fn path(&self, name: &str) -> PathBuf {
        self.mountpoint.join(name)
    }

    /// The path of file `name` in the backing directory (write the test's files there).
    pub fn backing_path(&self, name: &str) -> PathBuf {
        self.backing.join(name)
    }

    /// Installs a rule: `fault` acts on reads of file `name` overlapping the byte `range`.
    /// Rules are tried in installation order; the first active one that matches acts.
    pub fn inject(&self, name: &str, range: Range<u64>, fault: Fault) -> Injection {
        self.rules.add(name, range, fault)
    }

    /// Every read the mount answered so far, whatever rule met it.
    pub fn counts(&self) -> ReadCounts {
        *inject::lock(&self.rules.totals)
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        self.rules.release_all();
        // The connection's number is the mount's device number (FUSE mounts are major 0).
        let connection = rustix::fs::stat(&self.mountpoint).ok().map(|st| st.st_dev);
        let unmounted = rustix::mount::unmount(&self.mountpoint, UnmountFlags::empty()).is_ok();
        let Some(session) = self.session.take() else {
            return;
        };
        // Busy (a process still has a file open or mapped, e.g. after a panic): detach the
        // mount and abort the connection, so every later read fails and the server's thread
        // ends instead of waiting for a process that may never close the file.
        let ended = unmounted || {
            let _ = rustix::mount::unmount(&self.mountpoint, UnmountFlags::DETACH);
            connection.is_some_and(abort)
        };
        if ended {
            let _ = session.join();
        }
        // Otherwise the server's thread is left to end with the connection.
    }
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
