//! Graduation's last sweep: after the bulk prefetch, every page still Missing is either a hole
//! in the snapshot (left to the kernel's zero fill once the ranges are unregistered) or is
//! installed here, from bytes assembled page by page, with the retries of a demand fault. A page
//! that cannot be installed fails graduation: the caller keeps the uffd registered and kills or
//! leaves the VMM, which never reads zeros in place of snapshot bytes.
//!
//! Why a sweep: prefetch installs whole source pieces at most a chunk long and leaves to demand
//! faults what it cannot copy in one piece (a 2 MiB page over 4 KiB blocks, a run that crosses
//! pieces) or what failed to read. Under graduation no demand fault will come for those pages.

use std::time::{Duration, Instant};

use page_tracker::{Access, PageState};
use uffd_core::Status;

use crate::metrics::Metrics;
use crate::retry::jitter;
use crate::shared::Shared;
use crate::source::{Extent, PageSource, SourceError};
use crate::{EngineError, EngineExit};

/// How long graduation waits for a page another attempt (a demand fault, the retry of a failed
/// one) holds before it calls the page lost: far longer than any install takes.
const CLAIM_PATIENCE: Duration = Duration::from_secs(30);

/// What the sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Sweep {
    /// Pages installed by the sweep.
    pub(crate) installed: u64,
    /// Pages left Missing because the snapshot holds no bytes for them (they read zeros).
    pub(crate) holes: u64,
    /// Whether an install found the VMM's memory gone (nothing left to protect).
    pub(crate) vmm_gone: bool,
}

/// Installs every Missing page that is not a hole, while the readers go on serving.
pub(crate) fn sweep(shared: &Shared) -> Result<Sweep, EngineError> {
    let page_bytes = shared.page_bytes();
    let pages = shared.tracker.page_count();
    let mut buf = vec![0u8; page_bytes as usize];
    let mut sweep = Sweep::default();
    for page in 0..pages {
        if shared.tracker.state(page).ok() != Some(PageState::Missing) {
            continue;
        }
        match install_page(shared, page, &mut buf)? {
            Installed::Page => sweep.installed += 1,
            Installed::Hole => sweep.holes += 1,
            Installed::NotMissing => {}
            Installed::VmmGone => {
                sweep.vmm_gone = true;
                return Ok(sweep);
            }
        }
    }
    Ok(sweep)
}

enum Installed {
    Page,
    Hole,
    /// Removed, installed or zapped by someone else meanwhile: not the sweep's to fill.
    NotMissing,
    VmmGone,
}

fn install_page(shared: &Shared, page: u64, buf: &mut [u8]) -> Result<Installed, EngineError> {
    let page_bytes = shared.page_bytes();
    let offset = page * page_bytes;
    let policy = shared.config.retry;
    let mut errors: Vec<String> = Vec::new();
    let waiting_since = Instant::now();
    loop {
        let failed = |errors: &mut Vec<String>, error: String| -> Result<(), EngineError> {
            errors.push(error);
            if errors.len() as u32 > policy.max_cycles {
                return Err(EngineError::Graduation {
                    page_offset: offset,
                    errors: std::mem::take(errors),
                });
            }
            Metrics::add(&shared.metrics.retried, 1);
            std::thread::sleep(policy.backoff + jitter(policy.jitter));
            Ok(())
        };
        if shared.tracker.state(page).ok() != Some(PageState::Missing) {
            return Ok(Installed::NotMissing);
        }
        match is_hole(&*shared.source, offset, page_bytes) {
            Ok(true) => return Ok(Installed::Hole),
            Ok(false) => {}
            Err(e) => {
                failed(&mut errors, e.0)?;
                continue;
            }
        }
        let Ok(Some(claim)) = shared.tracker.try_claim(page) else {
            // A demand fault or its retry holds the page; it ends in an install or a wake.
            if waiting_since.elapsed() > CLAIM_PATIENCE {
                errors.push(format!("the page stayed claimed for {CLAIM_PATIENCE:?}"));
                return Err(EngineError::Graduation {
                    page_offset: offset,
                    errors,
                });
            }
            std::thread::sleep(shared.config.defer_pacing);
            continue;
        };
        // Outside every lock, as for a demand fault.
        if let Err(e) = shared.source.read_into(offset, buf) {
            drop(claim);
            failed(&mut errors, e.0)?;
            continue;
        }
        let Some(dst) = shared.host_range(page, 1) else {
            // Unmapped by the VMM: nothing to install into, nothing to read zeros.
            return Ok(Installed::NotMissing);
        };
        let Some(settled) = shared.locks.settled() else {
            return Err(EngineError::Graduation {
                page_offset: offset,
                errors: vec!["the uffd was closed during graduation".into()],
            });
        };
        let installing = settled.gate();
        if shared.tracker.state(page).ok() != Some(PageState::Missing) {
            return Ok(Installed::NotMissing);
        }
        // Without DONTWAKE: a thread that faulted on the page meanwhile is woken by the COPY.
        let outcome = installing.copy(dst, buf, shared.copy_mode(Access::Read));
        drop(installing);
        match outcome.status {
            Status::Complete => {
                let n = claim.install_source(Access::Read);
                Metrics::add(&shared.metrics.installed_source, n);
                return Ok(Installed::Page);
            }
            // Present already (nothing else installs a claimed page, so the VMM's own mapping
            // holds it): it does not read zeros either way.
            Status::Exists => return Ok(Installed::NotMissing),
            Status::Again => {
                // An event is pending: let the readers read it, then try again.
                drop(settled);
                drop(claim);
                std::thread::sleep(shared.config.defer_pacing);
            }
            Status::Gone => {
                shared.exit(EngineExit::VmmGone);
                return Ok(Installed::VmmGone);
            }
            Status::NoMapping => return Ok(Installed::NotMissing),
            other => {
                errors.push(format!(
                    "install at {:#x} failed: {other:?} after {} of {} bytes",
                    dst.start(),
                    outcome.done,
                    outcome.requested
                ));
                return Err(EngineError::Graduation {
                    page_offset: offset,
                    errors,
                });
            }
        }
    }
}

/// Whether the source holds no bytes for `[offset, offset + len)` (zero runs only).
fn is_hole(source: &dyn PageSource, offset: u64, len: u64) -> Result<bool, SourceError> {
    let end = offset + len;
    let mut at = offset;
    while at < end {
        match source.extent(at, end - at)? {
            Extent::Zero(n) if n > 0 => at += n,
            Extent::Zero(_) => {
                return Err(SourceError(format!(
                    "source returned an empty extent at {at:#x}"
                )));
            }
            Extent::Data(_) => return Ok(false),
        }
    }
    Ok(true)
}

/// Checks that every page still Missing is a hole (after the readers stopped); returns how
/// many holes there are.
pub(crate) fn sweep_holes_only(shared: &Shared) -> Result<u64, EngineError> {
    let page_bytes = shared.page_bytes();
    let mut holes = 0;
    for page in 0..shared.tracker.page_count() {
        if shared.tracker.state(page).ok() != Some(PageState::Missing) {
            continue;
        }
        let offset = page * page_bytes;
        match is_hole(&*shared.source, offset, page_bytes) {
            Ok(true) => holes += 1,
            Ok(false) => {
                return Err(EngineError::Graduation {
                    page_offset: offset,
                    errors: vec!["the page is still missing after the sweep".into()],
                });
            }
            Err(e) => {
                return Err(EngineError::Graduation {
                    page_offset: offset,
                    errors: vec![e.0],
                });
            }
        }
    }
    Ok(holes)
}
