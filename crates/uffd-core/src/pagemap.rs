//! `PAGEMAP_SCAN`: which pages of a range were written since write protection was armed
//! (with `WP_ASYNC`), optionally re-arming it atomically.

use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{Mode, OFlags};
use uffd_sys as sys;

use crate::{Error, PageSize, Range};

/// Reads `/proc/<pid>/pagemap` of one process with `PAGEMAP_SCAN`.
#[derive(Debug)]
pub struct PagemapScanner {
    pagemap: OwnedFd,
    regions: Vec<sys::page_region>,
}

impl PagemapScanner {
    /// Opens the pagemap of process `pid`, or of this process with `None`.
    ///
    /// # Errors
    ///
    /// [`Error::PagemapOpen`] with the path and errno (`ENOENT` for no such process, `EACCES`
    /// without the right to read its memory).
    ///
    /// # References
    ///
    /// - [Examining page tables with pagemap][kernel-pagemap] in the kernel's admin guide, on
    ///   the `PAGEMAP_SCAN` ioctl
    ///
    /// [kernel-pagemap]: https://docs.kernel.org/admin-guide/mm/pagemap.html
    pub fn open(pid: Option<u32>) -> Result<Self, Error> {
        let path = match pid {
            Some(pid) => format!("/proc/{pid}/pagemap"),
            None => "/proc/self/pagemap".to_string(),
        };
        let pagemap = rustix::fs::open(&path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|errno| Error::PagemapOpen { path, errno })?;
        Ok(PagemapScanner {
            pagemap,
            regions: vec![sys::page_region::default(); 512],
        })
    }

    /// Appends to `out` the written runs of pages inside `range`, sorted and coalesced.
    ///
    /// With `reprotect`, the written pages are write-protected again in the same walk, so a
    /// write racing the scan is either reported now or left for the next scan, never lost;
    /// the range must then be registered WP with `WP_ASYNC` (else EPERM, from
    /// `PM_SCAN_CHECK_WPASYNC`).
    ///
    /// # Errors
    ///
    /// [`Error::PagemapScan`] when the ioctl fails (`EPERM` with `reprotect` on memory not
    /// registered WP with `WP_ASYNC`, `ENOTTY` for a kernel without `PAGEMAP_SCAN`, before
    /// 6.7); [`Error::Range`] if the kernel reports a run not aligned to `page_size`.
    ///
    /// # References
    ///
    /// - [Examining page tables with pagemap][kernel-pagemap] in the kernel's admin guide, on
    ///   the `PAGEMAP_SCAN` ioctl
    /// - [Userfaultfd][kernel-userfaultfd] in the kernel's admin guide, on `UFFD_FEATURE_WP_ASYNC`
    ///
    /// [kernel-pagemap]: https://docs.kernel.org/admin-guide/mm/pagemap.html
    /// [kernel-userfaultfd]: https://docs.kernel.org/admin-guide/mm/userfaultfd.html
    pub fn written(
        &mut self,
        range: Range,
        page_size: PageSize,
        reprotect: bool,
        out: &mut Vec<Range>,
    ) -> Result<(), Error> {
        let flags = if reprotect {
            sys::PM_SCAN_WP_MATCHING | sys::PM_SCAN_CHECK_WPASYNC
        } else {
            0
        };
        let mut start = range.start();
        while start < range.end() {
            let mut arg = sys::pm_scan_arg {
                flags,
                start,
                end: range.end(),
                category_mask: sys::PAGE_IS_WRITTEN,
                return_mask: sys::PAGE_IS_WRITTEN,
                ..Default::default()
            };
            let n = crate::sys::pagemap_scan(self.pagemap.as_fd(), &mut arg, &mut self.regions)
                .map_err(|errno| Error::PagemapScan { range, errno })?;
            for region in &self.regions[..n] {
                push_coalesced(out, region.start, region.end, page_size)?;
            }
            // The walk stops early when the region buffer fills; resume where it stopped.
            if arg.walk_end <= start {
                break;
            }
            start = arg.walk_end;
        }
        Ok(())
    }
}

fn push_coalesced(
    out: &mut Vec<Range>,
    start: u64,
    end: u64,
    page_size: PageSize,
) -> Result<(), Error> {
    if let Some(last) = out.last_mut().filter(|last| last.end() == start) {
        *last = Range::new(last.start(), end - last.start(), page_size)?;
        return Ok(());
    }
    out.push(Range::new(start, end - start, page_size)?);
    Ok(())
}
