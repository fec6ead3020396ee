//! Prefetch precision and recall need to know which prefetched pages the guest touched. A
//! prefetched page never faults, so only the accessed bits of the page tables (and, for a KVM
//! guest, of the EPT, reached through the MMU notifiers) can tell; the one per-page interface
//! the kernel gives userspace to them is idle page tracking
//! (`/sys/kernel/mm/page_idle/bitmap`, by PFN from `/proc/PID/pagemap`). It does not cover
//! hugetlb pages. Where it cannot answer, the figures are unknown, with the reason: never a
//! guess.
//!
//! The reading itself (mark each prefetched page idle right after its install, read the
//! bitmap back when the figures are asked for) is not built yet: no kernel this daemon is
//! tested on has idle page tracking (`CONFIG_IDLE_PAGE_TRACKING`), so it could not be tested
//! against a real kernel. Until it is, every answer is "unknown" with the reason that applies.

use std::path::Path;

use super::cli::PrefetchMode;
use super::stats::PrefetchAccuracy;

/// The kernel's idle page bitmap.
const PAGE_IDLE_BITMAP: &str = "/sys/kernel/mm/page_idle/bitmap";

/// Base pages: anything larger is hugetlb memory.
const BASE_PAGE: u64 = 4096;

/// Precision and recall for a session prefetching with `mode` on a guest of `page_size`
/// pages, or why they are unknown.
pub(crate) fn prefetch_accuracy(mode: PrefetchMode, page_size: u64) -> PrefetchAccuracy {
    if mode == PrefetchMode::None {
        return PrefetchAccuracy::unknown("no prefetch ran (--prefetch none)");
    }
    if page_size > BASE_PAGE {
        return PrefetchAccuracy::unknown(format!(
            "hugetlb guest memory ({} KiB pages): idle page tracking, the kernel's only \
             per-page view of accessed bits, does not cover hugetlb",
            page_size >> 10
        ));
    }
    if !Path::new(PAGE_IDLE_BITMAP).exists() {
        return PrefetchAccuracy::unknown(format!(
            "no idle page tracking in this kernel ({PAGE_IDLE_BITMAP} absent: \
             CONFIG_IDLE_PAGE_TRACKING off); without accessed bits a used prefetched page \
             cannot be told from an unused one"
        ));
    }
    PrefetchAccuracy::unknown(format!(
        "{PAGE_IDLE_BITMAP} is there but not read yet (the reading is not built: no test \
         kernel had idle page tracking)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_why() {
        let none = prefetch_accuracy(PrefetchMode::None, 4096);
        assert!(none.unknown.unwrap().contains("no prefetch"));
        let huge = prefetch_accuracy(PrefetchMode::All, 2 << 20);
        assert!(huge.unknown.unwrap().contains("hugetlb"));
        assert_eq!(huge.precision, None);
        assert_eq!(huge.recall, None);
    }
}
