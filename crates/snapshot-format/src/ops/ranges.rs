//! Page sets: checking, sorting and coalescing byte ranges, and subtracting one set from another.

use std::ops::Range;

use crate::error::{Error, Result};

/// Checks each range (block-aligned, `start <= end <= size`), then returns them sorted with
/// overlapping and touching ranges joined and empty ones dropped. The input is not modified.
pub(crate) fn coalesce(
    set: &'static str,
    block_size: u64,
    size: u64,
    ranges: &[Range<u64>],
) -> Result<Vec<Range<u64>>> {
    let mask = block_size - 1;
    for range in ranges {
        let reason = if range.start > range.end {
            Some("start is after end")
        } else if range.end > size {
            Some("runs past the image size")
        } else if range.start & mask != 0 || range.end & mask != 0 {
            Some("not aligned to the block size")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(Error::InvalidRange {
                set,
                start: range.start,
                end: range.end,
                reason,
            });
        }
    }
    let mut sorted: Vec<Range<u64>> = ranges.iter().filter(|r| r.start < r.end).cloned().collect();
    sorted.sort_unstable_by_key(|r| r.start);
    let mut joined: Vec<Range<u64>> = Vec::with_capacity(sorted.len());
    for range in sorted {
        match joined.last_mut() {
            Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
            _ => joined.push(range),
        }
    }
    Ok(joined)
}

/// `from` minus `remove`; both sorted, disjoint and coalesced.
pub(crate) fn subtract(from: &[Range<u64>], remove: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut out = Vec::with_capacity(from.len());
    let mut cut = remove.iter().peekable();
    for range in from {
        let mut start = range.start;
        // Skip removals that end before this range.
        while cut.peek().is_some_and(|r| r.end <= start) {
            cut.next();
        }
        let mut rest = cut.clone();
        while let Some(r) = rest.peek() {
            if r.start >= range.end {
                break;
            }
            if r.start > start {
                out.push(start..r.start);
            }
            start = start.max(r.end);
            if r.end >= range.end {
                break;
            }
            rest.next();
        }
        if start < range.end {
            out.push(start..range.end);
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init, clippy::reversed_empty_ranges)]
mod tests {
    use super::*;

    #[test]
    fn coalesce_sorts_joins_and_drops_empty() {
        let got = coalesce("dirty", 4, 64, &[8..12, 0..4, 4..8, 20..20, 16..24, 20..28]).unwrap();
        assert_eq!(got, vec![0..12, 16..28]);
    }

    #[test]
    fn coalesce_rejects_bad_ranges() {
        for bad in [4..0, 0..68, 2..4, 0..6] {
            assert!(matches!(
                coalesce("empty", 4, 64, &[bad]),
                Err(Error::InvalidRange { set: "empty", .. })
            ));
        }
    }

    #[test]
    fn subtract_cuts_holes() {
        let from = vec![0..40, 50..60, 70..80];
        let remove = vec![10..20, 30..55, 75..100];
        assert_eq!(
            subtract(&from, &remove),
            vec![0..10, 20..30, 55..60, 70..75]
        );
        assert_eq!(subtract(&from, &[]), from);
        assert!(subtract(&from, &[0..100]).is_empty());
    }
}
