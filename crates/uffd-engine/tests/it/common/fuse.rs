//! A VMM served by the engine from an image read through the test FUSE file system
//! (`test-fuse`), so that storage failures reach the engine the way real ones do: through the
//! page cache of a mapped file, inside the kernel's COPY.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use snapshot_format::LayeredSource;
use test_fuse::FuseMount;
use test_vmm::BLOCK;
use uffd_engine::EngineConfig;

use crate::common::vmm::{Pages, Served, TestDir, image_bytes, serve_from};

/// The image's name in the mount.
pub const IMAGE: &str = "memory";

/// A vmm served from an image on a FUSE mount. Fields drop in order: the vmm and the engine
/// (which has the image open and mapped), then the mount, then its directories.
pub struct FuseServed {
    /// The vmm, the engine and the handshake's test directory.
    pub served: Served,
    /// The mount the image is read through; rules go here.
    pub mount: FuseMount,
    /// The backing directory and the mount point.
    pub dir: TestDir,
}

impl FuseServed {
    /// The byte range of the 4 KiB block in the middle of guest page `page` (the block a
    /// rule aims at: any read the engine makes for that page reads it).
    pub fn block_of(&self, page: u64) -> std::ops::Range<u64> {
        let p = self.served.page;
        let start = page * p + (p / 2) / BLOCK * BLOCK;
        start..start + BLOCK
    }
}

/// Mounts the test FUSE file system, spawns a vmm with `regions` of `pages`, writes the image
/// in the backing directory and starts the engine on it through the mount. `None` (after a
/// SKIP line) where FUSE cannot be mounted.
pub fn serve_over_fuse(
    test: &str,
    pages: Pages,
    regions: Vec<u64>,
    config: EngineConfig,
) -> Option<FuseServed> {
    if !test_fuse::fuse_or_skip(test) {
        return None;
    }
    let dir = TestDir::new(&format!("{test}-fuse"));
    let (backing, mountpoint) = (dir.join("backing"), dir.join("mnt"));
    std::fs::create_dir(&backing).expect("the backing directory");
    std::fs::create_dir(&mountpoint).expect("the mount point");
    let mount = FuseMount::mount(&backing, &mountpoint).expect("mount the test FUSE");
    let served = serve_from(test, pages, regions, config, |_, size| {
        std::fs::write(mount.backing_path(IMAGE), &**image_bytes(size)).expect("the image");
        Arc::new(
            LayeredSource::open_memory_file(&mount.path(IMAGE), BLOCK)
                .expect("open the image through the mount"),
        )
    });
    Some(FuseServed { served, mount, dir })
}
