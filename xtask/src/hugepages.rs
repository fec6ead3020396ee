//! Reserving 2 MiB hugepages for a test or bench run, and putting the old value back.

const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";

/// While alive, `nr_hugepages` is raised; dropping it restores the value found before.
pub(crate) struct Reservation {
    previous: Option<u64>,
}

impl Reservation {
    /// Raises `nr_hugepages` so that `wanted` pages are free, if they are not already.
    /// Failure is reported, not fatal: the hugetlb tests then skip with their reason.
    pub(crate) fn ensure_free(wanted: u64) -> Self {
        let free = meminfo("HugePages_Free:").unwrap_or(0);
        if free >= wanted {
            eprintln!("xtask: {free} free 2 MiB hugepages already");
            return Reservation { previous: None };
        }
        let Some(total) = read_u64(NR_HUGEPAGES) else {
            eprintln!("xtask: cannot read {NR_HUGEPAGES}; 2 MiB tests will skip");
            return Reservation { previous: None };
        };
        let target = total + (wanted - free);
        if let Err(e) = std::fs::write(NR_HUGEPAGES, target.to_string()) {
            eprintln!("xtask: cannot reserve hugepages ({e}); 2 MiB tests will skip");
            return Reservation { previous: None };
        }
        let got = meminfo("HugePages_Free:").unwrap_or(0);
        eprintln!("xtask: nr_hugepages {total} -> {target} ({got} free); restored afterwards");
        Reservation {
            previous: Some(total),
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(previous) = self.previous {
            match std::fs::write(NR_HUGEPAGES, previous.to_string()) {
                Ok(()) => eprintln!("xtask: nr_hugepages restored to {previous}"),
                Err(e) => eprintln!("xtask: could not restore nr_hugepages to {previous}: {e}"),
            }
        }
    }
}

fn read_u64(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn meminfo(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}
