//! The FUSE server: a flat, read-only directory whose files are the backing directory's
//! regular files, each read answered from the backing file unless a rule says otherwise.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyEmpty, ReplyEntry,
    ReplyOpen, Request,
};

use super::rules::{Rules, Verdict, answer, lock};

/// How long the kernel may keep names and attributes: the backing files do not change during a
/// test, and a long time keeps `fstat` (the source checks one per piece) off the server.
const TTL: Duration = Duration::from_secs(3600);

/// The server's state, shared with the mount's handle.
pub(crate) struct PassThrough {
    pub(crate) backing: PathBuf,
    pub(crate) rules: Arc<Rules>,
    pub(crate) max_readahead: u32,
    /// Names looked up so far; inode `i + 2` is `names[i]` (1 is the root).
    names: Mutex<Vec<String>>,
    /// Open files by handle.
    open: Mutex<HashMap<u64, (String, Arc<File>)>>,
    next_handle: AtomicU64,
}

impl PassThrough {
    pub(crate) fn new(backing: PathBuf, rules: Arc<Rules>, max_readahead: u32) -> Self {
        PassThrough {
            backing,
            rules,
            max_readahead,
            names: Mutex::new(Vec::new()),
            open: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
        }
    }

    fn name_of(&self, ino: INodeNo) -> Option<String> {
        let index = usize::try_from(ino.0.checked_sub(2)?).ok()?;
        lock(&self.names).get(index).cloned()
    }

    fn inode_of(&self, name: &str) -> INodeNo {
        let mut names = lock(&self.names);
        let index = names.iter().position(|n| n == name).unwrap_or_else(|| {
            names.push(name.to_string());
            names.len() - 1
        });
        INodeNo(index as u64 + 2)
    }

    /// The backing file's attributes, read-only, under inode `ino`.
    fn file_attr(&self, ino: INodeNo, name: &str) -> Result<FileAttr, Errno> {
        let meta = std::fs::metadata(self.backing.join(name)).map_err(|_| Errno::ENOENT)?;
        if !meta.is_file() {
            return Err(Errno::ENOENT);
        }
        Ok(attr(ino, &meta, FileType::RegularFile, 0o444))
    }
}

fn time(secs: i64, nanos: i64) -> SystemTime {
    let since = Duration::new(secs.unsigned_abs(), u32::try_from(nanos).unwrap_or(0));
    if secs >= 0 {
        UNIX_EPOCH + since
    } else {
        UNIX_EPOCH - since
    }
}

fn attr(ino: INodeNo, meta: &Metadata, kind: FileType, perm: u16) -> FileAttr {
    FileAttr {
        ino,
        size: meta.len(),
        blocks: meta.blocks(),
        atime: time(meta.atime(), meta.atime_nsec()),
        mtime: time(meta.mtime(), meta.mtime_nsec()),
        ctime: time(meta.ctime(), meta.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind,
        perm,
        nlink: 1,
        uid: meta.uid(),
        gid: meta.gid(),
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl Filesystem for PassThrough {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Take what the kernel allows when it allows less than asked.
        if let Err(nearest) = config.set_max_readahead(self.max_readahead) {
            let _ = config.set_max_readahead(nearest);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(name) = name.to_str().filter(|_| parent == INodeNo::ROOT) else {
            return reply.error(Errno::ENOENT);
        };
        let ino = self.inode_of(name);
        match self.file_attr(ino, name) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if ino == INodeNo::ROOT {
            return match std::fs::metadata(&self.backing) {
                Ok(meta) => reply.attr(&TTL, &attr(ino, &meta, FileType::Directory, 0o555)),
                Err(_) => reply.error(Errno::EIO),
            };
        }
        let Some(name) = self.name_of(ino) else {
            return reply.error(Errno::ENOENT);
        };
        match self.file_attr(ino, &name) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        let Some(name) = self.name_of(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let Ok(file) = File::open(self.backing.join(&name)) else {
            return reply.error(Errno::EIO);
        };
        let handle = self.next_handle.fetch_add(1, Ordering::Relaxed);
        lock(&self.open).insert(handle, (name, Arc::new(file)));
        // No KEEP_CACHE: a file opened again starts with an empty page cache.
        reply.opened(FileHandle(handle), FopenFlags::empty());
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some((name, file)) = lock(&self.open).get(&fh.0).cloned() else {
            return reply.error(Errno::EBADF);
        };
        lock(&self.rules.totals).reads += 1;
        let (verdict, reply) = self.rules.apply(&name, (&file, offset, size), reply);
        let mut totals = lock(&self.rules.totals);
        match (verdict, reply) {
            (Verdict::Held, _) => totals.stalled += 1,
            (Verdict::Fail, Some(reply)) => {
                totals.failed += 1;
                reply.error(Errno::EIO);
            }
            (Verdict::Short(len), Some(reply)) => {
                totals.shortened += 1;
                answer(reply, &file, offset, size, Some(len));
            }
            (_, Some(reply)) => {
                if answer(reply, &file, offset, size, None).is_some() {
                    totals.served += 1;
                } else {
                    totals.failed += 1;
                }
            }
            (_, None) => unreachable!("only a held read keeps its reply"),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        lock(&self.open).remove(&fh.0);
        reply.ok();
    }
}
