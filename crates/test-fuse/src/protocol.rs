//! The lines the client and the server exchange over the server's stdin and stdout: one
//! command, one answer. File names carry no whitespace (the client checks).

use std::ops::Range;

use crate::{Fault, ReadCounts};

/// A fault as the words of a command.
pub(crate) fn fault_words(fault: Fault) -> String {
    match fault {
        Fault::FailNext(n) => format!("fail-next {n}"),
        Fault::FailAlways => "fail-always 0".into(),
        Fault::ShortNext(n) => format!("short-next {n}"),
        Fault::Stall => "stall 0".into(),
    }
}

/// The fault named by `kind` and `n`.
pub(crate) fn parse_fault(kind: &str, n: u64) -> Option<Fault> {
    Some(match kind {
        "fail-next" => Fault::FailNext(n),
        "fail-always" => Fault::FailAlways,
        "short-next" => Fault::ShortNext(n),
        "stall" => Fault::Stall,
        _ => return None,
    })
}

/// Counts as five numbers.
pub(crate) fn counts_words(c: ReadCounts) -> String {
    format!(
        "{} {} {} {} {}",
        c.reads, c.served, c.failed, c.shortened, c.stalled
    )
}

/// The counts of [`counts_words`].
pub(crate) fn parse_counts(words: &str) -> Option<ReadCounts> {
    let n: Vec<u64> = words
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let [reads, served, failed, shortened, stalled] = n[..] else {
        return None;
    };
    Some(ReadCounts {
        reads,
        served,
        failed,
        shortened,
        stalled,
    })
}

/// Ranges as `start-end` words.
pub(crate) fn ranges_words(ranges: &[Range<u64>]) -> String {
    ranges
        .iter()
        .map(|r| format!("{}-{}", r.start, r.end))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The ranges of [`ranges_words`].
pub(crate) fn parse_ranges(words: &str) -> Option<Vec<Range<u64>>> {
    words
        .split_whitespace()
        .map(|w| {
            let (a, b) = w.split_once('-')?;
            Some(a.parse().ok()?..b.parse().ok()?)
        })
        .collect()
}
